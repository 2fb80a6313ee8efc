/**
 * Signal handling and the workflow's other decisions as pure functions of the state, so that each is
 * unit-tested without Temporal and the workflow only applies what they return.
 */
import type { MigrationStatus } from './contract';

/** spec.cutover.maxWriteStopSeconds's default (part of the public spec); here so that workflow code can read it. */
export const DEFAULT_MAX_WRITE_STOP_SECONDS = 30;

export type ControlSignal = 'pause' | 'resume';

/** Phases during which the source is (or is about to be) fenced: a pause would hold the fence open. */
const UNPAUSABLE = new Set(['STOPPING_WRITES', 'VALIDATING', 'FINALIZING']);

/** Phases after which nothing runs any more. */
export const TERMINAL_PHASES: ReadonlySet<string> = new Set(['COMPLETED', 'ROLLED_BACK', 'FAILED', 'CANCELLED']);

/** Returns the fields a control signal changes, with the reason when it is refused. */
export function applySignal(state: Pick<MigrationStatus, 'phase' | 'paused'>, signal: ControlSignal): Partial<MigrationStatus> {
  if (TERMINAL_PHASES.has(state.phase)) return { lastControl: `${signal} ignored: the migration has ended (${state.phase})` };
  if (signal === 'pause') {
    if (state.phase === 'ROLLING_BACK') {
      return { lastControl: 'pause refused in ROLLING_BACK: the target is fenced for the rollback and the source not yet released; a pause would keep both stopped (it finishes in seconds)' };
    }
    if (UNPAUSABLE.has(state.phase)) {
      return {
        lastControl: `pause refused in ${state.phase}: source writes are stopped for the cutover and a pause would keep them stopped; it finishes in seconds (cancel instead to abort and lift the fence)`,
      };
    }
    return { paused: true, lastControl: `paused in ${state.phase}` };
  }
  return { paused: false, lastControl: state.paused ? `resumed in ${state.phase}` : 'resume ignored: not paused' };
}

/**
 * auto mode, after a cutover attempt was abandoned (its fence expired): how long the application
 * writes before the next attempt. At least as long as the write stop it just had, doubling with
 * each attempt (a table that stays locked on the target must not turn into a write stop every few
 * seconds), at most 10 minutes.
 */
export function cutoverRetryDelayMs(abandonedAttempts: number, maxWriteStopSeconds: number): number {
  const n = Math.max(1, abandonedAttempts);
  return Math.min(600_000, maxWriteStopSeconds * 1000 * 2 ** Math.min(n - 1, 20));
}

export type FallbackSignal = 'commit' | 'rollback';

/**
 * `commit` / `rollback` (afterCutover "reverse"): taken from FINALIZING on (one sent while FINALIZING
 * still runs waits for FALLBACK_READY), the first one only; refused otherwise, with the reason.
 */
export function applyFallbackSignal(
  state: Pick<MigrationStatus, 'phase' | 'fallback'>,
  afterCutover: string | undefined,
  signal: FallbackSignal,
): { decision?: FallbackSignal; lastControl: string } {
  if (afterCutover !== 'reverse') return { lastControl: `${signal} ignored: only a migration with afterCutover "reverse" has a fallback phase` };
  if (TERMINAL_PHASES.has(state.phase)) return { lastControl: `${signal} ignored: the migration has ended (${state.phase})` };
  if (state.fallback?.decision) return { lastControl: `${signal} ignored: ${state.fallback.decision} was already requested` };
  if (state.phase !== 'FINALIZING' && state.phase !== 'FALLBACK_READY') {
    return { lastControl: `${signal} ignored in ${state.phase}: it ends the fallback phase (FALLBACK_READY), which begins after the cutover` };
  }
  return { decision: signal, lastControl: `${signal} requested in ${state.phase}` };
}

/** The apply's last report, as SYNCING_WAL's decisions read it. */
type Replication = Pick<NonNullable<MigrationStatus['replication']>, 'updatedAt' | 'lagBytes'>;

/**
 * The lag is under cutover.maxLagBytes by a report from this run of the apply: one that came after
 * `since` (the last report before it started), not one from before a pause.
 */
export function lagSmall(replication: Replication | undefined, since: string | undefined, maxLagBytes: number): boolean {
  return replication !== undefined && replication.updatedAt !== since && replication.lagBytes <= maxLagBytes;
}

export interface CutoverInputs {
  mode: 'auto' | 'manual';
  /** The cutover signal arrived (and no abandoned attempt has cleared it since). */
  requested: boolean;
  /** auto: the wait after an abandoned attempt is not over. */
  retryWait: boolean;
  replication: Replication | undefined;
  since: string | undefined;
  maxLagBytes: number;
}

/** Is the cutover due: manual when asked; auto when the lag is small and no retry wait runs. */
export function cutoverDue(c: CutoverInputs): boolean {
  return c.mode === 'manual' ? c.requested : !c.retryWait && lagSmall(c.replication, c.since, c.maxLagBytes);
}

/**
 * With the content proof on, the cutover waits for its first full pass (or its end): chunks it has
 * not verified would be compared inside the write stop.
 */
export function proofReady(p: { used: boolean; ended: boolean; passesComplete: number | undefined }): boolean {
  return !p.used || p.ended || (p.passesComplete ?? 0) > 0;
}

/**
 * An auto cutover waits for the fence's installation to have ended (before, it creates the triggers
 * in the write stop). A manual one goes when asked: an application transaction that holds a table's
 * lock keeps the installation waiting as long as it lasts, and the user decides.
 */
export function fenceReady(f: { installing: boolean; settled: boolean; mode: 'auto' | 'manual'; requested: boolean }): boolean {
  return !f.installing || f.settled || (f.mode === 'manual' && f.requested);
}

/**
 * How many sessions a copied table's post-load DDL borrows beyond its runner's own: one per index
 * build beyond the first (a partitioned table builds on its partitions in one), at most `spare`
 * (sessions of spec.parallelism no runner uses), so copies and builds never use more than it.
 */
export function extraBuildSessions(def: { partitioned?: boolean; postLoadSteps?: ReadonlyArray<{ kind: string }> }, spare: number): number {
  const builds = def.partitioned ? 1 : Math.max(1, (def.postLoadSteps ?? []).filter((st) => st.kind === 'index').length);
  return Math.max(0, Math.min(spare, builds - 1));
}

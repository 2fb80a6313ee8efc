/**
 * Signal handling as a pure function of the state (STYLE.md §6), unit-tested without Temporal.
 */
import type { MigrationStatus } from './contract';

/** spec.cutover.maxWriteStopSeconds's default (DESIGN.md §2); here so that workflow code can read it. */
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

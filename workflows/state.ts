/**
 * Signal handling as a pure function of the state (STYLE.md §6), unit-tested without Temporal.
 */
import type { MigrationStatus } from './contract';

/** spec.cutover.maxWriteStopSeconds's default (DESIGN.md §2); here so that workflow code can read it. */
export const DEFAULT_MAX_WRITE_STOP_SECONDS = 30;

export type ControlSignal = 'pause' | 'resume';

/** Phases during which the source is (or is about to be) fenced: a pause would hold the fence open. */
const UNPAUSABLE = new Set(['STOPPING_WRITES', 'VALIDATING', 'FINALIZING']);

/** Returns the fields a control signal changes, with the reason when it is refused. */
export function applySignal(state: Pick<MigrationStatus, 'phase' | 'paused'>, signal: ControlSignal): Partial<MigrationStatus> {
  const terminal = state.phase === 'COMPLETED' || state.phase === 'FAILED' || state.phase === 'CANCELLED';
  if (terminal) return { lastControl: `${signal} ignored: the migration has ended (${state.phase})` };
  if (signal === 'pause') {
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

/**
 * Signal handling as a pure function of the state (STYLE.md §6), unit-tested without Temporal.
 */
import type { MigrationStatus } from './contract';

export type ControlSignal = 'pause' | 'resume';

/** Returns the fields a control signal changes. */
export function applySignal(state: Pick<MigrationStatus, 'phase' | 'paused'>, signal: ControlSignal): Partial<MigrationStatus> {
  const terminal = state.phase === 'COMPLETED' || state.phase === 'FAILED' || state.phase === 'CANCELLED';
  if (terminal) return {};
  if (signal === 'pause') return { paused: true };
  return { paused: false };
}

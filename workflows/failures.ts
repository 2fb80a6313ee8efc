/**
 * What a failure that reached the workflow is: its message for a DBA, its type along the cause chain.
 * Pure; deterministic workflow code.
 */
import { ErrorType } from './error-types';

export function hasType(err: unknown, type: string): boolean {
  for (let e = err as { type?: string; cause?: unknown } | undefined; e; e = e.cause as typeof e) {
    if (e.type === type) return true;
  }
  return false;
}

/** A copy could not import the exported snapshot: its holder is gone even if not yet noticed. */
export const isSnapshotLost = (err: unknown): boolean => hasType(err, ErrorType.SnapshotLost);

/** An activity that timed out (its worker lost) rather than failed. */
export function isTimeout(err: unknown): boolean {
  for (let e = err as { name?: string; cause?: unknown } | undefined; e; e = e.cause as typeof e) {
    if (e.name === 'TimeoutFailure') return true;
  }
  return false;
}

export function errorMessage(err: unknown): string {
  // ActivityFailure wraps the activity's own error as its cause, ChildWorkflowFailure the child's
  // (the copy child's, itself often an ActivityFailure): the innermost message is the useful one.
  let e = err as { message?: string; cause?: unknown } | undefined;
  const wrapper = (name: unknown) => name === 'ActivityFailure' || name === 'ChildWorkflowFailure';
  while (e && typeof e === 'object' && e.cause && wrapper((e as { name?: string }).name)) e = e.cause as typeof e;
  return e?.message ?? String(err);
}

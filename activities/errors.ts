/**
 * Error classification at the activity boundary (STYLE.md §8): configuration and precondition
 * problems become non-retryable ApplicationFailures with a message a DBA can act on; everything else
 * (network drops, restarts, lock timeouts) is left retryable.
 */
import { ApplicationFailure } from '@temporalio/common';
import { ConnectionRefusedError } from './connect-guard';
import { SpecError } from './spec';

/** Error types the workflow's retry policies treat as final. */
export const NON_RETRYABLE_TYPES = ['SpecError', 'PreconditionError', 'ValidationError', 'ReplicationError', 'SnapshotLost'] as const;

export function preconditionFailed(message: string, details?: unknown): ApplicationFailure {
  return ApplicationFailure.create({ message, type: 'PreconditionError', nonRetryable: true, details: details === undefined ? undefined : [details] });
}

/** The exported snapshot can no longer be imported: the workflow redoes the copy in a new one. */
export function snapshotLost(message: string): ApplicationFailure {
  return ApplicationFailure.create({ message, type: 'SnapshotLost', nonRetryable: true });
}

/** SQLSTATE classes that no retry will fix: the request itself is wrong or not permitted. */
const FINAL_SQLSTATE = /^(28|3D|3F|42|22|23|0A|2B|44)/;

interface PgError {
  code?: string;
  message?: string;
}

/**
 * Turns an error thrown while talking to `where` into a failure Temporal understands. Authentication
 * failures, missing databases, permission errors and SQL errors are final; connection problems retry.
 */
export function classify(err: unknown, where: string): unknown {
  if (err instanceof ApplicationFailure) return err;
  if (err instanceof SpecError) {
    return ApplicationFailure.create({ message: err.message, type: 'SpecError', nonRetryable: true });
  }
  if (err instanceof ConnectionRefusedError) {
    return ApplicationFailure.create({ message: `${where}: ${err.message}`, type: 'PreconditionError', nonRetryable: true });
  }
  const e = err as PgError & { permanent?: boolean };
  const msg = scrub(e?.message ?? String(err));
  if (e?.permanent) {
    // The apply's own verdict: the source and target disagree in a way no retry fixes.
    return ApplicationFailure.create({ message: `${where}: ${msg}`, type: 'ReplicationError', nonRetryable: true });
  }
  if (typeof e?.code === 'string' && FINAL_SQLSTATE.test(e.code)) {
    return ApplicationFailure.create({ message: `${where}: ${msg} (SQLSTATE ${e.code})`, type: 'PreconditionError', nonRetryable: true });
  }
  if (err instanceof Error) {
    const copy = new Error(`${where}: ${msg}`);
    copy.name = err.name;
    return copy;
  }
  return new Error(`${where}: ${msg}`);
}

/** Removes anything that looks like a password in a URI or key=value connection string. */
export function scrub(text: string): string {
  return text
    .replace(/(postgres(?:ql)?:\/\/[^:/@\s]*:)[^@\s]*@/gi, '$1***@')
    .replace(/(password\s*=\s*)('[^']*'|\S+)/gi, '$1***');
}

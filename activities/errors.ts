/**
 * Errors at the activity boundary, the one place where activities make Temporal failures:
 * configuration and precondition problems become non-retryable ApplicationFailures of a type named in
 * workflows/error-types.ts, with a message a DBA can act on; everything else (network drops,
 * restarts, lock timeouts) is left retryable.
 */
import { ApplicationFailure } from '@temporalio/common';
import { ConnectionRefusedError } from './connect-guard';
import { SpecError } from './spec';
import { ErrorType, type ErrorTypeName } from '../workflows/error-types';

/** A failure no retry fixes, of one of the registry's types. */
export function finalFailure(type: ErrorTypeName, message: string, details?: unknown): ApplicationFailure {
  return ApplicationFailure.create({ message, type, nonRetryable: true, details: details === undefined ? undefined : [details] });
}

/** Whether `err` is a failure of that type (as the activity made it, before Temporal carries it). */
export function isFailureOf(err: unknown, type: ErrorTypeName): err is ApplicationFailure {
  return err instanceof ApplicationFailure && err.type === type;
}

export function preconditionFailed(message: string, details?: unknown): ApplicationFailure {
  return finalFailure(ErrorType.Precondition, message, details);
}

/** The exported snapshot can no longer be imported: the workflow redoes the copy in a new one. */
export function snapshotLost(message: string): ApplicationFailure {
  return finalFailure(ErrorType.SnapshotLost, message);
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
    return finalFailure(ErrorType.Spec, err.message);
  }
  if (err instanceof ConnectionRefusedError) {
    return finalFailure(ErrorType.Precondition, `${where}: ${err.message}`);
  }
  const e = err as PgError & { permanent?: boolean };
  const msg = scrub(e?.message ?? String(err));
  if (e?.permanent) {
    // The apply's own verdict: the source and target disagree in a way no retry fixes.
    return finalFailure(ErrorType.Replication, `${where}: ${msg}`);
  }
  if (typeof e?.code === 'string' && FINAL_SQLSTATE.test(e.code)) {
    return finalFailure(ErrorType.Precondition, `${where}: ${msg} (SQLSTATE ${e.code})`);
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

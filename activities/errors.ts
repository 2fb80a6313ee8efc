/**
 * What went wrong, in the domain's terms: the phase modules throw these and never make Temporal
 * failures. `FinalError` is a failure no retry fixes, of a type named in workflows/error-types.ts;
 * `during(err, where)` says which step an error came from. The activity edge (`toFailure`,
 * activities/edge.ts) turns them into Temporal failures, once, for every activity.
 */
import { ConnectionRefusedError } from './connect-guard';
import { SpecError } from './spec';
import { ErrorType, type ErrorTypeName } from '../workflows/error-types';

/** A failure no retry fixes: the same input meets the same servers and the same verdict. */
export class FinalError extends Error {
  constructor(
    readonly type: ErrorTypeName,
    message: string,
    readonly details?: unknown,
  ) {
    super(message);
    this.name = type;
  }
}

/** A failure no retry fixes, of one of the registry's types. */
export function finalFailure(type: ErrorTypeName, message: string, details?: unknown): FinalError {
  return new FinalError(type, message, details);
}

/** Whether `err` is a final failure of that type. */
export function isFailureOf(err: unknown, type: ErrorTypeName): err is FinalError {
  return err instanceof FinalError && err.type === type;
}

export function preconditionFailed(message: string, details?: unknown): FinalError {
  return new FinalError(ErrorType.Precondition, message, details);
}

/** The exported snapshot can no longer be imported: the workflow redoes the copy in a new one. */
export function snapshotLost(message: string): FinalError {
  return new FinalError(ErrorType.SnapshotLost, message);
}

/** SQLSTATE classes that no retry will fix: the request itself is wrong or not permitted. */
const FINAL_SQLSTATE = /^(28|3D|3F|42|22|23|0A|2B|44)/;
const finalCode = (code: string) => FINAL_SQLSTATE.test(code);

interface PgError {
  code?: string;
  message?: string;
  permanent?: boolean;
}

/**
 * An error of one step (`where`), retryable unless its cause says otherwise: the message names the
 * step, passwords scrubbed; the cause's SQLSTATE and the apply's `permanent` verdict travel with it.
 */
export class StepError extends Error {
  readonly code?: string;
  readonly permanent?: boolean;
  constructor(
    readonly where: string,
    override readonly cause: unknown,
  ) {
    const e = cause as PgError | undefined;
    const code = typeof e?.code === 'string' ? e.code : undefined;
    // A final SQLSTATE is named in the message, unless the apply's own verdict says what went wrong
    // (a step error that is final already is never wrapped again: `during`).
    const named = code && finalCode(code) && !e?.permanent ? ` (SQLSTATE ${code})` : '';
    super(`${where}: ${scrub(e?.message ?? String(cause))}${named}`);
    this.name = cause instanceof Error ? cause.name : 'Error';
    this.code = code;
    this.permanent = e?.permanent;
  }
}

/**
 * Says which step `err` came from. Final failures, spec errors and errors already final by their
 * cause keep their message; anything else gets the step's name in front, once more per step.
 */
export function during(err: unknown, where: string): Error {
  if (err instanceof FinalError || err instanceof SpecError) return err;
  if (err instanceof StepError && finalVerdict(err)) return err;
  return new StepError(where, err);
}

/**
 * What no retry fixes, as a FinalError; undefined for what a retry may fix (network drops, restarts,
 * lock timeouts) and for errors no step named. Authentication failures, missing databases,
 * permission errors and SQL errors are final; connection problems retry.
 */
export function finalVerdict(err: unknown): FinalError | undefined {
  if (err instanceof FinalError) return err;
  if (err instanceof SpecError) return new FinalError(ErrorType.Spec, err.message);
  if (!(err instanceof StepError)) return undefined;
  if (err.cause instanceof ConnectionRefusedError) return new FinalError(ErrorType.Precondition, err.message);
  // The apply's own verdict: the source and target disagree in a way no retry fixes.
  if (err.permanent) return new FinalError(ErrorType.Replication, err.message);
  if (err.code && finalCode(err.code)) return new FinalError(ErrorType.Precondition, err.message);
  return undefined;
}

/** Removes anything that looks like a password in a URI or key=value connection string. */
export function scrub(text: string): string {
  return text
    .replace(/(postgres(?:ql)?:\/\/[^:/@\s]*:)[^@\s]*@/gi, '$1***@')
    .replace(/(password\s*=\s*)('[^']*'|\S+)/gi, '$1***');
}

/**
 * Every failure type pg-dts names, and which of them no retry can fix. The one list that both sides
 * read: the workflow's retry policies (`nonRetryableErrorTypes`, workflows/activities.ts) and the
 * activities that make the failures (activities/errors.ts `finalFailure`, `during`; activities/edge.ts `toFailure`). Pure, so that
 * workflow code may import it. The type names are part of recorded histories: never rename one.
 */
export const ErrorType = {
  /** The MigrationSpec is malformed or contradicts itself. */
  Spec: 'SpecError',
  /** A precondition on either server fails (rights, names, settings, unsupported objects, SQL refused). */
  Precondition: 'PreconditionError',
  /** VALIDATING or the content proof found the target differing from the source. */
  Validation: 'ValidationError',
  /** The apply's own verdict: source and target disagree in a way a retry does not change. */
  Replication: 'ReplicationError',
  /** The exported snapshot can no longer be imported: the workflow redoes the copy in a new one. */
  SnapshotLost: 'SnapshotLost',
  /** The source invalidated the slot (wal_status = lost). */
  SlotInvalidated: 'SlotInvalidated',
  /** The slot retains more WAL than wal.maxRetainedBytes. */
  WalBudgetExceeded: 'WalBudgetExceeded',
  /** The slot's creation waited longer than slot.maxWaitSeconds for older transactions. */
  SlotWaitTimeout: 'SlotWaitTimeout',
  /** spec.notify's URL is not allowed or not reachable as configured. */
  NotifyRefused: 'NotifyRefused',
  /** The workflow's own end as FAILED, with its report. */
  MigrationFailed: 'MigrationFailed',
} as const;

export type ErrorTypeName = (typeof ErrorType)[keyof typeof ErrorType];

/** Final for every activity: a retry would meet the same input, the same servers, the same verdict. */
export const FINAL_ERROR_TYPES: ErrorTypeName[] = [ErrorType.Spec, ErrorType.Precondition, ErrorType.Validation, ErrorType.Replication, ErrorType.SnapshotLost];

/** The WAL watcher's two verdicts are final too; a source restart is not. */
export const WAL_FINAL_ERROR_TYPES: ErrorTypeName[] = [...FINAL_ERROR_TYPES, ErrorType.SlotInvalidated, ErrorType.WalBudgetExceeded];

/** A webhook that refuses is final for the alert, never for the migration. */
export const NOTIFY_FINAL_ERROR_TYPES: ErrorTypeName[] = [ErrorType.NotifyRefused];

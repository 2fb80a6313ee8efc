/**
 * The workflow's public contract (what users, the CLI, the API and outside tests drive: workflow type,
 * task queue, signals, the `status` query, phases, search attribute, report) and the internal signals
 * activities send back.
 * Names here are part of history: never rename, version with patched() instead.
 */
import { defineQuery, defineSignal } from '@temporalio/workflow';
import { defineSearchAttributeKey, SearchAttributeType } from '@temporalio/common';

export const PHASES = [
  'INIT',
  'CREATING_TABLES',
  'MIGRATING_DATA',
  'SYNCING_WAL',
  'STOPPING_WRITES',
  'VALIDATING',
  'FINALIZING',
  // afterCutover "reverse": after FINALIZING, until the commit or rollback signal.
  'FALLBACK_READY',
  'ROLLING_BACK',
  'COMPLETED',
  'ROLLED_BACK',
  'FAILED',
  'CANCELLED',
] as const;
export type Phase = (typeof PHASES)[number];

export type TableState = 'pending' | 'copying' | 'copied' | 'indexing' | 'syncing' | 'validated' | 'failed';

export interface TableStatus {
  source: string;
  target: string;
  state: TableState;
  rowsCopied: number;
  rowsTotal?: number;
  bytesCopied?: number;
  /** While copying: rows per second over the last progress reports, and the time left at that rate. */
  rowsPerSecond?: number;
  etaSeconds?: number;
  /** A large table copied in page ranges by separate activities: how many, and how many are done. */
  ranges?: { total: number; done: number };
}

export interface ReplicationStatus {
  slot: string;
  confirmedLsn: string;
  sourceLsn?: string;
  lagBytes: number;
  /** Age of the last applied source commit while the apply is behind; 0 when caught up. */
  lagSeconds?: number;
  transactions: number;
  changes: number;
  updatedAt?: string;
}

export interface TableReport {
  source: string;
  target: string;
  sourceRows: number;
  targetRows: number;
  countsMatch: boolean;
  copyDurationMs?: number;
  sample: 'not-run' | 'match' | 'mismatch';
  checksum: 'not-run' | 'match' | 'mismatch';
  /** Differing rows by key (at most 100 per table), when validation found any. */
  mismatches?: Array<{ chunk?: string; key: Record<string, string | null>; kind: 'missing-on-target' | 'extra-on-target' | 'different'; columns?: string[] }>;
  mismatchesTruncated?: boolean;
  mismatchedChunks?: string[];
  validationError?: string;
  /** The content proof's coverage of this table (see MigrationReport.proof). */
  /**
   * readAtCutover: chunks whose tuple fingerprints were read at cutover (the rest had no write since
   * proven); keysReadAtCutover: rows compared by key instead, written since their chunk was proven.
   */
  proof?: { chunks: number; verifiedBeforeCutover: number; reverifiedAtCutover: number; rows: number; readAtCutover?: number; keysReadAtCutover?: number };
  /** validation.repair: the rows rewritten on the target from the source, and the chunks checked again. */
  repair?: RepairReport;
}

/**
 * What validation.repair (or `dts verify --repair`) did to one table. Bounded: the keys are listed up
 * to a cap (counts cover them all), and so are the repaired chunks.
 */
export interface RepairReport {
  /** Rows repaired: differing keys (keyed tables), or the rows of the replaced chunk (tables without a key). */
  rows: number;
  missing: number;
  extra: number;
  different: number;
  /** Rows deleted from and written into the target. */
  deleted: number;
  inserted: number;
  /** Tables without a key: the whole chunk (the table) was replaced. */
  wholeChunk?: boolean;
  /** Repaired rows by key (tables without a key: md5 of the row), at most the listing cap. */
  keys: Array<{ key: Record<string, string | null>; kind: 'missing-on-target' | 'extra-on-target' | 'different' }>;
  keysTruncated: boolean;
  /** Every repaired chunk checked again after the repair: its count and checksum (`rows:sum`) on each side. */
  chunks: Array<{ chunk: string; source: string; target: string; match: boolean }>;
  chunksTruncated?: boolean;
}

/**
 * The full content proof (validation.checksum, on by default): every row compared by chunk checksums.
 * Online, chunks are verified during SYNCING_WAL; at cutover only those not verified or changed since
 * are compared again. `enabled: false` says the migration ran without it (validation.checksum = false).
 */
export interface ProofReport {
  enabled: boolean;
  chunks: number;
  /** Chunks proven before the write stop and unchanged since. */
  verifiedBeforeCutover: number;
  /** Chunks compared at VALIDATING (source fenced, or quiet offline). */
  reverifiedAtCutover: number;
  /**
   * Chunks whose tuple fingerprints VALIDATING read to learn whether they changed; the others had no
   * write on the target since they were proven (the table's write count unmoved) and cost nothing.
   */
  readAtCutover?: number;
  /**
   * Rows VALIDATING compared by key instead of reading their chunk: the keys written since their
   * chunk was proven, in tables counted per chunk (write marks by chunk).
   */
  keysReadAtCutover?: number;
  /** Rows covered: every source row when the proof ran. */
  rowsCovered: number;
  /** Passes the live proof completed during SYNCING_WAL, and how long it ran there. */
  livePasses?: number;
  liveMs?: number;
  /** Time VALIDATING took (counts, sample and the re-check), inside the write stop when online. */
  validatingMs?: number;
}

export interface MigrationReport {
  migrationId: string;
  phase: Phase;
  mode: 'online' | 'offline';
  /** Every table up to TABLES_PAGE of them; beyond, the first page and every table validation failed. */
  tables: TableReport[];
  tablesTotal?: number;
  sequences: Array<{ source: string; target: string; sourceValue: string; targetValue: string }>;
  startedAt: string;
  finishedAt: string;
  durationMs: number;
  /** Source writes stopped: from the fence to its release (online only). */
  cutoverWindowMs?: number;
  /** The copy went on after its exported snapshot was lost (MigrationProgress's counters of that). */
  copyResumes?: Pick<MigrationProgress, 'copyResumes' | 'unitsKept' | 'unitsCopiedTwice'>;
  proof?: ProofReport;
  /** validation.repair: rows rewritten on the target at VALIDATING, over how many tables (per table: tables[].repair). */
  repair?: { tables: number; rows: number };
  /** Views, materialized views, functions and triggers recreated after cutover (spec.objects). */
  objects?: {
    created: string[];
    skipped: Array<{ object: string; reason: string }>;
    /** Functions whose string body (plpgsql, SQL as a string) was renamed through the mapping, and how. */
    rewritten?: string[];
  };
  /** afterCutover "reverse": the fallback phase, what ended it, and (rollback) the sequences set on the source. */
  fallback?: MigrationStatus['fallback'];
  notices: string[];
  error?: string;
}

/**
 * The whole migration in numbers: what `tables` cannot say once it is only a page (a migration of
 * thousands of tables keeps its per-table list on the target, not in the workflow).
 */
export interface MigrationProgress {
  tablesTotal: number;
  tablesCopied: number;
  rowsCopied: number;
  bytesCopied: number;
  /** Sizes measured before the copy (on disk, with TOAST): the copy's denominator. */
  bytesTotal?: number;
  /** Copy units (batches of small tables, page ranges) done and in all. */
  batchesDone?: number;
  batchesTotal?: number;
  /**
   * The copy's exported snapshot was lost and the copy resumed in a new one, this many times; units
   * (whole tables, page ranges) committed before and kept; units whose committed copy was emptied
   * and copied again (ranges of a table not finished when the snapshot went; tables of an earlier slot).
   */
  copyResumes?: number;
  unitsKept?: number;
  unitsCopiedTwice?: number;
  /** Over the copy so far, and the time left at that rate. */
  bytesPerSecond?: number;
  etaSeconds?: number;
}

/** Arguments of the `status` query (optional): which page of `tables` to return. */
export interface StatusPage {
  offset?: number;
  limit?: number;
}

export interface MigrationStatus {
  migrationId: string;
  phase: Phase;
  paused: boolean;
  mode: 'online' | 'offline';
  /**
   * One page of the tables (see `tablesTotal` and `progress`): every table up to the workflow's page
   * size (TABLES_PAGE), the first ones of a larger migration.
   */
  tables: TableStatus[];
  tablesTotal?: number;
  progress?: MigrationProgress;
  /**
   * MIGRATING_DATA: each copy unit in flight (at most spec.parallelism) with the table it is on and
   * its rows and bytes so far, whether or not that table is on the page of `tables`.
   */
  copying?: Array<{ unit: string; table: string; rows: number; bytes: number; waiting?: CopyLockWait }>;
  /** MIGRATING_DATA: index builds running longer than 1 s on the target, with their phase and progress. */
  indexing?: IndexBuildProgress[];
  /**
   * What the migration waits for, while it waits: the replication slot's creation waits until every
   * transaction older than it has ended (the oldest such transaction's backend pid and age, when the
   * role may see them).
   */
  waiting?: SlotWaitReport;
  replication?: ReplicationStatus;
  cutover?: {
    requested: boolean;
    fencedAt?: string;
    fenceLsn?: string;
    windowMs?: number;
    /** The source time at which the fence lets writes through by itself (cutover.maxWriteStopSeconds). */
    deadline?: string;
    /** Cutover attempts so far, and why the last one was abandoned (writes released, back to SYNCING_WAL). */
    attempts?: number;
    abandoned?: string;
    /** auto mode, after an abandoned attempt: not before this time. */
    retryAt?: string;
  };
  /** VALIDATING's verdict per table, once it ran. */
  validation?: Array<{ source: string; countsMatch: boolean; sample: 'not-run' | 'match' | 'mismatch'; checksum: 'not-run' | 'match' | 'mismatch'; mismatches: number; error?: string; repaired?: number }>;
  /**
   * The content proof: progress while SYNCING_WAL (`running`; `ready` once every chunk was tried), its
   * verdict after VALIDATING (`reverifiedAtCutover` then set), `off` when validation.checksum = false.
   */
  proof?: ProofProgressReport & { state: 'running' | 'ready' | 'stopped' | 'diverged' | 'validated' | 'off'; reverifiedAtCutover?: number };
  /** The advisory check during SYNCING_WAL (validation.live), per table. */
  liveValidation?: Array<{ source: string; checksum: 'match' | 'mismatch' | 'unsettled'; mismatches: number; error?: string }>;
  /** The WAL the replication slot retains on the source (spec.wal's budget), as last read. */
  wal?: { slot: string; retainedBytes: number; walStatus: string | null; warnRetainedBytes?: number; maxRetainedBytes?: number; warned?: boolean; updatedAt: string };
  notices: string[];
  /**
   * afterCutover "reverse": the reverse replication (target → source) from FALLBACK_READY on; its lag
   * is in `replication` (whose slot is then the target's).
   */
  fallback?: { slot: string; decision?: 'commit' | 'rollback'; fallbackReadyAt?: string; sequences?: Array<{ source: string; target: string; sourceValue: string; targetValue: string }> };
  /** What the last pause/resume did, or why it was refused. */
  lastControl?: string;
  error?: string;
}

export const pauseSignal = defineSignal('pause');
export const resumeSignal = defineSignal('resume');
export const cancelSignal = defineSignal('cancel');
export const cutoverSignal = defineSignal('cutover');
/** afterCutover "reverse", in FALLBACK_READY: stay on the target (COMPLETED), or move back to the source (ROLLED_BACK). */
export const commitSignal = defineSignal('commit');
export const rollbackSignal = defineSignal('rollback');
export const statusQuery = defineQuery<MigrationStatus, [StatusPage?]>('status');
/**
 * The final report once the migration has ended (null before). A cancelled migration ends as
 * Temporal's CANCELED, which carries no result: its report is read with this query.
 */
export const reportQuery = defineQuery<MigrationReport | null>('report');

/**
 * Tables a workflow follows one by one (status, report): every table of a migration up to this many,
 * the first ones of a larger one. The rest are counted (`progress`), their plan kept on the target.
 */
export const TABLES_PAGE = 200;

/** Sent by the snapshot-holding activity once the slot exists and its snapshot can be imported. */
export interface SnapshotReady {
  attempt: number;
  snapshotName: string;
  consistentPoint: string;
}
export const snapshotReadySignal = defineSignal<[SnapshotReady]>('snapshotReady');

export interface SlotWaitReport {
  /** What waits. */
  for: 'slot creation';
  since: string;
  /** The oldest transaction it waits for: its backend, how long it has been open, its state. */
  pid?: number;
  ageSeconds?: number;
  state?: string;
}
/** The snapshot holder, while CREATE_REPLICATION_SLOT waits for older transactions to end. */
export const slotWaitSignal = defineSignal<[SlotWaitReport]>('slotWait');

/** Sent by the apply activity every few seconds. */
export interface ApplyProgressReport {
  appliedLsn: string;
  sourceLsn: string;
  lagBytes: number;
  lagSeconds?: number;
  transactions: number;
  changes: number;
  fenceToken?: string;
}
export const applyProgressSignal = defineSignal<[ApplyProgressReport]>('applyProgress');

/** Sent by the WAL watcher when what the slot retains changes notably. */
export interface SlotWalReport {
  retainedBytes: number;
  walStatus: string | null;
  verdict: 'ok' | 'warn' | 'over' | 'lost';
}
export const slotWalSignal = defineSignal<[SlotWalReport]>('slotWal');

/**
 * Sent by a worker about the copies of one run it has in flight, batched (one signal for all of them,
 * at most every 30 s once past the first seconds): live rows between the table-done events.
 */
export interface CopyProgressReport {
  units: Array<{ table: string; unit: string; snapshot?: string; rows: number; bytes: number; waiting?: CopyLockWait }>;
}

/** An index build running on the target after a table's load (pg_stat_progress_create_index). */
export interface IndexBuildProgress {
  /** The target table. */
  table: string;
  index: string;
  /** PostgreSQL's phase, e.g. "building index: scanning table". */
  phase: string;
  /** Of the current phase's blocks (or tuples), when PostgreSQL counts them. */
  percent?: number;
  /** Since the statement began. */
  seconds: number;
}
/** Sent by a post-load activity while its index builds run (bounded cadence); `builds` empty at its end. */
export interface IndexProgressReport {
  builder: string;
  builds: IndexBuildProgress[];
}
export const indexProgressSignal = defineSignal<[IndexProgressReport]>('indexProgress');

/** A copy unit standing still because its session waits for a lock on the table (activities/lock-wait.ts). */
export interface CopyLockWait {
  /** Where the copy waits: reading the source table or loading the target table. */
  side: 'source' | 'target';
  /** The table locked on that side. */
  table: string;
  /** The lock mode the copy asked for. */
  mode: string;
  waitedSeconds: number;
  /** The first backend holding or queued ahead for the lock, its state and how long its transaction has been open. */
  pid?: number;
  state?: string;
  ageSeconds?: number;
}

/** "<mode> on the source table t, held by pid 4242 (idle in transaction, transaction open 75 s)": for the status and the failure. */
export function describeLockWait(w: CopyLockWait): string {
  const about = [w.state, w.ageSeconds !== undefined ? `transaction open ${w.ageSeconds} s` : ''].filter(Boolean).join(', ');
  const by = w.pid !== undefined ? `pid ${w.pid}${about ? ` (${about})` : ''}` : 'a backend not visible to this role';
  return `${w.mode} on the ${w.side} table ${w.table}, held by ${by}`;
}
export const copyProgressSignal = defineSignal<[CopyProgressReport]>('copyProgress');

/** Sent by the content proof during SYNCING_WAL (every few seconds at first, then at most every 30 s). */
export interface ProofProgressReport {
  /** Passes started / complete; the first complete pass has tried every chunk once. */
  pass: number;
  passesComplete: number;
  tables: number;
  chunks: number;
  chunksVerified: number;
  rowsCovered: number;
  lastPassMs?: number;
  /** Rows the last pass compared by the keys written since their chunk was proven (chunks proven again without reading them whole). */
  lastPassKeys?: number;
}
export const proofProgressSignal = defineSignal<[ProofProgressReport]>('proofProgress');

export const MigrationPhaseKey = defineSearchAttributeKey('MigrationPhase', SearchAttributeType.KEYWORD);

export const WORKFLOW_TYPE = 'migrationWorkflow';
export const DEFAULT_TASK_QUEUE = 'pg-migration';

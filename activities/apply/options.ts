/**
 * What `runApply` (SYNCING_WAL) takes and gives: the options, the progress it reports, its result.
 */
import type { Client } from 'pg';
import type { ConnectionSpec, QualifiedName } from '../spec';
import { ApplyError } from './errors';

export interface ApplyTable {
  source: QualifiedName;
  target: QualifiedName;
}

export interface ApplyProgress {
  /** Source commit end LSN of the last transaction committed on the target (or an idle keepalive's). */
  appliedLsn: string;
  /** What the slot has been confirmed up to: durably committed on the target. */
  confirmedLsn: string;
  /** Furthest source position received (data or keepalive). */
  receivedLsn: string;
  /** pg_current_wal_lsn() on the source at the last check. */
  sourceLsn: string;
  lagBytes: number;
  /** Age of the last applied source commit while behind (0 when caught up): lag in time. */
  lagSeconds: number;
  /** Transactions and changes applied by this run. */
  transactions: number;
  changes: number;
  fenceToken?: string;
}

export interface ApplyOptions {
  source: ConnectionSpec;
  target: ConnectionSpec;
  slot: string;
  publication: string;
  tables: ApplyTable[];
  onProgress?: (p: ApplyProgress) => void;
  /** Default 2000. Also the longest time between synchronous (durable) commits under load. */
  progressIntervalMs?: number;
  /** Abort = stop cleanly: roll back the open target transaction, confirm what is durable, close, resolve. */
  signal: AbortSignal;
  /** How long to wait for a slot still held by a previous walsender (default 30 s). */
  slotWaitMs?: number;
  /** Most rows in one multi-row statement (default 1000). */
  maxBatchRows?: number;
  /**
   * Consecutive source transactions are applied as one target transaction (a group), committed when
   * nothing more is waiting in the stream, or at this many changes (default 10,000), or this old
   * (default 100 ms), or at a fence message, or on stop.
   */
  maxGroupChanges?: number;
  maxGroupMs?: number;
  /** A run's first group is committed at this age (default 10 ms), each next one at twice the age before, up to maxGroupMs. */
  firstGroupMs?: number;
  /** How long an open group waits for the next transaction when the stream is momentarily empty (default 5 ms). */
  groupIdleMs?: number;
  /**
   * Keyed tables get their group's net changes as a few set-based statements (default true); false
   * applies every change as its own statement, in source order.
   */
  setBased?: boolean;
  /**
   * Set-based inserts go as COPY ... FROM STDIN (default true) instead of INSERT ... SELECT FROM
   * unnest(): less work on the target (COPY inserts rows in batches) and no statement-sized buffers in
   * the worker.
   */
  copyInserts?: boolean;
  /** A full GC every this many bytes inside one source transaction (default 16 MiB; 0: never). */
  gcEveryTxnBytes?: number;
  /**
   * Handle what arrives while a group is written into the next group (default true); false: it waits
   * until the group is committed.
   */
  foldAhead?: boolean;
  /** Told when a set-based write failed and the open group was rolled back and replayed change by change. */
  onReplay?: (info: { table?: string; code?: string; changes: number }) => void;
  /**
   * A change message over this many bytes (default 8 MiB) is read as it arrives and its values over
   * `largeValueBytes` (default 256 KiB) go to a spool file, then to the target through COPY.
   */
  largeChangeBytes?: number;
  largeValueBytes?: number;
  /** Where spool files go (default: the OS temporary directory). */
  spoolDir?: string;
  /**
   * Run with session_replication_role = replica (default true), so no trigger or foreign-key check
   * fires for replicated rows. false (a target role that may not set it: Cloud SQL, Azure): the
   * migration has created nothing that fires on the target tables, and the apply refuses to start
   * while anything enabled would (a trigger someone added would apply its effects a second time).
   */
  replicaRole?: boolean;
  /** Set by runApply (run.ts), never by a caller: a second target session that writes one table. */
  secondWriter?: SecondWriter;
}

/**
 * `PG_DTS_APPLY_WRITERS`: the target sessions an apply writes through, 1 (unset: the default) or 2
 * (a second writer, SecondWriter). Read by each apply as it starts, and by the worker at its start,
 * which refuses any other value. Not the default: on a 2-core machine it gained nothing measurable
 * (BENCHMARKS.md, session 25), and it costs a connection; a target with cores to spare may gain.
 */
export function applyWriters(env: NodeJS.ProcessEnv = process.env): 1 | 2 {
  const v = env.PG_DTS_APPLY_WRITERS?.trim() || '1';
  if (v !== '1' && v !== '2') {
    throw new ApplyError(`PG_DTS_APPLY_WRITERS must be 1 or 2 (got ${JSON.stringify(env.PG_DTS_APPLY_WRITERS)})`, { permanent: true });
  }
  return v === '1' ? 1 : 2;
}

/**
 * A second target session, the only writer of `table` (the largest table with a key and no foreign
 * key, picked by run.ts): its statements run while the first session writes the other tables, and it
 * commits each group's part first, with its own position (pgdts.apply_writer_progress).
 */
export interface SecondWriter {
  client: Client;
  table: QualifiedName;
  slot: string;
}

export interface ApplyResult {
  appliedLsn: string;
  confirmedLsn: string;
  transactions: number;
  changes: number;
  fenceToken?: string;
  /** Changes over `largeChangeBytes`, read as they arrived with their large values spooled to disk. */
  largeChanges: number;
  /**
   * Changes left out because their table already held them: copied in a later snapshot, or committed
   * by a second writer ahead of a first session's failed commit (pgdts.apply_writer_progress).
   */
  skippedBeforeCopy: number;
  /** UPDATEs and DELETEs that found no row, let through in a table whose copy read it truncated (CopyPositions.lenient; a replayed group counts again). */
  missingBeforeTruncate: number;
  /** Messages handled into the next group while the one before was being written (ApplyOptions.foldAhead). */
  foldedAhead: number;
}

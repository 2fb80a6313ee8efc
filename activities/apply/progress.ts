/**
 * The apply's position on the target (SYNCING_WAL): `pgdts.apply_progress` holds, per slot, the source
 * commit end LSN of the last transaction committed on the target, written in the same target
 * transaction as the changes (exactly once), and the fence token once the fence's transaction is in.
 * `ApplyPosition` is where a running apply stands and what it reports (ApplyProgress).
 */
import type { Client } from 'pg';
import { runIdempotentDdl } from '../db';
import { literal } from '../sql';
import { bigIntToLsn, lsnToBigInt, maxBig } from './lsn';
import type { ApplyProgress, ApplyResult } from './options';

/** Not "pg_dts": PostgreSQL reserves schema names beginning with pg_ ("unacceptable schema name"). */
export const APPLY_PROGRESS_SCHEMA = 'pgdts';
export const APPLY_PROGRESS_TABLE = 'pgdts.apply_progress';
export const WRITER_PROGRESS_TABLE = 'pgdts.apply_writer_progress';
export const APPLY_PROGRESS_DDL = [
  'CREATE SCHEMA IF NOT EXISTS pgdts',
  `CREATE TABLE IF NOT EXISTS pgdts.apply_progress (
  slot_name text PRIMARY KEY,
  applied_lsn pg_lsn NOT NULL,
  fence_token text,
  updated_at timestamptz NOT NULL DEFAULT now()
)`,
  // A second writer's position (options.ts SecondWriter): the table it writes, and the commit end of
  // the last group whose part of that table it committed. Ahead of the slot's row only when the first
  // session failed to commit the same group: the next run leaves that table's part out.
  `CREATE TABLE IF NOT EXISTS pgdts.apply_writer_progress (
  slot_name text NOT NULL,
  target_table text NOT NULL,
  applied_lsn pg_lsn NOT NULL,
  updated_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (slot_name, target_table)
)`,
] as const;
export const READ_APPLY_PROGRESS_SQL =
  'SELECT applied_lsn::text AS applied_lsn, fence_token FROM pgdts.apply_progress WHERE slot_name = $1';
export const DELETE_APPLY_PROGRESS_SQL = 'DELETE FROM pgdts.apply_progress WHERE slot_name = $1';
export const DELETE_WRITER_PROGRESS_SQL = 'DELETE FROM pgdts.apply_writer_progress WHERE slot_name = $1';


export interface AppliedPosition {
  appliedLsn: string;
  fenceToken?: string;
}

/** The committed position for a slot, or undefined when the table or the row does not exist. */
export async function readApplyProgress(client: Client, slot: string): Promise<AppliedPosition | undefined> {
  const has = await client.query<{ ok: boolean }>(`SELECT to_regclass('pgdts.apply_progress') IS NOT NULL AS ok`);
  if (!has.rows[0]?.ok) return undefined;
  const r = await client.query<{ applied_lsn: string; fence_token: string | null }>(READ_APPLY_PROGRESS_SQL, [slot]);
  const row = r.rows[0];
  if (!row) return undefined;
  return row.fence_token === null ? { appliedLsn: row.applied_lsn } : { appliedLsn: row.applied_lsn, fenceToken: row.fence_token };
}

export async function ensureApplyProgressTable(client: Client): Promise<void> {
  await runIdempotentDdl(client, APPLY_PROGRESS_DDL, 1);
}

/**
 * The tables second writers committed for `slot`: table (qname) -> the commit end of its last group
 * there. Past the slot's row, transactions whose commit starts before it are in that table already.
 */
export async function readWriterProgress(client: Client, slot: string): Promise<Map<string, bigint>> {
  const r = await client.query<{ target_table: string; applied_lsn: string }>(
    'SELECT target_table, applied_lsn::text AS applied_lsn FROM pgdts.apply_writer_progress WHERE slot_name = $1',
    [slot],
  );
  return new Map(r.rows.map((row) => [row.target_table, lsnToBigInt(row.applied_lsn)]));
}

/** The second writer's row, upserted in the transaction that commits its part of a group. */
export function writerProgressUpsert(slot: string, table: string, lsn: bigint): string {
  return (
    `INSERT INTO pgdts.apply_writer_progress AS p (slot_name, target_table, applied_lsn) ` +
    `VALUES (${literal(slot)}, ${literal(table)}, ${literal(bigIntToLsn(lsn))}::pg_lsn) ` +
    `ON CONFLICT (slot_name, target_table) DO UPDATE SET applied_lsn = EXCLUDED.applied_lsn, updated_at = now()`
  );
}


/** Upsert, so a missing row can never let changes commit without their position. */
export function progressUpsert(slot: string, lsn: bigint, fenceToken: string | undefined): string {
  return (
    `INSERT INTO pgdts.apply_progress AS p (slot_name, applied_lsn, fence_token) ` +
    `VALUES (${literal(slot)}, ${literal(bigIntToLsn(lsn))}::pg_lsn, ${fenceToken === undefined ? 'NULL' : literal(fenceToken)}) ` +
    `ON CONFLICT (slot_name) DO UPDATE SET applied_lsn = EXCLUDED.applied_lsn, ` +
    `fence_token = COALESCE(EXCLUDED.fence_token, p.fence_token), updated_at = now()`
  );
}

/**
 * Where the apply stands, as source WAL positions, and the progress it reports from them. Only
 * `durable` is ever confirmed to the slot.
 */
export class ApplyPosition {
  /** Last source commit end LSN committed on the target. */
  committed: bigint;
  /** Known flushed on the target: the only position ever confirmed to the slot. */
  durable: bigint;
  /** committed, or an idle keepalive's position: what lag is measured from. */
  private processed: bigint;
  /** A keepalive position seen while nothing was pending: safe to record as applied. */
  private idleCandidate = 0n;
  private received = 0n;
  /** LSN of the last data message, folded into `received` when reported (data LSNs only grow). */
  receivedData: number | undefined;
  /** pg_current_wal_lsn() on the source at the last check. */
  sourceLsn = 0n;
  fenceToken: string | undefined;
  /** Commit time of the last source transaction seen, for the lag in seconds. */
  private lastCommitTimeMs: number | undefined;
  /** Transactions and changes applied by this run. */
  transactions = 0;
  changes = 0;

  constructor(applied: bigint, fenceToken: string | undefined) {
    this.committed = applied;
    this.durable = applied;
    this.processed = applied;
    this.fenceToken = fenceToken;
  }

  /** A source transaction's commit time (pgoutput: microseconds since 2000-01-01 UTC). */
  sourceCommit(commitTime: bigint): void {
    this.lastCommitTimeMs = Number(commitTime / 1000n) + 946_684_800_000;
  }

  /** Everything before this keepalive's `walEnd` has been received. */
  keepalive(walEnd: bigint): void {
    if (walEnd > this.received) this.received = walEnd;
  }

  /** Nothing received is pending and no transaction is open: the source is idle up to `walEnd`. */
  idleUpTo(walEnd: bigint): void {
    if (walEnd > this.processed) this.processed = walEnd;
    if (walEnd > this.idleCandidate) this.idleCandidate = walEnd;
  }

  /** A group committed on the target, up to `endLsn`. */
  groupCommitted(endLsn: bigint, transactions: number, changes: number): void {
    this.committed = endLsn;
    if (endLsn > this.processed) this.processed = endLsn;
    this.transactions += transactions;
    this.changes += changes;
  }

  /** What a synchronous commit of the progress row alone would make durable (beyond `durable` or not). */
  durableCandidate(): bigint {
    return maxBig(this.committed, this.idleCandidate);
  }

  /** `to` (a durableCandidate) is committed synchronously. */
  flushedTo(to: bigint): void {
    this.committed = maxBig(this.committed, to);
    this.processed = maxBig(this.processed, to);
    this.durable = to;
  }

  private receivedLsn(): bigint {
    if (this.receivedData !== undefined) {
      const l = BigInt(this.receivedData);
      this.receivedData = undefined;
      if (l > this.received) this.received = l;
    }
    return this.received;
  }

  report(): ApplyProgress {
    const lag = this.sourceLsn > this.processed ? this.sourceLsn - this.processed : 0n;
    const p: ApplyProgress = {
      appliedLsn: bigIntToLsn(this.committed),
      confirmedLsn: bigIntToLsn(this.durable),
      receivedLsn: bigIntToLsn(this.receivedLsn()),
      sourceLsn: bigIntToLsn(this.sourceLsn),
      lagBytes: Number(lag),
      lagSeconds: lag === 0n || this.lastCommitTimeMs === undefined ? 0 : Math.max(0, (Date.now() - this.lastCommitTimeMs) / 1000),
      transactions: this.transactions,
      changes: this.changes,
    };
    if (this.fenceToken !== undefined) p.fenceToken = this.fenceToken;
    return p;
  }

  /** The run's result: where it stands, with the engine's own counts. */
  result(counts: Pick<ApplyResult, 'largeChanges' | 'skippedBeforeCopy' | 'missingBeforeTruncate' | 'foldedAhead'>): ApplyResult {
    const r: ApplyResult = {
      appliedLsn: bigIntToLsn(this.committed),
      confirmedLsn: bigIntToLsn(this.durable),
      transactions: this.transactions,
      changes: this.changes,
      ...counts,
    };
    if (this.fenceToken !== undefined) r.fenceToken = this.fenceToken;
    return r;
  }
}

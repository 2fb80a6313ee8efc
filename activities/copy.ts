/**
 * MIGRATING_DATA: stream one table (or one page range of it) from source to target with COPY.
 *
 * Idempotent. A whole-table copy empties the target table in the same transaction that loads it, so a
 * retried copy never leaves duplicates (and, the table being truncated in this transaction, loads with
 * COPY FREEZE: no hint-bit rewrite or freeze vacuum of the new rows later). A range copy cannot empty
 * the table (other ranges load into it): it records `(table, range)` in pgdts.copy_progress in the same
 * transaction as its rows, and a retry that finds its record returns what the committed attempt did.
 *
 * Online migrations read inside the replication slot's exported snapshot, so the copy and the change
 * stream meet exactly. Except where TRUNCATE (or a rewriting ALTER TABLE) committed after the snapshot
 * and before the copy read the table: neither is MVCC-safe, the snapshot reads the new, empty file. The
 * copy finds that out (rewrittenSince) and records it with its rows for the apply.
 *
 * Format: binary COPY when every column has the same built-in type (OID and typmod) on both sides and
 * both servers are the same major version — always the case for tables pg-dts created from the source
 * catalog, except for user-defined types (enums, domains, composites, extension types), whose binary
 * form carries server-specific OIDs. Otherwise text COPY, with the session settings of activities/db.ts
 * so values read back exactly. The source's COPY data is read by copy-out.ts (no per-row objects); its
 * CopyData messages are counted on the way for heartbeats, and at the end the row counts both servers
 * report must agree.
 */
import { pipeline } from 'node:stream/promises';
import type { Client } from 'pg';
import { CopyInFramed, CopyOut } from './copy-out';
import { connect, runIdempotentDdl, sendCancelRequest } from './db';
import { during, preconditionFailed, snapshotLost } from './errors';
import { assertOurs } from './marks';
import { columnList, literal, qname } from './sql';
import { DEFAULT_SPLIT_ABOVE_BYTES, displayName, type ConnectionSpec, type QualifiedName } from './spec';
import { dropConnection } from './pg-internals';

/**
 * A slice of the source table by physical position: heap pages [pageFrom, pageTo) (pageTo absent =
 * to the end). Read with a TID range scan (PostgreSQL ≥ 14), so each range reads only its pages.
 */
export interface CopyRange {
  /** Stable name of the range within its table, e.g. "3/8" (the idempotency key). */
  id: string;
  pageFrom: number;
  pageTo?: number;
}

export interface CopyTableInput {
  source: ConnectionSpec;
  target: ConnectionSpec;
  table: { source: QualifiedName; target: QualifiedName; copyColumns: string[] };
  /** Exported snapshot to read in (online); absent for an offline copy. */
  snapshot?: string;
  /**
   * Copy only this range. The target table is then NOT emptied: call prepareRangedCopy first (once
   * per table and snapshot), then copy the ranges in any order, on any worker, retried at will.
   */
  range?: CopyRange;
  /** 'auto' (default): binary when the column types allow it. 'text' forces text COPY. */
  format?: 'auto' | 'text';
  /** The migration whose mark the target table must carry before it is emptied (activities/marks.ts). */
  migrationId?: string;
  /** spec.copy.maxLockWaitSeconds: read by the activity's lock watch (activities/lock-wait.ts). */
  maxLockWaitSeconds?: number;
}

export interface CopyProgress {
  rows: number;
  bytes: number;
}

export interface CopyTableResult extends CopyProgress {
  durationMs: number;
  format?: 'binary' | 'text';
  /** A range copy found its committed record from an earlier attempt and did nothing. */
  alreadyCopied?: boolean;
}

export interface CopyHooks {
  heartbeat(p: CopyProgress): void;
  signal: AbortSignal;
}

/**
 * Stream buffers (highWaterMark of each stage) larger than Node's 16 KiB default: fewer pauses between
 * the two sockets. Each copy in flight holds up to two of them (COPY TO, COPY FROM).
 * PG_DTS_COPY_BUFFER_KB on the worker overrides it (bench/copy.ts compares sizes).
 */
const DEFAULT_STREAM_BUFFER = 256 * 1024;
function streamBuffer(): number {
  const kb = Number(process.env.PG_DTS_COPY_BUFFER_KB);
  return Number.isInteger(kb) && kb >= 16 ? kb * 1024 : DEFAULT_STREAM_BUFFER;
}

/**
 * On abort, cancels what both sessions run on their servers: a statement that waits for a lock (the
 * target's TRUNCATE behind a reader, the source's COPY behind an ALTER TABLE) sees no abort signal, and
 * a pause, cancel or copy.maxLockWaitSeconds would otherwise wait as long as the lock is held. Returns
 * the listener's removal.
 */
function cancelOnAbort(signal: AbortSignal, sessions: () => Array<Client | undefined>): () => void {
  const cancel = () => {
    for (const c of sessions()) if (c) void sendCancelRequest(c).catch(() => false);
  };
  signal.addEventListener('abort', cancel, { once: true });
  return () => signal.removeEventListener('abort', cancel);
}


/** First OID of user objects: below it, types are built in and have the same OID on every server. */
const FIRST_NORMAL_OBJECT_ID = 16384;

interface ColumnType {
  name: string;
  typid: number;
  typmod: number;
  /** The type (and, for an array, its element type) has binary send/receive functions. */
  binary: boolean;
  /** Array element type, 0 when not an array. */
  elem: number;
}

async function columnTypes(c: Client, table: QualifiedName): Promise<{ version: number; relkind: string; columns: Map<string, ColumnType> }> {
  const r = await c.query<ColumnType & { version: number; relkind: string }>(
    `SELECT a.attname AS name, a.atttypid::int AS typid, a.atttypmod AS typmod,
            (t.typsend <> 0 AND t.typreceive <> 0 AND (e.oid IS NULL OR (e.typsend <> 0 AND e.typreceive <> 0))) AS binary,
            coalesce(e.oid, 0)::int AS elem,
            current_setting('server_version_num')::int / 10000 AS version, k.relkind::text AS relkind
       FROM pg_class k
       JOIN pg_attribute a ON a.attrelid = k.oid AND a.attnum > 0 AND NOT a.attisdropped
       JOIN pg_type t ON t.oid = a.atttypid
       LEFT JOIN pg_type e ON e.oid = t.typelem AND t.typcategory = 'A'
      WHERE k.oid = $1::regclass`,
    [qname(table)],
  );
  return { version: r.rows[0]?.version ?? 0, relkind: r.rows[0]?.relkind ?? 'r', columns: new Map(r.rows.map((x) => [x.name, x])) };
}

/** Binary COPY is exact and cheaper, but only where both sides read each column's bytes the same way. */
export function binaryCompatible(
  columns: readonly string[],
  src: { version: number; columns: Map<string, ColumnType> },
  dst: { version: number; columns: Map<string, ColumnType> },
): boolean {
  if (src.version === 0 || src.version !== dst.version) return false;
  return columns.every((name) => {
    const s = src.columns.get(name);
    const d = dst.columns.get(name);
    return (
      s !== undefined &&
      d !== undefined &&
      s.typid === d.typid &&
      s.typmod === d.typmod &&
      s.typid < FIRST_NORMAL_OBJECT_ID &&
      s.elem < FIRST_NORMAL_OBJECT_ID &&
      s.binary &&
      d.binary
    );
  });
}

/**
 * The row of pgdts.copy_progress (range_id '') that names a ranged table's current copy round: the
 * snapshot prepareRangedCopy emptied the table for. Range ids are never empty.
 */
const ROUND_MARKER = '';
/**
 * The row of a table copied whole (when the workflow asks for records: `snapshotLsn`), written in
 * the transaction that loads it: which snapshot its rows are from, and that snapshot's position.
 */
const WHOLE_TABLE = '*';
/**
 * The row of a table whose copy read it rewritten after the snapshot (see rewrittenSince), written in
 * the transaction that loads it (a range: that range's): `lsn` is a position past the rewrite's commit.
 */
const REWRITTEN = '!rewritten';

/**
 * Where a copy records that it committed (target side, same transaction as its rows). `lsn`: the
 * position of the snapshot the rows were read in (the round marker's for a ranged table, the
 * table's own for a whole one); the apply writes a table's changes only from there (readCopyPositions).
 */
export const COPY_PROGRESS_DDL = [
  'CREATE SCHEMA IF NOT EXISTS pgdts',
  `CREATE TABLE IF NOT EXISTS pgdts.copy_progress (
  target_table text NOT NULL,
  range_id text NOT NULL,
  snapshot text NOT NULL,
  rows bigint NOT NULL,
  bytes bigint NOT NULL,
  copied_at timestamptz NOT NULL DEFAULT now(),
  lsn pg_lsn,
  PRIMARY KEY (target_table, range_id)
)`,
  // A table made by an earlier version: ALTER only then (it takes a lock that in-flight copies' row locks would hold up).
  `DO $$ BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = 'pgdts.copy_progress'::regclass AND attname = 'lsn' AND NOT attisdropped) THEN
    ALTER TABLE pgdts.copy_progress ADD COLUMN lsn pg_lsn;
  END IF;
END $$`,
] as const;

async function ensureCopyProgress(c: Client): Promise<void> {
  // Concurrent range copies may race on CREATE ... IF NOT EXISTS.
  await runIdempotentDdl(c, COPY_PROGRESS_DDL, 2);
}

/**
 * Target tables copied in a snapshot of a known position (whole, or in ranges of one round) and that
 * position: their rows already hold every source transaction committed before it. The apply skips
 * such a table's changes in transactions whose commit record starts before it, as PostgreSQL's own
 * table sync does (worker.c, should_apply_changes_for_rel: applied when statelsn <= final_lsn).
 */
export async function readCopyPositions(c: Client, targets: readonly QualifiedName[]): Promise<Map<string, string>> {
  return recordPositions(c, targets, [ROUND_MARKER, WHOLE_TABLE]);
}

/**
 * Target tables whose copy read them emptied by a TRUNCATE (or rewritten) after the snapshot, and a
 * position past that rewrite's commit. Their rows lack what the snapshot held: the apply lets an
 * UPDATE or DELETE before that position find no row, up to the table's TRUNCATE (CopyPositions.lenient, activities/apply/copy-positions.ts).
 */
export async function readRewrittenCopies(c: Client, targets: readonly QualifiedName[]): Promise<Map<string, string>> {
  return recordPositions(c, targets, [REWRITTEN]);
}

async function recordPositions(c: Client, targets: readonly QualifiedName[], kinds: readonly string[]): Promise<Map<string, string>> {
  const has = await c.query<{ ok: boolean }>(
    `SELECT EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = to_regclass('pgdts.copy_progress') AND attname = 'lsn' AND NOT attisdropped) AS ok`,
  );
  if (!has.rows[0]?.ok) return new Map();
  const r = await c.query<{ target_table: string; lsn: string }>(
    `SELECT target_table, lsn::text AS lsn FROM pgdts.copy_progress WHERE range_id = ANY($1::text[]) AND lsn IS NOT NULL AND target_table = ANY($2::text[])`,
    [kinds, targets.map(qname)],
  );
  return new Map(r.rows.map((x) => [x.target_table, x.lsn]));
}

/**
 * The table (any of its partitions) was rewritten after the snapshot: pg_class as the snapshot sees it
 * names another file than the table has now. TRUNCATE and the rewriting ALTER TABLE forms are not
 * MVCC-safe: the snapshot then reads the new file, empty of every row it should see (VACUUM FULL and
 * CLUSTER also change the file but keep the rows). Asked in the copy's transaction after its COPY,
 * under the lock the COPY took, so no rewrite can come in between; the rewrite the copy read committed
 * before that lock was granted, so the WAL position read now is past its commit. Returns that position,
 * or undefined when the table is as the snapshot saw it.
 */
async function rewrittenSince(src: Client, table: QualifiedName): Promise<string | undefined> {
  const r = await src.query<{ rewritten: boolean; lsn: string }>(
    `SELECT coalesce(bool_or(k.relfilenode <> pg_relation_filenode(k.oid)), false) AS rewritten,
            (CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() ELSE pg_current_wal_insert_lsn() END)::text AS lsn
       FROM pg_class k WHERE k.oid = $1::regclass OR k.oid IN (SELECT relid FROM pg_partition_tree($1::regclass))`,
    [qname(table)],
  );
  return r.rows[0]?.rewritten ? r.rows[0].lsn : undefined;
}

/** Records, in the load's transaction on `dst`, that the table was read rewritten at `lsn` (rewrittenSince). */
async function recordRewritten(target: ConnectionSpec, dst: Client, table: QualifiedName, snapshot: string, lsn: string): Promise<void> {
  const has = await dst.query<{ ok: boolean }>(`SELECT to_regclass('pgdts.copy_progress') IS NOT NULL AS ok`);
  if (!has.rows[0]?.ok) {
    // Rarely needed, so made only then, and on a session of its own: a CREATE racing another copy's
    // would abort the load's transaction.
    const c = await connect(target, { applicationName: 'pg-dts copy' });
    try {
      await ensureCopyProgress(c);
    } finally {
      await c.end().catch(() => undefined);
    }
  }
  // Ranges of one table may each find it rewritten: the latest position bounds them all.
  await dst.query(
    `INSERT INTO pgdts.copy_progress (target_table, range_id, snapshot, rows, bytes, lsn) VALUES ($1, $2, $3, 0, 0, $4::pg_lsn)
     ON CONFLICT (target_table, range_id) DO UPDATE SET snapshot = EXCLUDED.snapshot, lsn = greatest(pgdts.copy_progress.lsn, EXCLUDED.lsn), copied_at = now()`,
    [qname(table), REWRITTEN, snapshot, lsn],
  );
}

export async function copyTable(input: CopyTableInput, hooks: CopyHooks): Promise<CopyTableResult> {
  const started = Date.now();
  const { table, range } = input;
  const where = `copy ${displayName(table.source)} -> ${displayName(table.target)}${range ? ` (pages ${range.id})` : ''}`;
  const snapshotKey = input.snapshot ?? 'offline';
  let src: Client | undefined;
  let dst: Client | undefined;
  let srcPoisoned = false;
  let dstPoisoned = false;
  let readStream: CopyOut | undefined;
  let binary = false;
  // Rows so far: one CopyData message per row (binary COPY adds one for its trailer, PostgreSQL 15).
  const beat = () => hooks.heartbeat({ rows: Math.max(0, (readStream?.messages ?? 0) - (binary ? 1 : 0)), bytes: readStream?.bytes ?? 0 });
  const tick = setInterval(beat, 1000);
  const stopCancelling = cancelOnAbort(hooks.signal, () => [src, dst]);
  try {
    const opened = await openCopySessions(input, where, (c) => (src = c), (c) => (dst = c));
    src = opened.src;
    dst = opened.dst;
    binary = input.format !== 'text' && binaryCompatible(table.copyColumns, opened.srcTypes, opened.dstTypes);
    let freeze = false;
    if (range) {
      const copied = await claimRange(dst, table.target, range, snapshotKey, where);
      if (copied) {
        await dst.query('COMMIT');
        await src.query('COMMIT');
        hooks.heartbeat(copied);
        return { ...copied, durationMs: Date.now() - started, format: binary ? 'binary' : 'text', alreadyCopied: true };
      }
    } else {
      freeze = await emptyTarget(dst, table.target, opened.dstTypes, input.migrationId, where);
    }
    const rangeWhere = range
      ? ` WHERE ctid >= '(${int(range.pageFrom)},0)'::tid${range.pageTo !== undefined ? ` AND ctid < '(${int(range.pageTo)},0)'::tid` : ''}`
      : '';
    srcPoisoned = true; // until the pipeline ends cleanly, the source client may be mid-COPY
    dstPoisoned = true; // and the target's
    const streamed = await streamTable(src, dst, { table, binary, freeze, rangeWhere, signal: hooks.signal }, (o) => (readStream = o), beat);
    srcPoisoned = false;
    dstPoisoned = false;
    const rows = await commitCopy(input, src, dst, streamed, snapshotKey);
    hooks.heartbeat({ rows, bytes: streamed.out.bytes });
    return { rows, bytes: streamed.out.bytes, durationMs: Date.now() - started, format: binary ? 'binary' : 'text' };
  } catch (err) {
    if (!dstPoisoned) await dst?.query('ROLLBACK').catch(() => undefined);
    throw during(err, where);
  } finally {
    clearInterval(tick);
    stopCancelling();
    // A COPY cut short is ended by dropping its connection (the server then rolls its transaction back):
    // destroying the reading side does not cancel the source's COPY, and nothing needs the target's
    // session after a failure (test/integration/copy-abort.test.ts).
    if (dstPoisoned) dropConnection(dst);
    if (srcPoisoned) dropConnection(src);
    await Promise.all([dstPoisoned ? undefined : dst?.end().catch(() => undefined), srcPoisoned ? undefined : src?.end().catch(() => undefined)]);
  }
}

type ColumnTypes = Awaited<ReturnType<typeof columnTypes>>;

/**
 * The source's session in the snapshot and the target's in its load transaction, with each side's
 * column types. Set up side by side: for a table of a few rows they are most of its time (two
 * connections and a few round trips each, slow while other copies load the machine). Both are
 * waited for, so that a failure on one side leaves no connection opening on the other; each is
 * handed over as soon as it is connected, so that a cancel or failure can end it.
 */
async function openCopySessions(
  input: CopyTableInput,
  where: string,
  onSrc: (c: Client) => void,
  onDst: (c: Client) => void,
): Promise<{ src: Client; dst: Client; srcTypes: ColumnTypes; dstTypes: ColumnTypes }> {
  const [s, d] = await Promise.allSettled([
    (async () => {
      const c = await openSnapshotSession(input.source, input.snapshot, where, onSrc);
      return { c, types: await columnTypes(c, input.table.source) };
    })(),
    (async () => {
      const c = await connect(input.target, { applicationName: 'pg-dts copy' });
      onDst(c);
      if (input.range) await ensureCopyProgress(c);
      await c.query('BEGIN');
      return { c, types: await columnTypes(c, input.table.target) };
    })(),
  ]);
  if (s.status === 'rejected') throw s.reason;
  if (d.status === 'rejected') throw d.reason;
  return { src: s.value.c, dst: d.value.c, srcTypes: s.value.types, dstTypes: d.value.types };
}

/**
 * A page range's copy takes its range, in the load's transaction: what this round already copied
 * (to be skipped) is returned; an attempt of an earlier round, or rows of another round's copy of
 * this range, are refused.
 */
async function claimRange(dst: Client, target: QualifiedName, range: NonNullable<CopyTableInput['range']>, snapshotKey: string, where: string): Promise<{ rows: number; bytes: number } | undefined> {
  // Two attempts of one range may overlap (a retry after a heartbeat timeout while the first still
  // runs): the lock makes the later one wait, then find the earlier one's record.
  await dst.query('SELECT pg_advisory_xact_lock(hashtextextended($1, 0))', [`pg-dts copy ${qname(target)} ${range.id}`]);
  // The copy round this attempt belongs to must still be the table's current one: an attempt of an
  // earlier round (its snapshot lost, the table emptied again since) must not add its rows. The
  // share lock holds off the next round's prepareRangedCopy until this transaction ends.
  const roundRow = await dst.query<{ snapshot: string }>('SELECT snapshot FROM pgdts.copy_progress WHERE target_table = $1 AND range_id = $2 FOR SHARE', [
    qname(target),
    ROUND_MARKER,
  ]);
  const current = roundRow.rows[0]?.snapshot;
  if (current !== undefined && current !== snapshotKey) {
    throw preconditionFailed(`${where}: superseded: this copy belongs to the round of snapshot ${snapshotKey}, the table has since been prepared for snapshot ${current}`);
  }
  const done = await dst.query<{ rows: string; bytes: string; snapshot: string }>(
    'SELECT rows::text, bytes::text, snapshot FROM pgdts.copy_progress WHERE target_table = $1 AND range_id = $2',
    [qname(target), range.id],
  );
  const row = done.rows[0];
  if (row && row.snapshot === snapshotKey) return { rows: Number(row.rows), bytes: Number(row.bytes) };
  if (row) {
    // Rows of another snapshot's copy of this range may still be in the table: copying again would
    // duplicate them. prepareRangedCopy (which empties the table and these records) comes first.
    throw preconditionFailed(`${where}: the target holds this range from another copy round (snapshot ${row.snapshot}); run prepareRangedCopy first`);
  }
  return undefined;
}

/** A whole table's copy empties its target first (only ever one the migration made); returns whether COPY may FREEZE. */
async function emptyTarget(dst: Client, target: QualifiedName, dstTypes: ColumnTypes, migrationId: string | undefined, where: string): Promise<boolean> {
  if (migrationId) await assertOurs(dst, [target], migrationId, where);
  // A partitioned table is emptied with its partitions (TRUNCATE ONLY refuses it).
  const partitioned = dstTypes.relkind === 'p';
  await dst.query(`TRUNCATE ${partitioned ? '' : 'ONLY '}${qname(target)}`);
  return !partitioned;
}

/**
 * After the rows: the source's transaction ends; the range's record and a rewrite's record go in the
 * load's transaction, which commits. Returns the rows both servers agree they moved.
 */
async function commitCopy(input: CopyTableInput, src: Client, dst: Client, streamed: { out: CopyOut; writeStream: CopyInFramed }, snapshotKey: string): Promise<number> {
  // Queued behind the COPY: once they return, the source's own row count has arrived too.
  const rewrittenAt = input.snapshot ? await rewrittenSince(src, input.table.source) : undefined;
  await src.query('COMMIT');
  const rows = checkedRows(streamed);
  if (input.range) {
    await dst.query('INSERT INTO pgdts.copy_progress (target_table, range_id, snapshot, rows, bytes) VALUES ($1, $2, $3, $4, $5)', [
      qname(input.table.target),
      input.range.id,
      snapshotKey,
      rows,
      streamed.out.bytes,
    ]);
  }
  if (rewrittenAt) await recordRewritten(input.target, dst, input.table.target, snapshotKey, rewrittenAt);
  await dst.query('COMMIT');
  return rows;
}

/** A source session reading inside the snapshot (offline: its own); `opened` gets it as soon as it is connected. */
async function openSnapshotSession(source: ConnectionSpec, snapshot: string | undefined, where: string, opened: (c: Client) => void): Promise<Client> {
  const c = await connect(source, { applicationName: 'pg-dts copy' });
  opened(c);
  await c.query('BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY');
  if (snapshot) {
    try {
      await c.query(`SET TRANSACTION SNAPSHOT ${literal(snapshot)}`);
    } catch (err) {
      // The holder of the exported snapshot is gone: this copy can never be consistent with the slot.
      throw snapshotLost(`${where}: cannot import snapshot ${snapshot}: ${(err as Error).message}`);
    }
  }
  return c;
}

/**
 * One table's rows through COPY, source to target, on sessions already in their transactions. A
 * failure or cancel leaves both sessions mid-COPY: the caller drops them.
 */
async function streamTable(
  src: Client,
  dst: Client,
  t: { table: CopyTableInput['table']; binary: boolean; freeze: boolean; rangeWhere: string; signal: AbortSignal },
  reading: (out: CopyOut) => void,
  beat: () => void,
): Promise<{ out: CopyOut; writeStream: CopyInFramed }> {
  const cols = columnList(t.table.copyColumns);
  const opts = [t.binary ? 'FORMAT binary' : '', t.freeze ? 'FREEZE' : ''].filter(Boolean);
  const with_ = opts.length ? ` WITH (${opts.join(', ')})` : '';
  const highWaterMark = streamBuffer();
  // The source's CopyData messages go to the target as they are (copy-out.ts): the worker copies
  // nothing but the pieces of messages cut by a socket chunk's end.
  const out = src.query(new CopyOut(`COPY (SELECT ${cols} FROM ${qname(t.table.source)}${t.rangeWhere}) TO STDOUT${t.binary ? ' WITH (FORMAT binary)' : ''}`, { highWaterMark }, true));
  reading(out);
  const writeStream = dst.query(new CopyInFramed(`COPY ${qname(t.table.target)} (${cols}) FROM STDIN${with_}`, { highWaterMark }));
  beat();
  // Cancelled: both connections are dropped at once. A target that answers nothing any more (a
  // network black hole) would otherwise hold the cancel: the stream waits for its reply to CopyFail.
  const dropBoth = (): void => {
    dropConnection(dst);
    dropConnection(src);
  };
  t.signal.addEventListener('abort', dropBoth, { once: true });
  try {
    await pipeline(out, writeStream, { signal: t.signal });
  } finally {
    t.signal.removeEventListener('abort', dropBoth);
  }
  return { out, writeStream };
}

/** Both servers say how many rows they moved: they must agree (call once the source's COPY has completed). */
function checkedRows(s: { out: CopyOut; writeStream: CopyInFramed }): number {
  const rows = s.writeStream.rowCount;
  if (s.out.rowCount !== rows) throw new Error(`row counts disagree: the source sent ${s.out.rowCount}, the target loaded ${rows}`);
  return rows;
}

export interface CopyWholeTablesInput {
  source: ConnectionSpec;
  target: ConnectionSpec;
  tables: Array<CopyTableInput['table']>;
  snapshot?: string;
  /** The snapshot's position: each table's copy is recorded with it (pgdts.copy_progress). */
  snapshotLsn?: string;
  /**
   * Snapshots of earlier rounds of this copy whose tables stand (the migration's slot was kept): a
   * table recorded as copied in one of them is not copied again.
   */
  keep?: string[];
  format?: 'auto' | 'text';
  /** The migration whose mark every target table must carry before it is emptied (activities/marks.ts). */
  migrationId?: string;
}

/**
 * Many whole tables on one pair of sessions: one source transaction in the snapshot for all of them,
 * one target transaction per table (TRUNCATE, COPY FREEZE, COMMIT: idempotent like copyTable). For
 * small tables the two connections and their setup were most of a copy's time.
 */
export async function copyWholeTables(
  input: CopyWholeTablesInput,
  hooks: CopyHooks & { tableDone?: (i: number, r: CopyTableResult & { kept?: boolean; recopied?: boolean }) => void },
): Promise<CopyTableResult[]> {
  let src: Client | undefined;
  let dst: Client | undefined;
  const run: WholeCopyState = { poisoned: false, binary: false };
  let where = `copy ${input.tables.length} tables`;
  const done = { rows: 0, bytes: 0 };
  const beat = () =>
    hooks.heartbeat({ rows: done.rows + Math.max(0, (run.readStream?.messages ?? 0) - (run.binary ? 1 : 0)), bytes: done.bytes + (run.readStream?.bytes ?? 0) });
  const tick = setInterval(beat, 1000);
  const stopCancelling = cancelOnAbort(hooks.signal, () => [src, dst]);
  const results: CopyTableResult[] = [];
  try {
    const [s, d] = await Promise.allSettled([
      openSnapshotSession(input.source, input.snapshot, where, (x) => (src = x)),
      (async () => (dst = await connect(input.target, { applicationName: 'pg-dts copy' })))(),
    ]);
    if (s.status === 'rejected') throw s.reason;
    if (d.status === 'rejected') throw d.reason;
    const [sc, dc] = [s.value, d.value];
    // One catalog query for the whole batch: nothing is emptied unless every table is ours.
    if (input.migrationId) await assertOurs(dc, input.tables.map((t) => t.target), input.migrationId, where);
    const recorded = input.snapshotLsn !== undefined ? await wholeTableRecords(dc, input.tables.map((t) => t.target)) : new Map<string, CopyRecord>();
    const keep = new Set(input.keep ?? []);
    for (const [i, table] of input.tables.entries()) {
      where = `copy ${displayName(table.source)} -> ${displayName(table.target)}`;
      const record = recorded.get(qname(table.target));
      // Committed in an earlier round whose snapshot stands: its rows stay, the apply starts it at its position.
      const kept = record && keep.has(record.snapshot);
      const r: CopyTableResult = kept ? { rows: record.rows, bytes: record.bytes, durationMs: 0, alreadyCopied: true } : await copyWholeTable(run, sc, dc, table, input, hooks.signal, beat);
      done.rows += r.rows;
      done.bytes += r.bytes;
      results.push(r);
      // Copied again: its rows were committed before, in a snapshot that does not stand: this copy is its second.
      hooks.tableDone?.(i, kept ? { ...r, kept: true } : record ? { ...r, recopied: true } : r);
      if (!kept) beat();
    }
    await sc.query('COMMIT');
    return results;
  } catch (err) {
    throw during(err, where);
  } finally {
    clearInterval(tick);
    stopCancelling();
    // Mid-table, both sessions are dropped: the servers roll back (see copyTable).
    if (run.poisoned) {
      dropConnection(dst);
      dropConnection(src);
    }
    await Promise.all([run.poisoned ? undefined : dst?.end().catch(() => undefined), run.poisoned ? undefined : src?.end().catch(() => undefined)]);
  }
}

/** The copy in flight of a batch of whole tables, for its heartbeats and its end. */
interface WholeCopyState {
  /** Mid-table: both sessions may be mid-COPY. */
  poisoned: boolean;
  binary: boolean;
  readStream?: CopyOut;
}

/** One table of a batch: its own target transaction (TRUNCATE, COPY FREEZE, records, COMMIT). */
async function copyWholeTable(
  run: WholeCopyState,
  sc: Client,
  dc: Client,
  table: CopyTableInput['table'],
  input: CopyWholeTablesInput,
  signal: AbortSignal,
  beat: () => void,
): Promise<CopyTableResult> {
  const started = Date.now();
  run.readStream = undefined;
  const [srcTypes, dstTypes] = await Promise.all([columnTypes(sc, table.source), columnTypes(dc, table.target)]);
  run.binary = input.format !== 'text' && binaryCompatible(table.copyColumns, srcTypes, dstTypes);
  const partitioned = dstTypes.relkind === 'p';
  run.poisoned = true;
  await dc.query(`BEGIN; TRUNCATE ${partitioned ? '' : 'ONLY '}${qname(table.target)}`);
  const streamed = await streamTable(sc, dc, { table, binary: run.binary, freeze: !partitioned, rangeWhere: '', signal }, (o) => (run.readStream = o), beat);
  // The source's row count arrives with its COPY's completion, which this query waits behind.
  let rewrittenAt: string | undefined;
  if (input.snapshot) rewrittenAt = await rewrittenSince(sc, table.source);
  else await sc.query('SELECT 1');
  const rows = checkedRows(streamed);
  if (rewrittenAt) await recordRewritten(input.target, dc, table.target, input.snapshot ?? 'offline', rewrittenAt);
  if (input.snapshotLsn !== undefined) {
    // With the rows, in their transaction: the record never names a snapshot the table does not hold.
    await dc.query(
      `INSERT INTO pgdts.copy_progress (target_table, range_id, snapshot, rows, bytes, lsn) VALUES ($1, $2, $3, $4, $5, $6::pg_lsn)
       ON CONFLICT (target_table, range_id) DO UPDATE SET snapshot = EXCLUDED.snapshot, rows = EXCLUDED.rows, bytes = EXCLUDED.bytes, lsn = EXCLUDED.lsn, copied_at = now()`,
      [qname(table.target), WHOLE_TABLE, input.snapshot ?? 'offline', rows, streamed.out.bytes, input.snapshotLsn],
    );
  }
  await dc.query('COMMIT');
  run.poisoned = false;
  run.readStream = undefined;
  return { rows, bytes: streamed.out.bytes, durationMs: Date.now() - started, format: run.binary ? 'binary' : 'text' };
}

interface CopyRecord {
  snapshot: string;
  rows: number;
  bytes: number;
}

/** The whole-table copy records of these tables (creating the records' table on first use). */
async function wholeTableRecords(c: Client, tables: readonly QualifiedName[]): Promise<Map<string, CopyRecord>> {
  await ensureCopyProgress(c);
  const r = await c.query<{ target_table: string; snapshot: string; rows: string; bytes: string }>(
    'SELECT target_table, snapshot, rows::text, bytes::text FROM pgdts.copy_progress WHERE range_id = $1 AND target_table = ANY($2::text[])',
    [WHOLE_TABLE, tables.map(qname)],
  );
  return new Map(r.rows.map((x) => [x.target_table, { snapshot: x.snapshot, rows: Number(x.rows), bytes: Number(x.bytes) }]));
}

function int(n: number): number {
  if (!Number.isSafeInteger(n) || n < 0) throw new Error(`invalid page number ${n}`);
  return n;
}

/**
 * Before the range copies of one table for one snapshot (absent: offline): records the round, empties
 * the target table and forgets the range records of any earlier snapshot. Idempotent. The round is
 * written first: it waits for range copies still in their transaction (they hold it in share mode),
 * and a copy of an earlier round that starts later finds the new round and refuses to copy.
 */
export async function prepareRangedCopy(input: { target: ConnectionSpec; table: QualifiedName; snapshot?: string; snapshotLsn?: string; migrationId?: string }): Promise<number> {
  const c = await connect(input.target, { applicationName: 'pg-dts copy' });
  try {
    await ensureCopyProgress(c);
    await c.query('BEGIN');
    if (input.migrationId) await assertOurs(c, [input.table], input.migrationId, `prepare the ranged copy of ${displayName(input.table)}`);
    await c.query(
      `INSERT INTO pgdts.copy_progress (target_table, range_id, snapshot, rows, bytes, lsn) VALUES ($1, $2, $3, 0, 0, $4::pg_lsn)
       ON CONFLICT (target_table, range_id) DO UPDATE SET snapshot = EXCLUDED.snapshot, lsn = EXCLUDED.lsn, copied_at = now()`,
      [qname(input.table), ROUND_MARKER, input.snapshot ?? 'offline', input.snapshotLsn ?? null],
    );
    const k = await c.query<{ relkind: string }>('SELECT relkind::text FROM pg_class WHERE oid = $1::regclass', [qname(input.table)]);
    await c.query(`TRUNCATE ${k.rows[0]?.relkind === 'p' ? '' : 'ONLY '}${qname(input.table)}`);
    // Ranges another round had committed: emptied now, so they will have been copied twice.
    const removed = await c.query('DELETE FROM pgdts.copy_progress WHERE target_table = $1 AND range_id <> ALL($2::text[]) AND snapshot <> $3', [
      qname(input.table),
      [ROUND_MARKER, REWRITTEN],
      input.snapshot ?? 'offline',
    ]);
    await c.query('DELETE FROM pgdts.copy_progress WHERE target_table = $1 AND range_id <> $2', [qname(input.table), ROUND_MARKER]);
    await c.query('COMMIT');
    return removed.rowCount ?? 0;
  } catch (err) {
    await c.query('ROLLBACK').catch(() => undefined);
    throw during(err, `prepare the ranged copy of ${displayName(input.table)}`);
  } finally {
    await c.end().catch(() => undefined);
  }
}

/** After the copy (or on cancel): the range records of these target tables are no longer needed. */
export async function forgetCopyProgress(input: { target: ConnectionSpec; tables: QualifiedName[] }): Promise<void> {
  await forgetCopyRecords(input.target, input.tables.map(qname));
}

/** Deletes the copy records of these target tables (as pgdts.copy_progress names them, quoted). */
export async function forgetCopyRecords(target: ConnectionSpec, tables: readonly string[]): Promise<void> {
  const c = await connect(target, { applicationName: 'pg-dts cleanup' });
  try {
    const has = await c.query<{ ok: boolean }>(`SELECT to_regclass('pgdts.copy_progress') IS NOT NULL AS ok`);
    if (!has.rows[0]?.ok) return;
    await c.query('BEGIN');
    await c.query('DELETE FROM pgdts.copy_progress WHERE target_table = ANY($1::text[])', [tables]);
    // The last migration using the table removes it, and our schema once nothing else is in it; never
    // waiting for the lock, which would stall another migration's range copies on this target.
    await c.query('SAVEPOINT table_drop');
    const locked = await c.query('LOCK TABLE pgdts.copy_progress IN ACCESS EXCLUSIVE MODE NOWAIT').then(
      () => true,
      () => c.query('ROLLBACK TO SAVEPOINT table_drop').then(() => false),
    );
    const left = locked ? await c.query('SELECT 1 FROM pgdts.copy_progress LIMIT 1') : { rowCount: 1 };
    if (!left.rowCount) {
      await c.query('DROP TABLE pgdts.copy_progress');
      await c.query('SAVEPOINT schema_drop');
      // Never wait: DROP SCHEMA locks what is still in it before refusing (see cleanup.ts).
      await c.query(`SET LOCAL lock_timeout = '1s'`);
      // Anything else still in the schema (the apply's progress table, ...) keeps it.
      await c.query('DROP SCHEMA pgdts').catch(() => c.query('ROLLBACK TO SAVEPOINT schema_drop'));
    }
    await c.query('COMMIT');
  } catch (err) {
    await c.query('ROLLBACK').catch(() => undefined);
    throw during(err, 'forget the range copy records');
  } finally {
    await c.end().catch(() => undefined);
  }
}

/**
 * VALIDATING, the SQL: pure builders (no I/O) for every query the validation runs. Each returns
 * `{ text, values }`; identifiers go through activities/sql.ts, type names are PostgreSQL's own
 * format_type text (read with search_path = '' on each side), values always travel as parameters.
 *
 * Content is compared in PostgreSQL's text form, which the session pins (TEXT_FORMAT_SETTINGS):
 *  - a row's identity is `ROW(c1, c2, ...)::text` over the copied columns in source order; record_out
 *    quotes empty strings and leaves NULLs empty, so NULL and '' differ, and every type (arrays, json,
 *    ranges, composites, NaN/Infinity, bytea, timestamps) renders deterministically;
 *  - a chunk's checksum is `count(*)` and the sum of a 64-bit hash of each row's text (or of its
 *    columns' own hashes, row-hash.ts), an aggregate that does not depend on row order and, unlike
 *    xor, does not let duplicate rows cancel out;
 *  - a sampled row is compared column by column through md5 digests of each value (DigestMode), so no
 *    value, however wide, is ever fetched.
 */
import { ident, literal, qname } from '../sql';
import type { QualifiedName } from '../spec';
import { col, rowHash64, rowText, type RowHash } from './row-hash';

export { rowHash64, rowText, typedHashOf, type RowHash } from './row-hash';

export interface Sql {
  text: string;
  values: unknown[];
}

/** A key range, lower bound inclusive, upper bound exclusive; bounds are key tuples in text form. */
export interface KeyRange {
  lo?: readonly string[];
  hi?: readonly string[];
}

/** What a side knows about its table: quoted name, compared columns, key columns and their types there. */
export interface TableShape {
  table: QualifiedName;
  /** Compared columns, in source attnum order (TableDef.copyColumns). */
  columns: readonly string[];
  /** Key columns (TableDef.keyColumns); empty: no key. */
  keyColumns: readonly string[];
  /** format_type() of each key column on this side, read with search_path = ''. */
  keyTypes: readonly string[];
  /**
   * The two servers' encodings differ: row texts are hashed as UTF-8 (convert_to), so the same
   * characters hash alike although each server stores them as different bytes.
   */
  utf8?: boolean;
  /** The server has hashtidextended (PostgreSQL 14+): the tuple fingerprint hashes the ctid itself. */
  tidHash?: boolean;
  /**
   * Every compared column is of one type on both sides whose own extended hash function tells its
   * values apart (typedHashOf): the row hash combines those instead of hashing the row's text, about
   * a third of the cost (bench:e2e's proof pass). Set by openSides on both sides or neither.
   */
  typedHash?: readonly string[];
}


const keyTuple = (s: TableShape): string =>
  s.keyColumns.length === 1 ? col(s.keyColumns[0]!) : `(${s.keyColumns.map(col).join(', ')})`;

const keyOrder = (s: TableShape): string => s.keyColumns.map(col).join(', ');

const keyTextList = (s: TableShape): string => s.keyColumns.map((k, i) => `${col(k)}::text AS k${i}`).join(', ');

/** `(t.a, t.b) >= ($1::integer, $2::text) AND (t.a, t.b) < ($3::integer, $4::text)`, or TRUE. */
export function keyRangePredicate(s: TableShape, range: KeyRange, values: unknown[]): string {
  if (s.keyColumns.length === 0) throw new Error('keyRangePredicate: the table has no key');
  const bound = (b: readonly string[]): string => {
    if (b.length !== s.keyColumns.length) throw new Error(`key bound has ${b.length} values for ${s.keyColumns.length} key columns`);
    const params = b.map((v, i) => {
      values.push(v);
      return `$${values.length}::${s.keyTypes[i]!}`;
    });
    return params.length === 1 ? params[0]! : `(${params.join(', ')})`;
  };
  const parts: string[] = [];
  if (range.lo) parts.push(`${keyTuple(s)} >= ${bound(range.lo)}`);
  if (range.hi) parts.push(`${keyTuple(s)} < ${bound(range.hi)}`);
  return parts.length ? parts.join(' AND ') : 'TRUE';
}

/**
 * Column names and types of a table on one side, and the server's encoding. Run with search_path = ''
 * so that format_type qualifies user types. One row with exists = false (and NULL columns) when the
 * table is missing.
 */
export function describeTableSql(table: QualifiedName): Sql {
  return {
    text:
      `SELECT r.oid IS NOT NULL AS exists, a.attname AS name, format_type(a.atttypid, a.atttypmod) AS type, ` +
      `current_setting('server_encoding') AS encoding, current_setting('server_version_num')::int >= 140000 AS tid_hash ` +
      `FROM (SELECT to_regclass($1) AS oid) r ` +
      `LEFT JOIN pg_attribute a ON a.attrelid = r.oid AND a.attnum > 0 AND NOT a.attisdropped ` +
      `ORDER BY a.attnum`,
    values: [qname(table)],
  };
}

/** describeTableSql for many tables at once: the same columns, with `idx`, the table's position in `tables` (from 0). */
export function describeTablesSql(tables: readonly QualifiedName[]): Sql {
  return {
    text:
      `SELECT i.n::int - 1 AS idx, r.oid IS NOT NULL AS exists, a.attname AS name, format_type(a.atttypid, a.atttypmod) AS type, ` +
      `current_setting('server_encoding') AS encoding, current_setting('server_version_num')::int >= 140000 AS tid_hash ` +
      `FROM unnest($1::text[]) WITH ORDINALITY AS i(t, n) CROSS JOIN LATERAL (SELECT to_regclass(i.t) AS oid) r ` +
      `LEFT JOIN pg_attribute a ON a.attrelid = r.oid AND a.attnum > 0 AND NOT a.attisdropped ` +
      `ORDER BY i.n, a.attnum`,
    values: [tables.map(qname)],
  };
}

export function countSql(table: QualifiedName): Sql {
  return { text: `SELECT count(*)::text AS n FROM ${qname(table)}`, values: [] };
}

/** Row count and order-independent hash sum of one key range (the whole table for an empty range). */
export function chunkChecksumSql(s: TableShape, range: KeyRange, hash: RowHash): Sql {
  const values: unknown[] = [];
  const where = s.keyColumns.length ? keyRangePredicate(s, range, values) : 'TRUE';
  return {
    text: `SELECT count(*)::text AS n, coalesce(sum(${rowHash64(s.columns, hash, s.utf8, s.typedHash)}), 0)::text AS h FROM ${qname(s.table)} t WHERE ${where}`,
    values,
  };
}

/**
 * Which heap tuple versions a range holds: the sum of a hash of each tuple's (tableoid, ctid, xmin).
 * A tuple version's content never changes (an UPDATE writes a new version at a new ctid with a new
 * xmin, a DELETE removes it, VACUUM FULL moves it), so a range whose tuple set is unchanged on one
 * side still holds exactly what it held before: the proof compares it with itself over time, never
 * across servers, so the hash's byte order does not matter. Reads no column, detoasts nothing.
 * xmin is the raw one (freezing keeps it), so only 2^32 transactions in between could reuse one.
 * On PostgreSQL 14+ the ctid is hashed as it is (hashtidextended, seeded with xmin and tableoid: about
 * 1.6x faster than building text, measured on 1M rows); a side always uses the same form, since its
 * server does not change between the proof's pass and the cutover. xmin goes through its text form:
 * `age('3') - age(xmin)` would be ~20% cheaper per chunk read, but it moves from one transaction to
 * the next for the special xids (the frozen xmin 2 of tuples from before 9.4: age() is INT_MAX), and
 * age() is PARALLEL RESTRICTED: a keyless table read whole at the cutover would lose its workers.
 */
const tupleId = (s: TableShape): string =>
  s.tidHash
    ? `hashtidextended(t.ctid, (t.xmin::text::int8 << 32) # t.tableoid::int8)`
    : `hashtextextended(t.tableoid::text || t.ctid::text || t.xmin::text, 0)`;

/** Row count and tuple fingerprint of one key range (the whole table for an empty range). */
export function chunkFingerprintSql(s: TableShape, range: KeyRange): Sql {
  const values: unknown[] = [];
  const where = s.keyColumns.length ? keyRangePredicate(s, range, values) : 'TRUE';
  return { text: `SELECT count(*)::text AS n, coalesce(sum(${tupleId(s)}), 0)::text AS f FROM ${qname(s.table)} t WHERE ${where}`, values };
}

// A proof read: `except` / `only` keys (of a one-column key, as text) left out / alone read; `fingerprint`
// the tuple fingerprint too, else NOT_FINGERPRINTED, equal to no read (100k pgbench rows, warm: 20 ms without, 38 with).
export type ProofRead = { except?: readonly string[]; only?: readonly string[]; fingerprint?: boolean };
export const NOT_FINGERPRINTED = 'not-fingerprinted';

/** Count and content checksum of one key range (see ProofRead), in one scan (one snapshot). */
export function chunkProofSql(s: TableShape, range: KeyRange, hash: RowHash, keys: ProofRead = {}): Sql {
  const values: unknown[] = [];
  // `only`: the keys alone, without the range (the rows are in it): one index probe per key rather
  // than a scan of the range filtered by them.
  let where = s.keyColumns.length && !keys.only ? keyRangePredicate(s, range, values) : 'TRUE';
  for (const [list, not] of [[keys.except, 'NOT '], [keys.only, '']] as const) {
    if (!list) continue;
    if (s.keyColumns.length !== 1) throw new Error('chunkProofSql: a key list needs a one-column key');
    values.push(list);
    where += ` AND ${not}(${keyTuple(s)} = ANY ($${values.length}::${s.keyTypes[0]!}[]))`;
  }
  return {
    text:
      `SELECT count(*)::text AS n, coalesce(sum(${rowHash64(s.columns, hash, s.utf8, s.typedHash)}), 0)::text AS h` +
      `${keys.fingerprint ? `, coalesce(sum(${tupleId(s)}), 0)::text AS f` : ''} FROM ${qname(s.table)} t WHERE ${where}`,
    values,
  };
}

// ---------------------------------------------------------------------------------------------------
// The proof's state on the target: chunk boundaries, and each verified chunk's tuple fingerprints
// ---------------------------------------------------------------------------------------------------

export const PROOF_TABLE = 'pgdts.proof_chunks';

export const PROOF_SCHEMA_SQL = [
  'CREATE SCHEMA IF NOT EXISTS pgdts',
  `CREATE TABLE IF NOT EXISTS ${PROOF_TABLE} (
    slot_name text NOT NULL,
    table_name text NOT NULL,
    chunk int NOT NULL,
    chunks int NOT NULL,
    lo text[],
    hi text[],
    rows bigint,
    source_tuples text,
    target_tuples text,
    verified_at timestamptz,
    PRIMARY KEY (slot_name, table_name, chunk)
  )`,
  // The target's write count of the table (WRITES_TABLE) when the chunk's target read was taken, when
  // no write came between the pass's first look and that read; NULL: unknown, read again at cutover.
  `ALTER TABLE ${PROOF_TABLE} ADD COLUMN IF NOT EXISTS target_writes text`,
  `CREATE TABLE IF NOT EXISTS pgdts.proof_writes (
    slot_name text NOT NULL,
    relid oid NOT NULL,
    writes bigint NOT NULL,
    PRIMARY KEY (slot_name, relid)
  )`,
  `CREATE TABLE IF NOT EXISTS pgdts.proof_chunk_writes (
    slot_name text NOT NULL,
    relid oid NOT NULL,
    chunk int NOT NULL,
    writes bigint NOT NULL,
    delta bigint NOT NULL,
    PRIMARY KEY (slot_name, relid, chunk)
  )`,
  `CREATE TABLE IF NOT EXISTS pgdts.proof_keys (
    slot_name text NOT NULL,
    relid oid NOT NULL,
    chunk int NOT NULL,
    seq bigint NOT NULL,
    k text NOT NULL
  )`,
  `CREATE INDEX IF NOT EXISTS proof_keys_by_chunk ON pgdts.proof_keys (slot_name, relid, chunk, seq)`,
] as const;

// ---------------------------------------------------------------------------------------------------
// Write marks: which target tables any transaction wrote since a chunk was proven
// ---------------------------------------------------------------------------------------------------
//
// While the proof runs, each target table carries a statement trigger of ours (enabled ALWAYS, so it
// fires for the apply's replica-mode sessions too, and for anyone else writing the target) that adds
// one, once per transaction, to the table's count in pgdts.proof_writes. The count moves in the very
// transaction that writes, so a read of it in the snapshot of a chunk's target read tells exactly
// whether any write to the table committed since: at cutover a table whose count has not moved since
// its chunks were proven needs no re-read of them on either side (the source's changes only reach the
// target as writes by the apply).

export const WRITES_TABLE = 'pgdts.proof_writes';
/**
 * Chunk marks. A table of several chunks with a one-column key of a type without collation gets, instead
 * of one count, a count per chunk: three statement triggers (one per event: PostgreSQL allows transition
 * tables on single-event triggers only) read the keys the statement wrote, old and new, add one to
 * each chunk they fall in (width_bucket over the chunks' lower bounds, a binary search) and the rows
 * it gained or lost to its `delta`, and record each key written with the chunk's new count
 * (pgdts.proof_keys). The table's own trigger then counts TRUNCATE only. At cutover a chunk nobody
 * wrote since proven is not read, and one written since is checked by the keys written after its
 * proof alone: the window grows with what was written, not with the table.
 */
export const CHUNK_WRITES_TABLE = 'pgdts.proof_chunk_writes';
export const KEYS_TABLE = 'pgdts.proof_keys';
/**
 * Key types whose order needs no collation and whose text is read alike by every session (no date or
 * timestamp: their text follows the writer's DateStyle), so the trigger's width_bucket, the proof's
 * ranges and the recorded keys agree.
 */
const CHUNK_MARK_TYPES = new Set(['smallint', 'integer', 'bigint', 'numeric', 'uuid', 'oid']);
export const chunkMarkable = (keyTypes: readonly string[]): boolean => keyTypes.length === 1 && CHUNK_MARK_TYPES.has(keyTypes[0]!);

/** The trigger (on each target table) and its function (in pgdts), both named by the slot; `rows`: the chunk triggers by event. */
export const writeMarkNames = (slot: string) => ({
  trigger: `${slot}_writes`,
  fn: `pgdts.${ident(`${slot}_writes`)}`,
  rows: { INSERT: `${slot}_wi`, UPDATE: `${slot}_wu`, DELETE: `${slot}_wd` },
});

/**
 * The trigger function. SECURITY DEFINER with a pinned search_path: a writer of another role counts
 * too, without rights on pgdts and without a search_path of its choosing. `set_config(..., true)`
 * remembers for the rest of the transaction that the table is counted: one row update per table and
 * transaction, whatever the number of statements.
 */
export function writeMarkFunctionSql(slot: string): string {
  const { fn } = writeMarkNames(slot);
  return (
    `CREATE OR REPLACE FUNCTION ${fn}() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $f$\n` +
    `BEGIN\n` +
    // A chunk trigger: its arguments are the key column, its type and the chunks' lower bounds. The
    // type goes into the statement's text: only the types chunk marks are made for (a trigger
    // someone else points at this function gets an error, not our rights). Counters are locked in
    // chunk order (two writers of several chunks never wait on each other in a cycle); a NULL key
    // (a target without its key yet, keys after cutover) counts in no chunk's range: chunk -1. Bounds
    // parsed once (a subquery; `$3::type[]` was per row: a 740-row UPDATE 15 ms bare, 25 → 19 ms marked).
    `  IF TG_NARGS = 3 THEN\n` +
    `    IF TG_ARGV[1] NOT IN (${[...CHUNK_MARK_TYPES].map(literal).join(', ')}) THEN\n` +
    `      RAISE EXCEPTION 'pg-dts write marks: key type % is not one of chunk marks', TG_ARGV[1];\n` +
    `    END IF;\n` +
    `    EXECUTE format('WITH r AS (SELECT coalesce(width_bucket(x.k, (SELECT $3::%1$s[])), -1) AS b, x.k, x.n FROM (%2$s) x), ' ||\n` +
    `      'c AS (INSERT INTO ${CHUNK_WRITES_TABLE} AS w (slot_name, relid, chunk, writes, delta) SELECT $1, $2, b, 1, sum(n) FROM r GROUP BY b ORDER BY b ' ||\n` +
    `      'ON CONFLICT (slot_name, relid, chunk) DO UPDATE SET writes = w.writes + 1, delta = w.delta + excluded.delta RETURNING chunk, writes) ' ||\n` +
    `      'INSERT INTO ${KEYS_TABLE} (slot_name, relid, chunk, seq, k) SELECT DISTINCT $1, $2, r.b, c.writes, r.k::text FROM r JOIN c ON c.chunk = r.b WHERE r.k IS NOT NULL', TG_ARGV[1],\n` +
    `      CASE TG_OP WHEN 'INSERT' THEN format('SELECT %I AS k, 1 AS n FROM pgdts_new', TG_ARGV[0])\n` +
    `        WHEN 'DELETE' THEN format('SELECT %I AS k, -1 AS n FROM pgdts_old', TG_ARGV[0])\n` +
    `        ELSE format('SELECT %1$I AS k, 1 AS n FROM pgdts_new UNION ALL SELECT %1$I, -1 FROM pgdts_old', TG_ARGV[0]) END)\n` +
    `    USING ${literal(slot)}, TG_RELID, TG_ARGV[2];\n` +
    `    RETURN NULL;\n` +
    `  END IF;\n` +
    `  IF coalesce(current_setting(${literal(`pgdts.${slot}_`)} || TG_RELID::text, true), '') <> 'y' THEN\n` +
    `    PERFORM set_config(${literal(`pgdts.${slot}_`)} || TG_RELID::text, 'y', true);\n` +
    `    INSERT INTO ${WRITES_TABLE} AS w (slot_name, relid, writes) VALUES (${literal(slot)}, TG_RELID, 1)\n` +
    `      ON CONFLICT (slot_name, relid) DO UPDATE SET writes = w.writes + 1;\n` +
    `  END IF;\n` +
    `  RETURN NULL;\n` +
    `END $f$`
  );
}

/** At cleanup, first of all: the trigger does nothing any more (no table lock needed to say so). */
/**
 * Only our triggers call the function: a role that may create a trigger elsewhere must not point one
 * at it (it runs with its owner's rights). Triggers need EXECUTE when they are created, not when they fire.
 */
export const writeMarkRevokeSql = (slot: string): string => `REVOKE EXECUTE ON FUNCTION ${writeMarkNames(slot).fn}() FROM PUBLIC`;

export function writeMarkOffSql(slot: string): string {
  return `CREATE OR REPLACE FUNCTION ${writeMarkNames(slot).fn}() RETURNS trigger LANGUAGE plpgsql AS $f$ BEGIN RETURN NULL; END $f$`;
}

/**
 * The statements that put the trigger on one table (in one transaction, with a short lock_timeout).
 * `chunks`: the key column, its type and the text of the chunks' lower bounds (all but the first) as
 * an array of that type (chunkBoundsSql): chunk triggers, and the table's own for TRUNCATE.
 */
export function writeMarkTriggerSql(slot: string, table: QualifiedName, chunks?: { column: string; type: string; bounds: string }): string[] {
  const { trigger, fn, rows } = writeMarkNames(slot);
  const on = qname(table);
  if (!chunks) {
    return [
      `CREATE TRIGGER ${ident(trigger)} AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON ${on} FOR EACH STATEMENT EXECUTE PROCEDURE ${fn}()`,
      `ALTER TABLE ${on} ENABLE ALWAYS TRIGGER ${ident(trigger)}`,
    ];
  }
  const args = [chunks.column, chunks.type, chunks.bounds].map(literal).join(', ');
  const transition = { INSERT: 'NEW TABLE AS pgdts_new', UPDATE: 'OLD TABLE AS pgdts_old NEW TABLE AS pgdts_new', DELETE: 'OLD TABLE AS pgdts_old' } as const;
  return [
    `CREATE TRIGGER ${ident(trigger)} AFTER TRUNCATE ON ${on} FOR EACH STATEMENT EXECUTE PROCEDURE ${fn}()`,
    `ALTER TABLE ${on} ENABLE ALWAYS TRIGGER ${ident(trigger)}`,
    ...(['INSERT', 'UPDATE', 'DELETE'] as const).flatMap((ev) => [
      `CREATE TRIGGER ${ident(rows[ev])} AFTER ${ev} ON ${on} REFERENCING ${transition[ev]} FOR EACH STATEMENT EXECUTE PROCEDURE ${fn}(${args})`,
      `ALTER TABLE ${on} ENABLE ALWAYS TRIGGER ${ident(rows[ev])}`,
    ]),
  ];
}

/** The chunks' lower bounds but the first's, as the text of an array of the key's type (on the target). */
export function chunkBoundsSql(slot: string, table: string, type: string): Sql {
  return {
    text: `SELECT coalesce(array_agg((lo[1])::${type} ORDER BY chunk), '{}')::text AS bounds FROM ${PROOF_TABLE} WHERE slot_name = $1 AND table_name = $2 AND chunk > 0`,
    values: [slot, table],
  };
}

/** Whether one table is a plain table and already carries the enabled trigger, and the chunk bounds it counts by. */
export function writeMarkStateSql(slot: string, table: QualifiedName): Sql {
  return {
    text:
      `SELECT c.relkind::text AS kind, c.relhassubclass AS children, EXISTS (SELECT 1 FROM pg_trigger g WHERE g.tgrelid = c.oid AND g.tgname = $2 AND g.tgenabled = 'A') AS armed, ` +
      // The chunk bounds the insert trigger counts by (its third argument), if any.
      `(SELECT split_part(encode(g.tgargs, 'escape'), '\\000', 3) FROM pg_trigger g WHERE g.tgrelid = c.oid AND g.tgname = $3) AS bounds ` +
      `FROM pg_class c WHERE c.oid = to_regclass($1)`,
    values: [qname(table), writeMarkNames(slot).trigger, writeMarkNames(slot).rows.INSERT],
  };
}

/**
 * The table's write count in the reading transaction's snapshot, as `count:oid:relfilenode:xmins`; NULL
 * when the trigger is not there (the count would not see every write). The table's identity and
 * storage come with it: a table dropped and created again, or rewritten by DDL (ALTER TABLE ... TYPE,
 * which fires no write trigger), never shows the count a chunk was stored with.
 */
export function writeCountSql(slot: string, table: QualifiedName, chunks: readonly number[]): Sql {
  const { trigger, rows } = writeMarkNames(slot);
  // One row per chunk (`chunk`, `writes`), read in one statement: a pass's recheck reads every chunk's.
  return {
    text:
      `SELECT ch AS chunk, CASE WHEN EXISTS (SELECT 1 FROM pg_trigger g WHERE g.tgrelid = c.oid AND g.tgname = $3 AND g.tgenabled = 'A') ` +
      `THEN ${countText('c', '$3', '$4')} || ${chunkCountText('c', '$4', 'ch')} END AS writes FROM unnest($5::int[]) AS ch, pg_class c ` +
      `LEFT JOIN ${WRITES_TABLE} w ON w.slot_name = $1 AND w.relid = c.oid WHERE c.oid = to_regclass($2)`,
    values: [slot, qname(table), trigger, [rows.INSERT, rows.UPDATE, rows.DELETE], [...chunks]],
  };
}

/**
 * `count:oid:relfilenode:xmins`: with the row versions (xmin) of our triggers on the table, so that a
 * trigger disabled and enabled again (writes in between went uncounted) or dropped and created again
 * never shows the mark a chunk was stored with. `trigger`, `names`: the parameters holding our
 * table trigger's name and the chunk triggers' names (none: the table trigger alone).
 */
const countText = (c: string, trigger: string, names?: string) =>
  `coalesce(w.writes, 0)::text || ':' || ${c}.oid::text || ':' || ${c}.relfilenode::text || ':' || ` +
  `coalesce((SELECT string_agg(g.xmin::text, '.' ORDER BY g.tgname) FROM pg_trigger g WHERE g.tgrelid = ${c}.oid AND (g.tgname = ${trigger}${names ? ` OR g.tgname = ANY (${names}::text[])` : ''})), '')`;
/**
 * A chunk-marked table's count of one chunk, as `#n` ('' for a table without chunk triggers; NULL,
 * unknown, when one of them is missing or not enabled ALWAYS).
 */
const chunkCountText = (c: string, names: string, chunk: string) =>
  `CASE ${chunkTriggersState(c, names)} ` +
  `WHEN '0/0' THEN '' WHEN '3/3' THEN '#' || coalesce((SELECT cw.writes || ':' || cw.delta FROM ${CHUNK_WRITES_TABLE} cw WHERE cw.slot_name = $1 AND cw.relid = ${c}.oid AND cw.chunk = ${chunk}), '0:0') END`;

/** '0/0': no chunk triggers on the table; '3/3': all three, enabled ALWAYS. */
const chunkTriggersState = (c: string, names: string) =>
  `(SELECT count(*) FILTER (WHERE g.tgenabled = 'A') || '/' || count(*) FROM pg_trigger g WHERE g.tgrelid = ${c}.oid AND g.tgname = ANY (${names}::text[]))`;

/**
 * A chunk's mark from its table's (writeCountsSql): the table's count, and the chunk's own when the
 * table has chunk triggers, as `table#writes:delta`.
 */
export function chunkMark(w: TableWrites | undefined, chunk: number): string | undefined {
  if (!w) return undefined;
  if (!w.chunks) return w.table;
  return `${w.table}#${w.chunks[chunk] ?? '0:0'}`;
}
export interface TableWrites {
  table: string;
  /** Chunk-marked tables: each written chunk's `writes:delta`. */
  chunks?: Record<number, string>;
}

/** A chunk mark's parts: the table's count and the chunk's writes and row delta; undefined without chunk counts. */
export function parseChunkMark(mark: string | undefined): { table: string; writes: number; delta: number } | undefined {
  const m = mark === undefined ? null : /^(.*)#(\d+):(-?\d+)$/.exec(mark);
  return m ? { table: m[1]!, writes: Number(m[2]), delta: Number(m[3]) } : undefined;
}

/** The keys written in one chunk after its count was `after` (at most `limit`), in the reading transaction's snapshot. */
export function writtenKeysSql(slot: string, table: QualifiedName, chunk: number, after: number, limit: number): Sql {
  return {
    text: `SELECT DISTINCT k FROM ${KEYS_TABLE} WHERE slot_name = $1 AND relid = to_regclass($2) AND chunk = $3 AND seq > $4 LIMIT $5`,
    values: [slot, qname(table), chunk, after, limit],
  };
}

/**
 * The keys written in several chunks of one table, each after its own count, in the reading
 * transaction's snapshot: per chunk its distinct keys, or NULL when more than its limit.
 */
export function writtenKeysByChunkSql(slot: string, table: QualifiedName, chunks: ReadonlyArray<{ chunk: number; after: number; limit: number }>): Sql {
  return {
    text:
      `SELECT a.chunk, CASE WHEN count(x.k) <= a.lim THEN coalesce(array_agg(x.k) FILTER (WHERE x.k IS NOT NULL), '{}') END AS keys ` +
      `FROM unnest($3::int[], $4::bigint[], $5::int[]) AS a(chunk, after, lim) ` +
      // Each chunk's distinct keys, one more than its limit at most (a bulk write is not sorted whole).
      `LEFT JOIN LATERAL (SELECT DISTINCT k.k FROM ${KEYS_TABLE} k WHERE k.slot_name = $1 AND k.relid = to_regclass($2) AND k.chunk = a.chunk AND k.seq > a.after LIMIT a.lim + 1) x ON true ` +
      `GROUP BY a.chunk, a.lim`,
    values: [slot, qname(table), chunks.map((c) => c.chunk), chunks.map((c) => c.after), chunks.map((c) => c.limit)],
  };
}

/** The keys recorded up to a chunk's count `upTo`: the chunk was proven at it, they tell nothing more. */
export function forgetWrittenKeysSql(slot: string, table: QualifiedName, chunk: number, upTo: number): Sql {
  return {
    text: `DELETE FROM ${KEYS_TABLE} WHERE slot_name = $1 AND relid = to_regclass($2) AND chunk = $3 AND seq <= $4`,
    values: [slot, qname(table), chunk, upTo],
  };
}

/** writeCountSql for the marked ones among `tables` (qualified, quoted) at once: schema, name and count (the pgdts.proof_writes table must exist). */
export function writeCountsSql(slot: string, withChunks: boolean, tables: readonly string[]): Sql {
  const { trigger, rows } = writeMarkNames(slot);
  // `chunks`: '0/0' (none), '3/3' (all three enabled) or else (unknown: the table is read); `counts`: chunk → count.
  const chunks = withChunks
    ? `, ${chunkTriggersState('c', '$3')} AS chunks, ` +
      `(SELECT jsonb_object_agg(cw.chunk::text, cw.writes || ':' || cw.delta) FROM ${CHUNK_WRITES_TABLE} cw WHERE cw.slot_name = $1 AND cw.relid = c.oid) AS counts `
    : ` `;
  return {
    text:
      `SELECT n.nspname AS schema, c.relname AS name, ${countText('c', '$2', withChunks ? '$3' : undefined)} AS writes${chunks}` +
      `FROM pg_trigger g JOIN pg_class c ON c.oid = g.tgrelid JOIN pg_namespace n ON n.oid = c.relnamespace ` +
      `LEFT JOIN ${WRITES_TABLE} w ON w.slot_name = $1 AND w.relid = c.oid ` +
      `WHERE g.tgname = $2 AND g.tgenabled = 'A'` +
      ` AND c.oid IN (SELECT to_regclass(x) FROM unnest($${withChunks ? 4 : 3}::text[]) x)`,
    values: [slot, trigger, ...(withChunks ? [[rows.INSERT, rows.UPDATE, rows.DELETE]] : []), tables],
  };
}

/** Every table carrying this slot's trigger (cleanup). */
export function writeMarkedTablesSql(slot: string): Sql {
  return {
    text: `SELECT DISTINCT g.tgrelid::regclass::text AS t FROM pg_trigger g WHERE g.tgname = ANY ($1::text[]) AND g.tgfoid = to_regprocedure($2)`,
    values: [[writeMarkNames(slot).trigger, ...Object.values(writeMarkNames(slot).rows)], `${writeMarkNames(slot).fn}()`],
  };
}

/** The stored chunks of one table, in order; none when the proof has not planned it yet. */
export function proofChunksSql(slot: string, table: string): Sql {
  return {
    text: `SELECT chunk, lo, hi, rows::text AS rows, source_tuples, target_tuples, target_writes FROM ${PROOF_TABLE} WHERE slot_name = $1 AND table_name = $2 ORDER BY chunk`,
    values: [slot, table],
  };
}

/** Every table's stored chunks of one migration, by table and chunk. */
export function allProofChunksSql(slot: string): Sql {
  return {
    text: `SELECT table_name, chunk, lo, hi, rows::text AS rows, source_tuples, target_tuples, target_writes FROM ${PROOF_TABLE} WHERE slot_name = $1 ORDER BY table_name, chunk`,
    values: [slot],
  };
}

/** A table's chunks, planned once (a retried or continued proof keeps the first plan). */
export function insertProofChunksSql(slot: string, table: string, ranges: readonly KeyRange[]): Sql {
  return {
    text:
      `INSERT INTO ${PROOF_TABLE} (slot_name, table_name, chunk, chunks, lo, hi) ` +
      `SELECT $1, $2, i - 1, $3, CASE WHEN lo = 'null' THEN NULL ELSE ARRAY(SELECT jsonb_array_elements_text(lo)) END, ` +
      `CASE WHEN hi = 'null' THEN NULL ELSE ARRAY(SELECT jsonb_array_elements_text(hi)) END ` +
      `FROM jsonb_array_elements($4::jsonb) WITH ORDINALITY AS r(x, i), LATERAL (SELECT x->'lo' AS lo, x->'hi' AS hi) b ` +
      `ON CONFLICT DO NOTHING`,
    values: [slot, table, ranges.length, JSON.stringify(ranges.map((r) => ({ lo: r.lo ?? null, hi: r.hi ?? null })))],
  };
}

/** One chunk's verdict: verified with both sides' fingerprints, or (NULLs) not verified. */
export function recordProofChunkSql(
  slot: string,
  table: string,
  chunk: number,
  v: { rows: number; source: string; target: string; writes?: string | undefined } | undefined,
): Sql {
  return {
    text:
      `UPDATE ${PROOF_TABLE} SET rows = $4, source_tuples = $5, target_tuples = $6, target_writes = $7, ` +
      `verified_at = CASE WHEN $5::text IS NULL THEN NULL ELSE now() END ` +
      `WHERE slot_name = $1 AND table_name = $2 AND chunk = $3`,
    values: [slot, table, chunk, v?.rows ?? null, v?.source ?? null, v?.target ?? null, v?.writes ?? null],
  };
}

/**
 * A proven chunk still holds (both fingerprints unchanged): only its write count moves on, paired
 * with those very fingerprints (a stale attempt's update of another verdict does nothing).
 */
export function recordChunkWritesSql(slot: string, table: string, chunk: number, writes: string | undefined, proven: { source: string; target: string }): Sql {
  return {
    text: `UPDATE ${PROOF_TABLE} SET target_writes = $4 WHERE slot_name = $1 AND table_name = $2 AND chunk = $3 AND source_tuples = $5 AND target_tuples = $6`,
    values: [slot, table, chunk, writes ?? null, proven.source, proven.target],
  };
}

/** Stored counts that a new trigger (or none) makes meaningless: the count starts again. */
export function forgetChunkWritesSql(slot: string, table?: string): Sql {
  return table === undefined
    ? { text: `UPDATE ${PROOF_TABLE} SET target_writes = NULL WHERE slot_name = $1 AND target_writes IS NOT NULL`, values: [slot] }
    : { text: `UPDATE ${PROOF_TABLE} SET target_writes = NULL WHERE slot_name = $1 AND table_name = $2 AND target_writes IS NOT NULL`, values: [slot, table] };
}

export function deleteProofSql(slot: string): Sql {
  return { text: `DELETE FROM ${PROOF_TABLE} WHERE slot_name = $1`, values: [slot] };
}

/**
 * Chunk boundaries from a page sample: the sampled keys in key order (the caller picks quantiles).
 * Reads `percent` of the table's pages, so it costs a fraction of a scan.
 */
export function sampledKeysInOrderSql(s: TableShape, percent: number): Sql {
  return {
    text: `SELECT ${keyTextList(s)} FROM ${qname(s.table)} t TABLESAMPLE SYSTEM (${samplePercent(percent)}) ORDER BY ${keyOrder(s)}`,
    values: [],
  };
}

/** The planner's row estimate of a table: its density at the last ANALYZE times its size now (none without statistics). */
export const estimatedRowsSql = (table: QualifiedName): Sql => ({
  text: `SELECT (c.reltuples / c.relpages * (pg_relation_size(c.oid) / current_setting('block_size')::int))::text AS n FROM pg_class c WHERE c.oid = $1::regclass AND c.reltuples > 0 AND c.relpages > 0`,
  values: [qname(table)],
});

/**
 * Exact split points of a key range: the key of every `step`-th row in key order (rows step+1,
 * 2*step+1, ...), so each piece holds `step` rows. Reads every key of the range (an index scan).
 */
export function splitPointsSql(s: TableShape, range: KeyRange, step: number): Sql {
  const values: unknown[] = [];
  const where = keyRangePredicate(s, range, values);
  values.push(Math.max(1, Math.floor(step)));
  const ks = s.keyColumns.map((_, i) => `k${i}`).join(', ');
  return {
    text:
      `SELECT ${ks} FROM (SELECT ${keyTextList(s)}, row_number() OVER (ORDER BY ${keyOrder(s)}) AS rn ` +
      `FROM ${qname(s.table)} t WHERE ${where}) s WHERE rn > 1 AND (rn - 1) % $${values.length} = 0 ORDER BY rn`,
    values,
  };
}

/**
 * Every row of a key range as (key text..., md5 of the row text[, xmin]), at most `limit` rows.
 * `withVersion` adds the row version (xmin): two reads showing the same xmin saw the same tuple, so
 * the row did not change in between (the live check relies on it on the source).
 */
export function rowHashesSql(s: TableShape, range: KeyRange, limit: number, withVersion = false): Sql {
  const values: unknown[] = [];
  const where = keyRangePredicate(s, range, values);
  values.push(Math.max(1, Math.floor(limit)));
  return {
    text:
      `SELECT ${keyTextList(s)}, md5(${rowText(s.columns, s.utf8)}) AS h${withVersion ? ', t.xmin::text AS v' : ''} ` +
      `FROM ${qname(s.table)} t WHERE ${where} ORDER BY ${keyOrder(s)} LIMIT $${values.length}`,
    values,
  };
}

/**
 * A random sample of keys. With `percent` the sample is drawn from that share of the table's pages
 * (cheap on big tables), otherwise from the whole table.
 */
export function sampleKeysSql(s: TableShape, size: number, percent?: number): Sql {
  const from = percent === undefined ? `${qname(s.table)} t` : `${qname(s.table)} t TABLESAMPLE SYSTEM (${samplePercent(percent)})`;
  return { text: `SELECT ${keyTextList(s)} FROM ${from} ORDER BY random() LIMIT $1`, values: [Math.max(0, Math.floor(size))] };
}

/**
 * How a sampled value is digested in the database, so that only 32 hex characters per column reach the
 * worker whatever the value's width (a 100 MB bytea is 200 MB of hex text):
 *  - `bytes`: md5 of the value itself, for bytea on both sides (no text form built at all);
 *  - `text`: md5 of the value's text form (the ::text the comparison has always used; the session pins
 *    DateStyle, TimeZone, extra_float_digits, bytea_output etc.), as the server's encoding stores it:
 *    used when both servers have the same encoding, so equal text means equal bytes;
 *  - `utf8`: the same text form converted to UTF-8 first: the servers' encodings differ.
 * md5 (128 bits) cannot make different values look equal short of a deliberate collision, and does not
 * depend on the platform (hashtextextended depends on the byte order). NULL stays NULL, so NULL and ''
 * still differ. Every column is digested, small ones too: the report names columns, never values, so
 * the worker has no use for the values, and a size threshold would have to agree on both sides
 * (pg_column_size does not: compression and storage differ between two copies of the same value).
 */
export type DigestMode = 'bytes' | 'text' | 'utf8';

export function columnDigest(column: string, mode: DigestMode): string {
  switch (mode) {
    case 'bytes':
      return `md5(${col(column)})`;
    case 'text':
      return `md5(${col(column)}::text)`;
    case 'utf8':
      return `md5(convert_to(${col(column)}::text, 'UTF8'))`;
  }
}

/**
 * The digests of the compared columns (one mode per column) of the rows with the given keys (one text
 * array per key column, same length). `ord` is the 1-based position of the requested key, so rows map
 * back to the keys asked for.
 */
export function rowDigestsByKeySql(s: TableShape, keys: ReadonlyArray<readonly string[]>, modes: readonly DigestMode[]): Sql {
  if (modes.length !== s.columns.length) throw new Error(`${modes.length} digest modes for ${s.columns.length} columns`);
  const values: unknown[] = s.keyColumns.map((_, i) => keys.map((k) => k[i]));
  const us = s.keyColumns.map((_, i) => `k${i}`);
  const unnest = `unnest(${s.keyColumns.map((_, i) => `$${i + 1}::text[]`).join(', ')}) WITH ORDINALITY AS u(${us.join(', ')}, ord)`;
  const typed = s.keyColumns.map((_, i) => `u.k${i}::${s.keyTypes[i]!}`);
  const on = s.keyColumns.length === 1 ? `${col(s.keyColumns[0]!)} = ${typed[0]!}` : `(${s.keyColumns.map(col).join(', ')}) = (${typed.join(', ')})`;
  const cols = s.columns.map((c, i) => `${columnDigest(c, modes[i]!)} AS c${i}`);
  return {
    text: `SELECT u.ord::int AS ord${cols.length ? ', ' + cols.join(', ') : ''} FROM ${unnest} JOIN ${qname(s.table)} t ON ${on}`,
    values,
  };
}

/** rowDigestsByKeySql for every row of the table, each with its key as text (key columns first). */
export function allRowDigestsSql(s: TableShape, modes: readonly DigestMode[]): Sql {
  if (modes.length !== s.columns.length) throw new Error(`${modes.length} digest modes for ${s.columns.length} columns`);
  const cols = s.columns.map((c, i) => `${columnDigest(c, modes[i]!)} AS c${i}`);
  return { text: `SELECT ${[keyTextList(s), ...cols].join(', ')} FROM ${qname(s.table)} t`, values: [] };
}

// ---------------------------------------------------------------------------------------------------
// Tables without a key: rows are identified by the md5 of their text, buckets by its first hex digits.
// ---------------------------------------------------------------------------------------------------

const hashedRows = (s: TableShape, withVersion = false): string =>
  `(SELECT md5(${rowText(s.columns, s.utf8)}) AS h${withVersion ? ', t.xmin::text AS v' : ''} FROM ${qname(s.table)} t OFFSET 0) r`;

/** Per-bucket (first `prefix` hex digits of the row md5) count and hash sum, in one scan. */
export function bucketChecksumsSql(s: TableShape, prefix: number): Sql {
  return {
    text:
      `SELECT substr(r.h, 1, ${bucketPrefix(prefix)}) AS b, count(*)::text AS n, sum(('x' || left(r.h, 16))::bit(64)::bigint)::text AS h ` +
      `FROM ${hashedRows(s)} GROUP BY 1`,
    values: [],
  };
}

/** Row md5s and their multiplicities in the given buckets (`withVersion`: and the rows' xmins). */
export function bucketRowsSql(s: TableShape, prefix: number, buckets: readonly string[], withVersion = false): Sql {
  return {
    text:
      `SELECT r.h, count(*)::text AS n${withVersion ? `, string_agg(r.v, ',' ORDER BY r.v) AS v` : ''} ` +
      `FROM ${hashedRows(s, withVersion)} WHERE substr(r.h, 1, ${bucketPrefix(prefix)}) = ANY($1::text[]) GROUP BY r.h`,
    values: [[...buckets]],
  };
}

/** A random sample of row md5s (tables without a key). */
export function sampleRowHashesSql(s: TableShape, size: number, percent?: number): Sql {
  const from = percent === undefined ? `${qname(s.table)} t` : `${qname(s.table)} t TABLESAMPLE SYSTEM (${samplePercent(percent)})`;
  return { text: `SELECT md5(${rowText(s.columns, s.utf8)}) AS h FROM ${from} ORDER BY random() LIMIT $1`, values: [Math.max(0, Math.floor(size))] };
}

/** How many rows have each of the given md5s. */
export function countRowHashesSql(s: TableShape, hashes: readonly string[]): Sql {
  return { text: `SELECT r.h, count(*)::text AS n FROM ${hashedRows(s)} WHERE r.h = ANY($1::text[]) GROUP BY r.h`, values: [[...hashes]] };
}

// ---------------------------------------------------------------------------------------------------
// Sessions
// ---------------------------------------------------------------------------------------------------

/** One consistent, read-only view of a side (search_path = '': every name we print is qualified), in one round trip. */
export const BEGIN_READ = `BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; SET LOCAL search_path = ''`;

/** Both sides answer this identically iff hashtextextended can be compared across them. */
export const HASH_PROBE_SQL =
  `SELECT hashtextextended('pg-dts checksum probe ' || chr(252) || ' 0123456789', 7)::text AS a, hashtextextended('', 42)::text AS b, ` +
  `hashint8extended(1234567890123, 3)::text || ' ' || hashint4extended(-7, 5)::text || ' ' || hashbpcharextended('ab  '::char(4), 2)::text || ' ' || uuid_hash_extended('0e4f7a3c-2b8d-4c6e-9a1f-5d3b7c9e1a2f', 9)::text AS c`;

/**
 * The source's WAL insert position. Read after a snapshot's first query it bounds every commit the
 * snapshot sees. Not pg_current_wal_lsn(), the *write* position: with synchronous_commit = off a
 * transaction is visible before its commit record has been written, so it can lie beyond that.
 */
export const CURRENT_LSN_SQL = 'SELECT pg_current_wal_insert_lsn()::text AS lsn';

export const NUDGE_PREFIX = 'pg-dts-validate';
/**
 * A tiny transaction on the source (a transactional logical message, no table touched): the apply
 * receives it and records a position past it, so an idle source cannot keep a live check waiting.
 */
export const NUDGE_SQL = `SELECT pg_logical_emit_message(true, ${literal(NUDGE_PREFIX)}, '')::text AS lsn`;

function samplePercent(p: number): string {
  const v = Math.min(100, Math.max(0.0001, p));
  return String(Number(v.toPrecision(6)));
}

function bucketPrefix(n: number): number {
  const v = Math.floor(n);
  if (v < 1 || v > 8) throw new Error(`bucket prefix length ${n} out of range 1..8`);
  return v;
}

// ---------------------------------------------------------------------------------------------------
// Repair (repair.ts): rows rewritten on the target from the source, by key or whole chunk.
// ---------------------------------------------------------------------------------------------------

/** `DELETE FROM target t USING unnest(keys) u WHERE t.key = u.key`: the rows with these keys (target shape). */
export function deleteByKeysSql(s: TableShape, keys: ReadonlyArray<ReadonlyArray<string | null>>): Sql {
  if (s.keyColumns.length === 0) throw new Error('deleteByKeysSql: the table has no key');
  const values: unknown[] = s.keyColumns.map((_, i) => keys.map((k) => k[i] ?? null));
  const unnest = `unnest(${s.keyColumns.map((_, i) => `$${i + 1}::text[]`).join(', ')}) AS u(${s.keyColumns.map((_, i) => `k${i}`).join(', ')})`;
  const typed = s.keyColumns.map((_, i) => `u.k${i}::${s.keyTypes[i]!}`);
  const on = s.keyColumns.length === 1 ? `${col(s.keyColumns[0]!)} = ${typed[0]!}` : `(${s.keyColumns.map(col).join(', ')}) = (${typed.join(', ')})`;
  return { text: `DELETE FROM ${qname(s.table)} t USING ${unnest} WHERE ${on}`, values };
}

/**
 * `COPY (SELECT columns FROM source WHERE key IN (...)) TO STDOUT` (source shape). COPY takes no
 * parameters: the keys are literals (escaped by pg's escapeLiteral), cast to the key types.
 */
export function copyOutByKeysSql(s: TableShape, keys: ReadonlyArray<ReadonlyArray<string | null>>): string {
  if (s.keyColumns.length === 0) throw new Error('copyOutByKeysSql: the table has no key');
  if (keys.length === 0) throw new Error('copyOutByKeysSql: no keys');
  const lit = (v: string | null | undefined) => (v === null || v === undefined ? 'NULL' : literal(v));
  const rows = keys.map((k) => `(${s.keyColumns.map((_, i) => lit(k[i])).join(', ')})`).join(', ');
  const typed = s.keyColumns.map((_, i) => `u.k${i}::${s.keyTypes[i]!}`).join(', ');
  const us = s.keyColumns.map((_, i) => `k${i}`).join(', ');
  return (
    `COPY (SELECT ${s.columns.map(col).join(', ')} FROM ${qname(s.table)} t ` +
    `WHERE ${keyTuple(s)} IN (SELECT ${typed} FROM (VALUES ${rows}) AS u(${us}))) TO STDOUT`
  );
}

/** Every row of the table (a chunk replaced whole: tables without a key). */
export function copyOutAllSql(s: TableShape): string {
  return `COPY (SELECT ${s.columns.map(col).join(', ')} FROM ${qname(s.table)} t) TO STDOUT`;
}

/**
 * Into the target, text format. COPY writes identity columns' given values (as INSERT's OVERRIDING
 * SYSTEM VALUE does) and leaves generated columns to be computed: they are not in the list.
 */
export function copyInSql(s: TableShape): string {
  return `COPY ${qname(s.table)} (${s.columns.map(ident).join(', ')}) FROM STDIN`;
}

export function deleteAllSql(s: TableShape): Sql {
  return { text: `DELETE FROM ${qname(s.table)}`, values: [] };
}

/**
 * The relations under each table (itself, and every partition at every level) that do not carry a
 * pg-dts mark (activities/marks.ts): `mark` exact, or any migration's when undefined.
 */
export function unmarkedRelationsSql(tables: readonly QualifiedName[], mark: string | undefined): Sql {
  return {
    text:
      // pg_partition_tree lists nothing for a table that is not partitioned: the table itself comes first.
      `SELECT n.nspname || '.' || c.relname AS rel FROM unnest($1::text[]) WITH ORDINALITY AS u(t, i) ` +
      `CROSS JOIN LATERAL (SELECT u.t::regclass AS relid UNION SELECT p.relid FROM pg_partition_tree(u.t::regclass) p) r ` +
      `JOIN pg_class c ON c.oid = r.relid JOIN pg_namespace n ON n.oid = c.relnamespace ` +
      `WHERE NOT coalesce(${mark === undefined ? `obj_description(c.oid, 'pg_class') LIKE 'pg-dts migration %'` : `obj_description(c.oid, 'pg_class') = $2`}, false) ` +
      `ORDER BY u.i, c.relname`,
    values: mark === undefined ? [tables.map(qname)] : [tables.map(qname), mark],
  };
}

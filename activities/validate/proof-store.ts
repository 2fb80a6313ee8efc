/**
 * The content proof's state on the target (proof.ts proves, proof-cutover.ts checks at cutover):
 * its schema, the chunks stored with their verdicts, the write-mark triggers that count writes per
 * table or chunk, and the keys those triggers record (sql.ts holds the SQL).
 */
import type { Client } from 'pg';
import { relationExists, withClient } from '../db';
import { ident, qname } from '../sql';
import { nameKey } from '../naming';
import type { ConnectionSpec, QualifiedName } from '../spec';
import type { TableSide } from './engine';
import {
  allProofChunksSql,
  writeCountsSql,
  chunkBoundsSql,
  CHUNK_WRITES_TABLE,
  forgetChunkWritesSql,
  parseChunkMark,
  PROOF_SCHEMA_SQL,
  PROOF_TABLE,
  proofChunksSql,
  writeCountSql,
  writeMarkFunctionSql,
  writeMarkNames,
  writeMarkRevokeSql,
  writeMarkStateSql,
  writeMarkTriggerSql,
  writtenKeysSql,
  WRITES_TABLE,
  type KeyRange,
  type Sql,
  type TableWrites,
} from './sql';

export async function ensureProofSchema(c: Client, slot?: string): Promise<void> {
  for (const s of PROOF_SCHEMA_SQL) await c.query(s);
  if (slot) {
    await c.query(writeMarkFunctionSql(slot));
    await c.query(writeMarkRevokeSql(slot));
  }
}

/** Keys read by key at cutover for one chunk, at most; more, and the chunk is read whole (one scan beats that many lookups). */
const WRITTEN_KEYS_LIMIT = 20_000;

/** The most keys a chunk of `rows` rows is checked by (more: read whole). */
export const keysLimit = (rows: number) => Math.min(WRITTEN_KEYS_LIMIT, Math.max(100, Math.floor(rows / 4)));

/**
 * The keys written in one chunk after its count was `after`, on the target side's client (its
 * snapshot); undefined when more than the limit for a chunk of `rows` rows.
 */
export async function writtenKeys(d: TableSide, slot: string, chunk: number, after: number, rows: number): Promise<string[] | undefined> {
  const limit = keysLimit(rows);
  const q = writtenKeysSql(slot, d.shape.table, chunk, after, limit + 1);
  const keys = (await d.client.query<{ k: string }>(q.text, q.values)).rows.map((r) => r.k);
  return keys.length > limit ? undefined : keys;
}

/**
 * Puts the write-mark trigger on one target table (sql.ts): 'armed' (put there now), 'kept' (there
 * already, counting by the same chunks: the counts stored by an earlier run hold); false when it cannot be there: not a
 * plain table (a partitioned table's rows are written in its partitions, an inherited table's in its
 * children), a lock not granted within 500 ms (queued, it would hold up the apply's writes; the next
 * pass tries again), or no right to add a trigger (a table the user created). Without it the cutover
 * reads the table's fingerprints again, as before the marks. `proofTable`: the table's name in
 * pgdts.proof_chunks, whose stored counts a new trigger makes meaningless.
 */
export async function armWriteMarks(c: Client, slot: string, table: QualifiedName, proofTable?: string, key?: ChunkKey): Promise<'kept' | 'armed' | false> {
  const state = await runSql(c, writeMarkStateSql(slot, table));
  const row = state.rows[0] as { kind: string; children: boolean; armed: boolean; bounds: string | null } | undefined;
  if (!row || row.kind !== 'r' || row.children) return false;
  // Several chunks and a key the trigger can place: a count per chunk (sql.ts, chunk marks).
  const chunked = key && proofTable !== undefined ? await chunkBounds(c, slot, proofTable, key) : undefined;
  // Armed by this very plan: kept. Triggers left by an earlier run of the same id (a cleanup that
  // could not drop them) may count by other chunks: put back.
  if (row.armed && (row.bounds ?? undefined) === chunked?.bounds) return 'kept';
  await c.query('BEGIN');
  try {
    await c.query(`SET LOCAL lock_timeout = '500ms'`);
    if (row.armed || row.bounds !== null) {
      const { trigger, rows } = writeMarkNames(slot);
      for (const name of [trigger, rows.INSERT, rows.UPDATE, rows.DELETE]) await c.query(`DROP TRIGGER IF EXISTS ${ident(name)} ON ${qname(table)}`);
    }
    for (const sql of writeMarkTriggerSql(slot, table, chunked)) await c.query(sql);
    // Counts start again with this trigger (after a cleanup, or a table created anew): a chunk
    // stored with an earlier count must not meet it again by chance.
    if (proofTable !== undefined && (await relationExists(c, PROOF_TABLE))) {
      await runSql(c, forgetChunkWritesSql(slot, proofTable));
    }
    await c.query('COMMIT');
    return 'armed';
  } catch (err) {
    await c.query('ROLLBACK').catch(() => undefined);
    const code = (err as { code?: string }).code;
    // 55P03 lock not available, 42501 not the owner, 42710 a concurrent pass added it first.
    if (code === '55P03' || code === '42501' || code === '42710') return code === '42710' ? 'armed' : false;
    throw err;
  }
}

/** A table's one key column and its type on the target, when chunk marks can place its rows. */
export interface ChunkKey {
  column: string;
  type: string;
}

async function chunkBounds(c: Client, slot: string, proofTable: string, key: ChunkKey): Promise<{ column: string; type: string; bounds: string } | undefined> {
  const r = await runSql(c, chunkBoundsSql(slot, proofTable, key.type));
  const bounds = (r.rows[0] as { bounds: string } | undefined)?.bounds;
  return bounds && bounds !== '{}' ? { ...key, bounds } : undefined;
}

/** The write counts of the marked ones among `tables` as the current transaction sees them, by nameKey of the table. */
async function readWriteCounts(c: Client, slot: string, tables: readonly QualifiedName[], withChunks: boolean): Promise<Map<string, TableWrites>> {
  const q = writeCountsSql(slot, withChunks, tables.map(qname));
  const r = await c.query<{ schema: string; name: string; writes: string; chunks?: string | null; counts?: Record<string, string> | null }>(q.text, q.values);
  const out = new Map<string, TableWrites>();
  for (const row of r.rows) {
    // A table whose chunk triggers are not all there: unknown, read at cutover.
    if (row.chunks !== undefined && row.chunks !== '0/0' && row.chunks !== '3/3') continue;
    const w: TableWrites = { table: row.writes };
    if (row.chunks === '3/3') w.chunks = Object.fromEntries(Object.entries(row.counts ?? {}).map(([k, v]) => [Number(k), v]));
    out.set(nameKey({ schema: row.schema, name: row.name }), w);
  }
  return out;
}

/** One chunk's write mark as the current transaction (or statement) sees it; undefined: not marked. */
export async function readWriteCount(c: Client, slot: string, table: QualifiedName, chunk: number): Promise<string | undefined> {
  return (await readChunkWriteCounts(c, slot, table, [chunk])).get(chunk);
}

/** Several chunks' write marks of one table in one statement (undefined: unknown, or the table is gone). */
export async function readChunkWriteCounts(c: Client, slot: string, table: QualifiedName, chunks: readonly number[]): Promise<Map<number, string | undefined>> {
  const r = await runSql(c, writeCountSql(slot, table, chunks));
  return new Map((r.rows as Array<{ chunk: number; writes: string | null }>).map((x) => [x.chunk, x.writes ?? undefined]));
}

export async function runSql(c: Client, sql: Sql) {
  return c.query(sql.text, sql.values);
}

export interface StoredChunk {
  range: KeyRange;
  rows?: number;
  /** Fingerprints of the verified chunk on each side; undefined: not verified. */
  source?: string;
  target?: string;
  /** The table's target write count (sql.ts, write marks) the chunk was last seen proven at; undefined: unknown. */
  writes?: string;
}

/** The table's stored chunks (empty when not planned), read on the target. */
export async function loadProofChunks(target: Client, slot: string, table: string): Promise<StoredChunk[]> {
  if (!(await relationExists(target, PROOF_TABLE))) return [];
  const q = proofChunksSql(slot, table);
  return (await target.query<ChunkRow>(q.text, q.values)).rows.map(storedChunk);
}

interface ChunkRow {
  table_name: string;
  lo: string[] | null;
  hi: string[] | null;
  rows: string | null;
  source_tuples: string | null;
  target_tuples: string | null;
  target_writes: string | null;
}

function storedChunk(row: ChunkRow): StoredChunk {
  const range: KeyRange = {};
  if (row.lo) range.lo = row.lo;
  if (row.hi) range.hi = row.hi;
  const c: StoredChunk = { range };
  if (row.rows !== null) c.rows = Number(row.rows);
  if (row.source_tuples !== null && row.target_tuples !== null) {
    c.source = row.source_tuples;
    c.target = row.target_tuples;
    if (row.target_writes !== null) c.writes = row.target_writes;
  }
  return c;
}

/**
 * Every table's stored chunks, read before VALIDATING opens its comparison transactions: a lock held
 * on pgdts.proof_chunks by a comparison stuck on a table lock would keep cleanup from dropping it.
 */
export async function loadAllProofChunks(target: ConnectionSpec, slot: string, tables: readonly string[]): Promise<Map<string, StoredChunk[]>> {
  return withClient(
    target,
    async (c) => {
      const out = new Map<string, StoredChunk[]>(tables.map((t) => [t, []]));
      if (!(await relationExists(c, PROOF_TABLE))) return out;
      // One query for every table (thousands of tables: not a round trip each), in chunk order.
      const q = allProofChunksSql(slot);
      for (const row of (await c.query<ChunkRow>(q.text, q.values)).rows) out.get(row.table_name)?.push(storedChunk(row));
      return out;
    },
    { applicationName: 'pg-dts validate' },
  );
}

export type MarkParts = NonNullable<ReturnType<typeof parseChunkMark>>;

/**
 * The write counts of the marked tables among `tables`, as one transaction on the target sees them,
 * read a window of tables at a time as the comparison reaches them (not every table's per
 * transaction: at 10,000 tables, 200 transactions each reading 10,000 rows).
 */
export class WriteCountWindows {
  private readonly read = new Set<number>();
  private readonly counts = new Map<string, TableWrites>();
  private stores?: { writes: boolean; chunks: boolean };

  constructor(
    private readonly slot: string,
    private readonly tables: readonly QualifiedName[],
    private readonly window: number,
  ) {}

  /** A new transaction: what was read belongs to the old snapshot. */
  reset(): void {
    this.read.clear();
    this.counts.clear();
  }

  async get(c: Client, index: number): Promise<TableWrites | undefined> {
    if (!this.read.has(index)) {
      this.stores ??= { writes: await relationExists(c, WRITES_TABLE), chunks: await relationExists(c, CHUNK_WRITES_TABLE) };
      const ids = Array.from({ length: Math.min(this.window, this.tables.length - index) }, (_, k) => index + k).filter((i) => !this.read.has(i));
      if (this.stores.writes) {
        const m = await readWriteCounts(c, this.slot, ids.map((i) => this.tables[i]!), this.stores.chunks);
        for (const [k, v] of m) this.counts.set(k, v);
      }
      for (const i of ids) this.read.add(i);
    }
    return this.counts.get(nameKey(this.tables[index]!));
  }
}

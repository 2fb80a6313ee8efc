/**
 * VALIDATING: proves the target holds what the source holds, table by table, at three levels:
 *
 *  1. exact row counts (validateCounts, and part of validateTables);
 *  2. a random sample of rows fetched by key on both sides and compared column by column in
 *     PostgreSQL's text form;
 *  3. a full content checksum computed inside both databases, chunk by key range (tables without a key:
 *     one order-independent aggregate), then every differing chunk bisected down to the keys that
 *     differ and how (missing on target, extra on target, different values).
 *
 * Runs with the source fenced (online) or quiet (offline): each table is read in one repeatable-read
 * snapshot per side, tables in parallel. The SQL is in validate-sql.ts, the decisions in
 * validate-compare.ts, the bisection in validate-engine.ts; validate-live.ts is the advisory variant
 * that tolerates rows changing under it.
 */
import type { Client } from 'pg';
import type { RepairReport } from '../workflows/contract';
import { connect, describeConnection, withClient } from './db';
import { classify } from './errors';
import { qname } from './sql';
import { displayName, type ConnectionSpec, type QualifiedName } from './spec';
import { HASH_PROBE_SQL, BEGIN_READ, type KeyRange, type RowHash } from './validate-sql';
import { loadAllProofChunks, planCutoverCheck } from './validate-proof';
import { keyRecord, reconcileAcrossChunks, ROW_MD5_KEY, type Mismatch, type MismatchKind, type Outcome } from './validate-compare';
import {
  checksumKeyed,
  checksumKeyless,
  columnsThatDiffer,
  sampleKeyed,
  sampleKeyless,
  ShapeError,
  StrictPairing,
  TableSide,
  throwIfAborted,
  type ChecksumOptions,
  type FoundRow,
  type SampleResult,
} from './validate-engine';

export type { Mismatch, MismatchKind, Outcome } from './validate-compare';
export { formatKey, formatMismatch, formatValidationFailure } from './validate-compare';
export type { RowHash } from './validate-sql';

// ---------------------------------------------------------------------------------------------------
// Level 1 alone: row counts (what the workflow calls today)
// ---------------------------------------------------------------------------------------------------

export interface ValidateInput {
  source: ConnectionSpec;
  target: ConnectionSpec;
  tables: Array<{ source: QualifiedName; target: QualifiedName }>;
}

export interface TableValidation {
  source: string;
  target: string;
  sourceRows: number;
  targetRows: number;
  countsMatch: boolean;
}

async function countAll(spec: ConnectionSpec, names: QualifiedName[]): Promise<number[]> {
  return withClient(
    spec,
    async (c) => {
      // One repeatable-read transaction: every count sees the same moment.
      await c.query('BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY');
      const out: number[] = [];
      for (const n of names) {
        const r = await c.query<{ n: string }>(`SELECT count(*)::text AS n FROM ${qname(n)}`);
        out.push(Number(r.rows[0]!.n));
      }
      await c.query('COMMIT');
      return out;
    },
    { applicationName: 'pg-dts validate' },
  );
}

export async function validateCounts(input: ValidateInput): Promise<TableValidation[]> {
  try {
    const [src, dst] = await Promise.all([
      countAll(input.source, input.tables.map((t) => t.source)),
      countAll(input.target, input.tables.map((t) => t.target)),
    ]);
    return input.tables.map((t, i) => ({
      source: displayName(t.source),
      target: displayName(t.target),
      sourceRows: src[i]!,
      targetRows: dst[i]!,
      countsMatch: src[i] === dst[i],
    }));
  } catch (err) {
    throw classify(err, 'validate');
  }
}

// ---------------------------------------------------------------------------------------------------
// All three levels
// ---------------------------------------------------------------------------------------------------

export interface ValidateTableSpec {
  source: QualifiedName;
  target: QualifiedName;
  /** TableDef.keyColumns: primary key, else replica identity index; empty for a table without a key. */
  keyColumns: string[];
  /** TableDef.copyColumns: the compared columns, in source order (generated columns are left out). */
  copyColumns: string[];
}

export interface ValidateTablesInput {
  source: ConnectionSpec;
  target: ConnectionSpec;
  tables: ValidateTableSpec[];
  /** Rows sampled per table and compared column by column (default 1000; 0: not run). */
  sampleSize?: number;
  /** Full content checksum (default true). */
  checksum?: boolean;
  /** Tables checked at once, each on one connection per side (default 4). */
  parallelism?: number;
  /** Differing rows listed per table (default 100). */
  maxMismatches?: number;
  /** Rows per checksum chunk (default 100,000). */
  chunkRows?: number;
  /** Row hash for chunk checksums: 'auto' (default) uses hashtext when both servers agree on a probe, else md5. */
  rowHash?: 'auto' | RowHash;
  /** A differing range at most this big is compared row by row (default 1,000). */
  leafRows?: number;
  /** Pieces a differing range is split into (default 16). */
  fanout?: number;
  /**
   * The content proof run during SYNCING_WAL under this slot (validate-proof.ts): its verified chunks
   * whose tuples are unchanged on both sides are proven; only the others are compared here.
   */
  proofSlot?: string;
}

export interface ValidateProgress {
  table: string;
  step: 'count' | 'sample' | 'checksum' | 'done' | 'repair';
  chunksDone?: number;
  chunks?: number;
  tablesDone: number;
  tables: number;
}

/** Not serialisable, so kept out of the input: the activity wrapper passes heartbeat and cancellation. */
export interface ValidateHooks {
  onProgress?: (p: ValidateProgress) => void;
  signal?: AbortSignal;
}

export interface TableValidationResult {
  source: string;
  target: string;
  sourceRows: number;
  targetRows: number;
  countsMatch: boolean;
  sample: Outcome;
  sampledRows: number;
  checksum: Outcome;
  /** Checksum chunks compared, and the labels of those that differ. */
  chunks: number;
  mismatchedChunks: string[];
  rowHash?: RowHash;
  /** Differing rows by key, at most maxMismatches. */
  mismatches: Mismatch[];
  /** More rows differ than are listed. */
  mismatchesTruncated: boolean;
  /** The table could not be compared (missing on a side, a column missing). */
  error?: string;
  /**
   * The checksum's coverage: chunks proven before the cutover (verified during SYNCING_WAL, unchanged
   * on both sides since) and compared here; rows covered (every row of the source when it ran).
   */
  proof?: { chunks: number; verifiedBeforeCutover: number; reverifiedAtCutover: number; rows: number };
  /** validation.repair / `dts verify --repair`: what was rewritten on the target (the verdicts above are then the ones after it). */
  repair?: RepairReport;
  /** Counts match, and neither the sample nor the checksum found a difference. */
  ok: boolean;
  durationMs: number;
}

export const VALIDATE_DEFAULTS = {
  sampleSize: 1000,
  parallelism: 4,
  maxMismatches: 100,
  chunkRows: 100_000,
  leafRows: 1000,
  fanout: 16,
} as const;

export async function validateTables(input: ValidateTablesInput, hooks: ValidateHooks = {}): Promise<TableValidationResult[]> {
  return compareTables(input, hooks);
}

/**
 * What a repair (validate-repair.ts) needs from the comparison of one table that differs: every
 * differing row the checksum found (up to the repair's cap) and the top-level chunks they lie in.
 */
export interface RepairNeed {
  /** Index of the table in the input. */
  index: number;
  found: FoundRow[];
  chunks: Array<{ label: string; range: KeyRange }>;
  /** The checksum could not name every differing row (more than the cap, or a range too big to list). */
  truncated: boolean;
}

/**
 * validateTables, and with `repair` set: the checksum narrows differing chunks down to up to
 * `repair.cap` rows per table (not just the listed maxMismatches), handed to `repair.needs`.
 */
export async function compareTables(
  input: ValidateTablesInput,
  hooks: ValidateHooks = {},
  repair?: { cap: number; needs: RepairNeed[] },
): Promise<TableValidationResult[]> {
  const sampleSize = Math.max(0, Math.floor(input.sampleSize ?? VALIDATE_DEFAULTS.sampleSize));
  const withChecksum = input.checksum ?? true;
  const listed = checksumOptions(input, hooks.signal);
  const opts = repair ? { ...listed, maxMismatches: Math.max(listed.maxMismatches, repair.cap) } : listed;
  let tablesDone = 0;
  const progress = (table: string, step: ValidateProgress['step'], extra: Partial<ValidateProgress> = {}) =>
    hooks.onProgress?.({ table, step, tablesDone, tables: input.tables.length, ...extra });

  try {
    const stored = withChecksum && input.proofSlot ? await loadAllProofChunks(input.target, input.proofSlot, input.tables.map((t) => displayName(t.source))) : undefined;
    return await runPool(input, 'pg-dts validate', async (src, dst, hash) => {
      return async (t, index) => {
        const started = Date.now();
        const name = displayName(t.source);
        const result = emptyResult(t, hash);
        await Promise.all([begin(src), begin(dst)]);
        try {
          const [s, d] = await openSides(src, dst, t, hash, false);
          progress(name, 'count');
          // The proof's chunk fingerprints count every row too: no separate count(*) then.
          const planned = await planCutoverCheck(s, d, stored?.get(name), hooks.signal);
          [result.sourceRows, result.targetRows] = planned ? [planned.sourceRows, planned.targetRows] : await Promise.all([s.count(), d.count()]);
          result.countsMatch = result.sourceRows === result.targetRows;

          let sample: SampleResult | undefined;
          if (sampleSize > 0) {
            throwIfAborted(hooks.signal);
            progress(name, 'sample');
            sample = t.keyColumns.length
              ? await sampleKeyed(s, d, result.sourceRows, sampleSize)
              : await sampleKeyless(s, d, result.sourceRows, sampleSize);
            result.sampledRows = sample.sampled;
            result.sample = sample.found.length ? 'mismatch' : 'match';
          }

          let found: FoundRow[] = [];
          let truncated = false;
          if (withChecksum) {
            throwIfAborted(hooks.signal);
            const pairing = new StrictPairing(s, d);
            const chunkOpts = { ...opts, onChunk: (chunksDone: number, chunks: number) => progress(name, 'checksum', { chunksDone, chunks }) };
            const c = planned
              ? t.keyColumns.length
                ? await checksumKeyed(s, d, pairing, result.sourceRows, chunkOpts, { ranges: planned.ranges, only: planned.recheck })
                : planned.recheck.length
                  ? await checksumKeyless(pairing, chunkOpts)
                  : { chunks: 1, mismatchedChunks: [], found: [], truncated: false }
              : t.keyColumns.length
                ? await checksumKeyed(s, d, pairing, result.sourceRows, chunkOpts)
                : await checksumKeyless(pairing, chunkOpts);
            const rechecked = planned ? planned.recheck.length : c.chunks;
            result.proof = { chunks: c.chunks, verifiedBeforeCutover: c.chunks - rechecked, reverifiedAtCutover: rechecked, rows: result.sourceRows };
            result.chunks = c.chunks;
            result.mismatchedChunks = c.mismatchedChunks;
            result.checksum = c.mismatchedChunks.length || c.found.length ? 'mismatch' : 'match';
            found = c.found;
            truncated = c.truncated;
            if (repair && (c.mismatchedChunks.length || found.length)) {
              const ranges = 'mismatchedRanges' in c ? (c.mismatchedRanges ?? []) : [];
              repair.needs.push({ index, found, truncated, chunks: c.mismatchedChunks.map((label, i) => ({ label, range: ranges[i] ?? {} })) });
            }
          }
          const report = await assembleMismatches(s, d, t, found, sample?.found ?? [], listed.maxMismatches);
          result.mismatches = report.mismatches;
          result.mismatchesTruncated = truncated || report.truncated;
          await Promise.all([src.query('COMMIT'), dst.query('COMMIT')]);
        } catch (err) {
          await Promise.all([src.query('ROLLBACK').catch(() => undefined), dst.query('ROLLBACK').catch(() => undefined)]);
          if (!(err instanceof ShapeError)) throw err;
          result.error = err.message;
        }
        result.ok = !result.error && result.countsMatch && result.sample !== 'mismatch' && result.checksum !== 'mismatch';
        result.durationMs = Date.now() - started;
        tablesDone++;
        progress(name, 'done');
        return result;
      };
    }, hooks.signal);
  } catch (err) {
    throw classify(err, 'validate');
  }
}

// ---------------------------------------------------------------------------------------------------
// Shared with validate-live.ts
// ---------------------------------------------------------------------------------------------------

export function checksumOptions(input: Pick<ValidateTablesInput, 'chunkRows' | 'leafRows' | 'fanout' | 'maxMismatches'>, signal?: AbortSignal): ChecksumOptions {
  const o: ChecksumOptions = {
    chunkRows: Math.max(1, Math.floor(input.chunkRows ?? VALIDATE_DEFAULTS.chunkRows)),
    leafRows: Math.max(1, Math.floor(input.leafRows ?? VALIDATE_DEFAULTS.leafRows)),
    fanout: Math.max(2, Math.floor(input.fanout ?? VALIDATE_DEFAULTS.fanout)),
    maxMismatches: Math.max(1, Math.floor(input.maxMismatches ?? VALIDATE_DEFAULTS.maxMismatches)),
  };
  if (signal) o.signal = signal;
  return o;
}

function emptyResult(t: ValidateTableSpec, hash: RowHash): TableValidationResult {
  return {
    source: displayName(t.source),
    target: displayName(t.target),
    sourceRows: 0,
    targetRows: 0,
    countsMatch: false,
    sample: 'not-run',
    sampledRows: 0,
    checksum: 'not-run',
    chunks: 0,
    mismatchedChunks: [],
    rowHash: hash,
    mismatches: [],
    mismatchesTruncated: false,
    ok: false,
    durationMs: 0,
  };
}

async function begin(c: Client): Promise<void> {
  for (const s of BEGIN_READ) await c.query(s);
}

/** Both sides of a table; a ShapeError from either (table or column missing) wins over other errors. */
export async function openSides(src: Client, dst: Client, t: ValidateTableSpec, hash: RowHash, live: boolean): Promise<[TableSide, TableSide]> {
  const spec = (table: QualifiedName) => ({ table, columns: t.copyColumns, keyColumns: t.keyColumns });
  const [a, b] = await Promise.allSettled([
    TableSide.open(src, 'source', spec(t.source), hash, live),
    TableSide.open(dst, 'target', spec(t.target), hash, live),
  ]);
  if (a.status === 'rejected' && b.status === 'rejected' && b.reason instanceof ShapeError && !(a.reason instanceof ShapeError)) throw b.reason;
  if (a.status === 'rejected') throw a.reason;
  if (b.status === 'rejected') throw b.reason;
  if (a.value.encoding !== b.value.encoding) a.value.shape.utf8 = b.value.shape.utf8 = true;
  return [a.value, b.value];
}

/**
 * Opens `parallelism` pairs of connections and runs each table on one of them; results come back in
 * the order of input.tables. `setup` runs once per pair and returns the per-table function.
 */
export async function runPool<R>(
  input: Pick<ValidateTablesInput, 'source' | 'target' | 'tables' | 'parallelism' | 'rowHash'>,
  applicationName: string,
  setup: (src: Client, dst: Client, hash: RowHash) => Promise<(t: ValidateTableSpec, index: number) => Promise<R>>,
  signal?: AbortSignal,
): Promise<R[]> {
  const results: R[] = new Array<R>(input.tables.length);
  if (input.tables.length === 0) return results;
  const queue = input.tables.map((t, i) => ({ t, i }));
  const workers = Math.max(1, Math.min(input.parallelism ?? VALIDATE_DEFAULTS.parallelism, input.tables.length));
  let hash: RowHash | undefined = input.rowHash === 'auto' || input.rowHash === undefined ? undefined : input.rowHash;
  let failed = false;
  const worker = async () => {
    const src = await open(input.source, 'source', applicationName);
    try {
      const dst = await open(input.target, 'target', applicationName);
      try {
        // Cancelled: cut both connections, which ends a query stuck on a lock and releases this
        // comparison's snapshot and locks on the source (the fence cannot be dropped under them).
        const cut = () => {
          for (const c of [src, dst]) (c as unknown as { connection?: { stream?: { destroy(): void } } }).connection?.stream?.destroy();
        };
        signal?.addEventListener('abort', cut, { once: true });
        hash ??= await probeRowHash(src, dst);
        const check = await setup(src, dst, hash);
        for (let job = queue.shift(); job && !failed; job = queue.shift()) results[job.i] = await check(job.t, job.i);
      } finally {
        await dst.end().catch(() => undefined);
      }
    } finally {
      await src.end().catch(() => undefined);
    }
  };
  // The first failure stops the other workers after their current table; all have closed their
  // connections before it is rethrown.
  const settled = await Promise.allSettled(
    Array.from({ length: workers }, () =>
      worker().catch((err: unknown) => {
        failed = true;
        throw err;
      }),
    ),
  );
  const failure = settled.find((s): s is PromiseRejectedResult => s.status === 'rejected');
  if (failure) throw failure.reason;
  return results;
}

async function open(spec: ConnectionSpec, side: 'source' | 'target', applicationName: string): Promise<Client> {
  try {
    return await connect(spec, { applicationName });
  } catch (err) {
    const e = err as { code?: string; message?: string };
    const wrapped = new Error(`cannot connect to the ${side} (${describeConnection(spec)}): ${e.message ?? String(err)}`) as Error & { code?: string };
    if (e.code) wrapped.code = e.code;
    throw wrapped;
  }
}

/** hashtext when both servers compute the same values for it (same byte order), else md5. */
export async function probeRowHash(src: Client, dst: Client): Promise<RowHash> {
  try {
    const [a, b] = await Promise.all([src.query<{ a: string; b: string }>(HASH_PROBE_SQL), dst.query<{ a: string; b: string }>(HASH_PROBE_SQL)]);
    const x = a.rows[0]!;
    const y = b.rows[0]!;
    return x.a === y.a && x.b === y.b ? 'hashtext' : 'md5';
  } catch {
    return 'md5';
  }
}

/**
 * The mismatch list: checksum findings (with their chunk), then sample findings not already in it;
 * keys as records; for `different` rows, the names of the columns that differ.
 */
export async function assembleMismatches(
  s: TableSide,
  d: TableSide,
  t: ValidateTableSpec,
  found: FoundRow[],
  sampled: SampleResult['found'],
  max: number,
): Promise<{ mismatches: Mismatch[]; truncated: boolean }> {
  const keyed = t.keyColumns.length > 0;
  const record = (id: string): Record<string, string | null> => (keyed ? keyRecord(t.keyColumns, id) : { [ROW_MD5_KEY]: id });
  type Item = { id: string; kind: MismatchKind; chunk?: string; columns?: string[]; foundBy: Mismatch['foundBy'] };
  const items: Item[] = reconcileAcrossChunks(found).map((f) => ({ id: f.id, kind: f.kind, chunk: f.chunk, foundBy: 'checksum' as const }));
  const byId = new Map(items.map((m) => [m.id, m]));
  for (const f of sampled) {
    const have = byId.get(f.id);
    if (have) {
      if (f.columns && have.kind === 'different') have.columns = f.columns;
      continue;
    }
    const item: Item = { id: f.id, kind: f.kind, foundBy: 'sample' };
    if (f.columns) item.columns = f.columns;
    items.push(item);
    byId.set(f.id, item);
  }
  const listed = items.slice(0, max);
  if (keyed) {
    const need = listed.filter((m) => m.kind === 'different' && !m.columns).map((m) => m.id);
    if (need.length) {
      const cols = await columnsThatDiffer(s, d, need);
      for (const m of listed) {
        const c = cols.get(m.id);
        if (c && c.length && !m.columns) m.columns = c;
      }
    }
  }
  const mismatches = listed.map((m) => {
    const out: Mismatch = { key: record(m.id), kind: m.kind, foundBy: m.foundBy };
    if (m.chunk) out.chunk = m.chunk;
    if (m.columns) out.columns = m.columns;
    return out;
  });
  return { mismatches, truncated: items.length > max };
}

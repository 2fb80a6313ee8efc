/**
 * VALIDATING, the strict check: proves the target holds what the source holds, table by table, at
 * three levels:
 *
 *  1. exact row counts;
 *  2. a random sample of rows fetched by key on both sides and compared column by column in
 *     PostgreSQL's text form;
 *  3. a full content checksum computed inside both databases, chunk by key range (tables without a key:
 *     one order-independent aggregate), then every differing chunk bisected down to the keys that
 *     differ and how (missing on target, extra on target, different values).
 *
 * Runs with the source fenced (online) or quiet (offline): each table is read in one repeatable-read
 * snapshot per side, tables in parallel. The SQL is in sql.ts, the decisions in compare.ts, the
 * bisection in engine.ts; live.ts is the advisory variant that tolerates rows changing under it.
 */
import type { Client } from 'pg';
import { during } from '../errors';
import { displayName } from '../spec';
import { VALIDATE_DEFAULTS, type TableValidationResult, type ValidateHooks, type ValidateProgress, type ValidateTableSpec, type ValidateTablesInput } from './contract';
import {
  checksumKeyed,
  checksumKeyless,
  sampleKeyed,
  sampleKeyless,
  ShapeError,
  StrictPairing,
  throwIfAborted,
  type ChecksumOptions,
  type ChecksumResult,
  type FoundRow,
  type SampleResult,
  type TableSide,
} from './engine';
import { planCutoverCheck, type CutoverPlan } from './proof-cutover';
import { loadAllProofChunks, WriteCountWindows, type StoredChunk } from './proof-store';
import { assembleMismatches, checksumOptions, Descriptions, openSides, runPool, workersOf } from './shared';
import { BEGIN_READ, type KeyRange, type RowHash, type TableWrites } from './sql';

export async function validateTables(input: ValidateTablesInput, hooks: ValidateHooks = {}): Promise<TableValidationResult[]> {
  return compareTables(input, hooks);
}

/**
 * What a repair (repair.ts) needs from the comparison of one table that differs: every
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
  const listed = checksumOptions(input, hooks.signal);
  const run: CompareRun = {
    input,
    hooks,
    repair,
    sampleSize: Math.max(0, Math.floor(input.sampleSize ?? VALIDATE_DEFAULTS.sampleSize)),
    withChecksum: input.checksum ?? true,
    listed,
    opts: repair ? { ...listed, maxMismatches: Math.max(listed.maxMismatches, repair.cap) } : listed,
    tablesDone: 0,
    progress: (table, step, extra = {}) => hooks.onProgress?.({ table, step, tablesDone: run.tablesDone, tables: input.tables.length, ...extra }),
  };
  try {
    // The stored proof is read while the pool connects; each pair waits for it before its first
    // transaction, so every mark is still read after the proof it is compared with was loaded.
    const loading = run.withChecksum && input.proofSlot ? loadAllProofChunks(input.target, input.proofSlot, input.tables.map((t) => displayName(t.source))) : Promise.resolve(undefined);
    loading.catch(() => undefined); // a pool that opens no pair never awaits it
    const described = { source: new Descriptions(input.tables.map((t) => t.source)), target: new Descriptions(input.tables.map((t) => t.target)) };
    return await runPool(input, 'pg-dts validate', async (src, dst, hash) => {
      const stored = await loading;
      // Tables in a row share one read-only transaction per side (up to TABLES_PER_SNAPSHOT): with the
      // source fenced and the apply past the fence, neither side changes under it, and thousands of
      // small tables do not pay BEGIN, SET and COMMIT on both sides each.
      let shared = 0;
      // The write counts of the marked tables in the shared transaction's snapshot, a window of the
      // tables ahead at a time (this worker takes about every parallelism-th of them).
      const counts = stored && input.proofSlot ? new WriteCountWindows(input.proofSlot, input.tables.map((x) => x.target), TABLES_PER_SNAPSHOT * workersOf(input)) : undefined;
      return async (t, index) => {
        const started = Date.now();
        const result = emptyResult(t, hash);
        if (shared === 0) {
          await Promise.all([begin(src), begin(dst)]);
          counts?.reset();
        }
        try {
          const columns = { source: await described.source.get(src, index), target: await described.target.get(dst, index) };
          const writes = await counts?.get(dst, index);
          await compareTable(run, src, dst, t, index, hash, stored?.get(displayName(t.source)), writes, result, columns);
          // A big table ends its transaction (its snapshot and locks) at once; small ones share it.
          if (++shared >= TABLES_PER_SNAPSHOT || result.sourceRows > SHARED_SNAPSHOT_ROWS) {
            shared = 0;
            await Promise.all([src.query('COMMIT'), dst.query('COMMIT')]);
          }
        } catch (err) {
          shared = 0;
          await Promise.all([src.query('ROLLBACK').catch(() => undefined), dst.query('ROLLBACK').catch(() => undefined)]);
          if (!(err instanceof ShapeError)) throw err;
          result.error = err.message;
        }
        result.ok = !result.error && result.countsMatch && result.sample !== 'mismatch' && result.checksum !== 'mismatch';
        result.durationMs = Date.now() - started;
        run.tablesDone++;
        run.progress(displayName(t.source), 'done');
        return result;
      };
    }, hooks.signal);
  } catch (err) {
    throw during(err, 'validate');
  }
}

/** One comparison: its input and options, shared by every table. */
interface CompareRun {
  input: ValidateTablesInput;
  hooks: ValidateHooks;
  repair: { cap: number; needs: RepairNeed[] } | undefined;
  sampleSize: number;
  withChecksum: boolean;
  /** The listed mismatches' options; `opts` narrows further when repairing. */
  listed: ChecksumOptions;
  opts: ChecksumOptions;
  tablesDone: number;
  progress(table: string, step: ValidateProgress['step'], extra?: Partial<ValidateProgress>): void;
}

/** One table, inside both sides' transactions: counts, sample, checksum (with the proof: what changed), into `result`. */
async function compareTable(
  run: CompareRun,
  src: Client,
  dst: Client,
  t: ValidateTableSpec,
  index: number,
  hash: RowHash,
  chunks: StoredChunk[] | undefined,
  writes: TableWrites | undefined,
  result: TableValidationResult,
  described?: Parameters<typeof openSides>[5],
): Promise<void> {
  const { hooks, repair, listed } = run;
  const name = displayName(t.source);
  const [s, d] = await openSides(src, dst, t, hash, false, described);
  run.progress(name, 'count');
  // The proof's chunk fingerprints count every row too: no separate count(*) then.
  const planned = await planCutoverCheck(s, d, chunks, writes, hooks.signal, run.input.proofSlot);
  [result.sourceRows, result.targetRows] = planned ? [planned.sourceRows, planned.targetRows] : await Promise.all([s.count(), d.count()]);
  result.countsMatch = result.sourceRows === result.targetRows;

  let sample: SampleResult | undefined;
  // A keyless table's sample counts the sampled rows' hashes over the whole table on both sides: in the
  // write stop, a scan that grows with the table (one that nobody wrote since its proof is not read
  // at all otherwise), for rows the stored proof and the checksum below already vouch for, every one.
  // Not run then (sample 'not-run'); a keyed table's sample reads its sampled keys alone.
  if (run.sampleSize > 0 && (t.keyColumns.length > 0 || !planned)) {
    throwIfAborted(hooks.signal);
    run.progress(name, 'sample');
    sample = t.keyColumns.length ? await sampleKeyed(s, d, result.sourceRows, run.sampleSize, result.targetRows) : await sampleKeyless(s, d, result.sourceRows, run.sampleSize);
    result.sampledRows = sample.sampled;
    result.sample = sample.found.length ? 'mismatch' : 'match';
  }

  let found: FoundRow[] = [];
  let truncated = false;
  if (run.withChecksum) {
    throwIfAborted(hooks.signal);
    const chunkOpts = { ...run.opts, onChunk: (chunksDone: number, n: number) => run.progress(name, 'checksum', { chunksDone, chunks: n }) };
    const c = await checksumAtCutover(s, d, t.keyColumns.length > 0, result.sourceRows, chunkOpts, planned);
    const rechecked = planned ? planned.recheck.length + planned.comparedNow : c.chunks;
    result.proof = { chunks: c.chunks, verifiedBeforeCutover: c.chunks - rechecked, reverifiedAtCutover: rechecked, rows: result.sourceRows };
    if (planned) {
      result.proof.readAtCutover = planned.read;
      if (planned.keysRead) result.proof.keysReadAtCutover = planned.keysRead;
    }
    result.chunks = c.chunks;
    result.mismatchedChunks = c.mismatchedChunks;
    result.checksum = c.mismatchedChunks.length || c.found.length ? 'mismatch' : 'match';
    found = c.found;
    truncated = c.truncated;
    if (repair && (c.mismatchedChunks.length || found.length)) {
      const ranges = c.mismatchedRanges ?? [];
      repair.needs.push({ index, found, truncated, chunks: c.mismatchedChunks.map((label, i) => ({ label, range: ranges[i] ?? {} })) });
    }
  }
  const report = await assembleMismatches(s, d, t, found, sample?.found ?? [], listed.maxMismatches);
  result.mismatches = report.mismatches;
  result.mismatchesTruncated = truncated || report.truncated;
}

/** The checksum: every chunk, or with a stored proof only the chunks it does not vouch for. */
async function checksumAtCutover(
  s: TableSide,
  d: TableSide,
  keyed: boolean,
  sourceRows: number,
  opts: ChecksumOptions,
  planned: CutoverPlan | undefined,
): Promise<Pick<ChecksumResult, 'chunks' | 'mismatchedChunks' | 'mismatchedRanges' | 'found' | 'truncated'>> {
  const pairing = new StrictPairing(s, d);
  if (!planned) return keyed ? checksumKeyed(s, d, pairing, sourceRows, opts) : checksumKeyless(pairing, opts);
  if (keyed) return checksumKeyed(s, d, pairing, sourceRows, opts, { ranges: planned.ranges, only: planned.recheck });
  return planned.recheck.length ? checksumKeyless(pairing, opts) : { chunks: 1, mismatchedChunks: [], found: [], truncated: false };
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

/**
 * Tables per shared read-only transaction: each holds its tables' (and indexes') share locks until it
 * ends, which the server's lock table (max_locks_per_transaction × connections) must hold.
 */
const TABLES_PER_SNAPSHOT = 50;
/** Tables of more rows than this end their transaction once compared. */
const SHARED_SNAPSHOT_ROWS = 100_000;

async function begin(c: Client): Promise<void> {
  await c.query(BEGIN_READ);
}

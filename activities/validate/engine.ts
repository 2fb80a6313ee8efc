/**
 * VALIDATING, the machinery shared by the strict check (strict.ts, source fenced or quiet) and the
 * live, advisory one (live.ts, during SYNCING_WAL):
 *
 *  - TableSide: one table on one server, its column types there, and every read the checks need;
 *  - Pairing: how a read is done on both sides and what "differs" means. Strict: both sides at once,
 *    any difference counts. Live: source, then target once its apply has passed the source's LSN, then
 *    the source again; only a difference the source held still for counts, the rest is re-read later;
 *  - checksumKeyed / checksumKeyless: chunk checksums, then bisection of every differing chunk down to
 *    the rows (keys) that differ;
 *  - sampleKeyed / sampleKeyless: random rows read by key and compared column by column (by digests
 *    computed in the database, a bounded number of rows per read).
 */
import type { Client, QueryResult } from 'pg';
import { compareLsn } from '../apply/lsn';
import { readApplyProgress } from '../apply/progress';
import {
  addRowHash,
  chunkLabel,
  classifyCount,
  classifyDifference,
  contentOf,
  differingColumns,
  differingKeys,
  keyId,
  liveVerdict,
  pickBoundaries,
  rangeLabel,
  rangesBetween,
  summaryRows,
  withVersion,
} from './compare';
import type { MismatchKind } from './contract';
import {
  BEGIN_READ,
  bucketChecksumsSql,
  bucketRowsSql,
  chunkChecksumSql,
  chunkFingerprintSql,
  chunkProofSql,
  countRowHashesSql,
  countSql,
  CURRENT_LSN_SQL,
  describeTableSql,
  NOT_FINGERPRINTED,
  NUDGE_SQL,
  rowDigestsByKeySql,
  allRowDigestsSql,
  rowHashesSql,
  sampledKeysInOrderSql,
  sampleKeysSql,
  sampleRowHashesSql,
  splitPointsSql,
  type DigestMode,
  type KeyRange,
  type ProofRead,
  type RowHash,
  type Sql,
  type TableShape,
} from './sql';
import { displayName, type QualifiedName } from '../spec';
import { sleep } from '../sleep';

export type Side = 'source' | 'target';

/** A table's shape is not what the check needs (missing table or column): reported, not retried. */
export class ShapeError extends Error {
  override name = 'ShapeError';
}

/** A row of describeTableSql: one column of the table (none: `name` null), whether it exists, the server's settings. */
export type DescribedColumn = {
  exists: boolean;
  name: string | null;
  type: string | null;
  encoding: string;
  tid_hash: boolean;
};

export class TableSide {
  private constructor(
    readonly client: Client,
    readonly side: Side,
    readonly shape: TableShape,
    readonly hash: RowHash,
    /** Live: every read is its own short snapshot (and, on the source, reports its LSN). */
    readonly live: boolean,
    /** format_type() of every column on this side. */
    readonly columnTypes: ReadonlyMap<string, string>,
    /** The server's encoding (server_encoding). */
    readonly encoding: string,
  ) {}

  /**
   * Reads the table's column types on this side. Expects search_path = '' (strict: inside the table's
   * transaction; live: opens its own).
   */
  static async open(
    client: Client,
    side: Side,
    t: { table: QualifiedName; columns: readonly string[]; keyColumns: readonly string[] },
    hash: RowHash,
    live: boolean,
    /** The table's describeTableSql rows, read already (describeTablesSql, many tables at once). */
    described?: readonly DescribedColumn[],
  ): Promise<TableSide> {
    const describe = async () => (await query<DescribedColumn>(client, describeTableSql(t.table))).rows;
    const rows = described ?? (live ? (await inSnapshot(client, describe)).value : await describe());
    if (!rows[0]?.exists) throw new ShapeError(`table ${displayName(t.table)} does not exist on the ${side}`);
    const types = new Map(rows.filter((r) => r.name !== null).map((r) => [r.name!, r.type!]));
    const missing = [...new Set([...t.columns, ...t.keyColumns])].filter((c) => !types.has(c));
    if (missing.length) {
      throw new ShapeError(`column(s) ${missing.map((c) => JSON.stringify(c)).join(', ')} missing from ${displayName(t.table)} on the ${side}`);
    }
    const shape: TableShape = { table: t.table, columns: t.columns, keyColumns: t.keyColumns, keyTypes: t.keyColumns.map((k) => types.get(k)!) };
    if (rows[0].tid_hash) shape.tidHash = true;
    return new TableSide(client, side, shape, hash, live, types, rows[0].encoding);
  }

  /** Runs `fn` as one consistent read; on a live source also returns the WAL position after it. */
  async snapshot<T>(fn: () => Promise<T>): Promise<{ value: T; lsn?: string }> {
    if (!this.live) return { value: await fn() };
    if (this.side !== 'source') return { value: (await inSnapshot(this.client, fn)).value };
    // The source's position, read in the snapshot after `fn`'s reads, with its COMMIT.
    const { value, rows } = await inSnapshot(this.client, fn, CURRENT_LSN_SQL);
    return { value, lsn: String(rows[0]!.lsn) };
  }

  async count(): Promise<number> {
    return Number((await query<{ n: string }>(this.client, countSql(this.shape.table))).rows[0]!.n);
  }

  /** `count:sum` of each range, keyed by its index (only those in `only`, when given). */
  async summaries(ranges: readonly KeyRange[], only?: ReadonlySet<string>): Promise<Map<string, string>> {
    const out = new Map<string, string>();
    for (let i = 0; i < ranges.length; i++) {
      if (only && !only.has(String(i))) continue;
      const r = (await query<{ n: string; h: string }>(this.client, chunkChecksumSql(this.shape, ranges[i]!, this.hash))).rows[0]!;
      out.set(String(i), `${r.n}:${r.h}`);
    }
    return out;
  }

  /** Count and tuple fingerprint of one range (see chunkFingerprintSql). */
  async fingerprint(range: KeyRange): Promise<{ rows: number; tuples: string }> {
    const r = (await query<{ n: string; f: string }>(this.client, chunkFingerprintSql(this.shape, range))).rows[0]!;
    return { rows: Number(r.n), tuples: `${r.n}:${r.f}` };
  }

  /** Count, content checksum (`count:sum`, as summaries()) and tuple fingerprint (else NOT_FINGERPRINTED) of one range, one scan. */
  async proofSummary(range: KeyRange, read: ProofRead = {}): Promise<{ rows: number; content: string; tuples: string }> {
    const r = (await query<{ n: string; h: string; f?: string }>(this.client, chunkProofSql(this.shape, range, this.hash, read))).rows[0]!;
    return { rows: Number(r.n), content: `${r.n}:${r.h}`, tuples: read.fingerprint ? `${r.n}:${r.f}` : NOT_FINGERPRINTED };
  }

  /** A live source read carries row versions (xmin), so the live check can tell a row held still. */
  private get versioned(): boolean {
    return this.live && this.side === 'source';
  }

  /** Key id -> md5 of the row text (live source: with its xmin), for every row of the range (at most `limit`). */
  async rowHashes(range: KeyRange, limit: number): Promise<{ rows: Map<string, string>; count: number }> {
    const r = await queryArrays(this.client, rowHashesSql(this.shape, range, limit, this.versioned));
    const rows = new Map<string, string>();
    const n = this.shape.keyColumns.length;
    for (const row of r) addRowHash(rows, keyId(row.slice(0, n) as string[]), withVersion(row[n] as string, row[n + 1]));
    return { rows, count: r.length };
  }

  async splitPoints(range: KeyRange, step: number): Promise<string[][]> {
    return (await queryArrays(this.client, splitPointsSql(this.shape, range, step))) as string[][];
  }

  async sampledKeysInOrder(percent: number): Promise<string[][]> {
    return (await queryArrays(this.client, sampledKeysInOrderSql(this.shape, percent))) as string[][];
  }

  async sampleKeys(size: number, percent?: number): Promise<string[][]> {
    return (await queryArrays(this.client, sampleKeysSql(this.shape, size, percent))) as string[][];
  }

  /**
   * Key id -> the digest of each compared column (see DigestMode), for the rows with these keys. One
   * read: callers pass at most digestBatchSize() keys.
   */
  async digestsByKey(keys: ReadonlyArray<readonly string[]>, modes: readonly DigestMode[]): Promise<Map<string, Array<string | null>>> {
    const out = new Map<string, Array<string | null>>();
    if (keys.length === 0) return out;
    const r = await queryArrays(this.client, rowDigestsByKeySql(this.shape, keys, modes));
    for (const row of r) {
      const key = keys[Number(row[0]) - 1];
      if (key) out.set(keyId(key), row.slice(1));
    }
    return out;
  }

  /** digestsByKey for every row of the table (a small one): key id -> digests. */
  async allDigests(modes: readonly DigestMode[]): Promise<Map<string, Array<string | null>>> {
    const k = this.shape.keyColumns.length;
    const r = await queryArrays(this.client, allRowDigestsSql(this.shape, modes));
    // A NULL in a key (dts verify's own keyColumns) matches no row by key: left out, as a sampled one is.
    const keyed = r.filter((row) => row.slice(0, k).every((v) => v !== null));
    return new Map(keyed.map((row) => [keyId(row.slice(0, k) as Array<string | null>), row.slice(k) as Array<string | null>]));
  }

  async bucketSummaries(prefix: number): Promise<Map<string, string>> {
    const r = await queryArrays(this.client, bucketChecksumsSql(this.shape, prefix));
    return new Map(r.map((row) => [row[0] as string, `${row[1] as string}:${row[2] as string}`]));
  }

  /** Row md5 -> how many rows have it (live source: with their xmins). */
  async bucketRows(prefix: number, buckets: readonly string[]): Promise<Map<string, string>> {
    const r = await queryArrays(this.client, bucketRowsSql(this.shape, prefix, buckets, this.versioned));
    return new Map(r.map((row) => [row[0] as string, withVersion(row[1] as string, row[2])]));
  }

  async sampleRowHashes(size: number, percent?: number): Promise<string[]> {
    return (await queryArrays(this.client, sampleRowHashesSql(this.shape, size, percent))).map((r) => r[0] as string);
  }

  async countRowHashes(hashes: readonly string[]): Promise<Map<string, number>> {
    if (hashes.length === 0) return new Map();
    const r = await queryArrays(this.client, countRowHashesSql(this.shape, hashes));
    return new Map(r.map((row) => [row[0] as string, Number(row[1])]));
  }
}

async function query<R extends Record<string, unknown>>(client: Client, sql: Sql) {
  return client.query<R>(sql.text, sql.values);
}

async function queryArrays(client: Client, sql: Sql): Promise<Array<Array<string | null>>> {
  const r = await client.query<Array<string | null>>({ text: sql.text, values: sql.values, rowMode: 'array' });
  return r.rows;
}

// BEGIN_READ ... COMMIT around `fn`; `last` (no parameters) runs after it, sent with the COMMIT, its rows returned.
export async function inSnapshot<T>(client: Client, fn: () => Promise<T>, last?: string): Promise<{ value: T; rows: Record<string, unknown>[] }> {
  try {
    await client.query(BEGIN_READ);
    const value = await fn();
    const done = await client.query(last === undefined ? 'COMMIT' : `${last}; COMMIT`);
    return { value, rows: last === undefined ? [] : (done as unknown as QueryResult[])[0]!.rows };
  } catch (err) {
    await client.query('ROLLBACK').catch(() => undefined);
    throw err;
  }
}

// ---------------------------------------------------------------------------------------------------
// Pairing: reading both sides
// ---------------------------------------------------------------------------------------------------

/** Reads one side; `only` (when given) names the map keys the caller still cares about. */
export type ReadFn = (side: TableSide, only?: ReadonlySet<string>) => Promise<Map<string, string>>;

export interface PairResult {
  /** Latest values read on each side. */
  src: Map<string, string>;
  dst: Map<string, string>;
  /** Keys whose values differ (live: while the source held still). */
  different: string[];
  /** Live only: keys that kept changing on the source, or whose target never caught up. */
  unsettled: string[];
}

export interface CompareOptions {
  /**
   * Live: how many times a changing key is re-read before it is left unsettled. 1 for aggregate levels,
   * whose differences are narrowed down anyway; leaves use the configured maximum.
   */
  rounds?: number;
}

export interface Pairing {
  readonly live: boolean;
  compare(read: ReadFn, opts?: CompareOptions): Promise<PairResult>;
}

export class StrictPairing implements Pairing {
  readonly live = false;
  constructor(
    private readonly src: TableSide,
    private readonly dst: TableSide,
  ) {}
  async compare(read: ReadFn): Promise<PairResult> {
    const [s, d] = await Promise.all([read(this.src), read(this.dst)]);
    return { src: s, dst: d, different: differingKeys(s, d), unsettled: [] };
  }
}

/** Resolves true once the target has applied the source up to `lsn`, false if it did not in time. */
export type WaitForTarget = (lsn: string, signal?: AbortSignal) => Promise<boolean>;

export interface LivePairingOptions {
  waitForTarget: WaitForTarget;
  /** Reads of the source per comparison before a changing key is left unsettled (default 4). */
  maxRounds?: number;
  /** Pause before re-reading (doubles each round; default 250 ms). */
  recheckDelayMs?: number;
  signal?: AbortSignal;
}

export class LivePairing implements Pairing {
  readonly live = true;
  constructor(
    private readonly src: TableSide,
    private readonly dst: TableSide,
    private readonly opts: LivePairingOptions,
  ) {}

  /** See live.ts: source, target past the source's LSN, source again; then re-read what moved. */
  async compare(read: ReadFn, cmp: CompareOptions = {}): Promise<PairResult> {
    const maxRounds = Math.max(1, cmp.rounds ?? this.opts.maxRounds ?? 4);
    const delay = this.opts.recheckDelayMs ?? 250;
    let s1 = await this.src.snapshot(() => read(this.src));
    const srcAll = new Map(s1.value);
    const dstAll = new Map<string, string>();
    const different: string[] = [];
    const suspected = new Set<string>();
    let pending: Set<string> | undefined;
    for (let round = 1; ; round++) {
      throwIfAborted(this.opts.signal);
      const caughtUp = await this.opts.waitForTarget(s1.lsn!, this.opts.signal);
      const d = (await this.dst.snapshot(() => read(this.dst, pending))).value;
      for (const [k, v] of d) if (!pending || pending.has(k)) dstAll.set(k, v);
      // A key absent on the target this round must not keep an older value.
      if (pending) for (const k of pending) if (!d.has(k)) dstAll.delete(k);
      const diff = differingKeys(s1.value, d, pending);
      if (diff.length === 0) return { src: srcAll, dst: dstAll, different, unsettled: [] };
      if (!caughtUp) return { src: srcAll, dst: dstAll, different, unsettled: diff };
      const only = new Set(diff);
      const s2 = await this.src.snapshot(() => read(this.src, only));
      for (const k of only) {
        const v = s2.value.get(k);
        if (v === undefined) srcAll.delete(k);
        else srcAll.set(k, v);
      }
      const still: string[] = [];
      for (const k of diff) {
        const v = liveVerdict(s1.value.get(k), d.get(k), s2.value.get(k));
        if (v === 'different' || (v === 'suspect' && suspected.has(k))) different.push(k);
        else if (v === 'suspect') {
          suspected.add(k);
          still.push(k);
        } else if (v === 'unsettled') {
          suspected.delete(k);
          still.push(k);
        }
      }
      if (still.length === 0 || round >= maxRounds) return { src: srcAll, dst: dstAll, different, unsettled: still };
      pending = new Set(still);
      s1 = s2;
      await sleep(delay * 2 ** (round - 1), this.opts.signal);
    }
  }
}

/**
 * The default WaitForTarget during SYNCING_WAL: polls the apply's committed position
 * (pgdts.apply_progress, written in the same target transaction as the changes). If it has not passed
 * `lsn` after a moment, writes one transactional logical message on the source so that an idle source
 * still produces a commit the apply records.
 */
export function waitForApplyProgress(target: Client, source: { query(text: string): Promise<unknown> }, slot: string, timeoutMs = 60_000, pollMs = 100): WaitForTarget {
  let canNudge = true;
  return async (lsn, signal) => {
    const started = Date.now();
    let nudged = false;
    for (;;) {
      throwIfAborted(signal);
      const p = await readApplyProgress(target, slot);
      if (p && compareLsn(p.appliedLsn, lsn) >= 0) return true;
      const waited = Date.now() - started;
      if (waited > timeoutMs) return false;
      if (!nudged && canNudge && waited >= 300) {
        nudged = true;
        // Without the privilege to emit messages we simply wait for the next write or keepalive.
        await source.query(NUDGE_SQL).catch(() => void (canNudge = false));
      }
      await sleep(pollMs, signal);
    }
  };
}

// ---------------------------------------------------------------------------------------------------
// Checksums and bisection
// ---------------------------------------------------------------------------------------------------

export interface ChecksumOptions {
  /** Target rows per chunk (default 100,000). */
  chunkRows: number;
  /** A differing range this small is compared row by row (default 1,000). */
  leafRows: number;
  /** Pieces a differing range is split into (default 16). */
  fanout: number;
  /** Stop bisecting once this many differing rows are known. */
  maxMismatches: number;
  signal?: AbortSignal;
  onChunk?: (done: number, total: number) => void;
}

/** A differing row found by the checksum level (before keys are turned into records). */
export interface FoundRow {
  /** keyId of the key values; tables without a key: the row md5. */
  id: string;
  kind: MismatchKind;
  chunk: string;
  /** md5 of the row's text on the side that has it (source first). */
  hash?: string;
}

export interface ChecksumResult {
  chunks: number;
  /** Labels of the top-level chunks that differ. */
  mismatchedChunks: string[];
  /** Strict: their key ranges, same order (a repair checks them again). */
  mismatchedRanges?: KeyRange[];
  /** Live: ranges whose rows kept changing (or whose target did not catch up). */
  unsettledRanges: string[];
  unsettledRows: number;
  found: FoundRow[];
  /** More differences exist than were narrowed down to rows. */
  truncated: boolean;
  /** Sums of the last chunk counts read (live: approximate). */
  sourceRows: number;
  targetRows: number;
}

const MAX_DEPTH = 12;

/** Keys in key order, about 64 a chunk (20,000 at least), sampled from a table of about `rows` rows; and the percentage of its pages read. */
export async function sampleForChunks(src: TableSide, rows: number, chunks: number): Promise<{ keys: string[][]; percent: number }> {
  const percent = Math.min(100, (100 * Math.max(chunks * 64, 20_000)) / rows);
  return { keys: (await src.snapshot(() => src.sampledKeysInOrder(percent))).value, percent };
}

/** Chunk boundaries from the source: a page sample for big tables, every n-th key for smaller ones. */
export async function chunkBoundaries(src: TableSide, rows: number, chunks: number): Promise<string[][]> {
  if (chunks <= 1) return [];
  const step = Math.ceil(rows / chunks);
  if (rows > 200_000) {
    const { keys } = await sampleForChunks(src, rows, chunks);
    if (keys.length >= chunks * 8) return pickBoundaries(keys, chunks);
  }
  return (await src.snapshot(() => src.splitPoints({}, step))).value;
}

/** A differing (or, live, unsettled) key range still to be narrowed down. */
interface Node {
  range: KeyRange;
  /** Index of the top-level chunk it lies in, and its position below it (for a stable report order). */
  chunk: number;
  path: number[];
  src: string | undefined;
  dst: string | undefined;
}

const byPath = (a: { chunk: number; path: number[] }, b: { chunk: number; path: number[] }): number => {
  if (a.chunk !== b.chunk) return a.chunk - b.chunk;
  for (let i = 0; i < Math.min(a.path.length, b.path.length); i++) if (a.path[i] !== b.path[i]) return a.path[i]! - b.path[i]!;
  return a.path.length - b.path.length;
};

/** Ranges whose summaries are compared in one read of each side (live: one wait for the target). */
const SUMMARY_BATCH = 256;
/** Rows compared in one leaf read. */
const LEAF_BATCH_ROWS = 20_000;

/**
 * Chunk checksums by key range, then breadth-first bisection of every differing chunk: each level
 * splits the differing ranges at keys read from the side with more rows there, compares the pieces'
 * checksums (all of a level in a few reads), and compares ranges of at most leafRows rows row by row.
 */
export async function checksumKeyed(
  src: TableSide,
  dst: TableSide,
  pairing: Pairing,
  sourceRows: number,
  opts: ChecksumOptions,
  /** The proof's chunks, of which only `only` are compared (the others are proven already). */
  planned?: { ranges: readonly KeyRange[]; only: readonly number[] },
): Promise<ChecksumResult> {
  const nChunks = Math.max(1, Math.ceil(sourceRows / Math.max(1, opts.chunkRows)));
  const ranges = planned ? [...planned.ranges] : rangesBetween(await chunkBoundaries(src, sourceRows, nChunks));
  const indices = planned ? [...planned.only] : ranges.map((_, i) => i);
  const labels = ranges.map((r, i) => chunkLabel(i, ranges.length, r));
  const out = emptyChecksumResult(ranges.length);

  let frontier = await differingChunks(pairing, ranges, indices, opts, out);
  // Strict: a chunk whose checksum differs is a mismatch, even if its rows cannot all be listed.
  if (!pairing.live) {
    out.mismatchedChunks = frontier.map((n) => labels[n.chunk]!);
    out.mismatchedRanges = frontier.map((n) => ranges[n.chunk]!);
  }

  const found: LeafRow[] = [];
  for (let depth = 0; frontier.length > 0; depth++) {
    throwIfAborted(opts.signal);
    opts.onChunk?.(ranges.length, ranges.length); // bisecting: still alive (heartbeat)
    if (found.length >= opts.maxMismatches) {
      out.truncated = true;
      break;
    }
    const leaves: Node[] = [];
    const pieces: Node[] = [];
    for (const n of frontier) {
      const rows = Math.max(summaryRows(n.src), summaryRows(n.dst));
      if (rows <= opts.leafRows || depth >= MAX_DEPTH) {
        leaves.push(n);
        continue;
      }
      const splitter = summaryRows(n.dst) > summaryRows(n.src) ? dst : src;
      const points = (await splitter.snapshot(() => splitter.splitPoints(n.range, Math.ceil(rows / opts.fanout)))).value;
      if (points.length === 0) leaves.push(n);
      else rangesBetween(points, n.range).forEach((range, i) => pieces.push({ range, chunk: n.chunk, path: [...n.path, i], src: undefined, dst: undefined }));
    }

    // Leaves: row by row, several ranges per read.
    for (let i = 0; i < leaves.length && found.length < opts.maxMismatches; ) {
      const group: Node[] = [];
      let rows = 0;
      while (i < leaves.length && (group.length === 0 || rows + Math.max(summaryRows(leaves[i]!.src), summaryRows(leaves[i]!.dst)) <= LEAF_BATCH_ROWS)) {
        rows += Math.max(summaryRows(leaves[i]!.src), summaryRows(leaves[i]!.dst));
        group.push(leaves[i++]!);
      }
      await compareLeaves(pairing, opts, group, labels, found, out);
      opts.onChunk?.(ranges.length, ranges.length);
    }

    // Inner ranges: compare the pieces' checksums, keep those that differ for the next level.
    const next: Node[] = [];
    for (let start = 0; start < pieces.length; start += SUMMARY_BATCH) {
      throwIfAborted(opts.signal);
      opts.onChunk?.(ranges.length, ranges.length);
      const part = pieces.slice(start, start + SUMMARY_BATCH);
      const r = await pairing.compare((side, only) => side.summaries(part.map((p) => p.range), only), { rounds: 1 });
      for (const id of [...r.different, ...r.unsettled]) next.push({ ...part[Number(id)]!, src: r.src.get(id), dst: r.dst.get(id) });
    }
    frontier = next.sort(byPath);
  }

  found.sort((a, b) => byPath({ chunk: a.chunkIndex, path: a.path }, { chunk: b.chunkIndex, path: b.path }) || a.seq - b.seq);
  out.found = found.slice(0, Math.max(opts.maxMismatches, 0)).map(({ id, kind, chunk, hash }) => (hash === undefined ? { id, kind, chunk } : { id, kind, chunk, hash }));
  if (found.length > opts.maxMismatches) out.truncated = true;
  // Live: a chunk is a mismatch only once a row in it is confirmed to differ.
  if (pairing.live) out.mismatchedChunks = [...new Set(out.found.map((f) => f.chunk))];
  return out;
}

/** Level 0 of the keyed checksum: the chunks (of `indices`) that differ, in order. Strict: one chunk at a time (both sides at once). Live: batches. */
async function differingChunks(pairing: Pairing, ranges: readonly KeyRange[], indices: readonly number[], opts: ChecksumOptions, out: ChecksumResult): Promise<Node[]> {
  const frontier: Node[] = [];
  const batch = pairing.live ? SUMMARY_BATCH : 1;
  for (let start = 0; start < indices.length; start += batch) {
    throwIfAborted(opts.signal);
    const ids = new Set(indices.slice(start, start + batch).map(String));
    const r = await pairing.compare((side, only) => side.summaries(ranges, only ?? ids), { rounds: 1 });
    for (const id of ids) {
      out.sourceRows += summaryRows(r.src.get(id));
      out.targetRows += summaryRows(r.dst.get(id));
    }
    for (const id of [...r.different, ...r.unsettled]) {
      const i = Number(id);
      frontier.push({ range: ranges[i]!, chunk: i, path: [], src: r.src.get(id), dst: r.dst.get(id) });
    }
    opts.onChunk?.(Math.min(indices.length, start + batch), indices.length);
  }
  return frontier.sort(byPath);
}

/** A differing row found in a leaf, with where it was found (to list rows in key order). */
type LeafRow = FoundRow & { chunkIndex: number; path: number[]; seq: number };

/** Leaves compared row by row, several ranges per read: the differing rows go to `found`, what cannot be settled to `out`. */
async function compareLeaves(pairing: Pairing, opts: ChecksumOptions, group: Node[], labels: readonly string[], found: LeafRow[], out: ChecksumResult): Promise<void> {
  // Which leaf each key came from (both sides put a key in the same range), and leaves too big to list.
  const leafOf = new Map<string, number>();
  const overflow = new Set<number>();
  const r = await pairing.compare(async (side) => {
    const rows = new Map<string, string>();
    for (let j = 0; j < group.length; j++) {
      const n = group[j]!;
      const limit = Math.max(opts.leafRows, summaryRows(n.src), summaryRows(n.dst)) * 2 + 16;
      const h = await side.rowHashes(n.range, limit);
      if (h.count >= limit) overflow.add(j);
      for (const [k, v] of h.rows) {
        rows.set(k, v);
        leafOf.set(k, j);
      }
    }
    return rows;
  });
  let seq = 0;
  for (const id of r.different) {
    const j = leafOf.get(id) ?? 0;
    if (overflow.has(j)) continue;
    const n = group[j]!;
    const sv = contentOf(r.src.get(id));
    const dv = contentOf(r.dst.get(id));
    const row: FoundRow & { chunkIndex: number; path: number[]; seq: number } = {
      id,
      kind: classifyDifference(sv, dv),
      chunk: labels[n.chunk]!,
      chunkIndex: n.chunk,
      path: n.path,
      seq: seq++,
    };
    const hash = sv ?? dv;
    if (hash !== undefined) row.hash = hash;
    found.push(row);
  }
  const unsettledLeaves = new Set(r.unsettled.map((id) => leafOf.get(id) ?? 0));
  for (const j of overflow) {
    out.truncated = true;
    out.unsettledRanges.push(`${labels[group[j]!.chunk]!} ${rangeLabel(group[j]!.range)} (too many rows to list)`);
  }
  for (const j of unsettledLeaves) {
    if (overflow.has(j)) continue;
    out.unsettledRanges.push(`${labels[group[j]!.chunk]!} ${rangeLabel(group[j]!.range)}`);
  }
  out.unsettledRows += r.unsettled.filter((id) => !overflow.has(leafOf.get(id) ?? 0)).length;
}

function emptyChecksumResult(chunks: number): ChecksumResult {
  return { chunks, mismatchedChunks: [], unsettledRanges: [], unsettledRows: 0, found: [], truncated: false, sourceRows: 0, targetRows: 0 };
}

/** Tables without a key: one whole-table aggregate; if it differs, md5 buckets, then row md5s. */
export async function checksumKeyless(pairing: Pairing, opts: ChecksumOptions): Promise<ChecksumResult> {
  const out = emptyChecksumResult(1);
  const top = await pairing.compare((side) => side.summaries([{}]), { rounds: 1 });
  out.sourceRows = summaryRows(top.src.get('0'));
  out.targetRows = summaryRows(top.dst.get('0'));
  opts.onChunk?.(1, 1);
  if (top.different.length === 0 && top.unsettled.length === 0) return out;
  if (!pairing.live) {
    out.mismatchedChunks.push('whole table');
    out.mismatchedRanges = [{}];
  }

  // Buckets of about 1,000 rows: 16^prefix >= rows / 1000, at most 65,536 buckets.
  const rows = Math.max(out.sourceRows, out.targetRows);
  const prefix = Math.min(4, Math.max(1, Math.ceil(Math.log(Math.max(1, rows / 1000)) / Math.log(16))));
  const b = await pairing.compare((side) => side.bucketSummaries(prefix), { rounds: 1 });
  const buckets = [...b.different, ...b.unsettled].sort();
  for (let i = 0; i < buckets.length; i += 64) {
    throwIfAborted(opts.signal);
    if (out.found.length >= opts.maxMismatches) {
      out.truncated = true;
      break;
    }
    const batch = buckets.slice(i, i + 64);
    const r = await pairing.compare((side) => side.bucketRows(prefix, batch));
    for (const h of r.different) {
      const sn = Number(contentOf(r.src.get(h)) ?? 0);
      const dn = Number(contentOf(r.dst.get(h)) ?? 0);
      out.found.push({ id: h, kind: classifyCount(sn, dn), chunk: `md5 bucket ${h.slice(0, prefix)}`, hash: h });
    }
    if (r.unsettled.length) {
      out.unsettledRows += r.unsettled.length;
      out.unsettledRanges.push(...new Set(r.unsettled.map((h) => `md5 bucket ${h.slice(0, prefix)}`)));
    }
  }
  if (out.found.length > opts.maxMismatches) {
    out.found = out.found.slice(0, opts.maxMismatches);
    out.truncated = true;
  }
  if (out.found.length && !out.mismatchedChunks.length) out.mismatchedChunks.push('whole table');
  return out;
}

// ---------------------------------------------------------------------------------------------------
// Samples (strict only)
// ---------------------------------------------------------------------------------------------------

export interface SampleResult {
  sampled: number;
  found: Array<{ id: string; kind: MismatchKind; columns?: string[] }>;
}

/** Percent of pages to sample for about `want` rows out of `rows`; undefined: read the whole table. */
function samplePercentFor(rows: number, want: number): number | undefined {
  return rows > want * 20 ? Math.min(100, (100 * want * 20) / rows) : undefined;
}

/**
 * How each column is digested for a comparison across these two sides: bytea on both sides by its
 * bytes, everything else by its text form (converted to UTF-8 when the servers' encodings differ).
 */
export function digestModes(src: TableSide, dst: TableSide): DigestMode[] {
  const sameEncoding = src.encoding === dst.encoding;
  return src.shape.columns.map((c) =>
    src.columnTypes.get(c) === 'bytea' && dst.columnTypes.get(c) === 'bytea' ? 'bytes' : sameEncoding ? 'text' : 'utf8',
  );
}

/** Cells (keys x columns) per digest read: about 1 MB of digests, whatever the table's width. */
const DIGEST_BATCH_CELLS = 20_000;

/** Cells a sample reads whole from each side (about 3 MB of digests). */
const WHOLE_SAMPLE_CELLS = 100_000;

/** Keys per digest read for a table of `columns` columns (at most 1,000). */
export function digestBatchSize(columns: number): number {
  return Math.max(1, Math.min(1000, Math.floor(DIGEST_BATCH_CELLS / Math.max(1, columns + 1))));
}

/**
 * Compares the rows with these keys column by column, by digest, one batch of keys at a time (a
 * batch's digests from both sides are compared and dropped before the next is read). `onRow` gets each
 * key's digests on both sides (undefined: no row with that key there).
 */
async function compareDigestsByKey(
  src: TableSide,
  dst: TableSide,
  keys: ReadonlyArray<readonly string[]>,
  read: (side: TableSide, batch: ReadonlyArray<readonly string[]>, modes: readonly DigestMode[]) => Promise<Map<string, Array<string | null>>>,
  onRow: (id: string, s: Array<string | null> | undefined, d: Array<string | null> | undefined) => void,
): Promise<void> {
  const modes = digestModes(src, dst);
  const step = digestBatchSize(modes.length);
  for (let i = 0; i < keys.length; i += step) {
    const batch = keys.slice(i, i + step);
    const [a, b] = await Promise.all([read(src, batch, modes), read(dst, batch, modes)]);
    for (const k of batch) {
      const id = keyId(k);
      onRow(id, a.get(id), b.get(id));
    }
  }
}

export async function sampleKeyed(src: TableSide, dst: TableSide, sourceRows: number, size: number, targetRows?: number): Promise<SampleResult> {
  const found: SampleResult['found'] = [];
  const onRow = (id: string, s: Array<string | null> | undefined, d: Array<string | null> | undefined) => {
    if (!s) return; // deleted on the source meanwhile (verify on a live database)
    if (!d) found.push({ id, kind: 'missing-on-target' });
    else {
      const cols = differingColumns(src.shape.columns, s, d);
      if (cols.length) found.push({ id, kind: 'different', columns: cols });
    }
  };
  // Both sides no larger than the sample (counted in this snapshot): the sample is every row, read
  // on both sides at once (one round trip, not the keys first and then their rows; thousands of
  // small tables inside the write stop).
  if (targetRows !== undefined && sourceRows <= size && targetRows <= size && Math.max(sourceRows, targetRows) * (src.shape.columns.length + 1) <= WHOLE_SAMPLE_CELLS) {
    const modes = digestModes(src, dst);
    const [a, b] = await Promise.all([src.allDigests(modes), dst.allDigests(modes)]);
    for (const [id, s] of a) onRow(id, s, b.get(id));
    return { sampled: a.size, found };
  }
  const percent = samplePercentFor(sourceRows, size);
  let keys = await src.sampleKeys(size, percent);
  if (percent !== undefined && keys.length < Math.min(size, sourceRows)) keys = await src.sampleKeys(size);
  await compareDigestsByKey(src, dst, keys, (side, batch, modes) => side.digestsByKey(batch, modes), onRow);
  return { sampled: keys.length, found };
}

export async function sampleKeyless(src: TableSide, dst: TableSide, sourceRows: number, size: number): Promise<SampleResult> {
  const percent = samplePercentFor(sourceRows, size);
  let hashes = await src.sampleRowHashes(size, percent);
  if (percent !== undefined && hashes.length < Math.min(size, sourceRows)) hashes = await src.sampleRowHashes(size);
  const distinct = [...new Set(hashes)];
  const [a, b] = await Promise.all([src.countRowHashes(distinct), dst.countRowHashes(distinct)]);
  const found: SampleResult['found'] = [];
  for (const h of distinct) {
    const sn = a.get(h) ?? 0;
    const dn = b.get(h) ?? 0;
    if (sn !== dn) found.push({ id: h, kind: classifyCount(sn, dn) });
  }
  return { sampled: hashes.length, found };
}

/** For rows known to differ: which columns (both sides read by key, by digest). */
export async function columnsThatDiffer(src: TableSide, dst: TableSide, ids: readonly string[]): Promise<Map<string, string[]>> {
  const keys = ids.map((id) => JSON.parse(id) as string[]);
  const out = new Map<string, string[]>();
  await compareDigestsByKey(
    src,
    dst,
    keys,
    async (side, batch, modes) => (await side.snapshot(() => side.digestsByKey(batch, modes))).value,
    (id, s, d) => {
      if (s && d) out.set(id, differingColumns(src.shape.columns, s, d));
    },
  );
  return out;
}

// ---------------------------------------------------------------------------------------------------

export function throwIfAborted(signal?: AbortSignal): void {
  if (signal?.aborted) {
    const r: unknown = signal.reason;
    throw r instanceof Error ? r : new Error('validation cancelled');
  }
}

/**
 * The content proof at cutover (VALIDATING, both sides in their repeatable-read transaction, the
 * source fenced and the apply past the fence): which stored chunks hold as proven, which are checked
 * by the keys written since, and which are read again (proof.ts proves them during SYNCING_WAL).
 */
import { throwIfAborted, type TableSide } from './engine';
import { keysLimit, type MarkParts, type StoredChunk } from './proof-store';
import { chunkMark, parseChunkMark, writtenKeysByChunkSql, type KeyRange, type TableWrites } from './sql';

/** The most keys compared in one aggregate for a whole table; more, one per chunk. */
const KEYS_TOGETHER = 200_000;

/** A chunk-marked chunk at cutover written since proven: its stored mark (`then`) and its mark now. */
interface WrittenAtCutover {
  chunk: number;
  c: StoredChunk;
  then: MarkParts;
  now: MarkParts;
}

/**
 * Chunk-marked chunks written since they were proven (same table count, a higher chunk count): the
 * rows with the keys written after each one's proof compared on both sides by key. Every other row of
 * such a chunk is as proven on both sides: no write reached it on the target since, and every source
 * change would have reached it as the apply's write (the recorded keys are the statements' old and
 * new rows, in the snapshot the counts were read in). One read of the keys for the table and one
 * aggregate per side over all of them; when those differ, one per chunk, to tell which. Returns, by
 * chunk, the rows it holds now (proven rows + the writes' delta) and the keys compared; a chunk not
 * in it is read as before (more keys than its limit, or rows that differ).
 */
async function rowsByWrittenKeys(s: TableSide, d: TableSide, slot: string, written: readonly WrittenAtCutover[]): Promise<Map<number, { rows: number; keys: number }>> {
  const q = writtenKeysByChunkSql(
    slot,
    d.shape.table,
    written.map((w) => ({ chunk: w.chunk, after: w.then.writes, limit: keysLimit(w.c.rows!) })),
  );
  const keys = new Map((await d.client.query<{ chunk: number; keys: string[] | null }>(q.text, q.values)).rows.map((r) => [r.chunk, r.keys] as const));
  const out = new Map<number, { rows: number; keys: number }>();
  const checked = written.filter((w) => keys.get(w.chunk));
  const alike = async (only: string[]) => {
    if (!only.length) return true;
    const [a, b] = await Promise.all([s.proofSummary({}, { only }), d.proofSummary({}, { only })]);
    return a.content === b.content;
  };
  const all = checked.flatMap((w) => keys.get(w.chunk)!);
  const together = all.length <= KEYS_TOGETHER && (await alike(all));
  for (const w of checked) {
    const only = keys.get(w.chunk)!;
    if (together || (await alike(only))) out.set(w.chunk, { rows: w.c.rows! + w.now.delta - w.then.delta, keys: only.length });
  }
  return out;
}

/** What the cutover check learns from the stored proof about one table. */
export interface CutoverPlan {
  ranges: KeyRange[];
  /** Chunks to compare now: never verified, or changed on either side since, and not found alike when read. */
  recheck: number[];
  /** Chunks whose content was compared when read (and found alike): verified at cutover without a second scan. */
  comparedNow: number;
  /** Chunks whose fingerprints were read now; the others had no write on the target since proven, or were checked by the keys written since. */
  read: number;
  /** Rows compared by key: those written since their chunk was proven (chunk marks). */
  keysRead: number;
  sourceRows: number;
  targetRows: number;
}

/**
 * At cutover (both sides in their repeatable-read transaction, the source fenced and the apply past
 * the fence): which stored chunks to compare again; undefined when the proof never planned this table.
 *
 * A chunk proven at the table's current write count (`writes`, read in the target's snapshot) needs no
 * read at all: no transaction wrote the table on the target since its target read, so the target
 * still holds what was proven; and the source's changes since its source read would have reached the
 * target as the apply's writes, moving the count. The rows it holds are the proven ones. Every other
 * chunk's fingerprint is read on both sides: unchanged tuples on both still hold what was proven.
 */
export async function planCutoverCheck(
  s: TableSide,
  d: TableSide,
  chunks: readonly StoredChunk[] | undefined,
  writes: TableWrites | undefined,
  signal?: AbortSignal,
  slot?: string,
): Promise<CutoverPlan | undefined> {
  if (!chunks?.length) return undefined;
  const plan: CutoverPlan = { ranges: chunks.map((c) => c.range), recheck: [], comparedNow: 0, read: 0, keysRead: 0, sourceRows: 0, targetRows: 0 };
  const written: WrittenAtCutover[] = [];
  const toRead: number[] = [];
  for (let i = 0; i < chunks.length; i++) {
    const c = chunks[i]!;
    const mark = chunkMark(writes, i);
    if (c.source && mark !== undefined && c.writes === mark && c.rows !== undefined) {
      plan.sourceRows += c.rows;
      plan.targetRows += c.rows;
      continue;
    }
    const then = parseChunkMark(c.writes);
    const now = parseChunkMark(mark);
    if (slot !== undefined && c.source && c.rows !== undefined && then && now && then.table === now.table && now.writes >= then.writes) written.push({ chunk: i, c, then, now });
    else toRead.push(i);
  }
  throwIfAborted(signal);
  const byKeys = written.length ? await rowsByWrittenKeys(s, d, slot!, written) : new Map<number, { rows: number; keys: number }>();
  for (const w of written) {
    const rows = byKeys.get(w.chunk);
    if (!rows) {
      toRead.push(w.chunk);
      continue;
    }
    plan.keysRead += rows.keys;
    plan.sourceRows += rows.rows;
    plan.targetRows += rows.rows;
  }
  for (const i of toRead.sort((a, b) => a - b)) {
    throwIfAborted(signal);
    const c = chunks[i]!;
    plan.read++;
    // Never proven, a chunk-marked chunk written since (not settled above), or the one chunk of a
    // marked table whose count moved (keyless, or small: written, so changed): its content is
    // compared in the same scan that counts it, rather than its fingerprints read and then its rows
    // compared in a second scan of both sides. Else (a table of several chunks counted as a whole:
    // one write anywhere moves its count) its fingerprints, a cheaper scan, tell whether it changed.
    if (!c.source || parseChunkMark(chunkMark(writes, i)) !== undefined || (writes !== undefined && chunks.length === 1)) {
      const [a, b] = await Promise.all([s.proofSummary(c.range), d.proofSummary(c.range)]);
      plan.sourceRows += a.rows;
      plan.targetRows += b.rows;
      if (a.content === b.content) plan.comparedNow++;
      else plan.recheck.push(i);
      continue;
    }
    const [sf, df] = await Promise.all([s.fingerprint(c.range), d.fingerprint(c.range)]);
    plan.sourceRows += sf.rows;
    plan.targetRows += df.rows;
    if (sf.tuples !== c.source || df.tuples !== c.target) plan.recheck.push(i);
  }
  return plan;
}

/**
 * VALIDATING, the decisions: pure functions (no I/O, no runtime imports) that turn what both sides
 * returned into verdicts and mismatch reports, and the report's text. Results are plain JSON: they
 * travel through workflow history and the status query. A report names tables, chunks, keys and column
 * names, never other row values.
 */
import type { Mismatch, MismatchKind, TableValidationResult } from './contract';
import type { KeyRange } from './sql';

/** Key used for tables without one: the row's identity is its content hash. */
export const ROW_MD5_KEY = 'md5(row)';

/** Map keys for a key tuple: JSON of its text values (unambiguous, whatever the values contain). */
export const keyId = (values: ReadonlyArray<string | null>): string => JSON.stringify(values);
export const keyValues = (id: string): Array<string | null> => JSON.parse(id) as Array<string | null>;

export function keyRecord(keyColumns: readonly string[], id: string): Record<string, string | null> {
  const v = keyValues(id);
  return Object.fromEntries(keyColumns.map((k, i) => [k, v[i] ?? null]));
}

/**
 * Chunk boundaries from keys in key order (a sample or every key): `chunks - 1` quantiles, distinct,
 * in order. Fewer when there are not enough keys.
 */
export function pickBoundaries(sortedKeys: ReadonlyArray<readonly string[]>, chunks: number): string[][] {
  const out: string[][] = [];
  const m = sortedKeys.length;
  if (m === 0 || chunks <= 1) return out;
  let last: string | undefined;
  for (let i = 1; i < chunks; i++) {
    const k = sortedKeys[Math.min(m - 1, Math.floor((i * m) / chunks))]!;
    const id = keyId(k);
    if (id === last) continue;
    // The first sampled key would make an empty first chunk: skip it.
    if (out.length === 0 && id === keyId(sortedKeys[0]!)) continue;
    out.push([...k]);
    last = id;
  }
  return out;
}

/** n boundaries -> n + 1 ranges covering the whole key space (or the given outer range). */
export function rangesBetween(boundaries: ReadonlyArray<readonly string[]>, outer: KeyRange = {}): KeyRange[] {
  const ranges: KeyRange[] = [];
  let lo = outer.lo;
  for (const b of boundaries) {
    ranges.push(withBounds(lo, b));
    lo = b;
  }
  ranges.push(withBounds(lo, outer.hi));
  return ranges;
}

function withBounds(lo: readonly string[] | undefined, hi: readonly string[] | undefined): KeyRange {
  const r: KeyRange = {};
  if (lo) r.lo = lo;
  if (hi) r.hi = hi;
  return r;
}

const tuple = (v: readonly string[]): string => (v.length === 1 ? v[0]! : `(${v.join(', ')})`);

/** `[1000 .. 2000)`, `[-∞ .. 1000)`, `[(7, abc) .. +∞)`: key values as text. */
export function rangeLabel(range: KeyRange): string {
  return `[${range.lo ? tuple(range.lo) : '-∞'} .. ${range.hi ? tuple(range.hi) : '+∞'})`;
}

export function chunkLabel(index: number, count: number, range: KeyRange): string {
  return count <= 1 ? 'whole table' : `${index + 1}/${count} ${rangeLabel(range)}`;
}

/**
 * Values compared per key are strings. A live source read may append the row version after
 * VERSION_SEP: content is compared across sides, content + version across the two source reads.
 */
export const VERSION_SEP = '\u0001';

export const withVersion = (content: string, version: string | null | undefined): string =>
  version === null || version === undefined ? content : `${content}${VERSION_SEP}${version}`;

/** The value without row versions (undefined stays undefined). */
export function contentOf(v: string | undefined): string | undefined {
  if (v === undefined || !v.includes(VERSION_SEP)) return v;
  return v
    .split('|')
    .map((x) => x.split(VERSION_SEP)[0]!)
    .sort()
    .join('|');
}

/**
 * Row identity values for one key on one side: the md5 of the row's text, or several joined by '|'
 * (sorted) when a side holds duplicate keys (a target without its primary key).
 */
export function addRowHash(map: Map<string, string>, id: string, hash: string): void {
  const prev = map.get(id);
  map.set(id, prev === undefined ? hash : [...prev.split('|'), hash].sort().join('|'));
}

const multiplicity = (v: string): number => v.split('|').length;

/** How one key differs, given its value on each side (undefined: absent). */
export function classifyDifference(src: string | undefined, dst: string | undefined): MismatchKind {
  src = contentOf(src);
  dst = contentOf(dst);
  if (dst === undefined) return 'missing-on-target';
  if (src === undefined) return 'extra-on-target';
  const a = multiplicity(src);
  const b = multiplicity(dst);
  if (b > a) return 'extra-on-target';
  if (b < a) return 'missing-on-target';
  return 'different';
}

/** Tables without a key: a row md5 present `src` times on the source and `dst` times on the target. */
export function classifyCount(src: number, dst: number): MismatchKind {
  return dst < src ? 'missing-on-target' : 'extra-on-target';
}

/** Names of the columns whose text differs (null = SQL NULL). */
export function differingColumns(columns: readonly string[], src: ReadonlyArray<string | null>, dst: ReadonlyArray<string | null>): string[] {
  return columns.filter((_, i) => (src[i] ?? null) !== (dst[i] ?? null));
}

/** Keys on either side whose values differ. */
export function differingKeys(src: ReadonlyMap<string, string>, dst: ReadonlyMap<string, string>, only?: ReadonlySet<string>): string[] {
  const keys = new Set<string>();
  for (const k of src.keys()) if (!only || only.has(k)) keys.add(k);
  for (const k of dst.keys()) if (!only || only.has(k)) keys.add(k);
  return [...keys].filter((k) => contentOf(src.get(k)) !== contentOf(dst.get(k)));
}

export type Verdict = 'equal' | 'different' | 'suspect' | 'unsettled';

/**
 * One key in one round of a live comparison. `s1` was read on the source at LSN L1; the target was read
 * (`d`) only after its apply had passed L1; `s2` was read on the source after that. The target's state
 * lies between the two source reads, so:
 *  - the target equals either source read: equal (the apply has or had that exact content);
 *  - both source reads saw the same row version (xmin) but the target differs: a real difference;
 *  - the source showed the same value without a version (the row absent both times, or an aggregate):
 *    suspect, because it may have changed and changed back in between (inserted then deleted); a
 *    suspect confirmed in a later round is a difference;
 *  - otherwise the row changed while we looked: unsettled, read again later.
 */
export function liveVerdict(s1: string | undefined, d: string | undefined, s2: string | undefined): Verdict {
  const c = contentOf(d);
  if (c === contentOf(s1) || c === contentOf(s2)) return 'equal';
  if (s1 !== s2) return 'unsettled';
  return s1 !== undefined && s1.includes(VERSION_SEP) ? 'different' : 'suspect';
}

/**
 * A key whose chunk boundaries were applied with different collation rules on the two sides could
 * show up as missing in one chunk and extra in another. Pair them up again: same row -> no mismatch;
 * different row -> one `different`.
 */
export function reconcileAcrossChunks<T extends { id: string; kind: MismatchKind; hash?: string; chunk?: string }>(found: T[]): T[] {
  const missing = new Map<string, T>();
  const extra = new Map<string, T>();
  for (const m of found) {
    if (m.kind === 'missing-on-target') missing.set(m.id, m);
    if (m.kind === 'extra-on-target') extra.set(m.id, m);
  }
  const drop = new Set<T>();
  const replace = new Map<T, T>();
  for (const [id, m] of missing) {
    const e = extra.get(id);
    if (!e || e.chunk === m.chunk) continue;
    drop.add(e);
    if (m.hash !== undefined && m.hash === e.hash) drop.add(m);
    else replace.set(m, { ...m, kind: 'different' });
  }
  return found.filter((m) => !drop.has(m)).map((m) => replace.get(m) ?? m);
}

/** Parses `count:sum` summary values. */
export const summaryRows = (v: string | undefined): number => (v === undefined ? 0 : Number(v.split(':')[0]));

// ---------------------------------------------------------------------------------------------------
// Messages (pure: usable from workflow code too)
// ---------------------------------------------------------------------------------------------------

/** `id=42, "Name"=x`: key values only. */
export function formatKey(key: Record<string, string | null>): string {
  return Object.entries(key)
    .map(([k, v]) => `${/^[a-z_][a-z0-9_]*$/.test(k) ? k : JSON.stringify(k)}=${v === null ? 'NULL' : v}`)
    .join(', ');
}

export function formatMismatch(m: Mismatch): string {
  const what = m.kind === 'different' && m.columns?.length ? `different (${m.columns.join(', ')})` : m.kind;
  return `${formatKey(m.key)}: ${what}${m.chunk ? ` [chunk ${m.chunk}]` : ''}`;
}

/**
 * One line per failing table, for the ValidationError that fails the migration, e.g.
 * `public.orders -> app.orders: rows 1000 vs 999; checksum differs in 1 chunk; id=7: missing-on-target`.
 */
export function formatValidationFailure(results: readonly TableValidationResult[], keysPerTable = 10): string {
  return results
    .filter((r) => !r.ok)
    .map((r) => {
      const parts: string[] = [];
      if (r.error) parts.push(r.error);
      if (!r.error && !r.countsMatch) parts.push(`rows ${r.sourceRows} vs ${r.targetRows}`);
      if (r.sample === 'mismatch') parts.push('sampled rows differ');
      if (r.checksum === 'mismatch') parts.push(`checksum differs in ${r.mismatchedChunks.length} chunk(s)`);
      const keys = r.mismatches.slice(0, keysPerTable).map(formatMismatch);
      const more = r.mismatches.length - keys.length + (r.mismatchesTruncated ? 1 : 0);
      if (keys.length) parts.push(keys.join('; ') + (more > 0 ? `; and more` : ''));
      return `${r.source} -> ${r.target}: ${parts.join('; ')}`;
    })
    .join('\n');
}

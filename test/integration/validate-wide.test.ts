/**
 * VALIDATING on wide rows (issue 6): rows holding a 100 MB bytea and 50 MB texts, validated in this
 * process against two real clusters, with the process's memory watched.
 *
 * The sampled-row comparison used to fetch the sampled rows whole, as text, from both sides: these rows
 * alone took the worker 1.2-1.5 GB over its baseline. It now compares every column by a digest computed
 * in the database (activities/validate/sql.ts rowDigestsByKeySql), so what the worker holds per row is a
 * few bytes per column, whatever the values' size. The same holds for naming the columns of a row the
 * checksum found different (columnsThatDiffer).
 *
 * Both sides are built with the same deterministic SQL (nothing big passes through this process). The
 * target stores the wide columns uncompressed (STORAGE EXTERNAL) while the source compresses them, so
 * the two sides' pg_column_size differ for equal values (the reason the digest does not depend on it).
 *
 * Memory: the peak resident set size (VmHWM, reset through /proc/self/clear_refs before each run;
 * sampling every 5 ms where that is not available) minus RSS after a forced GC just before the run.
 * Bound: < 100 MB of growth while 100 MB values are compared (fetching one of them as hex text would
 * take 200 MB, twice). The measured numbers are printed.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import v8 from 'node:v8';
import vm from 'node:vm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { validateTables, type TableValidationResult } from '../../activities/validate';
import type { ValidateTableSpec } from '../../activities/validate/contract';
import { startCluster, type PgCluster } from '../harness/pg-cluster';

const MB = 1024 * 1024;
const SMALL_ROWS = 500;

/** A deterministic bytea of `mb` MB: a 1 MB block of md5s repeated (pglz looks back 4 kB only: incompressible). */
const bigBytea = (mb: number, seed: string) =>
  `decode(repeat((SELECT string_agg(md5(${seed} || i::text), '' ORDER BY i) FROM generate_series(1, 65536) i), ${mb}), 'hex')`;
/** A deterministic, incompressible text of about `mb` MB with tabs, quotes, backslashes, newlines and non-ASCII. */
const bigText = (mb: number, seed: string) =>
  `repeat((SELECT string_agg(md5(${seed} || i::text) || E'\\t"\\\\é€\\n''', '' ORDER BY i) FROM generate_series(1, 1024) i), ${Math.ceil((mb * MB) / (1024 * 42))})`;

const DDL = `
CREATE TABLE public.wide (id int PRIMARY KEY, label text, blob bytea, doc text, n numeric, tags text[]);
INSERT INTO public.wide (id, label, blob, doc, n, tags)
SELECT g, 'row ' || g, decode(md5(g::text), 'hex'), CASE WHEN g % 7 = 0 THEN NULL ELSE repeat('x', g) END, g / 3.0, ARRAY['a', g::text]
FROM generate_series(3, ${SMALL_ROWS + 2}) g;
-- Row 1: a 100 MB bytea and a 50 MB text, both incompressible.
INSERT INTO public.wide VALUES (1, 'one', ${bigBytea(100, "'a'")}, ${bigText(50, "'b'")}, 1, '{}');
-- Row 2: a 20 MB bytea and a 56 MB text that compresses to under 1 MB (pg_column_size is not its width).
INSERT INTO public.wide VALUES (2, 'two', ${bigBytea(20, "'c'")}, repeat('pg-dts é ', 6 * 1024 * 1024), 2, NULL);
`;

let source: PgCluster;
let target: PgCluster;
const table: ValidateTableSpec = {
  source: { schema: 'public', name: 'wide' },
  target: { schema: 'public', name: 'wide' },
  keyColumns: ['id'],
  copyColumns: ['id', 'label', 'blob', 'doc', 'n', 'tags'],
};

async function exec(c: PgCluster, text: string): Promise<void> {
  const cl = await c.client();
  try {
    await cl.query(text);
  } finally {
    await cl.end();
  }
}

beforeAll(async () => {
  [source, target] = await Promise.all([startCluster({ name: 'vwide-src' }), startCluster({ name: 'vwide-tgt' })]);
  await exec(target, `CREATE TABLE public.wide (id int PRIMARY KEY, label text, blob bytea, doc text, n numeric, tags text[]);
    ALTER TABLE public.wide ALTER blob SET STORAGE EXTERNAL, ALTER doc SET STORAGE EXTERNAL;`);
  await Promise.all([exec(source, DDL), exec(target, DDL.replace(/^CREATE TABLE.*$/m, ''))]);
  const sizes = async (c: PgCluster) =>
    (await c.query<{ id: number; b: string; d: string; bs: string; ds: string }>(
      `SELECT id, octet_length(blob)::text AS b, octet_length(doc)::text AS d, pg_column_size(blob)::text AS bs, pg_column_size(doc)::text AS ds FROM public.wide WHERE id <= 2 ORDER BY id`,
    )).map((r) => [r.id, Number(r.b), Number(r.d), Number(r.bs), Number(r.ds)]);
  const [s, t] = await Promise.all([sizes(source), sizes(target)]);
  expect(s[0]![1]).toBe(100 * MB);
  expect(s[0]![2]).toBeGreaterThanOrEqual(50 * MB);
  expect(s[1]![2]).toBeGreaterThanOrEqual(56 * MB);
  expect(s[1]![4]).toBeLessThan(2 * MB); // compressed on the source
  expect(t[1]![4]).toBeGreaterThanOrEqual(56 * MB); // stored as is on the target
  expect(t.map((r) => r.slice(0, 3))).toEqual(s.map((r) => r.slice(0, 3)));
});

afterAll(async () => {
  await Promise.all([source?.destroy(), target?.destroy()]);
});

const gc: () => void = (() => {
  v8.setFlagsFromString('--expose-gc');
  return vm.runInNewContext('gc') as () => void;
})();

const rss = () => process.memoryUsage().rss;

/** Peak RSS (VmHWM) can be reset on Linux by writing 5 to /proc/self/clear_refs. */
function resetPeak(): boolean {
  try {
    writeFileSync('/proc/self/clear_refs', '5');
    return true;
  } catch {
    return false;
  }
}
function kernelPeak(): number | undefined {
  try {
    const m = /VmHWM:\s+(\d+) kB/.exec(readFileSync('/proc/self/status', 'utf8'));
    return m ? Number(m[1]) * 1024 : undefined;
  } catch {
    return undefined;
  }
}

/** Runs `fn` and reports the RSS growth over a post-GC baseline: peak and at the end. */
async function measured<T>(label: string, fn: () => Promise<T>): Promise<{ value: T; growth: number }> {
  gc();
  const baseline = rss();
  const exact = resetPeak();
  let peak = baseline;
  const timer = setInterval(() => {
    peak = Math.max(peak, rss());
  }, 5);
  const started = Date.now();
  try {
    const value = await fn();
    peak = Math.max(peak, rss(), (exact && kernelPeak()) || 0);
    const growth = peak - baseline;
    console.log(
      `[validate-wide] ${label}: ${Date.now() - started} ms, RSS baseline ${(baseline / MB).toFixed(0)} MB, ` +
        `peak growth ${(growth / MB).toFixed(1)} MB (${exact ? 'VmHWM' : 'sampled'})`,
    );
    return { value, growth };
  } finally {
    clearInterval(timer);
  }
}

const run = (extra: Partial<Parameters<typeof validateTables>[0]> = {}): Promise<TableValidationResult[]> =>
  validateTables({ source: source.uri(), target: target.uri(), tables: [table], ...extra });

const strip = (r: TableValidationResult) =>
  r.mismatches.map((m) => ({ key: m.key, kind: m.kind, columns: m.columns, foundBy: m.foundBy })).sort((a, b) => Number(a.key.id) - Number(b.key.id));

describe('validating wide rows', () => {
  it('validates equal wide rows as equal, fetching digests, not values', async () => {
    // Every row sampled (the default sample of 1,000 covers the 502 rows), and the checksum.
    const { value: results, growth } = await measured('equal, sample + checksum', () => run());
    const [r] = results;
    expect({ ok: r!.ok, error: r!.error, mismatches: r!.mismatches }).toEqual({ ok: true, error: undefined, mismatches: [] });
    expect(r!.sampledRows).toBe(SMALL_ROWS + 2);
    expect(r!.sample).toBe('match');
    expect(r!.checksum).toBe('match');
    expect(growth).toBeLessThan(100 * MB);
  });

  it('finds one byte changed in the 100 MB bytea and one character in the 56 MB text, by key and column', async () => {
    await exec(
      target,
      `UPDATE public.wide SET blob = set_byte(blob, 77777777, (get_byte(blob, 77777777) + 1) % 256) WHERE id = 1;
       UPDATE public.wide SET doc = overlay(doc PLACING 'E' FROM 40000001 FOR 1) WHERE id = 2;`,
    );
    const expected = (foundBy: 'sample' | 'checksum') => [
      { key: { id: '1' }, kind: 'different', columns: ['blob'], foundBy },
      { key: { id: '2' }, kind: 'different', columns: ['doc'], foundBy },
    ];

    // The sample alone.
    const s = await measured('one byte differs, sample only', () => run({ checksum: false }));
    expect(s.value[0]!.sample).toBe('mismatch');
    expect(strip(s.value[0]!)).toEqual(expected('sample'));
    expect(s.growth).toBeLessThan(100 * MB);

    // The checksum alone: it bisects down to the rows, then names their columns by digest too.
    const c = await measured('one byte differs, checksum only', () => run({ sampleSize: 0 }));
    expect(c.value[0]!.checksum).toBe('mismatch');
    expect(strip(c.value[0]!)).toEqual(expected('checksum'));
    expect(c.growth).toBeLessThan(100 * MB);
  });

  it('compares text digests across servers with different encodings (UTF8 source, LATIN1 target)', async () => {
    const db = 'latin';
    await target.query(`CREATE DATABASE ${db} ENCODING 'LATIN1' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0`);
    await source.createDatabase(db);
    const fill = `CREATE TABLE public.names (id int PRIMARY KEY, name text, raw bytea);
      INSERT INTO public.names SELECT g, 'Zoë Müller-Sørensen ' || g, convert_to('é' || g, 'UTF8') FROM generate_series(1, 50) g;
      CREATE TABLE public.nokey (name text);
      INSERT INTO public.nokey SELECT 'Zoë ' || (g % 10) FROM generate_series(1, 30) g;`;
    await Promise.all([source.query(fill, undefined, db), target.query(fill, undefined, db)]);
    // The same characters, stored as different bytes: ë, ü and ø are 2 bytes each in UTF8, 1 in LATIN1.
    const [s] = await source.query<{ n: number }>(`SELECT octet_length(name) AS n FROM public.names WHERE id = 1`, [], db);
    const [t] = await target.query<{ n: number }>(`SELECT octet_length(name) AS n FROM public.names WHERE id = 1`, [], db);
    expect(s!.n).toBe(t!.n + 3); // ë, ü, ø
    const names = { schema: 'public', name: 'names' };
    const spec: ValidateTableSpec = { source: names, target: names, keyColumns: ['id'], copyColumns: ['id', 'name', 'raw'] };
    const nokey = { schema: 'public', name: 'nokey' };
    const noKeySpec: ValidateTableSpec = { source: nokey, target: nokey, keyColumns: [], copyColumns: ['name'] };
    const check = (checksum: boolean) =>
      validateTables({ source: source.uri(db), target: target.uri(db), tables: [spec, noKeySpec], sampleSize: checksum ? 0 : 100, checksum });
    const [equal, equalNoKey] = await check(false);
    expect({ ok: equal!.ok, sample: equal!.sample, sampled: equal!.sampledRows }).toEqual({ ok: true, sample: 'match', sampled: 50 });
    expect({ ok: equalNoKey!.ok, sample: equalNoKey!.sample }).toEqual({ ok: true, sample: 'match' });
    // The checksum hashes each row's text as UTF-8 on both sides: equal rows match, byte counts apart.
    const summed = await check(true);
    expect(summed.map((r) => [r.ok, r.checksum])).toEqual([
      [true, 'match'],
      [true, 'match'],
    ]);
    await target.query(`UPDATE public.names SET name = replace(name, 'ø', 'o') WHERE id = 7`, [], db);
    await target.query(`UPDATE public.nokey SET name = 'Zoe 3' WHERE ctid = (SELECT ctid FROM public.nokey WHERE name = 'Zoë 3' LIMIT 1)`, [], db);
    const [changed] = await check(false);
    expect(strip(changed!)).toEqual([{ key: { id: '7' }, kind: 'different', columns: ['name'], foundBy: 'sample' }]);
    const [byChecksum, noKeyByChecksum] = await check(true);
    expect(byChecksum!.checksum).toBe('mismatch');
    expect(strip(byChecksum!)).toEqual([{ key: { id: '7' }, kind: 'different', columns: ['name'], foundBy: 'checksum' }]);
    expect(noKeyByChecksum!.checksum).toBe('mismatch');
  });
});

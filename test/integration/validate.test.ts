/**
 * validateTables against real clusters (no Temporal): identical tables on both sides, the data copied
 * with COPY, then the target corrupted on purpose. Every corruption must be caught with the right key
 * and kind; a clean copy of many types, the same rows in another physical order, and a table without a
 * key must validate as equal.
 */
import { pipeline } from 'node:stream/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Client } from 'pg';
import { from as copyFrom, to as copyTo } from 'pg-copy-streams';
import { readTableDefs } from '../../activities/catalog';
import { connect } from '../../activities/db';
import { columnList, qname } from '../../activities/sql';
import type { QualifiedName } from '../../activities/spec';
import { validateTables, formatValidationFailure, type TableValidationResult } from '../../activities/validate';
import { ROW_MD5_KEY } from '../../activities/validate/compare';
import type { ValidateTableSpec } from '../../activities/validate/contract';
import { openSides } from '../../activities/validate/shared';
import { startCluster, type PgCluster } from '../harness/pg-cluster';

const DDL = `
CREATE SCHEMA "Mixed Case";
CREATE TYPE public.mood AS ENUM ('sad', 'ok', 'happy');
CREATE TYPE public.pair AS (x int, label text);
CREATE DOMAIN public.posint AS int CHECK (VALUE > 0);
CREATE TABLE public.many_types (
  id int PRIMARY KEY,
  t_text text, t_varchar varchar(20), t_char char(4), t_bool bool,
  t_int2 smallint, t_int8 bigint, t_num numeric(20,6), t_f4 real, t_f8 double precision,
  t_bytea bytea, t_date date, t_time time, t_timetz timetz, ts timestamp, t_tstz timestamptz, t_interval interval,
  t_uuid uuid, t_json json, t_jsonb jsonb, t_int_arr int[], t_text_arr text[], t_range int4range, t_tstzrange tstzrange,
  t_pair public.pair, t_mood public.mood, t_dom public.posint, t_inet inet, t_money money, t_point point,
  t_tsv tsvector, t_bits varbit,
  big text,
  gen int GENERATED ALWAYS AS (id * 2) STORED
);
CREATE TABLE "Mixed Case"."Order Items" ("Order No" text, line int, amount numeric(12,2), "Note" text, PRIMARY KEY ("Order No", line));
CREATE TABLE public.no_key (a int, b text, c float8);
CREATE TABLE public.empty_t (id uuid PRIMARY KEY, v text);
`;

const TARGET_COPIES = `
CREATE TABLE public.many_types_c (LIKE public.many_types INCLUDING ALL);
CREATE TABLE public.many_types_r (LIKE public.many_types INCLUDING ALL);
CREATE TABLE "Mixed Case"."Order Items_c" (LIKE "Mixed Case"."Order Items" INCLUDING ALL);
CREATE TABLE public.no_key_c (LIKE public.no_key INCLUDING ALL);
`;

const ROWS = 3000;

const FILL = `
INSERT INTO public.many_types (id, t_text, t_varchar, t_char, t_bool, t_int2, t_int8, t_num, t_f4, t_f8, t_bytea, t_date, t_time,
  t_timetz, ts, t_tstz, t_interval, t_uuid, t_json, t_jsonb, t_int_arr, t_text_arr, t_range, t_tstzrange, t_pair, t_mood, t_dom,
  t_inet, t_money, t_point, t_tsv, t_bits, big)
SELECT g,
  CASE g % 10 WHEN 0 THEN NULL WHEN 1 THEN '' ELSE 'row ' || g || E' "q" \\\\ , ( ) \\n tab\\t' END,
  'v' || g, 'c' || (g % 100), g % 2 = 0,
  (g % 30000)::smallint, g::bigint * 1000003, (g / 7.0)::numeric(20,6),
  CASE g % 7 WHEN 0 THEN 'NaN'::real WHEN 1 THEN 'Infinity'::real WHEN 2 THEN '-0'::real WHEN 3 THEN '-Infinity'::real ELSE (g / 3.0)::real END,
  CASE g % 5 WHEN 0 THEN 'NaN'::float8 WHEN 1 THEN '-Infinity'::float8 WHEN 2 THEN 1.7976931348623157e308::float8 / (1 + g % 3) ELSE g * 1.1 / 7 END,
  CASE WHEN g % 9 = 0 THEN NULL ELSE decode(md5(g::text), 'hex') END,
  date '2024-01-01' + g, time '10:00' + g * interval '1.000001 second', timetz '10:00:00.5+02:30',
  timestamp '2024-01-01' + g * interval '1.000001 second', timestamptz '2024-01-01 00:00+00' + g * interval '0.000123 second',
  g * interval '1 minute 0.5 second',
  md5(g::text)::uuid, ('{"a": ' || g || ',   "b" : [1, 2 ]}')::json, jsonb_build_object('k', g, 'n', null, 's', 'x"y'),
  ARRAY[g, NULL, -g], ARRAY['a"b', NULL, 'c,d', '', 'NULL'], int4range(g, g + 10, '[]'),
  tstzrange(timestamptz '2024-01-01 00:00+00' + g * interval '1 hour', NULL),
  ROW(g, 'lbl (' || g || ')')::public.pair, (ARRAY['sad','ok','happy'])[g % 3 + 1]::public.mood, g,
  ('10.0.' || (g % 256) || '.1/24')::inet, (g * 1.25)::money, point(g, -g / 3.0),
  to_tsvector('simple', 'word' || g || ' other'), (g % 256)::bit(8)::varbit,
  CASE WHEN g % 50 = 4 THEN (SELECT string_agg(md5(random()::text || i || g), '') FROM generate_series(1, 200) i) END
FROM generate_series(1, ${ROWS}) g;
INSERT INTO "Mixed Case"."Order Items"
SELECT 'ORD-' || (g / 5), g % 5, g * 1.5, CASE WHEN g % 3 = 0 THEN NULL ELSE 'note ' || g END FROM generate_series(0, 1999) g;
INSERT INTO public.no_key SELECT g % 300, 'v' || (g % 300), CASE WHEN g % 300 = 7 THEN 'NaN'::float8 ELSE g % 300 END FROM generate_series(1, 600) g;
`;

let source: PgCluster;
let target: PgCluster;
const specs = new Map<string, ValidateTableSpec>();

const q = (schema: string, name: string): QualifiedName => ({ schema, name });

/** source table -> target table with COPY (text), like the migration's copy; optionally in random order. */
async function copy(from: QualifiedName, to: QualifiedName, columns: string[], shuffled = false): Promise<void> {
  const src = await connect(source.uri());
  const dst = await connect(target.uri());
  try {
    const select = shuffled ? `(SELECT ${columnList(columns)} FROM ${qname(from)} ORDER BY random())` : `${qname(from)} (${columnList(columns)})`;
    await pipeline(src.query(copyTo(`COPY ${select} TO STDOUT`)), dst.query(copyFrom(`COPY ${qname(to)} (${columnList(columns)}) FROM STDIN`)));
  } finally {
    await Promise.all([src.end(), dst.end()]);
  }
}

function tableSpec(src: QualifiedName, dst: QualifiedName): ValidateTableSpec {
  const s = specs.get(`${src.schema}.${src.name}`)!;
  return { ...s, source: src, target: dst };
}

async function run(tables: ValidateTableSpec[], extra: Partial<Parameters<typeof validateTables>[0]> = {}): Promise<TableValidationResult[]> {
  return validateTables({ source: source.uri(), target: target.uri(), tables, chunkRows: 500, leafRows: 40, fanout: 4, ...extra });
}

async function sql(c: PgCluster, text: string): Promise<void> {
  const cl = await c.client();
  try {
    await cl.query(text);
  } finally {
    await cl.end();
  }
}

/** md5 of a row's text with the validation's session settings (what a keyless mismatch is keyed by). */
async function rowMd5(c: PgCluster, table: string, columns: string[], where: string): Promise<string[]> {
  const cl: Client = await connect(c.uri());
  try {
    const r = await cl.query<{ h: string }>(`SELECT md5(ROW(${columns.map((x) => `t.${x}`).join(', ')})::text) AS h FROM ${table} t WHERE ${where}`);
    return r.rows.map((x) => x.h);
  } finally {
    await cl.end();
  }
}

beforeAll(async () => {
  [source, target] = await Promise.all([startCluster({ name: 'val-src' }), startCluster({ name: 'val-tgt' })]);
  await Promise.all([sql(source, DDL), sql(target, DDL + TARGET_COPIES)]);
  await sql(source, FILL);
  const cl = await source.client();
  try {
    const names = [q('public', 'many_types'), q('Mixed Case', 'Order Items'), q('public', 'no_key')];
    const defs = await readTableDefs(cl, names.map((n) => ({ source: n, target: n })), { schemaMapping: {}, tableSuffix: '' });
    for (const d of defs) specs.set(`${d.source.schema}.${d.source.name}`, { source: d.source, target: d.target, keyColumns: d.keyColumns, copyColumns: d.copyColumns });
  } finally {
    await cl.end();
  }
  const mt = specs.get('public.many_types')!;
  const oi = specs.get('Mixed Case.Order Items')!;
  const nk = specs.get('public.no_key')!;
  expect(mt.keyColumns).toEqual(['id']);
  expect(mt.copyColumns).not.toContain('gen');
  expect(nk.keyColumns).toEqual([]);
  await copy(mt.source, mt.target, mt.copyColumns);
  await copy(mt.source, q('public', 'many_types_c'), mt.copyColumns);
  await copy(mt.source, q('public', 'many_types_r'), mt.copyColumns, true);
  await copy(oi.source, oi.target, oi.copyColumns);
  await copy(oi.source, q('Mixed Case', 'Order Items_c'), oi.copyColumns, true);
  await copy(nk.source, nk.target, nk.copyColumns, true);
  await copy(nk.source, q('public', 'no_key_c'), nk.copyColumns);
  // Rows 404, 454, ... carry an incompressible text of 6,400 bytes: stored out of line.
  const toasted = await target.query<{ n: string }>(
    `SELECT count(*)::text AS n FROM public.many_types_c WHERE id = 404 AND pg_column_size(big) > 2000 AND big IS NOT NULL`,
  );
  expect(toasted[0]!.n).toBe('1');
});

afterAll(async () => {
  await Promise.all([source?.destroy(), target?.destroy()]);
});

describe('validateTables', () => {
  it('validates a clean copy of many types, composite keys and a table without a key as equal', async () => {
    const tables = [
      tableSpec(q('public', 'many_types'), q('public', 'many_types')),
      tableSpec(q('Mixed Case', 'Order Items'), q('Mixed Case', 'Order Items')),
      tableSpec(q('public', 'no_key'), q('public', 'no_key')),
      { source: q('public', 'empty_t'), target: q('public', 'empty_t'), keyColumns: ['id'], copyColumns: ['id', 'v'] },
    ];
    const results = await run(tables, { sampleSize: 200 });
    for (const r of results) {
      expect({ table: r.source, ok: r.ok, error: r.error, mismatches: r.mismatches }).toEqual({ table: r.source, ok: true, error: undefined, mismatches: [] });
      expect(r.sample).toBe('match');
      expect(r.checksum).toBe('match');
    }
    expect(results.map((r) => [r.source, r.sourceRows, r.targetRows, r.chunks])).toEqual([
      ['public.many_types', ROWS, ROWS, 6],
      ['Mixed Case.Order Items', 2000, 2000, 4],
      ['public.no_key', 600, 600, 1],
      ['public.empty_t', 0, 0, 1],
    ]);
    expect(results[0]!.sampledRows).toBe(200);
    expect(results[0]!.rowHash).toBe('hashtext');
    // The md5 row hash (used when the servers disagree on hashtext) gives the same verdicts.
    const md5 = await run(tables, { sampleSize: 0, rowHash: 'md5' });
    expect(md5.map((r) => [r.ok, r.rowHash, r.sample])).toEqual([
      [true, 'md5', 'not-run'],
      [true, 'md5', 'not-run'],
      [true, 'md5', 'not-run'],
      [true, 'md5', 'not-run'],
    ]);
  });

  it('validates the same rows in a different physical order as equal', async () => {
    const [r] = await run([tableSpec(q('public', 'many_types'), q('public', 'many_types_r'))]);
    // Really in another order: the first rows by ctid are not ids 1, 2, 3.
    const first = await target.query<{ id: number }>(`SELECT id FROM public.many_types_r ORDER BY ctid LIMIT 3`);
    expect(first.map((x) => x.id)).not.toEqual([1, 2, 3]);
    expect(r!.ok).toBe(true);
    expect(r!.checksum).toBe('match');
  });

  it('catches a changed value, a deleted row, an added row, a timestamp off by 1 µs and a nulled TOAST value, by key', async () => {
    const rest = specs.get('public.many_types')!.copyColumns.filter((c) => c !== 'id');
    await sql(
      target,
      `UPDATE public.many_types_c SET t_num = t_num + 0.000001 WHERE id = 101;
       DELETE FROM public.many_types_c WHERE id = 202;
       INSERT INTO public.many_types_c (id, ${columnList(rest)}) SELECT 5000, ${columnList(rest)} FROM public.many_types_c WHERE id = 5;
       UPDATE public.many_types_c SET ts = ts + interval '1 microsecond' WHERE id = 303;
       UPDATE public.many_types_c SET big = NULL WHERE id = 404;`,
    );
    const t = tableSpec(q('public', 'many_types'), q('public', 'many_types_c'));
    const expected = [
      { key: { id: '101' }, kind: 'different', columns: ['t_num'] },
      { key: { id: '202' }, kind: 'missing-on-target' },
      { key: { id: '303' }, kind: 'different', columns: ['ts'] },
      { key: { id: '404' }, kind: 'different', columns: ['big'] },
      { key: { id: '5000' }, kind: 'extra-on-target' },
    ];
    const strip = (r: TableValidationResult) =>
      r.mismatches.map((m) => ({ key: m.key, kind: m.kind, ...(m.columns ? { columns: m.columns } : {}) })).sort((a, b) => Number(a.key.id) - Number(b.key.id));

    // The checksum alone finds all five, bisecting its chunks down to the rows.
    const [c] = await run([t], { sampleSize: 0 });
    expect(c!.ok).toBe(false);
    expect(c!.countsMatch).toBe(true); // one deleted, one added: counts alone would miss both
    expect(c!.checksum).toBe('mismatch');
    expect(strip(c!)).toEqual(expected);
    expect(c!.mismatches.every((m) => m.foundBy === 'checksum' && m.chunk !== undefined)).toBe(true);
    // Chunks of 500 rows by key, boundaries read from the source.
    expect(c!.mismatchedChunks).toEqual(['1/6 [-∞ .. 501)', '6/6 [2501 .. +∞)']);
    expect(c!.mismatches.find((m) => m.key.id === '5000')!.chunk).toBe('6/6 [2501 .. +∞)');

    // A sample covering every row finds the four changes it can see (a sample is drawn from the source,
    // so an extra target row is only visible to the checksum).
    const [s] = await run([t], { sampleSize: 10_000, checksum: false });
    expect(s!.sample).toBe('mismatch');
    expect(s!.checksum).toBe('not-run');
    expect(strip(s!)).toEqual(expected.filter((e) => e.kind !== 'extra-on-target'));

    // md5 row hashes and a small cap: the first three, and a flag that there are more.
    const [m] = await run([t], { sampleSize: 0, rowHash: 'md5', maxMismatches: 3 });
    expect(m!.mismatches).toHaveLength(3);
    expect(m!.mismatchesTruncated).toBe(true);
    expect(formatValidationFailure([m!])).toMatch(/^public\.many_types -> public\.many_types_c: checksum differs in \d chunk\(s\); id=\d+: /);
  });

  it('reports a composite key column by column', async () => {
    await sql(target, `UPDATE "Mixed Case"."Order Items_c" SET "Note" = 'changed' WHERE "Order No" = 'ORD-17' AND line = 2`);
    const [r] = await run([tableSpec(q('Mixed Case', 'Order Items'), q('Mixed Case', 'Order Items_c'))], { sampleSize: 0 });
    expect(r!.mismatches).toEqual([{ key: { 'Order No': 'ORD-17', line: '2' }, kind: 'different', columns: ['Note'], foundBy: 'checksum', chunk: expect.any(String) }]);
    expect(formatValidationFailure([r!])).toContain('"Order No"=ORD-17, line=2: different (Note)');
    // A sample no smaller than the table (2,000 rows) reads every row of both sides at once, and
    // finds the same row by its composite key; a smaller one draws keys from the source first.
    for (const sampleSize of [10_000, 1_999]) {
      const [w] = await run([tableSpec(q('Mixed Case', 'Order Items'), q('Mixed Case', 'Order Items_c'))], { sampleSize, checksum: false });
      expect(w!.sampledRows).toBe(Math.min(sampleSize, 2000));
      if (sampleSize > 2000) expect(w!.mismatches).toEqual([{ key: { 'Order No': 'ORD-17', line: '2' }, kind: 'different', columns: ['Note'], foundBy: 'sample' }]);
    }
  });

  it('compares a table without a key as a multiset of rows', async () => {
    const nk = specs.get('public.no_key')!;
    // Delete one of the two copies of a = 7, add a row the source never had.
    await sql(target, `DELETE FROM public.no_key_c WHERE ctid = (SELECT min(ctid) FROM public.no_key_c WHERE a = 7); INSERT INTO public.no_key_c VALUES (999, 'new', 1.5)`);
    const [missing] = await rowMd5(source, 'public.no_key', nk.copyColumns, 'a = 7 LIMIT 1');
    const [extra] = await rowMd5(target, 'public.no_key_c', nk.copyColumns, 'a = 999');
    const [r] = await run([tableSpec(q('public', 'no_key'), q('public', 'no_key_c'))], { sampleSize: 1000 });
    expect(r!.countsMatch).toBe(true);
    expect(r!.checksum).toBe('mismatch');
    expect(r!.sample).toBe('mismatch'); // every source row sampled: one of them is there once, not twice
    const found = r!.mismatches.map((m) => ({ key: m.key, kind: m.kind })).sort((a, b) => a.kind.localeCompare(b.kind));
    expect(found).toEqual([
      { key: { [ROW_MD5_KEY]: extra }, kind: 'extra-on-target' },
      { key: { [ROW_MD5_KEY]: missing }, kind: 'missing-on-target' },
    ]);
  });

  it('hashes a table of typed columns by their own hashes and still tells every change apart, down to the row', async () => {
    const ddl = `CREATE TABLE public.typed (id bigint PRIMARY KEY, a int, b smallint, c text, d varchar(10), e char(4), f uuid, g oid, h bigint)`;
    await Promise.all([sql(source, ddl), sql(target, ddl)]);
    await sql(
      source,
      `INSERT INTO public.typed SELECT n, n % 1000, (n * 7 % 1000)::smallint, CASE WHEN n % 11 = 0 THEN NULL ELSE 'c' || n END,
         CASE WHEN n % 13 = 0 THEN NULL ELSE 'Dd' || (n % 97) END, CASE WHEN n % 17 = 0 THEN NULL ELSE 'e' || (n % 50) END,
         md5(n::text)::uuid, n::oid, CASE n WHEN 1500 THEN 4294967295 ELSE n::bigint * 1000003 END FROM generate_series(1, 2000) n`,
    );
    const t: ValidateTableSpec = { source: q('public', 'typed'), target: q('public', 'typed'), keyColumns: ['id'], copyColumns: ['id', 'a', 'b', 'c', 'd', 'e', 'f', 'g', 'h'] };
    await copy(t.source, t.target, t.copyColumns, true);
    // Both sides agree on the typed form (the row's text is not built).
    const [s, d] = await Promise.all([connect(source.uri()), connect(target.uri())]);
    try {
      const [a, b] = await openSides(s, d, t, 'hashtext', false);
      expect(a.shape.typedHash).toEqual(['bigint', 'integer', 'smallint', 'text', 'character varying(10)', 'character(4)', 'uuid', 'oid', 'bigint']);
      expect(b.shape.typedHash).toEqual(a.shape.typedHash);
    } finally {
      await Promise.all([s.end(), d.end()]);
    }
    const [clean] = await run([t], { sampleSize: 0 });
    expect([clean!.ok, clean!.checksum, clean!.rowHash]).toEqual([true, 'match', 'hashtext']);
    // One change per row, each of a kind the typed hashes must not miss.
    await sql(
      target,
      `UPDATE public.typed SET a = a + 1 WHERE id = 10;
       UPDATE public.typed SET c = c || ' ' WHERE id = 100;                     -- a trailing blank
       UPDATE public.typed SET a = b, b = a WHERE id = 300;                     -- two values swapped between columns
       UPDATE public.typed SET c = '' WHERE id = 440;                           -- NULL -> empty
       UPDATE public.typed SET d = lower(d) WHERE id = 500;                     -- case
       UPDATE public.typed SET e = 'e9' WHERE id = 600;                        -- char(4): 'e0  ' -> 'e9  '
       UPDATE public.typed SET f = md5('x')::uuid WHERE id = 700;
       UPDATE public.typed SET g = 0 WHERE id = 800;
       UPDATE public.typed SET a = NULL WHERE id = 900;                        -- value -> NULL
       UPDATE public.typed x SET c = y.c FROM public.typed y WHERE (x.id, y.id) IN ((1200, 1201), (1201, 1200)); -- swapped between rows
       UPDATE public.typed SET h = -1 WHERE id = 1500;                          -- 4294967295 -> -1: hashint8extended alone hashes both alike`,
    );
    // Chunks of 40 rows: each change alone in its chunk, so the chunk's typed checksum alone must see it.
    const [r] = await run([t], { sampleSize: 0, chunkRows: 40, leafRows: 10 });
    expect(r!.checksum).toBe('mismatch');
    expect(r!.chunks).toBe(50);
    expect(r!.mismatches.map((m) => [m.key.id, m.kind, m.columns]).sort((x, y) => Number(x[0]) - Number(y[0]))).toEqual([
      ['10', 'different', ['a']],
      ['100', 'different', ['c']],
      ['300', 'different', ['a', 'b']],
      ['440', 'different', ['c']],
      ['500', 'different', ['d']],
      ['600', 'different', ['e']],
      ['700', 'different', ['f']],
      ['800', 'different', ['g']],
      ['900', 'different', ['a']],
      ['1200', 'different', ['c']],
      ['1201', 'different', ['c']],
      ['1500', 'different', ['h']],
    ]);
  });

  it('reports a table missing on the target without failing the others', async () => {
    const results = await run([
      tableSpec(q('public', 'many_types'), q('public', 'nowhere')),
      tableSpec(q('public', 'many_types'), q('public', 'many_types')),
    ]);
    expect(results[0]!.ok).toBe(false);
    expect(results[0]!.error).toBe('table public.nowhere does not exist on the target');
    expect(results[1]!.ok).toBe(true);
  });
});

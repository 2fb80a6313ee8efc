/**
 * validation.repair and `dts verify --repair`: rows planted on the target (missing, extra, changed,
 * TOASTed values, NULLs, a table without a key, a partitioned table) are rewritten from the source and
 * the tables compared equal by the harness; a limit exceeded or a table pg-dts did not create changes
 * nothing; through the migration workflow, rows corrupted during SYNCING_WAL under the workload are
 * repaired in the fenced window, including those the live proof found before the cutover.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startEnv, type TestEnv } from '../harness/env';
import { fingerprint, type TableFingerprint } from '../harness/compare';
import { SHOP_TABLES, startWriter } from '../harness/fixtures';
import { validateAndRepair } from '../../activities/validate';
import type { ValidateTableSpec } from '../../activities/validate/contract';
import { dts } from '../harness/dts';

let env: TestEnv;

beforeAll(async () => {
  env = await startEnv();
});

afterAll(async () => {
  await env?.stop();
});

const DDL = `
CREATE TABLE public.items (
  id int PRIMARY KEY, n int, note text, body text,
  doubled int GENERATED ALWAYS AS (n * 2) STORED,
  serial_no int GENERATED ALWAYS AS IDENTITY
);
ALTER TABLE public.items ALTER body SET STORAGE EXTERNAL;
CREATE TABLE public.pairs (a int, b text, v numeric, PRIMARY KEY (a, b));
CREATE TABLE public.bag (a int, b text);
CREATE TABLE public.parts (id int PRIMARY KEY, v text) PARTITION BY RANGE (id);
CREATE TABLE public.parts_1 PARTITION OF public.parts FOR VALUES FROM (MINVALUE) TO (1000);
CREATE TABLE public.parts_2 PARTITION OF public.parts FOR VALUES FROM (1000) TO (MAXVALUE);
`;
const FILL = `
INSERT INTO public.items (id, n, note, body)
  SELECT g, g, CASE WHEN g % 7 = 0 THEN NULL ELSE 'n' || g END,
         CASE WHEN g % 100 = 0 THEN (SELECT string_agg(md5(g::text || x::text), '') FROM generate_series(1, 300) x) ELSE 'b' || g END
    FROM generate_series(1, 5000) g;
INSERT INTO public.pairs SELECT g / 3, chr(97 + g % 3), g * 0.5 FROM generate_series(0, 899) g;
INSERT INTO public.bag SELECT g % 50, 'x' || (g % 7) FROM generate_series(1, 300) g;
INSERT INTO public.parts SELECT g, 'p' || g FROM generate_series(1, 1999) g;
`;
/** On the target: a trigger that would rewrite every row it saw (the repair must not fire it), and pg-dts's marks. */
const TARGET_EXTRA = (mark: string) => `
CREATE FUNCTION public.touch() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN NEW.note := 'trigger fired'; RETURN NEW; END $$;
CREATE TRIGGER touch BEFORE INSERT OR UPDATE ON public.items FOR EACH ROW EXECUTE FUNCTION public.touch();
${['items', 'pairs', 'bag', 'parts', 'parts_1', 'parts_2'].map((t) => `COMMENT ON TABLE public.${t} IS 'pg-dts migration ${mark}';`).join('\n')}
`;
/** Missing, extra and changed rows: NULLs both ways, TOASTed values changed and missing, a keyless table, a partition. */
const CORRUPT = `
DELETE FROM public.items WHERE id IN (1500, 3000);
UPDATE public.items SET note = NULL WHERE id = 2500;
UPDATE public.items SET note = 'was null' WHERE id = 2800;
UPDATE public.items SET body = body || 'x' WHERE id = 4500;
INSERT INTO public.items (id, n, note, body) VALUES (6001, 1, 'extra', 'extra');
UPDATE public.pairs SET v = v + 1 WHERE (a, b) = (3, 'b');
DELETE FROM public.pairs WHERE (a, b) = (5, 'a');
DELETE FROM public.bag WHERE ctid = (SELECT min(ctid) FROM public.bag WHERE a = 7);
INSERT INTO public.bag VALUES (99, 'planted');
UPDATE public.parts SET v = NULL WHERE id = 1500;
`;

const T = (name: string, keyColumns: string[], copyColumns: string[]): ValidateTableSpec => ({
  source: { schema: 'public', name },
  target: { schema: 'public', name },
  keyColumns,
  copyColumns,
});
const TABLES = [T('items', ['id'], ['id', 'n', 'note', 'body', 'serial_no']), T('pairs', ['a', 'b'], ['a', 'b', 'v']), T('bag', [], ['a', 'b']), T('parts', ['id'], ['id', 'v'])];

async function fingerprints(side: 'source' | 'target', db: string): Promise<Record<string, TableFingerprint>> {
  const c = side === 'source' ? env.source : env.target;
  const out: Record<string, TableFingerprint> = {};
  for (const t of ['items', 'pairs', 'bag', 'parts']) out[t] = await fingerprint(c, db, 'public', t);
  return out;
}

async function twoDatabases(db: string, mark: string): Promise<{ source: string; target: string }> {
  await env.source.createDatabase(db);
  await env.target.createDatabase(db);
  await env.source.query(DDL + FILL, [], db);
  await env.target.query(DDL + FILL + TARGET_EXTRA(mark), [], db);
  return { source: env.source.uri(db), target: env.target.uri(db) };
}

describe('repair, activity by activity', () => {
  it('refuses over the row limit and on a table pg-dts did not create, changing nothing; within it, repairs every kind of difference', async () => {
    const db = 'repair_units';
    const sides = await twoDatabases(db, 'm1');
    await env.target.query(CORRUPT, [], db);
    const input = { ...sides, tables: TABLES, chunkRows: 1000, leafRows: 50, fanout: 4 };
    const corrupted = await fingerprints('target', db);
    expect(corrupted).not.toEqual(await fingerprints('source', db));

    // 9 keyed rows + the keyless bag replaced whole (300 rows) > 100.
    const over = await validateAndRepair(input, { maxRows: 100, migrationId: 'm1', limitName: 'validation.repairMaxRows' });
    expect(over.repair.tables).toBe(0);
    expect(over.repair.refused).toContain('nothing was repaired');
    expect(over.repair.refused).toContain('309 rows would be rewritten (public.items: 6, public.pairs: 2, public.bag: 300 (no key: its whole chunk), public.parts: 1), more than validation.repairMaxRows (100)');
    expect(over.results.every((r) => !r.ok && !r.repair)).toBe(true);
    expect(await fingerprints('target', db)).toEqual(corrupted);

    // Another migration's mark: not ours to write.
    const foreign = await validateAndRepair(input, { maxRows: 1000, migrationId: 'm2' });
    expect(foreign.repair.refused).toMatch(/pg-dts writes only into tables it created, and public\.items, public\.pairs, public\.bag, public\.parts, public\.parts_1, public\.parts_2 do not carry the mark of migration m2/);
    expect(await fingerprints('target', db)).toEqual(corrupted);

    const started = Date.now();
    const done = await validateAndRepair(input, { maxRows: 1000, migrationId: 'm1' });
    console.log(`repair of 9 keyed rows and a 300-row keyless chunk: ${Date.now() - started} ms (compare, repair, re-check)`);
    expect(done.repair).toEqual({ tables: 4, rows: 309 });
    const [items, pairs, bag, parts] = done.results;
    expect(done.results.map((r) => [r.source, r.ok, r.checksum, r.countsMatch])).toEqual([
      ['public.items', true, 'match', true],
      ['public.pairs', true, 'match', true],
      ['public.bag', true, 'match', true],
      ['public.parts', true, 'match', true],
    ]);
    expect(items!.repair).toMatchObject({ rows: 6, missing: 2, extra: 1, different: 3, deleted: 4, inserted: 5, keysTruncated: false });
    expect(items!.repair!.keys).toEqual([
      { key: { id: '1500' }, kind: 'missing-on-target' },
      { key: { id: '2500' }, kind: 'different' },
      { key: { id: '2800' }, kind: 'different' },
      { key: { id: '3000' }, kind: 'missing-on-target' },
      { key: { id: '4500' }, kind: 'different' },
      { key: { id: '6001' }, kind: 'extra-on-target' },
    ]);
    // The repaired chunks, compared again: the same count and checksum on both sides.
    expect(items!.repair!.chunks.map((c) => c.chunk)).toEqual(['2/5 [1001 .. 2001)', '3/5 [2001 .. 3001)', '5/5 [4001 .. +∞)']);
    for (const c of done.results.flatMap((r) => r.repair!.chunks)) expect(c.match && c.source === c.target && /^\d+:-?\d+$/.test(c.target)).toBe(true);
    expect(pairs!.repair).toMatchObject({ rows: 2, missing: 1, different: 1, keys: [{ key: { a: '3', b: 'b' }, kind: 'different' }, { key: { a: '5', b: 'a' }, kind: 'missing-on-target' }] });
    expect(bag!.repair).toMatchObject({ wholeChunk: true, rows: 300, deleted: 300, inserted: 300, missing: 1, extra: 1, chunks: [{ chunk: 'whole table', match: true }] });
    expect(parts!.repair).toMatchObject({ rows: 1, different: 1, keys: [{ key: { id: '1500' }, kind: 'different' }] });

    // The harness's own comparison: every column, generated and identity ones included; no trigger fired.
    expect(await fingerprints('target', db)).toEqual(await fingerprints('source', db));
    const [fired] = await env.target.query<{ n: number }>(`SELECT count(*)::int AS n FROM public.items WHERE note = 'trigger fired'`, [], db);
    expect(fired!.n).toBe(0);

    // Nothing left to repair.
    const again = await validateAndRepair(input, { maxRows: 1000, migrationId: 'm1' });
    expect(again.repair).toEqual({ tables: 0, rows: 0 });
    expect(again.results.every((r) => r.ok && !r.repair)).toBe(true);
  });
});

const verify = (...args: string[]) => dts('verify', ...args);

describe('dts verify --repair', () => {
  it('repairs the differing rows of tables a migration created, lists them by key, and refuses over --repair-max-rows', async () => {
    const db = 'repair_cli';
    const sides = await twoDatabases(db, 'earlier-migration');
    await env.target.query(CORRUPT, [], db);
    const corrupted = await fingerprints('target', db);
    const base = ['--source', sides.source, '--target', sides.target, '--chunk-rows', '1000'];

    const bad = await verify(...base, '--repair', '--no-checksum');
    expect(bad.code).toBe(2);
    expect(bad.err).toContain('--repair needs the checksum');

    const over = await verify(...base, '--repair', '--repair-max-rows', '50');
    expect(over.code).toBe(1);
    expect(over.out).toContain('repair: nothing was repaired:');
    expect(over.out).toContain('more than --repair-max-rows (50)');
    expect(await fingerprints('target', db)).toEqual(corrupted);

    // A table without any pg-dts migration's mark is not ours to write.
    await env.target.query(`COMMENT ON TABLE public.pairs IS NULL`, [], db);
    const unmarked = await verify(...base, '--repair');
    expect(unmarked.code).toBe(1);
    expect(unmarked.out).toContain('repair: nothing was repaired: pg-dts writes only into tables it created, and public.pairs does not carry the mark of a pg-dts migration');
    expect(await fingerprints('target', db)).toEqual(corrupted);
    await env.target.query(`COMMENT ON TABLE public.pairs IS 'pg-dts migration earlier-migration'`, [], db);

    const fixed = await verify(...base, '--repair');
    expect(fixed.err).toBe('');
    expect(fixed.code).toBe(0);
    expect(fixed.out).toMatch(/^public\.items\s+public\.items\s+5000\s+5000\s+equal\s+.*identical$/m);
    expect(fixed.out).toContain('repaired: public.items -> public.items: 6 rows repaired (2 missing, 1 extra, 3 different); 3 chunks equal again');
    expect(fixed.out).toContain('  id=6001: extra-on-target');
    expect(fixed.out).toContain('repaired: public.bag -> public.bag: its whole chunk replaced (300 rows deleted, 300 copied); 1 chunk equal again');
    expect(fixed.out).toContain('4 tables compared: 4 identical, 0 different');
    expect(await fingerprints('target', db)).toEqual(await fingerprints('source', db));

    const clean = await verify(...base, '--repair');
    expect(clean.code).toBe(0);
    expect(clean.out).not.toContain('repaired:');
  });
});

describe('validation.repair through the migration workflow', () => {
  it('rows corrupted on the target during SYNCING_WAL under the workload are repaired in the fenced window, also those the live proof found first', async () => {
    const db = 'repair_shop';
    await env.shopDatabase(db, 0.2);
    // A table the writer never touches: there the live proof confirms a divergence before the cutover.
    const QUIET = `CREATE TABLE public.quiet (id int PRIMARY KEY, v text); INSERT INTO public.quiet SELECT g, 'q' || g FROM generate_series(1, 500) g;`;
    await env.source.query(QUIET, [], db);
    const writer = startWriter(() => env.source.client(db), { pauseMs: 20 });
    const m = await env.startMigration({ source: env.source.uri(db), target: env.target.uri(db), cutover: { mode: 'manual' }, validation: { repair: true } });
    await m.waitForPhase('SYNCING_WAL');
    for (let i = 0; i < 300 && (await m.status()).proof?.state !== 'ready'; i++) await new Promise((r) => setTimeout(r, 200));
    // Rows the writer never touches (it changes the lowest keys, the newest rows and scratch); audit_log
    // has no key (its whole chunk is replaced); documents 150 holds a TOASTed body.
    await env.target.query(
      `UPDATE public.customers SET name = NULL WHERE id = 77;
       DELETE FROM public.kv WHERE k = 'key99';
       INSERT INTO public.orders (id, customer_id, total, placed_at) VALUES (9999999, 1, 1, '2024-01-01');
       UPDATE public.documents SET body = body || '!' WHERE id = 150;
       INSERT INTO public.audit_log VALUES ('planted', 'x', '2024-01-01');
       UPDATE public.quiet SET v = 'changed on the target' WHERE id = 42;
       DELETE FROM public.quiet WHERE id = 43;`,
      [],
      db,
    );
    // With repair on, the proof's divergence does not fail the migration: it waits for the cutover.
    let s = await m.status();
    for (let i = 0; i < 300 && s.proof?.state !== 'diverged'; i++) {
      await new Promise((r) => setTimeout(r, 200));
      s = await m.status();
    }
    expect(s.phase).toBe('SYNCING_WAL');
    expect(s.proof?.state).toBe('diverged');
    expect(s.notices.join('\n')).toMatch(/the content proof found rows that differ on the target during SYNCING_WAL; validation\.repair rewrites them[\s\S]*id=42: different \(v\)/);
    await m.signal('cutover');
    const report = await m.result();
    const stats = await writer.stop();
    expect(stats.errors).toEqual([]);
    expect(report.phase).toBe('COMPLETED');
    console.log(`repair at cutover: ${report.repair?.rows} rows in ${report.repair?.tables} tables; VALIDATING ${report.proof?.validatingMs} ms, cutover window ${report.cutoverWindowMs} ms`);
    const byTable = new Map(report.tables.map((t) => [t.source, t]));
    const keys = (t: string) => byTable.get(t)?.repair?.keys.map((k) => `${Object.values(k.key).join(',')}:${k.kind}`);
    expect(keys('public.customers')).toEqual(['77:different']);
    expect(keys('public.kv')).toEqual(['key99:missing-on-target']);
    expect(keys('public.orders')).toEqual(['9999999:extra-on-target']);
    expect(keys('public.documents')).toEqual(['150:different']);
    expect(keys('public.quiet')).toEqual(['42:different', '43:missing-on-target']);
    expect(byTable.get('public.audit_log')?.repair).toMatchObject({ wholeChunk: true, extra: 1 });
    for (const t of report.tables) {
      expect({ t: t.source, checksum: t.checksum, counts: t.countsMatch }).toEqual({ t: t.source, checksum: 'match', counts: true });
      for (const c of t.repair?.chunks ?? []) expect(c.match).toBe(true);
    }
    expect(report.repair?.tables).toBe(6);
    expect(report.notices.join('\n')).toContain('validation.repair rewrote');
    // The default schemas: public only.
    for (const [schema, table] of [...SHOP_TABLES.filter(([sc]) => sc === 'public'), ['public', 'quiet'] as const]) {
      const a = await fingerprint(env.source, db, schema, table);
      const b = await fingerprint(env.target, db, schema, table);
      expect({ table, ...b }).toEqual({ table, ...a });
    }
  });

  it('over validation.repairMaxRows the migration fails at VALIDATING with a clear message, the target unchanged and the source released', async () => {
    const db = 'repair_limit';
    await env.shopDatabase(db, 0.05);
    const m = await env.startMigration({ source: env.source.uri(db), target: env.target.uri(db), cutover: { mode: 'manual' }, validation: { repair: true, repairMaxRows: 2 } });
    await m.waitForPhase('SYNCING_WAL');
    for (let i = 0; i < 300 && (await m.status()).proof?.state !== 'ready'; i++) await new Promise((r) => setTimeout(r, 200));
    await env.target.query(`UPDATE public.customers SET name = 'a' WHERE id IN (5, 6, 7)`, [], db);
    await m.signal('cutover');
    const err = (await m.result().catch((e: unknown) => e)) as { cause?: { message?: string } };
    const message = String(err.cause?.message);
    expect(message).toContain('validation.repair: nothing was repaired:');
    expect(message).toContain('3 rows would be rewritten (public.customers: 3), more than validation.repairMaxRows (2)');
    expect(message).toMatch(/public\.customers -> public\.customers: .*id=5: different \(name\)/);
    expect((await m.status()).phase).toBe('FAILED');
    // A failed migration keeps its target tables: the three rows are still as planted.
    const [after] = await env.target.query<{ names: string }>(`SELECT string_agg(coalesce(name, '-'), ',' ORDER BY id) AS names FROM public.customers WHERE id IN (5, 6, 7)`, [], db);
    expect(after!.names).toBe('a,a,a');
    const [fences] = await env.source.query<{ n: number }>(`SELECT count(*)::int AS n FROM pg_trigger WHERE tgname LIKE 'pg_dts_fence%'`, [], db);
    expect(fences!.n).toBe(0);
  });
});

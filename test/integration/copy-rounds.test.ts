/**
 * Range copies of an earlier copy round (its snapshot lost, the table prepared again for a new one)
 * must not add rows: a late attempt of the old round is refused, the new round's ranges copy, and the
 * target ends up equal to the source. Real clusters, exported snapshots, no Temporal.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Client } from 'pg';
import { copyTable, planCopies, prepareRangedCopy, splitPages, type CopyTableInput } from '../../activities/copy';
import { fingerprint } from '../harness/compare';
import { startCluster, type PgCluster } from '../harness/pg-cluster';

let source: PgCluster;
let target: PgCluster;

beforeAll(async () => {
  [source, target] = await Promise.all([startCluster({ name: 'rounds-src' }), startCluster({ name: 'rounds-tgt' })]);
});

afterAll(async () => {
  await Promise.all([source?.destroy(), target?.destroy()]);
});

async function exportSnapshot(): Promise<{ name: string; holder: Client }> {
  const holder = await source.client();
  await holder.query('BEGIN ISOLATION LEVEL REPEATABLE READ');
  const r = await holder.query<{ s: string }>('SELECT pg_export_snapshot() AS s');
  return { name: r.rows[0]!.s, holder };
}

describe('ranged copy rounds', () => {
  it('refuses a late range copy of an earlier round, and the new round copies the table exactly', async () => {
    const ddl = `CREATE TABLE public.t (id int PRIMARY KEY, v text)`;
    await source.query(ddl);
    await target.query(ddl);
    await source.query(`INSERT INTO public.t SELECT g, md5(g::text) FROM generate_series(1, 20000) g`);
    const pages = Number((await source.query<{ p: string }>(`SELECT relpages::text AS p FROM pg_class WHERE relname = 't'`))[0]!.p) || 100;
    const ranges = splitPages(pages, 2);
    expect(ranges).toHaveLength(2);
    const table = { source: { schema: 'public', name: 't' }, target: { schema: 'public', name: 't' }, copyColumns: ['id', 'v'] };
    const hooks = { heartbeat: () => undefined, signal: new AbortController().signal };
    const copy = (snapshot: string, i: number) => copyTable({ source: source.uri(), target: target.uri(), table, snapshot, range: ranges[i]! } satisfies CopyTableInput, hooks);

    // Round 1: prepared, one range copied, then its snapshot is lost (the holder ends).
    const one = await exportSnapshot();
    await prepareRangedCopy({ target: target.uri(), table: table.target, snapshot: one.name });
    await copy(one.name, 0);
    // An attempt of round 1 that has imported its snapshot before the loss, and reaches the target late.
    const two = await exportSnapshot();
    // Round 2 is prepared while round 1's snapshot is still importable (the late attempt's case).
    await prepareRangedCopy({ target: target.uri(), table: table.target, snapshot: two.name });
    const late = await copy(one.name, 1).then(
      () => undefined,
      (e: Error) => e,
    );
    expect(late?.message).toMatch(/superseded/);
    await one.holder.query('COMMIT');
    await one.holder.end();
    expect((await target.query<{ n: string }>(`SELECT count(*)::text AS n FROM public.t`))[0]!.n, 'round 2 starts from an empty table').toBe('0');

    // Writes after round 2's snapshot are not in it (the apply brings them).
    await source.query(`UPDATE public.t SET v = 'later' WHERE id <= 10`);
    const results = await Promise.all([copy(two.name, 0), copy(two.name, 1)]);
    expect(results.reduce((n, r) => n + r.rows, 0)).toBe(20000);
    // A retried attempt finds its record and copies nothing.
    expect((await copy(two.name, 1)).alreadyCopied).toBe(true);
    await two.holder.query('COMMIT');
    await two.holder.end();
    await source.query(`UPDATE public.t SET v = md5(id::text) WHERE id <= 10`);
    expect(await fingerprint(target, 'postgres', 'public', 't')).toEqual(await fingerprint(source, 'postgres', 'public', 't'));
  });

  it('sizes tables with their TOAST data: a table of wide values is split and copied first', async () => {
    // 2,000 rows of 8 kB incompressible text: a heap of a few pages, ~16 MB of TOAST.
    await source.query(`CREATE TABLE public.wide (id int PRIMARY KEY, doc text);
      ALTER TABLE public.wide ALTER doc SET STORAGE EXTERNAL;
      INSERT INTO public.wide SELECT g, (SELECT string_agg(md5(random()::text || g || i), '') FROM generate_series(1, 256) i) FROM generate_series(1, 2000) g;
      CREATE TABLE public.narrow (id int PRIMARY KEY, v int); INSERT INTO public.narrow SELECT g, g FROM generate_series(1, 100000) g`);
    const [heap] = await source.query<{ wide: string; narrow: string }>(`SELECT pg_relation_size('public.wide')::text AS wide, pg_relation_size('public.narrow')::text AS narrow`);
    expect(Number(heap!.wide), 'by its heap, wide is the smaller table').toBeLessThan(Number(heap!.narrow));
    const [narrow, wide] = await planCopies({
      source: source.uri(),
      tables: [{ schema: 'public', name: 'narrow' }, { schema: 'public', name: 'wide' }],
      splitAboveBytes: 8 * 1024 * 1024,
      rangeBytes: 4 * 1024 * 1024,
      minRanges: 2,
    });
    expect(wide!.bytes).toBeGreaterThan(10 * 1024 * 1024);
    expect(wide!.bytes).toBeGreaterThan(narrow!.bytes);
    expect(wide!.ranges?.length ?? 0).toBeGreaterThanOrEqual(2);
    expect(narrow!.ranges).toBeUndefined();
  });
});

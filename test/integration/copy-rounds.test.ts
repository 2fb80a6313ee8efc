/**
 * Range copies of an earlier copy round (its snapshot lost, the table prepared again for a new one)
 * must not add rows: a late attempt of the old round is refused, the new round's ranges copy, and the
 * target ends up equal to the source. Whole-table copies record their snapshot and position, which a
 * resumed round keeps and the apply reads. Real clusters, exported snapshots, no Temporal.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Client } from 'pg';
import { copyTable, copyWholeTables, prepareRangedCopy, readCopyPositions, type CopyTableInput } from '../../activities/copy';
import { planCopies, splitPages } from '../../activities/copy-plan';
import { fingerprint } from '../harness/compare';
import { lsnToBigInt } from '../../activities/apply/lsn';
import { runApply } from '../../activities/apply/run';
import { createResumeSnapshot, createSlotWithSnapshot } from '../../activities/replication';
import { startCluster, type PgCluster } from '../harness/pg-cluster';

let source: PgCluster;
let target: PgCluster;

beforeAll(async () => {
  [source, target] = await Promise.all([startCluster({ name: 'rounds-src' }), startCluster({ name: 'rounds-tgt' })]);
});

afterAll(async () => {
  await Promise.all([source?.destroy(), target?.destroy()]);
});

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

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

  it('records whole-table copies with their position: a resumed round keeps those of standing snapshots, counts the rest and emptied ranges as copied twice', async () => {
    const ddl = `CREATE TABLE public.a (id int PRIMARY KEY, v text); CREATE TABLE public.b (id int PRIMARY KEY, v text); CREATE TABLE public.r (id int PRIMARY KEY, v text)`;
    await source.query(ddl);
    await target.query(ddl);
    await source.query(`INSERT INTO public.a SELECT g, 'a' FROM generate_series(1, 500) g; INSERT INTO public.b SELECT g, 'b' FROM generate_series(1, 300) g;
                        INSERT INTO public.r SELECT g, md5(g::text) FROM generate_series(1, 5000) g`);
    const t = (name: string) => ({ source: { schema: 'public', name }, target: { schema: 'public', name }, copyColumns: ['id', 'v'] });
    const hooks = { heartbeat: () => undefined, signal: new AbortController().signal };
    const whole = async (snapshot: string, snapshotLsn: string, keep: string[], tables: string[]) => {
      const flags: Array<{ kept?: boolean; recopied?: boolean }> = [];
      await copyWholeTables({ source: source.uri(), target: target.uri(), tables: tables.map(t), snapshot, snapshotLsn, keep }, { ...hooks, tableDone: (_, r) => void flags.push({ kept: r.kept, recopied: r.recopied }) });
      return flags;
    };
    const positions = async () => {
      const c = await target.client();
      try {
        return Object.fromEntries(await readCopyPositions(c, ['a', 'b', 'r', 'unknown'].map((n) => t(n).target)));
      } finally {
        await c.end();
      }
    };

    // Round 1 (slot at 0/100): a is committed, then the snapshot is lost.
    const one = await exportSnapshot();
    expect(await whole(one.name, '0/100', [one.name], ['a'])).toEqual([{}]);
    await prepareRangedCopy({ target: target.uri(), table: t('r').target, snapshot: one.name, snapshotLsn: '0/100' });
    await copyTable({ source: source.uri(), target: target.uri(), table: t('r'), snapshot: one.name, range: { id: '1/2', pageFrom: 0, pageTo: 10 } }, hooks);
    await one.holder.query('COMMIT');
    await one.holder.end();
    const xminA = (await target.query<{ x: string }>(`SELECT DISTINCT xmin::text AS x FROM public.a`))[0]!.x;

    // Round 2 (its snapshot at 0/200), resumed: a is kept, b copied; r had a range left: emptied, its committed range counted.
    const two = await exportSnapshot();
    expect(await whole(two.name, '0/200', [one.name, two.name], ['a', 'b'])).toEqual([{ kept: true, recopied: undefined }, {}]);
    expect(await prepareRangedCopy({ target: target.uri(), table: t('r').target, snapshot: two.name, snapshotLsn: '0/200' })).toBe(1);
    expect((await target.query<{ x: string }>(`SELECT DISTINCT xmin::text AS x FROM public.a`)).map((r) => r.x)).toEqual([xminA]);
    expect(await positions()).toEqual({ '"public"."a"': '0/100', '"public"."b"': '0/200', '"public"."r"': '0/200' });

    // A round in a new slot keeps nothing of the earlier ones: a table copied again is counted.
    expect(await whole(two.name, '0/300', ['other'], ['b'])).toEqual([{ recopied: true }]);
    await two.holder.query('COMMIT');
    await two.holder.end();
    expect(await fingerprint(target, 'postgres', 'public', 'a')).toEqual(await fingerprint(source, 'postgres', 'public', 'a'));
    expect(await fingerprint(target, 'postgres', 'public', 'b')).toEqual(await fingerprint(source, 'postgres', 'public', 'b'));
  });

  it('the apply leaves out, for a table copied in a later snapshot, the transactions that snapshot already held', async () => {
    const ddl = `CREATE TABLE public.k (id int PRIMARY KEY, n int); CREATE TABLE public.nk (n int)`;
    await source.query(`${ddl}; ALTER TABLE public.nk REPLICA IDENTITY FULL; CREATE PUBLICATION rc_pub FOR TABLE public.k, public.nk`);
    await target.query(ddl);
    await source.query(`INSERT INTO public.k SELECT g, 0 FROM generate_series(1, 100) g; INSERT INTO public.nk SELECT g % 5 FROM generate_series(1, 100) g`);
    const t = (name: string) => ({ source: { schema: 'public', name }, target: { schema: 'public', name }, copyColumns: name === 'k' ? ['id', 'n'] : ['n'] });
    const hooks = { heartbeat: () => undefined, signal: new AbortController().signal };
    // Round 1: the slot (position L1) and k copied in its snapshot; then the snapshot is lost.
    const one = await createSlotWithSnapshot(source.uri(), 'rc_slot');
    await copyWholeTables({ source: source.uri(), target: target.uri(), tables: [t('k')], snapshot: one.snapshotName, snapshotLsn: one.consistentPoint }, hooks);
    await one.client.end();
    // Written between the two snapshots: k needs them applied, nk's copy will hold them (a keyless
    // table: applied twice, they would duplicate rows).
    for (let i = 1; i <= 5; i++) await source.query(`INSERT INTO public.k VALUES (${1000 + i}, ${i}); UPDATE public.k SET n = n + 1 WHERE id = ${i}; INSERT INTO public.nk VALUES (${i}); DELETE FROM public.nk WHERE ctid = (SELECT min(ctid) FROM public.nk)`);
    // Round 2: nk in a temporary slot's snapshot (position L2); the slot itself stays at L1.
    const two = await createResumeSnapshot(source.uri(), 'rc_slot_r2');
    await copyWholeTables({ source: source.uri(), target: target.uri(), tables: [t('nk')], snapshot: two.snapshotName, snapshotLsn: two.consistentPoint }, hooks);
    await two.client.end();
    expect(lsnToBigInt(two.consistentPoint) > lsnToBigInt(one.consistentPoint)).toBe(true);
    // After both snapshots: both tables need these.
    for (let i = 1; i <= 3; i++) await source.query(`INSERT INTO public.nk VALUES (${10 + i}); UPDATE public.k SET n = n + 10 WHERE id = ${i + 10}`);
    const [end] = await source.query<{ lsn: string }>(`SELECT pg_current_wal_lsn()::text AS lsn`);

    const ac = new AbortController();
    let caughtUp!: () => void;
    const reached = new Promise<void>((r) => (caughtUp = r));
    const run = runApply({
      source: source.uri(),
      target: target.uri(),
      slot: 'rc_slot',
      publication: 'rc_pub',
      tables: [t('k'), t('nk')],
      progressIntervalMs: 100,
      signal: ac.signal,
      onProgress: (p) => {
        if (lsnToBigInt(p.appliedLsn) >= lsnToBigInt(end!.lsn)) caughtUp();
      },
    });
    await Promise.race([reached, run, sleep(60_000)]);
    ac.abort();
    const result = await run;
    await source.query(`SELECT pg_drop_replication_slot('rc_slot')`);
    // nk's two changes in each of the five transactions before L2; none of k's.
    expect(result.skippedBeforeCopy).toBe(10);
    for (const name of ['k', 'nk']) expect({ name, ...(await fingerprint(target, 'postgres', 'public', name)) }).toEqual({ name, ...(await fingerprint(source, 'postgres', 'public', name)) });
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

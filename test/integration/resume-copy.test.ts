/**
 * Issue 19: a crash during the copy redoes only what was in flight. The worker (a process of its own)
 * is killed with SIGKILL while it copies, once a page-ranged table and some whole tables are
 * committed, with applications writing to every kind of table (keyed, keyless, ranged) meanwhile: the
 * exported snapshot dies with it. The migration keeps its slot, copies the rest in a temporary
 * slot's snapshot, and the apply writes those tables' changes only from that snapshot's position.
 * Proven by content, by the counts in the report, and by the target rows' xmin: the tables committed
 * before the crash still hold the rows of their first copy.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Client } from 'pg';
import { startEnv, type TestEnv } from '../harness/env';
import { startWorkerProcess, type WorkerProcess } from '../harness/worker-process';
import { fingerprint } from '../harness/compare';
import { SHOP_TABLES, startWriter } from '../harness/fixtures';

let env: TestEnv;
let worker: WorkerProcess | undefined;

beforeAll(async () => {
  env = await startEnv({ sourceSettings: { logical_decoding_work_mem: "'64kB'" }, inProcessWorker: false });
  worker = await startWorkerProcess(env);
}, 240_000);

afterAll(async () => {
  await worker?.kill();
  await env?.stop();
});

/**
 * Tables of our own beside the shop schema, in the order the copy takes them (biggest first): `big`
 * in page ranges, then three whole tables per batch: w1-w3, w4-w6, w7, w8 and `slow` (small on disk,
 * its values compress ~100x, so its COPY lasts seconds: the snapshot is lost while it runs, with w7
 * and w8 of its batch committed), then `nokey` (no key at all) with shop tables.
 */
const WHOLE = Array.from({ length: 8 }, (_, i) => `w${i + 1}`);
const EXTRA = [...WHOLE, 'slow', 'nokey', 'big'];

/** Writes to the extra tables until stopped: inserts, updates and deletes, so a change applied twice (or lost) shows. */
function startExtraWriter(connect: () => Promise<Client>) {
  let stopping = false;
  let transactions = 0;
  const errors: string[] = [];
  const done = (async () => {
    const c = await connect();
    try {
      for (let i = 1; !stopping; i++) {
        const t = WHOLE[i % WHOLE.length]!;
        try {
          await c.query('BEGIN');
          await c.query(`INSERT INTO public.${t} (id, n, pad) VALUES ($1, 0, 'new')`, [1_000_000 + i]);
          await c.query(`UPDATE public.${t} SET n = n + 1 WHERE id = $1`, [(i * 7919) % 8_000]);
          await c.query(`DELETE FROM public.${t} WHERE id = $1`, [(i * 104_729) % 8_000]);
          await c.query(`INSERT INTO public.nokey (n, pad) VALUES ($1, 'k')`, [i % 10]);
          await c.query(`UPDATE public.big SET n = n + 1 WHERE id = $1`, [(i * 31) % 60_000]);
          await c.query('COMMIT');
          transactions++;
        } catch (err) {
          await c.query('ROLLBACK').catch(() => undefined);
          errors.push((err as Error).message);
          break;
        }
        await new Promise((r) => setTimeout(r, 5));
      }
    } finally {
      await c.end();
    }
  })();
  return {
    async stop() {
      stopping = true;
      await done;
      return { transactions, errors };
    },
  };
}

describe('a snapshot lost during the copy', () => {
  it('keeps what was committed, copies the rest in a new snapshot, ends identical', async () => {
    const db = 'resume';
    await env.shopDatabase(db, 0.1);
    const ddl = WHOLE.map(
      (t) => `CREATE TABLE public.${t} (id int PRIMARY KEY, n int NOT NULL, pad text); INSERT INTO public.${t} SELECT g, 0, repeat('x', 300) FROM generate_series(1, 8000) g;`,
    ).join('\n');
    await env.source.query(
      `${ddl}
       CREATE TABLE public.nokey (n int, pad text); ALTER TABLE public.nokey REPLICA IDENTITY FULL;
       INSERT INTO public.nokey SELECT g % 10, repeat('k', 100) FROM generate_series(1, 5000) g;
       CREATE TABLE public.slow (id int PRIMARY KEY, body text);
       INSERT INTO public.slow SELECT g, repeat(md5(g::text), 15000) FROM generate_series(1, 80) g;
       CREATE TABLE public.big (id int PRIMARY KEY, n int NOT NULL, pad text);
       INSERT INTO public.big SELECT g, 0, repeat('b', 200) FROM generate_series(1, 60000) g;`,
      [],
      db,
    );
    const writer = startWriter(() => env.source.client(db));
    const extra = startExtraWriter(() => env.source.client(db));
    const m = await env.startMigration({
      source: env.source.uri(db),
      target: env.target.uri(db),
      schemas: ['public', 'Sales Dept'],
      tableSuffix: '_c',
      parallelism: 1,
      // big (~15 MB) in 4 page ranges, copied first (biggest units first); the rest three tables per batch.
      copy: { splitAboveBytes: 4 * 1024 * 1024, rangeBytes: 4 * 1024 * 1024, batchTables: 3 },
      cutover: { mode: 'manual' },
    });

    // While `slow` is copied, the worker dies, and the exported snapshot with its connection.
    const committed = async () => {
      const rows = await env.target
        .query<{ target_table: string; range_id: string }>(`SELECT target_table, range_id FROM pgdts.copy_progress`, [], db)
        .catch(() => []);
      return { ranges: rows.filter((r) => r.target_table === '"public"."big_c"' && r.range_id !== '').length, whole: rows.filter((r) => r.range_id === '*').map((r) => r.target_table) };
    };
    let copying = 0;
    for (const deadline = Date.now() + 120_000; copying === 0 && Date.now() < deadline; ) {
      const [r] = await env.source.query<{ n: number }>(
        `SELECT count(*)::int AS n FROM pg_stat_activity WHERE datname = current_database() AND state = 'active' AND query ILIKE 'COPY %"public"."slow"%TO STDOUT%'`,
        [],
        db,
      );
      copying = r!.n;
      if (!copying) await new Promise((res) => setTimeout(res, 20));
    }
    expect(copying).toBe(1);
    await worker!.kill();
    const t0 = Date.now();
    worker = await startWorkerProcess(env);
    // Where the time goes (on a loaded machine): each phase change.
    let phase = '';
    const trace = setInterval(() => {
      void m.status().then((s) => {
        if (s.phase !== phase) console.log(`+${Date.now() - t0} ms ${(phase = s.phase)}`);
      }, () => undefined);
    }, 500);
    const ranges = (await m.status()).tables.find((t) => t.source === 'public.big')?.ranges?.total ?? 0;
    expect(ranges).toBeGreaterThan(1);
    // What the lost snapshot's round committed, and the transaction each table's rows came in.
    const before = await committed();
    expect(before.ranges).toBe(ranges);
    expect(before.whole).toEqual(expect.arrayContaining(WHOLE.map((t) => `"public"."${t}_c"`)));
    // The table in flight died with the worker.
    expect(before.whole).not.toContain('"public"."slow_c"');
    const firstCopy = new Map<string, string[]>();
    for (const t of [...before.whole, '"public"."big_c"']) {
      const xids = await env.target.query<{ x: string }>(`SELECT DISTINCT xmin::text AS x FROM ${t}`, [], db);
      firstCopy.set(t, xids.map((r) => r.x));
    }
    expect(firstCopy.get('"public"."big_c"')!.length).toBe(ranges);

    const syncing = await m.waitForPhase('SYNCING_WAL', 240_000);
    const tSync = Date.now() - t0;
    expect(syncing.notices.join('\n')).toMatch(/snapshot holder lost \(attempt 1\).*resuming the copy in a new snapshot/);
    expect(syncing.notices.join('\n')).not.toMatch(/attempt 2/);
    // Writes go on a little into the sync, then stop before the fence would refuse them.
    await new Promise((r) => setTimeout(r, 2000));
    const extraStats = await extra.stop();
    await m.signal('cutover');
    const report = await m.result().finally(() => clearInterval(trace));
    const stats = await writer.stop();
    expect(stats.errors).toEqual([]);
    expect(extraStats.errors).toEqual([]);
    expect(extraStats.transactions).toBeGreaterThan(50);
    expect(report.phase).toBe('COMPLETED');

    // Resumed once; every unit committed before the loss kept (4 ranges + the whole tables), none copied twice.
    const resumes = report.copyResumes!;
    expect(resumes.copyResumes).toBe(1);
    expect(resumes.unitsKept).toBeGreaterThanOrEqual(ranges + before.whole.length);
    expect(resumes.unitsCopiedTwice).toBe(0);
    console.log(
      `resume-copy: ${before.whole.length} whole tables and ${ranges} ranges committed at the kill; report: ${JSON.stringify(resumes)}; ` +
        `SYNCING_WAL ${tSync} ms after the kill, COMPLETED after ${Date.now() - t0} ms`,
    );
    // The kept tables were not loaded again: rows of their first copy's transaction are still there.
    for (const [t, xids] of firstCopy) {
      const [r] = await env.target.query<{ n: number }>(`SELECT count(*)::int AS n FROM ${t} WHERE xmin::text = ANY($1::text[])`, [xids], db);
      expect({ t, kept: r!.n > 0 }).toEqual({ t, kept: true });
    }

    for (const [schema, table] of SHOP_TABLES) {
      const a = await fingerprint(env.source, db, schema, table);
      const b = await fingerprint(env.target, db, schema, `${table}_c`);
      expect({ table: `${schema}.${table}`, ...b }).toEqual({ table: `${schema}.${table}`, ...a });
    }
    for (const table of EXTRA) {
      const a = await fingerprint(env.source, db, 'public', table);
      const b = await fingerprint(env.target, db, 'public', `${table}_c`);
      expect({ table, ...b }).toEqual({ table, ...a });
    }
    const [left] = await env.source.query<{ slots: number }>(`SELECT count(*)::int AS slots FROM pg_replication_slots`, [], db);
    expect(left!.slots).toBe(0);
  });
});

/**
 * Pause, resume and cancel in the phases where they matter, against real servers: nothing is lost,
 * nothing is left behind (slot, publication, fence, target tables).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startEnv, type MigrationHandle, type TestEnv } from '../harness/env';
import { fingerprint } from '../harness/compare';
import { activitySpans, type ActivitySpan } from '../harness/history';
import { startWriter } from '../harness/fixtures';
import { throttleProxy } from '../harness/throttle-proxy';
import { findTargetLeftovers, removeMigrationLeftovers } from '../../activities/leftovers';

let env: TestEnv;
let n = 0;
const TABLES: Array<[string, string]> = [
  ['public', 'customers'],
  ['public', 'orders'],
  ['public', 'documents'],
  ['public', 'kv'],
  ['public', 'audit_log'],
  ['public', 'scratch'],
];

async function fresh(scale = 0.2) {
  const db = `ctl${++n}`;
  await env.shopDatabase(db, scale);
  return { db, source: env.source.uri(db), target: env.target.uri(db), tables: TABLES.map(([s, t]) => `${s}.${t}`) };
}

async function leftovers(db: string) {
  const [src] = await env.source.query<{ slots: number; pubs: number; fences: number; activeSlots: number }>(
    `SELECT (SELECT count(*)::int FROM pg_replication_slots WHERE database = current_database()) AS slots,
            (SELECT count(*)::int FROM pg_replication_slots WHERE database = current_database() AND active) AS "activeSlots",
            (SELECT count(*)::int FROM pg_publication) AS pubs,
            (SELECT count(*)::int FROM pg_trigger WHERE tgname LIKE 'pg_dts_fence%') AS fences`,
    [],
    db,
  );
  const tgt = await env.target.query<{ t: string }>(`SELECT schemaname || '.' || tablename AS t FROM pg_tables WHERE schemaname NOT IN ('pg_catalog', 'information_schema')`, [], db);
  return { ...src!, targetTables: tgt.map((r) => r.t).sort() };
}

async function expectIdentical(db: string, suffix: string) {
  for (const [s, t] of TABLES) {
    expect({ t, ...(await fingerprint(env.target, db, s, `${t}${suffix}`)) }).toEqual({ t, ...(await fingerprint(env.source, db, s, t)) });
  }
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Cut over, stop the writer (the fence stops it anyway), and prove the target holds what the source does. */
async function cutoverAndCompare(m: MigrationHandle, writer: ReturnType<typeof startWriter>, db: string, suffix: string): Promise<void> {
  await m.signal('cutover');
  const report = await m.result();
  const stats = await writer.stop();
  expect(stats.errors).toEqual([]);
  expect(report.phase).toBe('COMPLETED');
  await expectIdentical(db, suffix);
}

beforeAll(async () => {
  env = await startEnv();
});
afterAll(async () => {
  await env?.stop();
});

describe('pause and resume', () => {
  it('pause before the copy holds the migration; resume finishes it', async () => {
    const { db, source, target, tables } = await fresh();
    const m = await env.startMigration({ source, target, tables, tableSuffix: '_p', cutover: { mode: 'manual' } });
    await m.signal('pause');
    await sleep(3000);
    const held = await m.status();
    expect(held.paused).toBe(true);
    expect(['INIT', 'CREATING_TABLES', 'MIGRATING_DATA']).toContain(held.phase);
    expect(held.tables.every((t) => t.state === 'pending' || t.state === 'copied')).toBe(true);
    await m.signal('resume');
    await m.waitForPhase('SYNCING_WAL');
    await m.signal('cutover');
    const report = await m.result();
    expect(report.phase).toBe('COMPLETED');
    await expectIdentical(db, '_p');
  });

  it('pause during a table copy interrupts it; resume copies it again cleanly, ending identical', async () => {
    const { db, source, target, tables } = await fresh(0.05);
    await env.source.query(`CREATE TABLE public.big (id int PRIMARY KEY, pad text); INSERT INTO public.big SELECT g, repeat('x', 200) FROM generate_series(1, 1500000) g`, [], db);
    const writer = startWriter(() => env.source.client(db), { pauseMs: 5 });
    // The source behind a 30 MB/s link: big's ~315 MB copy lasts about 10 s on any machine, so the
    // test sees it in flight and pauses it before it ends (unthrottled it takes ~1.5 s here).
    const link = await throttleProxy(env.source.port, 30e6);
    const m = await env.startMigration({ source: link.uri(source), target, tables: [...tables, 'public.big'], tableSuffix: '_i', parallelism: 1, cutover: { mode: 'manual' } });
    // The status shows the copy's rows while it runs (live reports from the worker), not only at its end.
    let live: { rowsCopied: number; rowsTotal?: number; state: string } | undefined;
    for (let i = 0; i < 1200 && !live; i++) {
      const big = (await m.status()).tables.find((t) => t.source === 'public.big');
      if (big?.state === 'copying' && big.rowsCopied > 0) live = big;
      else await sleep(25);
    }
    expect(live?.rowsCopied).toBeGreaterThan(0);
    expect(live!.rowsCopied).toBeLessThan(1_500_000);
    // The Temporal UI's current details show the copy in flight.
    const meta = await env.temporal.client.workflow
      .getHandle(m.workflowId)
      .query<{ currentDetails?: string; definition?: { signalDefinitions?: Array<{ name: string; description?: string }> } }>('__temporal_workflow_metadata');
    expect(meta.currentDetails).toMatch(/MIGRATING_DATA[\s\S]*- public\.big: \d+(\/\d+)? rows/);
    // The UI's signal list says which signals are the user's and which are the worker's own reports.
    const signals = new Map((meta.definition?.signalDefinitions ?? []).map((d) => [d.name, d.description ?? '']));
    for (const name of ['pause', 'resume', 'cutover', 'cancel']) expect(signals.get(name)).toMatch(/^user: /);
    expect(signals.get('copyProgress')).toMatch(/^internal \(copy units\)/);
    await m.signal('pause');
    await sleep(1500);
    const held = await m.status();
    expect(held.paused).toBe(true);
    expect(held.tables.filter((t) => t.state === 'copying')).toEqual([]);
    expect(held.tables.find((t) => t.source === 'public.big')?.state).toBe('pending'); // interrupted, to be redone
    link.rate = Infinity;
    await m.signal('resume');
    await m.waitForPhase('SYNCING_WAL', 180_000);
    await m.signal('cutover');
    expect((await m.result()).phase).toBe('COMPLETED');
    const stats = await writer.stop();
    expect(stats.errors).toEqual([]);
    await expectIdentical(db, '_i');
    expect(await fingerprint(env.target, db, 'public', 'big_i')).toEqual(await fingerprint(env.source, db, 'public', 'big'));
    await link.close();
  });

  it('large tables copy in page ranges under writes; a pause keeps the finished ranges, resume copies the rest; identical', async () => {
    const { db, source, target, tables } = await fresh(0.05);
    await env.source.query(`CREATE TABLE public.big (id int PRIMARY KEY, pad text); INSERT INTO public.big SELECT g, repeat('y', 200) FROM generate_series(1, 600000) g`, [], db);
    const writer = startWriter(() => env.source.client(db), { pauseMs: 5 });
    // Every table over 64 kB is split: the shop's tables into 2 ranges (the parallelism), big into ~18.
    const m = await env.startMigration({
      source,
      target,
      tables: [...tables, 'public.big'],
      tableSuffix: '_r',
      parallelism: 2,
      copy: { splitAboveBytes: 65536, rangeBytes: 8 * 1024 * 1024 },
      cutover: { mode: 'manual' },
    });
    let big: { state: string; rowsCopied: number; ranges?: { total: number; done: number } } | undefined;
    for (let i = 0; i < 2400; i++) {
      big = (await m.status()).tables.find((t) => t.source === 'public.big');
      if (big?.ranges && big.ranges.done >= 2) break;
      await sleep(25);
    }
    expect(big?.ranges?.total).toBeGreaterThanOrEqual(10);
    await m.signal('pause');
    await sleep(1500);
    const held = (await m.status()).tables.find((t) => t.source === 'public.big')!;
    expect(held.ranges!.done).toBeGreaterThanOrEqual(2);
    expect(held.ranges!.done).toBeLessThan(held.ranges!.total);
    expect(held.state).toBe('pending');
    // The finished ranges' rows stay counted: they are not copied again.
    expect(held.rowsCopied).toBeGreaterThan(0);
    // Not fully copied: none of big's indexes is built yet.
    expect(await env.target.query(`SELECT indexname FROM pg_indexes WHERE schemaname = 'public' AND tablename = 'big_r'`, [], db)).toEqual([]);
    await m.signal('resume');
    await m.waitForPhase('SYNCING_WAL', 180_000);
    const synced = await m.status();
    expect(synced.tables.find((t) => t.source === 'public.big')?.ranges).toEqual({ total: held.ranges!.total, done: held.ranges!.total });
    // Exactly the tables over the threshold were split, each in at least `parallelism` ranges.
    const sizes = await env.source.query<{ t: string; bytes: string }>(
      `SELECT 'public.' || relname AS t, pg_relation_size(oid)::text AS bytes FROM pg_class WHERE oid = ANY($1::regclass[])`,
      [[...tables, 'public.big']],
      db,
    );
    expect(sizes.length).toBe(tables.length + 1);
    for (const { t, bytes } of sizes) {
      const ranges = synced.tables.find((x) => x.source === t)?.ranges;
      expect({ t, split: ranges !== undefined }).toEqual({ t, split: Number(bytes) > 65536 });
      if (ranges) expect(ranges.total).toBeGreaterThanOrEqual(2);
    }
    await cutoverAndCompare(m, writer, db, '_r');
    expect(await fingerprint(env.target, db, 'public', 'big_r')).toEqual(await fingerprint(env.source, db, 'public', 'big'));
    // The range records are gone with the copy.
    expect(await env.target.query(`SELECT to_regclass('pgdts.copy_progress') AS t`, [], db)).toEqual([{ t: null }]);
    // Each table's post-load DDL ran once, after its copy had landed, whatever the pause did: a batch's
    // whole tables after that batch, a ranged table's (named by plan position) once each.
    const spans = await activitySpans(env.temporal, m.workflowId);
    const finishes = spans.filter((s) => s.type === 'finishTargetTables' && s.outcome === 'completed');
    const copied = spans.filter((s) => s.type === 'copyTableBatch' && s.outcome === 'completed');
    const inputOf = (s: ActivitySpan) => s.input[0] as { batch?: number; ords?: number[]; part?: string };
    const rangedOrds = finishes.flatMap((f) => inputOf(f).ords ?? []);
    expect(rangedOrds.length).toBe(synced.tables.filter((t) => t.ranges).length);
    expect(new Set(rangedOrds).size).toBe(rangedOrds.length);
    for (const f of finishes.filter((x) => inputOf(x).batch !== undefined)) {
      const copy = copied.find((c) => inputOf(c).batch === inputOf(f).batch)!;
      expect({ batch: inputOf(f).batch, after: f.startedAt! >= copy.endedAt! }).toEqual({ batch: inputOf(f).batch, after: true });
    }
    const fk = finishes.find((f) => inputOf(f).part === 'foreign-keys');
    if (fk) for (const c of copied) expect(fk.startedAt!).toBeGreaterThanOrEqual(c.endedAt!);
  });

  it('pause in SYNCING_WAL stops the apply, the slot keeps the WAL, resume catches up exactly', async () => {
    const { db, source, target, tables } = await fresh();
    const writer = startWriter(() => env.source.client(db));
    const m = await env.startMigration({ source, target, tables, tableSuffix: '_s', cutover: { mode: 'manual' } });
    await m.waitForPhase('SYNCING_WAL');
    for (let i = 0; i < 100 && (await leftovers(db)).activeSlots === 0; i++) await sleep(100);
    expect((await leftovers(db)).activeSlots).toBe(1); // the apply is streaming
    await m.signal('pause');
    // The apply lets go of the slot (inactive), while the writer keeps committing.
    let inactive = false;
    for (let i = 0; i < 100 && !inactive; i++) {
      inactive = (await leftovers(db)).activeSlots === 0;
      if (!inactive) await sleep(200);
    }
    expect(inactive).toBe(true);
    expect((await m.status()).paused).toBe(true);
    const during = writer.stats.transactions;
    await sleep(1500);
    expect(writer.stats.transactions).toBeGreaterThan(during);
    expect((await leftovers(db)).activeSlots).toBe(0);
    await m.signal('resume');
    for (let i = 0; i < 100; i++) {
      if ((await leftovers(db)).activeSlots === 1) break;
      await sleep(200);
    }
    await cutoverAndCompare(m, writer, db, '_s');
  });
});

describe('while the source is fenced', () => {
  it('STOPPING_WRITES: pause is refused with the reason; cancel with a worker restart during cleanup leaves nothing behind', async () => {
    const { db, source, target, tables } = await fresh(0.05);
    const m = await env.startMigration({ source, target, tables, tableSuffix: '_w', cutover: { mode: 'manual' } });
    await m.waitForPhase('SYNCING_WAL');
    // An application transaction that never ends keeps the fence waiting for its lock.
    const app = await env.source.client(db);
    await app.query(`BEGIN; INSERT INTO public.kv VALUES ('open-txn', 1)`);
    await m.signal('cutover');
    await m.waitForPhase('STOPPING_WRITES');
    await m.signal('pause');
    await sleep(500);
    const s = await m.status();
    expect(s.paused).toBe(false);
    expect(s.lastControl).toMatch(/pause refused in STOPPING_WRITES: source writes are stopped/);
    await m.signal('cancel');
    await env.restartWorker(); // cleanup activities must survive it
    await app.query('ROLLBACK');
    await app.end();
    expect((await m.result()).phase).toBe('CANCELLED');
    expect(await leftovers(db)).toEqual({ slots: 0, activeSlots: 0, pubs: 0, fences: 0, targetTables: [] });
    await env.source.query(`INSERT INTO public.kv VALUES ('writable', 1)`, [], db);
  });

  it('VALIDATING: cancel lifts the fence at once even while the comparison is stuck', async () => {
    const { db, source, target, tables } = await fresh(0.05);
    // keepTargetOnCancel: dropping the target table would (rightly) wait for the blocker's lock.
    const m = await env.startMigration({ source, target, tables, tableSuffix: '_x', cutover: { mode: 'manual' }, keepTargetOnCancel: true });
    await m.waitForPhase('SYNCING_WAL');
    // The cutover waits for the content proof's first pass, which the lock would hold up too.
    while ((await m.status()).proof?.state !== 'ready') await sleep(200);
    const blocker = await env.target.client(db);
    await blocker.query(`BEGIN; LOCK TABLE public.kv_x IN ACCESS EXCLUSIVE MODE`);
    await m.signal('cutover');
    await m.waitForPhase('VALIDATING');
    expect((await leftovers(db)).fences).toBeGreaterThan(0); // fenced while validating
    await m.signal('cancel');
    const report = await m.result();
    expect(report.phase).toBe('CANCELLED');
    // The fence, slot and publication are gone while the comparison is still blocked.
    const left = await leftovers(db);
    expect({ slots: left.slots, pubs: left.pubs, fences: left.fences }).toEqual({ slots: 0, pubs: 0, fences: 0 });
    // The content proof's write mark on the locked table could not be dropped without waiting for
    // the lock: it stays, as a no-op, listed for `dts cleanup`, which removes it once the lock is gone.
    // The comparison's session is gone too, though its lock was never granted: cancelled on the server
    // (a backend waiting for a lock does not notice its client left, and kept its locks).
    let stuck = 1;
    for (let i = 0; i < 50 && stuck; i++) {
      const [r] = await env.target.query<{ n: number }>(`SELECT count(*)::int AS n FROM pg_stat_activity WHERE application_name = 'pg-dts validate' AND datname = current_database()`, [], db);
      stuck = r!.n;
      if (stuck) await sleep(100);
    }
    expect(stuck).toBe(0);
    const marks = await findTargetLeftovers(target);
    expect(marks.filter((l) => l.kind === 'write-marks').map((l) => l.detail)).toEqual(['1 trigger(s)']);
    const [fn] = await env.target.query<{ src: string }>(`SELECT prosrc AS src FROM pg_proc WHERE proname LIKE 'pg\\_dts\\_%\\_writes'`, [], db);
    expect(fn!.src).not.toContain('INSERT');
    await blocker.query('ROLLBACK');
    await blocker.end();
    await env.source.query(`INSERT INTO public.kv VALUES ('writable', 1)`, [], db);
    await removeMigrationLeftovers({ source, target, migrationId: marks.find((l) => l.kind === 'write-marks')!.migrationId! });
    expect((await findTargetLeftovers(target)).filter((l) => l.kind === 'write-marks')).toEqual([]);
    const [trg] = await env.target.query<{ n: number }>(`SELECT count(*)::int AS n FROM pg_trigger WHERE tgname LIKE '%\\_writes'`, [], db);
    expect(trg!.n).toBe(0);
  });
});

describe('server restarts', () => {
  it('the target restarting during SYNCING_WAL is retried; the migration ends identical', async () => {
    const { db, source, target, tables } = await fresh(0.1);
    const writer = startWriter(() => env.source.client(db), { pauseMs: 5 });
    const m = await env.startMigration({ source, target, tables, tableSuffix: '_z', cutover: { mode: 'manual' } });
    await m.waitForPhase('SYNCING_WAL');
    await sleep(1000);
    await env.target.stop('fast');
    await sleep(2000);
    await env.target.start();
    const before = (await m.status()).replication?.transactions ?? 0;
    for (let i = 0; i < 150; i++) {
      if (((await m.status()).replication?.transactions ?? 0) > before + 10) break;
      await sleep(200);
    }
    await cutoverAndCompare(m, writer, db, '_z');
  });
});

describe('long syncs', () => {
  it('continues as new when history grows in SYNCING_WAL, and the chain ends identical', async () => {
    const { db, source, target, tables } = await fresh(0.1);
    const writer = startWriter(() => env.source.client(db), { pauseMs: 5 });
    const m = await env.startMigration({ source, target, tables, tableSuffix: '_h', cutover: { mode: 'manual' }, historyEventsLimit: 200 });
    const handle = env.temporal.client.workflow.getHandle(m.workflowId);
    const firstRun = (await handle.describe()).runId;
    await m.waitForPhase('SYNCING_WAL');
    // Every signal is a history event: no-op resumes fill the history past the limit quickly.
    let runId = firstRun;
    for (let i = 0; i < 300 && runId === firstRun; i++) {
      await m.signal('resume');
      if (i % 20 === 19) runId = (await handle.describe()).runId;
    }
    for (let i = 0; i < 50 && runId === firstRun; i++) {
      await sleep(200);
      runId = (await handle.describe()).runId;
    }
    expect(runId).not.toBe(firstRun);
    const s = await m.waitForPhase('SYNCING_WAL');
    expect(s.tables.every((t) => t.rowsCopied > 0 || t.source === 'public.scratch')).toBe(true);
    await cutoverAndCompare(m, writer, db, '_h');
    expect((await leftovers(db)).slots).toBe(0);
  });
});

describe('tables without a replica identity', () => {
  it('setReplicaIdentityFull migrates them under writes and restores their identity afterwards', async () => {
    const { db, source, target } = await fresh(0.05);
    await env.source.query(`CREATE TABLE public.nokey (a int, b text); INSERT INTO public.nokey SELECT g % 10, 'v' FROM generate_series(1, 100) g`, [], db);
    const m = await env.startMigration({ source, target, tables: ['public.nokey', 'public.kv'], tableSuffix: '_f', cutover: { mode: 'manual' }, setReplicaIdentityFull: true });
    await m.waitForPhase('SYNCING_WAL');
    const [during] = await env.source.query<{ r: string }>(`SELECT relreplident::text AS r FROM pg_class WHERE oid = 'public.nokey'::regclass`, [], db);
    expect(during!.r).toBe('f');
    // Duplicates: exactly one of the identical rows changes on each side.
    await env.source.query(`UPDATE public.nokey SET b = 'w' WHERE ctid = (SELECT ctid FROM public.nokey WHERE a = 1 LIMIT 1)`, [], db);
    await env.source.query(`DELETE FROM public.nokey WHERE ctid = (SELECT ctid FROM public.nokey WHERE a = 2 LIMIT 1)`, [], db);
    await m.signal('cutover');
    expect((await m.result()).phase).toBe('COMPLETED');
    expect(await fingerprint(env.target, db, 'public', 'nokey_f')).toEqual(await fingerprint(env.source, db, 'public', 'nokey'));
    const [after] = await env.source.query<{ r: string }>(`SELECT relreplident::text AS r FROM pg_class WHERE oid = 'public.nokey'::regclass`, [], db);
    expect(after!.r).toBe('d');
  });
});

describe('cancel', () => {
  it('cancel in INIT: CANCELLED before anything is created', async () => {
    const { db, source, target, tables } = await fresh(0.02);
    const m = await env.startMigration({ source, target, tables, tableSuffix: '_0' });
    await m.signal('cancel');
    expect((await m.result()).phase).toBe('CANCELLED');
    expect(await leftovers(db)).toEqual({ slots: 0, activeSlots: 0, pubs: 0, fences: 0, targetTables: [] });
  });

  it('cancel in INIT while the preflight is storing the plan: the cancel waits for it and the plan is forgotten', async () => {
    const { db, source, target, tables } = await fresh(0.02);
    // An uncommitted CREATE SCHEMA pgdts holds the plan store's own CREATE SCHEMA IF NOT EXISTS.
    const blocker = await env.target.client(db);
    await blocker.query(`BEGIN; CREATE SCHEMA pgdts`);
    const m = await env.startMigration({ source, target, tables, tableSuffix: '_p' });
    await untilWaiting(db);
    await m.signal('cancel');
    await sleep(1500);
    // The plan is stored only now, after the cancel: before the fix the run had ended without it.
    await blocker.query('ROLLBACK');
    await blocker.end();
    expect((await m.result()).phase).toBe('CANCELLED');
    await sleep(1000);
    expect(await leftovers(db)).toEqual({ slots: 0, activeSlots: 0, pubs: 0, fences: 0, targetTables: [] });
    expect(await env.target.query(`SELECT to_regnamespace('pgdts') AS s`, [], db)).toEqual([{ s: null }]);
  });

  it('cancel while paused in the copy: CANCELLED, slot, publication and target tables gone, source writable', async () => {
    const { db, source, target, tables } = await fresh();
    const m = await env.startMigration({ source, target, tables, tableSuffix: '_c' });
    await m.waitForPhase('MIGRATING_DATA');
    await m.signal('pause');
    await m.signal('cancel');
    const report = await m.result();
    expect(report.phase).toBe('CANCELLED');
    expect(await leftovers(db)).toEqual({ slots: 0, activeSlots: 0, pubs: 0, fences: 0, targetTables: [] });
    await env.source.query(`INSERT INTO public.kv VALUES ('after-cancel', 1)`, [], db);
  });

  it("Temporal's own cancellation in SYNCING_WAL cleans up and ends Canceled; keepTargetOnCancel keeps the tables", async () => {
    const { db, source, target, tables } = await fresh(0.05);
    const m = await env.startMigration({ source, target, tables, tableSuffix: '_t', cutover: { mode: 'manual' }, keepTargetOnCancel: true });
    await m.waitForPhase('SYNCING_WAL');
    const handle = env.temporal.client.workflow.getHandle(m.workflowId);
    await handle.cancel();
    // Ends as Temporal's CANCELED; the harness reads its report from the `report` query.
    expect((await m.result()).phase).toBe('CANCELLED');
    expect((await handle.describe()).status.name).toBe('CANCELLED');
    expect((await m.status()).phase).toBe('CANCELLED');
    const left = await leftovers(db);
    expect({ ...left, targetTables: left.targetTables.length }).toEqual({ slots: 0, activeSlots: 0, pubs: 0, fences: 0, targetTables: TABLES.length });
  });

  /** Sessions of the migration on the target that wait for a lock. */
  const waitingOnTarget = async (db: string) =>
    (
      await env.target.query<{ n: number }>(
        `SELECT count(*)::int AS n FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock' AND application_name LIKE 'pg-dts%'`,
        [],
        db,
      )
    )[0]!.n;
  const untilWaiting = async (db: string) => {
    for (let i = 0; i < 600 && (await waitingOnTarget(db)) === 0; i++) await sleep(100);
    expect(await waitingOnTarget(db)).toBeGreaterThan(0);
  };

  it("CREATING_TABLES, by Temporal's cancellation while the DDL waits for a lock: the DDL is cancelled on the server, nothing is created, even once the lock goes", async () => {
    const { db, source, target, tables } = await fresh(0.02);
    await env.target.query(`CREATE SCHEMA landing`, [], db);
    // Dropping the (empty) schema in an open transaction holds its lock: CREATE TABLE in it waits.
    const blocker = await env.target.client(db);
    await blocker.query(`BEGIN; DROP SCHEMA landing`);
    const m = await env.startMigration({ source, target, tables, schemaMapping: { public: 'landing' } });
    await m.waitForPhase('CREATING_TABLES');
    await untilWaiting(db);
    const handle = env.temporal.client.workflow.getHandle(m.workflowId);
    await handle.cancel();
    expect((await m.result()).phase).toBe('CANCELLED');
    expect((await handle.describe()).status.name).toBe('CANCELLED');
    expect((await m.status()).phase).toBe('CANCELLED');
    // Ended while the lock is still held: the waiting DDL was cancelled, not left to commit later.
    expect(await waitingOnTarget(db)).toBe(0);
    await blocker.query('ROLLBACK');
    await blocker.end();
    await sleep(1000);
    expect(await leftovers(db)).toEqual({ slots: 0, activeSlots: 0, pubs: 0, fences: 0, targetTables: [] });
    await env.source.query(`INSERT INTO public.kv VALUES ('after-cancel', 1)`, [], db);
  });

  it('FINALIZING, by signal while creating views waits for a lock: CANCELLED at once, writes released, target kept, the view never appears', async () => {
    const { db, source, target, tables } = await fresh(0.02);
    await env.source.query(`CREATE SCHEMA reports; CREATE VIEW reports.order_count AS SELECT count(*) AS n FROM public.orders`, [], db);
    await env.target.query(`CREATE SCHEMA reports`, [], db);
    const blocker = await env.target.client(db);
    await blocker.query(`BEGIN; DROP SCHEMA reports`);
    const m = await env.startMigration({ source, target, schemas: ['public', 'reports'], tables, tableSuffix: '_v', objects: true });
    await m.waitForPhase('FINALIZING', 120_000);
    await untilWaiting(db);
    await m.signal('cancel');
    const report = await m.result();
    expect(report.phase).toBe('CANCELLED');
    expect(await waitingOnTarget(db)).toBe(0);
    await blocker.query('ROLLBACK');
    await blocker.end();
    await sleep(1000);
    expect(await env.target.query(`SELECT to_regclass('reports.order_count') AS v`, [], db)).toEqual([{ v: null }]);
    // After the cutover the target is the database of record: kept, and identical to the source.
    const left = await leftovers(db);
    expect(left).toEqual({ slots: 0, activeSlots: 0, pubs: 0, fences: 0, targetTables: TABLES.map(([sc, t]) => `${sc}.${t}_v`).sort() });
    await expectIdentical(db, '_v');
    await env.source.query(`INSERT INTO public.kv VALUES ('writable', 1)`, [], db);
  });
});

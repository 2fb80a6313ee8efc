/**
 * afterCutover "reverse" (issue 22 part 1): after the cutover the target's changes flow back to the
 * still-fenced source (FALLBACK_READY) until `rollback` (ROLLING_BACK → ROLLED_BACK: the source holds
 * every write made on the target) or `commit` (COMPLETED); a cancel in FALLBACK_READY leaves nothing.
 * Real clusters, a real Temporal dev server, the shop workload on the source and then on the target.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { MigrationStatus } from '../../workflows/contract';
import { migrationIdFor, reverseIdFor, slotNameFor } from '../../workflows/names';
import { startEnv, type MigrationHandle, type TestEnv } from '../harness/env';
import { fingerprint, sequenceValues } from '../harness/compare';
import { SHOP_TABLES, startWriter } from '../harness/fixtures';
import { startCluster, type PgCluster } from '../harness/pg-cluster';
import { WorkflowFailedError } from '@temporalio/client';
import { waitFor } from '../harness/wait';

let env: TestEnv;
let dbCounter = 0;

beforeAll(async () => {
  env = await startEnv();
});

afterAll(async () => {
  await env?.stop();
});

const SCHEMAS = ['public', 'Sales Dept'];

async function freshDatabases(scale: number): Promise<{ db: string; source: string; target: string }> {
  const db = `fallback${++dbCounter}`;
  await env.shopDatabase(db, scale);
  return { db, source: env.source.uri(db), target: env.target.uri(db) };
}

/** Every shop table equal on both servers, by rows and content hash. */
async function expectSameContent(db: string): Promise<void> {
  for (const [schema, table] of SHOP_TABLES) {
    const a = await fingerprint(env.source, db, schema, table);
    const b = await fingerprint(env.target, db, schema, table);
    expect({ table: `${schema}.${table}`, ...a }).toEqual({ table: `${schema}.${table}`, ...b });
  }
}

/** What pg-dts could leave on one server's database. */
async function leftovers(cluster: PgCluster, db: string): Promise<{ slots: number; publications: number; fenceTriggers: number; progressRows: number }> {
  const [r] = await cluster.query<{ slots: number; publications: number; fenceTriggers: number; progressRows: number }>(
    `SELECT (SELECT count(*)::int FROM pg_replication_slots WHERE database = current_database()) AS slots,
            (SELECT count(*)::int FROM pg_publication) AS publications,
            (SELECT count(*)::int FROM pg_trigger WHERE tgname LIKE 'pg_dts_fence%') AS "fenceTriggers",
            CASE WHEN to_regclass('pgdts.apply_progress') IS NULL THEN 0
                 ELSE (xpath('/row/n/text()', query_to_xml('SELECT count(*) AS n FROM pgdts.apply_progress', false, true, '')))[1]::text::int END AS "progressRows"`,
    [],
    db,
  );
  return r!;
}

const writeError = (cluster: PgCluster, db: string, sql: string) =>
  cluster.query(sql, [], db).then(
    () => undefined,
    (e: { code?: string }) => e.code,
  );

function signal(m: MigrationHandle, name: 'commit' | 'rollback'): Promise<void> {
  return env.temporal.client.workflow.getHandle(m.workflowId).signal(name);
}

/** Online migration of the shop under writes on the source, cut over (auto), up to FALLBACK_READY. */
async function migrateToFallback(scale: number, validation: Record<string, unknown> = { sampleSize: 200 }, extra: Record<string, unknown> = {}): Promise<{ db: string; m: MigrationHandle; ready: MigrationStatus }> {
  const { db, source, target } = await freshDatabases(scale);
  const writer = startWriter(() => env.source.client(db), { pauseMs: 2 });
  while (writer.stats.transactions < 20) await new Promise((r) => setTimeout(r, 50));
  const m = await env.startMigration({
    source,
    target,
    schemas: SCHEMAS,
    cutover: { mode: 'auto', maxLagBytes: 256 * 1024 },
    afterCutover: 'reverse',
    validation,
    ...extra,
  });
  const ready = await m.waitForPhase('FALLBACK_READY', 150_000);
  // The fence stopped the writer on the source: a real application now moves to the target.
  const stats = await writer.stop();
  expect(stats.errors).toEqual([]);
  expect(stats.fenced).toBe(true);
  return { db, m, ready };
}

/** Waits until the reverse apply has brought the source to the target's content. */
async function waitForReverseSync(db: string): Promise<void> {
  await waitFor('the source to hold the target’s writes', async () => {
    for (const [schema, table] of SHOP_TABLES) {
      const a = await fingerprint(env.source, db, schema, table);
      const b = await fingerprint(env.target, db, schema, table);
      if (a.hash !== b.hash) return undefined;
    }
    return true;
  }, 60_000, 300);
}

/** Commit and cancel: counts and sampled rows at the cutover (the rollback's migration runs the full content proof). */
const QUICK = { checksum: false, sampleSize: 100 };

describe('fallback: reverse replication after the cutover', () => {
  it('rollback under writes on the target, across a worker restart: the source holds every write, sequences included, and takes writes again', async () => {
    // A short history (historyEventsLimit) lets FALLBACK_READY continue as a new run below.
    const { db, m, ready } = await migrateToFallback(0.1, undefined, { historyEventsLimit: 200 });
    const handle = env.temporal.client.workflow.getHandle(m.workflowId);
    const firstRun = (await handle.describe()).runId;
    const id = migrationIdFor(m.workflowId);
    const reverseSlot = slotNameFor(reverseIdFor(id));
    expect(ready.fallback?.slot).toBe(reverseSlot);
    const desc = await env.temporal.client.workflow.getHandle(m.workflowId).describe();
    expect(desc.searchAttributes.MigrationPhase).toEqual(['FALLBACK_READY']);
    // The reverse replication exists on the target; the forward one is gone from the source.
    expect(await leftovers(env.target, db)).toMatchObject({ slots: 1, publications: 1 });
    expect(await leftovers(env.source, db)).toMatchObject({ slots: 0, publications: 0, fenceTriggers: SHOP_TABLES.length });
    // The fence lets only replica-mode sessions (the reverse apply's) through: the application is refused.
    expect(await writeError(env.source, db, `INSERT INTO public.kv VALUES ('app-on-source', 1)`)).toBe('25006');

    // The application on the target: the workload (inserts, updates, deletes, key changes, TRUNCATE,
    // rollbacks, savepoints, duplicates under REPLICA IDENTITY FULL) plus explicit writes.
    // The workload's own keys start again from 1: the source writer's are renamed first (updates of
    // unique keys, which flow back too).
    await env.target.query(
      `UPDATE public.kv SET k = 'src-' || k WHERE k LIKE 'w%' OR k LIKE 'sp-kept-%';
       UPDATE public.customers SET email = 'src-' || email WHERE email LIKE 'w%';`,
      [],
      db,
    );
    const writer = startWriter(() => env.target.client(db), { pauseMs: 1 });
    const writes = async (n: number) => {
      const until = writer.stats.transactions + n;
      await waitFor(`${n} more transactions on the target`, async () => (writer.stats.errors.length ? true : writer.stats.transactions >= until ? true : undefined), 60_000, 50);
      expect(writer.stats.errors).toEqual([]);
    };
    await env.target.query(
      `INSERT INTO public.customers (email, name) SELECT 'target' || g || '@example.com', NULL FROM generate_series(1, 50) g;
       UPDATE public.customers SET name = 'moved ' || id WHERE id % 7 = 0;
       DELETE FROM "Sales Dept"."Order Items" WHERE order_id % 11 = 0;
       UPDATE public.documents SET id = id + 500000, body = body || ' changed on target' WHERE id % 13 = 0 AND id < 100000;
       UPDATE public.kv SET k = 'target-' || k WHERE v % 5 = 0;
       SELECT nextval('public.customers_id_seq') FROM generate_series(1, 25);
       SELECT nextval('public.orders_id_seq') FROM generate_series(1, 40);`,
      [],
      db,
    );
    await writes(150);
    // History grown past the limit (ignored resume signals are events too): the run continues as new
    // and goes straight back to the reverse apply, which resumes from the source's progress row.
    for (let i = 0; i < 60; i++) await handle.signal('resume');
    await waitFor('FALLBACK_READY to continue as new', async () => ((await handle.describe()).runId !== firstRun ? true : undefined), 60_000, 200);
    await writes(100);
    // A worker crash while the reverse apply runs: it resumes from the source's progress row.
    await env.restartWorker();
    await writes(150);
    const s = await m.status();
    expect(s.phase).toBe('FALLBACK_READY');
    expect(s.replication?.slot).toBe(reverseSlot);
    expect(typeof s.replication?.lagBytes).toBe('number');

    // Rollback while the application still writes the target: the target's fence stops it.
    await signal(m, 'rollback');
    const stats = await writer.done.then(() => writer.stats);
    expect(stats.errors).toEqual([]);
    expect(stats.fenced).toBe(true);
    expect(stats.transactions).toBeGreaterThanOrEqual(300);
    const report = await m.result();
    expect(report.phase).toBe('ROLLED_BACK');
    // The run that rolled back was started by FALLBACK_READY continuing as new.
    const history = await env.temporal.client.workflow.getHandle(m.workflowId).fetchHistory();
    const started = history.events?.[0]?.workflowExecutionStartedEventAttributes;
    expect(started?.continuedExecutionRunId).toBeTruthy();
    const carried = JSON.parse(Buffer.from(started!.input!.payloads![1]!.data!).toString('utf8')) as { fallback?: boolean };
    expect(carried.fallback).toBe(true);
    expect(report.fallback).toMatchObject({ slot: reverseSlot, decision: 'rollback' });
    expect(report.fallback?.sequences?.map((q) => q.source).sort()).toEqual(['public.customers_id_seq', 'public.orders_id_seq']);
    expect((await m.status()).phase).toBe('ROLLED_BACK');
    const done = await env.temporal.client.workflow.getHandle(m.workflowId).describe();
    expect(done.searchAttributes.MigrationPhase).toEqual(['ROLLED_BACK']);

    await expectSameContent(db);
    // Sequences carried back: the source continues where the target stopped.
    const [srcSeq, dstSeq] = await Promise.all([sequenceValues(env.source, db), sequenceValues(env.target, db)]);
    expect(srcSeq).toEqual(dstSeq);
    const [c] = await env.source.query<{ n: string }>(`SELECT count(*)::text AS n FROM public.customers WHERE email LIKE 'target%'`, [], db);
    expect(Number(c!.n)).toBe(50);

    // The source is writable again (new keys from its synced sequences do not collide); the target stays fenced.
    await env.source.query(`INSERT INTO public.customers (email) VALUES ('back-on-source@example.com')`, [], db);
    expect(await writeError(env.target, db, `INSERT INTO public.kv VALUES ('app-on-target', 1)`)).toBe('25006');
    expect(await leftovers(env.source, db)).toEqual({ slots: 0, publications: 0, fenceTriggers: 0, progressRows: 0 });
    expect(await leftovers(env.target, db)).toEqual({ slots: 0, publications: 0, fenceTriggers: SHOP_TABLES.length, progressRows: 0 });
    const [schema] = await env.source.query(`SELECT 1 FROM pg_namespace WHERE nspname = 'pgdts'`, [], db);
    expect(schema, 'the source keeps no pgdts schema').toBeUndefined();
  });

  it('commit: changes flowed back during FALLBACK_READY (pause and resume too), then the reverse replication is dropped and the source stays fenced', async () => {
    const { db, m } = await migrateToFallback(0.05, QUICK);
    await env.target.query(`INSERT INTO public.kv VALUES ('t1', 1); DELETE FROM public.scratch WHERE id < 10; UPDATE public.documents SET title = 'retitled' WHERE id = 3`, [], db);
    await waitForReverseSync(db);
    // Pause stops the reverse apply (the target's slot keeps the WAL); resume brings what waited.
    await env.temporal.client.workflow.getHandle(m.workflowId).signal('pause');
    await waitFor('the pause', async () => ((await m.status()).paused ? true : undefined));
    await waitFor('the reverse apply to stop', async () => {
      const slots = await env.target.query<{ active: boolean }>(`SELECT active FROM pg_replication_slots WHERE database = current_database()`, [], db);
      return slots.length === 1 && !slots[0]!.active ? true : undefined;
    });
    await env.target.query(`INSERT INTO public.kv VALUES ('while-paused', 2)`, [], db);
    await new Promise((r) => setTimeout(r, 1000));
    const [paused] = await env.source.query(`SELECT 1 FROM public.kv WHERE k = 'while-paused'`, [], db);
    expect(paused, 'nothing applied while paused').toBeUndefined();
    await env.temporal.client.workflow.getHandle(m.workflowId).signal('resume');
    await waitForReverseSync(db);

    await signal(m, 'commit');
    const report = await m.result();
    expect(report.phase).toBe('COMPLETED');
    expect(report.fallback?.decision).toBe('commit');
    expect(await leftovers(env.target, db)).toEqual({ slots: 0, publications: 0, fenceTriggers: 0, progressRows: 0 });
    expect(await leftovers(env.source, db)).toEqual({ slots: 0, publications: 0, fenceTriggers: SHOP_TABLES.length, progressRows: 0 });
    // The old server is abandoned: every write is refused there, replica-mode sessions' included.
    expect(await writeError(env.source, db, `INSERT INTO public.kv VALUES ('after-commit', 1)`)).toBe('25006');
    expect(await writeError(env.source, db, `SET session_replication_role = replica; INSERT INTO public.kv VALUES ('after-commit', 1)`)).toBe('25006');
    // The target is the database of record.
    await env.target.query(`INSERT INTO public.kv VALUES ('after-commit', 1)`, [], db);
  });

  it('cancel during FALLBACK_READY leaves nothing on either server and the source writable', async () => {
    const { db, m } = await migrateToFallback(0.05, QUICK);
    await env.target.query(`INSERT INTO public.kv VALUES ('t-cancel', 1)`, [], db);
    await m.signal('cancel');
    const report = await m.result();
    expect(report.phase).toBe('CANCELLED');
    for (const cluster of [env.source, env.target]) {
      expect(await leftovers(cluster, db)).toEqual({ slots: 0, publications: 0, fenceTriggers: 0, progressRows: 0 });
    }
    const [schema] = await env.source.query(`SELECT 1 FROM pg_namespace WHERE nspname = 'pgdts'`, [], db);
    expect(schema, 'the source keeps no pgdts schema').toBeUndefined();
    // Both servers take writes: the cut-over target keeps its tables, the source its fence no more.
    await env.source.query(`INSERT INTO public.kv VALUES ('after-cancel', 1)`, [], db);
    await env.target.query(`INSERT INTO public.kv VALUES ('after-cancel', 1)`, [], db);
  });

  it('a target that cannot stream back is refused by the preflight, before anything is created; offline is refused as a spec error', async () => {
    const plain = await startCluster({ name: 'no-logical', settings: { wal_level: 'replica' } });
    try {
      const db = `fallback${++dbCounter}`;
      await env.shopDatabase(db, 0.01);
      await plain.createDatabase(db);
      const m = await env.startMigration({ source: env.source.uri(db), target: plain.uri(db), schemas: SCHEMAS, afterCutover: 'reverse' });
      const err = (await m.result().catch((e: unknown) => e)) as WorkflowFailedError;
      expect(err).toBeInstanceOf(WorkflowFailedError);
      expect(String(err.cause?.message)).toContain('the target has wal_level = replica; afterCutover "reverse" (a slot on the target after the cutover) needs wal_level = logical');
      expect(await plain.query(`SELECT 1 FROM pg_tables WHERE schemaname NOT IN ('pg_catalog', 'information_schema')`, [], db)).toHaveLength(0);
      expect(await leftovers(env.source, db)).toEqual({ slots: 0, publications: 0, fenceTriggers: 0, progressRows: 0 });

      const offline = await env.startMigration({ source: env.source.uri(db), target: env.target.uri(db), mode: 'offline', afterCutover: 'reverse' });
      const err2 = (await offline.result().catch((e: unknown) => e)) as WorkflowFailedError;
      expect(String(err2.cause?.message)).toContain('afterCutover: "reverse" replicates the target\'s changes back to the source after the cutover and needs mode "online"');
    } finally {
      await plain.destroy();
    }
  });
});

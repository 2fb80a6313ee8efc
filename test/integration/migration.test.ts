/**
 * The migration workflow end to end, on real PostgreSQL clusters and a real Temporal dev server.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { WorkflowFailedError } from '@temporalio/client';
import { startEnv, type TestEnv } from '../harness/env';
import { fingerprint } from '../harness/compare';
import { SHOP_TABLES, startWriter } from '../harness/fixtures';
import { activitySpans, peakSessions, type ActivitySpan } from '../harness/history';


let env: TestEnv;
let dbCounter = 0;

/** A fresh source database with the shop schema and a fresh empty target database. */
async function freshDatabases(scale = 1): Promise<{ db: string; source: string; target: string }> {
  const db = `shop${++dbCounter}`;
  await env.shopDatabase(db, scale);
  return { db, source: env.source.uri(db), target: env.target.uri(db) };
}

async function expectSameContent(db: string, map: (schema: string, table: string) => [string, string]): Promise<void> {
  for (const [schema, table] of SHOP_TABLES) {
    const [ts, tt] = map(schema, table);
    const a = await fingerprint(env.source, db, schema, table);
    const b = await fingerprint(env.target, db, ts, tt);
    expect({ table: `${schema}.${table}`, ...b }).toEqual({ table: `${schema}.${table}`, ...a });
  }
}

async function replicationLeftovers(db: string): Promise<{ slots: number; publications: number; fenceTriggers: number }> {
  const [r] = await env.source.query<{ slots: number; publications: number; fenceTriggers: number }>(
    `SELECT (SELECT count(*)::int FROM pg_replication_slots WHERE database = current_database()) AS slots,
            (SELECT count(*)::int FROM pg_publication) AS publications,
            (SELECT count(*)::int FROM pg_trigger WHERE tgname LIKE 'pg_dts_fence%') AS "fenceTriggers"`,
    [],
    db,
  );
  return r!;
}

beforeAll(async () => {
  env = await startEnv({ sourceSettings: { logical_decoding_work_mem: "'64kB'" } });
});

afterAll(async () => {
  await env?.stop();
});

describe('offline migration', () => {
  it('copies schema and data through the name mapping, phases visible, counts and content equal', async () => {
    const { db, source, target } = await freshDatabases();
    await env.source.query(`CREATE VIEW public.big_orders AS SELECT o.id, c.email FROM public.orders o JOIN public.customers c ON c.id = o.customer_id WHERE o.total > 100`, [], db);
    const m = await env.startMigration({
      source,
      target,
      schemas: ['public', 'Sales Dept'],
      tableSuffix: '_migrated',
      schemaMapping: { public: 'app' },
      mode: 'offline',
      parallelism: 3,
      objects: true,
    });
    const report = await m.result();
    expect(report.phase).toBe('COMPLETED');
    expect(report.tables).toHaveLength(SHOP_TABLES.length);
    for (const t of report.tables) {
      expect(t.countsMatch).toBe(true);
      expect(t.sourceRows).toBeGreaterThan(0);
    }
    const status = await m.status();
    expect(status.phase).toBe('COMPLETED');
    await expectSameContent(db, (s, t) => [s === 'public' ? 'app' : s, `${t}_migrated`]);

    // The foreign key and the index were created after the load, on the mapped names.
    const fks = await env.target.query<{ def: string }>(
      `SELECT pg_get_constraintdef(oid) AS def FROM pg_constraint WHERE contype = 'f' AND conrelid = '"Sales Dept"."Order Items_migrated"'::regclass`,
      [],
      db,
    );
    expect(fks.map((f) => f.def)).toEqual(['FOREIGN KEY (order_id) REFERENCES app.orders_migrated(id)']);
    const idx = await env.target.query(`SELECT 1 FROM pg_indexes WHERE schemaname = 'app' AND indexname = 'orders_placed_at_idx_migrated'`, [], db);
    expect(idx).toHaveLength(1);

    // objects: the view was recreated after the data, on the mapped tables.
    expect(report.objects?.created.some((o) => o.includes('big_orders'))).toBe(true);
    const [srcView] = await env.source.query<{ n: string }>(`SELECT count(*)::text AS n FROM public.big_orders`, [], db);
    const [dstView] = await env.target.query<{ n: string }>(`SELECT count(*)::text AS n FROM app.big_orders_migrated`, [], db);
    expect(dstView!.n).toBe(srcView!.n);

    // The search attribute follows the phase.
    const desc = await env.temporal.client.workflow.getHandle(m.workflowId).describe();
    expect(desc.searchAttributes.MigrationPhase).toEqual(['COMPLETED']);
  });

  it('refuses unknown tables and malformed specs at once, naming the problem', async () => {
    const { db, source, target } = await freshDatabases(0.01);
    const unknown = await env.startMigration({ source, target, tables: ['public.customers', 'public.nope'], mode: 'offline' });
    const err = await unknown.result().catch((e: unknown) => e);
    expect(err).toBeInstanceOf(WorkflowFailedError);
    expect(String((err as WorkflowFailedError).cause?.message)).toContain('table(s) not found on the source: public.nope');

    const malformed = await env.startMigration({ source, target, parallelism: 0, colour: 'blue' });
    const err2 = await malformed.result().catch((e: unknown) => e);
    expect(String((err2 as WorkflowFailedError).cause?.message)).toMatch(/invalid migration spec: .*parallelism/);

    const unreachable = await env.startMigration({ source: 'postgres://postgres@127.0.0.1:1/none', target, mode: 'offline' });
    const err3 = await unreachable.result().catch((e: unknown) => e);
    expect(String((err3 as WorkflowFailedError).cause?.message)).toContain('cannot connect to the source (127.0.0.1:1/none)');

    // Nothing was created on the target by any of them.
    const created = await env.target.query(`SELECT 1 FROM pg_tables WHERE schemaname NOT IN ('pg_catalog', 'information_schema')`, [], db);
    expect(created).toHaveLength(0);
  });
});

describe('online migration', () => {
  it('keeps up with concurrent writes, fences, syncs sequences and ends with identical tables and nothing left behind', async () => {
    const { db, source, target } = await freshDatabases();
    const writer = startWriter(() => env.source.client(db), { bigTransactionRows: 50_000 });
    // Let the writer get going before the copy starts.
    while (writer.stats.transactions < 20) await new Promise((r) => setTimeout(r, 50));
    const m = await env.startMigration({
      source,
      target,
      schemas: ['public', 'Sales Dept'],
      tableSuffix: '_new',
      cutover: { mode: 'manual' },
      validation: { checksum: true, sampleSize: 500, live: true },
    });
    const syncing = await m.waitForPhase('SYNCING_WAL');
    expect(syncing.tables.every((t) => t.state === 'syncing')).toBe(true);
    // Writes keep flowing while the apply streams them; wait until the status shows progress.
    const before = writer.stats.transactions;
    for (let i = 0; i < 100; i++) {
      const s = await m.status();
      if (s.replication && s.replication.transactions > 0 && writer.stats.transactions > before + 50) break;
      await new Promise((r) => setTimeout(r, 200));
    }
    expect((await m.status()).replication?.transactions).toBeGreaterThan(0);
    // The advisory live comparison ran while the writer was going and found nothing wrong.
    let liveResult = (await m.status()).liveValidation;
    for (let i = 0; i < 300 && !liveResult; i++) {
      await new Promise((r) => setTimeout(r, 200));
      liveResult = (await m.status()).liveValidation;
    }
    expect(liveResult?.length, (await m.status()).notices.join('\n')).toBe(SHOP_TABLES.length);
    expect(liveResult!.filter((r) => r.checksum === 'mismatch')).toEqual([]);
    await m.signal('cutover');
    const report = await m.result();
    const stats = await writer.stop();
    expect(stats.errors).toEqual([]);
    expect(stats.fenced).toBe(true); // the writer ran until the fence stopped it
    expect(report.phase).toBe('COMPLETED');
    expect(report.cutoverWindowMs).toBeGreaterThanOrEqual(0);
    // VALIDATING stops the apply by its request (stop-request.ts) as well as by cancelling it: whichever
    // comes first, the workflow takes the apply's end for the stop, not for an apply to restart.
    const applies = (await activitySpans(env.temporal, m.workflowId)).filter((a) => a.type === 'applyChanges');
    expect(applies.map((a) => a.outcome)).toEqual([expect.stringMatching(/^(completed|cancelled)$/)]);
    expect(report.notices.join('\n')).not.toMatch(/stopped unexpectedly/);
    // The keyless audit_log is not sampled at the cutover: its proof vouches for every row (strict.ts).
    for (const t of report.tables) {
      const sample = t.source === 'public.audit_log' ? 'not-run' : 'match';
      expect({ t: t.source, counts: t.countsMatch, sample: t.sample, checksum: t.checksum }).toEqual({ t: t.source, counts: true, sample, checksum: 'match' });
    }
    await expectSameContent(db, (s, t) => [s, `${t}_new`]);

    // Sequences: the target's are at least the source's.
    const seqs = await env.source.query<{ s: string; last: string }>(`SELECT s.schemaname || '.' || s.sequencename AS s, coalesce(s.last_value, 0)::text AS last FROM pg_sequences s`, [], db);
    expect(seqs.length).toBeGreaterThanOrEqual(2);
    for (const { s, last } of seqs) {
      const [schema, name] = s.split('.') as [string, string];
      const [t] = await env.target.query<{ last: string }>(
        `SELECT coalesce(last_value, 0)::text AS last FROM pg_sequences WHERE schemaname = $1 AND sequencename = $2`,
        [schema, `${name}_new`],
        db,
      );
      expect(t, `target sequence for ${s}`).toBeDefined();
      expect(BigInt(t!.last) >= BigInt(last)).toBe(true);
    }

    expect(await replicationLeftovers(db)).toEqual({ slots: 0, publications: 0, fenceTriggers: 0 });
    // The source accepts writes again.
    await env.source.query(`INSERT INTO public.kv VALUES ('after-cutover', 1)`, [], db);
  });

  it('survives the apply being killed mid-stream and a worker restart: resumed apply ends identical, no duplicates', async () => {
    const { db, source, target } = await freshDatabases(0.5);
    const writer = startWriter(() => env.source.client(db));
    const m = await env.startMigration({ source, target, schemas: ['public', 'Sales Dept'], tableSuffix: '_k', cutover: { mode: 'manual' } });
    await m.waitForPhase('SYNCING_WAL');
    const waitApplied = async (more: number) => {
      const start = (await m.status()).replication?.transactions ?? 0;
      for (let i = 0; i < 150; i++) {
        const s = await m.status();
        if ((s.replication?.transactions ?? 0) >= start + more) return;
        await new Promise((r) => setTimeout(r, 200));
      }
      throw new Error('the apply made no progress');
    };
    await waitApplied(20);
    // Kill the apply's sessions on both servers: the activity fails and Temporal retries it.
    const killed = await env.target.query<{ n: number }>(
      `SELECT count(pg_terminate_backend(pid))::int AS n FROM pg_stat_activity WHERE application_name LIKE 'pg-dts apply%' AND pid <> pg_backend_pid()`,
    );
    await env.source.query(`SELECT pg_terminate_backend(pid) FROM pg_stat_replication`);
    expect(killed[0]!.n).toBeGreaterThan(0);
    await waitApplied(20);
    // A worker crash: the in-flight apply is lost and restarted by the new worker.
    await env.restartWorker();
    await waitApplied(20);
    await m.signal('cutover');
    const report = await m.result();
    const stats = await writer.stop();
    expect(stats.errors).toEqual([]);
    expect(report.phase).toBe('COMPLETED');
    // audit_log has no key and gets duplicates on purpose: a re-applied transaction would show here.
    await expectSameContent(db, (s, t) => [s, `${t}_k`]);
    expect(await replicationLeftovers(db)).toEqual({ slots: 0, publications: 0, fenceTriggers: 0 });
  });

  it('recovers when the exported snapshot is lost during the copy: the copy in flight redone in a new snapshot, identical', async () => {
    const { db, source, target } = await freshDatabases(0.1);
    await env.source.query(`CREATE TABLE public.big (id int PRIMARY KEY, pad text); INSERT INTO public.big SELECT g, repeat('x', 200) FROM generate_series(1, 400000) g`, [], db);
    const writer = startWriter(() => env.source.client(db));
    const m = await env.startMigration({ source, target, schemas: ['public', 'Sales Dept'], tableSuffix: '_r', parallelism: 1, cutover: { mode: 'manual' } });
    // The connection that exported the snapshot dies (a network drop, a restart of its backend) while
    // a copy reads in its snapshot: killed as soon as a COPY runs on the source (the big table's copy
    // lasts seconds), not at a status poll, which a fast batch of small tables could outrun.
    let killed = 0;
    for (const deadline = Date.now() + 60_000; killed === 0 && Date.now() < deadline; ) {
      const [r] = await env.source.query<{ n: number }>(
        `SELECT count(pg_terminate_backend(pid))::int AS n FROM pg_stat_activity
          WHERE application_name = 'pg-dts snapshot'
            AND EXISTS (SELECT 1 FROM pg_stat_activity WHERE datname = current_database() AND state = 'active' AND query ILIKE 'COPY %TO STDOUT%')`,
        [],
        db,
      );
      killed = r!.n;
      if (!killed) await new Promise((res) => setTimeout(res, 20));
    }
    expect(killed).toBe(1);
    const syncing = await m.waitForPhase('SYNCING_WAL', 180_000);
    expect(syncing.notices.join('\n')).toMatch(/snapshot holder lost \(attempt 1\)/);
    await m.signal('cutover');
    const report = await m.result();
    const stats = await writer.stop();
    expect(stats.errors).toEqual([]);
    expect(report.phase).toBe('COMPLETED');
    await expectSameContent(db, (s, t) => [s, `${t}_r`]);
    const [a, b] = [await fingerprint(env.source, db, 'public', 'big'), await fingerprint(env.target, db, 'public', 'big_r')];
    expect(b).toEqual(a);
    expect(await replicationLeftovers(db)).toEqual({ slots: 0, publications: 0, fenceTriggers: 0 });
  });

  it('auto cutover under writes; keep-source-read-only leaves the source fenced', async () => {
    const { db, source, target } = await freshDatabases(0.2);
    const writer = startWriter(() => env.source.client(db), { pauseMs: 2 });
    const m = await env.startMigration({
      source,
      target,
      schemas: ['public', 'Sales Dept'],
      tableSuffix: '_a',
      cutover: { mode: 'auto', maxLagBytes: 256 * 1024 },
      afterCutover: 'keep-source-read-only',
    });
    const report = await m.result();
    const stats = await writer.stop();
    expect(stats.errors).toEqual([]);
    expect(stats.fenced).toBe(true);
    expect(report.phase).toBe('COMPLETED');
    expect(report.cutoverWindowMs).toBeUndefined(); // writes were never released
    await expectSameContent(db, (s, t) => [s, `${t}_a`]);
    const write = await env.source.query(`INSERT INTO public.kv VALUES ('after', 1)`, [], db).catch((e: { code?: string }) => e.code);
    expect(write).toBe('25006');
    const left = await replicationLeftovers(db);
    expect({ slots: left.slots, publications: left.publications }).toEqual({ slots: 0, publications: 0 });
    expect(left.fenceTriggers).toBe(SHOP_TABLES.length);
  });

  it('a target corrupted during the sync fails validation naming the key, and the source is released', async () => {
    const { db, source, target } = await freshDatabases(0.1);
    const m = await env.startMigration({ source, target, tables: ['public.orders', 'public.kv'], tableSuffix: '_v', cutover: { mode: 'manual' }, validation: { checksum: true } });
    await m.waitForPhase('SYNCING_WAL');
    await env.target.query(`UPDATE public.orders_v SET total = total + 0.0001 WHERE id = 42`, [], db);
    await env.target.query(`DELETE FROM public.kv_v WHERE k = 'key7'`, [], db);
    await m.signal('cutover');
    const err = (await m.result().catch((e: unknown) => e)) as WorkflowFailedError;
    expect(err).toBeInstanceOf(WorkflowFailedError);
    const message = String(err.cause?.message);
    expect(message).toContain('validation failed');
    expect(message).toMatch(/public\.orders -> public\.orders_v: .*id=42: different \(total\)/);
    expect(message).toMatch(/public\.kv -> public\.kv_v: .*k=key7: missing-on-target/);
    const failed = await m.status();
    expect(failed.phase).toBe('FAILED');
    expect(failed.validation?.find((v) => v.source === 'public.orders')).toMatchObject({ countsMatch: true, checksum: 'mismatch', mismatches: 1 });
    expect(await replicationLeftovers(db)).toEqual({ slots: 0, publications: 0, fenceTriggers: 0 });
    await env.source.query(`INSERT INTO public.kv VALUES ('after-failure', 1)`, [], db);
  });

  it('cancel during SYNCING_WAL drops the slot, publication and target tables', async () => {
    const { db, source, target } = await freshDatabases(0.1);
    const m = await env.startMigration({ source, target, cutover: { mode: 'manual' } });
    await m.waitForPhase('SYNCING_WAL');
    expect((await replicationLeftovers(db)).slots).toBe(1);
    await m.signal('cancel');
    const report = await m.result();
    expect(report.phase).toBe('CANCELLED');
    expect(await replicationLeftovers(db)).toEqual({ slots: 0, publications: 0, fenceTriggers: 0 });
    const left = await env.target.query(`SELECT 1 FROM pg_tables WHERE schemaname NOT IN ('pg_catalog', 'information_schema')`, [], db);
    expect(left).toHaveLength(0);
    await env.source.query(`INSERT INTO public.kv VALUES ('after-cancel', 1)`, [], db);
  });
});

describe('post-load DDL per table', () => {
  const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
  /** The copy batch a finishTargetTables activity finished ('foreign-keys' for the last one). */
  const finishOf = (s: ActivitySpan) => {
    const input = s.input[0] as { part?: string; batch?: number };
    return input.part === 'tables' ? `batch ${input.batch}` : input.part ?? 'all';
  };
  const copyOf = (s: ActivitySpan) => `batch ${(s.input[0] as { batch: number }).batch}`;

  it("a copied table's indexes are built while another table still copies, within the parallelism; foreign keys last; identical", async () => {
    const db = `overlap${++dbCounter}`;
    await env.source.createDatabase(db);
    await env.target.createDatabase(db);
    await env.source.query(
      `CREATE TABLE public.big (id int PRIMARY KEY, pad text);
       INSERT INTO public.big SELECT g, repeat('x', 200) FROM generate_series(1, 1500000) g;
       CREATE TABLE public.small (id int PRIMARY KEY, big_id int REFERENCES public.big (id), label text UNIQUE);
       INSERT INTO public.small SELECT g, g * 7, 'label ' || g FROM generate_series(1, 20000) g;
       CREATE INDEX small_big_id ON public.small (big_id);`,
      [],
      db,
    );
    const m = await env.startMigration({ source: env.source.uri(db), target: env.target.uri(db), tables: ['public.big', 'public.small'], tableSuffix: '_o', parallelism: 2 });
    // On the target itself: small's three indexes exist while big's COPY is still running.
    let overlapSeen = false;
    for (let i = 0; i < 4000 && !overlapSeen; i++) {
      const [r] = await env.target.query<{ indexes: number; copying: number }>(
        `SELECT (SELECT count(*)::int FROM pg_indexes WHERE schemaname = 'public' AND tablename = 'small_o') AS indexes,
                (SELECT count(*)::int FROM pg_stat_activity WHERE datname = current_database() AND state = 'active' AND query LIKE 'COPY "public"."big_o"%') AS copying`,
        [],
        db,
      );
      if (r!.indexes === 3 && r!.copying > 0) overlapSeen = true;
      else if (!['INIT', 'CREATING_TABLES', 'MIGRATING_DATA'].includes((await m.status()).phase)) break;
      else await sleep(25);
    }
    const report = await m.result();
    expect(report.phase).toBe('COMPLETED');
    expect(overlapSeen).toBe(true);

    // In the history: small's post-load activity ran before big's copy ended, each table's exactly once,
    // and the foreign keys only after every copy and every table's own DDL.
    const spans = await activitySpans(env.temporal, m.workflowId);
    // Each table is a batch of its own (big is over a quarter of a batch's bytes), the biggest first.
    const copies = spans.filter((s) => s.type === 'copyTableBatch');
    const finishes = spans.filter((s) => s.type === 'finishTargetTables');
    expect(finishes.map(finishOf).sort()).toEqual(['batch 0', 'batch 1', 'foreign-keys']);
    const bigCopy = copies.find((s) => copyOf(s) === 'batch 0')!;
    const smallFinish = finishes.find((s) => finishOf(s) === 'batch 1')!;
    expect(smallFinish.outcome).toBe('completed');
    expect(smallFinish.endedAt!).toBeLessThan(bigCopy.endedAt!);
    const fk = finishes.find((s) => finishOf(s) === 'foreign-keys')!;
    for (const s of [...copies, ...finishes.filter((f) => f !== fk)]) expect(fk.startedAt!).toBeGreaterThanOrEqual(s.endedAt!);
    // Copies and index builds together never held more sessions than the parallelism.
    const sessions = (s: ActivitySpan) => (s.type === 'finishTargetTables' ? ((s.input[0] as { parallelism?: number }).parallelism ?? 4) : 1);
    expect(peakSessions([...copies, ...finishes], sessions)).toBeLessThanOrEqual(2);

    for (const t of ['big', 'small']) expect(await fingerprint(env.target, db, 'public', `${t}_o`)).toEqual(await fingerprint(env.source, db, 'public', t));
    const defs = await env.target.query<{ def: string }>(
      `SELECT pg_get_constraintdef(oid) AS def FROM pg_constraint WHERE conrelid IN ('public.small_o'::regclass, 'public.big_o'::regclass) ORDER BY 1`,
      [],
      db,
    );
    expect(defs.map((d) => d.def)).toEqual(['FOREIGN KEY (big_id) REFERENCES big_o(id)', 'PRIMARY KEY (id)', 'PRIMARY KEY (id)', 'UNIQUE (label)']);
  });
});

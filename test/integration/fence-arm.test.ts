/**
 * The pre-installed fence (real clusters, no Temporal): installFence puts pass-through triggers in
 * place, fenceSource arms them by replacing the function. A transaction that wrote before the arm and
 * commits after it must be before the marker (the apply has it on the target); a write after the arm
 * is refused with 25006. Also the write stop's fence duration on 2,000 tables, creating vs arming.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startCluster, type PgCluster } from '../harness/pg-cluster';
import { fenceSource, installFence, liftFence } from '../../activities/stop-writes';
import type { ApplyProgress } from '../../activities/apply/options';
import { runApply } from '../../activities/apply/run';
import type { ConnectionSpec } from '../../activities/spec';

let source: PgCluster;
let target: PgCluster;

beforeAll(async () => {
  [source, target] = await Promise.all([startCluster({ name: 'fence-src' }), startCluster({ name: 'fence-tgt' })]);
});

afterAll(async () => {
  await Promise.all([source?.destroy(), target?.destroy()]);
});

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const conn = (c: PgCluster): ConnectionSpec => c.uri();

async function content(c: PgCluster, table: string): Promise<string[]> {
  const rows = await c.query<{ r: string }>(`SELECT t::text AS r FROM ${table} t ORDER BY 1`);
  return rows.map((x) => x.r);
}

/** Applies the slot's changes until the fence marker `token`. */
async function applyUntil(token: string, tables: string[]): Promise<void> {
  const ac = new AbortController();
  let reached: (p: ApplyProgress) => void = () => undefined;
  const seen = new Promise<ApplyProgress>((r) => (reached = r));
  const result = runApply({
    source: source.uri(),
    target: target.uri(),
    slot: 'fs',
    publication: 'fp',
    tables: tables.map((n) => ({ source: { schema: 'public', name: n }, target: { schema: 'public', name: n } })),
    progressIntervalMs: 200,
    signal: ac.signal,
    onProgress: (p) => {
      if (p.fenceToken === token) reached(p);
    },
  });
  result.catch(() => undefined);
  await Promise.race([seen, sleep(60_000).then(() => Promise.reject(new Error(`the apply did not reach the fence ${token}`)))]);
  ac.abort();
  await result.catch(() => undefined);
}

describe('pre-installed fence', () => {
  const tables = [
    { schema: 'public', name: 'fa' },
    { schema: 'public', name: 'fb' },
  ];

  it('arms without creating triggers: a write in flight across the arm reaches the target before the marker, a new write is refused', async () => {
    for (const c of [source, target]) await c.query(`CREATE TABLE fa (id int PRIMARY KEY, v text); CREATE TABLE fb (id int PRIMARY KEY, v text)`);
    await source.query(`CREATE PUBLICATION fp FOR TABLE fa, fb`);
    await source.query(`SELECT pg_create_logical_replication_slot('fs', 'pgoutput')`);
    await source.query(`INSERT INTO fa SELECT g, 'a' || g FROM generate_series(1, 50) g`);

    const input = { source: conn(source), migrationId: 'farm', tables };
    expect(await installFence(input)).toEqual({ installed: 2, present: 0 });
    // Idempotent, and the installed fence lets writes through.
    expect(await installFence(input)).toEqual({ installed: 0, present: 2 });
    await source.query(`INSERT INTO fb VALUES (1, 'during the sync')`);
    const trig = await source.query<{ n: number }>(`SELECT count(*)::int AS n FROM pg_trigger WHERE tgname = 'pg_dts_fence_farm' AND tgenabled = 'A'`);
    expect(trig[0]!.n).toBe(2);

    // A writer in flight: wrote before the arm, commits after it.
    const writer = await source.client();
    await writer.query('BEGIN');
    await writer.query(`INSERT INTO fa VALUES (1000, 'before the arm')`);
    await writer.query(`UPDATE fb SET v = 'updated before the arm' WHERE id = 1`);
    let fencedAt = 0;
    const fencing = fenceSource({ ...input, maxWriteStopSeconds: 30 }).then((r) => {
      fencedAt = Date.now();
      return r;
    });
    await sleep(1000);
    // The function is armed already (a new transaction is refused) but the marker waits for the writer.
    expect(fencedAt).toBe(0);
    await expect(source.query(`INSERT INTO fb VALUES (2, 'after the arm')`)).rejects.toMatchObject({ code: '25006' });
    const committedAt = Date.now();
    await writer.query('COMMIT');
    await writer.end();
    const fence = await fencing;
    expect(fencedAt).toBeGreaterThanOrEqual(committedAt);
    expect(fence.deadline).toBeDefined();
    // Every kind of write is refused after the arm, on every fenced table.
    await expect(source.query(`DELETE FROM fa WHERE id = 1`)).rejects.toMatchObject({ code: '25006' });
    await expect(source.query(`UPDATE fb SET v = 'x'`)).rejects.toMatchObject({ code: '25006' });

    await applyUntil(fence.token, ['fa', 'fb']);
    for (const t of ['fa', 'fb']) expect(await content(target, t)).toEqual(await content(source, t));
    expect(await content(target, 'fa')).toContain('(1000,"before the arm")');

    // Lifted: writes go through, triggers and function are gone.
    await liftFence(input);
    await source.query(`INSERT INTO fb VALUES (3, 'after the lift')`);
    const left = await source.query<{ n: number }>(
      `SELECT (SELECT count(*) FROM pg_trigger WHERE tgname = 'pg_dts_fence_farm') + (SELECT count(*) FROM pg_proc WHERE proname = 'fence_farm') AS n`,
    );
    expect(Number(left[0]!.n)).toBe(0);
  }, 90_000);

  it('a writer that does not end within the wait: the arm is undone (writes go on) and the fence fails as a lock timeout', async () => {
    const input = { source: conn(source), migrationId: 'fwait', tables };
    await installFence(input);
    const writer = await source.client();
    await writer.query('BEGIN');
    await writer.query(`INSERT INTO fa VALUES (2000, 'long writer')`);
    await expect(fenceSource({ ...input, maxWriteStopSeconds: 30 })).rejects.toThrow(/lock timeout/);
    await source.query(`INSERT INTO fb VALUES (4, 'the failed fence let writes through')`);
    await writer.query('COMMIT');
    await writer.end();
    await liftFence(input);
  }, 60_000);

  it.each([
    ['armed', true],
    ['created', false],
  ] as const)('the marker of a fence %s is flushed when the fence returns, on a source with synchronous_commit off', async (_how, install) => {
    // A walsender sends only flushed WAL: a marker left to the WAL writer reached the apply up to
    // wal_writer_delay later (200 ms by default, inside the write stop). Slowed to 10 s here, so only
    // the fence's own flush can have written it.
    await source.query(`ALTER SYSTEM SET wal_writer_delay = '10s'`);
    await source.query(`SELECT pg_reload_conf()`);
    const input = { source: conn(source), migrationId: install ? 'fflush_a' : 'fflush_c', tables };
    try {
      await source.query(`CREATE TABLE IF NOT EXISTS fa (id int PRIMARY KEY, v text); CREATE TABLE IF NOT EXISTS fb (id int PRIMARY KEY, v text)`);
      if (install) await installFence(input);
      const sc = await source.query<{ s: string }>(`SELECT current_setting('synchronous_commit') AS s`);
      expect(sc[0]!.s).toBe('off');
      const fence = await fenceSource({ ...input, maxWriteStopSeconds: 30 });
      const flushed = await source.query<{ ok: boolean }>(`SELECT pg_current_wal_flush_lsn() > $1::pg_lsn AS ok`, [fence.fenceLsn]);
      expect(flushed[0]!.ok).toBe(true);
    } finally {
      await liftFence(input);
      await source.query(`ALTER SYSTEM RESET wal_writer_delay`);
      await source.query(`SELECT pg_reload_conf()`);
    }
  }, 60_000);

  it('on 2,000 tables the write stop arms in one transaction instead of creating 2,000 triggers', async () => {
    const n = 2000;
    await source.query(`DO $$ BEGIN FOR i IN 1..${n} LOOP EXECUTE format('CREATE TABLE many_%s (id int PRIMARY KEY)', i); END LOOP; END $$`);
    const many = Array.from({ length: n }, (_, i) => ({ schema: 'public', name: `many_${i + 1}` }));
    const create = { source: conn(source), migrationId: 'fcreate', tables: many };
    let t0 = Date.now();
    await fenceSource({ ...create, maxWriteStopSeconds: 60 });
    const creatingMs = Date.now() - t0;
    await liftFence(create);

    const armed = { source: conn(source), migrationId: 'fpre', tables: many };
    t0 = Date.now();
    await installFence(armed);
    const installMs = Date.now() - t0;
    t0 = Date.now();
    await fenceSource({ ...armed, maxWriteStopSeconds: 60 });
    const armingMs = Date.now() - t0;
    await liftFence(armed);
    console.log(`fenceSource on ${n} tables: creating ${creatingMs} ms, arming ${armingMs} ms (installFence during the sync: ${installMs} ms)`);
    expect(armingMs).toBeLessThan(creatingMs);
  }, 180_000);
});

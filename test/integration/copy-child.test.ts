/**
 * Issue 16: the copy runs in a child workflow whose runs continue as new every COPY_RUN_BATCHES
 * batches, so no run's history grows with the batches. 260 tables in 130 batches (two a batch: the
 * planner's bytes cap, MAX_BATCHES, groups them) make the child continue as new once; a pause and a resume in the middle reach the child through
 * the migration; every table ends equal and every run's history stays small.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { defaultPayloadConverter } from '@temporalio/common';
import { startEnv, type TestEnv } from '../harness/env';
import { historyLimits, workflowHistories } from '../harness/history';
import type { PgCluster } from '../harness/pg-cluster';
import { COPY_RUN_BATCHES } from '../../workflows/copy-state';

const TABLES = 260;
let env: TestEnv;

beforeAll(async () => {
  env = await startEnv();
});

afterAll(async () => {
  await env?.stop();
});

async function fingerprints(cluster: PgCluster, db: string): Promise<string[]> {
  const parts: string[] = [];
  for (let i = 1; i <= TABLES; i++) {
    parts.push(`SELECT ${i} AS t, count(*)::text || ':' || coalesce(md5(string_agg(r::text, ',' ORDER BY r::text)), '') AS f FROM c.t${i} r`);
  }
  const rows = await cluster.query<{ t: number; f: string }>(`${parts.join(' UNION ALL ')} ORDER BY 1`, [], db);
  return rows.map((r) => `${r.t}=${r.f}`);
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('the copy in a child workflow', () => {
  it('continues as new past COPY_RUN_BATCHES batches, follows a pause and a resume, every table equal, every run small', async () => {
    const db = 'child';
    await env.source.createDatabase(db);
    await env.target.createDatabase(db);
    await env.source.query('CREATE SCHEMA c', [], db);
    await env.source.query(
      `DO $$ BEGIN FOR i IN 1..${TABLES} LOOP
         EXECUTE format('CREATE TABLE c.t%s (id int PRIMARY KEY, v text NOT NULL)', i);
         EXECUTE format('INSERT INTO c.t%s SELECT g, md5(g::text || %L) FROM generate_series(1, 30) g', i, i);
       END LOOP; END $$`,
      [],
      db,
    );
    const m = await env.startMigration({
      source: env.source.uri(db),
      target: env.target.uri(db),
      schemas: ['c'],
      parallelism: 2,
      copy: { batchTables: 1 },
      cutover: { mode: 'manual' },
    });
    // The migration's status follows the child's batches.
    let s = await m.status();
    for (const deadline = Date.now() + 120_000; (s.progress?.batchesDone ?? 0) < 40 && Date.now() < deadline; s = await m.status()) await sleep(100);
    expect(s.phase).toBe('MIGRATING_DATA');
    const batches = s.progress!.batchesTotal!;
    expect(batches).toBeGreaterThan(COPY_RUN_BATCHES);

    // A pause stops the child's copies: nothing more lands while paused (the reports catch up first).
    await m.signal('pause');
    await sleep(3000);
    const paused = (await m.status()).progress!;
    await sleep(3000);
    const stillPaused = await m.status();
    expect(stillPaused.paused).toBe(true);
    expect(stillPaused.progress!.batchesDone).toBe(paused.batchesDone);
    expect(paused.batchesDone!).toBeLessThan(batches);
    await m.signal('resume');

    const syncing = await m.waitForPhase('SYNCING_WAL', 240_000);
    expect(syncing.progress).toMatchObject({ tablesCopied: TABLES, batchesDone: batches, batchesTotal: batches, rowsCopied: TABLES * 30 });
    expect(syncing.copying).toBeUndefined();
    await env.source.query(`UPDATE c.t7 SET v = 'changed' WHERE id = 3; DELETE FROM c.t250 WHERE id = 1; INSERT INTO c.t1 VALUES (1000, 'new')`, [], db);
    await m.signal('cutover');
    const report = await m.result();
    expect(report.phase).toBe('COMPLETED');
    expect(await fingerprints(env.target, db)).toEqual(await fingerprints(env.source, db));

    // The child ran in at least two runs (continue-as-new), none with more than COPY_RUN_BATCHES batches;
    // the migration's own history holds no copy batch.
    const runs = await workflowHistories(env.temporal, m.workflowId);
    /** The batches a run took (one a pause interrupted is scheduled again in the same run), and those it completed. */
    const batchesOf = (h: (typeof runs)[number]) => {
      const events = h.history.events ?? [];
      const scheduled = new Map<string, number>();
      for (const e of events) {
        const a = e.activityTaskScheduledEventAttributes;
        if (a?.activityType?.name === 'copyTableBatch') scheduled.set(String(e.eventId), defaultPayloadConverter.fromPayload<{ batch: number }>(a.input!.payloads![0]!).batch);
      }
      const completed = events.map((e) => scheduled.get(String(e.activityTaskCompletedEventAttributes?.scheduledEventId))).filter((b) => b !== undefined);
      return { scheduled: new Set(scheduled.values()).size, completed };
    };
    const children = runs.filter((r) => r.workflowId !== m.workflowId);
    expect(children.length).toBeGreaterThanOrEqual(2);
    expect(new Set(children.map((c) => c.workflowId)).size).toBe(1);
    for (const c of children) expect(batchesOf(c).scheduled).toBeLessThanOrEqual(COPY_RUN_BATCHES);
    // Every batch landed.
    expect(new Set(children.flatMap((c) => batchesOf(c).completed)).size).toBe(batches);
    for (const r of runs.filter((x) => x.workflowId === m.workflowId)) expect(batchesOf(r).scheduled).toBe(0);
    for (const r of await historyLimits(env.temporal, m.workflowId)) {
      expect({ run: r.runId, events: r.events <= 10_000, payload: r.largestPayload <= 512 * 1024, task: r.longestTaskMs <= 1000 }).toEqual({ run: r.runId, events: true, payload: true, task: true });
    }
  }, 400_000);
});

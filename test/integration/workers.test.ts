/**
 * Issue 16: several workers on one task queue share one migration's copy batches, and a worker killed
 * mid-copy (SIGKILL: no goodbye to Temporal or PostgreSQL) loses only its batch in flight, which the
 * other worker redoes once the batch's heartbeat times out. The snapshot holder stays on the worker
 * that lives (the second worker starts after it), so nothing else is redone.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { defaultPayloadConverter } from '@temporalio/common';
import { startEnv, type TestEnv } from '../harness/env';
import type { PgCluster } from '../harness/pg-cluster';
import { pendingActivities, workflowHistories } from '../harness/history';

const TABLES = 300;
const ROWS = 2000;
let env: TestEnv;
let other: ChildProcess | undefined;

beforeAll(async () => {
  env = await startEnv();
});

afterAll(async () => {
  other?.kill('SIGKILL');
  await env?.stop();
});

async function fingerprints(cluster: PgCluster, db: string): Promise<string[]> {
  const parts = Array.from({ length: TABLES }, (_, i) => `SELECT ${i + 1} AS t, count(*) || ':' || md5(string_agg(r::text, ',' ORDER BY r.id)) AS f FROM w.t${i + 1} r`);
  const rows = await cluster.query<{ t: number; f: string }>(`${parts.join(' UNION ALL ')} ORDER BY 1`, [], db);
  return rows.map((r) => `${r.t}=${r.f}`);
}

/**
 * Who started each attempt of each activity, from the histories of the migration and its copy
 * children (ActivityTaskStarted carries the identity).
 */
async function attempts(workflowId: string) {
  const started: Array<{ type: string; batch?: number; activityId: string; identity: string; attempt: number }> = [];
  for (const { history: h } of await workflowHistories(env.temporal, workflowId, { latestOnly: true })) {
    const scheduled = new Map<string, { type: string; batch?: number; activityId: string }>();
    for (const e of h.events ?? []) {
      const s = e.activityTaskScheduledEventAttributes;
      if (s) {
        const input = defaultPayloadConverter.fromPayload<{ batch?: number }>(s.input!.payloads![0]!);
        scheduled.set(String(e.eventId), { type: s.activityType?.name ?? '', batch: input?.batch, activityId: s.activityId ?? '' });
      }
      const st = e.activityTaskStartedEventAttributes;
      if (st) started.push({ ...scheduled.get(String(st.scheduledEventId))!, identity: st.identity ?? '', attempt: st.attempt ?? 1 });
    }
  }
  return started;
}

describe('two workers', () => {
  it('share the copy batches; one killed mid-copy, the other redoes its batches in flight and nothing else; content equal', async () => {
    const db = 'workers';
    await env.source.createDatabase(db);
    await env.target.createDatabase(db);
    await env.source.query('CREATE SCHEMA w', [], db);
    await env.source.query(
      `DO $$ BEGIN FOR i IN 1..${TABLES} LOOP
         EXECUTE format('CREATE TABLE w.t%s (id int PRIMARY KEY, v text NOT NULL)', i);
         EXECUTE format('INSERT INTO w.t%s SELECT g, repeat(md5(g::text || %L), 3) FROM generate_series(1, ${ROWS}) g', i, i);
         IF i % 100 = 0 THEN COMMIT; END IF;
       END LOOP; END $$`,
      [],
      db,
    );
    // Batches of 5 tables: 60 of them, so that both workers get some.
    const m = await env.startMigration({
      source: env.source.uri(db),
      target: env.target.uri(db),
      schemas: ['w'],
      parallelism: 2,
      copy: { batchTables: 5 },
      cutover: { mode: 'manual' },
    });
    // The holder runs on this process's worker: the second one starts only once the copy has begun.
    await m.waitForPhase('MIGRATING_DATA', 120_000);
    await m.signal('pause');
    for (const deadline = Date.now() + 60_000; ; ) {
      const d = await env.temporal.client.workflow.getHandle(m.workflowId).describe();
      if ((d.raw.pendingActivities ?? []).some((p) => p.activityType?.name === 'holdSnapshot' && Number(p.state) === 2)) break;
      if (Date.now() > deadline) throw new Error('the snapshot holder did not start');
      await new Promise((r) => setTimeout(r, 100));
    }
    other = spawn(process.execPath, ['--require', 'tsx/cjs', path.join(__dirname, '../../worker/main.ts')], {
      cwd: path.join(__dirname, '../..'),
      env: { ...process.env, TEMPORAL_ADDRESS: env.temporal.address, TEMPORAL_NAMESPACE: 'default', TEMPORAL_TASK_QUEUE: env.taskQueue },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const identity = `${other.pid}@`;
    // The second worker's output, kept for the failure message.
    let otherLog = '';
    for (const stream of [other.stdout!, other.stderr!]) stream.on('data', (b: Buffer) => (otherLog = (otherLog + b.toString()).slice(-4000)));
    // Both streams are read to the end (an unread pipe fills and blocks the worker's writes); the log
    // line saying it polls may come on either.
    await new Promise<void>((resolve, reject) => {
      for (const stream of [other!.stdout!, other!.stderr!]) stream.on('data', (b: Buffer) => b.toString().includes('polling task queue') && resolve());
      other!.on('exit', (code) => reject(new Error(`second worker exited (${code})`)));
    });
    await m.signal('resume');
    // Kill the second worker as soon as it has a batch in flight (a started attempt is in history only
    // once it ends: the pending activities say who runs what now).
    let killedActivity: string | undefined;
    const inFlight: string[] = [];
    const seen = new Set<string>();
    for (const deadline = Date.now() + 90_000; killedActivity === undefined; ) {
      const d = await env.temporal.client.workflow.getHandle(m.workflowId).describe();
      const pending = await pendingActivities(env.temporal, m.workflowId);
      if (Date.now() > deadline || d.status.name !== 'RUNNING') {
        const outcome = await m.result().then((r) => JSON.stringify({ phase: r.phase, error: (r as { error?: unknown }).error }), (e: Error) => `${e.message} ${String((e.cause as Error | undefined)?.message ?? '')}`);
        throw new Error(`the second worker (${identity}) never took a batch; seen: ${[...seen].join(', ')}; workflow ${d.status.name}: ${outcome}; its log: ${otherLog}`);
      }
      for (const p of pending) seen.add(`${p.activityType?.name}:${String(p.state)}:${p.lastWorkerIdentity}`);
      const mine = pending.filter(
        (p) => p.activityType?.name === 'copyTableBatch' && (p.lastWorkerIdentity ?? '').startsWith(identity) && Number(p.state) === 2,
      );
      if (mine.length) {
        other.kill('SIGKILL');
        // Its batches in flight (both runners may have been on it). Read again once it is dead: a batch
        // it took between the look above and the kill is in flight too (the server keeps the dead
        // worker as the pending activity's last worker until its heartbeat times out).
        await new Promise((r) => setTimeout(r, 500));
        const lost = (await pendingActivities(env.temporal, m.workflowId)).filter(
          (p) => p.activityType?.name === 'copyTableBatch' && (p.lastWorkerIdentity ?? '').startsWith(identity) && Number(p.state) === 2,
        );
        inFlight.push(...new Set([...mine, ...lost].map((p) => p.activityId ?? '')));
        killedActivity = inFlight[0];
      } else await new Promise((r) => setTimeout(r, 100));
    }
    await m.waitForPhase('SYNCING_WAL', 180_000);
    await m.signal('cutover');
    const report = await m.result();
    expect(report.phase).toBe('COMPLETED');

    const [a, b] = await Promise.all([fingerprints(env.source, db), fingerprints(env.target, db)]);
    expect(b).toEqual(a);
    const spans = await attempts(m.workflowId);
    const batches = spans.filter((s) => s.type === 'copyTableBatch');
    // The killed worker's batches in flight were redone (a later attempt, by the worker that lived);
    // nothing else was.
    for (const id of inFlight) {
      const redone = batches.find((s) => s.activityId === id);
      expect({ id, redone: redone !== undefined && redone.attempt >= 2 && !redone.identity.startsWith(identity) }).toEqual({ id, redone: true });
    }
    expect(batches.filter((s) => s.attempt > 1).map((s) => s.activityId).sort()).toEqual([...inFlight].sort());
    expect(spans.filter((s) => s.type === 'holdSnapshot')).toHaveLength(1);
  }, 300_000);
});

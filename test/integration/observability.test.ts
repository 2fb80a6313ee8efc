/**
 * What an operator watches, from outside, as a user runs it: a worker process started with
 * PG_DTS_METRICS_ADDRESS and PG_DTS_LOG_FORMAT=json. Its /metrics is scraped during the migration
 * (our gauges for that migration, the SDK's runtime metrics beside them) and its log lines are parsed
 * (every line JSON; phase changes and copied tables named, with the migration id).
 */
import { resolve } from 'node:path';
import type { TestWorkflowEnvironment } from '@temporalio/testing';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { WORKFLOW_TYPE, type MigrationReport, type MigrationStatus } from '../../workflows/contract';
import { fingerprint } from '../harness/compare';
import { freePort, startCluster, type PgCluster } from '../harness/pg-cluster';
import { startTemporal } from '../harness/temporal';
import { runCommand, startWorkerProcess, type WorkerProcess } from '../harness/process';

const root = resolve(__dirname, '..', '..');

/** `name{labels} value` lines of a Prometheus text page whose labels include every given one. */
function sample(page: string, name: string, labels: Record<string, string>): number | undefined {
  for (const line of page.split('\n')) {
    const m = /^([a-zA-Z_:][\w:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (!m || m[1] !== name) continue;
    const have = Object.fromEntries([...(m[2] ?? '').matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)].map((x) => [x[1], x[2]]));
    if (Object.entries(labels).every(([k, v]) => have[k] === v)) return Number(m[3]);
  }
  return undefined;
}

describe('worker metrics and JSON logs', () => {
  let temporal: TestWorkflowEnvironment;
  let source: PgCluster;
  let target: PgCluster;
  let worker: WorkerProcess | undefined;
  let metricsUrl: string;
  const taskQueue = `obs-${Date.now()}`;

  beforeAll(async () => {
    [temporal, source, target] = await Promise.all([startTemporal(), startCluster({ name: 'obs-src' }), startCluster({ name: 'obs-tgt' })]);
    await source.createDatabase('app');
    await target.createDatabase('app');
    await source.query(
      `CREATE TABLE accounts (id bigint PRIMARY KEY, balance numeric NOT NULL, note text);
       INSERT INTO accounts SELECT g, g * 10, 'n' || g FROM generate_series(1, 20000) g;
       CREATE TABLE events (id bigserial PRIMARY KEY, account bigint NOT NULL, at timestamptz NOT NULL DEFAULT now());
       INSERT INTO events (account) SELECT g % 100 FROM generate_series(1, 3000) g`,
      [],
      'app',
    );
    const port = await freePort();
    metricsUrl = `http://127.0.0.1:${port}/metrics`;
    worker = await startWorkerProcess(process.execPath, ['--require', 'tsx/cjs', 'worker/main.ts'], {
      cwd: root,
      env: { ...process.env, TEMPORAL_ADDRESS: temporal.address, TEMPORAL_TASK_QUEUE: taskQueue, PG_DTS_METRICS_ADDRESS: `127.0.0.1:${port}`, PG_DTS_LOG_FORMAT: 'json', PG_DTS_CODEC_KEY: '' },
    });
  }, 240_000);

  afterAll(async () => {
    worker?.child.kill('SIGKILL');
    await Promise.allSettled([source?.destroy(), target?.destroy(), temporal?.teardown()]);
  });

  it('exports the migration as it runs, and logs every event as one JSON line with the migration id', async () => {
    const id = `obs-${Date.now()}`;
    const handle = await temporal.client.workflow.start(WORKFLOW_TYPE, {
      taskQueue,
      workflowId: id,
      args: [{ source: source.uri('app'), target: target.uri('app'), cutover: { mode: 'manual' } }],
    });
    const deadline = Date.now() + 120_000;
    let status: MigrationStatus | undefined;
    while (Date.now() < deadline) {
      status = await handle.query<MigrationStatus>('status').catch(() => undefined);
      if (status?.phase === 'SYNCING_WAL' && status.replication) break;
      await new Promise((r) => setTimeout(r, 300));
    }
    expect(status?.phase).toBe('SYNCING_WAL');

    const first = await (await fetch(metricsUrl)).text();
    expect(sample(first, 'pgdts_migration_phase', { migration: id, phase: 'SYNCING_WAL' })).toBe(1);
    expect(sample(first, 'pgdts_migration_phase', { migration: id, phase: 'MIGRATING_DATA' })).toBe(0);
    expect(sample(first, 'pgdts_rows_copied', { migration: id })).toBe(23000);
    expect(sample(first, 'pgdts_apply_lag_bytes', { migration: id })).toBeGreaterThanOrEqual(0);
    const before = sample(first, 'pgdts_apply_transactions', { migration: id }) ?? -1;
    expect(before).toBeGreaterThanOrEqual(0);
    // The SDK's own runtime metrics come through the same endpoint.
    expect(first).toMatch(/^temporal_\w+/m);
    expect(first).toMatch(/^# TYPE pgdts_migration_phase gauge$/m);

    for (let i = 0; i < 30; i++) await source.query('UPDATE accounts SET balance = balance + 1 WHERE id = $1', [i + 1], 'app');
    await source.query(`INSERT INTO events (account) SELECT g FROM generate_series(1, 50) g`, [], 'app');
    let after = before;
    const until = Date.now() + 30_000;
    while (after < before + 31 && Date.now() < until) {
      await new Promise((r) => setTimeout(r, 500));
      after = sample(await (await fetch(metricsUrl)).text(), 'pgdts_apply_transactions', { migration: id }) ?? after;
    }
    expect(after).toBeGreaterThanOrEqual(before + 31);

    await handle.signal('cutover');
    const report = (await handle.result()) as MigrationReport;
    expect(report.phase).toBe('COMPLETED');
    for (const t of ['accounts', 'events']) {
      const [a, b] = await Promise.all([fingerprint(source, 'app', 'public', t), fingerprint(target, 'app', 'public', t)]);
      expect({ t, ...b }).toEqual({ t, ...a });
    }
    // dts report: the table a user reads, and the same report as JSON.
    const dts = (args: string[]) => runCommand(process.execPath, ['bin/dts.js', ...args], { cwd: root, env: { ...process.env, TEMPORAL_ADDRESS: temporal.address, PG_DTS_CODEC_KEY: '' } });
    const text = await dts(['report', id]);
    expect(text.code, text.err).toBe(0);
    expect(text.out.startsWith(`COMPLETED: migration ${report.migrationId} (online)`)).toBe(true);
    expect(text.out).toMatch(/public\.accounts\s+20000\s+20000\s+yes/);
    const json = await dts(['report', id, '--json']);
    expect(JSON.parse(json.out)).toEqual(JSON.parse(JSON.stringify(report)));
    const unknown = await dts(['report', 'no-such-migration']);
    expect(unknown.code).toBe(1);
    expect(unknown.err).toContain('no such migration');

    // Once ended, the migration leaves the endpoint.
    expect(sample(await (await fetch(metricsUrl)).text(), 'pgdts_migration_phase', { migration: id, phase: 'SYNCING_WAL' })).toBeUndefined();

    await new Promise((r) => setTimeout(r, 500));
    const lines = worker!.stdout().trim().split('\n');
    const entries = lines.map((l) => JSON.parse(l) as { time: string; level: string; message: string; migrationId?: string; table?: string });
    for (const e of entries) {
      expect(e.time).toMatch(/^\d{4}-\d\d-\d\dT/);
      expect(e.level).toMatch(/^(trace|debug|info|warn|error)$/);
    }
    const ours = entries.filter((e) => e.migrationId === report.migrationId);
    for (const phase of ['INIT', 'CREATING_TABLES', 'MIGRATING_DATA', 'SYNCING_WAL', 'STOPPING_WRITES', 'VALIDATING', 'FINALIZING', 'COMPLETED']) {
      expect(ours.map((e) => e.message)).toContain(`phase ${phase}`);
    }
    expect(ours.filter((e) => e.message === 'table copied').map((e) => e.table).sort()).toEqual(['public.accounts', 'public.events']);
  });
});

/**
 * Alerts (spec.notify): a real HTTP server in the test receives the webhooks of real migrations:
 * ready-for-cutover, lag and retained WAL over their thresholds, COMPLETED (then the data compared),
 * FAILED (in INIT, delivered on a retry after the receiver's 500) and CANCELLED. No payload carries a
 * user, a password or a connection string. The cancelled migration also shows that a cancel ends as
 * Temporal's CANCELED while `dts status`, `dts report`, `dts list` and the API still give its phase
 * and report.
 */
import { createServer, type Server } from 'node:http';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startEnv, type TestEnv } from '../harness/env';
import { SHOP_TABLES, startWriter } from '../harness/fixtures';
import { fingerprint, sourceLeftovers } from '../harness/compare';
import { dts } from '../harness/dts';
import { buildApi } from '../../client/api';
import { connectTemporal } from '../../client/temporal';
import { waitFor } from '../harness/wait';
import type { NotifyPayload } from '../../workflows/notify';

let env: TestEnv;
let server: Server;
let base: string;
/** Every POST received: path (with query), headers, body. */
const received: Array<{ path: string; event: string | undefined; body: NotifyPayload; raw: string }> = [];
/** Paths whose first delivery is answered 500. */
const failFirst = new Set<string>();

beforeAll(async () => {
  env = await startEnv();
  server = createServer((req, res) => {
    let raw = '';
    req.on('data', (d: Buffer) => (raw += d.toString()));
    req.on('end', () => {
      const path = req.url ?? '';
      if (failFirst.delete(path)) {
        res.writeHead(500).end();
        return;
      }
      received.push({ path, event: req.headers['x-pg-dts-event'] as string | undefined, body: JSON.parse(raw) as NotifyPayload, raw });
      res.writeHead(204).end();
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const addr = server.address();
  base = `http://127.0.0.1:${typeof addr === 'object' && addr ? addr.port : 0}`;
}, 180_000);

afterAll(async () => {
  await new Promise((r) => server?.close(r));
  await env?.stop();
});

const eventsAt = (path: string) => received.filter((r) => r.path === path).map((r) => r.body.event);

function noSecrets(path: string) {
  for (const r of received.filter((x) => x.path === path)) {
    expect(r.raw).not.toMatch(/postgres(ql)?:\/\//);
    expect(r.raw).not.toMatch(/postgres@|password/i);
    expect(r.event).toBe(r.body.event);
  }
}

describe('notify webhooks', () => {
  it('a migration sends ready-for-cutover, lag, retained-wal and completed; the data is equal', async () => {
    await env.shopDatabase('nt_ok', 0.2);
    const path = '/hooks/ok?token=t0k3n';
    const writer = startWriter(() => env.source.client('nt_ok'), { pauseMs: 5 });
    const m = await env.startMigration({
      source: env.source.uri('nt_ok'),
      target: env.target.uri('nt_ok'),
      schemas: ['public', 'Sales Dept'],
      cutover: { mode: 'manual' },
      notify: { url: `${base}${path}`, events: ['ready-for-cutover', 'lag', 'retained-wal', 'completed', 'failed', 'cancelled'], lagBytes: 1, retainedWalBytes: 1 },
    });
    const ready = await waitFor('ready-for-cutover webhook', async () => received.find((r) => r.path === path && r.body.event === 'ready-for-cutover'), 150_000);
    expect(ready.body).toMatchObject({ migrationId: expect.any(String), workflowId: m.workflowId, phase: 'SYNCING_WAL', source: `127.0.0.1:${env.source.port}/nt_ok`, message: expect.stringContaining('dts cutover') });
    await waitFor('retained-wal webhook', async () => eventsAt(path).includes('retained-wal') || undefined, 60_000);
    await writer.stop();
    await m.signal('cutover');
    const report = await m.result();
    expect(report.phase).toBe('COMPLETED');
    const completed = await waitFor('completed webhook', async () => received.find((r) => r.path === path && r.body.event === 'completed'), 30_000);
    expect(completed.body).toMatchObject({ phase: 'COMPLETED', tables: SHOP_TABLES.length, cutoverWindowMs: expect.any(Number) });
    const events = eventsAt(path);
    expect(events.filter((e) => e === 'ready-for-cutover')).toHaveLength(1);
    expect(events.filter((e) => e === 'completed')).toHaveLength(1);
    // The writer kept the apply behind by more than one byte at some report: once per crossing, not per report.
    expect(events).toContain('lag');
    expect(events.filter((e) => e === 'lag').length).toBeLessThan(10);
    expect(events).not.toContain('failed');
    noSecrets(path);
    for (const [schema, table] of SHOP_TABLES) {
      expect(await fingerprint(env.target, 'nt_ok', schema, table), `${schema}.${table}`).toEqual(await fingerprint(env.source, 'nt_ok', schema, table));
    }
  }, 300_000);

  it('a failure in INIT is sent, on a retry after the receiver failed once; the migration fails for its own reason', async () => {
    await env.shopDatabase('nt_fail', 0.05);
    await env.target.query('CREATE TABLE public.customers (id int)', [], 'nt_fail');
    const path = '/hooks/fail';
    failFirst.add(path);
    const m = await env.startMigration({ source: env.source.uri('nt_fail'), target: env.target.uri('nt_fail'), schemas: ['public', 'Sales Dept'], notify: { url: `${base}${path}` } });
    const err = await m.result().then(
      () => undefined,
      (e: Error) => e,
    );
    expect(err).toBeDefined();
    const failed = received.filter((r) => r.path === path);
    expect(failed.map((r) => r.body.event)).toEqual(['failed']);
    expect(failFirst.has(path), 'the first delivery was refused with 500').toBe(false);
    expect(failed[0]!.body).toMatchObject({ phase: 'FAILED', error: expect.stringContaining('target table(s) already exist') });
    noSecrets(path);
  }, 120_000);

  it("a cancel by signal: the cancelled webhook; Temporal's CANCELED, while dts and the API still show phase CANCELLED and the report", async () => {
    await env.shopDatabase('nt_cancel', 0.05);
    const path = '/hooks/cancel';
    const m = await env.startMigration({
      source: env.source.uri('nt_cancel'),
      target: env.target.uri('nt_cancel'),
      schemas: ['public', 'Sales Dept'],
      cutover: { mode: 'manual' },
      notify: { url: `${base}${path}`, events: ['cancelled', 'completed'] },
    });
    await m.waitForPhase('SYNCING_WAL');
    const saved = { ...process.env };
    process.env.TEMPORAL_ADDRESS = env.temporal.address;
    process.env.TEMPORAL_NAMESPACE = 'default';
    process.env.TEMPORAL_TASK_QUEUE = env.taskQueue;
    delete process.env.PG_DTS_CODEC_KEY;
    try {
      expect(await dts('cancel', m.workflowId)).toMatchObject({ code: 0 });
      const report = await m.result();
      expect(report).toMatchObject({ phase: 'CANCELLED', migrationId: expect.any(String) });
      const d = await env.temporal.client.workflow.getHandle(m.workflowId).describe();
      expect(d.status.name).toBe('CANCELLED');
      await waitFor('cancelled webhook', async () => eventsAt(path).includes('cancelled') || undefined, 60_000);
      expect(eventsAt(path)).toEqual(['cancelled']);
      noSecrets(path);

      const status = await dts('status', m.workflowId, '--json');
      expect(JSON.parse(status.out)).toMatchObject({ phase: 'CANCELLED' });
      const printed = await dts('report', m.workflowId, '--json');
      expect(printed.code, 'the report of a migration that did not complete exits 1').toBe(1);
      expect(JSON.parse(printed.out)).toMatchObject({ phase: 'CANCELLED', migrationId: report.migrationId });
      const listed = await dts('list', '--json');
      expect(listed.out.split('\n').map((l) => JSON.parse(l) as { id: string }).find((r) => r.id === m.workflowId)).toMatchObject({ temporalStatus: 'CANCELLED', phase: 'CANCELLED' });

      const ctx = await connectTemporal();
      const app = await buildApi({ temporal: ctx, token: null });
      try {
        const res = await app.inject({ method: 'GET', url: `/api/v1/migrations/${m.workflowId}` });
        expect(res.statusCode, res.body).toBe(200);
        expect(res.json()).toMatchObject({ state: 'cancelled', phase: 'CANCELLED', temporalStatus: 'CANCELLED', report: { phase: 'CANCELLED' } });
      } finally {
        await app.close();
        await ctx.close();
      }
    } finally {
      process.env = saved;
    }
    expect(await sourceLeftovers(env.source, 'nt_cancel')).toEqual({ slots: 0, pubs: 0, fences: 0 });
  }, 180_000);
});

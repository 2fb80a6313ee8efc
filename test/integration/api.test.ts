/**
 * The REST API over real HTTP, against a real Temporal dev server, worker and PostgreSQL clusters:
 * validation errors naming the field, create-without-start (nothing touched until /start), start,
 * pause, resume, cutover, cancel, list with paging, status, health, OpenAPI.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { FastifyInstance } from 'fastify';
import { startEnv, type TestEnv } from '../harness/env';
import { fingerprint, sourceLeftovers as leftoversOn } from '../harness/compare';
import { buildApi } from '../../client/api';
import type { TemporalContext } from '../../client/temporal';

let env: TestEnv;
let app: FastifyInstance;
let base: string;
let ctx: TemporalContext;
let n = 0;
const TABLES = ['customers', 'orders', 'kv'];

async function fresh(scale = 0.2) {
  const db = `api${++n}`;
  await env.shopDatabase(db, scale);
  return db;
}

/** The seed's body for database `db` on the test clusters. */
const body = (db: string, extra: Record<string, unknown> = {}) => ({
  source_db: { host: env.source.host, port: env.source.port, user: 'postgres', dbname: db, sslmode: 'disable' },
  target_db: { host: env.target.host, port: env.target.port, user: 'postgres', dbname: db },
  tables: TABLES.map((t) => `public.${t}`),
  table_suffix: '_new',
  ...extra,
});

async function http(method: string, path: string, json?: unknown): Promise<{ status: number; body: any; headers: Headers }> {
  const res = await fetch(`${base}${path}`, {
    method,
    headers: json !== undefined ? { 'content-type': 'application/json' } : {},
    body: json === undefined ? undefined : typeof json === 'string' ? json : JSON.stringify(json),
  });
  const text = await res.text();
  return { status: res.status, body: text ? JSON.parse(text) : undefined, headers: res.headers };
}

async function waitFor<T>(what: string, fn: () => Promise<T | undefined>, timeoutMs = 90_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 250));
  }
}

const statusWhere = (id: string, pred: (s: any) => boolean) =>
  waitFor(`status of ${id}`, async () => {
    const r = await http('GET', `/api/v1/migrations/${id}/status`);
    return r.status === 200 && pred(r.body) ? r.body : undefined;
  });

const sourceLeftovers = (db: string) => leftoversOn(env.source, db);
const targetTables = async (db: string) =>
  (await env.target.query<{ t: string }>(`SELECT tablename AS t FROM pg_tables WHERE schemaname = 'public' ORDER BY 1`, [], db)).map((r) => r.t);

beforeAll(async () => {
  env = await startEnv();
  ctx = {
    client: env.temporal.client,
    connection: env.temporal.connection,
    settings: { address: env.temporal.address, namespace: env.temporal.namespace ?? 'default', taskQueue: env.taskQueue },
    close: async () => undefined,
  };
  app = await buildApi({ temporal: ctx, queryTimeoutMs: 5000 });
  await app.listen({ port: 0, host: '127.0.0.1' });
  const addr = app.server.address();
  base = `http://127.0.0.1:${typeof addr === 'object' && addr ? addr.port : 0}`;
});
afterAll(async () => {
  await app?.close();
  await env?.stop();
});

describe('REST API', () => {
  it('reports health: Temporal reachable and workers polling, or 503 naming what is missing', async () => {
    const ok = await http('GET', '/api/v1/health');
    expect(ok.status).toBe(200);
    expect(ok.body).toMatchObject({ status: 'ok', temporal: { reachable: true }, taskQueue: env.taskQueue, payloadEncryption: { enabled: false } });
    expect(ok.body.workers.workflowPollers).toBeGreaterThan(0);
    expect(ok.body.workers.activityPollers).toBeGreaterThan(0);

    const idle = await buildApi({ temporal: ctx, taskQueue: 'nobody-polls-this-queue' });
    const r = await idle.inject({ method: 'GET', url: '/api/v1/health' });
    expect(r.statusCode).toBe(503);
    expect(r.json()).toMatchObject({ status: 'unavailable', temporal: { reachable: true }, workers: { workflowPollers: 0, activityPollers: 0 } });
    await idle.close();
  });

  it('serves its OpenAPI description', async () => {
    const r = await http('GET', '/api/v1/openapi.json');
    expect(r.status).toBe(200);
    expect(r.body.openapi).toBe('3.1.0');
    expect(Object.keys(r.body.paths).sort()).toEqual(
      [
        '/api/v1/assess',
        '/api/v1/health',
        '/api/v1/migrations',
        '/api/v1/migrations/{id}',
        '/api/v1/migrations/{id}/cancel',
        '/api/v1/migrations/{id}/commit',
        '/api/v1/migrations/{id}/cutover',
        '/api/v1/migrations/{id}/rollback',
        '/api/v1/migrations/{id}/pause',
        '/api/v1/migrations/{id}/resume',
        '/api/v1/migrations/{id}/start',
        '/api/v1/migrations/{id}/status',
      ].sort(),
    );
    expect(r.body.paths['/api/v1/migrations'].post.requestBody.content['application/json'].schema).toBeDefined();
    const create = r.body.components.schemas.CreateMigration;
    expect(create.required).toEqual(expect.arrayContaining(['source_db', 'target_db']));
    expect(Object.keys(r.body.components.schemas.DbConnection.properties)).toEqual(['host', 'port', 'user', 'password', 'dbname', 'sslmode']);
  });

  it('answers bad requests with 4xx and a JSON error naming the field', async () => {
    const db = 'nodb';
    const cases: Array<[unknown, string]> = [
      [{}, 'source_db'],
      [{ ...body(db), source_db: { port: 5432, user: 'u', dbname: 'd' } }, 'source_db.host'],
      [{ ...body(db), target_db: { ...body(db).target_db, port: 'abc' } }, 'target_db.port'],
      [{ ...body(db), bogus: 1 }, 'bogus'],
      [{ ...body(db), table_suffix: 'a-b' }, 'table_suffix'],
      [{ ...body(db), tables: [] }, 'tables'],
      [{ ...body(db), tables: ['a.b.c'] }, 'tables'],
      [{ ...body(db), cutover: 'sometimes' }, 'cutover'],
    ];
    for (const [b, field] of cases) {
      const r = await http('POST', '/api/v1/migrations', b);
      expect({ field, status: r.status }).toEqual({ field, status: 400 });
      expect(r.body).toMatchObject({ field, error: expect.stringContaining(field.split('.')[0]!) });
    }
    const secret = 'Pa55-w0rd-in-body';
    const pw = await http('POST', '/api/v1/migrations', { ...body(db), source_db: { ...body(db).source_db, password: secret } });
    expect(pw.status).toBe(400);
    expect(pw.body.field).toBe('source_db.password');
    expect(pw.body.error).toMatch(/PG_DTS_CODEC_KEY/);
    expect(JSON.stringify(pw.body)).not.toContain(secret);

    expect((await http('POST', '/api/v1/migrations', '{ not json')).status).toBe(400);
    expect(await http('GET', '/api/v1/migrations?limit=0')).toMatchObject({ status: 400, body: { field: 'limit' } });
    expect(await http('GET', '/api/v1/migrations?phase=SOMETIMES')).toMatchObject({ status: 400, body: { field: 'phase' } });
    expect(await http('GET', '/api/v1/migrations/no-such-migration')).toMatchObject({ status: 404, body: { error: expect.stringMatching(/no-such-migration/) } });
    expect((await http('POST', '/api/v1/migrations/no-such-migration/pause')).status).toBe(404);
    expect((await http('GET', '/api/v1/migrations/no-such-migration/status')).status).toBe(404);
  });

  it('creates without starting, then start, pause, resume, cutover run it to COMPLETED', async () => {
    const db = await fresh();
    const created = await http('POST', '/api/v1/migrations', body(db, { cutover: 'manual', id: `api-${db}` }));
    expect(created.status).toBe(201);
    const id = created.body.id as string;
    expect(id).toBe(`api-${db}`);
    expect(created.headers.get('location')).toBe(`/api/v1/migrations/${id}`);
    expect(created.body).toMatchObject({
      state: 'created',
      source: `postgres@${env.source.host}:${env.source.port}/${db}`,
      tables: TABLES.map((t) => `public.${t}`),
    });
    expect((await http('POST', '/api/v1/migrations', body(db, { id }))).status).toBe(409);

    // Created: nothing ran, not even the read-only preflight (no table list yet); nothing anywhere.
    const held = await statusWhere(id, (s) => s.state === 'created');
    expect(held).toMatchObject({ phase: 'INIT', paused: true, tables: [] });
    await new Promise((r) => setTimeout(r, 1000));
    expect((await http('GET', `/api/v1/migrations/${id}`)).body).toMatchObject({ state: 'created', phase: 'INIT' });
    expect((await http('GET', `/api/v1/migrations/${id}/status`)).body.tables).toEqual([]);
    expect(await sourceLeftovers(db)).toEqual({ slots: 0, pubs: 0, fences: 0 });
    expect(await targetTables(db)).toEqual([]);
    expect(await http('POST', `/api/v1/migrations/${id}/pause`)).toMatchObject({ status: 409, body: { error: expect.stringMatching(/not started/) } });

    expect(await http('POST', `/api/v1/migrations/${id}/start`)).toMatchObject({ status: 202, body: { action: 'start', signal: 'resume' } });
    await statusWhere(id, (s) => s.phase === 'SYNCING_WAL');
    expect(await http('POST', `/api/v1/migrations/${id}/start`)).toMatchObject({ status: 409, body: { error: expect.stringMatching(/already started/) } });

    expect((await http('POST', `/api/v1/migrations/${id}/pause`)).status).toBe(202);
    const paused = await statusWhere(id, (s) => s.paused);
    expect(paused).toMatchObject({ state: 'paused', phase: 'SYNCING_WAL' });
    // Writes while paused reach the target after resume.
    await env.source.query(`INSERT INTO public.kv (k, v) SELECT 'api-' || g, g FROM generate_series(1, 50) g`, [], db);
    await env.source.query(`UPDATE public.customers SET name = name || '!' WHERE id % 7 = 0`, [], db);
    expect((await http('POST', `/api/v1/migrations/${id}/resume`)).status).toBe(202);
    await statusWhere(id, (s) => !s.paused && s.state === 'running');

    expect(await http('POST', `/api/v1/migrations/${id}/cutover`)).toMatchObject({ status: 202, body: { signal: 'cutover' } });
    await statusWhere(id, (s) => s.phase === 'COMPLETED');
    for (const t of TABLES) {
      expect({ t, ...(await fingerprint(env.target, db, 'public', `${t}_new`)) }).toEqual({ t, ...(await fingerprint(env.source, db, 'public', t)) });
    }
    expect(await sourceLeftovers(db)).toEqual({ slots: 0, pubs: 0, fences: 0 });

    const detail = await waitFor('completed detail', async () => {
      const r = await http('GET', `/api/v1/migrations/${id}`);
      return r.body.state === 'completed' ? r.body : undefined;
    });
    expect(detail).toMatchObject({ temporalStatus: 'COMPLETED', phase: 'COMPLETED', error: null, status: { phase: 'COMPLETED' } });
    expect(detail.report.tables.map((t: { target: string; countsMatch: boolean }) => [t.target, t.countsMatch])).toEqual(
      TABLES.map((t) => [`public.${t}_new`, true]),
    );
    expect(await http('POST', `/api/v1/migrations/${id}/cancel`)).toMatchObject({ status: 409, body: { error: expect.stringMatching(/has ended \(completed\)/) } });
  });

  it('cancels a created migration: CANCELLED, nothing left on either side', async () => {
    const db = await fresh(0.05);
    const created = await http('POST', '/api/v1/migrations', body(db));
    expect(created.status).toBe(201);
    const id = created.body.id as string;
    expect(id).toMatch(/^migration-[0-9a-f-]{36}$/);
    await statusWhere(id, (s) => s.state === 'created');
    expect(await http('POST', `/api/v1/migrations/${id}/cancel`)).toMatchObject({ status: 202, body: { signal: 'cancel' } });
    const detail = await waitFor('cancelled', async () => {
      const r = await http('GET', `/api/v1/migrations/${id}`);
      return r.body.state === 'cancelled' ? r.body : undefined;
    });
    expect(detail.phase).toBe('CANCELLED');
    expect(await sourceLeftovers(db)).toEqual({ slots: 0, pubs: 0, fences: 0 });
    expect(await targetTables(db)).toEqual([]);
  });

  it('lists migrations from Temporal visibility, newest first, with limit and offset', async () => {
    const all = await waitFor('two migrations listed', async () => {
      const r = await http('GET', '/api/v1/migrations?limit=100');
      return r.body.total >= 2 && r.body.migrations.length >= 2 ? r.body : undefined;
    });
    expect(all).toMatchObject({ limit: 100, offset: 0 });
    const states = Object.fromEntries(all.migrations.map((m: { id: string; state: string }) => [m.id, m.state]));
    expect(Object.values(states).sort()).toEqual(['cancelled', 'completed']);
    expect(all.migrations[0].createdAt >= all.migrations[1].createdAt).toBe(true);
    const page = await http('GET', '/api/v1/migrations?limit=1&offset=1');
    expect(page.body.migrations.map((m: { id: string }) => m.id)).toEqual([all.migrations[1].id]);
    const completed = await waitFor('phase filter', async () => {
      const r = await http('GET', '/api/v1/migrations?phase=COMPLETED');
      return r.body.migrations.length === 1 ? r.body : undefined;
    });
    expect(completed.migrations[0]).toMatchObject({ state: 'completed', phase: 'COMPLETED' });
  });
});

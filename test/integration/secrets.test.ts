/**
 * A password given in the REST body never appears in plain text in workflow history, API responses,
 * API logs or error messages, when client, API and worker share the payload codec; the codec
 * endpoint decodes for whoever holds the key (checked with the real `temporal` CLI). The clusters
 * require the password (scram-sha-256) for the migration's role, so the migration really uses it.
 */
import { randomBytes } from 'node:crypto';
import { execFile } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { FastifyInstance } from 'fastify';
import { Client } from '@temporalio/client';
import type { Worker } from '@temporalio/worker';
import { Client as PgClient } from 'pg';
import { startEnv, type TestEnv } from '../harness/env';
import { fingerprint } from '../harness/compare';
import { workflowHistories } from '../harness/history';
import { loadShopData, SHOP_SCHEMA } from '../harness/fixtures';
import type { PgCluster } from '../harness/pg-cluster';
import { buildApi } from '../../client/api';
import { AesGcmCodec, ENCRYPTED_ENCODING, parseCodecKeys } from '../../client/codec';
import { WORKFLOW_TYPE } from '../../workflows/contract';
import { createWorker } from '../../worker/worker';
import { findTemporalCli } from '../../worker/temporal-cli';

const run = promisify(execFile);
const PASSWORD = `pw-${randomBytes(9).toString('hex')}`;
const WRONG = `wrong-${randomBytes(9).toString('hex')}`;
const ROLE = 'migrator';
const TABLES = ['customers', 'orders', 'documents'];

let env: TestEnv;
let codec: AesGcmCodec;
let client: Client;
let worker: Worker;
let running: Promise<void>;
let app: FastifyInstance;
let base: string;
const queue = `secrets-${randomBytes(4).toString('hex')}`;
const apiLog: string[] = [];

/** Every string and every byte array (as UTF-8) of a history: plaintext anywhere shows up. */
function historyText(history: unknown): string {
  const out: string[] = [];
  const seen = new Set<unknown>();
  const walk = (v: unknown): void => {
    if (typeof v === 'string') out.push(v);
    else if (v instanceof Uint8Array) out.push(Buffer.from(v).toString('utf8'));
    else if (v && typeof v === 'object' && !seen.has(v)) {
      seen.add(v);
      for (const x of Array.isArray(v) ? v : Object.values(v)) walk(x);
    }
  };
  walk(history);
  return out.join('\n');
}

/** The role logs in only with its password (scram), over TCP and for replication. */
async function requirePassword(cluster: PgCluster): Promise<void> {
  await cluster.query(`CREATE ROLE ${ROLE} LOGIN SUPERUSER REPLICATION PASSWORD '${PASSWORD}'`);
  const hba = join(cluster.dataDir, 'pg_hba.conf');
  writeFileSync(hba, `host all ${ROLE} 127.0.0.1/32 scram-sha-256\nhost replication ${ROLE} 127.0.0.1/32 scram-sha-256\n${readFileSync(hba, 'utf8')}`);
  await cluster.query('SELECT pg_reload_conf()');
}

async function http(method: string, path: string, json?: unknown): Promise<{ status: number; body: any; text: string }> {
  const res = await fetch(`${base}${path}`, {
    method,
    headers: json !== undefined ? { 'content-type': 'application/json' } : {},
    body: json === undefined ? undefined : JSON.stringify(json),
  });
  const text = await res.text();
  return { status: res.status, body: text ? JSON.parse(text) : undefined, text };
}

const body = (db: string, password: string) => ({
  source_db: { host: env.source.host, port: env.source.port, user: ROLE, password, dbname: db },
  target_db: { host: env.target.host, port: env.target.port, user: ROLE, password, dbname: db },
  tables: TABLES,
  table_suffix: '_sec',
});

async function until(id: string, pred: (d: any) => boolean, timeoutMs = 90_000): Promise<any> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const r = await http('GET', `/api/v1/migrations/${id}`);
    if (r.status === 200 && pred(r.body)) return r.body;
    if (Date.now() > deadline) throw new Error(`timed out; last ${r.text}`);
    await new Promise((res) => setTimeout(res, 300));
  }
}

beforeAll(async () => {
  env = await startEnv();
  await Promise.all([requirePassword(env.source), requirePassword(env.target)]);
  codec = new AesGcmCodec(parseCodecKeys(randomBytes(32).toString('base64')));
  const dataConverter = { payloadCodecs: [codec] };
  worker = await createWorker({ connection: env.temporal.nativeConnection, namespace: 'default', taskQueue: queue, dataConverter });
  running = worker.run();
  client = new Client({ connection: env.temporal.connection, namespace: 'default', dataConverter });
  app = await buildApi({
    temporal: { client, connection: env.temporal.connection, settings: { address: env.temporal.address, namespace: 'default', taskQueue: queue }, codec, close: async () => undefined },
    logger: { level: 'info', stream: { write: (line) => void apiLog.push(line) } },
  });
  await app.listen({ port: 0, host: '127.0.0.1' });
  const addr = app.server.address();
  base = `http://127.0.0.1:${typeof addr === 'object' && addr ? addr.port : 0}`;
});

afterAll(async () => {
  await app?.close();
  if (worker?.getState() === 'RUNNING') worker.shutdown();
  await running?.catch(() => undefined);
  await env?.stop();
});

describe('secrets', () => {
  it('the clusters really require the password', async () => {
    const c = new PgClient({ host: env.source.host, port: env.source.port, user: ROLE, database: 'postgres', password: WRONG });
    await expect(c.connect()).rejects.toThrow(/password authentication failed/);
    const ok = new PgClient({ host: env.source.host, port: env.source.port, user: ROLE, database: 'postgres', password: PASSWORD });
    await ok.connect();
    await ok.end();
  });

  it('the history search finds a password stored without the codec (the detector works)', async () => {
    const plain = env.temporal.client; // no codec
    const h = await plain.workflow.start(WORKFLOW_TYPE, {
      taskQueue: `nobody-${queue}`,
      workflowId: `plain-${queue}`,
      args: [{ source: { host: 'h', user: 'u', password: PASSWORD, database: 'd' }, target: 'postgres://u@h2/d' }],
    });
    expect(historyText(await h.fetchHistory())).toContain(PASSWORD);
    await h.terminate('detector check');
  });

  it('migrates with a password from the REST body; history, responses and logs never hold it', async () => {
    const db = 'sec1';
    await env.source.createDatabase(db);
    await env.target.createDatabase(db);
    const c = await env.source.client(db);
    await c.query(SHOP_SCHEMA);
    await loadShopData(c, 0.2);
    await c.end();

    const created = await http('POST', '/api/v1/migrations', body(db, PASSWORD));
    expect(created.status).toBe(201);
    const id = created.body.id as string;
    await until(id, (d) => d.state === 'created');
    expect((await http('POST', `/api/v1/migrations/${id}/start`)).status).toBe(202);
    const done = await until(id, (d) => d.state === 'completed' || d.state === 'failed');
    expect(done).toMatchObject({ state: 'completed', error: null });
    for (const t of TABLES) {
      expect({ t, ...(await fingerprint(env.target, db, 'public', `${t}_sec`)) }).toEqual({ t, ...(await fingerprint(env.source, db, 'public', t)) });
    }

    const history = await env.temporal.client.workflow.getHandle(id).fetchHistory();
    // The migration's and its copy child's (whose input names both servers).
    const histories = await workflowHistories(env.temporal, id);
    expect(histories.length).toBeGreaterThan(1);
    const text = histories.map((h) => historyText(h.history)).join('\n');
    expect(text).not.toContain(PASSWORD);
    // Payloads are there, encrypted: the input, activity inputs and results, the status answers.
    const started = history.events?.[0]?.workflowExecutionStartedEventAttributes;
    const encoding = Buffer.from(started?.input?.payloads?.[0]?.metadata?.encoding ?? new Uint8Array()).toString();
    expect(encoding).toBe(ENCRYPTED_ENCODING);
    // The UI summary (encrypted too, like every user payload) names the endpoints without the password.
    const summary = await (await client.workflow.getHandle(id).describe()).staticSummary();
    expect(summary).toBe(`${ROLE}@${env.source.host}:${env.source.port}/${db} → ${ROLE}@${env.target.host}:${env.target.port}/${db}, 3 tables`);

    const responses = [
      created.text,
      (await http('GET', `/api/v1/migrations/${id}`)).text,
      (await http('GET', `/api/v1/migrations/${id}/status`)).text,
      (await http('GET', '/api/v1/migrations')).text,
    ].join('\n');
    expect(responses).toContain(db);
    expect(responses).not.toContain(PASSWORD);
    expect(apiLog.join('')).toContain('/api/v1/migrations');
    expect(apiLog.join('')).not.toContain(PASSWORD);

    // The codec endpoint gives key holders the decoded input (what the Temporal UI asks for).
    const input = started!.input!.payloads![0]!;
    const dec = await http('POST', '/codec/decode', {
      payloads: [{ metadata: Object.fromEntries(Object.entries(input.metadata ?? {}).map(([k, v]) => [k, Buffer.from(v).toString('base64')])), data: Buffer.from(input.data!).toString('base64') }],
    });
    expect(dec.status).toBe(200);
    const spec = JSON.parse(Buffer.from(dec.body.payloads[0].data, 'base64').toString('utf8'));
    expect(spec).toMatchObject({ source: { host: env.source.host, user: ROLE, database: db }, tableSuffix: '_sec' });

    // The real temporal CLI through the codec endpoint: decoded with it, opaque without it.
    const cli = findTemporalCli();
    if (cli) {
      const args = ['workflow', 'show', '--workflow-id', id, '--output', 'json', '--address', env.temporal.address];
      // JSON output keeps payload data in base64: look for the decoded input there.
      const withCodec = JSON.parse((await run(cli, [...args, '--codec-endpoint', `${base}/codec`], { maxBuffer: 64 << 20 })).stdout);
      const shown = withCodec.events[0].workflowExecutionStartedEventAttributes.input.payloads[0];
      expect(Buffer.from(shown.metadata.encoding, 'base64').toString()).toBe('json/plain');
      expect(JSON.parse(Buffer.from(shown.data, 'base64').toString())).toMatchObject({ source: { host: env.source.host, user: ROLE, database: db } });
      const without = (await run(cli, args, { maxBuffer: 64 << 20 })).stdout;
      expect(historyText(JSON.parse(without))).not.toContain(PASSWORD);
      expect(without).toContain(Buffer.from(ENCRYPTED_ENCODING).toString('base64'));
    }
  });

  it('temporal workflow start --codec-endpoint encrypts a password given on the command line', async () => {
    const cli = findTemporalCli();
    expect(cli).toBeDefined();
    const db = 'sec3';
    await env.source.createDatabase(db);
    await env.target.createDatabase(db);
    await env.source.query('CREATE TABLE public.kv (k text PRIMARY KEY, v int); INSERT INTO public.kv SELECT g::text, g FROM generate_series(1, 500) g', [], db);
    const uri = (c: PgCluster) => `postgres://${ROLE}:${PASSWORD}@${c.host}:${c.port}/${db}`;
    const id = `cli-${queue}`;
    await run(cli!, [
      'workflow', 'start', '--type', 'migrationWorkflow', '--task-queue', queue, '--workflow-id', id,
      '--input', JSON.stringify({ source: uri(env.source), target: uri(env.target), tables: ['kv'], mode: 'offline' }),
      '--address', env.temporal.address, '--codec-endpoint', `${base}/codec`,
    ]);
    const done = await until(id, (d) => d.state === 'completed' || d.state === 'failed');
    expect(done).toMatchObject({ state: 'completed' });
    expect(await fingerprint(env.target, db, 'public', 'kv')).toEqual(await fingerprint(env.source, db, 'public', 'kv'));
    expect((await workflowHistories(env.temporal, id)).map((h) => historyText(h.history)).join('\n')).not.toContain(PASSWORD);
  });

  it('a wrong password fails the migration with an error that names neither password', async () => {
    const db = 'sec2';
    await env.source.createDatabase(db);
    await env.target.createDatabase(db);
    await env.source.query('CREATE TABLE public.customers (id int PRIMARY KEY)', [], db);
    const created = await http('POST', '/api/v1/migrations', { ...body(db, WRONG), tables: ['customers'] });
    expect(created.status).toBe(201);
    const id = created.body.id as string;
    // Created paused: nothing connects until the start.
    expect((await http('POST', `/api/v1/migrations/${id}/start`)).status).toBe(202);
    const failed = await until(id, (d) => d.state === 'failed');
    // The fixed reason, not the server's text (which an API caller could otherwise read from any server).
    expect(failed.error).toMatch(/cannot connect to the source \(.*\): authentication failed .*\[28P01\]/);
    expect(failed.error).not.toContain('password authentication failed for user');
    const text = [JSON.stringify(failed), historyText(await env.temporal.client.workflow.getHandle(id).fetchHistory()), apiLog.join('')].join('\n');
    expect(text).not.toContain(WRONG);
    expect(text).not.toContain(PASSWORD);
  });
});

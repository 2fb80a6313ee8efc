/**
 * Secrets in failures and in the input, against a real Temporal dev server and real workers:
 * with PG_DTS_CODEC_KEY, failure messages are stored encrypted (encodedAttributes) while clients
 * still read them; a worker without a key refuses a spec carrying a password before an activity
 * stores it again; a worker with another key leaves the migration stuck, and `dts status` and the
 * API say so naming the key ids.
 */
import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Client, WorkflowFailedError } from '@temporalio/client';
import type { TestWorkflowEnvironment } from '@temporalio/testing';
import type { Worker } from '@temporalio/worker';
import type { FastifyInstance } from 'fastify';
import { startTemporal } from '../harness/temporal';
import { createWorker } from '../../worker/worker';
import { AesGcmCodec, ENCRYPTED_ENCODING, parseCodecKeys } from '../../client/codec';
import { buildApi } from '../../client/api';
import { main } from '../../client/cli';
import { WORKFLOW_TYPE } from '../../workflows/contract';
import type { TemporalContext } from '../../client/temporal';

const K1 = randomBytes(32).toString('base64');
const K2 = randomBytes(32).toString('base64');
const codec1 = new AesGcmCodec(parseCodecKeys(K1));
const codec2 = new AesGcmCodec(parseCodecKeys(K2));
const suffix = randomBytes(4).toString('hex');
const queues = { k1: `enc-k1-${suffix}`, none: `enc-none-${suffix}`, k2: `enc-k2-${suffix}` };

let temporal: TestWorkflowEnvironment;
const workers: Worker[] = [];
const runs: Promise<void>[] = [];
let client1: Client;
let plainClient: Client;

beforeAll(async () => {
  temporal = await startTemporal();
  const start = async (taskQueue: string, codec?: AesGcmCodec) => {
    const w = await createWorker({
      connection: temporal.nativeConnection,
      namespace: 'default',
      taskQueue,
      ...(codec ? { dataConverter: { payloadCodecs: [codec] } } : {}),
    });
    workers.push(w);
    runs.push(w.run());
  };
  await start(queues.k1, codec1);
  await start(queues.none);
  await start(queues.k2, codec2);
  client1 = new Client({ connection: temporal.connection, namespace: 'default', dataConverter: { payloadCodecs: [codec1] } });
  plainClient = new Client({ connection: temporal.connection, namespace: 'default' });
});
afterAll(async () => {
  for (const w of workers) w.shutdown();
  await Promise.allSettled(runs);
  await temporal?.teardown();
});

/** Every string and byte array (as UTF-8) in a history: plain text anywhere shows up. */
function allText(v: unknown, seen = new Set<unknown>()): string {
  if (typeof v === 'string') return v;
  if (v instanceof Uint8Array) return Buffer.from(v).toString('utf8');
  if (!v || typeof v !== 'object' || seen.has(v)) return '';
  seen.add(v);
  return (Array.isArray(v) ? v : Object.values(v)).map((x) => allText(x, seen)).join('\n');
}

const events = async (id: string) => (await temporal.client.workflow.getHandle(id).fetchHistory()).events ?? [];

describe('with a codec key', () => {
  it('stores failure messages encrypted; clients with the key read them', async () => {
    const id = `enc-fail-${suffix}`;
    const handle = await client1.workflow.start(WORKFLOW_TYPE, {
      taskQueue: queues.k1,
      workflowId: id,
      args: [{ source: 'postgres://u@127.0.0.1:1/secretdb', target: 'postgres://u@127.0.0.1:1/secretdb', tables: ['t'] }],
    });
    const err = await handle.result().then(() => undefined, (e: unknown) => e);
    expect(err).toBeInstanceOf(WorkflowFailedError);
    expect(String((err as WorkflowFailedError).cause?.message)).toContain('cannot connect to the source (127.0.0.1:1/secretdb)');
    const failures = (await events(id)).flatMap((e) => {
      const f = e.activityTaskFailedEventAttributes?.failure ?? e.workflowExecutionFailedEventAttributes?.failure;
      return f ? [f] : [];
    });
    expect(failures.length).toBeGreaterThanOrEqual(2);
    for (const f of failures) {
      expect(f.message).toBe('Encoded failure');
      expect(Buffer.from(f.encodedAttributes?.metadata?.encoding ?? []).toString()).toBe(ENCRYPTED_ENCODING);
      expect(JSON.stringify(f)).not.toContain('secretdb');
    }
  });
});

describe('without a codec key', () => {
  it('the worker refuses a spec carrying a password before any activity stores it again', async () => {
    const id = `enc-pw-${suffix}`;
    const password = `pw-${randomBytes(6).toString('hex')}`;
    // Started around the CLI and the API (which refuse it): with the temporal CLI, say.
    const handle = await plainClient.workflow.start(WORKFLOW_TYPE, {
      taskQueue: queues.none,
      workflowId: id,
      args: [{ source: { host: '127.0.0.1', port: 1, user: 'u', password, database: 'd' }, target: 'postgres://u@127.0.0.1:1/d', tables: ['t'] }],
    });
    const err = await handle.result().then(() => undefined, (e: unknown) => e);
    expect(String((err as WorkflowFailedError).cause?.message)).toMatch(/spec carries a password and this worker stores payloads unencrypted/);
    const history = await events(id);
    expect(history.some((e) => e.activityTaskScheduledEventAttributes)).toBe(false);
    const text = allText(history);
    // Once: the input the client stored.
    expect(text.split(password).length - 1).toBe(1);
  });
});

describe('a worker with another key', () => {
  let app: FastifyInstance;
  let ctx: TemporalContext;

  beforeAll(async () => {
    ctx = {
      client: client1,
      connection: temporal.connection,
      settings: { address: 'dev-server', namespace: 'default', taskQueue: queues.k2 },
      codec: codec1,
      close: async () => undefined,
    };
    app = await buildApi({ temporal: ctx, token: null, queryTimeoutMs: 2000 });
  });
  afterAll(async () => app?.close());

  it('leaves the migration stuck, and dts status and the API name the key ids', async () => {
    const id = `enc-wrong-${suffix}`;
    await client1.workflow.start(WORKFLOW_TYPE, { taskQueue: queues.k2, workflowId: id, args: [{ source: 'postgres://u@127.0.0.1:1/d', target: 'postgres://u@127.0.0.1:1/d' }] });
    // Wait for the worker's first failed workflow task.
    for (let i = 0; i < 100 && !(await events(id)).some((e) => e.workflowTaskFailedEventAttributes); i++) await new Promise((r) => setTimeout(r, 200));
    const expected = new RegExp(`a worker holding key id ${codec2.keyId} .*encrypted with key id ${codec1.keyId}; this client holds key id ${codec1.keyId}`);

    const res = await app.inject({ method: 'GET', url: `/api/v1/migrations/${id}` });
    expect(res.json()).toMatchObject({ state: 'running', error: expect.stringMatching(expected) });
    const status = await app.inject({ method: 'GET', url: `/api/v1/migrations/${id}/status` });
    expect(status.statusCode).toBe(503);
    expect(status.json().error).toMatch(expected);

    const err: string[] = [];
    const saved = { TEMPORAL_ADDRESS: process.env.TEMPORAL_ADDRESS, PG_DTS_CODEC_KEY: process.env.PG_DTS_CODEC_KEY };
    process.env.TEMPORAL_ADDRESS = temporal.address;
    process.env.PG_DTS_CODEC_KEY = K1;
    try {
      const code = await main(['node', 'dts', 'status', id], { out: () => undefined, err: (s: string) => void err.push(s) });
      expect(code).toBe(1);
    } finally {
      for (const [k, v] of Object.entries(saved)) {
        if (v === undefined) delete process.env[k];
        else process.env[k] = v;
      }
    }
    expect(err.join('\n')).toMatch(expected);
    await temporal.client.workflow.getHandle(id).terminate('test over');
  });
});

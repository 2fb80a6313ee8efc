/**
 * Who may use the REST API and the codec endpoint, over real HTTP against a real Temporal dev server:
 * requests without and with the bearer token, /health's details, cross-site and DNS-rebound requests,
 * the codec endpoint's namespace and body limit, bounded error bodies, `dts api` refusing a
 * non-loopback address without a token.
 */
import { randomBytes } from 'node:crypto';
import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { request as httpsRequest } from 'node:https';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { FastifyInstance } from 'fastify';
import type { TestWorkflowEnvironment } from '@temporalio/testing';
import { makeCertificates } from '../harness/certs';
import { startTemporal } from '../harness/temporal';
import { buildApi } from '../../client/api';
import { AesGcmCodec, parseCodecKeys } from '../../client/codec';
import type { TemporalContext } from '../../client/temporal';

const run = promisify(execFile);
const TOKEN = randomBytes(24).toString('hex');
const KEY = randomBytes(32).toString('base64');

let temporal: TestWorkflowEnvironment;
let ctx: TemporalContext;
/** Requires TOKEN. */
let secured: FastifyInstance;
let securedBase: string;
/** No token: loopback only. */
let open: FastifyInstance;
let openBase: string;

async function listen(app: FastifyInstance): Promise<string> {
  await app.listen({ port: 0, host: '127.0.0.1' });
  const addr = app.server.address();
  return `http://127.0.0.1:${typeof addr === 'object' && addr ? addr.port : 0}`;
}

async function http(
  base: string,
  method: string,
  path: string,
  opts: { token?: string; json?: unknown; raw?: string; headers?: Record<string, string> } = {},
): Promise<{ status: number; body: any; text: string }> {
  const headers: Record<string, string> = { ...opts.headers };
  if (opts.token) headers.authorization = `Bearer ${opts.token}`;
  if (opts.json !== undefined || opts.raw !== undefined) headers['content-type'] = 'application/json';
  const res = await fetch(`${base}${path}`, { method, headers, body: opts.raw ?? (opts.json === undefined ? undefined : JSON.stringify(opts.json)) });
  const text = await res.text();
  let body: unknown;
  try {
    body = text ? JSON.parse(text) : undefined;
  } catch {
    body = undefined;
  }
  return { status: res.status, body, text };
}

beforeAll(async () => {
  temporal = await startTemporal();
  ctx = {
    client: temporal.client,
    connection: temporal.connection,
    settings: { address: 'dev-server', namespace: temporal.namespace ?? 'default', taskQueue: `auth-${randomBytes(4).toString('hex')}` },
    codec: new AesGcmCodec(parseCodecKeys(KEY)),
    close: async () => undefined,
  };
  secured = await buildApi({ temporal: ctx, token: TOKEN, queryTimeoutMs: 2000 });
  securedBase = await listen(secured);
  open = await buildApi({ temporal: ctx, token: null, queryTimeoutMs: 2000 });
  openBase = await listen(open);
});
afterAll(async () => {
  await secured?.close();
  await open?.close();
  await temporal?.teardown();
});

const spec = {
  source_db: { host: '127.0.0.1', port: 1, user: 'u', dbname: 'd' },
  target_db: { host: '127.0.0.1', port: 2, user: 'u', dbname: 'd' },
};

describe('bearer token', () => {
  it('refuses every route without the token or with a wrong one, and serves it with the right one', async () => {
    const routes: Array<[string, string, unknown?]> = [
      ['GET', '/api/v1/migrations'],
      ['POST', '/api/v1/migrations', spec],
      ['GET', '/api/v1/migrations/x'],
      ['GET', '/api/v1/migrations/x/status'],
      ['POST', '/api/v1/migrations/x/cancel'],
      ['POST', '/codec/decode', { payloads: [] }],
      ['POST', '/codec/encode', { payloads: [] }],
    ];
    // Differs from TOKEN in its last character, whatever that is.
    const wrongToken = `${TOKEN.slice(0, -1)}${TOKEN.endsWith('0') ? '1' : '0'}`;
    for (const [method, path, json] of routes) {
      const none = await http(securedBase, method, path, { json });
      expect(none.status, `${method} ${path}`).toBe(401);
      expect(none.body.error).toMatch(/authentication required/);
      const wrong = await http(securedBase, method, path, { json, token: wrongToken });
      expect(wrong.status, `${method} ${path}`).toBe(401);
      expect(wrong.body.error).toBe('invalid API token');
    }
    const list = await http(securedBase, 'GET', '/api/v1/migrations', { token: TOKEN });
    expect(list.status).toBe(200);
    expect(list.body).toMatchObject({ migrations: [], total: expect.any(Number) });
    const encoded = await http(securedBase, 'POST', '/codec/encode', { token: TOKEN, json: { payloads: [{ metadata: { encoding: 'anNvbi9wbGFpbg==' }, data: 'InNlY3JldCI=' }] } });
    expect(encoded.status).toBe(200);
    expect(encoded.body.payloads).toHaveLength(1);
  });

  it('/health tells anyone up or down, and the details only to the token holder', async () => {
    const anon = await http(securedBase, 'GET', '/api/v1/health');
    expect(Object.keys(anon.body)).toEqual(['status']);
    const authed = await http(securedBase, 'GET', '/api/v1/health', { token: TOKEN });
    expect(authed.body).toMatchObject({ temporal: { reachable: true }, payloadEncryption: { enabled: true } });
    // The OpenAPI document stays public, and says how to authenticate.
    const doc = await http(securedBase, 'GET', '/api/v1/openapi.json');
    expect(doc.status).toBe(200);
    expect(doc.body.components.securitySchemes.bearerAuth).toMatchObject({ type: 'http', scheme: 'bearer' });
    expect(doc.body.info.description).toContain('PG_DTS_ALLOWED_HOSTS');
  });
});

describe('cross-site requests', () => {
  it('refuses a POST from another origin, without a body, with or without the token', async () => {
    const evil = { origin: 'http://evil.example' };
    const a = await http(openBase, 'POST', '/api/v1/migrations/some-migration/cancel', { headers: evil });
    expect(a.status).toBe(403);
    expect(a.body.error).toContain('cross-site request refused (Origin http://evil.example)');
    const b = await http(securedBase, 'POST', '/api/v1/migrations/some-migration/cancel', { headers: evil, token: TOKEN });
    expect(b.status).toBe(403);
    const c = await http(openBase, 'POST', '/api/v1/migrations/some-migration/cancel', { headers: { 'sec-fetch-site': 'cross-site' } });
    expect(c.status).toBe(403);
    // The same request from the API's own origin gets through to the route (no such migration).
    const own = await http(openBase, 'POST', '/api/v1/migrations/some-migration/cancel', { headers: { origin: openBase } });
    expect(own.status).toBe(404);
  });

  it('without a token, refuses a request whose Host is not a loopback name (DNS rebinding)', async () => {
    const port = new URL(openBase).port;
    // fetch sets Host itself; a raw request shows what a browser sends after rebinding evil.example to 127.0.0.1.
    const { request } = await import('node:http');
    const status = await new Promise<number>((resolve, reject) => {
      const req = request({ host: '127.0.0.1', port, path: '/api/v1/migrations', headers: { host: `evil.example:${port}` } }, (res) => {
        res.resume();
        resolve(res.statusCode ?? 0);
      });
      req.on('error', reject);
      req.end();
    });
    expect(status).toBe(403);
    expect((await http(openBase, 'GET', '/api/v1/migrations')).status).toBe(200);
  });
});

describe('codec endpoint', () => {
  it('refuses another namespace and a body over the limit', async () => {
    const other = await http(securedBase, 'POST', '/codec/decode', { token: TOKEN, json: { payloads: [] }, headers: { 'x-namespace': 'someone-else' } });
    expect(other.status).toBe(403);
    const same = await http(securedBase, 'POST', '/codec/decode', { token: TOKEN, json: { payloads: [] }, headers: { 'x-namespace': ctx.settings.namespace } });
    expect(same.status).toBe(200);
    const big = JSON.stringify({ payloads: [{ metadata: {}, data: 'A'.repeat(5 * 1024 * 1024) }] });
    const tooLarge = await http(securedBase, 'POST', '/codec/encode', { token: TOKEN, raw: big });
    expect(tooLarge.status).toBe(413);
  });
});

describe('error bodies', () => {
  it('stay small whatever the request quoted', async () => {
    const name = 'x'.repeat(900_000);
    const r = await http(securedBase, 'POST', '/api/v1/migrations', { token: TOKEN, json: { ...spec, tables: [name] } });
    expect(r.status).toBe(400);
    expect(r.text.length).toBeLessThan(5000);
  });
});

describe('mutual TLS', () => {
  it('serves clients holding a certificate from the client CA, without a token, and no one else', async () => {
    const certs = makeCertificates('api.test');
    const app = await buildApi({
      temporal: ctx,
      token: null,
      tls: { cert: readFileSync(certs.serverCert), key: readFileSync(certs.serverKey), ca: readFileSync(certs.ca), requestCert: true, rejectUnauthorized: true },
    });
    await app.listen({ port: 0, host: '127.0.0.1' });
    const port = (app.server.address() as { port: number }).port;
    const get = (withCert: boolean) =>
      new Promise<number>((resolve, reject) => {
        const req = httpsRequest(
          {
            host: '127.0.0.1',
            port,
            path: '/api/v1/migrations',
            // A name that is not loopback: with mTLS the certificate authenticates, not the Host.
            headers: { host: `api.test:${port}` },
            ca: readFileSync(certs.ca),
            servername: 'api.test',
            ...(withCert ? { cert: readFileSync(certs.clientCert), key: readFileSync(certs.clientKey) } : {}),
          },
          (res) => {
            res.resume();
            resolve(res.statusCode ?? 0);
          },
        );
        req.on('error', reject);
        req.end();
      });
    try {
      expect(await get(true)).toBe(200);
      await expect(get(false)).rejects.toThrow();
    } finally {
      await app.close();
    }
  });
});

describe('dts api', () => {
  it('refuses a non-loopback --host without a token', async () => {
    const env = { ...process.env, PG_DTS_API_TOKEN: '', PG_DTS_API_TOKEN_FILE: '', TEMPORAL_ADDRESS: '127.0.0.1:1' };
    const err = await run(process.execPath, ['bin/dts.js', 'api', '--host', '0.0.0.0', '--port', '1'], { env, timeout: 60_000 }).then(
      () => undefined,
      (e: { code?: number; stderr?: string }) => e,
    );
    expect(err?.code).toBe(2);
    expect(err?.stderr).toContain('refusing to serve the API on 0.0.0.0 without authentication');
  });
});

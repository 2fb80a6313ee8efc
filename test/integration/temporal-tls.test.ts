/**
 * Temporal connections with TLS, mTLS and an API key from the Temporal CLI's variables
 * (TEMPORAL_TLS_CERT, _KEY, _CA, _SERVER_NAME, TEMPORAL_API_KEY): the options built from the
 * environment, and what a TLS server that requires a client certificate sees from the CLI/API's
 * connection (grpc-js) and the worker's (NativeConnection, Rust): TLS, the SNI name, the client
 * certificate signed by our CA.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import tls from 'node:tls';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { NativeConnection } from '@temporalio/worker';
import { makeCertificates, type TestCertificates } from '../harness/certs';
import { temporalConnectionOptions } from '../../worker/config';
import { connectTemporal } from '../../client/temporal';

let certs: TestCertificates;
const f = (name: string) => join(certs.dir, name);

beforeAll(() => {
  certs = makeCertificates('temporal.test');
});

describe('temporalConnectionOptions', () => {
  it('no variables: plain connection', () => {
    expect(temporalConnectionOptions({})).toEqual({ address: 'localhost:7233' });
  });

  it('reads certificate, key, CA, server name and API key; an API key alone means TLS', () => {
    const o = temporalConnectionOptions({
      TEMPORAL_ADDRESS: 'temporal.test:7233',
      TEMPORAL_TLS_CERT: f('client.crt'),
      TEMPORAL_TLS_KEY: f('client.key'),
      TEMPORAL_TLS_CA: f('ca.crt'),
      TEMPORAL_TLS_SERVER_NAME: 'temporal.test',
      TEMPORAL_API_KEY: 'k-123',
    });
    expect(o.tls?.serverNameOverride).toBe('temporal.test');
    expect(Buffer.from(o.tls!.clientCertPair!.crt).equals(readFileSync(f('client.crt')))).toBe(true);
    expect(Buffer.from(o.tls!.serverRootCACertificate!).equals(readFileSync(f('ca.crt')))).toBe(true);
    expect(o.apiKey).toBe('k-123');
    expect(temporalConnectionOptions({ TEMPORAL_API_KEY: 'k' }).tls).toEqual({});
    expect(temporalConnectionOptions({ TEMPORAL_API_KEY: 'k', TEMPORAL_TLS: 'false' }).tls).toBeUndefined();
    expect(temporalConnectionOptions({ TEMPORAL_TLS: 'true' }).tls).toEqual({});
  });

  it('says which variable is wrong, without printing a key', () => {
    expect(() => temporalConnectionOptions({ TEMPORAL_TLS_CERT: f('client.crt') })).toThrow(/TEMPORAL_TLS_CERT and TEMPORAL_TLS_KEY go together/);
    expect(() => temporalConnectionOptions({ TEMPORAL_TLS_CA: f('missing.crt') })).toThrow(`TEMPORAL_TLS_CA: cannot read ${f('missing.crt')} (ENOENT)`);
    expect(() => temporalConnectionOptions({ TEMPORAL_TLS: 'maybe' })).toThrow(/TEMPORAL_TLS must be true or false/);
  });
});

describe('connections', () => {
  let server: tls.Server;
  let port: number;
  const seen: Array<{ servername: unknown; clientCert: unknown; authorized: boolean }> = [];

  beforeAll(async () => {
    server = tls.createServer(
      { key: readFileSync(f('server.key')), cert: readFileSync(f('server.crt')), ca: readFileSync(f('ca.crt')), requestCert: true, rejectUnauthorized: false, ALPNProtocols: ['h2'] },
      (sock) => {
        seen.push({ servername: sock.servername, clientCert: sock.getPeerCertificate()?.subject?.CN, authorized: sock.authorized });
        sock.destroy();
      },
    );
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    port = (server.address() as { port: number }).port;
  });
  afterAll(() => server?.close());

  const env = () => ({
    TEMPORAL_ADDRESS: `127.0.0.1:${port}`,
    TEMPORAL_TLS_CERT: f('client.crt'),
    TEMPORAL_TLS_KEY: f('client.key'),
    TEMPORAL_TLS_CA: f('ca.crt'),
    TEMPORAL_TLS_SERVER_NAME: 'temporal.test',
  });

  it('the CLI and API connection (grpc-js) presents the client certificate over TLS to the named server', async () => {
    seen.length = 0;
    await connectTemporal({ env: env() }).then(
      (ctx) => ctx.close(),
      () => undefined,
    );
    expect(seen[0]).toEqual({ servername: 'temporal.test', clientCert: 'pg-dts worker', authorized: true });
  });

  it('the worker connection (NativeConnection) does the same', async () => {
    seen.length = 0;
    await NativeConnection.connect(temporalConnectionOptions(env())).then(
      (c) => c.close(),
      () => undefined,
    );
    expect(seen[0]).toEqual({ servername: 'temporal.test', clientCert: 'pg-dts worker', authorized: true });
  });
});

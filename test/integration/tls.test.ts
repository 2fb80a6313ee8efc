/**
 * TLS with libpq's meaning of every sslmode (activities/db.ts), against a real server with a
 * certificate from a private CA: prefer and allow use TLS where the server asks for it, require
 * encrypts without verifying, verify-ca checks the chain against sslrootcert, verify-full the name too.
 */
import { execFileSync } from 'node:child_process';
import { chmodSync, chownSync, mkdtempSync, rmSync, writeFileSync, appendFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Client } from 'pg';
import { connect } from '../../activities/db';
import { normalizeSpec } from '../../activities/spec';
import { startCluster, type PgCluster } from '../harness/pg-cluster';

let pg: PgCluster;
let dir: string;

const openssl = (...args: string[]) => execFileSync('openssl', args, { stdio: 'pipe' });

/** A CA, a server certificate it signs for the name localhost only, and an unrelated CA. */
function makeCertificates(d: string): void {
  openssl('req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '2', '-subj', '/CN=pgdts test CA', '-keyout', join(d, 'ca.key'), '-out', join(d, 'ca.crt'));
  openssl('req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '2', '-subj', '/CN=other CA', '-keyout', join(d, 'other.key'), '-out', join(d, 'other.crt'));
  openssl('req', '-newkey', 'rsa:2048', '-nodes', '-subj', '/CN=db.example', '-keyout', join(d, 'server.key'), '-out', join(d, 'server.csr'));
  writeFileSync(join(d, 'ext.cnf'), 'subjectAltName = DNS:localhost\n');
  openssl('x509', '-req', '-in', join(d, 'server.csr'), '-CA', join(d, 'ca.crt'), '-CAkey', join(d, 'ca.key'), '-CAcreateserial', '-days', '2', '-extfile', join(d, 'ext.cnf'), '-out', join(d, 'server.crt'));
}

async function sslInUse(c: Client): Promise<boolean> {
  const r = await c.query<{ ssl: boolean }>('SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()');
  return r.rows[0]!.ssl;
}

/** Connects with these URI parameters; true/false whether TLS is in use, or the error's message. */
async function tryConnect(params: string, host = '127.0.0.1'): Promise<boolean | string> {
  const uri = `postgres://postgres@${host}:${pg.port}/postgres?${params}`;
  normalizeSpec({ source: uri, target: uri });
  const c = await connect(uri).catch((e: Error) => e.message);
  if (typeof c === 'string') return c;
  try {
    return await sslInUse(c);
  } finally {
    await c.end();
  }
}

beforeAll(async () => {
  pg = await startCluster({ name: 'tls' });
  dir = mkdtempSync(join(tmpdir(), 'pgdts-tls-'));
  makeCertificates(dir);
  for (const f of ['server.crt', 'server.key']) {
    writeFileSync(join(pg.dataDir, f), execFileSync('cat', [join(dir, f)]));
    chmodSync(join(pg.dataDir, f), 0o600);
    if (process.getuid?.() === 0) {
      const uid = Number(execFileSync('id', ['-u', 'postgres']).toString());
      const gid = Number(execFileSync('id', ['-g', 'postgres']).toString());
      chownSync(join(pg.dataDir, f), uid, gid);
    }
  }
  appendFileSync(join(pg.dataDir, 'postgresql.conf'), `\nssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n`);
  // TLS only: a plain connection is rejected by pg_hba, as on a server that requires TLS.
  writeFileSync(join(pg.dataDir, 'pg_hba.conf'), 'local all all trust\nhostssl all all 127.0.0.1/32 trust\nhostssl all all ::1/128 trust\nhostnossl all all 127.0.0.1/32 reject\n');
  await pg.stop();
  await pg.start();
}, 120_000);

afterAll(async () => {
  await pg?.destroy();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

describe('sslmode, as libpq means it', () => {
  it('disable never uses TLS (and this server refuses it); allow and prefer fall back to TLS / use it', async () => {
    expect(await tryConnect('sslmode=disable')).toMatch(/no encryption/);
    expect(await tryConnect('sslmode=allow')).toBe(true);
    expect(await tryConnect('sslmode=prefer')).toBe(true);
    expect(await tryConnect(''), 'the default is prefer').toBe(true);
  });

  it('require encrypts without verifying; with sslrootcert it verifies the chain, as libpq does', async () => {
    expect(await tryConnect('sslmode=require')).toBe(true);
    expect(await tryConnect(`sslmode=require&sslrootcert=${join(dir, 'ca.crt')}`)).toBe(true);
    expect(await tryConnect(`sslmode=require&sslrootcert=${join(dir, 'other.crt')}`)).toMatch(/certificate/);
  });

  it('verify-ca checks the chain against a private CA, not the name; verify-full checks both', async () => {
    const ca = `sslrootcert=${join(dir, 'ca.crt')}`;
    // Reached as 127.0.0.1, a name the certificate does not carry.
    expect(await tryConnect(`sslmode=verify-ca&${ca}`)).toBe(true);
    expect(await tryConnect(`sslmode=verify-ca&sslrootcert=${join(dir, 'other.crt')}`)).toMatch(/certificate/);
    expect(await tryConnect(`sslmode=verify-full&${ca}`)).toMatch(/does not match certificate/);
    expect(await tryConnect(`sslmode=verify-full&${ca}`, 'localhost')).toBe(true);
    // An object spec takes the same parameters.
    const c = await connect({ host: 'localhost', port: pg.port, user: 'postgres', database: 'postgres', sslmode: 'verify-full', sslrootcert: join(dir, 'ca.crt') });
    expect(await sslInUse(c)).toBe(true);
    await c.end();
    expect(await tryConnect('sslmode=verify-full&sslrootcert=system'), 'the OS does not know our CA').toMatch(/certificate/);
    expect(await tryConnect('sslmode=verify-full')).toMatch(/set sslrootcert/);
  });

});

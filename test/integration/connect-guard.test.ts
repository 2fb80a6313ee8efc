/**
 * Where the worker connects (PG_DTS_ALLOWED_HOSTS) and what it answers a server that asks for a
 * password, through the worker's own connect() and the replication connection's config: a fake
 * server (node net) asking for a clear-text password receives nothing, unix sockets and link-local
 * addresses are refused unless listed, and the preflight's message says no more than "cannot connect".
 */
import net from 'node:net';
import { dirname } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { Client } from 'pg';
import { startCluster, type PgCluster } from '../harness/pg-cluster';
import { connect, clientConfigs } from '../../activities/db';
import { ALLOWED_HOSTS_ENV, parseAllowedHosts, refusal } from '../../activities/connect-guard';
import { preflight } from '../../activities/preflight';

const PASSWORD = 'worker-secret-3f9a1c';
let cluster: PgCluster;

beforeAll(async () => {
  cluster = await startCluster({ name: 'guard' });
});
afterAll(async () => {
  await cluster?.destroy();
});
afterEach(() => {
  delete process.env[ALLOWED_HOSTS_ENV];
  delete process.env.PGPASSWORD;
});

/**
 * A server that speaks just enough of the protocol to ask for a clear-text password
 * (AuthenticationCleartextPassword), and records every byte the client sends.
 */
async function fakeServer(): Promise<{ port: number; received: () => Buffer; close: () => Promise<void> }> {
  const chunks: Buffer[] = [];
  const sockets = new Set<net.Socket>();
  const server = net.createServer((sock) => {
    sockets.add(sock);
    let startup = true;
    sock.on('data', (d) => {
      chunks.push(d);
      if (startup) {
        startup = false;
        const r = Buffer.alloc(9);
        r.write('R', 0);
        r.writeInt32BE(8, 1);
        r.writeInt32BE(3, 5);
        sock.write(r);
      }
    });
    sock.on('error', () => undefined);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const addr = server.address();
  // Give a client's answer time to arrive before anything looks at what was received.
  return {
    port: typeof addr === 'object' && addr ? addr.port : 0,
    received: () => Buffer.concat(chunks),
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  };
}

const settle = () => new Promise((r) => setTimeout(r, 300));

describe('clear-text password', () => {
  it('a fake server asking for it in clear text receives neither the spec password nor PGPASSWORD', async () => {
    const fake = await fakeServer();
    try {
      process.env.PGPASSWORD = PASSWORD;
      await expect(connect({ host: '127.0.0.1', port: fake.port, user: 'u', database: 'd' })).rejects.toThrow(/asked for the password in clear text.*password was not sent/);
      await expect(connect(`postgres://u:${PASSWORD}@127.0.0.1:${fake.port}/d`)).rejects.toThrow(/clear text/);
      // The replication connection (pg-logical-replication builds its own Client from this config).
      const repl = new Client(clientConfigs({ host: '127.0.0.1', port: fake.port, user: 'u', database: 'd', password: PASSWORD }, { replication: 'database' }).at(-1)!);
      repl.on('error', () => undefined);
      await expect(repl.connect()).rejects.toThrow(/clear text/);
      await settle();
      const sent = fake.received();
      expect(sent.length).toBeGreaterThan(0);
      expect(sent.toString('latin1')).not.toContain(PASSWORD);
      // No PasswordMessage ('p') at all.
      expect(sent.includes(Buffer.from([0x70, 0, 0, 0]))).toBe(false);
    } finally {
      await fake.close();
    }
  });

  it('a real server still authenticates with the password (scram)', async () => {
    await cluster.query(`CREATE ROLE guard_user LOGIN PASSWORD '${PASSWORD}'`);
    const hba = `host all guard_user 127.0.0.1/32 scram-sha-256\nlocal all all trust\nhost all all 127.0.0.1/32 trust\n`;
    const { writeFileSync } = await import('node:fs');
    writeFileSync(`${cluster.dataDir}/pg_hba.conf`, hba);
    await cluster.query('SELECT pg_reload_conf()');
    const c = await connect({ host: cluster.host, port: cluster.port, user: 'guard_user', database: 'postgres', password: PASSWORD });
    expect((await c.query('SELECT current_user AS u')).rows[0].u).toBe('guard_user');
    await c.end();
  });
});

describe(ALLOWED_HOSTS_ENV, () => {
  it('parses hosts, host:port, addresses and CIDRs, and says what is wrong with an entry', () => {
    const list = parseAllowedHosts('db.example.com, 10.0.0.0/8, other.example:5433, [fd00::1]:5432, 192.168.1.5, /var/run/postgresql');
    expect(refusal(list, 'DB.example.com', 6543, '203.0.113.9')).toBeUndefined();
    expect(refusal(list, 'x', 5432, '10.9.8.7')).toBeUndefined();
    expect(refusal(list, 'x', 5432, '::ffff:10.9.8.7')).toBeUndefined();
    expect(refusal(list, 'other.example', 5433, '203.0.113.9')).toBeUndefined();
    expect(refusal(list, 'other.example', 5432, '203.0.113.9')).toBe(`other.example:5432 is not in ${ALLOWED_HOSTS_ENV}`);
    expect(refusal(list, 'fd00::1', 5432, 'fd00::1')).toBeUndefined();
    expect(refusal(list, 'fd00::1', 5433, 'fd00::1')).toBeDefined();
    expect(refusal(list, '192.168.1.5', 1, '192.168.1.5')).toBeUndefined();
    expect(refusal(list, 'evil', 5432, '192.168.1.6')).toBeDefined();
    // Unset: anything but link-local.
    const any = parseAllowedHosts(undefined);
    expect(refusal(any, 'x', 5432, '203.0.113.9')).toBeUndefined();
    expect(refusal(any, 'metadata', 80, '169.254.169.254')).toMatch(/link-local/);
    expect(refusal(any, 'x', 5432, 'fe80::1')).toMatch(/link-local/);
    expect(() => parseAllowedHosts('10.0.0.0/40')).toThrow(/not a host/);
    expect(() => parseAllowedHosts('db:99999')).toThrow(/bad port/);
  });

  it('limits the worker\'s connections to the listed hosts, ports and socket directories', async () => {
    const tcp = { host: cluster.host, port: cluster.port, user: 'postgres', database: 'postgres' };
    const socketDir = dirname(cluster.dataDir);
    const unix = { host: socketDir, port: cluster.port, user: 'postgres', database: 'postgres' };
    // Unset: TCP works, the unix socket (peer/trust auth as the worker's OS user) does not.
    await (await connect(tcp)).end();
    await expect(connect(unix)).rejects.toThrow(`unix socket ${socketDir} refused`);
    await expect(connect({ ...tcp, host: '169.254.169.254', port: 80 })).rejects.toThrow(/link-local/);

    process.env[ALLOWED_HOSTS_ENV] = `db.invalid, 127.0.0.1:${cluster.port + 1}`;
    await expect(connect(tcp)).rejects.toThrow(`127.0.0.1:${cluster.port} is not in ${ALLOWED_HOSTS_ENV}`);
    // A name is checked on the address it resolves to: localhost is 127.0.0.1 here, not listed.
    await expect(connect({ ...tcp, host: 'localhost' })).rejects.toThrow(`localhost:${cluster.port} is not in ${ALLOWED_HOSTS_ENV}`);

    process.env[ALLOWED_HOSTS_ENV] = `127.0.0.0/8, ${socketDir}`;
    await (await connect(tcp)).end();
    await (await connect({ ...tcp, host: 'localhost' })).end();
    await (await connect(unix)).end();
  });

  it('the preflight reports a refused or unreachable server as "cannot connect" and nothing more', { timeout: 60_000 }, async () => {
    const open = new Set<net.Socket>();
    const fake = net.createServer((s) => {
      open.add(s);
      s.on('error', () => undefined);
      s.end('HTTP/1.1 400 Bad Request\r\n\r\n');
    });
    await new Promise<void>((resolve) => fake.listen(0, '127.0.0.1', resolve));
    const port = (fake.address() as net.AddressInfo).port;
    const base = { target: cluster.uri('postgres'), tables: ['t'] };
    try {
      const fail = async (source: string) => {
        const err = await preflight({ ...base, source }).then(() => undefined, (e: Error) => e);
        return err?.message;
      };
      // An HTTP server, a closed port: the same words, no protocol or socket detail.
      expect(await fail(`postgres://u@127.0.0.1:${port}/d`)).toBe(`cannot connect to the source (127.0.0.1:${port}/d)`);
      expect(await fail('postgres://u@127.0.0.1:1/d')).toBe('cannot connect to the source (127.0.0.1:1/d)');
      process.env[ALLOWED_HOSTS_ENV] = `127.0.0.1:${cluster.port}`;
      expect(await fail(`postgres://u@127.0.0.1:${port}/d`)).toBe(
        `cannot connect to the source (127.0.0.1:${port}/d): 127.0.0.1:${port} is not in ${ALLOWED_HOSTS_ENV}`,
      );
    } finally {
      for (const s of open) s.destroy();
      await new Promise((r) => fake.close(r));
    }
  });

  it('an authentication or missing-database failure gets a fixed reason, never the server\'s own text', { timeout: 60_000 }, async () => {
    // A server that answers every startup with a FATAL 28P01 carrying text of its own choosing.
    const planted = 'contents of /etc/passwd: root:x:0:0';
    const field = (t: string, v: string) => Buffer.concat([Buffer.from(t), Buffer.from(v), Buffer.from([0])]);
    const body = Buffer.concat([field('S', 'FATAL'), field('C', '28P01'), field('M', planted), Buffer.from([0])]);
    const len = Buffer.alloc(4);
    len.writeInt32BE(body.length + 4);
    const errorResponse = Buffer.concat([Buffer.from('E'), len, body]);
    const fake = net.createServer((s) => {
      s.on('error', () => undefined);
      s.once('data', (d) => {
        // An SSLRequest (8 bytes, code 80877103) gets "no TLS" first.
        if (d.length === 8 && d.readInt32BE(4) === 80877103) {
          s.write('N');
          s.once('data', () => s.end(errorResponse));
        } else s.end(errorResponse);
      });
    });
    await new Promise<void>((resolve) => fake.listen(0, '127.0.0.1', resolve));
    const port = (fake.address() as net.AddressInfo).port;
    try {
      const fail = async (source: string) => (await preflight({ target: cluster.uri('postgres'), tables: ['t'], source }).then(() => undefined, (e: Error) => e))?.message;
      const auth = await fail(`postgres://u@127.0.0.1:${port}/d?sslmode=disable`);
      expect(auth).toBe(`cannot connect to the source (127.0.0.1:${port}/d): authentication failed (wrong password, or no password where one is needed) [28P01]`);
      expect(auth).not.toContain(planted);
      const missing = await fail(cluster.uri('no_such_db'));
      expect(missing).toMatch(/^cannot connect to the source \(.*\/no_such_db\): the database does not exist \[3D000\]$/);
    } finally {
      await new Promise((r) => fake.close(r));
    }
  });
});

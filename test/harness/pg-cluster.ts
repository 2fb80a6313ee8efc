/**
 * Throwaway PostgreSQL clusters for tests, benchmarks and the demo: initdb into a temporary folder,
 * wal_level=logical, a free port on 127.0.0.1, trust auth. As root the server runs as the `postgres`
 * user (PostgreSQL refuses to run as root).
 */
import { execFile, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, chmodSync, readFileSync, rmSync, writeFileSync, appendFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { Client } from 'pg';
import { embeddedPgBinDir } from './pg-binaries';

const run = promisify(execFile);

/**
 * The server binaries to run: of major version `version` when given (the system's if installed, else
 * the official build from pg-binaries.ts), otherwise PG_BIN_DIR or the system's PostgreSQL 15.
 */
export function pgBinDir(version?: number): string {
  if (version !== undefined) {
    const system = `/usr/lib/postgresql/${version}/bin`;
    return existsSync(join(system, 'initdb')) ? system : embeddedPgBinDir(version);
  }
  const candidates = [process.env.PG_BIN_DIR, '/usr/lib/postgresql/15/bin', '/usr/lib/postgresql/16/bin', '/usr/lib/postgresql/17/bin'];
  for (const c of candidates) if (c && existsSync(join(c, 'initdb'))) return c;
  const which = spawnSync('sh', ['-c', 'dirname "$(command -v initdb)"'], { encoding: 'utf8' });
  if (which.status === 0 && which.stdout.trim() && existsSync(join(which.stdout.trim(), 'initdb'))) return which.stdout.trim();
  throw new Error('PostgreSQL server binaries (initdb, pg_ctl) not found: set PG_BIN_DIR');
}

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const addr = srv.address();
      const port = typeof addr === 'object' && addr ? addr.port : 0;
      srv.close(() => resolve(port));
    });
  });
}

const isRoot = typeof process.getuid === 'function' && process.getuid() === 0;

async function asPostgres(bin: string, args: string[]): Promise<void> {
  if (isRoot) {
    // runuser keeps our arguments intact (no shell); postgres needs an owned, writable data folder.
    await run('runuser', ['-u', 'postgres', '--', bin, ...args], { maxBuffer: 16 * 1024 * 1024 });
  } else {
    await run(bin, args, { maxBuffer: 16 * 1024 * 1024 });
  }
}

export interface PgCluster {
  port: number;
  host: string;
  user: string;
  dataDir: string;
  /** postgres://postgres@127.0.0.1:PORT/DB — no password: trust auth. */
  uri(database?: string): string;
  client(database?: string): Promise<Client>;
  query<T extends Record<string, unknown> = Record<string, unknown>>(sql: string, params?: unknown[], database?: string): Promise<T[]>;
  createDatabase(name: string): Promise<void>;
  /** Immediate shutdown: simulates a crash, then start() recovers. */
  stop(mode?: 'fast' | 'immediate'): Promise<void>;
  start(): Promise<void>;
  destroy(): Promise<void>;
}

export interface ClusterOptions {
  name?: string;
  settings?: Record<string, string | number>;
  /** Major version (12–18); default: the system's PostgreSQL (15). */
  version?: number;
}

/** A major version from an environment variable (e.g. PG_DTS_TEST_SOURCE_VERSION=12), or undefined. */
export function versionFromEnv(name: string): number | undefined {
  const raw = process.env[name];
  if (raw === undefined || raw === '') return undefined;
  if (!/^\d+$/.test(raw)) throw new Error(`${name}=${raw}: expected a PostgreSQL major version such as 14`);
  return Number(raw);
}

export async function startCluster(opts: ClusterOptions = {}): Promise<PgCluster> {
  const bin = pgBinDir(opts.version);
  const base = mkdtempSync(join(tmpdir(), `pgdts-${opts.name ?? 'pg'}-`));
  chmodSync(base, 0o777);
  const dataDir = join(base, 'data');
  let port = await freePort();
  await asPostgres(join(bin, 'initdb'), ['-D', dataDir, '-U', 'postgres', '--auth=trust', '-E', 'UTF8', '--locale=C.UTF-8', '--no-sync']);
  const settings: Record<string, string | number> = {
    listen_addresses: "'127.0.0.1'",
    port,
    unix_socket_directories: `'${base}'`,
    wal_level: 'logical',
    max_replication_slots: 10,
    max_wal_senders: 10,
    fsync: 'off',
    synchronous_commit: 'off',
    full_page_writes: 'off',
    shared_buffers: "'128MB'",
    max_connections: 100,
    logging_collector: 'off',
    ...opts.settings,
  };
  const conf = Object.entries(settings)
    .map(([k, v]) => `${k} = ${v}`)
    .join('\n');
  appendFileSync(join(dataDir, 'postgresql.conf'), `\n# pg-dts test harness\n${conf}\n`);
  writeFileSync(join(dataDir, 'pg_hba.conf'), 'local all all trust\nhost all all 127.0.0.1/32 trust\nlocal replication all trust\nhost replication all 127.0.0.1/32 trust\n');
  const logFile = join(base, 'server.log');
  const pgCtl = join(bin, 'pg_ctl');
  const start = async () => {
    await asPostgres(pgCtl, ['-D', dataDir, '-l', logFile, '-w', '-t', '60', 'start']);
  };
  const stop = async (mode: 'fast' | 'immediate' = 'fast') => {
    await asPostgres(pgCtl, ['-D', dataDir, '-m', mode, '-w', '-t', '60', 'stop']);
  };
  // The port was free when picked, but initdb takes a while: another process (a parallel test's server,
  // an outgoing connection) may have taken it since. Then start again on another one (a later `port`
  // line in postgresql.conf wins).
  for (let attempt = 1; ; attempt++) {
    try {
      await start();
      break;
    } catch (err) {
      const log = existsSync(logFile) ? readFileSync(logFile, 'utf8') : '';
      if (attempt >= 5 || !/could not bind|Address already in use/.test(log)) throw err;
      port = await freePort();
      appendFileSync(join(dataDir, 'postgresql.conf'), `port = ${port}\n`);
    }
  }
  const host = '127.0.0.1';
  const uri = (database = 'postgres') => `postgres://postgres@${host}:${port}/${encodeURIComponent(database)}`;
  const client = async (database = 'postgres') => {
    const c = new Client({ connectionString: uri(database) });
    c.on('error', () => undefined);
    await c.connect();
    return c;
  };
  let destroyed = false;
  const cluster: PgCluster = {
    port,
    host,
    user: 'postgres',
    dataDir,
    uri,
    client,
    async query(sql, params, database) {
      const c = await client(database);
      try {
        return (await c.query(sql, params as unknown[] | undefined)).rows;
      } finally {
        await c.end().catch(() => undefined);
      }
    },
    async createDatabase(name) {
      await cluster.query(`CREATE DATABASE "${name.replace(/"/g, '""')}"`);
    },
    stop,
    start,
    async destroy() {
      if (destroyed) return;
      destroyed = true;
      await stop('immediate').catch(() => undefined);
      rmSync(base, { recursive: true, force: true });
    },
  };
  return cluster;
}

/**
 * Connections. A ConnectionSpec is a URI or an object; passwords are best left out of it and resolved
 * on the worker through libpq's usual ways (PGPASSWORD, ~/.pgpass, PGPASSFILE), which pg implements.
 * Nothing here ever logs or throws a connection string: errors name host, port and database only.
 */
import { AsyncLocalStorage } from 'node:async_hooks';
import { setMaxListeners } from 'node:events';
import net from 'node:net';
import { Client, type ClientConfig } from 'pg';
import { existsSync, readFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { ConnectionOptions } from 'node:tls';
import { parse as parseUri } from 'pg-connection-string';
import { guardedStream } from './connect-guard';
import { SSL_MODES, type ConnectionSpec, type SslMode } from './spec';
import { backendKeyOf } from './pg-internals';

/**
 * Session settings every pg-dts connection pins at startup: values travel between servers as
 * PostgreSQL text (COPY, the apply), and text must read back as exactly what was written whatever the
 * two servers' defaults (DateStyle, TimeZone, float digits, bytea and money formats).
 */
export const TEXT_FORMAT_SETTINGS: ReadonlyArray<[string, string]> = [
  ['datestyle', 'ISO, YMD'],
  ['intervalstyle', 'postgres'],
  ['timezone', 'UTC'],
  ['extra_float_digits', '3'],
  ['bytea_output', 'hex'],
  ['lc_monetary', 'C'],
];

/**
 * JIT off in every pg-dts session: our queries are catalog reads whose row estimates are far off
 * (preflight's check of expressions, on a database of three tables, was costed at 1.6 M and spent
 * 4.6 s compiling, 3.6 s of a 5 s preflight) and chunk scans repeated per chunk, each of which would
 * pay the compilation again. The application's sessions keep the server's setting.
 */
const PLANNER_SETTINGS: ReadonlyArray<[string, string]> = [['jit', 'off']];

// Startup options: `-c name=value`; our values need no spaces.
const STARTUP_OPTIONS = [...TEXT_FORMAT_SETTINGS, ...PLANNER_SETTINGS].map(([k, v]) => `-c ${k}=${v.replace(/ /g, '')}`).join(' ');

export interface ConnectOptions {
  applicationName?: string;
  replication?: 'database';
  statementTimeoutMs?: number;
}

/**
 * The client settings of each connection attempt, in libpq's order for the spec's sslmode (default
 * PGSSLMODE, else prefer): disable: plain only; allow: plain, then TLS; prefer: TLS, then plain;
 * require / verify-ca / verify-full: TLS only. TLS verifies the server's chain against sslrootcert
 * (a file, or "system" for the OS's roots; default ~/.postgresql/root.crt when it exists) for the
 * verify modes, and — as libpq does — for the others too when a root certificate is given; only
 * verify-full checks the host name. sslcert/sslkey (default ~/.postgresql/postgresql.crt/.key when
 * they exist) authenticate us.
 */
export function clientConfigs(spec: ConnectionSpec, opts: ConnectOptions = {}): Array<ClientConfig & { sslmodeUsed: SslMode }> {
  const cfg: ClientConfig & { replication?: string } = {
    ...clientConfig(spec),
    application_name: opts.applicationName ?? 'pg-dts',
    connectionTimeoutMillis: 15_000,
    keepAlive: true,
    options: STARTUP_OPTIONS,
    // PG_DTS_ALLOWED_HOSTS and no clear-text password without TLS (connect-guard.ts), on every socket.
    stream: guardedStream,
  };
  if (opts.replication) cfg.replication = opts.replication;
  if (opts.statementTimeoutMs) cfg.statement_timeout = opts.statementTimeoutMs;
  const t = tlsSettings(spec);
  const plain = { ...cfg, ssl: false, sslmodeUsed: 'disable' as const };
  // A TLS attempt of prefer/allow that works is what sslmode=require with the same files means.
  const secure = () => ({ ...cfg, ssl: tlsOptions(t), sslmodeUsed: t.mode === 'prefer' || t.mode === 'allow' ? ('require' as const) : t.mode });
  switch (t.mode) {
    case 'disable':
      return [plain];
    case 'allow':
      return [plain, secure()];
    case 'prefer':
      return [secure(), plain];
    default:
      return [secure()];
  }
}

/** Host, port, user, password and database, without TLS (no file is read): for reading them, and messages. */
export function clientConfig(spec: ConnectionSpec): ClientConfig {
  return typeof spec === 'string' ? fromUri(spec) : { host: spec.host, port: spec.port, user: spec.user, password: spec.password, database: spec.database };
}

interface TlsSettings {
  mode: SslMode;
  rootcert?: string;
  cert?: string;
  key?: string;
}

const TLS_PARAMS = ['sslmode', 'sslrootcert', 'sslcert', 'sslkey'] as const;

function tlsSettings(spec: ConnectionSpec): TlsSettings {
  const given: Partial<Record<(typeof TLS_PARAMS)[number], string>> = {};
  if (typeof spec === 'string') {
    const q = new URL(spec).searchParams;
    for (const k of TLS_PARAMS) given[k] = q.get(k) ?? undefined;
  } else {
    Object.assign(given, { sslmode: spec.sslmode, sslrootcert: spec.sslrootcert, sslcert: spec.sslcert, sslkey: spec.sslkey });
  }
  const mode = given.sslmode ?? process.env.PGSSLMODE ?? 'prefer';
  if (!(SSL_MODES as readonly string[]).includes(mode)) throw new Error(`sslmode ${JSON.stringify(mode)} is not one of ${SSL_MODES.join(', ')}`);
  const home = (f: string) => {
    const p = path.join(os.homedir(), '.postgresql', f);
    return existsSync(p) ? p : undefined;
  };
  return {
    mode: mode as SslMode,
    rootcert: given.sslrootcert ?? process.env.PGSSLROOTCERT ?? home('root.crt'),
    cert: given.sslcert ?? process.env.PGSSLCERT ?? home('postgresql.crt'),
    key: given.sslkey ?? process.env.PGSSLKEY ?? home('postgresql.key'),
  };
}

function readTlsFile(param: string, file: string): string {
  try {
    return readFileSync(file, 'utf8');
  } catch (err) {
    throw new Error(`cannot read ${param} ${file}: ${(err as NodeJS.ErrnoException).code ?? 'unreadable'}`);
  }
}

function tlsOptions(t: TlsSettings): ConnectionOptions {
  const verify = t.mode === 'verify-ca' || t.mode === 'verify-full';
  if (verify && !t.rootcert) {
    throw new Error(
      `sslmode=${t.mode} needs the certificate of the authority that signed the server's: set sslrootcert to its file (or "system" for the operating system's roots)`,
    );
  }
  const o: ConnectionOptions = {
    rejectUnauthorized: verify || t.rootcert !== undefined,
    // verify-full checks the name (Node's default check); the others never do, as in libpq.
    ...(t.mode === 'verify-full' ? {} : { checkServerIdentity: () => undefined }),
  };
  if (t.rootcert && t.rootcert !== 'system') o.ca = readTlsFile('sslrootcert', t.rootcert);
  if (t.cert) o.cert = readTlsFile('sslcert', t.cert);
  if (t.key) o.key = readTlsFile('sslkey', t.key);
  return o;
}

function fromUri(uri: string): ClientConfig {
  // Our TLS parameters are resolved above; pg-connection-string would read their files itself.
  const u = new URL(uri);
  for (const k of TLS_PARAMS) u.searchParams.delete(k);
  const p = parseUri(u.toString());
  return {
    host: p.host ?? undefined,
    port: p.port ? Number(p.port) : undefined,
    user: p.user ?? undefined,
    password: p.password ?? undefined,
    database: p.database ?? undefined,
  };
}

/** host:port/database, for messages: never the password. */
export function describeConnection(spec: ConnectionSpec): string {
  const c = clientConfig(spec);
  const host = c.host ?? process.env.PGHOST ?? 'localhost';
  const port = c.port ?? (process.env.PGPORT ? Number(process.env.PGPORT) : 5432);
  const db = c.database ?? process.env.PGDATABASE ?? c.user ?? process.env.PGUSER ?? '';
  return `${host}:${port}/${db}`;
}

/** The cancellation of the activity running in this async context (see withCancellation). */
const cancellation = new AsyncLocalStorage<AbortSignal>();

/**
 * Runs `fn` so that every connection it opens is cancelled with `signal`: the running statement is
 * cancelled on the server (a statement waiting for a lock would otherwise wait on, and commit later)
 * and the connection closed, so an open transaction rolls back. For activities whose code knows
 * nothing of cancellation (DDL batches, index builds).
 */
export function withCancellation<T>(signal: AbortSignal, fn: () => Promise<T>): Promise<T> {
  // One listener per connection: an activity with many sessions must not trip Node's leak warning.
  setMaxListeners(1000, signal);
  return cancellation.run(signal, fn);
}

/**
 * The protocol's CancelRequest for what `client`'s backend is running: a 16-byte packet on a socket
 * of its own, which the postmaster handles before any authentication and without taking a connection
 * slot (pg_cancel_backend needs a session, which a server at max_connections refuses). True when the
 * packet was delivered; the server never answers it.
 */
export function sendCancelRequest(client: Client, timeoutMs = 5_000): Promise<boolean> {
  const c = backendKeyOf(client);
  if (!c.processID || c.secretKey === null || c.secretKey === undefined) return Promise.resolve(false);
  const host = c.host || 'localhost';
  const port = c.port || 5432;
  const packet = Buffer.alloc(16);
  packet.writeInt32BE(16, 0);
  packet.writeInt32BE(80877102, 4); // the CancelRequest code: 1234 << 16 | 5678
  packet.writeInt32BE(c.processID, 8);
  packet.writeInt32BE(c.secretKey, 12);
  return new Promise((resolve) => {
    const sock = host.startsWith('/') ? net.connect(`${host}/.s.PGSQL.${port}`) : net.connect(port, host);
    let sent = false;
    sock.setTimeout(timeoutMs, () => sock.destroy());
    sock.on('connect', () => sock.end(packet, () => (sent = true)));
    sock.on('error', () => undefined);
    sock.on('close', () => resolve(sent));
  });
}

async function cancelBackend(spec: ConnectionSpec, client: Client): Promise<void> {
  const pid = backendKeyOf(client).processID;
  if (pid && !(await sendCancelRequest(client))) {
    // No CancelRequest delivered (a proxy in between that refuses it?): ask from a session of our own.
    const c = new Client(clientConfigs(spec, { applicationName: 'pg-dts cancel' })[0]);
    c.on('error', () => undefined);
    try {
      await c.connect();
      await c.query('SELECT pg_cancel_backend($1)', [pid]);
    } catch {
      // The connection's end below rolls back its transaction all the same.
    } finally {
      await c.end().catch(() => undefined);
    }
  }
  await client.end().catch(() => undefined);
}

/** The spec each open client connected with, its sslmode narrowed to what worked (see pinnedSpec). */
const pinned = new WeakMap<Client, ConnectionSpec>();

/**
 * `spec` with its sslmode replaced by the one `client` connected with (prefer/allow become disable or
 * require): for a connection that must be made the same way but cannot try in turn (the replication
 * stream's library connects once).
 */
export function pinnedSpec(client: Client, spec: ConnectionSpec): ConnectionSpec {
  return pinned.get(client) ?? spec;
}

function withSslmode(spec: ConnectionSpec, mode: SslMode): ConnectionSpec {
  if (typeof spec !== 'string') return { ...spec, sslmode: mode };
  const u = new URL(spec);
  u.searchParams.set('sslmode', mode);
  return u.toString();
}

export async function connect(spec: ConnectionSpec, opts: ConnectOptions = {}): Promise<Client> {
  const signal = cancellation.getStore();
  if (signal?.aborted) throw new Error('cancelled');
  const attempts = clientConfigs(spec, opts);
  let client: Client | undefined;
  for (let i = 0; !client; i++) {
    const attempt = attempts[i]!;
    const c = new Client(attempt);
    // An idle client whose server goes away emits 'error'; without a listener that kills the worker.
    c.on('error', () => undefined);
    try {
      await c.connect();
      client = c;
      pinned.set(c, withSslmode(spec, attempt.sslmodeUsed));
    } catch (err) {
      await c.end().catch(() => undefined);
      // libpq's fallbacks: prefer retries without TLS after any failure of the TLS attempt; allow
      // retries with TLS when the server refused the plain connection (pg_hba: hostssl only).
      const next = attempts[i + 1];
      const retry = next && (attempt.ssl ? true : /^28/.test((err as { code?: string }).code ?? ''));
      if (!retry) throw err;
    }
  }
  if (signal) {
    const onAbort = () => void cancelBackend(pinnedSpec(client, spec), client);
    if (signal.aborted) onAbort();
    else {
      signal.addEventListener('abort', onAbort, { once: true });
      client.once('end', () => signal.removeEventListener('abort', onAbort));
    }
  }
  return client;
}

export async function withClient<T>(spec: ConnectionSpec, fn: (c: Client) => Promise<T>, opts: ConnectOptions = {}): Promise<T> {
  const c = await connect(spec, opts);
  try {
    return await fn(c);
  } finally {
    await c.end().catch(() => undefined);
  }
}

/** SQLSTATEs of two sessions racing on CREATE ... IF NOT EXISTS: the loser sees one of these (42710: "type … already exists", the table's row type). */
const CREATE_RACE = new Set(['23505', '42P06', '42P07', '42710']);

/**
 * Runs idempotent DDL (CREATE ... IF NOT EXISTS) that concurrent sessions may run at the same time,
 * retrying up to `retries` times when this session lost the race.
 */
export async function runIdempotentDdl(client: Client, statements: readonly string[], retries: number): Promise<void> {
  for (let attempt = 0; ; attempt++) {
    try {
      for (const sql of statements) await client.query(sql);
      return;
    } catch (err) {
      if (attempt < retries && CREATE_RACE.has((err as { code?: string }).code ?? '')) continue;
      throw err;
    }
  }
}

/** Whether a relation of that (qualified) name exists, as the session's search_path resolves it. */
export async function relationExists(c: Client, name: string): Promise<boolean> {
  return (await c.query<{ ok: boolean }>(`SELECT to_regclass($1) IS NOT NULL AS ok`, [name])).rows[0]?.ok === true;
}

/**
 * Every promise's value; else, once all have settled (nothing left running on a session), the first
 * failure, after `discard` of each value that did come (a connection made: closed).
 */
export async function settled<T extends readonly unknown[]>(ps: { [K in keyof T]: Promise<T[K]> }, discard?: (v: unknown) => Promise<unknown>): Promise<T> {
  const rs = await Promise.allSettled(ps);
  const failed = rs.find((r): r is PromiseRejectedResult => r.status === 'rejected');
  if (!failed) return rs.map((r) => (r as PromiseFulfilledResult<unknown>).value) as unknown as T;
  for (const r of rs) if (r.status === 'fulfilled') await discard?.(r.value).catch(() => undefined);
  throw failed.reason;
}

/**
 * Connections. A ConnectionSpec is a URI or an object; passwords are best left out of it and resolved
 * on the worker through libpq's usual ways (PGPASSWORD, ~/.pgpass, PGPASSFILE), which pg implements.
 * Nothing here ever logs or throws a connection string: errors name host, port and database only.
 */
import { AsyncLocalStorage } from 'node:async_hooks';
import { setMaxListeners } from 'node:events';
import net from 'node:net';
import { Client, type ClientConfig } from 'pg';
import { parse as parseUri } from 'pg-connection-string';
import { guardedStream } from './connect-guard';
import type { ConnectionSpec } from './spec';

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

// Startup options: `-c name=value`; our values need no spaces.
const STARTUP_OPTIONS = TEXT_FORMAT_SETTINGS.map(([k, v]) => `-c ${k}=${v.replace(/ /g, '')}`).join(' ');

export interface ConnectOptions {
  applicationName?: string;
  replication?: 'database';
  statementTimeoutMs?: number;
}

export function clientConfig(spec: ConnectionSpec, opts: ConnectOptions = {}): ClientConfig {
  const base: ClientConfig =
    typeof spec === 'string'
      ? fromUri(spec)
      : {
          host: spec.host,
          port: spec.port,
          user: spec.user,
          password: spec.password,
          database: spec.database,
          ssl: sslFromMode(spec.sslmode),
        };
  const cfg: ClientConfig & { replication?: string } = {
    ...base,
    application_name: opts.applicationName ?? 'pg-dts',
    connectionTimeoutMillis: 15_000,
    keepAlive: true,
    options: STARTUP_OPTIONS,
    // PG_DTS_ALLOWED_HOSTS and no clear-text password without TLS (connect-guard.ts), on every socket.
    stream: guardedStream,
  };
  if (opts.replication) cfg.replication = opts.replication;
  if (opts.statementTimeoutMs) cfg.statement_timeout = opts.statementTimeoutMs;
  return cfg;
}

function fromUri(uri: string): ClientConfig {
  const p = parseUri(uri);
  return {
    host: p.host ?? undefined,
    port: p.port ? Number(p.port) : undefined,
    user: p.user ?? undefined,
    password: p.password ?? undefined,
    database: p.database ?? undefined,
    ssl: sslFromMode((p as { sslmode?: string }).sslmode),
  };
}

function sslFromMode(mode: string | undefined): ClientConfig['ssl'] {
  switch (mode) {
    case undefined:
    case 'disable':
    case 'allow':
    case 'prefer':
      return undefined;
    case 'require':
      return { rejectUnauthorized: false };
    default:
      return { rejectUnauthorized: true };
  }
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
  const c = client as unknown as { processID?: number | null; secretKey?: number | null; host?: string; port?: number };
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
  const pid = (client as unknown as { processID?: number }).processID;
  if (pid && !(await sendCancelRequest(client))) {
    // No CancelRequest delivered (a proxy in between that refuses it?): ask from a session of our own.
    const c = new Client(clientConfig(spec, { applicationName: 'pg-dts cancel' }));
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

export async function connect(spec: ConnectionSpec, opts: ConnectOptions = {}): Promise<Client> {
  const signal = cancellation.getStore();
  if (signal?.aborted) throw new Error('cancelled');
  const client = new Client(clientConfig(spec, opts));
  // An idle client whose server goes away emits 'error'; without a listener that kills the worker.
  client.on('error', () => undefined);
  await client.connect();
  if (signal) {
    const onAbort = () => void cancelBackend(spec, client);
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

/** SQLSTATEs of two sessions racing on CREATE ... IF NOT EXISTS: the loser sees one of these. */
const CREATE_RACE = new Set(['23505', '42P06', '42P07']);

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

/**
 * Connections. A ConnectionSpec is a URI or an object; passwords are best left out of it and resolved
 * on the worker through libpq's usual ways (PGPASSWORD, ~/.pgpass, PGPASSFILE), which pg implements.
 * Nothing here ever logs or throws a connection string: errors name host, port and database only.
 */
import { Client, type ClientConfig } from 'pg';
import { parse as parseUri } from 'pg-connection-string';
import type { ConnectionSpec } from './spec';

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

export async function connect(spec: ConnectionSpec, opts: ConnectOptions = {}): Promise<Client> {
  const client = new Client(clientConfig(spec, opts));
  // An idle client whose server goes away emits 'error'; without a listener that kills the worker.
  client.on('error', () => undefined);
  await client.connect();
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

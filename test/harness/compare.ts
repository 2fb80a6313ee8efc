/**
 * Source/target comparison for tests: row count and an order-independent content hash per table,
 * computed by PostgreSQL over each row's text form.
 */
import type { PgCluster } from './pg-cluster';

export interface TableFingerprint {
  rows: number;
  hash: string;
}

const quote = (s: string) => `"${s.replace(/"/g, '""')}"`;
export const qualified = (schema: string, name: string) => `${quote(schema)}.${quote(name)}`;

export async function fingerprint(cluster: PgCluster, database: string, schema: string, table: string, columns?: string[]): Promise<TableFingerprint> {
  const cols = columns ? columns.map(quote).join(', ') : '*';
  const rows = await cluster.query<{ n: string; h: string | null }>(
    `SELECT count(*)::text AS n, md5(string_agg(r::text, E'\\n' ORDER BY r::text)) AS h
       FROM (SELECT ${cols} FROM ${qualified(schema, table)}) r`,
    [],
    database,
  );
  return { rows: Number(rows[0]!.n), hash: rows[0]!.h ?? 'empty' };
}

/** What a migration could leave behind on the source database: slots, publications, fence triggers. */
export async function sourceLeftovers(cluster: PgCluster, database: string): Promise<{ slots: number; pubs: number; fences: number }> {
  const [r] = await cluster.query<{ slots: number; pubs: number; fences: number }>(
    `SELECT (SELECT count(*)::int FROM pg_replication_slots WHERE database = current_database()) AS slots,
            (SELECT count(*)::int FROM pg_publication) AS pubs,
            (SELECT count(*)::int FROM pg_trigger WHERE tgname LIKE 'pg_dts_fence%') AS fences`,
    [],
    database,
  );
  return r!;
}

/**
 * Fence functions that still reject writes. A lifted fence's function is a pass-through, and its
 * triggers may be back already: SYNCING_WAL pre-installs them (disarmed) for the next cutover.
 */
export async function armedFences(cluster: PgCluster, database: string): Promise<number> {
  const [r] = await cluster.query<{ n: number }>(
    `SELECT count(*)::int AS n FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
      WHERE n.nspname = 'pgdts' AND p.proname LIKE 'fence\\_%' AND p.prosrc LIKE '%RAISE EXCEPTION%'`,
    [],
    database,
  );
  return r!.n;
}

/** Every sequence of the database with the value nextval() last returned (null: never called). */
export async function sequenceValues(cluster: PgCluster, database: string): Promise<Record<string, string | null>> {
  const rows = await cluster.query<{ name: string; last_value: string | null }>(
    `SELECT schemaname || '.' || sequencename AS name, last_value::text AS last_value
       FROM pg_sequences WHERE schemaname NOT IN ('pg_catalog', 'information_schema', 'pgdts') ORDER BY 1`,
    [],
    database,
  );
  return Object.fromEntries(rows.map((r) => [r.name, r.last_value]));
}

/**
 * The apply's relation mapping (SYNCING_WAL): which target table each source relation of the stream
 * goes to, as described by pgoutput's Relation messages and checked against the target.
 */
import type { Client } from 'pg';
import type { QualifiedName } from '../spec';
import type { KeyedRelation } from './batch';
import type { ApplyRelation } from './statements';
import type { ApplyTable } from './options';

/**
 * A leaf partition of a migrated partitioned table on a source before 13, which publishes leaves only
 * (no publish_via_partition_root): its changes are written through the root's target table, which
 * routes each row to its partition, as the copy did.
 */
export interface LeafRoute {
  source: QualifiedName;
  /** The migrated (root) table it belongs to, on the source and on the target. */
  root: QualifiedName;
  target: QualifiedName;
  /** How many leaves that root has: a TRUNCATE must name them all. */
  leaves: number;
}

/** The leaves of the partitioned tables among `tables`, with their roots' target names. */
export async function readLeafRoutes(source: Client, tables: readonly ApplyTable[]): Promise<LeafRoute[]> {
  const r = await source.query<{ i: string; schema: string; name: string; leaves: number }>(
    `SELECT u.i::text AS i, ln.nspname AS schema, l.relname AS name, count(*) OVER (PARTITION BY u.i)::int AS leaves
       FROM unnest($1::text[], $2::text[]) WITH ORDINALITY AS u(s, r, i)
       JOIN pg_namespace n ON n.nspname = u.s
       JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = u.r AND c.relkind = 'p'
       CROSS JOIN LATERAL pg_partition_tree(c.oid) t
       JOIN pg_class l ON l.oid = t.relid
       JOIN pg_namespace ln ON ln.oid = l.relnamespace
      WHERE t.isleaf`,
    [tables.map((t) => t.source.schema), tables.map((t) => t.source.name)],
  );
  return r.rows.map((row) => {
    const t = tables[Number(row.i) - 1]!;
    return { source: { schema: row.schema, name: row.name }, root: t.source, target: t.target, leaves: row.leaves };
  });
}

export interface MappedRelation {
  rel: ApplyRelation;
  display: string;
  /** Set when the set-based path can write this table. */
  keyed?: KeyedRelation;
  /** Per column, the type its text form is cast to (for INSERT ... SELECT FROM unnest). */
  castTypes?: readonly string[];
}

export interface RelationState {
  source: QualifiedName;
  mapped?: MappedRelation;
  /** Our fence marker table (sources before 14): its INSERT marks the fence, nothing is written. */
  fenceMarker?: true;
}

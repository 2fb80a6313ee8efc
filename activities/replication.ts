/**
 * The replication side of CREATING_TABLES / MIGRATING_DATA / SYNCING_WAL: the publication, the slot
 * with its exported snapshot (held open by a long-running activity while copies import it), and the
 * cleanup that makes sure no slot or publication outlives the migration.
 */
import type { Client } from 'pg';
import { connect, withClient } from './db';
import { during } from './errors';
import { dropFenceSchemaIfEmpty, fenceMarkerTable, FENCE_MARKER_DDL } from './stop-writes';
import { createSlotCommand, hasPgoutputMessages, hasPublishViaRoot, serverVersionNum } from './pg-version';
import { ident, qname } from './sql';
import type { ConnectionSpec, QualifiedName } from './spec';

export interface PublicationInput {
  source: ConnectionSpec;
  publication: string;
  tables: QualifiedName[];
}

/**
 * Idempotent: creates the publication, or resets an existing one of ours to exactly these tables. On
 * sources before 14 it also holds our fence marker table (stop-writes.ts), created here.
 */
export async function createPublication(input: PublicationInput): Promise<void> {
  try {
    await withClient(input.source, async (c) => {
      const version = await serverVersionNum(c);
      // Before 13 a partitioned table cannot be published as a whole: its leaves are (the apply writes
      // them through the partitioned table on the target).
      const tables = hasPublishViaRoot(version) ? [...input.tables] : await withLeavesForPartitioned(c, input.tables);
      if (!hasPgoutputMessages(version)) {
        for (const ddl of FENCE_MARKER_DDL(input.publication)) await c.query(ddl);
        tables.push(fenceMarkerTable(input.publication));
      }
      const list = tables.map(qname).join(', ');
      const exists = await c.query('SELECT 1 FROM pg_publication WHERE pubname = $1', [input.publication]);
      if (exists.rowCount) await c.query(`ALTER PUBLICATION ${ident(input.publication)} SET TABLE ${list}`);
      else await c.query(`CREATE PUBLICATION ${ident(input.publication)} FOR TABLE ${list}${hasPublishViaRoot(version) ? ' WITH (publish_via_partition_root = true)' : ''}`);
    });
  } catch (err) {
    throw during(err, 'create publication');
  }
}

async function withLeavesForPartitioned(c: Client, tables: readonly QualifiedName[]): Promise<QualifiedName[]> {
  const r = await c.query<{ schema: string; name: string }>(
    `SELECT coalesce(ln.nspname, u.s) AS schema, coalesce(l.relname, u.r) AS name
       FROM unnest($1::text[], $2::text[]) WITH ORDINALITY AS u(s, r, i)
       LEFT JOIN pg_namespace n ON n.nspname = u.s
       LEFT JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = u.r AND c.relkind = 'p'
       LEFT JOIN LATERAL (SELECT relid FROM pg_partition_tree(c.oid) WHERE isleaf) t ON true
       LEFT JOIN pg_class l ON l.oid = t.relid
       LEFT JOIN pg_namespace ln ON ln.oid = l.relnamespace
      ORDER BY u.i, 1, 2`,
    [tables.map((t) => t.schema), tables.map((t) => t.name)],
  );
  return r.rows;
}

export interface SlotHandle {
  client: Client;
  snapshotName: string;
  consistentPoint: string;
}

/**
 * Creates the slot on a replication connection and exports its snapshot. The snapshot can be imported
 * only while this connection stays open and idle: the caller must keep it so until every copy began.
 * A slot left by an earlier, lost attempt is dropped first: its snapshot died with its connection.
 */
export async function createSlotWithSnapshot(source: ConnectionSpec, slot: string, opts: { failover?: boolean } = {}): Promise<SlotHandle> {
  await dropSlot(source, slot);
  const client = await connect(source, { replication: 'database', applicationName: 'pg-dts snapshot' });
  try {
    // Asked before the slot exists: a command after it would invalidate the exported snapshot.
    const version = await serverVersionNum(client);
    // Replication connections take no parameters; the slot name is ours ([a-z0-9_]) and quoted anyway.
    const r = await client.query(createSlotCommand(ident(slot), version, opts.failover));
    const row = r.rows[0] as { consistent_point: string; snapshot_name: string };
    return { client, snapshotName: row.snapshot_name, consistentPoint: row.consistent_point };
  } catch (err) {
    await client.end().catch(() => undefined);
    throw during(err, 'create replication slot');
  }
}

/**
 * A copy resumed after its snapshot was lost (the migration's slot kept): a TEMPORARY slot exports a
 * new snapshot and names its position (`consistentPoint`), which the apply orders the tables copied
 * in it against. Nothing is ever streamed from it; it goes with its connection, whatever ends that.
 */
export async function createResumeSnapshot(source: ConnectionSpec, slot: string): Promise<SlotHandle> {
  const client = await connect(source, { replication: 'database', applicationName: 'pg-dts snapshot' });
  try {
    const version = await serverVersionNum(client);
    const r = await client.query(createSlotCommand(ident(slot), version, false, true));
    const row = r.rows[0] as { consistent_point: string; snapshot_name: string };
    return { client, snapshotName: row.snapshot_name, consistentPoint: row.consistent_point };
  } catch (err) {
    await client.end().catch(() => undefined);
    throw during(err, 'create a temporary replication slot for the resumed copy');
  }
}

/**
 * While CREATE_REPLICATION_SLOT for `slot` runs: the oldest transaction with an xid that began before
 * it (what it waits for), or {} when none is visible (a role without pg_read_all_stats sees other
 * roles' sessions without their transactions); undefined when the command is not running.
 */
export async function slotCreationBlocker(source: ConnectionSpec, slot: string): Promise<{ pid?: number; ageSeconds?: number; state?: string } | undefined> {
  return withClient(source, async (c) => {
    const r = await c.query<{ pid: number | null; age: number | null; state: string | null }>(
      `WITH creating AS (
         SELECT query_start FROM pg_stat_activity
          WHERE backend_type = 'walsender' AND query LIKE 'CREATE\_REPLICATION\_SLOT%' AND strpos(query, $1) > 0
          ORDER BY query_start DESC LIMIT 1)
       SELECT a.pid, extract(epoch FROM now() - a.xact_start)::float8 AS age, a.state
         FROM creating LEFT JOIN pg_stat_activity a
           ON a.backend_xid IS NOT NULL AND a.xact_start < creating.query_start AND a.backend_type = 'client backend'
        ORDER BY a.xact_start NULLS LAST LIMIT 1`,
      [slot],
    );
    const row = r.rows[0];
    if (!row) return undefined;
    return row.pid === null ? {} : { pid: row.pid, ageSeconds: Math.round(row.age ?? 0), ...(row.state ? { state: row.state } : {}) };
  }, { applicationName: 'pg-dts slot wait' });
}

/** Drops the slot if it exists, first ending whatever walsender still holds it. */
export async function dropSlot(source: ConnectionSpec, slot: string): Promise<boolean> {
  return withClient(source, async (c) => {
    for (let i = 0; i < 20; i++) {
      const r = await c.query<{ active_pid: number | null }>('SELECT active_pid FROM pg_replication_slots WHERE slot_name = $1', [slot]);
      if (!r.rowCount) return false;
      const pid = r.rows[0]!.active_pid;
      if (pid) {
        await c.query('SELECT pg_terminate_backend($1)', [pid]);
        await new Promise((res) => setTimeout(res, 250));
        continue;
      }
      try {
        await c.query('SELECT pg_drop_replication_slot($1)', [slot]);
        return true;
      } catch (err) {
        // 55006: became active again between our look and the drop; 42704: gone already.
        const code = (err as { code?: string }).code;
        if (code === '42704') return false;
        if (code !== '55006') throw err;
      }
    }
    throw new Error(`replication slot ${slot} stays active; could not drop it`);
  });
}

export async function dropPublication(source: ConnectionSpec, publication: string): Promise<void> {
  await withClient(source, async (c) => {
    await c.query(`DROP PUBLICATION IF EXISTS ${ident(publication)}`);
    // Only ever ours: named after our publication, in our schema (sources before 14 have one).
    const marker = fenceMarkerTable(publication);
    const has = await c.query(`SELECT to_regclass($1) IS NOT NULL AS ok`, [qname(marker)]);
    if (has.rows[0]?.ok) {
      await c.query(`DROP TABLE IF EXISTS ${qname(marker)}`);
      await dropFenceSchemaIfEmpty(c);
    }
  });
}

export interface ReplicaIdentityInput {
  source: ConnectionSpec;
  tables: Array<{ table: QualifiedName; identity: 'full' | 'default' | 'nothing' }>;
}

/** ALTER TABLE ... REPLICA IDENTITY: set FULL for the migration (opt-in), restored at the end. Idempotent. */
export async function setReplicaIdentity(input: ReplicaIdentityInput): Promise<void> {
  try {
    await withClient(input.source, async (c) => {
      await c.query(`SET lock_timeout = '10s'`);
      for (const t of input.tables) await c.query(`ALTER TABLE ${qname(t.table)} REPLICA IDENTITY ${t.identity.toUpperCase()}`);
    });
  } catch (err) {
    throw during(err, 'set replica identity');
  }
}

/**
 * The leaf tables among ($1 schemas, $2 names) without a replica identity usable for UPDATE and
 * DELETE (no primary key, no REPLICA IDENTITY USING INDEX, not FULL): once published, the
 * application's UPDATEs and DELETEs on them fail.
 */
export const WITHOUT_REPLICA_IDENTITY_SQL = `SELECT n.nspname AS schema, c.relname AS name, c.relreplident
   FROM unnest($1::text[], $2::text[]) AS u(s, r)
   JOIN pg_namespace n0 ON n0.nspname = u.s
   JOIN pg_class c0 ON c0.relnamespace = n0.oid AND c0.relname = u.r
   CROSS JOIN LATERAL (SELECT c0.oid AS relid WHERE c0.relkind = 'r'
                       UNION SELECT relid FROM pg_partition_tree(c0.oid) WHERE isleaf) leaf
   JOIN pg_class c ON c.oid = leaf.relid
   JOIN pg_namespace n ON n.oid = c.relnamespace
  WHERE (c.relreplident = 'n'
         OR (c.relreplident = 'd' AND NOT EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indisprimary))
         OR (c.relreplident = 'i' AND NOT EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indisreplident)))
    AND c.relkind = 'r'`;

export interface ReverseReplicationInput {
  /** The migration's target: after the cutover, where the changes come from. */
  target: ConnectionSpec;
  /** Slot and publication name on the target (workflows/names.ts reverseIdFor). */
  slot: string;
  /** The migrated tables, by their target names. */
  tables: QualifiedName[];
}

/**
 * afterCutover "reverse", in FINALIZING with the source still fenced and the forward apply stopped: a
 * publication of the migrated tables and a logical slot on the target, so that every change made there
 * from now on can flow back to the source. No snapshot is needed: both sides hold the same rows at this
 * point. Idempotent: an existing slot is kept (it already holds what was written since it was made).
 * A target table without a usable replica identity gets REPLICA IDENTITY FULL: published without one,
 * the application's UPDATEs and DELETEs on it would fail. Returns those tables.
 */
export async function createReverseReplication(input: ReverseReplicationInput): Promise<{ replicaIdentityFull: string[] }> {
  try {
    await createPublication({ source: input.target, publication: input.slot, tables: input.tables });
    return await withClient(input.target, async (c) => {
      const missing = await c.query<{ schema: string; name: string }>(
        WITHOUT_REPLICA_IDENTITY_SQL,
        [input.tables.map((t) => t.schema), input.tables.map((t) => t.name)],
      );
      if (missing.rowCount) {
        await c.query(`SET lock_timeout = '10s'`);
        for (const t of missing.rows) await c.query(`ALTER TABLE ${qname(t)} REPLICA IDENTITY FULL`);
      }
      const exists = await c.query('SELECT 1 FROM pg_replication_slots WHERE slot_name = $1', [input.slot]);
      if (!exists.rowCount) await c.query(`SELECT pg_create_logical_replication_slot($1, 'pgoutput')`, [input.slot]);
      return { replicaIdentityFull: missing.rows.map((t) => `${t.schema}.${t.name}`) };
    });
  } catch (err) {
    throw during(err, 'create the reverse replication on the target');
  }
}

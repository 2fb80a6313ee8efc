/**
 * The apply's target session (SYNCING_WAL): its rules (replica mode or nothing that fires, no
 * timeouts) and the descriptions of the target tables the stream's relations are checked against.
 */
import type { Client } from 'pg';
import type { QualifiedName } from '../spec';
import { nameKey } from '../naming';
import { ApplyError, sqlState } from './errors';
import type { ApplyTable } from './options';


/** application_name of the apply's target session (tests find its backend by it); `2`: the second writer's. */
export function applyApplicationName(slot: string, writer: 1 | 2 = 1): string {
  return `pg-dts apply${writer === 2 ? ' 2' : ''} ${slot}`.slice(0, 63);
}

/**
 * The table a second writer may own alone (options.ts SecondWriter): among `tables`, the largest
 * plain table (no partitions, no children) with a primary key and no foreign key either way. A
 * foreign key would tie it to another table's writes: a TRUNCATE of both must be one statement, and
 * without replica mode the key's checks would see the other session's rows late. Undefined when
 * there are fewer than two tables, none qualifies, or any of them has a trigger or rule that is not
 * the proof's (it could write another session's table: a lock wait through our process, which no
 * deadlock check sees). The size is pg_class's (from the copy's ANALYZE): no lock taken.
 */
export async function secondWriterTable(c: Client, tables: readonly ApplyTable[]): Promise<QualifiedName | undefined> {
  if (tables.length < 2) return undefined;
  const r = await c.query<{ schema: string; name: string }>(
    `SELECT n.nspname AS schema, c.relname AS name
       FROM unnest($1::text[], $2::text[]) AS u(s, r)
       JOIN pg_namespace n ON n.nspname = u.s JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = u.r
      WHERE c.relkind = 'r' AND NOT c.relispartition AND NOT c.relhassubclass
        AND EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indisprimary)
        AND NOT EXISTS (SELECT 1 FROM pg_constraint k WHERE k.contype = 'f' AND (k.conrelid = c.oid OR k.confrelid = c.oid))
        AND NOT EXISTS (
          SELECT 1 FROM unnest($1::text[], $2::text[]) AS a(s, r)
            JOIN pg_namespace an ON an.nspname = a.s JOIN pg_class ac ON ac.relnamespace = an.oid AND ac.relname = a.r
           WHERE EXISTS (SELECT 1 FROM pg_trigger t WHERE t.tgrelid = ac.oid AND NOT t.tgisinternal AND t.tgenabled <> 'D'
                          AND NOT EXISTS (SELECT 1 FROM pg_proc f JOIN pg_namespace fn ON fn.oid = f.pronamespace
                                           WHERE f.oid = t.tgfoid AND fn.nspname = 'pgdts' AND f.proname LIKE 'pg\\_dts\\_%\\_writes'))
              OR EXISTS (SELECT 1 FROM pg_rewrite w WHERE w.ev_class = ac.oid AND w.ev_type <> '1' AND w.ev_enabled <> 'D'))
      ORDER BY c.relpages DESC, 1, 2 LIMIT 1`,
    [tables.map((t) => t.target.schema), tables.map((t) => t.target.name)],
  );
  const row = r.rows[0];
  return row ? { schema: row.schema, name: row.name } : undefined;
}

/** What the apply needs to know of a target table (onRelation). */
export interface TargetTable {
  relkind: string;
  /** typname: of the column type, or of its base type for a domain. */
  columns: {
    name: string;
    typid: number;
    typmod: number;
    generated: boolean;
    identity: string;
    type: string;
    typname: string;
    cast: string;
    coll: string | null;
  }[];
  pk: string[] | null;
  uniques: { cols: string[] | null; plain: boolean }[];
}

/** Reads the target tables' descriptions (columns, primary key, unique indexes) in one query, by name. */
export async function readTargetTables(target: Client, tables: readonly QualifiedName[]): Promise<Map<string, TargetTable>> {
  const r = await target.query<TargetTable & { schema: string; name: string }>(
    `SELECT n.nspname::text AS schema, c.relname::text AS name, c.relkind::text AS relkind,
              coalesce((SELECT json_agg(json_build_object('name', a.attname, 'typid', a.atttypid::int, 'typmod', a.atttypmod,
                                                          'generated', a.attgenerated <> '', 'identity', a.attidentity,
                                                          'type', format_type(a.atttypid, a.atttypmod),
                                                          -- For casts from text: format_type without a typmod would read bit/character as length 1.
                                                          'cast', CASE WHEN a.atttypmod < 0
                                                                       THEN (SELECT quote_ident(tn.nspname) || '.' || quote_ident(ty.typname)
                                                                               FROM pg_type ty JOIN pg_namespace tn ON tn.oid = ty.typnamespace WHERE ty.oid = a.atttypid)
                                                                       ELSE format_type(a.atttypid, a.atttypmod) END,
                                                          'coll', (SELECT quote_ident(cn.nspname) || '.' || quote_ident(co.collname)
                                                                     FROM pg_collation co JOIN pg_namespace cn ON cn.oid = co.collnamespace
                                                                    WHERE co.oid = a.attcollation
                                                                      AND a.attcollation <> (SELECT ty.typcollation FROM pg_type ty WHERE ty.oid = a.atttypid)),
                                                          'typname', (WITH RECURSIVE b AS (
                                                                        SELECT t.typname, t.typtype, t.typbasetype FROM pg_type t WHERE t.oid = a.atttypid
                                                                        UNION ALL
                                                                        SELECT t.typname, t.typtype, t.typbasetype FROM pg_type t JOIN b ON t.oid = b.typbasetype WHERE b.typtype = 'd')
                                                                      SELECT b.typname FROM b WHERE b.typtype <> 'd')) ORDER BY a.attnum)
                          FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped), '[]') AS columns,
              (SELECT array_agg(a.attname::text ORDER BY k.ord)
                 FROM pg_index i CROSS JOIN LATERAL unnest(i.indkey::int2[]) WITH ORDINALITY AS k(attnum, ord)
                 JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
                WHERE i.indrelid = c.oid AND i.indisprimary) AS pk,
              -- Unique indexes and exclusion constraints, of the table and of every partition: what
              -- a set-based write (rows in another order than the source's) could trip over.
              (SELECT coalesce(json_agg(json_build_object(
                        'cols', (SELECT array_agg(a.attname::text) FROM unnest(i.indkey::int2[]) AS k(attnum)
                                   JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum),
                        'plain', i.indexprs IS NULL AND i.indpred IS NULL AND NOT (0 = ANY (i.indkey::int2[])) AND NOT i.indisexclusion)), '[]')
                 FROM pg_index i
                -- pg_partition_tree() gives no row for a plain table: the table itself, named too.
                WHERE (i.indrelid = c.oid OR i.indrelid IN (SELECT relid FROM pg_partition_tree(c.oid))) AND (i.indisunique OR i.indisexclusion)) AS uniques
         FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE (n.nspname, c.relname) IN (SELECT * FROM unnest($1::text[], $2::text[])) AND c.relkind IN ('r', 'p')`,
    [tables.map((t) => t.schema), tables.map((t) => t.name)],
  );
  return new Map(r.rows.map((row) => [nameKey({ schema: row.schema, name: row.name }), row]));
}
/** The apply's session rules on the target (replica mode, or nothing may fire; no timeouts); repairs write under them too. */
export async function prepareTargetSession(c: Client, replicaRole: boolean, tables: readonly ApplyTable[]): Promise<void> {
  if (!replicaRole) await assertNothingFires(c, tables);
  else {
    try {
      // Like native logical replication: triggers and foreign-key checks do not fire for replicated rows.
      await c.query('SET session_replication_role = replica');
    } catch (err) {
      if (sqlState(err) === '42501') {
        throw new ApplyError(
          'the apply must run with session_replication_role = replica on the target (so triggers and foreign keys do not fire twice) ' +
            'and the target user may not set it: connect as a superuser, or on PostgreSQL 15+ GRANT SET ON PARAMETER session_replication_role TO that user',
          { code: '42501', permanent: true },
        );
      }
      throw err;
    }
  }
  const sets = [
    // Durability is handled by periodic synchronous commits (see the file comment).
    'SET synchronous_commit = off',
    // A source transaction can take long to stream: nothing on the target may time it out.
    'SET statement_timeout = 0',
    'SET lock_timeout = 0',
    'SET idle_in_transaction_session_timeout = 0',
    // Nor end a session idle for a while: the second writer's waits while its table is not written.
    `SELECT set_config('idle_session_timeout', '0', false) WHERE current_setting('server_version_num')::int >= 140000`,
  ];
  await c.query(sets.join('; '));
}

/**
 * Without replica mode every enabled trigger on a target table (or partition) fires for the apply's
 * writes: a user's trigger would apply its effects a second time, a foreign key (its internal
 * triggers, on either end) could reject a group whose rows arrive in another order than the source
 * wrote them. The migration creates neither before FINALIZING; refuse what someone else added.
 */
async function assertNothingFires(c: Client, tables: readonly ApplyTable[]): Promise<void> {
  const r = await c.query<{ what: string }>(
    `SELECT DISTINCT CASE WHEN t.tgisinternal AND t.tgconstraint <> 0
                          THEN 'foreign key ' || quote_ident(k.conname) || ' of ' || k.conrelid::regclass::text
                          ELSE 'trigger ' || quote_ident(t.tgname) || ' on ' || t.tgrelid::regclass::text END AS what
       FROM unnest($1::text[], $2::text[]) AS u(s, r)
       JOIN pg_namespace n ON n.nspname = u.s JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = u.r
       CROSS JOIN LATERAL (SELECT c.oid AS relid UNION SELECT relid FROM pg_partition_tree(c.oid)) p
       -- What fires with session_replication_role = origin: enabled (O) and ALWAYS (A), not REPLICA-only (R) or disabled (D).
       JOIN pg_trigger t ON t.tgrelid = p.relid AND t.tgenabled IN ('O', 'A')
        -- but the content proof's write marks (validate/sql.ts), which only count writes: AFTER, per
        -- statement (tgtype bits 1 row, 2 before), named pg_dts_<id>_writes like their pgdts function
        -- (or, counting by chunk, pg_dts_<id>_wi, _wu, _wd calling it)
        AND NOT ((t.tgtype & 3) = 0
                 AND EXISTS (SELECT 1 FROM pg_proc f JOIN pg_namespace fn ON fn.oid = f.pronamespace
                              WHERE f.oid = t.tgfoid AND fn.nspname = 'pgdts' AND f.proname LIKE 'pg\\_dts\\_%\\_writes'
                                AND t.tgname IN (f.proname, left(f.proname, -7) || '_wi', left(f.proname, -7) || '_wu', left(f.proname, -7) || '_wd')))
       LEFT JOIN pg_constraint k ON k.oid = t.tgconstraint
      ORDER BY 1 LIMIT 20`,
    [tables.map((t) => t.target.schema), tables.map((t) => t.target.name)],
  );
  if (r.rows.length) {
    throw new ApplyError(
      `the target role may not set session_replication_role, so the apply runs with triggers firing, and the target tables carry ${r.rows.map((x) => x.what).join(', ')}: ` +
        'these would fire for replicated rows (applying their effects twice, or rejecting rows written in another order); drop or disable them until the migration has finished, ' +
        'or connect as a role that may set session_replication_role',
      { code: '55000', permanent: true },
    );
  }
}

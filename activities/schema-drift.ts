/**
 * VALIDATING: did the source's schema change since the migration planned its tables? pg-dts does not
 * replicate DDL. The apply stops on DDL it can see (a relation message that no longer matches the
 * target, which only comes with a later change to that table), but a column added with no write after
 * it, an index created, or a table created in a migrated schema reach the apply as nothing at all, and
 * row comparisons only look at the columns known at the start. Compared here, with the source fenced:
 *
 *  - every migrated table still exists, with the columns the copy and the apply know (copyColumns),
 *    each of the same type as its target column (built-in types by OID and typmod, user types by name:
 *    their schema may be mapped);
 *  - each table has as many valid indexes on the source as its target has (partitioned tables: on the
 *    root; an invalid index, left by a failed CREATE INDEX CONCURRENTLY, is not migrated);
 *  - when whole schemas are migrated, no table was created in them since (the same tables preflight
 *    takes: logged, not partitions).
 */
import type { Client } from 'pg';
import { withClient } from './db';
import { displayName, type ConnectionSpec, type QualifiedName } from './spec';
import { nameKey } from './naming';

export interface SchemaDriftInput {
  source: ConnectionSpec;
  target: ConnectionSpec;
  tables: Array<{ source: QualifiedName; target: QualifiedName; copyColumns: string[] }>;
  /** The schemas migrated whole (spec.schemas when no table list was given): a table new in one is drift. */
  schemas?: string[];
}

interface TableFacts {
  schema: string;
  name: string;
  /** Columns that are neither dropped nor generated, in order. */
  columns: Array<{ name: string; typid: number; typmod: number; typname: string }>;
  indexes: number;
}

const FIRST_NORMAL_OBJECT_ID = 16384;

const FACTS_SQL = `
  SELECT n.nspname::text AS schema, c.relname::text AS name,
         coalesce((SELECT json_agg(json_build_object('name', a.attname, 'typid', a.atttypid::int, 'typmod', a.atttypmod, 'typname', t.typname) ORDER BY a.attnum)
                     FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid
                    WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = ''), '[]') AS columns,
         (SELECT count(*)::int FROM pg_index i WHERE i.indrelid = c.oid AND i.indisvalid AND i.indisready) AS indexes
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
   WHERE (n.nspname, c.relname) IN (SELECT * FROM unnest($1::text[], $2::text[])) AND c.relkind IN ('r', 'p')`;

async function readFacts(c: Client, tables: QualifiedName[]): Promise<Map<string, TableFacts>> {
  const r = await c.query<TableFacts>(FACTS_SQL, [tables.map((t) => t.schema), tables.map((t) => t.name)]);
  return new Map(r.rows.map((row) => [nameKey(row), row]));
}

/** What changed on the source since the tables were planned, one line per table; empty when nothing did. */
export async function findSchemaDrift(input: SchemaDriftInput): Promise<string[]> {
  const [source, target, created] = await withClient(input.source, async (src) =>
    withClient(input.target, async (dst) =>
      Promise.all([
        readFacts(src, input.tables.map((t) => t.source)),
        readFacts(dst, input.tables.map((t) => t.target)),
        input.schemas?.length ? newTables(src, input.schemas, input.tables.map((t) => t.source)) : Promise.resolve([]),
      ]),
    ),
  );
  const found: string[] = [];
  for (const t of input.tables) {
    const name = displayName(t.source);
    const s = source.get(nameKey(t.source));
    if (!s) {
      found.push(`${name}: no longer exists on the source`);
      continue;
    }
    const d = target.get(nameKey(t.target));
    const known = new Set(t.copyColumns);
    const now = new Set(s.columns.map((c) => c.name));
    const changes: string[] = [];
    const added = s.columns.filter((c) => !known.has(c.name)).map((c) => c.name);
    const dropped = t.copyColumns.filter((c) => !now.has(c));
    if (added.length) changes.push(`column(s) added: ${added.join(', ')}`);
    if (dropped.length) changes.push(`column(s) dropped or renamed: ${dropped.join(', ')}`);
    if (d) {
      const dcols = new Map(d.columns.map((c) => [c.name, c]));
      const retyped = s.columns
        .filter((c) => {
          const x = dcols.get(c.name);
          if (!x || !known.has(c.name)) return false;
          const builtIn = c.typid < FIRST_NORMAL_OBJECT_ID;
          if (builtIn !== x.typid < FIRST_NORMAL_OBJECT_ID) return true;
          return builtIn ? c.typid !== x.typid || c.typmod !== x.typmod : c.typname !== x.typname;
        })
        .map((c) => c.name);
      if (retyped.length) changes.push(`column type(s) changed: ${retyped.join(', ')}`);
      if (s.indexes !== d.indexes) changes.push(`${s.indexes} index(es) on the source, ${d.indexes} on the target ${displayName(t.target)}`);
    }
    if (changes.length) found.push(`${name}: ${changes.join('; ')}`);
  }
  for (const n of created) found.push(`${displayName(n)}: created on the source during the migration (not migrated)`);
  return found;
}

/** Tables in `schemas` that preflight would take (logged, not a partition) and that are not `known`. */
async function newTables(c: Client, schemas: string[], known: QualifiedName[]): Promise<QualifiedName[]> {
  const r = await c.query<QualifiedName>(
    `SELECT n.nspname::text AS schema, c.relname::text AS name
       FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
      WHERE n.nspname = ANY($1::text[]) AND c.relkind IN ('r', 'p') AND c.relpersistence = 'p' AND NOT c.relispartition
        -- an extension's own table (postgis's spatial_ref_sys) is the extension's, as in preflight
        AND NOT EXISTS (SELECT 1 FROM pg_depend d
                         WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.refclassid = 'pg_extension'::regclass AND d.deptype = 'e')
      ORDER BY 1, 2`,
    [schemas],
  );
  const have = new Set(known.map(nameKey));
  return r.rows.filter((t) => !have.has(nameKey(t)));
}

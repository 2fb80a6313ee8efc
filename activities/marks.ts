/**
 * What this migration created on the target carries its mark: a COMMENT naming the migration id, set
 * in the same transaction as the CREATE. Truncating (the copy) and dropping (cancel) touch only
 * marked objects, so a table someone else created under the same name — between our preflight and
 * CREATING_TABLES, or during the copy — is refused, never adopted, emptied or dropped.
 */
import type { Client } from 'pg';
import { preconditionFailed } from './errors';
import { literal, qname } from './sql';
import { displayName, type QualifiedName } from './spec';

export const markText = (migrationId: string): string => `pg-dts migration ${migrationId}`;

/** COMMENT statements marking these relations (tables, partitions) as created by `migrationId`. */
export function markStatements(kind: 'TABLE' | 'SEQUENCE' | 'TYPE' | 'SCHEMA', names: readonly string[], migrationId: string): string[] {
  return names.map((n) => `COMMENT ON ${kind} ${n} IS ${literal(markText(migrationId))}`);
}

export const markTables = (tables: readonly QualifiedName[], migrationId: string): string[] => markStatements('TABLE', tables.map(qname), migrationId);

export interface MarkState {
  /** Absent on the target. */
  missing: QualifiedName[];
  /** Present with this migration's mark. */
  ours: QualifiedName[];
  /** Present without it: someone else's. */
  foreign: QualifiedName[];
}

export async function tableMarks(c: Client, tables: readonly QualifiedName[], migrationId: string): Promise<MarkState> {
  const r = await c.query<{ i: number; present: boolean; ours: boolean }>(
    `SELECT u.i, k.oid IS NOT NULL AS present, coalesce(obj_description(k.oid, 'pg_class') = $3, false) AS ours
       FROM unnest($1::text[], $2::text[]) WITH ORDINALITY AS u(s, r, i)
       LEFT JOIN pg_namespace n ON n.nspname = u.s
       LEFT JOIN pg_class k ON k.relnamespace = n.oid AND k.relname = u.r
      ORDER BY u.i`,
    [tables.map((t) => t.schema), tables.map((t) => t.name), markText(migrationId)],
  );
  const state: MarkState = { missing: [], ours: [], foreign: [] };
  for (const row of r.rows) {
    const t = tables[Number(row.i) - 1]!;
    (row.present ? (row.ours ? state.ours : state.foreign) : state.missing).push(t);
  }
  return state;
}

/** Refuses (non-retryable) unless every table exists with this migration's mark. */
export async function assertOurs(c: Client, tables: readonly QualifiedName[], migrationId: string, what: string): Promise<void> {
  const s = await tableMarks(c, tables, migrationId);
  if (s.foreign.length) {
    throw preconditionFailed(
      `${what}: target table(s) ${s.foreign.map(displayName).join(', ')} were not created by migration ${migrationId} (no pg-dts mark): pg-dts never writes into, empties or drops a table it did not create`,
    );
  }
  if (s.missing.length) throw preconditionFailed(`${what}: target table(s) ${s.missing.map(displayName).join(', ')} no longer exist`);
}

/** Schemas, types, sequences and extensions on the target: what a CREATING_TABLES transaction adds is ours. */
export interface CatalogObject {
  kind: 'SCHEMA' | 'TYPE' | 'DOMAIN' | 'SEQUENCE' | 'EXTENSION';
  /** As COMMENT and DROP take it. */
  name: string;
}

const OBJECTS_SQL = `
  SELECT 'SCHEMA' AS kind, quote_ident(nspname) AS name FROM pg_namespace
  UNION ALL
  SELECT CASE t.typtype WHEN 'd' THEN 'DOMAIN' ELSE 'TYPE' END, format('%I.%I', n.nspname, t.typname)
    FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
   WHERE t.typtype IN ('e', 'd', 'r') OR (t.typtype = 'c' AND (SELECT relkind FROM pg_class WHERE oid = t.typrelid) = 'c')
  UNION ALL
  SELECT 'SEQUENCE', format('%I.%I', n.nspname, c.relname) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
   WHERE c.relkind = 'S'
     -- Owned (serial) and identity sequences go with their table.
     AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype IN ('a', 'i'))
  UNION ALL
  SELECT 'EXTENSION', quote_ident(extname) FROM pg_extension`;

export async function catalogObjects(c: Client): Promise<CatalogObject[]> {
  return (await c.query<CatalogObject>(OBJECTS_SQL)).rows;
}

/** What is in `after` and not in `before`. */
export function addedObjects(before: readonly CatalogObject[], after: readonly CatalogObject[]): CatalogObject[] {
  const had = new Set(before.map((o) => `${o.kind} ${o.name}`));
  return after.filter((o) => !had.has(`${o.kind} ${o.name}`));
}

export const markObjects = (objects: readonly CatalogObject[], migrationId: string): string[] =>
  objects.map((o) => `COMMENT ON ${o.kind} ${o.name} IS ${literal(markText(migrationId))}`);

/** This migration's marked schemas, types, sequences and extensions, in the order they can be dropped. */
export async function markedObjects(c: Client, migrationId: string): Promise<CatalogObject[]> {
  const r = await c.query<CatalogObject & { description: string | null }>(
    `SELECT o.kind, o.name, d.description FROM (
       SELECT 'SEQUENCE' AS kind, format('%I.%I', n.nspname, c.relname) AS name, c.oid, 'pg_class'::regclass AS cls, 1 AS ord
         FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.relkind = 'S'
       UNION ALL
       SELECT CASE t.typtype WHEN 'd' THEN 'DOMAIN' ELSE 'TYPE' END, format('%I.%I', n.nspname, t.typname), t.oid, 'pg_type'::regclass, 2
         FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
       UNION ALL
       SELECT 'EXTENSION', quote_ident(extname), oid, 'pg_extension'::regclass, 3 FROM pg_extension
       UNION ALL
       SELECT 'SCHEMA', quote_ident(nspname), oid, 'pg_namespace'::regclass, 4 FROM pg_namespace) o
     JOIN pg_description d ON d.objoid = o.oid AND d.classoid = o.cls AND d.objsubid = 0
    WHERE d.description = $1
    ORDER BY o.ord, o.name`,
    [markText(migrationId)],
  );
  return r.rows.map((o) => ({ kind: o.kind, name: o.name }));
}

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

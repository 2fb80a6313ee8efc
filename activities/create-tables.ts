/**
 * CREATING_TABLES: the bare tables, before the load (their keys, indexes and constraints come after
 * it: activities/post-load.ts). DDL comes from activities/ddl.ts, built from the source catalog by
 * activities/catalog.ts.
 */
import type { Client } from 'pg';
import { readTableDefs } from './catalog';
import { withClient } from './db';
import { during } from './errors';
import { copyExtensionConfig } from './extension-config';
import type { TableDef } from './model';
import type { MigrationPlan } from './preflight';
import { addedObjects, assertOurs, catalogObjects, markObjects, markTables, tableMarks } from './marks';

/**
 * With `migrationId` (every run since the target-marks patch) each table and partition is marked as
 * created by this migration in the same transaction, and a table found there without the mark is a
 * refusal: created by someone else since preflight, it is never adopted.
 */
export async function createTargetTables(plan: Pick<MigrationPlan, 'spec' | 'tables'> & { migrationId?: string }): Promise<TableDef[]> {
  const { spec } = plan;
  try {
    const defs = await withClient(spec.source, (c) => readTableDefs(c, plan.tables, spec), { applicationName: 'pg-dts schema' });
    await withClient(
      spec.target,
      async (c) => {
        const names = defs.flatMap((d) => [d.target, ...(d.partitions ?? []).map((p) => p.target)]);
        if (plan.migrationId) {
          const marks = await tableMarks(c, names, plan.migrationId);
          if (marks.foreign.length) await assertOurs(c, names, plan.migrationId, 'create target tables');
          // A retry after a committed attempt finds every table there, marked.
          if (marks.missing.length === 0) return;
        } else if (await allExist(c, defs)) return;
        await c.query('BEGIN');
        try {
          // Schemas, types, sequences and extensions that these statements add are ours too: marked, a cancel drops them.
          const before = plan.migrationId ? await catalogObjects(c) : [];
          for (const def of defs) for (const stmt of def.preLoad) await c.query(stmt);
          if (plan.migrationId) {
            const added = addedObjects(before, await catalogObjects(c));
            for (const stmt of [...markTables(names, plan.migrationId), ...markObjects(added, plan.migrationId)]) await c.query(stmt);
          }
          await c.query('COMMIT');
        } catch (err) {
          await c.query('ROLLBACK').catch(() => undefined);
          throw err;
        }
      },
      { applicationName: 'pg-dts schema' },
    );
    const carried = await withClient(
      spec.source,
      (src) => withClient(spec.target, (dst) => copyExtensionConfig(src, dst, plan.tables.map((t) => t.source)), { applicationName: 'pg-dts schema' }),
      { applicationName: 'pg-dts schema' },
    );
    if (carried.length && defs[0]) defs[0].warnings = [...(defs[0].warnings ?? []), ...carried];
    return defs;
  } catch (err) {
    throw during(err, 'create target tables');
  }
}

async function allExist(c: Client, defs: TableDef[]): Promise<boolean> {
  const r = await c.query<{ n: number }>(
    `SELECT count(*)::int AS n FROM pg_class k JOIN pg_namespace n ON n.oid = k.relnamespace
      WHERE (n.nspname, k.relname) IN (SELECT * FROM unnest($1::text[], $2::text[]))`,
    [defs.map((d) => d.target.schema), defs.map((d) => d.target.name)],
  );
  return r.rows[0]!.n === defs.length;
}

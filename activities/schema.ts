/**
 * CREATING_TABLES (tables and primary keys, before the load) and the end of MIGRATING_DATA
 * (secondary indexes, constraints, ANALYZE, after the load). DDL comes from activities/ddl.ts, built
 * from the source catalog by activities/catalog.ts.
 */
import type { Client } from 'pg';
import { readTableDefs } from './catalog';
import { withClient } from './db';
import { classify } from './errors';
import type { TableDef } from './model';
import type { MigrationPlan } from './preflight';
import { qname } from './sql';

export async function createTargetTables(plan: Pick<MigrationPlan, 'spec' | 'tables'>): Promise<TableDef[]> {
  const { spec } = plan;
  try {
    const defs = await withClient(spec.source, (c) => readTableDefs(c, plan.tables, spec), { applicationName: 'pg-dts schema' });
    await withClient(
      spec.target,
      async (c) => {
        // A retry after a committed attempt finds every table there (preflight saw none before).
        if (await allExist(c, defs)) return;
        await c.query('BEGIN');
        try {
          for (const def of defs) for (const stmt of def.preLoad) await c.query(stmt);
          await c.query('COMMIT');
        } catch (err) {
          await c.query('ROLLBACK').catch(() => undefined);
          throw err;
        }
      },
      { applicationName: 'pg-dts schema' },
    );
    return defs;
  } catch (err) {
    throw classify(err, 'create target tables');
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

/** SQLSTATEs meaning "this object is already there": a retried post-load step skips it. */
const ALREADY_THERE = new Set(['42P07', '42710', '42P16']);

export async function finishTargetTables(input: {
  target: MigrationPlan['spec']['target'];
  defs: TableDef[];
}): Promise<{ statements: number; skipped: string[] }> {
  let statements = 0;
  const skipped: string[] = [];
  try {
    await withClient(
      input.target,
      async (c) => {
        await c.query(`SET maintenance_work_mem = '256MB'`);
        // Foreign keys last, across all tables: one may reference a unique constraint of a table
        // whose post-load statements come later.
        const fks = new Set(input.defs.flatMap((d) => d.foreignKeys ?? []));
        const ordered = [...input.defs.flatMap((d) => d.postLoad.filter((s) => !fks.has(s))), ...fks];
        {
          for (const stmt of ordered) {
            await c.query('BEGIN');
            try {
              await c.query(stmt);
              await c.query('COMMIT');
              statements++;
            } catch (err) {
              await c.query('ROLLBACK').catch(() => undefined);
              const code = (err as { code?: string }).code ?? '';
              if (ALREADY_THERE.has(code)) continue;
              // A foreign key to a table that is neither migrated nor present on the target: the data
              // is there, the constraint cannot be; say so rather than fail the whole migration.
              if (fks.has(stmt) && code === '42P01') {
                skipped.push(`foreign key not created (${(err as Error).message}): ${stmt}`);
                continue;
              }
              throw err;
            }
          }
        }
        for (const def of input.defs) await c.query(`ANALYZE ${qname(def.target)}`);
      },
      { applicationName: 'pg-dts schema' },
    );
    return { statements, skipped };
  } catch (err) {
    throw classify(err, 'create indexes and constraints');
  }
}

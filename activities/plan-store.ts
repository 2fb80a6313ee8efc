/**
 * The migration's plan, kept on the target (schema pgdts) instead of in workflow history: the tables
 * (names, definitions, DDL), how each is copied, and the copy batches. It grows with the table count,
 * and history must not (a 2,000-table plan carried through history made 9 MB of it and a
 * continue-as-new payload over the server's limit). The workflow carries a PlanRef, counts and one
 * bounded page of tables; activities read what they need by reference. Every row is keyed by the
 * migration id, so cleanup deletes exactly this migration's rows.
 */
import type { Client } from 'pg';
import { connect, runIdempotentDdl, withClient } from './db';
import type { TableDef } from './model';
import type { TablePlan } from './preflight';
import type { CopyRange } from './copy';
import type { CopyPlan } from './copy-plan';
import type { ConnectionSpec } from './spec';

/** Where a migration's plan lives. Travels through history instead of the plan itself. */
export interface PlanRef {
  target: ConnectionSpec;
  migrationId: string;
}

export const PLAN_SCHEMA = 'pgdts';

const PLAN_DDL = [
  `CREATE SCHEMA IF NOT EXISTS ${PLAN_SCHEMA}`,
  // One row per migrated table, ord = its position in the plan (preflight's order).
  `CREATE TABLE IF NOT EXISTS ${PLAN_SCHEMA}.plan_tables (
  migration_id text NOT NULL,
  ord int NOT NULL,
  plan jsonb NOT NULL,
  def jsonb,
  bytes bigint,
  PRIMARY KEY (migration_id, ord)
)`,
  // One row per copy unit: a whole table or one page range of a large one, grouped into batches.
  `CREATE TABLE IF NOT EXISTS ${PLAN_SCHEMA}.plan_units (
  migration_id text NOT NULL,
  batch int NOT NULL,
  seq int NOT NULL,
  ord int NOT NULL,
  range jsonb,
  PRIMARY KEY (migration_id, batch, seq)
)`,
] as const;

async function ensurePlanTables(c: Client): Promise<void> {
  // Migrations starting side by side may race on CREATE ... IF NOT EXISTS.
  await runIdempotentDdl(c, PLAN_DDL, 2);
}

/** INIT's table list, replacing whatever an earlier attempt wrote. One statement for all the rows. */
export async function storeTablePlans(ref: PlanRef, tables: readonly TablePlan[]): Promise<void> {
  await withClient(
    ref.target,
    async (c) => {
      await ensurePlanTables(c);
      await c.query('BEGIN');
      try {
        await c.query(`DELETE FROM ${PLAN_SCHEMA}.plan_units WHERE migration_id = $1`, [ref.migrationId]);
        await c.query(`DELETE FROM ${PLAN_SCHEMA}.plan_tables WHERE migration_id = $1`, [ref.migrationId]);
        await c.query(
          `INSERT INTO ${PLAN_SCHEMA}.plan_tables (migration_id, ord, plan)
           SELECT $1, (t.ord - 1)::int, t.plan FROM jsonb_array_elements($2::jsonb) WITH ORDINALITY AS t(plan, ord)`,
          [ref.migrationId, JSON.stringify(tables)],
        );
        await c.query('COMMIT');
      } catch (err) {
        await c.query('ROLLBACK').catch(() => undefined);
        throw err;
      }
    },
    { applicationName: 'pg-dts plan' },
  );
}

export async function readTablePlans(ref: PlanRef): Promise<TablePlan[]> {
  return withClient(ref.target, async (c) => {
    const r = await c.query<{ plan: TablePlan }>(`SELECT plan FROM ${PLAN_SCHEMA}.plan_tables WHERE migration_id = $1 ORDER BY ord`, [ref.migrationId]);
    return r.rows.map((x) => x.plan);
  });
}

/** CREATING_TABLES' definitions, in plan order (defs[i] belongs to the table of ord i). */
export async function storeDefs(ref: PlanRef, defs: readonly TableDef[]): Promise<void> {
  await withClient(ref.target, (c) =>
    c.query(
      `UPDATE ${PLAN_SCHEMA}.plan_tables p SET def = d.def
         FROM jsonb_array_elements($2::jsonb) WITH ORDINALITY AS d(def, ord)
        WHERE p.migration_id = $1 AND p.ord = d.ord - 1`,
      [ref.migrationId, JSON.stringify(defs)],
    ),
  );
}

/** Every table's definition in plan order, or only those of `ords`. */
export async function readDefs(ref: PlanRef, ords?: readonly number[]): Promise<TableDef[]> {
  return withClient(ref.target, (c) => readDefsWith(c, ref.migrationId, ords), { applicationName: 'pg-dts plan' });
}

async function readDefsWith(c: Client, migrationId: string, ords?: readonly number[]): Promise<TableDef[]> {
  const r = await c.query<{ def: TableDef | null; ord: number }>(
    `SELECT def, ord FROM ${PLAN_SCHEMA}.plan_tables WHERE migration_id = $1 AND ($2::int[] IS NULL OR ord = ANY($2::int[])) ORDER BY ord`,
    [migrationId, ords ? [...ords] : null],
  );
  return r.rows.map((x) => {
    if (!x.def) throw new Error(`the plan of migration ${migrationId} has no definition for table ${x.ord} (CREATING_TABLES did not store it)`);
    return x.def;
  });
}

/** One copy unit as plan_units stores it. */
export interface StoredUnit {
  batch: number;
  ord: number;
  range?: CopyRange;
}

/**
 * Groups copy units into batches, biggest first. A page range, or a table of a quarter of `maxBytes`
 * or more, is a batch of its own (its post-load DDL starts as soon as it has landed, and small
 * tables' DDL runs while it copies); smaller tables share a batch up to `maxTables` of them or
 * `maxBytes` together, so a schema of thousands of tiny tables is a few dozen activities. Pure.
 */
export function assignBatches(plans: readonly CopyPlan[], opts: { maxBytes: number; maxTables: number }): StoredUnit[] {
  const order = plans.map((p, ord) => ({ p, ord })).sort((a, b) => b.p.bytes - a.p.bytes || a.ord - b.ord);
  const units: StoredUnit[] = [];
  let batch = -1;
  let open: { tables: number; bytes: number } | undefined;
  for (const { p, ord } of order) {
    if (p.ranges) {
      for (const range of p.ranges) units.push({ batch: ++batch, ord, range });
      open = undefined;
      continue;
    }
    if (p.bytes >= opts.maxBytes / 4) {
      units.push({ batch: ++batch, ord });
      open = undefined;
      continue;
    }
    if (!open || open.tables >= opts.maxTables || open.bytes + p.bytes > opts.maxBytes) {
      open = { tables: 0, bytes: 0 };
      batch++;
    }
    open.tables++;
    open.bytes += p.bytes;
    units.push({ batch, ord });
  }
  return units;
}

/** MIGRATING_DATA's copy plan: each table's size and the batches. Replaces an earlier attempt's. */
export async function storeCopyPlan(ref: PlanRef, plans: readonly CopyPlan[], units: readonly StoredUnit[]): Promise<void> {
  await withClient(ref.target, async (c) => {
    await c.query('BEGIN');
    try {
      await c.query(`DELETE FROM ${PLAN_SCHEMA}.plan_units WHERE migration_id = $1`, [ref.migrationId]);
      await c.query(
        `UPDATE ${PLAN_SCHEMA}.plan_tables p SET bytes = b.bytes
           FROM unnest($2::bigint[]) WITH ORDINALITY AS b(bytes, ord)
          WHERE p.migration_id = $1 AND p.ord = b.ord - 1`,
        [ref.migrationId, plans.map((p) => p.bytes)],
      );
      await c.query(
        `INSERT INTO ${PLAN_SCHEMA}.plan_units (migration_id, batch, seq, ord, range)
         SELECT $1, u.batch, (u.seq - 1)::int, u.ord, u.range
           FROM unnest($2::int[], $3::int[], $4::jsonb[]) WITH ORDINALITY AS u(batch, ord, range, seq)`,
        [ref.migrationId, units.map((u) => u.batch), units.map((u) => u.ord), units.map((u) => (u.range ? JSON.stringify(u.range) : null))],
      );
      await c.query('COMMIT');
    } catch (err) {
      await c.query('ROLLBACK').catch(() => undefined);
      throw err;
    }
  });
}

/** The units of one batch with their tables' definitions, in the order stored. */
export async function readBatch(ref: PlanRef, batch: number): Promise<Array<{ ord: number; def: TableDef; range?: CopyRange }>> {
  return withClient(ref.target, async (c) => {
    const r = await c.query<{ ord: number; def: TableDef; range: CopyRange | null }>(
      `SELECT u.ord, t.def, u.range FROM ${PLAN_SCHEMA}.plan_units u
         JOIN ${PLAN_SCHEMA}.plan_tables t ON t.migration_id = u.migration_id AND t.ord = u.ord
        WHERE u.migration_id = $1 AND u.batch = $2 ORDER BY u.seq`,
      [ref.migrationId, batch],
    );
    return r.rows.map((x) => ({ ord: x.ord, def: x.def, ...(x.range ? { range: x.range } : {}) }));
  });
}

/**
 * Deletes this migration's plan rows, and our tables once no other migration has rows in them (never
 * waiting for their lock, which would stall another migration reading its plan). Idempotent.
 */
export async function forgetPlan(target: ConnectionSpec, migrationId: string): Promise<void> {
  const c = await connect(target, { applicationName: 'pg-dts cleanup' });
  try {
    const has = await c.query<{ ok: boolean }>(`SELECT to_regclass('${PLAN_SCHEMA}.plan_tables') IS NOT NULL AND to_regclass('${PLAN_SCHEMA}.plan_units') IS NOT NULL AS ok`);
    if (!has.rows[0]?.ok) return;
    await c.query('BEGIN');
    await c.query(`DELETE FROM ${PLAN_SCHEMA}.plan_units WHERE migration_id = $1`, [migrationId]);
    await c.query(`DELETE FROM ${PLAN_SCHEMA}.plan_tables WHERE migration_id = $1`, [migrationId]);
    await c.query('SAVEPOINT plan_drop');
    const locked = await c.query(`LOCK TABLE ${PLAN_SCHEMA}.plan_tables, ${PLAN_SCHEMA}.plan_units IN ACCESS EXCLUSIVE MODE NOWAIT`).then(
      () => true,
      () => c.query('ROLLBACK TO SAVEPOINT plan_drop').then(() => false),
    );
    const left = locked ? await c.query(`SELECT 1 FROM ${PLAN_SCHEMA}.plan_tables LIMIT 1`) : { rowCount: 1 };
    if (!left.rowCount) {
      await c.query(`DROP TABLE ${PLAN_SCHEMA}.plan_units, ${PLAN_SCHEMA}.plan_tables`);
      await c.query('SAVEPOINT schema_drop');
      // Never wait: DROP SCHEMA locks what is still in it before refusing (see cleanup.ts).
      await c.query(`SET LOCAL lock_timeout = '1s'`);
      // Anything else still in the schema (the apply's progress, range records) keeps it.
      await c.query(`DROP SCHEMA ${PLAN_SCHEMA}`).catch(() => c.query('ROLLBACK TO SAVEPOINT schema_drop'));
    }
    await c.query('COMMIT');
  } catch (err) {
    await c.query('ROLLBACK').catch(() => undefined);
    throw err;
  } finally {
    await c.end().catch(() => undefined);
  }
}

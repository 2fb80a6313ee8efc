/**
 * What a migration leaves on the servers, found by name and removed by name: `dts orphans` lists it,
 * `dts cleanup` removes one migration's, and the preflight reports what no running migration owns.
 *
 * Every object is ours by its name, derived from the migration id (workflows/names.ts): slot and
 * publication `pg_dts_<id>`, fence trigger `pg_dts_fence_<id>` with its function `pgdts.fence_<id>`,
 * the apply's position in the target's `pgdts.apply_progress` (keyed by the slot), the content proof's
 * write-mark triggers `pg_dts_<id>_writes` with their function of the same name, the plan kept on the
 * target (`pgdts.plan_tables`/`plan_units`, keyed by the migration id). Nothing else is
 * looked at, so nothing we did not create is touched. Copy records (`pgdts.copy_progress`) are keyed
 * by target table: one belongs to the migration whose mark (marks.ts) its table carries, and goes with
 * that migration's leftovers; a record of an unmarked table is listed, never removed here.
 */
import type { Client } from '@temporalio/client';
import { decodeFromPayloadsAtIndex } from '@temporalio/common/lib/internal-non-workflow';
import { withClient } from './db';
import { migrationIdOf, reverseIdFor } from '../workflows/names';
import { WORKFLOW_TYPE } from '../workflows/contract';
import { liftFence, removeFence, FENCE_SCHEMA } from './stop-writes';
import { dropPublication, dropSlot } from './replication';
import { dropApplyProgress } from './cleanup';
import { forgetCopyRecords } from './copy';
import { markText } from './marks';
import { forgetPlan, PLAN_SCHEMA } from './plan-store';
import type { ConnectionSpec, QualifiedName } from './spec';

/** A mark's text up to the migration id (marks.ts). */
const MARK_PREFIX = markText('');

export type LeftoverKind = 'slot' | 'publication' | 'fence' | 'apply-progress' | 'copy-progress' | 'write-marks' | 'plan';

export interface Leftover {
  /** The migration it belongs to; undefined for range-copy records (keyed by table). */
  migrationId?: string;
  kind: LeftoverKind;
  server: 'source' | 'target';
  /** The slot, publication, fenced table, progress row or copy record. */
  name: string;
  /** Slots: WAL retained, state, whether a walsender uses it. */
  detail?: string;
  /** Fences: the fenced table. */
  table?: QualifiedName;
}

const PREFIX = 'pg_dts_';
const FENCE_PREFIX = 'pg_dts_fence_';
/** LIKE pattern for a prefix (its underscores are wildcards otherwise). */
const like = (prefix: string) => `${prefix.replace(/_/g, '\\_')}%`;

export async function findSourceLeftovers(source: ConnectionSpec): Promise<Leftover[]> {
  return withClient(
    source,
    async (c) => {
      const out: Leftover[] = [];
      const slots = await c.query<{ slot_name: string; active: boolean; wal_status: string | null; retained: string | null }>(
        // wal_status exists from PostgreSQL 13 (NULL through to_jsonb on 12). A temporary slot (a
        // resumed copy's snapshot) goes with its session: never a leftover.
        `SELECT slot_name, active, to_jsonb(s) ->> 'wal_status' AS wal_status, pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)::bigint::text AS retained
           FROM pg_replication_slots s WHERE database = current_database() AND slot_name LIKE $1 AND NOT temporary ORDER BY slot_name`,
        [like(PREFIX)],
      );
      for (const s of slots.rows) {
        out.push({
          migrationId: s.slot_name.slice(PREFIX.length),
          kind: 'slot',
          server: 'source',
          name: s.slot_name,
          detail: `${s.retained ?? '?'} bytes of WAL retained, wal_status ${s.wal_status ?? '?'}${s.active ? ', in use' : ''}`,
        });
      }
      const pubs = await c.query<{ pubname: string }>(`SELECT pubname FROM pg_publication WHERE pubname LIKE $1 ORDER BY pubname`, [like(PREFIX)]);
      for (const p of pubs.rows) out.push({ migrationId: p.pubname.slice(PREFIX.length), kind: 'publication', server: 'source', name: p.pubname });
      const fences = await c.query<{ tgname: string; schema: string; name: string }>(
        `SELECT g.tgname, n.nspname AS schema, k.relname AS name
           FROM pg_trigger g JOIN pg_class k ON k.oid = g.tgrelid JOIN pg_namespace n ON n.oid = k.relnamespace
          WHERE g.tgname LIKE $1 ORDER BY 1, 2, 3`,
        [like(FENCE_PREFIX)],
      );
      for (const f of fences.rows) out.push({ migrationId: f.tgname.slice(FENCE_PREFIX.length), kind: 'fence', server: 'source', name: `${f.schema}.${f.name}`, table: { schema: f.schema, name: f.name } });
      // A fence function whose triggers are gone already (a release cut short).
      const fns = await c.query<{ proname: string }>(
        `SELECT p.proname FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = $1 AND p.proname LIKE 'fence\\_%'`,
        [FENCE_SCHEMA],
      );
      for (const f of fns.rows) {
        const id = f.proname.slice('fence_'.length);
        if (!out.some((l) => l.kind === 'fence' && l.migrationId === id)) out.push({ migrationId: id, kind: 'fence', server: 'source', name: `${FENCE_SCHEMA}.${f.proname}()` });
      }
      return out;
    },
    { applicationName: 'pg-dts orphans' },
  );
}

export async function findTargetLeftovers(target: ConnectionSpec): Promise<Leftover[]> {
  return withClient(
    target,
    async (c) => {
      const out: Leftover[] = [];
      const has = await c.query<{ apply: boolean; copy: boolean; plan: boolean }>(
        `SELECT to_regclass('pgdts.apply_progress') IS NOT NULL AS apply, to_regclass('pgdts.copy_progress') IS NOT NULL AS copy, to_regclass('${PLAN_SCHEMA}.plan_tables') IS NOT NULL AS plan`,
      );
      if (has.rows[0]!.apply) {
        const rows = await c.query<{ slot_name: string }>(`SELECT slot_name FROM pgdts.apply_progress ORDER BY 1`);
        for (const r of rows.rows) {
          out.push({ migrationId: r.slot_name.startsWith(PREFIX) ? r.slot_name.slice(PREFIX.length) : r.slot_name, kind: 'apply-progress', server: 'target', name: r.slot_name });
        }
      }
      // The content proof's write-mark function (validate/sql.ts) and the triggers a cleanup could not
      // drop yet (their table was busy): no-ops once released, still ours to remove.
      const marks = await c.query<{ proname: string; triggers: number }>(
        `SELECT p.proname, (SELECT count(*)::int FROM pg_trigger g WHERE g.tgfoid = p.oid) AS triggers
           FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
          WHERE n.nspname = 'pgdts' AND p.proname LIKE $1 AND p.proname LIKE '%\\_writes' ORDER BY 1`,
        [like(PREFIX)],
      );
      for (const r of marks.rows) {
        const slot = r.proname.slice(0, -'_writes'.length);
        out.push({ migrationId: slot.slice(PREFIX.length), kind: 'write-marks', server: 'target', name: r.proname, detail: `${r.triggers} trigger(s)` });
      }
      if (has.rows[0]!.plan) {
        const rows = await c.query<{ migration_id: string; tables: number }>(`SELECT migration_id, count(*)::int AS tables FROM ${PLAN_SCHEMA}.plan_tables GROUP BY 1 ORDER BY 1`);
        for (const r of rows.rows) out.push({ migrationId: r.migration_id, kind: 'plan', server: 'target', name: `${PLAN_SCHEMA}.plan_tables`, detail: `${r.tables} table(s)` });
      }
      if (has.rows[0]!.copy) {
        // A record belongs to the migration whose mark its table carries (marks.ts): the table it created.
        const rows = await c.query<{ target_table: string; mark: string | null }>(
          `SELECT DISTINCT p.target_table, obj_description(to_regclass(p.target_table), 'pg_class') AS mark FROM pgdts.copy_progress p ORDER BY 1`,
        );
        for (const r of rows.rows) {
          const id = r.mark?.startsWith(MARK_PREFIX) ? r.mark.slice(MARK_PREFIX.length) : undefined;
          out.push({ ...(id ? { migrationId: id } : {}), kind: 'copy-progress', server: 'target', name: r.target_table });
        }
      }
      return out;
    },
    { applicationName: 'pg-dts orphans' },
  );
}

/** Leftovers on both servers whose migration is not among `running` (copy records only when none runs). */
export async function findOrphans(source: ConnectionSpec, target: ConnectionSpec | undefined, running: ReadonlySet<string>): Promise<Leftover[]> {
  const all = [...(await findSourceLeftovers(source)), ...(target ? await findTargetLeftovers(target) : [])];
  return all.filter((l) => (l.migrationId === undefined ? running.size === 0 : !running.has(l.migrationId)));
}

/**
 * Removes one migration's leftovers: releases its fence first (the application's writes), then drops
 * its slot (ending a walsender still attached) and publication, then its apply position on the
 * target. Idempotent; returns what it found and removed.
 */
export async function removeMigrationLeftovers(input: { source: ConnectionSpec; target?: ConnectionSpec; migrationId: string }): Promise<Leftover[]> {
  const found = [...(await findSourceLeftovers(input.source)), ...(input.target ? await findTargetLeftovers(input.target) : [])].filter(
    (l) => l.migrationId === input.migrationId,
  );
  const fenced = found.flatMap((l) => (l.kind === 'fence' && l.table ? [l.table] : []));
  if (found.some((l) => l.kind === 'fence')) {
    const fence = { source: input.source, migrationId: input.migrationId, tables: fenced };
    const lifted = await liftFence(fence);
    if (lifted.pending) await removeFence(fence);
  }
  const slot = `${PREFIX}${input.migrationId}`;
  await dropSlot(input.source, slot);
  await dropPublication(input.source, slot);
  if (input.target) {
    await dropApplyProgress(input.target, slot);
    const copied = found.filter((l) => l.kind === 'copy-progress').map((l) => l.name);
    if (copied.length) await forgetCopyRecords(input.target, copied);
    // Last: it drops the schema once nothing else of ours is in it.
    if (found.some((l) => l.kind === 'plan')) await forgetPlan(input.target, input.migrationId);
  }
  return found;
}

/** The migration id a workflow uses: spec.id when given, else derived from the workflow id (as the workflow does). */
export async function migrationOf(client: Client, workflowId: string, runId?: string): Promise<{ migrationId: string; spec: Record<string, unknown> | undefined }> {
  const history = await client.workflowService.getWorkflowExecutionHistory({
    namespace: client.options.namespace,
    execution: { workflowId, ...(runId ? { runId } : {}) },
    maximumPageSize: 1,
  });
  const started = history.history?.events?.[0]?.workflowExecutionStartedEventAttributes;
  const spec = started
    ? await decodeFromPayloadsAtIndex<Record<string, unknown> | undefined>(client.options.loadedDataConverter, 0, started.input?.payloads).catch(() => undefined)
    : undefined;
  return { migrationId: migrationIdOf(spec, workflowId), spec };
}

/** Ids of the migrations whose workflows are running now (their leftovers are not orphans). */
export async function runningMigrationIds(client: Client): Promise<Set<string>> {
  const ids = new Set<string>();
  for await (const w of client.workflow.list({ query: `WorkflowType = '${WORKFLOW_TYPE}' AND ExecutionStatus = 'Running'` })) {
    const id = (await migrationOf(client, w.workflowId, w.runId)).migrationId;
    // Its fallback's objects (afterCutover "reverse": slot and rollback fence on the target) too.
    ids.add(id).add(reverseIdFor(id));
  }
  return ids;
}

/** One line per leftover, for notices and the CLI. */
export function formatLeftover(l: Leftover): string {
  return `${l.server} ${l.kind} ${l.name}${l.migrationId ? ` (migration ${l.migrationId})` : ''}${l.detail ? `: ${l.detail}` : ''}`;
}

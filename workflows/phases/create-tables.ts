/**
 * CREATING_TABLES: the target tables (bare: their indexes and keys come after the load), marked as
 * this migration's; online, the replica identities the apply needs, the publication and the WAL watcher.
 */
import * as wf from '@temporalio/workflow';
import { schemaOptsNow, call, step } from '../activities';
import { startWalWatch } from '../background';
import { pauseGate, planOf, setPhase, tablesOr, type MigrationRun } from '../run';

/** Returns whether the tables have foreign keys (by reference: the inline defs say it themselves). */
export async function createTables(run: MigrationRun): Promise<{ foreignKeys: boolean }> {
  const plan = planOf(run);
  const { state } = run;
  await pauseGate(run);
  const tableCount = plan.tableCount ?? plan.tables.length;
  setPhase(run, 'CREATING_TABLES', `${plan.sourceDescription} → ${plan.targetDescription}, ${tableCount} tables`);
  run.created.tables = true;
  if (wf.patched('target-marks')) run.marks = run.migrationId;
  const marks = run.marks ? { migrationId: run.marks } : {};
  let foreignKeys = false;
  if (run.planRef) {
    const created = await call(schemaOptsNow(), `create ${tableCount} target tables`, 'createPlannedTables', { spec: plan.spec, plan: run.planRef, ...marks });
    state.notices.push(...created.warnings, ...(created.warningsLeftOut ? [`${created.warningsLeftOut} more warnings about the tables' definitions`] : []));
    foreignKeys = created.foreignKeys;
  } else {
    run.defs = await call(schemaOptsNow(), `create ${plan.tables.length} target tables`, 'createTargetTables', { spec: plan.spec, tables: plan.tables, ...marks });
    for (const d of run.defs) state.notices.push(...(d.warnings ?? []));
  }
  if (plan.spec.mode === 'online') {
    if (plan.replicaIdentityFull.length) {
      run.created.replicaIdentity = true;
      await step('setReplicaIdentity', 'set REPLICA IDENTITY FULL', { source: plan.spec.source, tables: plan.replicaIdentityFull.map((r) => ({ table: r.table, identity: 'full' as const })) });
    }
    run.created.replication = true;
    await step('createPublication', `create publication ${run.slot}`, { source: plan.spec.source, publication: run.slot, ...tablesOr(run, () => ({ tables: run.defs.map((d) => d.source) })) });
    startWalWatch(run);
  }
  return { foreignKeys };
}

/**
 * FINALIZING: the apply stops, the fence is checked and released in one source transaction (the
 * point of no return; `keep-source-read-only` keeps it, `reverse` keeps it against all but the reverse
 * apply), the slot and publication go; then what waited for the cutover: foreign keys left for it,
 * views, functions and triggers, owners.
 */
import * as wf from '@temporalio/workflow';
import type { MigrationPlan } from '../../activities/preflight';
import { namePairs } from '../plan-views';
import { call, fencedHeartbeat, fenceRemovalOpts, quickOpts, schemaOptsNow, step } from '../activities';
import { errorMessage } from '../failures';
import { stopApply } from '../background';
import { fenceInput, forgetPlan, planOf, restoreReplicaIdentity, setPhase, tablesOr, type MigrationRun } from '../run';
import { createReverse, dropReverse, fallback } from './fallback';

/** Returns why the cutover was abandoned when its bounded fence did not hold to the end. */
export async function finalize(run: MigrationRun, online: boolean): Promise<string | undefined> {
  const p = planOf(run);
  setPhase(run, 'FINALIZING', 'stopping the apply, dropping the slot and publication, releasing writes');
  if (online && run.cutover.bounded) {
    const abandoned = await commitBounded(run, p);
    if (abandoned !== undefined) return abandoned;
  } else if (online) {
    // The apply stops before writes are released: later source writes belong to no migration.
    await stopApply(run);
    run.cutover.done = true;
    if (p.spec.afterCutover === 'restore-writes') {
      const lifted = await step('liftFence', 'release source writes', fenceInput(run));
      run.state.cutover = { ...run.state.cutover!, windowMs: Date.parse(lifted.liftedAt) - Date.parse(run.fence.at!) };
      if (lifted.pending) await removeReleasedFence(run);
      run.fence.set = false;
    } else {
      run.state.notices.push('the source tables stay read-only (afterCutover = keep-source-read-only)');
    }
    await dropReplication(run, p);
  }
  await afterCutover(run, p);
  if (online && run.cutover.bounded && p.spec.afterCutover === 'reverse') {
    await fallback(run, p);
    if (run.continueAsNew) return undefined;
  }
  if (run.planRef) await forgetPlan(run, p);
  return undefined;
}

/** The bounded path: returns why the fence did not hold (the attempt is abandoned), else undefined. */
async function commitBounded(run: MigrationRun, p: MigrationPlan): Promise<string | undefined> {
  const { state } = run;
  // The apply stops before writes are released: later source writes belong to no migration.
  await stopApply(run);
  const reverse = p.spec.afterCutover === 'reverse';
  // Before the application can write the target: from this slot on, every change there flows back.
  if (reverse) await createReverse(run, p);
  const keepReadOnly = p.spec.afterCutover === 'keep-source-read-only' || reverse;
  const committed = await call(
    { ...quickOpts, heartbeatTimeout: fencedHeartbeat },
    reverse ? 'check the fence held, keep it against all but the reverse apply' : keepReadOnly ? 'check the fence held, keep it' : 'check the fence held, release source writes',
    'commitCutover',
    { ...fenceInput(run), deadline: run.fence.deadline!, keepReadOnly, ...(reverse ? { allowReplica: true } : {}) },
  );
  if (!committed.held) {
    if (reverse) await wf.CancellationScope.nonCancellable(() => dropReverse(run, p));
    return committed.reason ?? 'the fence did not hold';
  }
  run.cutover.done = true;
  run.walScope?.cancel();
  if (reverse) state.notices.push("the source tables stay fenced against the application's writes while the target's changes flow back to them (afterCutover = reverse)");
  else if (keepReadOnly) state.notices.push('the source tables stay read-only (afterCutover = keep-source-read-only)');
  else {
    state.cutover = { ...state.cutover!, windowMs: Date.parse(committed.liftedAt!) - Date.parse(run.fence.at!) };
    if (committed.pending) await removeReleasedFence(run);
    run.fence.set = false;
  }
  await dropReplication(run, p);
  return undefined;
}

const removeReleasedFence = (run: MigrationRun) => call(fenceRemovalOpts, 'drop the released fence triggers', 'removeFence', fenceInput(run));

async function dropReplication(run: MigrationRun, p: MigrationPlan): Promise<void> {
  await step('dropReplication', `drop slot and publication ${run.slot}`, { source: p.spec.source, target: p.spec.target, slot: run.slot, publication: run.slot });
  run.created.replication = false;
  await restoreReplicaIdentity(run);
}

/** The apply has stopped: what had to wait for it. */
async function afterCutover(run: MigrationRun, p: MigrationPlan): Promise<void> {
  const { state } = run;
  if (run.foreignKeysPending) {
    // The apply has stopped: nothing replicated can trip them, and their checks fire from now on.
    const finished = await call(schemaOptsNow(), 'create foreign keys (NOT VALID, then VALIDATE)', 'finishTargetTables', {
      target: p.spec.target,
      ...tablesOr(run, () => ({ defs: run.defs })),
      parallelism: p.spec.parallelism,
      part: 'foreign-keys',
      notValidFirst: true,
    });
    state.notices.push(...finished.skipped);
    run.foreignKeysPending = false;
  }
  // spec.owners exists only in runs started after it: the same commands as before for recorded runs.
  if (!p.spec.objects && !p.spec.owners) return;
  // After the cutover, outside the write-stop window; one object that cannot be created is reported,
  // never a reason to fail a migration whose data is already across. Owners move only now, once the
  // apply (which writes as the migration role) has stopped.
  try {
    const objects = await call(schemaOptsNow(), p.spec.objects ? 'create views, functions and triggers' : 'carry owners and grants', 'createSchemaObjects', {
      source: p.spec.source,
      target: p.spec.target,
      schemas: p.spec.schemas,
      ...tablesOr(run, () => ({ tables: namePairs(run.defs) })),
      schemaMapping: p.spec.schemaMapping,
      tableSuffix: p.spec.tableSuffix,
      ...(p.spec.owners !== undefined ? { owners: p.spec.owners } : {}),
      ...(run.marks ? { migrationId: run.marks } : {}),
      ...(p.spec.objects ? {} : { objects: false }),
    });
    run.results.objects = objects;
    state.notices.push(...objects.notices, ...objects.skipped.map((x) => `${x.object} was not created: ${x.reason}`));
  } catch (e) {
    if (wf.isCancellation(e)) throw e;
    state.notices.push(`views, functions and triggers were not created: ${errorMessage(e)}`);
  }
}

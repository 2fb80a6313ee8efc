/**
 * FALLBACK_READY and ROLLING_BACK (afterCutover "reverse"): the target's changes flow back to the
 * still-fenced source until `commit` (stay on the target) or `rollback` (back to the source with
 * every write made on the target).
 */
import * as wf from '@temporalio/workflow';
import type { MigrationPlan } from '../../activities/preflight';
import { reverseSequencesOf, targetTables } from '../plan-views';
import { call, fenceOpts, step, waitOpts } from '../activities';
import { awaitFencePassed, startApply, stopApply } from '../background';
import { carried, fenceInput, historyFull, releaseFence, setPhase, tableCount, tablesOr, targetFenceInput, untilOrApplyFails, type MigrationRun } from '../run';

/** Before the application can write the target: from this slot on, every change there flows back. */
export async function createReverse(run: MigrationRun, p: MigrationPlan): Promise<void> {
  run.created.reverse = true;
  const r = await step('createReverseReplication', `create slot and publication ${run.reverseSlot} on the target`, {
    target: p.spec.target,
    slot: run.reverseSlot,
    ...tablesOr(run, () => ({ tables: targetTables(run.defs) })),
  });
  run.state.notices.push(...r.replicaIdentityFull.map((t) => `target table ${t} had no replica identity: REPLICA IDENTITY FULL was set so that its changes can flow back to the source`));
}

export async function dropReverse(run: MigrationRun, p: MigrationPlan): Promise<void> {
  await step('dropReplication', `drop the reverse slot and publication ${run.reverseSlot}`, { source: p.spec.target, target: p.spec.source, slot: run.reverseSlot, publication: run.reverseSlot });
  run.created.reverse = false;
}

/**
 * The target's changes flow back to the still-fenced source until `commit` or `rollback`. Pause
 * stops the reverse apply (the target's slot keeps the WAL); a long phase continues as new.
 */
export async function fallback(run: MigrationRun, p: MigrationPlan): Promise<void> {
  const { state, reverseSlot } = run;
  setPhase(run, 'FALLBACK_READY', "the target's changes flow back to the source: signal commit to stay on the target, rollback to move back");
  state.fallback = { slot: reverseSlot, fallbackReadyAt: state.fallback?.fallbackReadyAt ?? new Date().toISOString(), ...(state.fallback?.decision ? { decision: state.fallback.decision } : {}) };
  if (run.apply.streamingSlot !== reverseSlot) {
    run.apply.streamingSlot = reverseSlot;
    state.replication = undefined;
  }
  const decided = () => state.fallback?.decision !== undefined;
  for (;;) {
    if (!state.paused && !run.apply.scope) startApply(run, true);
    await untilOrApplyFails(run, () => state.paused || decided() || historyFull(p));
    if (decided()) break;
    await stopApply(run);
    if (!state.paused) {
      run.continueAsNew = carried(run, p, true);
      return;
    }
    wf.setCurrentDetails('**FALLBACK_READY** (paused: the reverse apply is stopped, the target slot retains WAL)');
    await wf.condition(() => !state.paused || decided());
    wf.setCurrentDetails('**FALLBACK_READY**');
  }
  if (state.fallback!.decision === 'commit') {
    // The old server is abandoned: its fence now stops every write, the reverse apply's included.
    await stopApply(run);
    await step('hardenFence', 'keep the source fenced for good', { source: p.spec.source, migrationId: run.migrationId });
    await dropReverse(run, p);
    state.notices.push('fallback committed: the reverse replication was dropped; the source tables stay fenced (dts cleanup releases them)');
    return;
  }
  await rollBack(run, p);
}

/** ROLLING_BACK: target fenced, its last writes applied to the source, sequences carried back, source writes released. */
async function rollBack(run: MigrationRun, p: MigrationPlan): Promise<void> {
  const { state } = run;
  setPhase(run, 'ROLLING_BACK', 'fencing the target, applying its last changes to the source, releasing source writes');
  if (state.paused) Object.assign(state, { paused: false, lastControl: 'resumed for the rollback: it needs the reverse apply' });
  if (!run.apply.scope) startApply(run, true);
  run.fence.targetSet = true;
  // Not cancellable, as STOPPING_WRITES' fence: one committed after cleanup had looked would stay.
  const fence = await wf.CancellationScope.nonCancellable(() => call(fenceOpts, `fence ${tableCount(run)} target tables`, 'fenceSource', targetFenceInput(run)));
  if (run.main.consideredCancelled) throw new wf.CancelledFailure('cancelled while fencing the target');
  await awaitFencePassed(run, { target: p.spec.source, slot: run.reverseSlot, token: fence.token }, fence.fenceLsn, waitOpts);
  await stopApply(run);
  const seqs = await step('syncSequences', 'set source sequences to the target values', {
    source: p.spec.target,
    target: p.spec.source,
    ...tablesOr(run, () => ({ sequences: reverseSequencesOf(run.defs) })),
    reverse: true,
  });
  state.fallback = { ...state.fallback!, sequences: seqs };
  await releaseFence(run, fenceInput(run), 'release source writes (rolled back)');
  run.fence.set = false;
  await dropReverse(run, p);
  // The target stays fenced: the application is back on the source, a write to the target would be lost.
  state.notices.push(`rolled back: the source holds every write made on the target and takes writes again; the target tables stay fenced (dts cleanup ${run.reverseId} --source <target> releases them)`);
  run.cutover.rolledBack = true;
}

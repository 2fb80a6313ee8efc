/**
 * Cleanup after a cancel or a failure: leaves nothing behind that hurts the source (no apply, slot,
 * publication or fence) and, unless asked to keep them or the cutover has happened, drops the target
 * tables this migration created (by their mark). Each step on its own: one failing must not keep the
 * source blocked.
 */
import { ApplicationFailure } from '@temporalio/common';
import { step } from '../activities';
import { errorMessage } from '../failures';
import { stopApply, stopFenceInstall, stopProof } from '../background';
import { fenceInput, forgetPlan, releaseFence, restoreReplicaIdentity, tablesOr, targetFenceInput, type MigrationRun } from '../run';
import { rangedTables } from './migrate-data';
import { dropReverse } from './fallback';
import { stopCopyChild } from './copy-child-round';

export async function cleanup(run: MigrationRun, dropTarget: boolean): Promise<void> {
  if (!run.plan) return;
  const p = run.plan;
  const { state } = run;
  const failures: string[] = [];
  const attempt = async (what: string, fn: () => Promise<unknown>) => {
    try {
      await fn();
    } catch (e) {
      failures.push(`${what}: ${errorMessage(e)}`);
    }
  };
  stopProof(run);
  run.walScope?.cancel();
  await attempt('stop the apply', () => stopApply(run));
  // Settles with the activity's end (its cancel reaches it at its next heartbeat, within seconds).
  if (run.proof.stopped) await attempt('stop the content proof', () => run.proof.stopped!);
  await attempt('stop the snapshot holder', run.copy.stopHolder);
  // The copy child stops its copies and ends before anything is dropped (its stop was sent with the
  // cancel). Its batch activities are cancelled as they always were (a copy cancelled mid-stream
  // drops its connections, so the server rolls its transaction back).
  if (run.copy.childEnded) await attempt('stop the copy', () => stopCopyChild(run));
  if (run.fence.installDone) await attempt('stop the fence installation', () => stopFenceInstall(run));
  if (run.fence.set && !(run.cutover.done && p.spec.afterCutover === 'keep-source-read-only')) {
    await attempt('release source writes', () => releaseFence(run, fenceInput(run), 'cleanup: release source writes', 'cleanup: drop the released fence triggers'));
  }
  if (run.fence.targetSet) {
    await attempt('release target writes', () => releaseFence(run, targetFenceInput(run), 'cleanup: release target writes', 'cleanup: drop the released target fence triggers'));
  }
  if (run.created.reverse) await attempt('drop the reverse slot and publication', () => dropReverse(run, p));
  if (run.created.replication) {
    await attempt('drop the slot and publication', () =>
      step('dropReplication', `cleanup: drop slot and publication ${run.slot}`, { source: p.spec.source, target: p.spec.target, slot: run.slot, publication: run.slot }),
    );
  }
  await attempt('restore replica identities', () => restoreReplicaIdentity(run));
  // After the cutover the target is the live database: never drop it then.
  if (dropTarget && run.created.tables && !run.cutover.done) {
    await attempt('drop the target tables', async () => {
      const r = await step('dropTargetTables', 'cleanup: drop the target tables this migration created', {
        target: p.spec.target,
        ...tablesOr(run, () => ({ tables: p.tables.map((t) => t.target) })),
        ...(run.marks ? { migrationId: run.marks } : {}),
      });
      // A number from runs recorded before tables were kept.
      if (typeof r === 'object') state.notices.push(...r.kept.map((k) => `target table not dropped: ${k}`));
    });
  }
  if (run.planRef) await attempt('forget the plan', () => forgetPlan(run, p));
  const rangedTargets = rangedTables(run);
  if (run.created.tables && rangedTargets.length) {
    await attempt('forget the range copy records', () => step('forgetCopyProgress', 'cleanup: forget the range copy records', { target: p.spec.target, tables: rangedTargets }));
  }
  if (failures.length) {
    state.notices.push(...failures.map((f) => `cleanup incomplete: ${f}`));
    throw ApplicationFailure.nonRetryable(`cleanup incomplete, check the source: ${failures.join('; ')}`, 'CleanupFailed');
  }
}

/**
 * STOPPING_WRITES: the fence stops the source's writes (arming the pre-installed triggers, or creating
 * them), the apply passes the fence's marker (every write before it is on the target), and the target
 * sequences take the source's values.
 */
import * as wf from '@temporalio/workflow';
import type { ActivityOptions } from '@temporalio/common';
import { sequencesOf } from '../plan-views';
import { call, fencedHeartbeat, fenceOpts, quickOpts, step, waitOpts } from '../activities';
import { awaitFencePassed, stopFenceInstall, stopProof } from '../background';
import { fenceInput, planOf, setPhase, tableCount, tablesOr, writeStopBound, type MigrationRun } from '../run';

export async function stopWrites(run: MigrationRun): Promise<void> {
  const p = planOf(run);
  const { state, fence } = run;
  const bounded = run.cutover.bounded;
  run.liveScope?.cancel();
  stopProof(run);
  // Guarded: an await here, even of nothing, would reorder the commands of recorded histories.
  if (fence.installDone) await stopFenceInstall(run);
  setPhase(run, 'STOPPING_WRITES', 'fencing source writes');
  fence.set = true;
  fence.deadline = undefined;
  // Not cancellable: a fence committed after cleanup had looked for it would stay forever. A cancel
  // that arrived meanwhile takes effect right after, and cleanup lifts the fence.
  // Bounded: retried only within the write-stop bound (a fence a lost attempt committed releases itself).
  const fenced = await wf.CancellationScope.nonCancellable(() =>
    bounded
      ? call(
          { ...fenceOpts, scheduleToCloseTimeout: `${writeStopBound(run)} seconds`, heartbeatTimeout: fencedHeartbeat },
          `fence ${tableCount(run)} source tables for at most ${writeStopBound(run)} s`,
          'fenceSource',
          { ...fenceInput(run), maxWriteStopSeconds: writeStopBound(run) },
        )
      : call(fenceOpts, `fence ${tableCount(run)} source tables`, 'fenceSource', fenceInput(run)),
  );
  if (run.main.consideredCancelled) throw new wf.CancelledFailure('cancelled while fencing');
  fence.at = fenced.fencedAt;
  fence.deadline = fenced.deadline;
  fence.token = fenced.token;
  state.cutover = { ...state.cutover, requested: run.cutoverRequested, fencedAt: fenced.fencedAt, fenceLsn: fenced.fenceLsn, deadline: fenced.deadline, windowMs: undefined };
  const withHeartbeat = (o: ActivityOptions): ActivityOptions => (bounded ? { ...o, heartbeatTimeout: fencedHeartbeat } : o);
  await awaitFencePassed(run, { target: p.spec.target, slot: run.slot, token: fenced.token }, fenced.fenceLsn, withHeartbeat(waitOpts));
  const sequenceInput = { source: p.spec.source, target: p.spec.target, ...tablesOr(run, () => ({ sequences: sequencesOf(run.defs) })) };
  run.results.sequences = bounded
    ? await call(withHeartbeat(quickOpts), 'set target sequences to the source values', 'syncSequences', sequenceInput)
    : await step('syncSequences', 'set target sequences to the source values', sequenceInput);
}

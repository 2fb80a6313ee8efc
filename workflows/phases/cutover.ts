/**
 * The bounded write stop: STOPPING_WRITES and VALIDATING under a workflow timer of
 * cutover.maxWriteStopSeconds; an attempt that does not make it is abandoned (writes released, back
 * to SYNCING_WAL). The fence releases itself at its deadline with or without a worker.
 */
import * as wf from '@temporalio/workflow';
import { cutoverRetryDelayMs } from '../state';
import { step } from '../activities';
import { errorMessage, isTimeout } from '../failures';
import { fenceInput, planOf, releaseFence, setPhase, writeStopBound, type MigrationRun } from '../run';
import { stopWrites } from './stop-writes';
import { validate } from './validate';

/**
 * This timer only makes the workflow notice (when a worker runs it again), stop the cutover's steps
 * and go back to SYNCING_WAL. Returns why the attempt was abandoned, or undefined when it can go on
 * to FINALIZING.
 */
export async function cutoverWithinBound(run: MigrationRun): Promise<string | undefined> {
  const { state } = run;
  const bound = writeStopBound(run);
  const work = new wf.CancellationScope();
  const timer = new wf.CancellationScope();
  let timedOut = false;
  void timer.run(() => wf.sleep(bound * 1000)).then(
    () => {
      timedOut = true;
      work.cancel();
    },
    () => undefined,
  );
  try {
    await work.run(async () => {
      await stopWrites(run);
      await validate(run);
    });
    return undefined;
  } catch (e) {
    if (run.main.consideredCancelled) throw e;
    if (timedOut && wf.isCancellation(e)) return `the cutover did not finish within ${bound} s (cutover.maxWriteStopSeconds) in ${state.phase}`;
    // A step lost with its worker, or one that kept failing (a lock timeout), past its bound.
    if (isTimeout(e)) return `a cutover step timed out in ${state.phase} (${errorMessage(e)})`;
    // A step retried on another worker after the fence had expired saw writes made since: its
    // verdict (a validation mismatch, say) is about a source that was not fenced any more.
    if (run.fence.deadline !== undefined) {
      const deadline = run.fence.deadline;
      const holds = await wf.CancellationScope.nonCancellable(() => step('fenceHolds', 'is the source still fenced', { source: planOf(run).spec.source, migrationId: run.migrationId, deadline }));
      if (!holds) return `the fence expired at ${deadline} (cutover.maxWriteStopSeconds) before ${state.phase} finished: ${errorMessage(e).replace(/\s+/g, ' ').slice(0, 200)}`;
    }
    throw e;
  } finally {
    timer.cancel();
  }
}

/** An abandoned attempt: writes released for good, back to SYNCING_WAL, the reason in the status. */
export async function abandonCutover(run: MigrationRun, reason: string): Promise<void> {
  const { state, cutover } = run;
  cutover.abandonedAttempts++;
  setPhase(run, 'SYNCING_WAL', `${reason}: source writes released`);
  await wf.CancellationScope.nonCancellable(() => releaseFence(run, fenceInput(run), 'release source writes (cutover abandoned)'));
  run.fence.set = false;
  // The abandoned attempt's verdicts were about a source that may have been written meanwhile.
  state.validation = undefined;
  // A commit or rollback sent during its FINALIZING was about a fallback that did not begin.
  state.fallback = undefined;
  const manual = planOf(run).spec.cutover.mode === 'manual';
  run.cutoverRequested = false;
  const delay = cutoverRetryDelayMs(cutover.abandonedAttempts, writeStopBound(run));
  state.cutover = {
    requested: false,
    attempts: cutover.abandonedAttempts + 1,
    abandoned: reason,
    ...(manual ? {} : { retryAt: new Date(Date.now() + delay).toISOString() }),
  };
  state.notices.push(`cutover attempt ${cutover.abandonedAttempts} abandoned: ${reason}; source writes released, ${manual ? 'waiting for a new cutover signal' : `trying again in ${Math.round(delay / 1000)} s`}`);
  if (!manual) {
    cutover.retryWait = true;
    void wf.sleep(delay).then(
      () => void (cutover.retryWait = false),
      () => undefined,
    );
  }
}

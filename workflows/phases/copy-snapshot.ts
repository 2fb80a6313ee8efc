/**
 * MIGRATING_DATA, online: the copies run inside the snapshot the slot exported, held open by the
 * `holdSnapshot` activity. A lost holder is recovered here: with `resume` (patch 'resume-copy') the
 * slot stays and the next round copies, in a temporary slot's snapshot, only what was not committed;
 * else everything again in a new slot.
 */
import * as wf from '@temporalio/workflow';
import { ApplicationFailure } from '@temporalio/common';
import type { SnapshotReady } from '../contract';
import { call, holderOpts } from '../activities';
import { errorMessage, hasType, isSnapshotLost } from '../failures';
import { ErrorType } from '../error-types';
import { planOf, type MigrationRun } from '../run';

const MAX_SNAPSHOT_ATTEMPTS = 3;

/** The snapshot's holder of one attempt: its activity and how it ended. */
interface Holder {
  scope: wf.CancellationScope;
  /** Settles when the holder has ended (whichever way). */
  held: Promise<void>;
  ended: boolean;
  error: unknown;
}

function startHolder(run: MigrationRun, attempt: number, resumed: boolean): Holder {
  const plan = planOf(run);
  const { slot } = run;
  const scope = new wf.CancellationScope();
  // slot.maxWaitSeconds bounds the wait for older transactions, whichever slot is created.
  const maxWait = plan.spec.slot?.maxWaitSeconds ? { maxWaitSeconds: plan.spec.slot.maxWaitSeconds } : {};
  const input = resumed
    ? { source: plan.spec.source, slot, attempt, resumeSlot: `${slot}_r${attempt}`, ...maxWait }
    : { source: plan.spec.source, slot, attempt, ...(plan.spec.slot?.failover ? { failover: true } : {}), ...maxWait };
  const holder: Holder = { scope, held: Promise.resolve(), ended: false, error: undefined };
  holder.held = scope
    .run(() => call(holderOpts, resumed ? `hold a new snapshot (temporary slot ${slot}_r${attempt})` : `hold snapshot of slot ${slot}`, 'holdSnapshot', input))
    .then(
      () => void (holder.ended = true),
      (e) => {
        holder.ended = true;
        holder.error = e;
      },
    );
  return holder;
}

/** `copyRound`'s second argument: the round resumes in a new snapshot of the same slot. */
export async function copyInSnapshot(run: MigrationRun, copyRound: (snap: SnapshotReady, resumed: boolean) => Promise<unknown>, opts: { resume?: boolean } = {}): Promise<void> {
  const { state } = run;
  /** The migration's slot was created and exported a snapshot: a lost holder leaves it usable. */
  let slotStands = false;
  for (let attempt = 1; ; attempt++) {
    run.created.replication = true;
    const resumed = slotStands;
    const holder = startHolder(run, attempt, resumed);
    // Cleanup waits for the holder to end before dropping the slot it may be about to create.
    run.copy.stopHolder = async () => {
      holder.scope.cancel();
      await holder.held;
    };
    await wf.condition(() => run.snapshots.has(attempt) || holder.ended);
    const snap = run.snapshots.get(attempt);
    // A resumed round that got no snapshot (no free slot for the temporary one, say): the next starts over.
    slotStands = opts.resume === true && snap !== undefined;
    if (snap && (await copiedInSnapshot(run, holder, () => copyRound(snap, resumed), opts))) return;
    const holderError = holder.error;
    if (wf.isCancellation(holderError)) throw holderError;
    // slot.maxWaitSeconds ran out: a new attempt would wait for the same transaction.
    if (hasType(holderError, ErrorType.SlotWaitTimeout)) throw ApplicationFailure.nonRetryable(errorMessage(holderError), ErrorType.Precondition);
    if (attempt >= MAX_SNAPSHOT_ATTEMPTS) {
      throw ApplicationFailure.nonRetryable(`lost the exported snapshot ${MAX_SNAPSHOT_ATTEMPTS} times while copying; last error: ${errorMessage(holderError)}`, ErrorType.SnapshotLost);
    }
    if (slotStands) {
      state.notices.push(`snapshot holder lost (attempt ${attempt}): ${errorMessage(holderError)}; resuming the copy in a new snapshot, keeping what was committed`);
      continue;
    }
    state.notices.push(`snapshot holder lost (attempt ${attempt}): ${errorMessage(holderError)}; redoing the copy in a new snapshot`);
    for (const t of state.tables) Object.assign(t, { state: 'pending', rowsCopied: 0, bytesCopied: undefined, ...(t.ranges ? { ranges: { ...t.ranges, done: 0 } } : {}) });
  }
}

/**
 * One round's copies while the holder keeps the snapshot. True when they are done; false when the
 * snapshot was lost (`holder.error` says how), after the copies have stopped.
 */
async function copiedInSnapshot(run: MigrationRun, holder: Holder, copyRound: () => Promise<unknown>, opts: { resume?: boolean }): Promise<boolean> {
  const copyScope = new wf.CancellationScope();
  let copiesEnded = false;
  let copyError: unknown;
  const copies = copyScope.run(copyRound).then(
    () => void (copiesEnded = true),
    (e) => {
      copiesEnded = true;
      copyError = e;
    },
  );
  // Resumable runs release the snapshot as soon as every unit has landed, too.
  const releaseWhenLanded = run.copy.perTablePostLoad || opts.resume === true;
  await wf.condition(() => copiesEnded || holder.ended || (releaseWhenLanded && run.copy.round.landed));
  if (releaseWhenLanded && run.copy.round.landed) {
    // Every copy has imported and used the snapshot: release it (and the source's xmin) while
    // the last tables' indexes are still being built; a holder lost from now on costs nothing.
    holder.scope.cancel();
    await holder.held;
    await copies;
    if (copyError) throw copyError;
    return true;
  }
  if (copiesEnded && !holder.ended && !copyError) {
    holder.scope.cancel();
    await holder.held;
    return true;
  }
  copyScope.cancel();
  await copies;
  if (!holder.ended) {
    holder.scope.cancel();
    await holder.held;
    // The copies failed for a reason of their own, not because the snapshot went away.
    if (!isSnapshotLost(copyError)) throw copyError;
    holder.error = copyError;
  }
  return false;
}

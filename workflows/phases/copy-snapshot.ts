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
import { planOf, type MigrationRun } from '../run';

const MAX_SNAPSHOT_ATTEMPTS = 3;

/** `copyRound`'s second argument: the round resumes in a new snapshot of the same slot. */
export async function copyInSnapshot(run: MigrationRun, copyRound: (snap: SnapshotReady, resumed: boolean) => Promise<void>, opts: { resume?: boolean } = {}): Promise<void> {
  const plan = planOf(run);
  const { slot, state } = run;
  /** The migration's slot was created and exported a snapshot: a lost holder leaves it usable. */
  let slotStands = false;
  for (let attempt = 1; ; attempt++) {
    const holderScope = new wf.CancellationScope();
    let holderEnded = false;
    let holderError: unknown;
    run.created.replication = true;
    const resumed = slotStands;
    // slot.maxWaitSeconds bounds the wait for older transactions, whichever slot is created.
    const maxWait = plan.spec.slot?.maxWaitSeconds ? { maxWaitSeconds: plan.spec.slot.maxWaitSeconds } : {};
    const holderInput = resumed
      ? { source: plan.spec.source, slot, attempt, resumeSlot: `${slot}_r${attempt}`, ...maxWait }
      : { source: plan.spec.source, slot, attempt, ...(plan.spec.slot?.failover ? { failover: true } : {}), ...maxWait };
    const held = holderScope
      .run(() => call(holderOpts, resumed ? `hold a new snapshot (temporary slot ${slot}_r${attempt})` : `hold snapshot of slot ${slot}`, 'holdSnapshot', holderInput))
      .then(
        () => void (holderEnded = true),
        (e) => {
          holderEnded = true;
          holderError = e;
        },
      );
    // Cleanup waits for the holder to end before dropping the slot it may be about to create.
    run.copy.stopHolder = async () => {
      holderScope.cancel();
      await held;
    };
    await wf.condition(() => run.snapshots.has(attempt) || holderEnded);
    const snap = run.snapshots.get(attempt);
    // A resumed round that got no snapshot (no free slot for the temporary one, say): the next starts over.
    slotStands = opts.resume === true && snap !== undefined;
    if (snap) {
      const copyScope = new wf.CancellationScope();
      let copiesEnded = false;
      let copyError: unknown;
      const copies = copyScope.run(() => copyRound(snap, resumed)).then(
        () => void (copiesEnded = true),
        (e) => {
          copiesEnded = true;
          copyError = e;
        },
      );
      // Resumable runs release the snapshot as soon as every unit has landed, too.
      const releaseWhenLanded = run.copy.perTablePostLoad || opts.resume === true;
      await wf.condition(() => copiesEnded || holderEnded || (releaseWhenLanded && run.copy.round.landed));
      if (releaseWhenLanded && run.copy.round.landed) {
        // Every copy has imported and used the snapshot: release it (and the source's xmin) while
        // the last tables' indexes are still being built; a holder lost from now on costs nothing.
        holderScope.cancel();
        await held;
        await copies;
        if (copyError) throw copyError;
        return;
      }
      if (copiesEnded && !holderEnded && !copyError) {
        holderScope.cancel();
        await held;
        return;
      }
      copyScope.cancel();
      await copies;
      if (!holderEnded) {
        holderScope.cancel();
        await held;
        // The copies failed for a reason of their own, not because the snapshot went away.
        if (!isSnapshotLost(copyError)) throw copyError;
        holderError = copyError;
      }
    }
    if (wf.isCancellation(holderError)) throw holderError;
    // slot.maxWaitSeconds ran out: a new attempt would wait for the same transaction.
    if (hasType(holderError, 'SlotWaitTimeout')) throw ApplicationFailure.nonRetryable(errorMessage(holderError), 'PreconditionError');
    if (attempt >= MAX_SNAPSHOT_ATTEMPTS) {
      throw ApplicationFailure.nonRetryable(`lost the exported snapshot ${MAX_SNAPSHOT_ATTEMPTS} times while copying; last error: ${errorMessage(holderError)}`, 'SnapshotLost');
    }
    if (slotStands) {
      state.notices.push(`snapshot holder lost (attempt ${attempt}): ${errorMessage(holderError)}; resuming the copy in a new snapshot, keeping what was committed`);
      continue;
    }
    state.notices.push(`snapshot holder lost (attempt ${attempt}): ${errorMessage(holderError)}; redoing the copy in a new snapshot`);
    for (const t of state.tables) Object.assign(t, { state: 'pending', rowsCopied: 0, bytesCopied: undefined, ...(t.ranges ? { ranges: { ...t.ranges, done: 0 } } : {}) });
  }
}

/**
 * MIGRATING_DATA's snapshot holder: creates the migration's slot (or, for a resumed copy, a temporary
 * one) with an exported snapshot, tells the workflow its name, and keeps the creating connection open
 * and idle until cancelled. While the creation waits for older transactions, which one it waits for
 * is reported to the workflow; slot.maxWaitSeconds bounds that wait.
 */
import type { Context } from '@temporalio/activity';
import { createResumeSnapshot, createSlotWithSnapshot, slotCreationBlocker } from './replication';
import { withCancellation } from './db';
import { slotWaitSignal, snapshotReadySignal, type SlotWaitReport } from '../workflows/contract';
import type { ConnectionSpec } from './spec';
import { signalWorkflow, sleep, throwIfCancelled } from './edge';
import { finalFailure } from './errors';
import { ErrorType } from '../workflows/error-types';

export interface HoldSnapshotInput {
  source: ConnectionSpec;
  slot: string;
  attempt: number;
  failover?: boolean;
  /**
   * A resumed copy: the migration's slot stays as it is; the snapshot comes from a temporary slot
   * of this name (gone with this activity's connection).
   */
  resumeSlot?: string;
  /** slot.maxWaitSeconds: how long the slot's creation may wait for older transactions. */
  maxWaitSeconds?: number;
}

/**
 * Creates the slot, tells the workflow the exported snapshot's name, then keeps the creating
 * connection open and idle until cancelled (every copy has imported the snapshot by then). If this
 * activity dies, the snapshot dies with it; the workflow notices by the heartbeat timeout.
 */
export async function holdSnapshot(ctx: Context, input: HoldSnapshotInput): Promise<{ consistentPoint: string }> {
  const handle = await createSlotWatched(ctx, input);
  try {
    await signalWorkflow(snapshotReadySignal.name, {
      attempt: input.attempt,
      snapshotName: handle.snapshotName,
      consistentPoint: handle.consistentPoint,
    });
    await holdUntilCancelled(ctx, handle);
    return { consistentPoint: handle.consistentPoint };
  } finally {
    await handle.client.end().catch(() => undefined);
  }
}

type SnapshotHandle = Awaited<ReturnType<typeof createSlotWithSnapshot>>;

/**
 * CREATE_REPLICATION_SLOT waits until every transaction older than it has ended, for as long as they
 * run: beat meanwhile (or the 20 s heartbeat timeout ends the holder), let a cancel cancel the
 * statement, and tell the workflow which transaction it waits for.
 */
async function createSlotWatched(ctx: Context, input: HoldSnapshotInput): Promise<SnapshotHandle> {
  const since = new Date().toISOString();
  const blocker = watchSlotBlocker(input.source, input.resumeSlot ?? input.slot, since);
  const beat = setInterval(() => ctx.heartbeat({ creatingSlot: since, ...(blocker.waiting ? { waiting: blocker.waiting } : {}) }), 2000);
  // slot.maxWaitSeconds: the creation is cancelled on the server and the holder fails naming what it waited for.
  const giveUp = new AbortController();
  ctx.cancellationSignal.addEventListener('abort', () => giveUp.abort(), { once: true });
  let timedOut: string | undefined;
  const limit = input.maxWaitSeconds
    ? setTimeout(() => {
        const waiting = blocker.waiting;
        const on = waiting?.pid !== undefined ? `the transaction of pid ${waiting.pid} (open ${waiting.ageSeconds ?? '?'} s${waiting.state ? `, ${waiting.state}` : ''})` : 'older transactions';
        timedOut = `the replication slot's creation waited ${input.maxWaitSeconds} s (slot.maxWaitSeconds) for ${on} to end; end it, or start when no long transaction runs on the source`;
        giveUp.abort();
      }, input.maxWaitSeconds * 1000)
    : undefined;
  try {
    return await withCancellation(giveUp.signal, () =>
      input.resumeSlot ? createResumeSnapshot(input.source, input.resumeSlot) : createSlotWithSnapshot(input.source, input.slot, { failover: input.failover }),
    );
  } catch (err) {
    throwIfCancelled(ctx);
    if (timedOut) throw finalFailure(ErrorType.SlotWaitTimeout, timedOut);
    throw err;
  } finally {
    clearInterval(beat);
    blocker.stop();
    clearTimeout(limit);
  }
}

/**
 * Looks every 5 s for the transaction the slot's creation waits for and signals it to the workflow.
 * Every signal is a history event: one when the blocker changes, else refreshes 5 s, 10 s, ... 5 min apart.
 */
function watchSlotBlocker(source: ConnectionSpec, slot: string, since: string): { readonly waiting: SlotWaitReport | undefined; stop(): void } {
  let waiting: SlotWaitReport | undefined;
  let refreshMs = 5000;
  let lastSent = 0;
  const watch = setInterval(() => {
    void slotCreationBlocker(source, slot)
      .then((b) => {
        if (b === undefined) return undefined;
        const changed = b.pid !== waiting?.pid || waiting === undefined;
        waiting = { for: 'slot creation', since, ...b };
        if (!changed && Date.now() - lastSent < refreshMs) return undefined;
        if (!changed) refreshMs = Math.min(300_000, refreshMs * 2);
        lastSent = Date.now();
        return signalWorkflow(slotWaitSignal.name, waiting);
      })
      .catch(() => undefined);
  }, 5000);
  return {
    get waiting() {
      return waiting;
    },
    stop: () => clearInterval(watch),
  };
}

/**
 * The snapshot lives exactly as long as this connection: if the server ends it, fail at once so the
 * workflow redoes the copy instead of waiting on a snapshot nobody can import any more.
 */
async function holdUntilCancelled(ctx: Context, handle: SnapshotHandle): Promise<void> {
  let lost: Error | undefined;
  const onLost = (err?: Error) => void (lost ??= new Error(`the connection holding snapshot ${handle.snapshotName} was lost${err ? `: ${err.message}` : ''}`));
  handle.client.on('error', onLost);
  handle.client.on('end', () => onLost());
  while (!ctx.cancellationSignal.aborted && !lost) {
    ctx.heartbeat({ snapshotName: handle.snapshotName });
    await sleep(1000, ctx.cancellationSignal);
  }
  throwIfCancelled(ctx);
  if (lost) throw lost;
}

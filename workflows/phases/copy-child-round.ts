/**
 * MIGRATING_DATA by reference since the 'copy-child' patch: each snapshot round's copy runs in a child
 * workflow (workflows/copy-child.ts), whose runs continue as new every COPY_RUN_BATCHES batches, so
 * neither this history nor any of the child's grows with the batches. This run keeps the snapshot's
 * holder, the status (from the child's `copyState` reports) and the rounds; it forwards pause and
 * resume, and a cancel of the round becomes the child's `copyStop` (it stops its copies and returns
 * what landed, which a resumed round needs).
 */
import * as wf from '@temporalio/workflow';
import { ApplicationFailure } from '@temporalio/common';
import type { CopyRounds } from '../copy-batches';
import { copyControlSignal, copyStopSignal, applyCopyState, roundsData, roundsFrom, type CopyChildInput, type CopyChildResult } from '../copy-state';
import type { copyWorkflow } from '../copy-child';
import { ErrorType } from '../error-types';
import { copyChildId } from '../names';
import type { MigrationRun } from '../run';

/** What every round's child gets from the plan and the spec. */
export type CopyChildBase = Pick<CopyChildInput, 'source' | 'target' | 'plan' | 'batches' | 'ranged' | 'parallelism' | 'track' | 'marks' | 'maxLockWaitSeconds'>;

/** One round in a child; throws as an in-workflow round would: a cancellation, or SnapshotLost for a new round. */
export async function copyRoundInChild(run: MigrationRun, base: CopyChildBase, rounds: CopyRounds, snapshot?: string, at?: { lsn: string; resumed: boolean }): Promise<void> {
  const { copy, state } = run;
  Object.assign(copy.round, { snapshot, running: new Map(), live: new Map(), doneRows: new Map(), rate: new Map(), landed: false, copyingIn: new Map(), early: new Map() });
  const info = wf.workflowInfo();
  const control = { paused: state.paused, seq: copy.controlSeq };
  const input: CopyChildInput = {
    ...base,
    ...(snapshot !== undefined ? { snapshot } : {}),
    ...(at ? { at } : {}),
    rounds: roundsData(rounds),
    tables: state.tables,
    progress: { ...run.progress },
    control,
    reportTo: { workflowId: info.workflowId, runId: info.runId },
  };
  const scope = wf.CancellationScope.current();
  // Started whatever happens to the round meanwhile: a cancel reaches the child as copyStop.
  const child = await wf.CancellationScope.nonCancellable(() =>
    wf.startChild<typeof copyWorkflow>('copyWorkflow', { workflowId: copyChildId(info.workflowId, ++copy.children), args: [input] }),
  );
  copy.child = child;
  const ended = wf.CancellationScope.nonCancellable(() => child.result());
  copy.childEnded = ended.then(
    () => undefined,
    () => undefined,
  );
  // A pause or resume that came while the child was being started.
  if (state.paused !== control.paused) forwardPause(run);
  void scope.cancelRequested.catch(() => stopCopyChild(run));
  let result: CopyChildResult;
  try {
    result = await ended;
  } finally {
    copy.child = undefined;
  }
  roundsFrom(result.rounds, rounds);
  applyCopyState({ tables: state.tables, notices: state.notices, progress: run.progress, copyMs: run.copyMs, round: copy.round }, result.state);
  if (result.outcome === 'stopped' || scope.consideredCancelled) throw new wf.CancelledFailure('copy stopped');
  if (result.outcome === 'lost') throw ApplicationFailure.create({ message: result.error ?? 'the exported snapshot was lost', type: ErrorType.SnapshotLost, nonRetryable: true });
}

/** The migration's pause state, to the copy child running (if any). */
export function forwardPause(run: MigrationRun): void {
  const { copy } = run;
  if (!copy.child) return;
  const c = { paused: run.state.paused, seq: ++copy.controlSeq };
  void wf.CancellationScope.nonCancellable(() => copy.child!.signal(copyControlSignal, c)).catch(() => undefined);
}

/** The copy child running stops its copies; settles once it has ended. */
export async function stopCopyChild(run: MigrationRun): Promise<void> {
  const { copy } = run;
  const child = copy.child;
  if (child) await wf.CancellationScope.nonCancellable(() => child.signal(copyStopSignal)).catch(() => undefined);
  await copy.childEnded;
}

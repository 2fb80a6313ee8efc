/**
 * `copyWorkflow`: one snapshot round of MIGRATING_DATA's copy, as a child of the migration (patch
 * 'copy-child'). It runs copyBatches (copy-batches.ts) with the migration's parallelism, takes at most
 * COPY_RUN_BATCHES batches per run and then continues as new with what has landed, so that each run's
 * history stays bounded however many batches the copy has. The migration keeps the snapshot's holder
 * and the status; the child reports to it (copy-state.ts). Deterministic workflow code.
 */
import * as wf from '@temporalio/workflow';
import type { MigrationProgress, TableStatus } from './contract';
import { copyBatches, newCopyRounds, type BatchCopyContext, type CopyRounds } from './copy-batches';
import {
  COPY_RUN_BATCHES,
  copyControlSignal,
  copyStateSignal,
  copyStopSignal,
  roundsData,
  roundsFrom,
  type CopyChildInput,
  type CopyChildResult,
  type CopyStateReport,
} from './copy-state';
import { newCopyRound, type CopyRound } from './progress';
import { batchOpts, call, schemaOptsNow, step } from './activities';
import { errorMessage, isSnapshotLost } from './failures';

/** Continue as new before the server would ask, whatever the batches did. */
const RUN_EVENTS_LIMIT = 8_000;

export async function copyWorkflow(input: CopyChildInput): Promise<CopyChildResult> {
  const control = { ...input.control, stop: false };
  const work = new wf.CancellationScope();
  const inFlight = new Set<wf.CancellationScope>();
  const paused = new Set<wf.CancellationScope>();
  // Before the first await: the migration's pause may come with the start.
  wf.setHandler(copyControlSignal, (c) => {
    if (c.seq <= control.seq) return;
    Object.assign(control, c);
    if (!c.paused) return;
    // As the migration's own pause did: the copies in flight stop and are redone after the resume.
    for (const scope of inFlight) {
      paused.add(scope);
      scope.cancel();
    }
  });
  wf.setHandler(copyStopSignal, () => {
    control.stop = true;
    work.cancel();
  });
  const startedAt = input.continued?.startedAt ?? Date.now();
  const runs = (input.continued?.runs ?? 0) + 1;
  const state = { tables: input.tables };
  const progress: MigrationProgress = { ...input.progress };
  const copyMs = new Map<string, number>();
  const rounds = roundsFrom(input.rounds, newCopyRounds());
  const round = newCopyRound(input.snapshot);
  const reporter = new StateReporter(input, { tables: state.tables, progress, copyMs, round }, startedAt);
  const ctx = copyContext(input, { state, progress, copyMs, round, rounds, inFlight, paused, work, control, reporter });
  const finished = async (outcome: CopyChildResult['outcome'], error?: string): Promise<CopyChildResult> => {
    await reporter.flushed();
    return { outcome, ...(error !== undefined ? { error } : {}), rounds: roundsData(rounds), state: reporter.report(), runs };
  };
  try {
    const { rested } = await work.run(() => copyBatches(ctx, input.snapshot, input.at, { continued: input.continued !== undefined, startedAt }));
    if (!rested || control.stop) return await finished('done');
    await reporter.flushed();
    await wf.condition(wf.allHandlersFinished);
    return await wf.continueAsNew<typeof copyWorkflow>({
      ...input,
      rounds: roundsData(rounds),
      tables: state.tables,
      progress,
      control: { paused: control.paused, seq: control.seq },
      continued: { startedAt, runs },
    });
  } catch (e) {
    if (e instanceof wf.ContinueAsNew) throw e;
    if (control.stop && wf.isCancellation(e)) return await wf.CancellationScope.nonCancellable(() => finished('stopped'));
    // The migration resumes in a new snapshot with what `rounds` says has landed.
    if (isSnapshotLost(e)) return await wf.CancellationScope.nonCancellable(() => finished('lost', errorMessage(e)));
    throw e;
  }
}

interface ChildParts {
  state: { tables: TableStatus[] };
  progress: MigrationProgress;
  copyMs: Map<string, number>;
  round: CopyRound;
  rounds: CopyRounds;
  inFlight: Set<wf.CancellationScope>;
  paused: Set<wf.CancellationScope>;
  work: wf.CancellationScope;
  control: { paused: boolean };
  reporter: StateReporter;
}

/** copyBatches' context in the child: its activities report to the migration; at most COPY_RUN_BATCHES batches a run. */
function copyContext(input: CopyChildInput, p: ChildParts): BatchCopyContext {
  const marks = input.marks ? { migrationId: input.marks } : {};
  let batchesThisRun = 0;
  return {
    batches: input.batches,
    ranged: new Map(input.ranged),
    parallelism: input.parallelism,
    state: p.state,
    progress: p.progress,
    track: input.track,
    copyMs: p.copyMs,
    inFlight: p.inFlight,
    paused: p.paused,
    main: p.work,
    round: p.round,
    pauseGate: () => wf.condition(() => !p.control.paused),
    rounds: p.rounds,
    prepareRanged: (ords, snap, snapshotLsn) =>
      step('prepareRangedCopies', `empty ${ords.length} tables copied in ranges`, {
        target: input.target,
        plan: input.plan,
        ords,
        snapshot: snap,
        ...(snapshotLsn !== undefined ? { snapshotLsn } : {}),
        ...marks,
      }),
    copyBatch: async (i) => {
      const result = await copyBatchActivity(input, i);
      batchesThisRun++;
      return result;
    },
    rest: () => {
      const info = wf.workflowInfo();
      return batchesThisRun >= COPY_RUN_BATCHES || info.continueAsNewSuggested || info.historyLength > RUN_EVENTS_LIMIT;
    },
    finish: async (what) => {
      const finished = await call(
        { ...schemaOptsNow(), allowEagerDispatch: false },
        'batch' in what ? `indexes, constraints and ANALYZE of batch ${what.batch + 1}` : `indexes, constraints and ANALYZE of ${what.ords.length} ranged tables`,
        'finishTargetTables',
        { target: input.target, plan: input.plan, ...what, parallelism: 1, part: 'tables', reportTo: input.reportTo },
      );
      p.reporter.notice(...finished.skipped);
    },
    changed: () => p.reporter.changed(),
  };
}

const copyBatchActivity = (input: CopyChildInput, i: Parameters<BatchCopyContext['copyBatch']>[0]) =>
  call(batchOpts, `copy batch ${i.batch + 1}/${input.batches}`, 'copyTableBatch', {
    source: input.source,
    target: input.target,
    plan: input.plan,
    ...i,
    ...(input.marks ? { migrationId: input.marks } : {}),
    ...(input.maxLockWaitSeconds ? { maxLockWaitSeconds: input.maxLockWaitSeconds } : {}),
    reportTo: input.reportTo,
  });

/**
 * The child's reports to the migration: what changed since the last one, at most one per
 * `spacing()` (1 s at first, then a hundredth of the copy's age, at most 10 minutes), so that the
 * migration's history grows with the logarithm of the copy's duration, not with its batches. The
 * round's end (every batch landed: the snapshot may go) is reported at once.
 */
class StateReporter {
  private readonly sentTables = new Map<number, string>();
  private readonly sentMs = new Map<string, number>();
  private notices: string[] = [];
  private last = 0;
  private waiting = false;
  private landedSent = false;
  private sending: Promise<void> = Promise.resolve();

  constructor(
    private readonly input: Pick<CopyChildInput, 'reportTo' | 'snapshot' | 'tables'>,
    private readonly of: { tables: TableStatus[]; progress: MigrationProgress; copyMs: Map<string, number>; round: CopyRound },
    private readonly startedAt: number,
  ) {
    input.tables.forEach((t, ord) => this.sentTables.set(ord, JSON.stringify(t)));
  }

  notice(...notices: string[]): void {
    this.notices.push(...notices);
  }

  changed(): void {
    const wait = this.last + this.spacing() - Date.now();
    if ((this.of.round.landed && !this.landedSent) || wait <= 0) return this.send();
    if (this.waiting) return;
    this.waiting = true;
    void wf.CancellationScope.nonCancellable(() => wf.sleep(wait)).then(() => {
      this.waiting = false;
      this.send();
    });
  }

  /** Every report sent so far has reached the migration (or failed). */
  flushed(): Promise<void> {
    return this.sending;
  }

  /** What changed since the last report (and marks it sent). */
  report(): CopyStateReport {
    const tables: CopyStateReport['tables'] = [];
    this.of.tables.forEach((t, ord) => {
      const s = JSON.stringify(t);
      if (this.sentTables.get(ord) === s) return;
      this.sentTables.set(ord, s);
      tables.push([ord, t]);
    });
    const copyMs: CopyStateReport['copyMs'] = [];
    for (const [table, ms] of this.of.copyMs) {
      if (this.sentMs.get(table) === ms) continue;
      this.sentMs.set(table, ms);
      copyMs.push([table, ms]);
    }
    const notices = this.notices;
    this.notices = [];
    const { round } = this.of;
    this.landedSent ||= round.landed;
    return { snapshot: this.input.snapshot, progress: { ...this.of.progress }, tables, notices, copyMs, running: [...round.running.keys()], landed: round.landed };
  }

  private spacing(): number {
    return Math.min(600_000, Math.max(1_000, (Date.now() - this.startedAt) / 100));
  }

  private send(): void {
    const r = this.report();
    this.last = Date.now();
    const parent = wf.getExternalWorkflowHandle(this.input.reportTo.workflowId, this.input.reportTo.runId);
    // In order; a report that fails (the migration has ended) is not retried.
    this.sending = this.sending.then(() => wf.CancellationScope.nonCancellable(() => parent.signal(copyStateSignal, r)).catch(() => undefined));
  }
}

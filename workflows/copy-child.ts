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
/** Reports hastened by a unit's start, over the whole copy (then only at the reporter's cadence). */
const IMMEDIATE_REPORTS = 600;
/** A unit's start is reported within this (or the reporter's cadence, if shorter). */
const START_REPORT_MS = 5_000;

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
    if (!rested) return await finished('done');
    // What changed since the last report goes now: the next run's reporter starts from here.
    reporter.send();
    await reporter.flushed();
    await wf.condition(wf.allHandlersFinished);
    // A stop that came meanwhile ends the copy here: the next run would not hear it.
    if (control.stop) return await finished('stopped');
    return await wf.continueAsNew<typeof copyWorkflow>({
      ...input,
      rounds: roundsData(rounds),
      tables: state.tables,
      progress,
      control: { paused: control.paused, seq: control.seq },
      continued: { startedAt, runs, reports: reporter.immediate },
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
    ...batchActivities(input, (notices) => p.reporter.notice(...notices)),
    // Counted as they are taken (with `parallelism` in flight a run still takes no more than
    // COPY_RUN_BATCHES); a batch a pause interrupted is copied again in the same run.
    rest: (taken) => {
      const info = wf.workflowInfo();
      return taken >= COPY_RUN_BATCHES || info.continueAsNewSuggested || info.historyLength > RUN_EVENTS_LIMIT;
    },
    changed: () => p.reporter.changed(),
  };
}

/**
 * The activities of copyBatches by reference, in the copy child and (runs recorded before it) in the
 * migration itself: empty the ranged tables, copy a batch, a batch's post-load DDL. With `reportTo`,
 * their progress reports go to that run.
 */
export function batchActivities(
  b: Pick<CopyChildInput, 'source' | 'target' | 'plan' | 'batches' | 'marks' | 'maxLockWaitSeconds'> & { reportTo?: CopyChildInput['reportTo'] },
  notice: (skipped: string[]) => void,
): Pick<BatchCopyContext, 'prepareRanged' | 'copyBatch' | 'finish'> {
  const marks = b.marks ? { migrationId: b.marks } : {};
  const reportTo = b.reportTo ? { reportTo: b.reportTo } : {};
  return {
    prepareRanged: (ords, snap, snapshotLsn) =>
      step('prepareRangedCopies', `empty ${ords.length} tables copied in ranges`, {
        target: b.target,
        plan: b.plan,
        ords,
        snapshot: snap,
        ...(snapshotLsn !== undefined ? { snapshotLsn } : {}),
        ...marks,
      }),
    copyBatch: (i) =>
      call(batchOpts, `copy batch ${i.batch + 1}/${b.batches}`, 'copyTableBatch', {
        source: b.source,
        target: b.target,
        plan: b.plan,
        ...i,
        ...marks,
        ...(b.maxLockWaitSeconds ? { maxLockWaitSeconds: b.maxLockWaitSeconds } : {}),
        ...reportTo,
      }),
    finish: async (what) => {
      const finished = await call(
        { ...schemaOptsNow(), allowEagerDispatch: false },
        'batch' in what ? `indexes, constraints and ANALYZE of batch ${what.batch + 1}` : `indexes, constraints and ANALYZE of ${what.ords.length} ranged tables`,
        'finishTargetTables',
        { target: b.target, plan: b.plan, ...what, parallelism: 1, part: 'tables' as const, ...reportTo },
      );
      notice(finished.skipped);
    },
  };
}

/**
 * The child's reports to the migration: what changed since the last one, at most one per
 * `spacing()` (1 s at first, then a hundredth of the copy's age, at most 10 minutes), so that the
 * migration's history grows with the logarithm of the copy's duration. Sooner: the round's end at
 * once (every batch landed: the snapshot may go), and a unit's start within 5 s while fewer than
 * IMMEDIATE_REPORTS reports were hastened so (the copy has at most about 500 batches, each started
 * once but for pauses; a copy starting them faster is reported at its cadence anyway).
 */
class StateReporter {
  /** Reports sent at once for a unit's start, over the child's runs. */
  immediate: number;
  private readonly sentTables = new Map<number, string>();
  private readonly sentMs = new Map<string, number>();
  private notices: string[] = [];
  private last = 0;
  /** When the pending timer sends (Infinity: none pending). */
  private dueAt = Infinity;
  private landedSent = false;
  private sentRunning = new Set<string>();
  private sentCounters = '';
  private sending: Promise<void> = Promise.resolve();

  constructor(
    private readonly input: Pick<CopyChildInput, 'reportTo' | 'snapshot' | 'tables' | 'progress' | 'continued'>,
    private readonly of: { tables: TableStatus[]; progress: MigrationProgress; copyMs: Map<string, number>; round: CopyRound },
    private readonly startedAt: number,
  ) {
    input.tables.forEach((t, ord) => this.sentTables.set(ord, JSON.stringify(t)));
    this.sentCounters = JSON.stringify(input.progress);
    this.immediate = input.continued?.reports ?? 0;
  }

  notice(...notices: string[]): void {
    this.notices.push(...notices);
  }

  changed(): void {
    const { round } = this.of;
    // A unit's start is reported within START_REPORT_MS (while the budget lasts): the migration
    // shows a unit's live progress only once it knows the unit runs.
    const started = this.immediate < IMMEDIATE_REPORTS && [...round.running.keys()].some((u) => !this.sentRunning.has(u));
    const due = this.last + (started ? Math.min(START_REPORT_MS, this.spacing()) : this.spacing());
    if ((round.landed && !this.landedSent) || due <= Date.now()) {
      if (started) this.immediate++;
      return this.send();
    }
    if (due >= this.dueAt) return;
    // The earliest timer wins; a later one finds itself superseded.
    this.dueAt = due;
    void wf.CancellationScope.nonCancellable(() => wf.sleep(due - Date.now())).then(() => {
      if (this.dueAt !== due) return;
      this.dueAt = Infinity;
      if (started) this.immediate++;
      this.send();
    });
  }

  /** Every report sent so far has reached the migration (or failed). */
  flushed(): Promise<void> {
    return this.sending;
  }

  /** What changed since the last report (and marks it sent). */
  report(): CopyStateReport {
    return this.diff().report;
  }

  /** Sends what changed, if anything did. */
  send(): void {
    const { report, changed } = this.diff();
    if (!changed) return;
    this.last = Date.now();
    const parent = wf.getExternalWorkflowHandle(this.input.reportTo.workflowId, this.input.reportTo.runId);
    // In order; a report that fails (the migration has ended) is not retried.
    this.sending = this.sending.then(() => wf.CancellationScope.nonCancellable(() => parent.signal(copyStateSignal, report)).catch(() => undefined));
  }

  /** The report of what changed since the last one, which it marks sent; `changed`: anything did. */
  private diff(): { report: CopyStateReport; changed: boolean } {
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
    const { round, progress } = this.of;
    const running = [...round.running.keys()];
    const counters = JSON.stringify(progress);
    const changed =
      tables.length > 0 ||
      copyMs.length > 0 ||
      notices.length > 0 ||
      counters !== this.sentCounters ||
      round.landed !== this.landedSent ||
      running.length !== this.sentRunning.size ||
      running.some((u) => !this.sentRunning.has(u));
    this.landedSent = round.landed;
    this.sentRunning = new Set(running);
    this.sentCounters = counters;
    return { report: { snapshot: this.input.snapshot, progress: { ...progress }, tables, notices, copyMs, running, landed: round.landed }, changed };
  }

  private spacing(): number {
    return Math.min(600_000, Math.max(1_000, (Date.now() - this.startedAt) / 100));
  }
}

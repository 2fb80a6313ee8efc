/**
 * Reports from activities to their workflow as signals at a bounded cadence (every signal is a
 * history event): MIGRATING_DATA's copy progress and index builds, SYNCING_WAL's apply and content
 * proof progress; and spec.copy.maxLockWaitSeconds for one copy activity. Used by the registry
 * (activities/index.ts).
 */
import { finalFailure, type FinalError } from './errors';
import { ErrorType } from '../workflows/error-types';
import type { Context } from '@temporalio/activity';
import type { ApplyProgress } from './apply/options';
import type { ProofProgress } from './validate';
import { signalWorkflow } from './edge';
import {
  applyProgressSignal,
  copyProgressSignal,
  describeLockWait,
  indexProgressSignal,
  type CopyLockWait,
  type CopyProgressReport,
  type IndexBuildProgress,
  type IndexProgressReport,
  proofProgressSignal,
} from '../workflows/contract';

/**
 * Reports of something that has been reporting for a long time (MIGRATING_DATA does not continue as
 * new while its copies run, so its history holds every one): after the first hour, the wait between
 * two is a 120th of the time since the first. Signals over a run of T hours then number about
 * 120 (the first hour at 30 s) + 120·ln(T): ~500 in a day, ~900 in a month; and never more than
 * MAX_LONG_RUN_REPORTS, after which the workflow learns of the run's units only as they end.
 */
export const LONG_RUN_REPORTS = 120;
export const MAX_LONG_RUN_REPORTS = 1000;
export function nextReportAfter(every: number, sinceFirstMs: number): number {
  return Math.max(every, Math.floor(sinceFirstMs / LONG_RUN_REPORTS));
}

/**
 * Live copy progress, batched per workflow run: one signal carries every copy this worker has in
 * flight for that run. Every signal is a history event, so the interval grows from 0.5 s to 30 s,
 * and past an hour with the copy's age (`nextReportAfter`): a ten-hour copy adds about 400 signals
 * per worker, a month-long one about 900, not one per copy every few seconds.
 */
export class CopyProgressReporter {
  private readonly runs = new Map<
    string,
    {
      workflowId: string;
      runId: string;
      client: Context['client'];
      units: Map<string, CopyProgressReport['units'][number]>;
      every: number;
      timer?: NodeJS.Timeout;
      /** No unit in flight: the timer only forgets the run. */
      idle?: boolean;
      last?: string;
      /** When this worker first reported the run, and how many signals it has sent it. */
      since: number;
      sent: number;
      sending: Promise<void>;
    }
  >();

  update(ctx: Context, workflowId: string, runId: string, unit: CopyProgressReport['units'][number]): void {
    const key = `${workflowId}\u0000${runId}`;
    let run = this.runs.get(key);
    if (!run) {
      run = { workflowId, runId, client: ctx.client, units: new Map(), every: 500, since: Date.now(), sent: 0, sending: Promise.resolve() };
      this.runs.set(key, run);
    }
    run.units.set(unit.unit, unit);
    if (run.idle) {
      clearTimeout(run.timer);
      run.timer = undefined;
    }
    if (!run.timer) this.schedule(key);
  }

  /**
   * The unit has ended (its result reaches the workflow by itself): stop reporting it. The run's
   * interval is kept (many short copies must not each restart at 0.5 s); a run idle for 10 minutes
   * is forgotten.
   */
  done(workflowId: string, runId: string, unit: string): void {
    const key = `${workflowId}\u0000${runId}`;
    const run = this.runs.get(key);
    if (!run) return;
    run.units.delete(unit);
    if (run.units.size === 0) {
      clearTimeout(run.timer);
      run.timer = setTimeout(() => {
        if (this.runs.get(key) === run && run.units.size === 0) this.runs.delete(key);
      }, 600_000);
      run.timer.unref();
      run.idle = true;
    }
  }

  private schedule(key: string): void {
    const run = this.runs.get(key)!;
    run.idle = false;
    run.timer = setTimeout(() => {
      run.timer = undefined;
      if (this.runs.get(key) !== run || run.units.size === 0) return;
      const units = [...run.units.values()];
      const fingerprint = units.map((u) => `${u.unit}:${u.rows}:${u.waiting ? `${u.waiting.side}/${u.waiting.pid ?? ''}` : ''}`).join(',');
      // Nothing moved since the last report: no signal (every signal is a history event).
      if (fingerprint === run.last) {
        this.schedule(key);
        return;
      }
      run.last = fingerprint;
      if (run.sent >= MAX_LONG_RUN_REPORTS) return;
      run.sent++;
      const report: CopyProgressReport = { units };
      // In order, and a failed signal only loses one report.
      run.sending = run.sending.then(() =>
        run.client.workflow
          .getHandle(run.workflowId, run.runId)
          .signal(copyProgressSignal, report)
          .catch(() => undefined),
      );
      run.every = Math.min(30_000, run.every * 2);
      this.schedule(key);
    }, nextReportAfter(run.every, Date.now() - run.since));
    run.timer.unref();
  }
}

/**
 * spec.copy.maxLockWaitSeconds for one copy activity: the watch stops the copy (its statements
 * cancelled as for a cancel) once a lock wait has lasted that long, and the activity then fails
 * for good naming the lock and its holder. Without a limit: the activity's own signal, unchanged.
 */
export function lockWaitLimit(seconds: number | undefined) {
  const stop = new AbortController();
  let reached: CopyLockWait | undefined;
  return {
    watch: seconds ? { seconds, reached: (w: CopyLockWait) => ((reached = w), stop.abort()) } : undefined,
    signal: (own: AbortSignal): AbortSignal => (seconds ? AbortSignal.any([own, stop.signal]) : own),
    failure: (unit: string): FinalError | undefined =>
      reached &&
      finalFailure(
        ErrorType.Precondition,
        `the copy of ${unit} waited ${reached.waitedSeconds} s (copy.maxLockWaitSeconds = ${seconds}) for ${describeLockWait(reached)}; end that transaction, or raise or drop the limit, and start the migration again`,
      ),
  };
}

/**
 * The index builds of one post-load activity to its workflow (`indexProgress`): on a change, at most
 * every 1 s at first, every 30 s after a while and less often past an hour (`nextReportAfter`; every
 * signal is a history event); an empty report at its end, so that the status forgets its builds.
 */
export class IndexProgressReporter {
  private every = 1000;
  private lastSent = 0;
  private timer?: NodeJS.Timeout;
  private pending?: IndexBuildProgress[];
  private sentAny = false;
  private sent = 0;
  private readonly since = Date.now();
  private sending: Promise<void> = Promise.resolve();

  constructor(
    private readonly ctx: Context,
    private readonly workflowId: string,
    private readonly runId: string,
    private readonly builder: string,
  ) {}

  update(builds: IndexBuildProgress[]): void {
    this.pending = builds;
    if (this.timer) return;
    const wait = Math.max(0, this.lastSent + nextReportAfter(this.every, Date.now() - this.since) - Date.now());
    this.timer = setTimeout(() => {
      this.timer = undefined;
      this.flush();
    }, wait);
    this.timer.unref();
  }

  private flush(): void {
    const builds = this.pending;
    if (!builds) return;
    this.pending = undefined;
    if (!this.sentAny && builds.length === 0) return;
    // The last, empty report always goes: the status must forget the builds.
    if (builds.length > 0 && this.sent >= MAX_LONG_RUN_REPORTS) return;
    this.sentAny = true;
    this.sent++;
    this.lastSent = Date.now();
    this.every = Math.min(30_000, this.every * 2);
    const report: IndexProgressReport = { builder: this.builder, builds };
    this.sending = this.sending.then(() =>
      this.ctx.client.workflow
        .getHandle(this.workflowId, this.runId)
        .signal(indexProgressSignal, report)
        .catch(() => undefined),
    );
  }

  async close(): Promise<void> {
    clearTimeout(this.timer);
    this.timer = undefined;
    if (this.sentAny) {
      this.pending = [];
      this.flush();
    }
    await this.sending;
  }
}

/**
 * Which apply reports become signals. Every signal is a history event: every 2 s while the lag
 * matters (first minutes of a run, or the apply behind), then every 15 s; the fence marker at once.
 */
export function applyProgressSignals(input: { reportEveryMs?: number; cutoverLagBytes?: number }): { progress(p: ApplyProgress): void; sent(): Promise<void> } {
  const startedAt = Date.now();
  let lastSignal = 0;
  let lastFence: string | undefined;
  let lastSignalledLag = Number.POSITIVE_INFINITY;
  let pending: Promise<void> = Promise.resolve();
  return {
    progress(p) {
      const now = Date.now();
      const fenceNew = p.fenceToken !== undefined && p.fenceToken !== lastFence;
      const steady = now - startedAt > 120_000 && p.lagBytes < 1024 * 1024;
      const every = input.reportEveryMs ?? (steady ? 15_000 : 2_000);
      // The lag has just come under the cutover threshold: the workflow waits for that news.
      const caughtUp = input.cutoverLagBytes !== undefined && p.lagBytes <= input.cutoverLagBytes && lastSignalledLag > input.cutoverLagBytes;
      if (fenceNew || caughtUp || now - lastSignal >= every) {
        lastSignal = now;
        lastSignalledLag = p.lagBytes;
        lastFence = p.fenceToken;
        // Serialise signals so the workflow sees progress in order; a failed signal is not fatal.
        pending = pending.then(() => signalWorkflow(applyProgressSignal.name, p).catch(() => undefined));
      }
    },
    sent: () => pending,
  };
}

/**
 * Which proof reports become signals. Every signal is a history event: every 2 s at first, doubling
 * to 30 s, and only a changed report; the first complete pass at once (the cutover waits for it).
 */
export function proofProgressSignals(): { progress(p: ProofProgress): void; last(): ProofProgress | undefined; sent(): Promise<void>; stop(): void } {
  let last: ProofProgress | undefined;
  let sent = '';
  let every = 2000;
  let pending: Promise<void> = Promise.resolve();
  const send = () => {
    if (!last || JSON.stringify(last) === sent) return;
    sent = JSON.stringify(last);
    const p = last;
    pending = pending.then(() => signalWorkflow(proofProgressSignal.name, p).catch(() => undefined));
  };
  let timer: NodeJS.Timeout | undefined;
  const tick = () => {
    send();
    every = Math.min(30_000, every * 2);
    timer = setTimeout(tick, every);
  };
  timer = setTimeout(tick, every);
  return {
    progress(p) {
      const first = p.passesComplete > 0 && (last?.passesComplete ?? 0) === 0;
      last = p;
      if (first) send();
    },
    last: () => last,
    sent: () => pending,
    stop: () => clearTimeout(timer),
  };
}

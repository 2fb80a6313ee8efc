/**
 * Where the apply's time goes (SYNCING_WAL), for benchmarks: with PGDTS_APPLY_STATS=1 the engine
 * records it and prints it at the end. Otherwise every call lands on NO_STATS, whose methods do
 * nothing: the hot path carries no `if (stats)` and builds no labels.
 */
import { finished } from 'node:stream/promises';
import type { Client } from 'pg';

export interface ApplyStats {
  /** A replication message arrived (the first one is timed). */
  data(): void;
  /** A forced full GC inside a large source transaction. */
  gc(): void;
  /** The replication socket was paused (true) or resumed (false). */
  paused(pause: boolean): void;
  /** A statement (set-based, `prepared` given, or a strict batch of INSERTs) took since `t0`. */
  statement(t0: number, rows: number, op: string, table: string, prepared?: boolean): void;
  /** A group's COMMIT took since `t0`. */
  committed(t0: number): void;
  /** A group rolled back and replayed change by change. */
  replay(): void;
  /** Printed once, when the apply stops. */
  report(foldedAhead: number): void;
}

class NoStats implements ApplyStats {
  data(): void {}
  gc(): void {}
  paused(): void {}
  statement(): void {}
  committed(): void {}
  replay(): void {}
  report(): void {}
}

export const NO_STATS: ApplyStats = new NoStats();

class RecordingStats implements ApplyStats {
  private readonly s = {
    groups: 0,
    statements: 0,
    dbMs: 0,
    commitMs: 0,
    start: Date.now(),
    setupMs: 0,
    firstData: 0,
    firstCommit: 0,
    replays: 0,
    gcs: 0,
    gapMs: 0,
    gaps: 0,
    lastAnswer: 0,
    targetBusyMs: 0,
    pausedMs: 0,
    pausedAt: 0,
    elu: performance.eventLoopUtilization(),
    by: {} as Record<string, { n: number; ms: number; rows: number }>,
  };

  constructor(calledAt: number, target: Client) {
    this.s.setupMs = this.s.start - calledAt;
    // Time with a statement sent and not yet answered (as seen from here).
    const st = this.s;
    const query = target.query.bind(target) as (...a: unknown[]) => unknown;
    let out = 0;
    let since = 0;
    const done = (): void => {
      if (--out === 0) st.targetBusyMs += performance.now() - since;
    };
    (target as unknown as { query: (...a: unknown[]) => unknown }).query = (...a: unknown[]) => {
      if (out++ === 0) since = performance.now();
      const r = query(...a);
      if (r instanceof Promise) r.then(done, done);
      else finished(r as NodeJS.WritableStream).then(done, done);
      return r;
    };
  }

  data(): void {
    if (!this.s.firstData) this.s.firstData = Date.now();
  }
  gc(): void {
    this.s.gcs++;
  }
  paused(pause: boolean): void {
    if (pause) this.s.pausedAt = performance.now();
    else if (this.s.pausedAt) {
      this.s.pausedMs += performance.now() - this.s.pausedAt;
      this.s.pausedAt = 0;
    }
  }
  statement(t0: number, rows: number, op: string, table: string, prepared?: boolean): void {
    const ms = this.answered(t0);
    this.s.statements++;
    this.s.dbMs += ms;
    const key = prepared === undefined ? `strict ${op} ${table}` : `${op} ${table} ${prepared}`;
    const e = (this.s.by[key] ??= { n: 0, ms: 0, rows: 0 });
    e.n++;
    e.ms += ms;
    e.rows += rows;
  }
  committed(t0: number): void {
    this.s.firstCommit ||= Date.now();
    this.s.groups++;
    this.s.commitMs += this.answered(t0);
  }
  /**
   * A statement or commit sent at `t0` was answered now: its own time, counted from when the one
   * ahead of it was answered if it was sent before that (writer.ts sends the next one early). The
   * time between an answer and the next statement sent soon after (under 50 ms: the same flush or
   * the next group) is `gapMs`: the target waiting for us. Exact with one target session.
   */
  private answered(t0: number): number {
    const now = performance.now();
    const from = Math.max(t0, this.s.lastAnswer);
    if (t0 > this.s.lastAnswer && t0 - this.s.lastAnswer < 50) {
      this.s.gapMs += t0 - this.s.lastAnswer;
      this.s.gaps++;
    }
    this.s.lastAnswer = now;
    return now - from;
  }
  replay(): void {
    this.s.replays++;
  }
  report(foldedAhead: number): void {
    const s = this.s;
    // eslint-disable-next-line no-console
    console.error(`apply stats: ${JSON.stringify({ ...s, runMs: Date.now() - s.start, firstDataMs: s.firstData - s.start, firstCommitMs: s.firstCommit - s.start, foldedAhead, elu: performance.eventLoopUtilization(s.elu).utilization, by: undefined })} ${JSON.stringify(s.by)}`);
  }
}

/** Recording stats (PGDTS_APPLY_STATS set; they time the target's statements) or NO_STATS. */
export function applyStats(calledAt: number, target: Client): ApplyStats {
  return process.env.PGDTS_APPLY_STATS ? new RecordingStats(calledAt, target) : NO_STATS;
}

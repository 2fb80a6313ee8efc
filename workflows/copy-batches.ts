/**
 * MIGRATING_DATA for a plan kept on the target: copy batches (many small tables, or one page range of
 * a large table) run `parallelism` at a time, each followed by its tables' own post-load DDL. What
 * reaches history per batch is its number and a few counts, so a run's history grows with the
 * batches (about tables / 100 + ranges), not with the tables. Deterministic workflow code.
 */
import * as wf from '@temporalio/workflow';
import type { CopyBatchInput, CopyBatchResult } from '../activities/copy-batch';
import type { MigrationStatus, MigrationProgress } from './contract';

export interface BatchCopyContext {
  batches: number;
  /** Tables copied in page ranges: plan position -> number of ranges. */
  ranged: ReadonlyMap<number, number>;
  parallelism: number;
  state: MigrationStatus;
  progress: MigrationProgress;
  /** Plan positions below this have an entry in state.tables (same index). */
  track: number;
  copyMs: Map<string, number>;
  /** Copy scopes a pause cancels; those it cancelled are in `paused` (redone after the resume). */
  inFlight: Set<wf.CancellationScope>;
  paused: Set<wf.CancellationScope>;
  main: wf.CancellationScope;
  /** Every batch of the round has landed: the snapshot is no longer needed. */
  round: { landed: boolean; running: Map<string, string>; live: Map<string, unknown> };
  pauseGate(): Promise<void>;
  /** Ranges an earlier round had committed, which the emptied tables lose (runs before 'resume-copy': nothing). */
  prepareRanged(ords: number[], snapshot: string | undefined, snapshotLsn?: string): Promise<unknown>;
  copyBatch(input: Pick<CopyBatchInput, 'batch' | 'snapshot' | 'track' | 'snapshotLsn' | 'keep'>): Promise<CopyBatchResult>;
  /**
   * The copy's rounds under one replication slot (patch 'resume-copy'): a round after a lost snapshot
   * copies only what earlier rounds did not commit. Absent: every round copies everything.
   */
  rounds?: CopyRounds;
  /** The post-load DDL of the tables a batch copied whole, or of ranged tables whose last range landed. */
  finish(what: { batch: number } | { ords: number[] }): Promise<void>;
}

/**
 * What the rounds of one copy (one replication slot) have done, kept by the workflow across rounds.
 * Bounded by the batches (at most MAX_BATCHES of whole tables, plus the page ranges).
 */
export interface CopyRounds {
  /** The snapshots of the rounds so far, oldest first: what each committed stands. */
  snapshots: string[];
  /** Batches landed, by number. */
  landed: Map<number, LandedBatch>;
  /** Post-load DDL done: of a batch's whole tables, of a ranged table (plan order). */
  finishedBatches: Set<number>;
  finishedRanged: Set<number>;
}

interface LandedBatch {
  rows: number;
  bytes: number;
  units: number;
  /** Units this batch copied itself (not kept from an earlier round), and in which round. */
  fresh: number;
  round: number;
  ranges: number[];
  tracked: number[];
}

export function newCopyRounds(): CopyRounds {
  return { snapshots: [], landed: new Map(), finishedBatches: new Set(), finishedRanged: new Set() };
}

/**
 * One round. `snapshot.resumed`: the slot of the previous round stands, so what it committed stays:
 * batches landed are not copied again (their pending post-load DDL is), whole tables it committed
 * inside a batch in flight are kept by the batch itself, and a ranged table with a range still to
 * copy is emptied and copied again whole (its ranges must all come from one snapshot).
 */
export async function copyBatches(ctx: BatchCopyContext, snapshot?: string, at?: { lsn: string; resumed: boolean }): Promise<void> {
  const { state, progress } = ctx;
  const rounds = ctx.rounds;
  const resumed = rounds !== undefined && at?.resumed === true && rounds.snapshots.length > 0;
  if (rounds && !resumed) Object.assign(rounds, newCopyRounds());
  const round = rounds ? rounds.snapshots.length : 0;
  if (rounds && snapshot !== undefined) rounds.snapshots.push(snapshot);
  // This round's snapshot too: a batch redone after a pause, or retried on another worker, keeps
  // the tables its first attempt committed.
  const keep = rounds ? [...rounds.snapshots] : [];
  Object.assign(progress, { tablesCopied: 0, rowsCopied: 0, bytesCopied: 0, batchesDone: 0, batchesTotal: ctx.batches, bytesPerSecond: undefined, etaSeconds: undefined });
  const startedAt = Date.now();
  const rangesLeft = new Map(ctx.ranged);
  const toFinish: Array<{ what: { batch: number } | { ords: number[] }; tracked: number[] }> = [];
  let prepare = [...rangesLeft.keys()];
  if (resumed) {
    for (const r of rounds.landed.values()) for (const ord of r.ranges) rangesLeft.set(ord, rangesLeft.get(ord)! - 1);
    // A ranged table not finished: all its ranges again, in this snapshot (they would mix two otherwise).
    prepare = [...rangesLeft].filter(([, left]) => left > 0).map(([ord]) => ord);
    for (const ord of prepare) {
      rangesLeft.set(ord, ctx.ranged.get(ord)!);
      for (const [batch, r] of rounds.landed) if (r.ranges.includes(ord)) rounds.landed.delete(batch);
      const ts = state.tables[ord];
      if (ts?.ranges) Object.assign(ts, { state: 'pending', rowsCopied: 0, bytesCopied: undefined, ranges: { ...ts.ranges, done: 0 } });
    }
    for (const ts of state.tables) if (ts.state === 'copying') Object.assign(ts, { state: 'pending', ...(ts.ranges ? {} : { rowsCopied: 0, bytesCopied: undefined }) });
    for (const [batch, r] of rounds.landed) {
      Object.assign(progress, { rowsCopied: progress.rowsCopied + r.rows, bytesCopied: progress.bytesCopied + r.bytes, batchesDone: progress.batchesDone! + 1 });
      progress.tablesCopied += r.units - r.ranges.length;
      if (r.units > r.ranges.length && !rounds.finishedBatches.has(batch)) toFinish.push({ what: { batch }, tracked: r.tracked });
    }
    const whole = [...rangesLeft].filter(([, left]) => left === 0).map(([ord]) => ord);
    progress.tablesCopied += whole.length;
    const unfinished = whole.filter((ord) => !rounds.finishedRanged.has(ord));
    if (unfinished.length) toFinish.push({ what: { ords: unfinished }, tracked: unfinished.filter((o) => o < ctx.track) });
    progress.copyResumes = (progress.copyResumes ?? 0) + 1;
  }
  if (prepare.length) {
    const removed = await ctx.prepareRanged(prepare, snapshot, at?.lsn);
    if (rounds && typeof removed === 'number') progress.unitsCopiedTwice = (progress.unitsCopiedTwice ?? 0) + removed;
  }
  const queue = Array.from({ length: ctx.batches }, (_, i) => i).filter((b) => !(resumed && rounds.landed.has(b)));
  let batchesLeft = queue.length;
  ctx.round.landed = batchesLeft === 0;
  /** Units kept from earlier rounds: every landed unit but those this round copied itself. */
  const countKept = () => {
    if (!resumed) return;
    let kept = 0;
    for (const r of rounds.landed.values()) kept += r.round === round ? r.units - r.fresh : r.units;
    progress.unitsKept = kept;
  };
  countKept();

  const landed = (batch: number, r: CopyBatchResult) => {
    if (rounds) {
      const kept = r.kept ?? 0;
      rounds.landed.set(batch, { rows: r.rows, bytes: r.bytes, units: r.units, fresh: r.units - kept, round, ranges: r.ranges, tracked: r.tables.filter((t) => !ctx.ranged.has(t.ord)).map((t) => t.ord) });
      if (r.recopied) progress.unitsCopiedTwice = (progress.unitsCopiedTwice ?? 0) + r.recopied;
      countKept();
    }
    progress.rowsCopied += r.rows;
    progress.bytesCopied += r.bytes;
    progress.batchesDone = (progress.batchesDone ?? 0) + 1;
    const wholeTables = r.units - r.ranges.length;
    progress.tablesCopied += wholeTables;
    const tracked: number[] = [];
    for (const t of r.tables) {
      const ts = state.tables[t.ord];
      if (!ts) continue;
      if (ts.ranges) {
        ts.rowsCopied += t.rows;
        ts.bytesCopied = (ts.bytesCopied ?? 0) + t.bytes;
        ts.ranges.done++;
        // Its next range may be waiting for a resume.
        if (ts.state === 'copying') ts.state = 'pending';
      } else {
        // Live reports set the rows while it copied: the result is the final count.
        Object.assign(ts, { rowsCopied: t.rows, bytesCopied: t.bytes });
        ts.state = 'indexing';
        tracked.push(t.ord);
        ctx.copyMs.set(ts.source, t.durationMs);
      }
    }
    if (wholeTables > 0) toFinish.push({ what: { batch }, tracked });
    const lastRanges: number[] = [];
    for (const ord of r.ranges) {
      const left = rangesLeft.get(ord)! - 1;
      rangesLeft.set(ord, left);
      if (left > 0) continue;
      lastRanges.push(ord);
      progress.tablesCopied++;
      const ts = state.tables[ord];
      if (ts) ts.state = 'indexing';
    }
    if (lastRanges.length) toFinish.push({ what: { ords: lastRanges }, tracked: lastRanges.filter((o) => o < ctx.track) });
    const seconds = (Date.now() - startedAt) / 1000;
    if (seconds >= 1) {
      progress.bytesPerSecond = Math.round(progress.bytesCopied / seconds);
      progress.etaSeconds =
        progress.bytesTotal !== undefined && progress.bytesPerSecond > 0 ? Math.max(0, Math.round((progress.bytesTotal - progress.bytesCopied) / progress.bytesPerSecond)) : undefined;
    }
    wf.setCurrentDetails(
      `**MIGRATING_DATA**\n\n${progress.tablesCopied}/${progress.tablesTotal} tables copied, batch ${progress.batchesDone}/${ctx.batches}, ${progress.rowsCopied} rows`,
    );
    if (--batchesLeft === 0) ctx.round.landed = true;
  };

  /** One batch, until it is copied (a pause interrupts it; it is copied again after the resume). */
  const copyOne = async (batch: number) => {
    const unit = `batch ${batch}`;
    let r: CopyBatchResult | undefined;
    while (!r) {
      await ctx.pauseGate();
      const scope = new wf.CancellationScope();
      ctx.inFlight.add(scope);
      ctx.round.running.set(unit, unit);
      try {
        r = await scope.run(() => ctx.copyBatch({ batch, snapshot, track: ctx.track, ...(rounds && at ? { snapshotLsn: at.lsn, keep } : {}) }));
      } catch (e) {
        if (!(wf.isCancellation(e) && ctx.paused.has(scope) && !ctx.main.consideredCancelled)) throw e;
        // A pause cancels every copy in flight: their tables are copied again after the resume (a
        // ranged table keeps its finished ranges; with `rounds`, the batch keeps the tables it committed).
        for (const ts of state.tables) {
          if (ts.state !== 'copying') continue;
          ts.state = 'pending';
          if (!ts.ranges) Object.assign(ts, { rowsCopied: 0, bytesCopied: undefined });
        }
      } finally {
        ctx.inFlight.delete(scope);
        ctx.paused.delete(scope);
        ctx.round.running.delete(unit);
        // Its last report goes with it: the status and the UI list only the batches in flight.
        ctx.round.live.delete(unit);
      }
    }
    landed(batch, r);
  };

  const runOne = async () => {
    for (;;) {
      const ready = toFinish.shift();
      if (ready) {
        await ctx.pauseGate();
        await ctx.finish(ready.what);
        if ('batch' in ready.what) rounds?.finishedBatches.add(ready.what.batch);
        else for (const ord of ready.what.ords) rounds?.finishedRanged.add(ord);
        for (const ord of ready.tracked) {
          const ts = state.tables[ord];
          if (ts) ts.state = 'copied';
        }
        continue;
      }
      const batch = queue.shift();
      if (batch === undefined) break;
      await copyOne(batch);
    }
  };

  await runUntilFirstFailure(Math.max(1, Math.min(ctx.parallelism, Math.max(queue.length, toFinish.length))), runOne, () => (queue.length = 0));
}

/**
 * `n` runners at once. The first failure stops the others (and `stop` keeps them from taking more
 * work) before the error goes on to cleanup: nothing may still load into tables cleanup will drop.
 */
export async function runUntilFirstFailure(n: number, runner: () => Promise<void>, stop: () => void): Promise<void> {
  const scope = new wf.CancellationScope();
  let failure: { error: unknown } | undefined;
  await scope.run(() =>
    Promise.all(
      Array.from({ length: n }, () =>
        runner().catch((error: unknown) => {
          if (failure) return;
          failure = { error };
          stop();
          scope.cancel();
        }),
      ),
    ),
  );
  if (failure) throw failure.error;
}

/**
 * MIGRATING_DATA for a plan kept on the target: copy batches (many small tables, or one page range of
 * a large table) run `parallelism` at a time, each followed by its tables' own post-load DDL. What
 * reaches history per batch is its number and a few counts, so a run's history grows with the
 * batches (about tables / 100 + ranges), not with the tables. Deterministic workflow code.
 */
import * as wf from '@temporalio/workflow';
import type { CopyBatchInput, CopyBatchResult } from '../activities/copy-batch';
import type { MigrationStatus, MigrationProgress } from './contract';
import { copyRate } from './progress';

export interface BatchCopyContext {
  batches: number;
  /** Tables copied in page ranges: plan position -> number of ranges. */
  ranged: ReadonlyMap<number, number>;
  parallelism: number;
  state: Pick<MigrationStatus, 'tables'>;
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
  /**
   * True when this run should take no more batches (`taken` so far; its history is long enough to continue as new):
   * the batches in flight land, the post-load DDL they made due runs, and copyBatches returns
   * `rested` with the rest of the queue left for the next run (`continued`).
   */
  rest?(taken: number): boolean;
  /** The round's state changed: a unit started or landed, a table's post-load DDL ended, a pause. */
  changed?(): void;
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
 * One round. `start.continued`: the same round taken over by a new run after continue-as-new (what
 * `rounds` says landed stands, the counters go on, nothing is emptied). `at.resumed`: the slot of
 * the previous round stands, so what it committed stays: batches landed are not copied again
 * (their pending post-load DDL is), whole tables it committed inside a batch in flight are kept by
 * the batch itself, and a ranged table with a range still to copy is emptied and copied again whole
 * (its ranges must all come from one snapshot). `rested`: `ctx.rest` stopped the round early.
 */
export async function copyBatches(ctx: BatchCopyContext, snapshot?: string, at?: { lsn: string; resumed: boolean }, start: { continued?: boolean; startedAt?: number } = {}): Promise<{ rested: boolean }> {
  const { state, progress } = ctx;
  const rounds = ctx.rounds;
  const { r, continued, resumed, prepare } = startRound(ctx, snapshot, at, start);
  // This round's snapshot too: a batch redone after a pause, or retried on another worker, keeps
  // the tables its first attempt committed.
  const keep = rounds ? [...rounds.snapshots] : [];
  if (prepare.length) {
    const removed = await ctx.prepareRanged(prepare, snapshot, at?.lsn);
    if (rounds && typeof removed === 'number') progress.unitsCopiedTwice = (progress.unitsCopiedTwice ?? 0) + removed;
  }
  const queue = Array.from({ length: ctx.batches }, (_, i) => i).filter((b) => !((resumed || continued) && rounds!.landed.has(b)));
  r.batchesLeft = queue.length;
  ctx.round.landed = r.batchesLeft === 0;
  countKept(r);
  // A round with nothing left to copy says so at once (the snapshot may go before any post-load DDL).
  if (ctx.round.landed) ctx.changed?.();

  /** One batch, until it is copied (a pause interrupts it; it is copied again after the resume). */
  const copyOne = async (batch: number) => {
    const unit = `batch ${batch}`;
    let result: CopyBatchResult | undefined;
    while (!result) {
      await ctx.pauseGate();
      const scope = new wf.CancellationScope();
      ctx.inFlight.add(scope);
      ctx.round.running.set(unit, unit);
      ctx.changed?.();
      try {
        result = await scope.run(() => ctx.copyBatch({ batch, snapshot, track: ctx.track, ...(rounds && at ? { snapshotLsn: at.lsn, keep } : {}) }));
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
        ctx.changed?.();
      }
    }
    landed(r, batch, result);
  };

  /** Batches taken from the queue by this call (a batch a pause interrupts is copied again, not taken again). */
  let taken = 0;
  const runOne = async () => {
    for (;;) {
      const ready = r.toFinish.shift();
      if (ready) {
        await ctx.pauseGate();
        await ctx.finish(ready.what);
        if ('batch' in ready.what) rounds?.finishedBatches.add(ready.what.batch);
        else for (const ord of ready.what.ords) rounds?.finishedRanged.add(ord);
        for (const ord of ready.tracked) {
          const ts = state.tables[ord];
          if (ts) ts.state = 'copied';
        }
        ctx.changed?.();
        continue;
      }
      if (queue.length > 0 && ctx.rest?.(taken)) break;
      const batch = queue.shift();
      if (batch === undefined) break;
      taken++;
      await copyOne(batch);
    }
  };

  await runUntilFirstFailure(Math.max(1, Math.min(ctx.parallelism, Math.max(queue.length, r.toFinish.length))), runOne, () => (queue.length = 0));
  return { rested: queue.length > 0 };
}

/** A round's start: new, resumed in a new snapshot, or continued; the ranged tables to empty first. */
function startRound(ctx: BatchCopyContext, snapshot: string | undefined, at: { resumed: boolean } | undefined, start: { continued?: boolean; startedAt?: number }) {
  const { rounds, progress } = ctx;
  const continued = rounds !== undefined && start.continued === true;
  const resumed = !continued && rounds !== undefined && at?.resumed === true && rounds.snapshots.length > 0;
  if (rounds && !resumed && !continued) Object.assign(rounds, newCopyRounds());
  const round = rounds ? Math.max(0, rounds.snapshots.length - (continued && snapshot !== undefined ? 1 : 0)) : 0;
  if (rounds && snapshot !== undefined && !continued) rounds.snapshots.push(snapshot);
  if (!continued) Object.assign(progress, { tablesCopied: 0, rowsCopied: 0, bytesCopied: 0, batchesDone: 0, batchesTotal: ctx.batches, bytesPerSecond: undefined, etaSeconds: undefined });
  const r: Round = { ctx, rounds, round, resumed: resumed || (continued && round > 0), startedAt: start.startedAt ?? Date.now(), rangesLeft: new Map(ctx.ranged), toFinish: [], batchesLeft: 0 };
  const prepare = continued ? continueRound(r, rounds) : resumed ? resumeRound(r, rounds!) : [...r.rangesLeft.keys()];
  return { r, continued, resumed, prepare };
}

/** One round of copyBatches: what its runners share. */
interface Round {
  ctx: BatchCopyContext;
  rounds: CopyRounds | undefined;
  /** This round's number. */
  round: number;
  resumed: boolean;
  startedAt: number;
  /** Ranged tables (plan position) -> ranges not landed yet. */
  rangesLeft: Map<number, number>;
  /** Post-load DDL due: of a batch's whole tables, or of ranged tables whose last range landed. */
  toFinish: Array<{ what: { batch: number } | { ords: number[] }; tracked: number[] }>;
  batchesLeft: number;
}

/**
 * A resumed round takes over what the earlier rounds landed (their post-load DDL if still due) and
 * returns the ranged tables to empty and copy again whole: those not finished, whose ranges would
 * otherwise come from two snapshots.
 */
function resumeRound(r: Round, rounds: CopyRounds): number[] {
  const { ctx, rangesLeft, toFinish } = r;
  const { state, progress } = ctx;
  for (const l of rounds.landed.values()) for (const ord of l.ranges) rangesLeft.set(ord, rangesLeft.get(ord)! - 1);
  // A ranged table not finished: all its ranges again, in this snapshot (they would mix two otherwise).
  const prepare = [...rangesLeft].filter(([, left]) => left > 0).map(([ord]) => ord);
  for (const ord of prepare) {
    rangesLeft.set(ord, ctx.ranged.get(ord)!);
    for (const [batch, l] of rounds.landed) if (l.ranges.includes(ord)) rounds.landed.delete(batch);
    const ts = state.tables[ord];
    if (ts?.ranges) Object.assign(ts, { state: 'pending', rowsCopied: 0, bytesCopied: undefined, ranges: { ...ts.ranges, done: 0 } });
  }
  for (const ts of state.tables) if (ts.state === 'copying') Object.assign(ts, { state: 'pending', ...(ts.ranges ? {} : { rowsCopied: 0, bytesCopied: undefined }) });
  for (const [batch, l] of rounds.landed) {
    Object.assign(progress, { rowsCopied: progress.rowsCopied + l.rows, bytesCopied: progress.bytesCopied + l.bytes, batchesDone: progress.batchesDone! + 1 });
    progress.tablesCopied += l.units - l.ranges.length;
    if (l.units > l.ranges.length && !rounds.finishedBatches.has(batch)) toFinish.push({ what: { batch }, tracked: l.tracked });
  }
  const whole = [...rangesLeft].filter(([, left]) => left === 0).map(([ord]) => ord);
  progress.tablesCopied += whole.length;
  const unfinished = whole.filter((ord) => !rounds.finishedRanged.has(ord));
  if (unfinished.length) toFinish.push({ what: { ords: unfinished }, tracked: unfinished.filter((o) => o < ctx.track) });
  progress.copyResumes = (progress.copyResumes ?? 0) + 1;
  return prepare;
}

/**
 * A round taken over after continue-as-new, in the same snapshot: the ranges that landed count down
 * their tables, and post-load DDL still due (none when the last run drained it) is due again.
 * Nothing to empty.
 */
function continueRound(r: Round, rounds: CopyRounds): number[] {
  const { ctx, rangesLeft, toFinish } = r;
  for (const l of rounds.landed.values()) for (const ord of l.ranges) rangesLeft.set(ord, rangesLeft.get(ord)! - 1);
  for (const [batch, l] of rounds.landed) {
    if (l.units > l.ranges.length && !rounds.finishedBatches.has(batch)) toFinish.push({ what: { batch }, tracked: l.tracked });
  }
  const unfinished = [...rangesLeft].filter(([ord, left]) => left === 0 && !rounds.finishedRanged.has(ord)).map(([ord]) => ord);
  if (unfinished.length) toFinish.push({ what: { ords: unfinished }, tracked: unfinished.filter((o) => o < ctx.track) });
  return [];
}

/** Units kept from earlier rounds: every landed unit but those this round copied itself. */
function countKept(r: Round): void {
  if (!r.resumed || !r.rounds) return;
  let kept = 0;
  for (const l of r.rounds.landed.values()) kept += l.round === r.round ? l.units - l.fresh : l.units;
  r.ctx.progress.unitsKept = kept;
}

/** A batch has landed: its numbers, its tables' states, the post-load DDL it makes due. */
function landed(r: Round, batch: number, result: CopyBatchResult): void {
  const { ctx, rounds, rangesLeft, toFinish } = r;
  const { state, progress } = ctx;
  if (rounds) {
    const kept = result.kept ?? 0;
    rounds.landed.set(batch, { rows: result.rows, bytes: result.bytes, units: result.units, fresh: result.units - kept, round: r.round, ranges: result.ranges, tracked: result.tables.filter((t) => !ctx.ranged.has(t.ord)).map((t) => t.ord) });
    if (result.recopied) progress.unitsCopiedTwice = (progress.unitsCopiedTwice ?? 0) + result.recopied;
    countKept(r);
  }
  progress.rowsCopied += result.rows;
  progress.bytesCopied += result.bytes;
  progress.batchesDone = (progress.batchesDone ?? 0) + 1;
  const wholeTables = result.units - result.ranges.length;
  progress.tablesCopied += wholeTables;
  const tracked: number[] = [];
  for (const t of result.tables) {
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
  for (const ord of result.ranges) {
    const left = rangesLeft.get(ord)! - 1;
    rangesLeft.set(ord, left);
    if (left > 0) continue;
    lastRanges.push(ord);
    progress.tablesCopied++;
    const ts = state.tables[ord];
    if (ts) ts.state = 'indexing';
  }
  if (lastRanges.length) toFinish.push({ what: { ords: lastRanges }, tracked: lastRanges.filter((o) => o < ctx.track) });
  const rate = copyRate(progress.bytesCopied, progress.bytesTotal, (Date.now() - r.startedAt) / 1000);
  if (rate) Object.assign(progress, rate);
  wf.setCurrentDetails(`**MIGRATING_DATA**\n\n${progress.tablesCopied}/${progress.tablesTotal} tables copied, batch ${progress.batchesDone}/${ctx.batches}, ${progress.rowsCopied} rows`);
  if (--r.batchesLeft === 0) ctx.round.landed = true;
  ctx.changed?.();
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

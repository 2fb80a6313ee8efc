/**
 * MIGRATING_DATA by reference since the 'copy-child' patch: the copy runs in child workflows
 * (`copyWorkflow`, copy-child.ts), one per snapshot round, each continuing as new every
 * COPY_RUN_BATCHES batches. What crosses between the migration and its copy: the child's input, its
 * state reports to the migration (`copyState`, at a cadence that slows with the copy's age), its
 * result, and the migration's pause/resume (`copyControl`) and stop (`copyStop`). Deterministic
 * workflow code.
 */
import * as wf from '@temporalio/workflow';
import type { ConnectionSpec } from '../activities/spec';
import type { PlanRef } from '../activities/plan-store';
import type { MigrationProgress, TableStatus } from './contract';
import type { CopyRounds } from './copy-batches';
import type { CopyRound } from './progress';

/** CopyRounds as history holds it (maps and sets as arrays). */
export interface CopyRoundsData {
  snapshots: string[];
  landed: Array<[number, CopyRounds['landed'] extends Map<number, infer L> ? L : never]>;
  finishedBatches: number[];
  finishedRanged: number[];
}

export const roundsData = (r: CopyRounds): CopyRoundsData => ({ snapshots: [...r.snapshots], landed: [...r.landed], finishedBatches: [...r.finishedBatches], finishedRanged: [...r.finishedRanged] });

export function roundsFrom(d: CopyRoundsData, into: CopyRounds): CopyRounds {
  into.snapshots = [...d.snapshots];
  into.landed = new Map(d.landed);
  into.finishedBatches = new Set(d.finishedBatches);
  into.finishedRanged = new Set(d.finishedRanged);
  return into;
}

/** What the copy child reports to the migration: only what changed since its last report, but the counters whole. */
export interface CopyStateReport {
  /** The round's snapshot: a report of an earlier round is stale. */
  snapshot: string | undefined;
  progress: MigrationProgress;
  /** Tables of the migration's page (plan order below TABLES_PAGE) whose status changed. */
  tables: Array<[number, TableStatus]>;
  notices: string[];
  copyMs: Array<[string, number]>;
  /** The units in flight now: the live copy reports of any other are stale. */
  running: string[];
  /** Every batch of the round has landed: the snapshot may be released. */
  landed: boolean;
}

export interface CopyChildInput {
  source: ConnectionSpec;
  target: ConnectionSpec;
  plan: PlanRef;
  batches: number;
  ranged: Array<[number, number]>;
  parallelism: number;
  track: number;
  snapshot?: string;
  at?: { lsn: string; resumed: boolean };
  marks?: string;
  maxLockWaitSeconds?: number;
  /** The migration's run: the state reports, and the activities' copy and index progress, go there. */
  reportTo: { workflowId: string; runId: string };
  rounds: CopyRoundsData;
  /** The migration's page of tables, and its counters, as they stand. */
  tables: TableStatus[];
  progress: MigrationProgress;
  control: CopyControl;
  /** A run after continue-as-new: the same round in the same snapshot; `reports` sent at a unit's start so far. */
  continued?: { startedAt: number; runs: number; reports: number };
}

export interface CopyChildResult {
  /** `lost`: a copy found the snapshot gone (the migration resumes in a new one); `stopped`: by `copyStop`. */
  outcome: 'done' | 'lost' | 'stopped';
  error?: string;
  rounds: CopyRoundsData;
  state: CopyStateReport;
  /** Runs of the child (continue-as-new included). */
  runs: number;
}

/** The migration's pause state, numbered: a signal older than the last one seen is ignored. */
export interface CopyControl {
  paused: boolean;
  seq: number;
}

export const copyStateSignal = wf.defineSignal<[CopyStateReport]>('copyState');
export const copyControlSignal = wf.defineSignal<[CopyControl]>('copyControl');
export const copyStopSignal = wf.defineSignal('copyStop');

/**
 * A copy child's runs take at most this many batches each, then continue as new: 12-22 events a
 * batch (its copy, its post-load DDL, their workflow tasks, the reports to the migration and their
 * timers), so a run holds about 1,200-2,200 events (measured). A copy has at most MAX_BATCHES (250)
 * batches of whole tables and MAX_TOTAL_RANGES (256) page ranges.
 */
export const COPY_RUN_BATCHES = 100;

/** A copy child's round: a table of the page its unit's live report is on shows as copying, with its rows (a batch's table) so far. */
export function showCopying(round: CopyRound, ts: TableStatus, unit: string, report: { rows: number; bytes: number }): void {
  if (!['pending', 'copying'].includes(ts.state)) return;
  ts.state = 'copying';
  round.copyingIn?.set(ts.source, unit);
  if (!ts.ranges) Object.assign(ts, { rowsCopied: report.rows, bytesCopied: report.bytes });
}

/** The migration's side: a report (or a child's final state) put into the status. */
export function applyCopyState(to: { tables: TableStatus[]; notices: string[]; progress: MigrationProgress; copyMs: Map<string, number>; round: CopyRound }, s: CopyStateReport): void {
  const { round } = to;
  if (s.snapshot !== round.snapshot) return;
  Object.assign(to.progress, s.progress);
  round.running = new Map(s.running.map((u) => [u, u]));
  for (const unit of [...round.live.keys()]) if (!round.running.has(unit)) round.live.delete(unit);
  // A table shown as copying (from the live reports) whose unit has ended without landing, by a
  // pause: to be copied again, as the child has it. A landed one comes with its new status below.
  for (const ts of to.tables) {
    const unit = round.copyingIn?.get(ts.source);
    if (ts.state !== 'copying' || unit === undefined || round.running.has(unit)) continue;
    round.copyingIn!.delete(ts.source);
    ts.state = 'pending';
    if (!ts.ranges) Object.assign(ts, { rowsCopied: 0, bytesCopied: undefined });
  }
  for (const [ord, ts] of s.tables) if (to.tables[ord]) to.tables[ord] = ts;
  // Live reports that came before the report saying their unit runs: shown now; kept one report more otherwise.
  for (const [unit, e] of round.early ?? []) {
    if (round.running.has(unit)) {
      round.live.set(unit, e.report);
      const ts = to.tables.find((t) => t.source === e.report.table);
      if (ts) showCopying(round, ts, unit, e.report);
    } else if (++e.missed < 2) continue;
    round.early!.delete(unit);
  }
  to.notices.push(...s.notices);
  for (const [table, ms] of s.copyMs) to.copyMs.set(table, ms);
  if (s.landed) round.landed = true;
}

/**
 * MIGRATING_DATA with the plan inline (runs recorded before the plan was kept on the target): one
 * copy activity per table or page range, `spec.parallelism` runners; a copied table's own post-load
 * DDL runs on its runner before the next unit, borrowing the sessions no runner uses.
 */
import { nameKey } from '../names';
import * as wf from '@temporalio/workflow';
import type { TableDef } from '../../activities/model';
import type { CopyRange } from '../../activities/copy';
import type { CopyPlan } from '../../activities/copy-plan';
import type { MigrationPlan } from '../../activities/preflight';
import type { TableStatus } from '../contract';
import { runUntilFirstFailure } from '../copy-batches';
import { refreshCopyProgress } from '../progress';
import { extraBuildSessions } from '../state';
import { call, copyOpts, schemaOptsNow, step, type ActivityResult } from '../activities';
import { pauseGate, planOf, tableStatus, type MigrationRun } from '../run';

/** One copy activity: a whole table, or one page range of a large one. */
interface CopyUnit {
  def: TableDef;
  ts: TableStatus;
  key: string;
  range?: CopyRange;
}

/** One key per source table (nameKey: a dot-joined key confused "a.b"."c" with "a"."b.c"). */
export const tableKey = (d: TableDef) => nameKey(d.source);

/** What the runners of one round share. */
interface Round {
  plan: MigrationPlan;
  snapshot: string | undefined;
  /** Units left per table: the table is copied when it reaches 0. */
  left: Map<string, number>;
  firstStart: Map<string, number>;
  /** Tables whose last unit has landed, waiting for their own post-load DDL (per-table mode). */
  toFinish: Array<{ def: TableDef; ts: TableStatus }>;
  unitsLeft: number;
}

/** The round's units, biggest first (a range counts as its share of its table), so the last ones to finish are small. */
function unitsOf(run: MigrationRun, copyPlans: Map<string, CopyPlan> | undefined): { units: CopyUnit[]; left: Map<string, number>; ordered: TableDef[] } {
  const units: CopyUnit[] = [];
  const left = new Map<string, number>();
  const ordered = copyPlans ? [...run.defs].sort((a, b) => (copyPlans.get(tableKey(b))?.bytes ?? 0) - (copyPlans.get(tableKey(a))?.bytes ?? 0)) : run.defs;
  for (const def of ordered) {
    const ts = tableStatus(run, def);
    const ranges = copyPlans?.get(tableKey(def))?.ranges;
    if (ranges) {
      ts.ranges = { total: ranges.length, done: 0 };
      units.push(...ranges.map((range) => ({ def, ts, key: `${ts.source}#${range.id}`, range })));
    } else units.push({ def, ts, key: ts.source });
    left.set(ts.source, ranges?.length ?? 1);
  }
  if (copyPlans) {
    const unitBytes = (u: CopyUnit) => {
      const p = copyPlans.get(tableKey(u.def));
      return (p?.bytes ?? 0) / (p?.ranges?.length ?? 1);
    };
    units.sort((a, b) => unitBytes(b) - unitBytes(a));
  }
  return { units, left, ordered };
}

export async function copyUnits(run: MigrationRun, snapshot?: string): Promise<void> {
  const plan = planOf(run);
  const { state, copy } = run;
  const copyPlans = copy.plans;
  Object.assign(copy.round, { snapshot, running: new Map(), live: new Map(), doneRows: new Map(), rate: new Map(), landed: false });
  const { units, left, ordered } = unitsOf(run, copyPlans);
  const ranged = ordered.filter((d) => copyPlans?.get(tableKey(d))?.ranges);
  if (ranged.length) {
    await step('prepareRangedCopies', `empty ${ranged.length} tables copied in ranges`, { target: plan.spec.target, tables: ranged.map((d) => d.target), snapshot, ...(run.marks ? { migrationId: run.marks } : {}) });
  }
  const queue = [...units];
  const round: Round = { plan, snapshot, left, firstStart: new Map(), toFinish: [], unitsLeft: units.length };
  const runners = Math.min(plan.spec.parallelism, units.length);
  /**
   * Sessions of the parallelism no runner uses: runners beyond the units, and runners that found
   * nothing left to do. A table's post-load DDL borrows them for its index builds.
   */
  let spare = plan.spec.parallelism - runners;
  /** Each runner is one session: a copied table's post-load DDL first (its copy is done), else the next unit. */
  const runOne = async () => {
    for (;;) {
      const ready = round.toFinish.shift();
      if (ready) {
        await pauseGate(run);
        const extra = extraBuildSessions(ready.def, spare);
        spare -= extra;
        try {
          const finished = await call(schemaOptsNow(), `indexes, constraints and ANALYZE of ${ready.ts.target}`, 'finishTargetTables', {
            target: plan.spec.target,
            defs: [ready.def],
            parallelism: 1 + extra,
            part: 'tables',
          });
          state.notices.push(...finished.skipped);
        } finally {
          spare += extra;
        }
        ready.ts.state = 'copied';
        continue;
      }
      const u = queue.shift();
      if (!u) break;
      await copyUnit(run, round, u);
    }
    spare++;
  };
  if (!wf.patched('copy-failure-stops-copies')) {
    await Promise.all(Array.from({ length: runners }, runOne));
    return;
  }
  await runUntilFirstFailure(runners, runOne, () => (queue.length = 0));
}

const tableRunning = (run: MigrationRun, table: string) => [...run.copy.round.running.values()].includes(table);

/** One unit, until it is copied (a pause interrupts it and copies it again after the resume). */
async function copyUnit(run: MigrationRun, rd: Round, u: CopyUnit): Promise<void> {
  const { state, copy } = run;
  const { round } = copy;
  const { plan, snapshot } = rd;
  const { ts, def } = u;
  let r: ActivityResult<'copyTable'> | undefined;
  while (!r) {
    await pauseGate(run);
    ts.state = 'copying';
    if (!rd.firstStart.has(ts.source)) rd.firstStart.set(ts.source, Date.now());
    round.running.set(u.key, ts.source);
    const scope = new wf.CancellationScope();
    copy.inFlight.add(scope);
    try {
      r = await scope.run(() =>
        call(copyOpts, `copy ${ts.source} -> ${ts.target}${u.range ? ` (pages ${u.range.id})` : ''}`, 'copyTable', {
          source: plan.spec.source,
          target: plan.spec.target,
          table: { source: def.source, target: def.target, copyColumns: def.copyColumns },
          snapshot,
          ...(u.range ? { range: u.range } : {}),
          ...(run.marks ? { migrationId: run.marks } : {}),
          ...(plan.spec.copy?.maxLockWaitSeconds ? { maxLockWaitSeconds: plan.spec.copy.maxLockWaitSeconds } : {}),
        }),
      );
    } catch (e) {
      // Interrupted by pause (not by cancel): wait for resume and copy the unit again (a range
      // already committed is found by its record and not copied twice).
      if (!(wf.isCancellation(e) && copy.paused.has(scope) && !run.main.consideredCancelled)) throw e;
      round.live.delete(u.key);
      refreshCopyProgress(round, ts, Date.now());
    } finally {
      copy.inFlight.delete(scope);
      copy.paused.delete(scope);
      round.running.delete(u.key);
    }
    if (!r && !tableRunning(run, ts.source)) ts.state = 'pending';
  }
  round.live.delete(u.key);
  const done = round.doneRows.get(ts.source) ?? { rows: 0, bytes: 0 };
  round.doneRows.set(ts.source, { rows: done.rows + r.rows, bytes: done.bytes + r.bytes });
  if (ts.ranges) ts.ranges.done++;
  const remaining = rd.left.get(ts.source)! - 1;
  rd.left.set(ts.source, remaining);
  refreshCopyProgress(round, ts, Date.now());
  if (remaining > 0) {
    // Its next range may be waiting for a resume.
    if (!tableRunning(run, ts.source)) ts.state = 'pending';
    return;
  }
  ts.state = 'copied';
  ts.rowsPerSecond = undefined;
  ts.etaSeconds = undefined;
  const copied = state.tables.filter((t) => t.state === 'copied').length;
  wf.setCurrentDetails(`**MIGRATING_DATA**\n\n${copied}/${state.tables.length} tables copied; last: ${ts.source} (${ts.rowsCopied} rows)`);
  run.copyMs.set(ts.source, u.range ? Date.now() - rd.firstStart.get(ts.source)! : r.durationMs);
  if (copy.perTablePostLoad) {
    ts.state = 'indexing';
    rd.toFinish.push({ def, ts });
  }
  if (--rd.unitsLeft === 0) round.landed = true;
}

/**
 * MIGRATING_DATA: every table copied (inside the slot's exported snapshot when online), each table's
 * post-load DDL as soon as it has landed, then the foreign keys (or, without
 * session_replication_role, left for FINALIZING). By reference the units are copy batches
 * (workflows/copy-batches.ts); inline, one activity per table or page range (copy-units.ts).
 */
import * as wf from '@temporalio/workflow';
import type { MigrationPlan } from '../../activities/preflight';
import { TABLES_PAGE } from '../contract';
import { copyBatches, newCopyRounds } from '../copy-batches';
import { hasForeignKeys } from '../plan-views';
import { call, schemaOptsNow, step } from '../activities';
import { pauseGate, planOf, setPhase, type MigrationRun } from '../run';
import { copyInSnapshot } from './copy-snapshot';
import { copyUnits, tableKey } from './copy-units';
import { copyRoundInChild, type CopyChildBase } from './copy-child-round';
import { batchActivities } from '../copy-child';

/** `foreignKeys`: CREATING_TABLES found some (by reference; inline, the defs say it). */
export async function migrateData(run: MigrationRun, foreignKeys: boolean): Promise<void> {
  const plan = planOf(run);
  if (run.planRef) {
    await migrateByReference(run, plan, foreignKeys);
    return;
  }
  const { state, defs, copy } = run;
  await pauseGate(run);
  setPhase(run, 'MIGRATING_DATA', `copying ${defs.length} tables, ${plan.spec.parallelism} at a time`);
  if (wf.patched('ranged-copies')) {
    const split = plan.spec.copy;
    const plans = await step('planCopies', 'measure tables, split the large ones into page ranges', {
      source: plan.spec.source,
      tables: defs.map((d) => d.source),
      splitAboveBytes: split?.splitAboveBytes,
      rangeBytes: split?.rangeBytes,
      minRanges: plan.spec.parallelism,
    });
    copy.plans = new Map(defs.map((d, i) => [tableKey(d), plans[i]!]));
  }
  copy.perTablePostLoad = wf.patched('post-load-per-table');
  if (plan.spec.mode === 'online') await copyInSnapshot(run, (snap) => copyUnits(run, snap.snapshotName));
  else await copyUnits(run);
  const rangedTargets = rangedTables(run);
  if (rangedTargets.length) await step('forgetCopyProgress', 'forget the range copy records', { target: plan.spec.target, tables: rangedTargets });
  if (copy.perTablePostLoad) {
    // Every table is finished: the foreign keys between them (both ends must be there).
    if (hasForeignKeys(defs)) {
      if (run.keysAfterCutover) run.foreignKeysPending = true;
      else {
        const finished = await call(schemaOptsNow(), 'create foreign keys', 'finishTargetTables', { target: plan.spec.target, defs, parallelism: plan.spec.parallelism, part: 'foreign-keys' });
        state.notices.push(...finished.skipped);
      }
    }
    return;
  }
  for (const t of state.tables) t.state = 'indexing';
  const finished = await call(schemaOptsNow(), 'create indexes and constraints, analyze', 'finishTargetTables', { target: plan.spec.target, defs, parallelism: plan.spec.parallelism });
  state.notices.push(...finished.skipped);
}

/** Inline plans: the targets of the tables copied in page ranges (their range records are forgotten at the end). */
export const rangedTables = (run: MigrationRun) => run.defs.filter((d) => run.copy.plans?.get(tableKey(d))?.ranges).map((d) => d.target);

/** MIGRATING_DATA with the plan kept on the target: batches of units, then the foreign keys. */
async function migrateByReference(run: MigrationRun, p: MigrationPlan, foreignKeys: boolean): Promise<void> {
  const ref = run.planRef!;
  const { state, progress, copy } = run;
  await pauseGate(run);
  setPhase(run, 'MIGRATING_DATA', `copying ${progress.tablesTotal} tables, ${p.spec.parallelism} at a time`);
  const split = p.spec.copy;
  const batches = await step('planCopyBatches', 'measure tables, split the large ones, group the small ones into batches', {
    source: p.spec.source,
    plan: ref,
    splitAboveBytes: split?.splitAboveBytes,
    rangeBytes: split?.rangeBytes,
    minRanges: p.spec.parallelism,
    maxBatchTables: split?.batchTables,
  });
  progress.bytesTotal = batches.bytes;
  const ranged = new Map(batches.ranged.map((r) => [r.ord, r.ranges]));
  for (const [ord, total] of ranged) {
    const ts = state.tables[ord];
    if (ts) ts.ranges = { total, done: 0 };
  }
  const base = copyBase(run, p, batches.batches, ranged);
  if (wf.patched('copy-child')) return copyInChildren(run, p, base).then(() => foreignKeysAfterCopy(run, p, foreignKeys));
  // Online runs since 'resume-copy': a lost snapshot costs only the units in flight.
  const rounds = p.spec.mode === 'online' && wf.patched('resume-copy') ? newCopyRounds() : undefined;
  const copyRound = (snapshot?: string, at?: { lsn: string; resumed: boolean }) => {
    Object.assign(copy.round, { snapshot, running: new Map(), live: new Map(), doneRows: new Map(), rate: new Map(), landed: false });
    return copyBatches(
      {
        batches: batches.batches,
        ranged,
        parallelism: p.spec.parallelism,
        state,
        progress,
        track: TABLES_PAGE,
        copyMs: run.copyMs,
        inFlight: copy.inFlight,
        paused: copy.paused,
        main: run.main,
        round: copy.round,
        pauseGate: () => pauseGate(run),
        rounds,
        ...batchActivities(base, (skipped) => state.notices.push(...skipped)),
      },
      snapshot,
      at,
    );
  };
  if (p.spec.mode === 'online') await copyInSnapshot(run, (snap, resumed) => copyRound(snap.snapshotName, rounds ? { lsn: snap.consistentPoint, resumed } : undefined), { resume: rounds !== undefined });
  else await copyRound();
  await foreignKeysAfterCopy(run, p, foreignKeys);
}

/** What every copy round needs from the plan and the spec (each child's input; the activities' inputs). */
function copyBase(run: MigrationRun, p: MigrationPlan, batches: number, ranged: Map<number, number>): CopyChildBase {
  return {
    source: p.spec.source,
    target: p.spec.target,
    plan: run.planRef!,
    batches,
    ranged: [...ranged],
    parallelism: p.spec.parallelism,
    track: TABLES_PAGE,
    ...(run.marks ? { marks: run.marks } : {}),
    ...(p.spec.copy?.maxLockWaitSeconds ? { maxLockWaitSeconds: p.spec.copy.maxLockWaitSeconds } : {}),
  };
}

/** The copy in child workflows (patch 'copy-child'): what landed is kept across their continue-as-new and the snapshot rounds. */
async function copyInChildren(run: MigrationRun, p: MigrationPlan, base: CopyChildBase): Promise<void> {
  const kept = newCopyRounds();
  if (p.spec.mode === 'online') await copyInSnapshot(run, (snap, resumed) => copyRoundInChild(run, base, kept, snap.snapshotName, { lsn: snap.consistentPoint, resumed }), { resume: true });
  else await copyRoundInChild(run, base, kept);
}

/** By reference: every table is finished, the foreign keys between them (or, without session_replication_role, at FINALIZING). */
async function foreignKeysAfterCopy(run: MigrationRun, p: MigrationPlan, foreignKeys: boolean): Promise<void> {
  if (foreignKeys && run.keysAfterCutover) run.foreignKeysPending = true;
  else if (foreignKeys) {
    const finished = await call(schemaOptsNow(), 'create foreign keys', 'finishTargetTables', { target: p.spec.target, plan: run.planRef!, parallelism: p.spec.parallelism, part: 'foreign-keys' });
    run.state.notices.push(...finished.skipped);
  }
}

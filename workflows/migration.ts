/**
 * migrationWorkflow: the phases in their public order (INIT, CREATING_TABLES, MIGRATING_DATA, SYNCING_WAL,
 * STOPPING_WRITES, VALIDATING, FINALIZING), each an `async function phase(run)` in
 * workflows/phases/ over one typed run state (run.ts). Deterministic: no I/O, no clocks but the
 * workflow's own; activities do all the work. The commands each phase emits, their order and every
 * patched() point are history: running migrations and test/fixtures/histories replay against them.
 */
import * as wf from '@temporalio/workflow';
import { ApplicationFailure } from '@temporalio/common';
import type { MigrationSpecInput } from '../activities/spec';
import type { MigrationReport } from './contract';
import { setHandlers } from './handlers';
import { alert, forgetPlan, newRun, planOf, setPhase, type ContinuedSync, type MigrationRun } from './run';
import { report } from './report';
import { step } from './activities';
import { errorMessage } from './failures';
import { ErrorType } from './error-types';
import { startWalWatch } from './background';
import { init } from './phases/init';
import { createTables } from './phases/create-tables';
import { migrateData } from './phases/migrate-data';
import { syncWal } from './phases/sync-wal';
import { stopWrites } from './phases/stop-writes';
import { validate } from './phases/validate';
import { abandonCutover, cutoverWithinBound } from './phases/cutover';
import { finalize } from './phases/finalize';
import { fallback } from './phases/fallback';
import { cleanup } from './phases/cleanup';

export type { ContinuedSync } from './run';

export async function migrationWorkflow(spec: MigrationSpecInput, continued?: ContinuedSync): Promise<MigrationReport> {
  const run = newRun(spec, continued);
  // Before the first await: a signal sent with the start must find its handler.
  setHandlers(run);
  try {
    await run.main.run(() => phases(run));
    return await end(run);
  } catch (caught) {
    if (caught instanceof wf.ContinueAsNew) throw caught;
    return await failed(run, caught);
  }
}

/** INIT → CREATING_TABLES → MIGRATING_DATA → SYNCING_WAL → STOPPING_WRITES → VALIDATING → FINALIZING. */
async function phases(run: MigrationRun): Promise<void> {
  if (run.continued?.fallback) {
    // Cut over already: straight back to FALLBACK_READY, the reverse apply resuming from the source's progress row.
    run.cutover.bounded = true;
    await fallback(run, planOf(run));
    if (!run.continueAsNew && run.planRef) await forgetPlan(run, planOf(run));
    return;
  }
  if (!run.continued) {
    await init(run);
    const { foreignKeys } = await createTables(run);
    await migrateData(run, foreignKeys);
  } else if (planOf(run).spec.mode === 'online') startWalWatch(run);
  const online = planOf(run).spec.mode === 'online';
  if (online && wf.patched('bounded-write-stop')) {
    run.cutover.bounded = true;
    for (;;) {
      await syncWal(run);
      if (run.continueAsNew) return;
      const abandoned = (await cutoverWithinBound(run)) ?? (await finalize(run, online));
      if (abandoned === undefined) return;
      await abandonCutover(run, abandoned);
    }
  }
  if (online) {
    await syncWal(run);
    if (run.continueAsNew) return;
    await stopWrites(run);
  }
  await validate(run);
  await finalize(run, online);
}

/** The phases ended: continue as new, or COMPLETED / ROLLED_BACK with the report. */
async function end(run: MigrationRun): Promise<MigrationReport> {
  const { continueAsNew } = run;
  if (continueAsNew) {
    await wf.condition(wf.allHandlersFinished);
    // Signals handled while this run was winding down: a cancel still cancels, a cutover carries over.
    if (run.cancelRequested || run.main.consideredCancelled) throw new wf.CancelledFailure('cancelled before continuing as new');
    continueAsNew.cutoverRequested = run.cutoverRequested;
    // Memo (source → target, shown by the API and UI) and search attributes carry over to the next run.
    const info = wf.workflowInfo();
    return await wf.makeContinueAsNewFunc<typeof migrationWorkflow>({ memo: info.memo, typedSearchAttributes: info.typedSearchAttributes })(run.spec, continueAsNew);
  }
  if (run.cutover.rolledBack) {
    setPhase(run, 'ROLLED_BACK', 'rolled back to the source');
    return (run.finalReport = report(run, 'ROLLED_BACK'));
  }
  setPhase(run, 'COMPLETED', 'migration complete');
  const done = (run.finalReport = report(run, 'COMPLETED'));
  await alert(run, 'completed', 'migration completed', { cutoverWindowMs: done.cutoverWindowMs, tables: done.tablesTotal ?? done.tables.length });
  return done;
}

/** Cancelled or failed: cleanup, the report, and the run's end as Temporal records it. */
async function failed(run: MigrationRun, caught: unknown): Promise<MigrationReport> {
  const { state } = run;
  // The WAL watcher stopped the run by cancelling it: a failure with its reason, not a cancel.
  const err = run.walError ?? caught;
  const cancelled = wf.isCancellation(err);
  const message = cancelled ? undefined : errorMessage(err);
  state.error = message;
  const dropTarget = cancelled && !run.plan?.spec.keepTargetOnCancel;
  await wf.CancellationScope.nonCancellable(() => cleanup(run, dropTarget));
  if (run.foreignKeysPending && !dropTarget) {
    state.notices.push('the target tables were left without their foreign keys: they are created at FINALIZING when the target role may not set session_replication_role');
  }
  setPhase(run, cancelled ? 'CANCELLED' : 'FAILED', message);
  await wf.CancellationScope.nonCancellable(() =>
    cancelled ? alert(run, 'cancelled', 'migration cancelled; cleanup done') : alert(run, 'failed', `migration failed: ${message}`, { error: message }),
  );
  run.finalReport = report(run, cancelled ? 'CANCELLED' : 'FAILED', message);
  if (!cancelled) throw ApplicationFailure.create({ message: message!, type: ErrorType.MigrationFailed, nonRetryable: true, details: [run.finalReport] });
  if (run.cancelRequested) {
    // Runs recorded before the patch ended normally with the report as result (COMPLETED).
    if (!wf.patched('cancel-ends-canceled')) return run.finalReport;
    // The cancel signal ends the run as Temporal's CANCELED, like `temporal workflow cancel`: only a
    // cancellation the server has recorded may end a run so, and the server refuses a workflow's
    // request to cancel itself; an activity asks as a client would, then the run waits for the
    // request to arrive (its root scope is cancelled then).
    const requested = await step('requestOwnCancellation', 'cancel: end as Temporal CANCELED').then(
      () => true,
      () => false,
    );
    if (!requested) return run.finalReport;
    await wf.condition(() => false);
  }
  throw err;
}

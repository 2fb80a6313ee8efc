/**
 * The workflow's signal and query handlers (workflows/contract.ts), set on a run before its first
 * await so that no signal sent at the start is lost. They only change the run's state; what a
 * control signal may do is decided by state.ts's pure functions.
 */
import * as wf from '@temporalio/workflow';
import {
  applyProgressSignal,
  cancelSignal,
  commitSignal,
  copyProgressSignal,
  indexProgressSignal,
  cutoverSignal,
  pauseSignal,
  proofProgressSignal,
  reportQuery,
  resumeSignal,
  rollbackSignal,
  slotWalSignal,
  slotWaitSignal,
  snapshotReadySignal,
  statusQuery,
  TABLES_PAGE,
} from './contract';
import { thresholdAlert, wants } from './notify';
import { applyFallbackSignal, applySignal, type FallbackSignal } from './state';
import { batchDetails, copyDetails, refreshCopyProgress } from './progress';
import { alert, type MigrationRun } from './run';
import { applyCopyState, copyStateSignal, showCopying } from './copy-state';
import { forwardPause } from './phases/copy-child-round';

export function setHandlers(run: MigrationRun): void {
  setUserHandlers(run);
  setActivityHandlers(run);
}

/** The `status` and `report` queries, and the user's control signals. */
function setUserHandlers(run: MigrationRun): void {
  const { state, copy } = run;
  // The page asked for; `tables` never holds more than TABLES_PAGE entries by reference.
  wf.setHandler(statusQuery, (page) => {
    // The units in flight, from the copy reports (a query only reads: nothing here reaches history).
    const copying = state.phase === 'MIGRATING_DATA' && copy.round.live.size ? { copying: [...copy.round.live].map(([unit, l]) => ({ unit, ...l })) } : {};
    const indexing = state.phase === 'MIGRATING_DATA' && copy.indexBuilds.size ? { indexing: [...copy.indexBuilds.values()].flat() } : {};
    return page && (page.offset !== undefined || page.limit !== undefined)
      ? { ...state, ...copying, ...indexing, tables: state.tables.slice(page.offset ?? 0, (page.offset ?? 0) + (page.limit ?? TABLES_PAGE)) }
      : { ...state, ...copying, ...indexing };
  }, { description: 'phase, per-table progress (a page: { offset, limit }), lag, cutover, proof, WAL, notices' }
  );
  wf.setHandler(reportQuery, () => run.finalReport, { description: 'the final report once the migration has ended (null before); a cancelled run ends CANCELED and has it only here' });
  wf.setHandler(pauseSignal, () => {
    Object.assign(state, applySignal(state, 'pause'));
    // In-flight copies stop now and are redone on resume (each copy empties its table first).
    if (state.paused) {
      for (const scope of copy.inFlight) {
        copy.paused.add(scope);
        scope.cancel();
      }
    }
    forwardPause(run);
  }, { description: 'user: pause (in-flight copies stop and are redone on resume; the apply stops, the slot keeps the WAL); refused during the cutover' });
  wf.setHandler(resumeSignal, () => {
    Object.assign(state, applySignal(state, 'resume'));
    forwardPause(run);
  }, { description: 'user: resume a paused migration (or start one created paused)' });
  wf.setHandler(cutoverSignal, () => {
    run.cutoverRequested = true;
    state.cutover = { ...state.cutover, requested: true };
  }, { description: 'user: cut over now (cutover mode manual, or sooner in auto)' });
  wf.setHandler(cancelSignal, () => {
    run.cancelRequested = true;
    run.main.cancel();
  }, { description: 'user: cancel; lift any fence, drop the slot and publication, drop the target tables it created' });
  const onFallbackSignal = (signal: FallbackSignal) => {
    const r = applyFallbackSignal(state, run.plan?.spec.afterCutover, signal);
    state.lastControl = r.lastControl;
    if (r.decision) state.fallback = { slot: run.reverseSlot, ...state.fallback, decision: r.decision };
  };
  wf.setHandler(commitSignal, () => onFallbackSignal('commit'), { description: 'user (afterCutover "reverse"): end FALLBACK_READY staying on the target (COMPLETED)' });
  wf.setHandler(rollbackSignal, () => onFallbackSignal('rollback'), { description: 'user (afterCutover "reverse"): move back to the source with the writes made on the target (ROLLED_BACK)' });
}

/** What the activities report while they run: snapshot, slot wait, copy, apply, proof and WAL progress. */
function setActivityHandlers(run: MigrationRun): void {
  const { state, copy } = run;
  wf.setHandler(slotWaitSignal, (w) => void (state.waiting = w), { description: 'internal (the snapshot holder): the slot creation waits for older transactions, every 5 s while it does' });
  wf.setHandler(snapshotReadySignal, (s) => {
    run.snapshots.set(s.attempt, s);
    delete state.waiting;
  }, { description: 'internal (the snapshot holder): the exported snapshot is ready for the copy' });
  wf.setHandler(proofProgressSignal, (p) => {
    if (state.proof?.state !== 'running' && state.proof?.state !== 'ready') return;
    state.proof = { ...p, state: p.passesComplete > 0 ? 'ready' : 'running' };
  }, { description: 'internal (the content proof): chunks verified so far, when they change' });
  wf.setHandler(applyProgressSignal, (p) => {
    state.replication = {
      slot: run.apply.streamingSlot,
      confirmedLsn: p.appliedLsn,
      sourceLsn: p.sourceLsn,
      lagBytes: p.lagBytes,
      lagSeconds: p.lagSeconds,
      transactions: p.transactions,
      changes: p.changes,
      updatedAt: new Date().toISOString(),
    };
    if (p.fenceToken) run.apply.fenceToken = p.fenceToken;
    const n = run.plan?.spec.notify;
    if (wants(n, 'lag')) {
      const a = thresholdAlert(run.alertsArmed.lag, p.lagBytes, n.lagBytes!);
      run.alertsArmed.lag = a.armed;
      if (a.fire) void alert(run, 'lag', `apply lag ${p.lagBytes} bytes, over notify.lagBytes (${n.lagBytes})`, { lagBytes: p.lagBytes, lagSeconds: p.lagSeconds, threshold: n.lagBytes });
    }
    if (state.phase === 'SYNCING_WAL' || state.phase === 'FALLBACK_READY') {
      wf.setCurrentDetails(`**${state.phase}**\n\napplied ${p.appliedLsn}, lag ${p.lagBytes} bytes, ${p.transactions} transactions`);
    }
  }, { description: 'internal (the apply): applied position and lag, every 2 s at first, every 15 s once caught up' });
  wf.setHandler(slotWalSignal, (r) => {
    const budget = run.plan?.spec.wal ?? {};
    const warned = (state.wal?.warned ?? false) || r.verdict === 'warn';
    if (warned && !state.wal?.warned) {
      state.notices.push(`replication slot ${run.slot} retains ${r.retainedBytes} bytes of WAL, over wal.warnRetainedBytes (${budget.warnRetainedBytes}): the source keeps that WAL until the apply has streamed it`);
    }
    state.wal = { slot: run.slot, retainedBytes: r.retainedBytes, walStatus: r.walStatus, ...budget, warned, updatedAt: new Date().toISOString() };
    const n = run.plan?.spec.notify;
    if (wants(n, 'retained-wal')) {
      const a = thresholdAlert(run.alertsArmed.wal, r.retainedBytes, n.retainedWalBytes!);
      run.alertsArmed.wal = a.armed;
      if (a.fire) void alert(run, 'retained-wal', `slot ${run.slot} retains ${r.retainedBytes} bytes of WAL, over notify.retainedWalBytes (${n.retainedWalBytes})`, { retainedWalBytes: r.retainedBytes, threshold: n.retainedWalBytes });
    }
  }, { description: 'internal (the WAL watcher): WAL retained by the slot, on a change of verdict' });
  wf.setHandler(indexProgressSignal, (r) => {
    if (r.builds.length) copy.indexBuilds.set(r.builder, r.builds);
    else copy.indexBuilds.delete(r.builder);
  }, { description: 'internal (post-load activities): index builds running on the target, on a change, backing off to every 30 s' });
  wf.setHandler(copyStateSignal, (s) => {
    applyCopyState({ tables: state.tables, notices: state.notices, progress: run.progress, copyMs: run.copyMs, round: copy.round }, s);
    if (state.phase === 'MIGRATING_DATA') wf.setCurrentDetails(batchDetails(run.progress, copy.round.live));
  }, { description: 'internal (the copy child): batches landed, tables finished, units in flight; at a cadence that slows with the copy\'s age' });
  wf.setHandler(copyProgressSignal, (r) => {
    const round = copy.round;
    for (const u of r.units) {
      if (u.snapshot !== round.snapshot) continue; // a report of another round: stale
      const report = { table: u.table, rows: u.rows, bytes: u.bytes, ...(u.waiting ? { waiting: u.waiting } : {}) };
      if (round.running.has(u.unit)) round.live.set(u.unit, report);
      // A copy child's unit may report before the child says it runs (or after it ended): kept aside.
      else if (round.early) round.early.set(u.unit, { report, missed: 0 });
    }
    for (const table of new Set(r.units.map((u) => u.table))) {
      const ts = state.tables.find((t) => t.source === table);
      if (!run.planRef) {
        if (ts?.state === 'copying') refreshCopyProgress(round, ts, Date.now());
        continue;
      }
      const u = r.units.find((x) => x.table === table)!;
      if (ts && u.snapshot === round.snapshot && round.running.has(u.unit)) showCopying(round, ts, u.unit, u);
    }
    if (state.phase === 'MIGRATING_DATA') wf.setCurrentDetails(run.planRef ? batchDetails(run.progress, round.live) : copyDetails(state.tables));
  }, { description: 'internal (copy units): rows and bytes copied while they move, backing off to every 30 s' });
}

/**
 * SYNCING_WAL: the apply streams the slot's changes to the target (beside it the content proof, the
 * fence's installation, the live comparison) until the cutover is due. A pause stops the apply (the
 * slot keeps the WAL); a long history continues as new from here.
 */
import * as wf from '@temporalio/workflow';
import { ApplicationFailure } from '@temporalio/common';
import { wants } from '../notify';
import { ErrorType } from '../error-types';
import { cutoverDue, fenceReady, lagSmall, proofReady } from '../state';
import { startApply, startFenceInstall, startLiveValidation, startProof, stopApply, stopFenceInstall, stopProof } from '../background';
import { alert, carried, historyFull, pauseGate, planOf, setPhase, untilOrApplyFails, type MigrationRun } from '../run';

export async function syncWal(run: MigrationRun): Promise<void> {
  const p = planOf(run);
  const { state, proof, fence } = run;
  const { mode, maxLagBytes } = p.spec.cutover;
  await pauseGate(run);
  setPhase(run, 'SYNCING_WAL', mode === 'manual' ? 'waiting for the cutover signal' : 'cutting over once the lag is small');
  for (const t of state.tables) t.state = 'syncing';
  startFenceInstall(run);
  if (p.spec.validation.live && !run.continued && !run.liveScope) startLiveValidation(run);
  proof.used = p.spec.validation.checksum && wf.patched('live-proof');
  for (;;) {
    // Auto cutover needs a fresh report from this run of the apply, not one from before a pause.
    const since = state.replication?.updatedAt;
    const due = () => cutoverDue({ mode, requested: run.cutoverRequested, retryWait: run.cutover.retryWait, replication: state.replication, since, maxLagBytes });
    // Back from an abandoned cutover attempt, the apply may still be running, or still stopping (the
    // stop VALIDATING asked for, its worker lost: until the activity's heartbeat timeout); then the
    // next one starts once it has. No command comes of awaiting a settled stop (replay unchanged).
    if (run.apply.stopping) await run.apply.stopping;
    if (!run.apply.scope) startApply(run);
    if (proof.used) startProof(run);
    const proofDone = () => proofReady({ used: proof.used, ended: proof.ended, passesComplete: state.proof?.passesComplete });
    if (wants(p.spec.notify, 'ready-for-cutover') && !run.readyAlerted) {
      run.readyAlerted = true;
      void wf.condition(() => state.phase !== 'SYNCING_WAL' || (lagSmall(state.replication, since, maxLagBytes) && proofDone())).then(() => {
        if (state.phase !== 'SYNCING_WAL') return undefined;
        const how = mode === 'manual' ? 'send the cutover signal (dts cutover)' : 'the cutover starts now';
        return alert(run, 'ready-for-cutover', `ready for cutover: lag ${state.replication?.lagBytes ?? 0} bytes; ${how}`, { lagBytes: state.replication?.lagBytes, lagSeconds: state.replication?.lagSeconds });
      }, () => undefined);
    }
    const fenceDone = () => fenceReady({ installing: fence.installDone !== undefined, settled: fence.installSettled, mode, requested: run.cutoverRequested });
    await untilOrApplyFails(run, () => state.paused || (due() && proofDone() && fenceDone()) || historyFull(p) || proof.failure !== undefined);
    if (proof.failure !== undefined) throw ApplicationFailure.nonRetryable(proof.failure, ErrorType.Validation);
    if (!state.paused && due()) {
      if (mode === 'manual') await drainBeforeFence(run, maxLagBytes);
      return;
    }
    // Paused, or this run's history is long: either way the apply stops here; the slot keeps the WAL
    // and the next apply resumes from the position recorded on the target.
    stopProof(run);
    await stopApply(run);
    if (!state.paused) {
      if (fence.installDone) await stopFenceInstall(run);
      run.continueAsNew = carried(run, p, false);
      return;
    }
    wf.setCurrentDetails('**SYNCING_WAL** (paused: the apply is stopped, the slot retains WAL)');
    await pauseGate(run);
    wf.setCurrentDetails('**SYNCING_WAL**');
  }
}

/**
 * A manual cutover drains the backlog before fencing, so that writes stop only for the last changes:
 * up to 5 minutes, then it fences anyway (the apply still has to pass the fence before VALIDATING).
 */
async function drainBeforeFence(run: MigrationRun, maxLagBytes: number): Promise<void> {
  const { state } = run;
  wf.setCurrentDetails('**SYNCING_WAL**\n\ncutover requested: waiting for the lag to be small before stopping writes');
  // Bounded: a report from after the signal, i.e. an apply that runs now (one lost with its
  // worker is retried only after its heartbeat timeout, backgroundHeartbeat: fenced before that, the
  // write stop would be spent waiting for it).
  const reportedBefore = state.replication?.updatedAt;
  await wf.condition(
    () =>
      run.apply.error !== undefined ||
      (state.replication !== undefined && (!run.cutover.bounded || state.replication.updatedAt !== reportedBefore) && state.replication.lagBytes <= maxLagBytes),
    '5 minutes',
  );
  if (run.apply.error !== undefined) throw run.apply.error;
}

/**
 * Activities that run beside the phases, each in a cancellation scope of its own: the apply
 * (SYNCING_WAL, FALLBACK_READY), the WAL watcher (from CREATING_TABLES until the slot is dropped), the
 * content proof and the advisory live comparison (SYNCING_WAL), the fence's installation as a
 * pass-through (SYNCING_WAL). Each start is synchronous: its command is emitted where the phase calls it.
 */
import * as wf from '@temporalio/workflow';
import { ActivityCancellationType, ApplicationFailure, type ActivityOptions } from '@temporalio/common';
import type { Activities } from '../activities';
import { TABLES_PAGE } from './contract';
import { namePairs, reverseNamePairs, validationTables } from './plan-views';
import { applyOpts, call, fenceInstallOpts, liveOpts, proofOpts, walOpts } from './activities';
import { errorMessage } from './failures';
import { ErrorType } from './error-types';
import { fenceInput, planOf, repairOn, tableCount, tablesOr, untilOrApplyFails, type MigrationRun } from './run';

/** `reverse`: FALLBACK_READY's apply, from the target's reverse slot into the source tables. */
export function startApply(run: MigrationRun, reverse = false): void {
  const scope = new wf.CancellationScope();
  run.apply.scope = scope;
  const p = planOf(run);
  const input = reverse
    ? { source: p.spec.target, target: p.spec.source, slot: run.reverseSlot, publication: run.reverseSlot, ...tablesOr(run, () => ({ tables: reverseNamePairs(run.defs) })), reverse: true }
    : {
        source: p.spec.source,
        target: p.spec.target,
        slot: run.slot,
        publication: run.slot,
        ...tablesOr(run, () => ({ tables: namePairs(run.defs) })),
        cutoverLagBytes: p.spec.cutover.maxLagBytes,
        ...(p.applyReplicaRole === false ? { replicaRole: false } : {}),
      };
  const runOnce = () => call(applyOpts, `apply WAL from slot ${input.slot}${reverse ? ' back to the source' : ''}`, 'applyChanges', input);
  run.apply.done = scope
    .run(async () => {
      // The apply only ends by our cancellation; if it ever returns on its own, start it again: it
      // resumes from the position recorded on the target.
      for (let restarts = 1; ; restarts++) {
        await runOnce();
        // Stopped at the cutover's request (it passed the fence) after we cancelled it: done.
        if (scope.consideredCancelled) return;
        if (restarts > 20) throw ApplicationFailure.nonRetryable('the apply keeps stopping on its own; giving up', ErrorType.Replication);
        run.state.notices.push('the apply stopped unexpectedly and was restarted');
      }
    })
    .catch((e: unknown) => {
      // Bounded runs go back to SYNCING_WAL after FINALIZING stopped the apply: an apply that ended
      // after we cancelled it (timed out with its lost worker) must not fail the next sync.
      if (!wf.isCancellation(e) && !(run.cutover.bounded && scope.consideredCancelled)) run.apply.error = e;
    });
}

export async function stopApply(run: MigrationRun): Promise<void> {
  run.apply.scope?.cancel();
  // Settles when the apply has ended (`done` never rejects); whoever waits on it resumes after this
  // function has cleared the scope (registered first).
  run.apply.stopping = run.apply.done;
  await run.apply.done;
  run.apply.scope = undefined;
  run.apply.stopping = undefined;
}

/** Waits until the apply has committed the fence's marker where it writes (its progress row), or fails with it. */
export async function awaitFencePassed(run: MigrationRun, input: Parameters<Activities['awaitFenceApplied']>[0], fenceLsn: string, opts: ActivityOptions): Promise<void> {
  const waiting = call(opts, `wait for the apply to pass ${fenceLsn}`, 'awaitFenceApplied', input);
  let passed = false;
  // Either outcome ends the wait; `await waiting` then returns or rethrows.
  void waiting.then(
    () => void (passed = true),
    () => void (passed = true),
  );
  await untilOrApplyFails(run, () => passed || run.apply.fenceToken === input.token);
  await waiting;
}

/** Advisory: compares while writes go on; its verdict goes to the status, never fails the migration. */
export function startLiveValidation(run: MigrationRun): void {
  const p = planOf(run);
  const { state } = run;
  const scope = new wf.CancellationScope();
  run.liveScope = scope;
  void scope
    .run(() =>
      call(liveOpts, 'live comparison while the source is writing', 'validateLive', {
        source: p.spec.source,
        target: p.spec.target,
        slot: run.slot,
        ...tablesOr(run, () => ({ tables: validationTables(run.defs) })),
        ...(run.planRef ? { track: TABLES_PAGE } : {}),
        parallelism: 2,
        chunkRows: p.spec.validation.chunkRows,
      }),
    )
    .then(
      (results) => {
        state.liveValidation = results.map((r) => ({ source: r.source, checksum: r.checksum, mismatches: r.mismatches.length, error: r.error }));
        const bad = results.filter((r) => r.checksum === 'mismatch');
        if (bad.length) state.notices.push(`live validation found differences in: ${bad.map((r) => r.source).join(', ')}`);
      },
      (e) => {
        if (!wf.isCancellation(e)) state.notices.push(`live validation could not finish: ${errorMessage(e)}`);
      },
    );
}

/**
 * The content proof (activities/validate/proof.ts) for as long as the sync lasts; a divergence it confirms
 * fails the migration before anything is fenced. If it cannot run, VALIDATING compares every chunk
 * it did not prove (a longer write stop, never a weaker proof).
 */
export function startProof(run: MigrationRun): void {
  const { proof, state } = run;
  if (proof.scope || proof.ended) return;
  const p = planOf(run);
  const scope = new wf.CancellationScope();
  proof.scope = scope;
  proof.startedAt = Date.now();
  // Carried over from a paused or continued sync: the passes done so far still count.
  state.proof = { pass: 0, passesComplete: 0, tables: tableCount(run), chunks: 0, chunksVerified: 0, rowsCovered: 0, ...state.proof, state: (state.proof?.passesComplete ?? 0) > 0 ? 'ready' : 'running' };
  // Cleanup waits for a cancelled proof to have stopped: one still writing its chunks would keep
  // pgdts.proof_chunks on the target after a cancel. Runs recorded before keep TRY_CANCEL.
  const waitCancel = wf.patched('proof-wait-cancel');
  const ran = scope
    .run(() =>
      call({ ...proofOpts, ...(waitCancel ? { cancellationType: ActivityCancellationType.WAIT_CANCELLATION_COMPLETED } : {}) }, 'content proof: chunk checksums while the source is writing', 'proveLive', {
        source: p.spec.source,
        target: p.spec.target,
        slot: run.slot,
        ...tablesOr(run, () => ({ tables: validationTables(run.defs) })),
        parallelism: Math.max(1, Math.min(2, p.spec.parallelism)),
        chunkRows: p.spec.validation.chunkRows,
      }),
    )
    .then(
      (r) => {
        proof.ended = true;
        state.proof = { ...r.progress, state: r.divergence ? 'diverged' : 'ready' };
        if (r.divergence?.length && repairOn(run)) {
          // Rewritten at VALIDATING, with the source fenced: the diverged chunks are left unverified,
          // so the cutover's check compares them again and names their rows.
          const text = r.divergenceText ?? r.divergence.map((c) => c.source).join(', ');
          state.notices.push(
            `the content proof found rows that differ on the target during SYNCING_WAL; validation.repair rewrites them from the source in the fenced window:\n${text.length > 2000 ? `${text.slice(0, 2000)}…` : text}`,
          );
        } else if (r.divergence?.length) {
          run.results.counts = r.divergence;
          state.validation = r.divergence.map((c) => ({ source: c.source, countsMatch: c.countsMatch, sample: c.sample, checksum: c.checksum, mismatches: c.mismatches.length }));
          for (const c of r.divergence) {
            const ts = state.tables.find((t) => t.source === c.source);
            if (ts) ts.state = 'failed';
          }
          proof.failure = `validation failed (found by the content proof during SYNCING_WAL, before any write stop):\n${r.divergenceText ?? r.divergence.map((c) => c.source).join(', ')}`;
        }
      },
      (e) => {
        // Stopped by us (the cutover, a pause, cleanup): waited for since proof-wait-cancel, its end
        // can come back as the activity's own "CANCELLED" failure, not a cancellation. Not a failure
        // of the proof: a later SYNCING_WAL (an abandoned cutover) starts it again.
        if (wf.isCancellation(e) || (waitCancel && scope.consideredCancelled)) return;
        proof.ended = true;
        if (state.proof) state.proof.state = 'stopped';
        state.notices.push(`the content proof stopped during SYNCING_WAL (${errorMessage(e)}); VALIDATING compares every chunk it did not prove`);
      },
    )
    .finally(() => {
      if (proof.scope === scope) proof.scope = undefined;
      proof.liveMs += Date.now() - proof.startedAt!;
    });
  if (waitCancel) proof.stopped = ran;
}

export function stopProof(run: MigrationRun): void {
  run.proof.scope?.cancel();
  run.proof.scope = undefined;
}

/**
 * Runs beside the sync; its failure only costs the cutover the old path (fenceSource creates the
 * triggers that are missing inside the write stop). Runs recorded before it never install.
 */
export function startFenceInstall(run: MigrationRun): void {
  const { fence } = run;
  if (fence.installScope || !wf.patched('fence-preinstall')) return;
  // Installed triggers are ours to remove whatever happens next (pass-through ones are harmless).
  fence.set = true;
  fence.installSettled = false;
  const scope = new wf.CancellationScope();
  fence.installScope = scope;
  fence.installDone = scope
    .run(() =>
      call(
        fenceInstallOpts,
        `install the fence triggers on ${tableCount(run)} source tables (pass-through until the cutover)`,
        'installFence',
        fenceInput(run),
      ),
    )
    .then(
      () => undefined,
      (e) => {
        if (!wf.isCancellation(e)) wf.log.warn('the fence triggers could not be installed in advance; the cutover creates them', { error: errorMessage(e) });
      },
    )
    .finally(() => {
      fence.installSettled = true;
    });
}

/** Waits for the installation to have stopped: its CREATE TRIGGERs must not race the fence or its removal. */
export async function stopFenceInstall(run: MigrationRun): Promise<void> {
  const { fence } = run;
  fence.installScope?.cancel();
  fence.installScope = undefined;
  if (fence.installDone) await fence.installDone;
  fence.installDone = undefined;
}

/** Watches the slot's retained WAL from before its creation until FINALIZING drops it (spec.wal). */
export function startWalWatch(run: MigrationRun): void {
  if (run.walScope || !wf.patched('wal-budget')) return;
  const p = planOf(run);
  const scope = new wf.CancellationScope();
  run.walScope = scope;
  void scope
    .run(() => call(walOpts, `watch the WAL slot ${run.slot} retains`, 'watchSlotWal', { source: p.spec.source, slot: run.slot, ...(p.spec.wal ?? {}) }))
    .catch((e: unknown) => {
      if (wf.isCancellation(e)) return;
      run.walError = e;
      run.main.cancel();
    });
}

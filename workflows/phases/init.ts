/**
 * INIT: preflight (activities/preflight.ts) checks every precondition read-only and returns the plan;
 * by reference the plan goes to the target and only its first page of tables comes back.
 */
import * as wf from '@temporalio/workflow';
import { ActivityCancellationType, ApplicationFailure, type ActivityOptions } from '@temporalio/common';
import type { Activities } from '../../activities';
import { TABLES_PAGE } from '../contract';
import { specCarriesPassword } from '../secrets';
import { ErrorType } from '../error-types';
import { call, local, quickOpts } from '../activities';
import { pauseGate, setPhase, type MigrationRun } from '../run';

export async function init(run: MigrationRun): Promise<void> {
  const { spec, state, progress } = run;
  setPhase(run, 'INIT', 'preflight checks');
  // A password in the input while this worker stores payloads unencrypted: every activity would store
  // it again in plain text (one table put 7 copies in history). Refuse before the first one.
  if (specCarriesPassword(spec) && wf.patched('refuse-unencrypted-password') && !(await local.payloadEncryption()).encrypted) {
    throw ApplicationFailure.create({
      message:
        'the spec carries a password and this worker stores payloads unencrypted (PG_DTS_CODEC_KEY is not set): refused before it is stored again. ' +
        'Set PG_DTS_CODEC_KEY on the workers and the client, or leave the password out and let the workers resolve it (PGPASSWORD, ~/.pgpass, PGPASSFILE)',
      type: ErrorType.Spec,
      nonRetryable: true,
    });
  }
  // Created paused (the REST API's create, `dts start --paused`): not even the read-only preflight
  // connects before the start.
  if (state.paused && wf.patched('pause-before-preflight')) {
    wf.setCurrentDetails('**INIT** (created paused: nothing runs until resume)');
    await pauseGate(run);
    wf.setCurrentDetails('**INIT**\n\npreflight checks');
  }
  // The plan goes to the target and only its first page of tables comes back (runs recorded before
  // this kept the whole plan in history).
  const byRef = wf.patched('plan-in-target');
  const args: Parameters<Activities['preflight']> = byRef ? [spec, { migrationId: run.migrationId, track: TABLES_PAGE }] : [spec];
  // A cancel waits for the preflight to end: it may have stored the plan on the target by then, and
  // only a plan the workflow holds is forgotten by cleanup (before this, a cancel in INIT could leave
  // pgdts.plan_tables behind).
  const waits = byRef && wf.patched('preflight-waits-cancel');
  const opts: ActivityOptions = { ...quickOpts, retry: { ...quickOpts.retry, maximumAttempts: 3 }, ...(waits ? { cancellationType: ActivityCancellationType.WAIT_CANCELLATION_COMPLETED } : {}) };
  const plan = await call(opts, 'preflight checks', 'preflight', ...args);
  run.plan = plan;
  if (byRef) {
    run.planRef = { target: plan.spec.target, migrationId: run.migrationId };
    progress.tablesTotal = plan.tableCount ?? plan.tables.length;
    state.tablesTotal = progress.tablesTotal;
    state.progress = progress;
  }
  state.mode = plan.spec.mode;
  state.notices.push(...plan.notices);
  state.tables = plan.tables.map((t) => ({
    source: `${t.source.schema}.${t.source.name}`,
    target: `${t.target.schema}.${t.target.name}`,
    state: 'pending',
    rowsCopied: 0,
    rowsTotal: t.estimatedRows,
  }));
  run.keysAfterCutover = plan.spec.mode === 'online' && plan.applyReplicaRole === false && wf.patched('keys-after-cutover');
}

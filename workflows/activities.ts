/**
 * The workflow's side of the activity boundary: each kind of activity's options (timeouts, retries,
 * cancellation), one proxy, and `call`, the one way a phase schedules an activity. Activity names,
 * options and summaries are part of history: changing one here changes the commands of every run.
 */
import * as wf from '@temporalio/workflow';
import { ActivityCancellationType, type ActivityOptions } from '@temporalio/common';
import type { Activities } from '../activities';
import { FINAL_ERROR_TYPES, NOTIFY_FINAL_ERROR_TYPES, WAL_FINAL_ERROR_TYPES } from './error-types';

/**
 * Every quick activity beats every 2 s (activities/edge.ts `beating`): a worker lost while one runs is
 * noticed within this heartbeat timeout, not after the 5-minute start-to-close.
 */
export const quickOpts: ActivityOptions = {
  startToCloseTimeout: '5 minutes',
  heartbeatTimeout: '30 seconds',
  retry: { initialInterval: '1s', backoffCoefficient: 2, maximumInterval: '30s', maximumAttempts: 8, nonRetryableErrorTypes: FINAL_ERROR_TYPES },
};
// DDL and index builds can take hours: they beat, and a cancel waits for them to have really stopped
// (their statements cancelled on the server) before cleanup drops what they made.
const schemaOpts: ActivityOptions = {
  ...quickOpts,
  startToCloseTimeout: '12 hours',
  heartbeatTimeout: '1 minute',
  cancellationType: ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
};
/**
 * Every schema activity asks patched('schema-wait-cancel') first, as it always has (the marker is in
 * history). Runs recorded before it got these very options too: their proxy merged the older set
 * (quickOpts, 12 hours) onto schemaOpts, which kept schemaOpts' heartbeat and cancellation type.
 */
export const schemaOptsNow = (): ActivityOptions => {
  wf.patched('schema-wait-cancel');
  return schemaOpts;
};
export const copyOpts: ActivityOptions = {
  startToCloseTimeout: '48 hours',
  heartbeatTimeout: '60 seconds',
  retry: { initialInterval: '2s', backoffCoefficient: 2, maximumInterval: '1 minute', maximumAttempts: 10, nonRetryableErrorTypes: FINAL_ERROR_TYPES },
};
/**
 * A copy batch beats every second; a worker killed mid-batch is noticed after this timeout and the
 * batch goes to another worker (it empties each table it copies, so it is redone whole).
 */
export const batchOpts: ActivityOptions = {
  ...copyOpts,
  heartbeatTimeout: '30 seconds',
  // Through the task queue, not eagerly to the worker running the workflow: with eager dispatch
  // that one worker took every batch while the others stood idle (workers.test.ts).
  allowEagerDispatch: false,
};
// The snapshot dies with the connection that exported it: a retry could not bring it back, so the
// workflow itself recovers from a lost holder (new slot, copies redone).
export const holderOpts: ActivityOptions = {
  startToCloseTimeout: '7 days',
  heartbeatTimeout: '20 seconds',
  retry: { maximumAttempts: 1 },
  // Wait until the holder has really closed its connection: it keeps the new slot busy until then.
  cancellationType: ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
};
/**
 * Background activities a `cutover` signal waits for: the apply (the fence goes up only once a fresh
 * report shows it running), the fence's installation (stopped before the fence) and the content
 * proof's first pass. A worker lost while one runs delays the fence by up to this timeout (at 30 s,
 * a cutover signalled right after a worker loss in SYNCING_WAL fenced ~28 s later). They beat every
 * 1-2 s and the worker flushes heartbeats at least every second (worker.ts
 * maxHeartbeatThrottleInterval): 10 s is several missed beats. An option of new schedules only:
 * replay compares an activity command's id and type, not its timeouts.
 */
export const backgroundHeartbeat: ActivityOptions['heartbeatTimeout'] = '10 seconds';
export const applyOpts: ActivityOptions = {
  startToCloseTimeout: '365 days',
  heartbeatTimeout: backgroundHeartbeat,
  retry: { initialInterval: '1s', backoffCoefficient: 2, maximumInterval: '15s', nonRetryableErrorTypes: FINAL_ERROR_TYPES },
  // FINALIZING drops the slot only after the apply has really stopped and acknowledged its position.
  cancellationType: ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
};
export const waitOpts: ActivityOptions = { ...quickOpts, startToCloseTimeout: '2 hours', heartbeatTimeout: '30 seconds' };
// Cancel must reach cleanup (and lift the fence) at once, not wait for a comparison stuck on a lock.
export const validationOpts: ActivityOptions = {
  ...quickOpts,
  startToCloseTimeout: '24 hours',
  heartbeatTimeout: '2 minutes',
  cancellationType: ActivityCancellationType.TRY_CANCEL,
};
/**
 * The fence's installation (SYNCING_WAL, pass-through triggers): STOPPING_WRITES, cleanup and a
 * continue-as-new wait for it to have stopped, so that no CREATE TRIGGER of it commits after the
 * fence or its removal.
 */
export const fenceInstallOpts: ActivityOptions = {
  ...waitOpts,
  startToCloseTimeout: '24 hours',
  heartbeatTimeout: backgroundHeartbeat,
  cancellationType: ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
};
// The fence activity is waited for even when cancelled: a fence created after cleanup had run would
// be left behind (it fails within its 5 s lock timeout when it cannot get its locks).
export const fenceOpts: ActivityOptions = quickOpts;
// Released triggers are harmless no-ops: keep trying to drop them, gently, for as long as readers hold on.
export const fenceRemovalOpts: ActivityOptions = {
  ...quickOpts,
  // No maximumAttempts: unlimited (the SDK refuses 0, which failed this rare path outright).
  retry: { initialInterval: '2s', backoffCoefficient: 2, maximumInterval: '1 minute', nonRetryableErrorTypes: FINAL_ERROR_TYPES },
};
/**
 * Steps that run with the source fenced under a bounded write stop: a lost worker must be noticed in
 * seconds, not after a 5-minute start-to-close or a 2-minute heartbeat timeout.
 */
export const fencedHeartbeat: ActivityOptions['heartbeatTimeout'] = '5 seconds';
// The WAL watcher runs as long as the slot exists; its two verdicts are final, a source restart is not.
export const walOpts: ActivityOptions = {
  startToCloseTimeout: '365 days',
  heartbeatTimeout: '1 minute',
  retry: { initialInterval: '5s', backoffCoefficient: 2, maximumInterval: '1 minute', nonRetryableErrorTypes: WAL_FINAL_ERROR_TYPES },
  cancellationType: ActivityCancellationType.TRY_CANCEL,
};
export const liveOpts: ActivityOptions = { ...validationOpts, retry: { ...quickOpts.retry, maximumAttempts: 2 } };
/**
 * The content proof runs for the whole sync; its state is on the target, so a retry continues it.
 * The cutover waits for its first pass, and cleanup for its stop: a lost worker's attempt is noticed
 * within backgroundHeartbeat (it beats every second).
 */
export const proofOpts: ActivityOptions = {
  startToCloseTimeout: '365 days',
  heartbeatTimeout: backgroundHeartbeat,
  retry: { initialInterval: '5s', backoffCoefficient: 2, maximumInterval: '1 minute', maximumAttempts: 5, nonRetryableErrorTypes: FINAL_ERROR_TYPES },
  cancellationType: ActivityCancellationType.TRY_CANCEL,
};
// A webhook that does not answer costs a few retries, never the migration.
export const notifyOpts: ActivityOptions = {
  startToCloseTimeout: '30 seconds',
  retry: { initialInterval: '2s', backoffCoefficient: 2, maximumInterval: '30s', maximumAttempts: 5, nonRetryableErrorTypes: NOTIFY_FINAL_ERROR_TYPES },
};

/**
 * One proxy for all. `executeWithOptions` deep-merges the options it is given onto the proxy's: this
 * proxy has only a start-to-close timeout, which every option set above overrides, so an activity is
 * scheduled with its option set exactly (a retry policy without maximumAttempts stays unlimited).
 */
const proxy = wf.proxyActivities<Activities>({ startToCloseTimeout: '5 minutes' });
export const local = wf.proxyLocalActivities<Activities>({ startToCloseTimeout: '10 seconds' });

export type ActivityName = keyof Activities;
export type ActivityResult<K extends ActivityName> = Awaited<ReturnType<Activities[K]>>;
type Scheduler<K extends ActivityName> = { executeWithOptions(o: ActivityOptions, a: Parameters<Activities[K]>): Promise<ActivityResult<K>> };

/**
 * Schedules activity `name` with `opts` and its one-line summary in the Temporal UI. Not async: the
 * command is emitted in the caller's tick, as a direct proxy call would (command order is history).
 */
export function call<K extends ActivityName>(opts: ActivityOptions, summary: string, name: K, ...args: Parameters<Activities[K]>): Promise<ActivityResult<K>> {
  return (proxy[name] as unknown as Scheduler<K>).executeWithOptions({ ...opts, summary }, args);
}

/** A quick activity (quickOpts). */
export const step = <K extends ActivityName>(name: K, summary: string, ...args: Parameters<Activities[K]>): Promise<ActivityResult<K>> =>
  call(quickOpts, summary, name, ...args);

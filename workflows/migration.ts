/**
 * migrationWorkflow: reads top to bottom like the phase list in DESIGN.md §3.
 * Deterministic: no I/O, no clocks but the workflow's own; activities do all the work.
 */
import * as wf from '@temporalio/workflow';
import { ActivityCancellationType, ApplicationFailure, type ActivityOptions } from '@temporalio/common';
import type { Activities } from '../activities';
import type { MigrationPlan } from '../activities/preflight';
import type { TableDef } from '../activities/model';
import type { CopyPlan, CopyRange } from '../activities/copy';
import type { MigrationSpecInput } from '../activities/spec';
import type { PlanRef } from '../activities/plan-store';
import { copyBatches, newCopyRounds, runUntilFirstFailure } from './copy-batches';
import { fenceTables, reverseFenceTables, reverseNamePairs, reverseSequencesOf, sequencesOf, targetTables } from './plan-views';
import {
  applyProgressSignal,
  cancelSignal,
  commitSignal,
  copyProgressSignal,
  indexProgressSignal,
  cutoverSignal,
  MigrationPhaseKey,
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
  type CopyLockWait,
  type IndexBuildProgress,
  type MigrationProgress,
  type MigrationReport,
  type MigrationStatus,
  type Phase,
  type ProofReport,
  type SnapshotReady,
  type TableReport,
  type TableStatus,
} from './contract';
import { migrationIdFor, migrationIdOf, reverseIdFor, slotNameFor } from './names';
import { specCarriesPassword } from './secrets';
import { notifyOf, thresholdAlert, wants, type NotifyPayload } from './notify';
import type { NotifyEvent } from '../activities/spec';
import { applyFallbackSignal, applySignal, cutoverRetryDelayMs, DEFAULT_MAX_WRITE_STOP_SECONDS, type FallbackSignal } from './state';

const NON_RETRYABLE = ['SpecError', 'PreconditionError', 'ValidationError', 'ReplicationError', 'SnapshotLost'];

const quickOpts: ActivityOptions = {
  startToCloseTimeout: '5 minutes',
  retry: { initialInterval: '1s', backoffCoefficient: 2, maximumInterval: '30s', maximumAttempts: 8, nonRetryableErrorTypes: NON_RETRYABLE },
};
// DDL and index builds can take hours: they beat, and a cancel waits for them to have really stopped
// (their statements cancelled on the server) before cleanup drops what they made.
const schemaOpts: ActivityOptions = {
  ...quickOpts,
  startToCloseTimeout: '12 hours',
  heartbeatTimeout: '1 minute',
  cancellationType: ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
};
const copyOpts: ActivityOptions = {
  startToCloseTimeout: '48 hours',
  heartbeatTimeout: '60 seconds',
  retry: { initialInterval: '2s', backoffCoefficient: 2, maximumInterval: '1 minute', maximumAttempts: 10, nonRetryableErrorTypes: NON_RETRYABLE },
};
/**
 * A copy batch beats every second; a worker killed mid-batch is noticed after this timeout and the
 * batch goes to another worker (it empties each table it copies, so it is redone whole).
 */
const batchOpts: ActivityOptions = {
  ...copyOpts,
  heartbeatTimeout: '30 seconds',
  // Through the task queue, not eagerly to the worker running the workflow: with eager dispatch
  // that one worker took every batch while the others stood idle (workers.test.ts).
  allowEagerDispatch: false,
};
// The snapshot dies with the connection that exported it: a retry could not bring it back, so the
// workflow itself recovers from a lost holder (new slot, copies redone).
const holderOpts: ActivityOptions = {
  startToCloseTimeout: '7 days',
  heartbeatTimeout: '20 seconds',
  retry: { maximumAttempts: 1 },
  // Wait until the holder has really closed its connection: it keeps the new slot busy until then.
  cancellationType: ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
};
const applyOpts: ActivityOptions = {
  startToCloseTimeout: '365 days',
  heartbeatTimeout: '30 seconds',
  retry: { initialInterval: '1s', backoffCoefficient: 2, maximumInterval: '15s', nonRetryableErrorTypes: NON_RETRYABLE },
  // FINALIZING drops the slot only after the apply has really stopped and acknowledged its position.
  cancellationType: ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
};
const waitOpts: ActivityOptions = { ...quickOpts, startToCloseTimeout: '2 hours', heartbeatTimeout: '30 seconds' };
// Cancel must reach cleanup (and lift the fence) at once, not wait for a comparison stuck on a lock.
const validationOpts: ActivityOptions = {
  ...quickOpts,
  startToCloseTimeout: '24 hours',
  heartbeatTimeout: '2 minutes',
  cancellationType: ActivityCancellationType.TRY_CANCEL,
};
// The fence activity is waited for even when cancelled: a fence created after cleanup had run would
// be left behind (it fails within its 5 s lock timeout when it cannot get its locks).
const fenceOpts: ActivityOptions = quickOpts;
// Released triggers are harmless no-ops: keep trying to drop them, gently, for as long as readers hold on.
const fenceRemovalOpts: ActivityOptions = {
  ...quickOpts,
  // No maximumAttempts: unlimited (the SDK refuses 0, which failed this rare path outright).
  retry: { initialInterval: '2s', backoffCoefficient: 2, maximumInterval: '1 minute', nonRetryableErrorTypes: NON_RETRYABLE },
};
/**
 * Steps that run with the source fenced under a bounded write stop: a lost worker must be noticed in
 * seconds, not after a 5-minute start-to-close or a 2-minute heartbeat timeout.
 */
const fencedHeartbeat: ActivityOptions['heartbeatTimeout'] = '5 seconds';
// The WAL watcher runs as long as the slot exists; its two verdicts are final, a source restart is not.
const walOpts: ActivityOptions = {
  startToCloseTimeout: '365 days',
  heartbeatTimeout: '1 minute',
  retry: { initialInterval: '5s', backoffCoefficient: 2, maximumInterval: '1 minute', nonRetryableErrorTypes: [...NON_RETRYABLE, 'SlotInvalidated', 'WalBudgetExceeded'] },
  cancellationType: ActivityCancellationType.TRY_CANCEL,
};
const liveOpts: ActivityOptions = { ...validationOpts, retry: { ...quickOpts.retry, maximumAttempts: 2 } };
// The content proof runs for the whole sync; its state is on the target, so a retry continues it.
const proofOpts: ActivityOptions = {
  startToCloseTimeout: '365 days',
  heartbeatTimeout: '2 minutes',
  retry: { initialInterval: '5s', backoffCoefficient: 2, maximumInterval: '1 minute', maximumAttempts: 5, nonRetryableErrorTypes: NON_RETRYABLE },
  cancellationType: ActivityCancellationType.TRY_CANCEL,
};

const quick = wf.proxyActivities<Activities>(quickOpts);
/** A quick activity with its one-line summary in the Temporal UI. */
const step = <K extends keyof Activities>(name: K, summary: string, ...args: Parameters<Activities[K]>) =>
  (quick[name] as unknown as { executeWithOptions(o: ActivityOptions, a: Parameters<Activities[K]>): Promise<Awaited<ReturnType<Activities[K]>>> }).executeWithOptions(
    { ...quickOpts, summary },
    args,
  );
const schema = wf.proxyActivities<Activities>(schemaOpts);
/** Runs recorded before schema activities were waited for on cancel keep their old options on replay. */
const legacySchemaOpts: ActivityOptions = { ...quickOpts, startToCloseTimeout: '12 hours' };
const schemaOptsNow = (): ActivityOptions => (wf.patched('schema-wait-cancel') ? schemaOpts : legacySchemaOpts);
const copy = wf.proxyActivities<Activities>(copyOpts);
const holder = wf.proxyActivities<Activities>(holderOpts);
const apply = wf.proxyActivities<Activities>(applyOpts);
const wait = wf.proxyActivities<Activities>(waitOpts);
const validation = wf.proxyActivities<Activities>(validationOpts);
const fenceRemoval = wf.proxyActivities<Activities>(fenceRemovalOpts);
const live = wf.proxyActivities<Activities>(liveOpts);
const local = wf.proxyLocalActivities<Activities>({ startToCloseTimeout: '10 seconds' });
const proof = wf.proxyActivities<Activities>(proofOpts);
const walWatch = wf.proxyActivities<Activities>(walOpts);

// A webhook that does not answer costs a few retries, never the migration.
const notifyOpts: ActivityOptions = {
  startToCloseTimeout: '30 seconds',
  retry: { initialInterval: '2s', backoffCoefficient: 2, maximumInterval: '30s', maximumAttempts: 5, nonRetryableErrorTypes: ['NotifyRefused'] },
};
const notifier = wf.proxyActivities<Activities>(notifyOpts);

const MAX_SNAPSHOT_ATTEMPTS = 3;

/**
 * What a run hands to the next when SYNCING_WAL continues as new (history stays bounded however
 * long the sync lasts). Internal: users start the workflow with the spec alone.
 */
export interface ContinuedSync {
  /** By reference (planRef set): the plan's first TABLES_PAGE tables only, and no defs. */
  plan: MigrationPlan;
  defs: TableDef[];
  planRef?: PlanRef;
  state: MigrationStatus;
  startedAt: number;
  copyMs: Array<[string, number]>;
  cutoverRequested: boolean;
  /** The migration id the target tables are marked with (activities/marks.ts); absent for runs before the marks. */
  marks?: string;
  /** The foreign keys wait for FINALIZING (the apply runs without session_replication_role). */
  foreignKeysPending?: boolean;
  /** afterCutover "reverse": the run continued in FALLBACK_READY (cut over, reverse replication running). */
  fallback?: true;
  /** The ready-for-cutover webhook was sent (spec.notify). */
  readyAlerted?: boolean;
}

/** Continue as new once a run's history passes this many events (or when the server suggests it). */
const HISTORY_EVENTS_LIMIT = 10_000;

export async function migrationWorkflow(spec: MigrationSpecInput, continued?: ContinuedSync): Promise<MigrationReport> {
  const startedAt = continued?.startedAt ?? Date.now();
  const info = wf.workflowInfo();
  const migrationId = migrationIdOf(spec, info.workflowId);
  const slot = slotNameFor(migrationId);
  const publication = slot;
  /** afterCutover "reverse": the fallback's slot and publication on the target, its rollback fence's id. */
  const reverseId = reverseIdFor(migrationId);
  const reverseSlot = slotNameFor(reverseId);
  /** The slot the running apply streams from (status): the forward one, the reverse one in FALLBACK_READY. */
  let streamingSlot = continued?.fallback ? reverseSlot : slot;

  const state: MigrationStatus = continued?.state ?? { migrationId, phase: 'INIT', paused: false, mode: 'online', tables: [], notices: [] };
  let cancelRequested = false;
  /** Threshold alerts armed (re-armed once the value falls to half its threshold); a new run re-arms them. */
  const alertsArmed = { lag: true, wal: true };
  /**
   * One webhook event (spec.notify) through an activity; its failure becomes a notice. Names and
   * numbers only: the spec, users and passwords never go into the payload.
   */
  const alert = async (event: NotifyEvent, message: string, extra: Partial<NotifyPayload> = {}): Promise<void> => {
    const n = plan?.spec.notify ?? notifyOf(spec);
    if (!wants(n, event) || !wf.patched('notify-webhooks')) return;
    const payload: NotifyPayload = {
      event,
      migrationId,
      workflowId: wf.workflowInfo().workflowId,
      phase: state.phase,
      at: new Date().toISOString(),
      ...(plan ? { source: plan.sourceDescription, target: plan.targetDescription } : {}),
      message,
      ...extra,
    };
    try {
      await notifier.notifyWebhook.executeWithOptions({ ...notifyOpts, summary: `notify: ${event}` }, [{ url: n.url, payload }]);
    } catch (e) {
      state.notices.push(`webhook for ${event} not delivered: ${errorMessage(e)}`);
    }
  };
  let cutoverRequested = continued?.cutoverRequested ?? false;
  const snapshots = new Map<number, SnapshotReady>();
  let fenceToken: string | undefined;
  let applyError: unknown;

  const main = new wf.CancellationScope();
  const copiesInFlight = new Set<wf.CancellationScope>();
  /** Copies interrupted by a pause (not by a cancel): redone, whatever the flag says by the time they end. */
  const pausedCopies = new Set<wf.CancellationScope>();
  /** Index builds running on the target, per post-load activity (its last `indexProgress` report). */
  const indexBuilds = new Map<string, IndexBuildProgress[]>();
  // The page asked for; `tables` never holds more than TABLES_PAGE entries by reference.
  wf.setHandler(statusQuery, (page) => {
    // The units in flight, from the copy reports (a query only reads: nothing here reaches history).
    const copying = state.phase === 'MIGRATING_DATA' && round.live.size ? { copying: [...round.live].map(([unit, l]) => ({ unit, ...l })) } : {};
    const indexing = state.phase === 'MIGRATING_DATA' && indexBuilds.size ? { indexing: [...indexBuilds.values()].flat() } : {};
    return page && (page.offset !== undefined || page.limit !== undefined)
      ? { ...state, ...copying, ...indexing, tables: state.tables.slice(page.offset ?? 0, (page.offset ?? 0) + (page.limit ?? TABLES_PAGE)) }
      : { ...state, ...copying, ...indexing };
  }, { description: 'phase, per-table progress (a page: { offset, limit }), lag, cutover, proof, WAL, notices' }
  );
  /** The report once the run has ended (the `report` query): a CANCELED run carries none. */
  let finalReport: MigrationReport | null = null;
  wf.setHandler(reportQuery, () => finalReport, { description: 'the final report once the migration has ended (null before); a cancelled run ends CANCELED and has it only here' });
  wf.setHandler(pauseSignal, () => {
    Object.assign(state, applySignal(state, 'pause'));
    // In-flight copies stop now and are redone on resume (each copy empties its table first).
    if (state.paused) {
      for (const scope of copiesInFlight) {
        pausedCopies.add(scope);
        scope.cancel();
      }
    }
  }, { description: 'user: pause (in-flight copies stop and are redone on resume; the apply stops, the slot keeps the WAL); refused during the cutover' });
  wf.setHandler(resumeSignal, () => void Object.assign(state, applySignal(state, 'resume')), { description: 'user: resume a paused migration (or start one created paused)' });
  wf.setHandler(cutoverSignal, () => {
    cutoverRequested = true;
    state.cutover = { ...state.cutover, requested: true };
  }, { description: 'user: cut over now (cutover mode manual, or sooner in auto)' });
  wf.setHandler(cancelSignal, () => {
    cancelRequested = true;
    main.cancel();
  }, { description: 'user: cancel; lift any fence, drop the slot and publication, drop the target tables it created' });
  const onFallbackSignal = (signal: FallbackSignal) => {
    const r = applyFallbackSignal(state, plan?.spec.afterCutover, signal);
    state.lastControl = r.lastControl;
    if (r.decision) state.fallback = { slot: reverseSlot, ...state.fallback, decision: r.decision };
  };
  wf.setHandler(commitSignal, () => onFallbackSignal('commit'), { description: 'user (afterCutover "reverse"): end FALLBACK_READY staying on the target (COMPLETED)' });
  wf.setHandler(rollbackSignal, () => onFallbackSignal('rollback'), { description: 'user (afterCutover "reverse"): move back to the source with the writes made on the target (ROLLED_BACK)' });
  wf.setHandler(slotWaitSignal, (w) => void (state.waiting = w), { description: 'internal (the snapshot holder): the slot creation waits for older transactions, every 5 s while it does' });
  wf.setHandler(snapshotReadySignal, (s) => {
    snapshots.set(s.attempt, s);
    delete state.waiting;
  }, { description: 'internal (the snapshot holder): the exported snapshot is ready for the copy' });
  wf.setHandler(proofProgressSignal, (p) => {
    if (state.proof?.state !== 'running' && state.proof?.state !== 'ready') return;
    state.proof = { ...p, state: p.passesComplete > 0 ? 'ready' : 'running' };
  }, { description: 'internal (the content proof): chunks verified so far, when they change' });
  wf.setHandler(applyProgressSignal, (p) => {
    state.replication = {
      slot: streamingSlot,
      confirmedLsn: p.appliedLsn,
      sourceLsn: p.sourceLsn,
      lagBytes: p.lagBytes,
      lagSeconds: p.lagSeconds,
      transactions: p.transactions,
      changes: p.changes,
      updatedAt: new Date().toISOString(),
    };
    if (p.fenceToken) fenceToken = p.fenceToken;
    const n = plan?.spec.notify;
    if (wants(n, 'lag')) {
      const a = thresholdAlert(alertsArmed.lag, p.lagBytes, n.lagBytes!);
      alertsArmed.lag = a.armed;
      if (a.fire) void alert('lag', `apply lag ${p.lagBytes} bytes, over notify.lagBytes (${n.lagBytes})`, { lagBytes: p.lagBytes, lagSeconds: p.lagSeconds, threshold: n.lagBytes });
    }
    if (state.phase === 'SYNCING_WAL' || state.phase === 'FALLBACK_READY') {
      wf.setCurrentDetails(`**${state.phase}**\n\napplied ${p.appliedLsn}, lag ${p.lagBytes} bytes, ${p.transactions} transactions`);
    }
  }, { description: 'internal (the apply): applied position and lag, every 2 s at first, every 15 s once caught up' });

  /** The WAL watcher's final verdict (budget exceeded, slot invalidated): the migration fails with it. */
  let walError: unknown;
  let walScope: wf.CancellationScope | undefined;
  wf.setHandler(slotWalSignal, (r) => {
    const budget = plan?.spec.wal ?? {};
    const warned = (state.wal?.warned ?? false) || r.verdict === 'warn';
    if (warned && !state.wal?.warned) {
      state.notices.push(`replication slot ${slot} retains ${r.retainedBytes} bytes of WAL, over wal.warnRetainedBytes (${budget.warnRetainedBytes}): the source keeps that WAL until the apply has streamed it`);
    }
    state.wal = { slot, retainedBytes: r.retainedBytes, walStatus: r.walStatus, ...budget, warned, updatedAt: new Date().toISOString() };
    const n = plan?.spec.notify;
    if (wants(n, 'retained-wal')) {
      const a = thresholdAlert(alertsArmed.wal, r.retainedBytes, n.retainedWalBytes!);
      alertsArmed.wal = a.armed;
      if (a.fire) void alert('retained-wal', `slot ${slot} retains ${r.retainedBytes} bytes of WAL, over notify.retainedWalBytes (${n.retainedWalBytes})`, { retainedWalBytes: r.retainedBytes, threshold: n.retainedWalBytes });
    }
  }, { description: 'internal (the WAL watcher): WAL retained by the slot, on a change of verdict' });

  const setPhase = (phase: Phase, details?: string) => {
    state.phase = phase;
    delete state.waiting;
    wf.upsertSearchAttributes([{ key: MigrationPhaseKey, value: phase }]);
    wf.setCurrentDetails(`**${phase}**${details ? `\n\n${details}` : ''}`);
    // Through the SDK's workflow logger: not emitted on replay, and the worker's log line carries the
    // workflow id (the migration) like every activity's.
    wf.log.info(`phase ${phase}`, { phase, ...(details ? { details } : {}) });
  };
  const pauseGate = () => wf.condition(() => !state.paused);
  const tableStatus = (def: { source: { schema: string; name: string } }) =>
    state.tables.find((t) => t.source === `${def.source.schema}.${def.source.name}`)!;

  let plan: MigrationPlan | undefined = continued?.plan;
  let defs: TableDef[] = continued?.defs ?? [];
  /**
   * The plan (tables, definitions, copy batches) kept on the target, not in history: activities read
   * it by this reference. Absent in runs recorded before it: they carry the plan inline.
   */
  let planRef: PlanRef | undefined = continued?.planRef;
  /** By reference: what the workflow knows of every table, in numbers. */
  const progress: MigrationProgress = state.progress ?? { tablesTotal: 0, tablesCopied: 0, rowsCopied: 0, bytesCopied: 0 };
  /** The tables' input of an activity: inline, or the plan's reference. */
  const tablesOr = <T>(inline: () => T) => (planRef ? { plan: planRef } : inline());
  /** How many tables the migration has, whether their definitions are here or on the target. */
  const tableCount = () => (planRef ? progress.tablesTotal : defs.length);
  const copyMs = new Map<string, number>(continued?.copyMs ?? []);
  let tablesCreated = continued !== undefined;
  /** Passed to every activity that creates, empties or drops target tables: only marked ones are touched. */
  let marks = continued?.marks;
  let replicationCreated = continued !== undefined && !continued.fallback;
  let continueAsNew: ContinuedSync | undefined;
  /**
   * The target role may not set session_replication_role (plan.applyReplicaRole false): the apply
   * runs with triggers firing, so the foreign keys are created at FINALIZING, once it has stopped.
   */
  let keysAfterCutover = false;
  /** Foreign keys left for FINALIZING. */
  let foreignKeysPending = continued?.foreignKeysPending ?? false;
  /** ready-for-cutover is sent once per migration (carried across continue-as-new). */
  let readyAlerted = continued?.readyAlerted ?? false;
  /** FINALIZING has stopped the apply: the target is now the database of record. */
  let cutOver = continued?.fallback === true;
  let stopHolder: () => Promise<void> = async () => undefined;
  let replicaIdentityChanged = continued !== undefined && !continued.fallback && (continued.plan.replicaIdentityFull?.length ?? 0) > 0;
  const restoreReplicaIdentity = async () => {
    if (!replicaIdentityChanged || !plan) return;
    await step('setReplicaIdentity', 'restore replica identities', { source: plan.spec.source, tables: plan.replicaIdentityFull.map((r) => ({ table: r.table, identity: r.original })) });
    replicaIdentityChanged = false;
  };
  let fenceSet = continued?.fallback === true;
  let fencedAt: string | undefined;
  /** afterCutover "reverse": the reverse slot and publication may exist on the target (cleanup drops them). */
  let reverseCreated = continued?.fallback === true;
  /** ROLLING_BACK has fenced the target (cleanup releases it). */
  let targetFenceSet = false;
  let rolledBack = false;
  /** The fence carries a deadline (cutover.maxWriteStopSeconds); runs recorded before it do not. */
  let boundedStop = false;
  let fenceDeadline: string | undefined;
  /** auto mode: the wait between an abandoned cutover attempt and the next. */
  let retryWait = false;
  let abandonedAttempts = 0;
  const writeStopBound = () => plan!.spec.cutover.maxWriteStopSeconds ?? DEFAULT_MAX_WRITE_STOP_SECONDS;
  let sequences: MigrationReport['sequences'] = [];
  let counts: Awaited<ReturnType<Activities['validateMigration']>>['results'] = [];
  let liveScope: wf.CancellationScope | undefined;
  /** SYNCING_WAL: the fence triggers' installation as a pass-through (STOPPING_WRITES then only arms them). */
  let installScope: wf.CancellationScope | undefined;
  let installDone: Promise<void> | undefined;
  let installSettled = false;
  /** The content proof during SYNCING_WAL: its scope, whether it ended, a divergence it confirmed. */
  let proofScope: wf.CancellationScope | undefined;
  /** Settles once the proof activity has really stopped (WAIT_CANCELLATION_COMPLETED); cleanup waits for it. */
  let proofStopped: Promise<void> | undefined;
  let proofEnded = false;
  let proofUsed = false;
  let proofFailure: string | undefined;
  let proofStartedAt: number | undefined;
  let proofLiveMs = 0;
  let validatingMs: number | undefined;
  /** validation.repair: what VALIDATING rewrote on the target. */
  let repaired: MigrationReport['repair'];
  /** validation.repair is on (runs recorded before it never are: the marker only in runs that use it). */
  const repairOn = () => plan?.spec.validation.repair === true && wf.patched('validation-repair');
  let objects: MigrationReport['objects'] & { notices: string[] } | undefined;
  let applyScope: wf.CancellationScope | undefined;
  let applyDone: Promise<void> | undefined;

  // Partitions too: a statement trigger on a partitioned table does not fire for writes made
  // straight into one of its partitions.
  const fenceInput = () => ({ source: plan!.spec.source, migrationId, ...tablesOr(() => ({ tables: fenceTables(defs) })) });

  /** One copy activity: a whole table, or one page range of a large one. */
  interface CopyUnit {
    def: TableDef;
    ts: TableStatus;
    key: string;
    range?: CopyRange;
  }
  /** Progress of the current copy round (a new snapshot starts a new round). */
  const round = {
    snapshot: undefined as string | undefined,
    /** Units in flight -> their table. */
    running: new Map<string, string>(),
    live: new Map<string, { table: string; rows: number; bytes: number; waiting?: CopyLockWait }>(),
    doneRows: new Map<string, { rows: number; bytes: number }>(),
    rate: new Map<string, { at: number; rows: number }>(),
    /** Every unit of the round has landed: the snapshot is no longer needed (per-table post-load). */
    landed: false,
  };
  /** Rows of a table = its finished units' + its running units' last reports; rate and ETA from them. */
  const refreshCopyProgress = (ts: TableStatus) => {
    let rows = round.doneRows.get(ts.source)?.rows ?? 0;
    let bytes = round.doneRows.get(ts.source)?.bytes ?? 0;
    for (const l of round.live.values()) {
      if (l.table !== ts.source) continue;
      rows += l.rows;
      bytes += l.bytes;
    }
    ts.rowsCopied = rows;
    ts.bytesCopied = bytes;
    const now = Date.now();
    const prev = round.rate.get(ts.source);
    if (prev && now - prev.at >= 1000 && rows >= prev.rows) {
      const perSec = ((rows - prev.rows) * 1000) / (now - prev.at);
      ts.rowsPerSecond = Math.round(perSec);
      ts.etaSeconds = perSec > 0 && (ts.rowsTotal ?? 0) > rows ? Math.round((ts.rowsTotal! - rows) / perSec) : undefined;
      round.rate.set(ts.source, { at: now, rows });
    } else if (!prev || rows < prev.rows) round.rate.set(ts.source, { at: now, rows });
  };
  wf.setHandler(indexProgressSignal, (r) => {
    if (r.builds.length) indexBuilds.set(r.builder, r.builds);
    else indexBuilds.delete(r.builder);
  }, { description: 'internal (post-load activities): index builds running on the target, on a change, backing off to every 30 s' });
  wf.setHandler(copyProgressSignal, (r) => {
    for (const u of r.units) {
      // Reports of another round, or of a unit that has ended since, are stale.
      if (u.snapshot !== round.snapshot || !round.running.has(u.unit)) continue;
      round.live.set(u.unit, { table: u.table, rows: u.rows, bytes: u.bytes, ...(u.waiting ? { waiting: u.waiting } : {}) });
    }
    for (const table of new Set(r.units.map((u) => u.table))) {
      const ts = state.tables.find((t) => t.source === table);
      if (!planRef) {
        if (ts?.state === 'copying') refreshCopyProgress(ts);
        continue;
      }
      // A batch reports the table it is on (its rows so far): a table of the page shows as copying.
      const u = r.units.find((x) => x.table === table)!;
      if (!ts || !round.running.has(u.unit) || !['pending', 'copying'].includes(ts.state)) continue;
      ts.state = 'copying';
      if (!ts.ranges) Object.assign(ts, { rowsCopied: u.rows, bytesCopied: u.bytes });
    }
    if (state.phase === 'MIGRATING_DATA') wf.setCurrentDetails(planRef ? batchDetails() : copyDetails());
  }, { description: 'internal (copy units): rows and bytes copied while they move, backing off to every 30 s' });
  /** By reference: the numbers, and each batch in flight with the table it is on. */
  const batchDetails = () => {
    const lines = [...round.live.entries()].map(([unit, l]) => `- ${l.table}: ${l.rows} rows (${unit})`);
    return `**MIGRATING_DATA**\n\n${progress.tablesCopied}/${progress.tablesTotal} tables copied, ${progress.rowsCopied} rows\n${lines.join('\n')}`;
  };
  /** The Temporal UI's current details while copying: tables done, and each copy in flight. */
  const copyDetails = () => {
    const done = state.tables.filter((t) => t.state === 'copied').length;
    const lines = state.tables
      .filter((t) => t.state === 'copying')
      .map((t) => {
        const pct = t.rowsTotal ? ` (${Math.min(100, Math.floor((100 * t.rowsCopied) / t.rowsTotal))}%)` : '';
        const rate = t.rowsPerSecond !== undefined ? `, ${t.rowsPerSecond} rows/s` : '';
        const eta = t.etaSeconds !== undefined ? `, about ${t.etaSeconds} s left` : '';
        const ranges = t.ranges ? `, ranges ${t.ranges.done}/${t.ranges.total}` : '';
        return `- ${t.source}: ${t.rowsCopied}${t.rowsTotal ? `/${t.rowsTotal}` : ''} rows${pct}${rate}${eta}${ranges}`;
      });
    const indexing = state.tables.filter((t) => t.state === 'indexing').map((t) => `- ${t.source}: copied, building indexes`);
    return `**MIGRATING_DATA**\n\n${done}/${state.tables.length} tables copied\n${[...lines, ...indexing].join('\n')}`;
  };

  const tableRunning = (table: string) => [...round.running.values()].includes(table);
  /** Table sizes and page ranges (tables over spec.copy.splitAboveBytes), planned once. */
  let copyPlans: Map<string, CopyPlan> | undefined;
  /**
   * Each table's own post-load DDL (indexes, keys, constraints, ANALYZE) runs as soon as its last unit
   * has landed, beside the other copies; foreign keys once every table is finished. Runs recorded
   * before it built everything after the last copy, in one activity.
   */
  let perTablePostLoad = false;
  const tableKey = (d: TableDef) => `${d.source.schema}.${d.source.name}`;

  async function copyAll(snapshot?: string): Promise<void> {
    Object.assign(round, { snapshot, running: new Map(), live: new Map(), doneRows: new Map(), rate: new Map(), landed: false });
    const units: CopyUnit[] = [];
    const left = new Map<string, number>();
    const firstStart = new Map<string, number>();
    const ordered = copyPlans ? [...defs].sort((a, b) => (copyPlans!.get(tableKey(b))?.bytes ?? 0) - (copyPlans!.get(tableKey(a))?.bytes ?? 0)) : defs;
    for (const def of ordered) {
      const ts = tableStatus(def);
      const ranges = copyPlans?.get(tableKey(def))?.ranges;
      if (ranges) {
        ts.ranges = { total: ranges.length, done: 0 };
        units.push(...ranges.map((range) => ({ def, ts, key: `${ts.source}#${range.id}`, range })));
      } else units.push({ def, ts, key: ts.source });
      left.set(ts.source, ranges?.length ?? 1);
    }
    // Biggest units first (a range counts as its share of its table), so the last ones to finish are small.
    if (copyPlans) {
      const unitBytes = (u: CopyUnit) => {
        const p = copyPlans!.get(tableKey(u.def));
        return (p?.bytes ?? 0) / (p?.ranges?.length ?? 1);
      };
      units.sort((a, b) => unitBytes(b) - unitBytes(a));
    }
    const ranged = ordered.filter((d) => copyPlans?.get(tableKey(d))?.ranges);
    if (ranged.length) {
      await step('prepareRangedCopies', `empty ${ranged.length} tables copied in ranges`, { target: plan!.spec.target, tables: ranged.map((d) => d.target), snapshot, ...(marks ? { migrationId: marks } : {}) });
    }
    const queue = [...units];
    /** Tables whose last unit has landed, waiting for their own post-load DDL (per-table mode). */
    const toFinish: Array<{ def: TableDef; ts: TableStatus }> = [];
    /** One unit, until it is copied (a pause interrupts it and copies it again after the resume). */
    const copyUnit = async (u: CopyUnit) => {
      const { ts, def } = u;
      let r: Awaited<ReturnType<Activities['copyTable']>> | undefined;
      while (!r) {
        await pauseGate();
        ts.state = 'copying';
        if (!firstStart.has(ts.source)) firstStart.set(ts.source, Date.now());
        round.running.set(u.key, ts.source);
        const scope = new wf.CancellationScope();
        copiesInFlight.add(scope);
        try {
          r = await scope.run(() =>
            copy.copyTable.executeWithOptions({ ...copyOpts, summary: `copy ${ts.source} -> ${ts.target}${u.range ? ` (pages ${u.range.id})` : ''}` }, [
              {
                source: plan!.spec.source,
                target: plan!.spec.target,
                table: { source: def.source, target: def.target, copyColumns: def.copyColumns },
                snapshot,
                ...(u.range ? { range: u.range } : {}),
                ...(marks ? { migrationId: marks } : {}),
                ...(plan!.spec.copy?.maxLockWaitSeconds ? { maxLockWaitSeconds: plan!.spec.copy.maxLockWaitSeconds } : {}),
              },
            ]),
          );
        } catch (e) {
          // Interrupted by pause (not by cancel): wait for resume and copy the unit again (a range
          // already committed is found by its record and not copied twice).
          if (!(wf.isCancellation(e) && pausedCopies.has(scope) && !main.consideredCancelled)) throw e;
          round.live.delete(u.key);
          refreshCopyProgress(ts);
        } finally {
          copiesInFlight.delete(scope);
          pausedCopies.delete(scope);
          round.running.delete(u.key);
        }
        if (!r && !tableRunning(ts.source)) ts.state = 'pending';
      }
      round.live.delete(u.key);
      const done = round.doneRows.get(ts.source) ?? { rows: 0, bytes: 0 };
      round.doneRows.set(ts.source, { rows: done.rows + r.rows, bytes: done.bytes + r.bytes });
      if (ts.ranges) ts.ranges.done++;
      const remaining = left.get(ts.source)! - 1;
      left.set(ts.source, remaining);
      refreshCopyProgress(ts);
      if (remaining > 0) {
        // Its next range may be waiting for a resume.
        if (!tableRunning(ts.source)) ts.state = 'pending';
        return;
      }
      ts.state = 'copied';
      ts.rowsPerSecond = undefined;
      ts.etaSeconds = undefined;
      const copied = state.tables.filter((t) => t.state === 'copied').length;
      wf.setCurrentDetails(`**MIGRATING_DATA**\n\n${copied}/${state.tables.length} tables copied; last: ${ts.source} (${ts.rowsCopied} rows)`);
      copyMs.set(ts.source, u.range ? Date.now() - firstStart.get(ts.source)! : r.durationMs);
      if (perTablePostLoad) {
        ts.state = 'indexing';
        toFinish.push({ def, ts });
      }
      if (--unitsLeft === 0) round.landed = true;
    };
    const runners = Math.min(plan!.spec.parallelism, units.length);
    let unitsLeft = units.length;
    /**
     * Sessions of the parallelism no runner uses: runners beyond the units, and runners that found
     * nothing left to do. A table's post-load DDL borrows them for its index builds, so copies and
     * builds together never use more than spec.parallelism sessions.
     */
    let spare = plan!.spec.parallelism - runners;
    /** Each runner is one session: a copied table's post-load DDL first (its copy is done), else the next unit. */
    const runOne = async () => {
      for (;;) {
        const ready = toFinish.shift();
        if (ready) {
          await pauseGate();
          const builds = ready.def.partitioned ? 1 : Math.max(1, (ready.def.postLoadSteps ?? []).filter((st) => st.kind === 'index').length);
          const extra = Math.max(0, Math.min(spare, builds - 1));
          spare -= extra;
          try {
            const finished = await schema.finishTargetTables.executeWithOptions(
              { ...schemaOptsNow(), summary: `indexes, constraints and ANALYZE of ${ready.ts.target}` },
              [{ target: plan!.spec.target, defs: [ready.def], parallelism: 1 + extra, part: 'tables' }],
            );
            state.notices.push(...finished.skipped);
          } finally {
            spare += extra;
          }
          ready.ts.state = 'copied';
          continue;
        }
        const u = queue.shift();
        if (!u) break;
        await copyUnit(u);
      }
      spare++;
    };
    if (!wf.patched('copy-failure-stops-copies')) {
      await Promise.all(Array.from({ length: runners }, runOne));
      return;
    }
    await runUntilFirstFailure(runners, runOne, () => (queue.length = 0));
  }

  /**
   * Copies inside the slot's exported snapshot. If the snapshot's holder is lost: with `resume`
   * (patch 'resume-copy'), the slot stays and the next round copies, in a temporary slot's snapshot,
   * only what was not committed (`copyRound`'s second argument); else everything again in a new slot.
   */
  async function copyInSnapshot(copyRound: (snap: SnapshotReady, resumed: boolean) => Promise<void>, opts: { resume?: boolean } = {}): Promise<void> {
    /** The migration's slot was created and exported a snapshot: a lost holder leaves it usable. */
    let slotStands = false;
    for (let attempt = 1; ; attempt++) {
      const holderScope = new wf.CancellationScope();
      let holderEnded = false;
      let holderError: unknown;
      replicationCreated = true;
      const resumed = slotStands;
      // slot.maxWaitSeconds bounds the wait for older transactions, whichever slot is created.
      const maxWait = plan!.spec.slot?.maxWaitSeconds ? { maxWaitSeconds: plan!.spec.slot.maxWaitSeconds } : {};
      const holderInput = resumed
        ? { source: plan!.spec.source, slot, attempt, resumeSlot: `${slot}_r${attempt}`, ...maxWait }
        : { source: plan!.spec.source, slot, attempt, ...(plan!.spec.slot?.failover ? { failover: true } : {}), ...maxWait };
      const held = holderScope
        .run(() =>
          holder.holdSnapshot.executeWithOptions({ ...holderOpts, summary: resumed ? `hold a new snapshot (temporary slot ${slot}_r${attempt})` : `hold snapshot of slot ${slot}` }, [holderInput]),
        )
        .then(
          () => void (holderEnded = true),
          (e) => {
            holderEnded = true;
            holderError = e;
          },
        );
      // Cleanup waits for the holder to end before dropping the slot it may be about to create.
      stopHolder = async () => {
        holderScope.cancel();
        await held;
      };
      await wf.condition(() => snapshots.has(attempt) || holderEnded);
      const snap = snapshots.get(attempt);
      // A resumed round that got no snapshot (no free slot for the temporary one, say): the next starts over.
      slotStands = opts.resume === true && snap !== undefined;
      if (snap) {
        const copyScope = new wf.CancellationScope();
        let copiesEnded = false;
        let copyError: unknown;
        const copies = copyScope.run(() => copyRound(snap, resumed)).then(
          () => void (copiesEnded = true),
          (e) => {
            copiesEnded = true;
            copyError = e;
          },
        );
        // Resumable runs release the snapshot as soon as every unit has landed, too.
        const releaseWhenLanded = perTablePostLoad || opts.resume === true;
        await wf.condition(() => copiesEnded || holderEnded || (releaseWhenLanded && round.landed));
        if (releaseWhenLanded && round.landed) {
          // Every copy has imported and used the snapshot: release it (and the source's xmin) while
          // the last tables' indexes are still being built; a holder lost from now on costs nothing.
          holderScope.cancel();
          await held;
          await copies;
          if (copyError) throw copyError;
          return;
        }
        if (copiesEnded && !holderEnded && !copyError) {
          holderScope.cancel();
          await held;
          return;
        }
        copyScope.cancel();
        await copies;
        if (!holderEnded) {
          holderScope.cancel();
          await held;
          // The copies failed for a reason of their own, not because the snapshot went away.
          if (!isSnapshotLost(copyError)) throw copyError;
          holderError = copyError;
        }
      }
      if (wf.isCancellation(holderError)) throw holderError;
      // slot.maxWaitSeconds ran out: a new attempt would wait for the same transaction.
      if (hasType(holderError, 'SlotWaitTimeout')) throw ApplicationFailure.nonRetryable(errorMessage(holderError), 'PreconditionError');
      if (attempt >= MAX_SNAPSHOT_ATTEMPTS) {
        throw ApplicationFailure.nonRetryable(
          `lost the exported snapshot ${MAX_SNAPSHOT_ATTEMPTS} times while copying; last error: ${errorMessage(holderError)}`,
          'SnapshotLost',
        );
      }
      if (slotStands) {
        state.notices.push(`snapshot holder lost (attempt ${attempt}): ${errorMessage(holderError)}; resuming the copy in a new snapshot, keeping what was committed`);
        continue;
      }
      state.notices.push(`snapshot holder lost (attempt ${attempt}): ${errorMessage(holderError)}; redoing the copy in a new snapshot`);
      for (const t of state.tables) Object.assign(t, { state: 'pending', rowsCopied: 0, bytesCopied: undefined, ...(t.ranges ? { ranges: { ...t.ranges, done: 0 } } : {}) });
    }
  }

  /** `reverse`: FALLBACK_READY's apply, from the target's reverse slot into the source tables. */
  function startApply(reverse = false): void {
    const scope = new wf.CancellationScope();
    applyScope = scope;
    const p = plan!;
    const input = reverse
      ? { source: p.spec.target, target: p.spec.source, slot: reverseSlot, publication: reverseSlot, ...tablesOr(() => ({ tables: reverseNamePairs(defs) })), reverse: true }
      : {
          source: p.spec.source,
          target: p.spec.target,
          slot,
          publication,
          ...tablesOr(() => ({ tables: defs.map((d) => ({ source: d.source, target: d.target })) })),
          cutoverLagBytes: p.spec.cutover.maxLagBytes,
          ...(p.applyReplicaRole === false ? { replicaRole: false } : {}),
        };
    const runOnce = () => apply.applyChanges.executeWithOptions({ ...applyOpts, summary: `apply WAL from slot ${input.slot}${reverse ? ' back to the source' : ''}` }, [input]);
    applyDone = scope
      .run(async () => {
        // The apply only ends by our cancellation; if it ever returns on its own, start it again: it
        // resumes from the position recorded on the target.
        for (let restarts = 1; ; restarts++) {
          await runOnce();
          if (restarts > 20) throw ApplicationFailure.nonRetryable('the apply keeps stopping on its own; giving up', 'ReplicationError');
          state.notices.push('the apply stopped unexpectedly and was restarted');
        }
      })
      .catch((e: unknown) => {
        // Bounded runs go back to SYNCING_WAL after FINALIZING stopped the apply: an apply that ended
        // after we cancelled it (timed out with its lost worker) must not fail the next sync.
        if (!wf.isCancellation(e) && !(boundedStop && scope.consideredCancelled)) applyError = e;
      });
  }

  /** Advisory: compares while writes go on; its verdict goes to the status, never fails the migration. */
  function startLiveValidation(): void {
    const p = plan!;
    const scope = new wf.CancellationScope();
    liveScope = scope;
    void scope
      .run(() =>
        live.validateLive.executeWithOptions({ ...liveOpts, summary: 'live comparison while the source is writing' }, [
          {
            source: p.spec.source,
            target: p.spec.target,
            slot,
            ...tablesOr(() => ({ tables: defs.map((d) => ({ source: d.source, target: d.target, keyColumns: d.keyColumns, copyColumns: d.copyColumns })) })),
            ...(planRef ? { track: TABLES_PAGE } : {}),
            parallelism: 2,
            chunkRows: p.spec.validation.chunkRows,
          },
        ]),
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
   * The content proof (validate-proof.ts) for as long as the sync lasts; a divergence it confirms
   * fails the migration before anything is fenced. If it cannot run, VALIDATING compares every chunk
   * it did not prove (a longer write stop, never a weaker proof).
   */
  function startProof(): void {
    if (proofScope || proofEnded) return;
    const p = plan!;
    const scope = new wf.CancellationScope();
    proofScope = scope;
    proofStartedAt = Date.now();
    // Carried over from a paused or continued sync: the passes done so far still count.
    state.proof = { pass: 0, passesComplete: 0, tables: tableCount(), chunks: 0, chunksVerified: 0, rowsCovered: 0, ...state.proof, state: (state.proof?.passesComplete ?? 0) > 0 ? 'ready' : 'running' };
    // Cleanup waits for a cancelled proof to have stopped: one still writing its chunks would keep
    // pgdts.proof_chunks on the target after a cancel. Runs recorded before keep TRY_CANCEL.
    const waitCancel = wf.patched('proof-wait-cancel');
    const run = scope
      .run(() =>
        proof.proveLive.executeWithOptions({ ...proofOpts, ...(waitCancel ? { cancellationType: ActivityCancellationType.WAIT_CANCELLATION_COMPLETED } : {}), summary: 'content proof: chunk checksums while the source is writing' }, [
          {
            source: p.spec.source,
            target: p.spec.target,
            slot,
            ...tablesOr(() => ({ tables: defs.map((d) => ({ source: d.source, target: d.target, keyColumns: d.keyColumns, copyColumns: d.copyColumns })) })),
            parallelism: Math.max(1, Math.min(2, p.spec.parallelism)),
            chunkRows: p.spec.validation.chunkRows,
          },
        ]),
      )
      .then(
        (r) => {
          proofEnded = true;
          state.proof = { ...r.progress, state: r.divergence ? 'diverged' : 'ready' };
          if (r.divergence?.length && repairOn()) {
            // Rewritten at VALIDATING, with the source fenced: the diverged chunks are left unverified,
            // so the cutover's check compares them again and names their rows.
            const text = r.divergenceText ?? r.divergence.map((c) => c.source).join(', ');
            state.notices.push(
              `the content proof found rows that differ on the target during SYNCING_WAL; validation.repair rewrites them from the source in the fenced window:\n${text.length > 2000 ? `${text.slice(0, 2000)}…` : text}`,
            );
          } else if (r.divergence?.length) {
            counts = r.divergence;
            state.validation = r.divergence.map((c) => ({ source: c.source, countsMatch: c.countsMatch, sample: c.sample, checksum: c.checksum, mismatches: c.mismatches.length }));
            for (const c of r.divergence) {
              const ts = state.tables.find((t) => t.source === c.source);
              if (ts) ts.state = 'failed';
            }
            proofFailure = `validation failed (found by the content proof during SYNCING_WAL, before any write stop):\n${r.divergenceText ?? r.divergence.map((c) => c.source).join(', ')}`;
          }
        },
        (e) => {
          // Stopped by us (the cutover, a pause, cleanup): waited for since proof-wait-cancel, its end
          // can come back as the activity's own "CANCELLED" failure, not a cancellation. Not a failure
          // of the proof: a later SYNCING_WAL (an abandoned cutover) starts it again.
          if (wf.isCancellation(e) || (waitCancel && scope.consideredCancelled)) return;
          proofEnded = true;
          if (state.proof) state.proof.state = 'stopped';
          state.notices.push(`the content proof stopped during SYNCING_WAL (${errorMessage(e)}); VALIDATING compares every chunk it did not prove`);
        },
      )
      .finally(() => {
        if (proofScope === scope) proofScope = undefined;
        proofLiveMs += Date.now() - proofStartedAt!;
      });
    if (waitCancel) proofStopped = run;
  }

  /**
   * Runs beside the sync; its failure only costs the cutover the old path (fenceSource creates the
   * triggers that are missing inside the write stop). Runs recorded before it never install.
   */
  function startFenceInstall(): void {
    if (installScope || !wf.patched('fence-preinstall')) return;
    // Installed triggers are ours to remove whatever happens next (pass-through ones are harmless).
    fenceSet = true;
    installSettled = false;
    const scope = new wf.CancellationScope();
    installScope = scope;
    installDone = scope
      .run(() =>
        wait.installFence.executeWithOptions(
          { ...waitOpts, startToCloseTimeout: '24 hours', cancellationType: ActivityCancellationType.WAIT_CANCELLATION_COMPLETED, summary: `install the fence triggers on ${tableCount()} source tables (pass-through until the cutover)` },
          [fenceInput()],
        ),
      )
      .then(
        () => undefined,
        (e) => {
          if (!wf.isCancellation(e)) wf.log.warn('the fence triggers could not be installed in advance; the cutover creates them', { error: errorMessage(e) });
        },
      )
      .finally(() => {
        installSettled = true;
      });
  }

  /** Waits for the installation to have stopped: its CREATE TRIGGERs must not race the fence or its removal. */
  async function stopFenceInstall(): Promise<void> {
    installScope?.cancel();
    installScope = undefined;
    if (installDone) await installDone;
    installDone = undefined;
  }

  function stopProof(): void {
    proofScope?.cancel();
    proofScope = undefined;
  }

  /** The proof's totals, from VALIDATING's per-table results. */
  const proofReport = (): ProofReport => {
    const r: ProofReport = { enabled: plan?.spec.validation.checksum ?? false, chunks: 0, verifiedBeforeCutover: 0, reverifiedAtCutover: 0, rowsCovered: 0 };
    for (const c of counts) {
      if (!c.proof) continue;
      r.chunks += c.proof.chunks;
      r.verifiedBeforeCutover += c.proof.verifiedBeforeCutover;
      r.reverifiedAtCutover += c.proof.reverifiedAtCutover;
      r.rowsCovered += c.proof.rows;
    }
    if (proofUsed) {
      r.livePasses = state.proof?.passesComplete ?? 0;
      r.liveMs = proofLiveMs;
      // Ended before VALIDATING (a divergence, a cancel): what the live proof had verified by then.
      if (validatingMs === undefined && state.proof) Object.assign(r, { chunks: state.proof.chunks, verifiedBeforeCutover: state.proof.chunksVerified, rowsCovered: state.proof.rowsCovered });
    }
    if (validatingMs !== undefined) r.validatingMs = validatingMs;
    return r;
  };

  /** Watches the slot's retained WAL from before its creation until FINALIZING drops it (spec.wal). */
  function startWalWatch(): void {
    if (walScope || !wf.patched('wal-budget')) return;
    const p = plan!;
    const scope = new wf.CancellationScope();
    walScope = scope;
    void scope
      .run(() => walWatch.watchSlotWal.executeWithOptions({ ...walOpts, summary: `watch the WAL slot ${slot} retains` }, [{ source: p.spec.source, slot, ...(p.spec.wal ?? {}) }]))
      .catch((e: unknown) => {
        if (wf.isCancellation(e)) return;
        walError = e;
        main.cancel();
      });
  }

  async function stopApply(): Promise<void> {
    applyScope?.cancel();
    await applyDone;
    applyScope = undefined;
  }

  /** Waits until the apply has committed the fence's marker where it writes (its progress row), or fails with it. */
  async function awaitFencePassed(input: Parameters<Activities['awaitFenceApplied']>[0], fenceLsn: string, opts: ActivityOptions): Promise<void> {
    const waiting = wait.awaitFenceApplied.executeWithOptions({ ...opts, summary: `wait for the apply to pass ${fenceLsn}` }, [input]);
    let passed = false;
    // Either outcome ends the wait; `await waiting` then returns or rethrows.
    void waiting.then(
      () => void (passed = true),
      () => void (passed = true),
    );
    await untilOrApplyFails(() => passed || fenceToken === input.token);
    await waiting;
  }

  /** Waits for `fn`, but fails as soon as the apply fails: nothing else would notice. */
  async function untilOrApplyFails(fn: () => boolean): Promise<void> {
    await wf.condition(() => fn() || applyError !== undefined);
    if (applyError !== undefined) throw applyError;
  }

  /** The plan kept on the target goes with the migration (its rows only: other migrations may share the tables). */
  const forgetPlan = (p: MigrationPlan) => step('forgetPlan', 'forget the plan kept on the target', { target: p.spec.target, migrationId });

  const report = (phase: Phase, error?: string): MigrationReport => {
    // By reference the page of tables, plus every table validation failed (bounded by the activity).
    const listed = planRef ? [...state.tables, ...counts.filter((c) => (!c.ok || c.repair) && !state.tables.some((t) => t.source === c.source)).map((c) => ({ source: c.source, target: c.target, rowsCopied: 0 }))] : state.tables;
    const tables: TableReport[] = listed.map((t) => {
      const c = counts.find((x) => x.source === t.source);
      return {
        source: t.source,
        target: t.target,
        sourceRows: c?.sourceRows ?? -1,
        targetRows: c?.targetRows ?? t.rowsCopied,
        countsMatch: c?.countsMatch ?? false,
        copyDurationMs: copyMs.get(t.source),
        sample: c?.sample ?? 'not-run',
        checksum: c?.checksum ?? 'not-run',
        ...(c && c.mismatches.length ? { mismatches: c.mismatches, mismatchesTruncated: c.mismatchesTruncated } : {}),
        ...(c && c.mismatchedChunks.length ? { mismatchedChunks: c.mismatchedChunks } : {}),
        ...(c?.error ? { validationError: c.error } : {}),
        ...(c?.proof ? { proof: c.proof } : {}),
        ...(c?.repair ? { repair: c.repair } : {}),
      };
    });
    const finishedAt = Date.now();
    return {
      migrationId,
      phase,
      mode: state.mode,
      tables,
      ...(planRef ? { tablesTotal: progress.tablesTotal } : {}),
      sequences,
      startedAt: new Date(startedAt).toISOString(),
      finishedAt: new Date(finishedAt).toISOString(),
      durationMs: finishedAt - startedAt,
      cutoverWindowMs: state.cutover?.windowMs,
      ...(progress.copyResumes ? { copyResumes: { copyResumes: progress.copyResumes, unitsKept: progress.unitsKept ?? 0, unitsCopiedTwice: progress.unitsCopiedTwice ?? 0 } } : {}),
      ...(plan && (validatingMs !== undefined || proofUsed) ? { proof: proofReport() } : {}),
      ...(repaired ? { repair: repaired } : {}),
      ...(objects ? { objects: { created: objects.created, skipped: objects.skipped, ...(objects.rewritten?.length ? { rewritten: objects.rewritten } : {}) } } : {}),
      ...(state.fallback ? { fallback: state.fallback } : {}),
      notices: state.notices,
      error,
    };
  };

  async function run(): Promise<void> {
    if (continued?.fallback) {
      // Cut over already: straight back to FALLBACK_READY, the reverse apply resuming from the source's progress row.
      boundedStop = true;
      await fallback(plan!);
      if (!continueAsNew && planRef) await forgetPlan(plan!);
      return;
    }
    if (!continued) await prepare();
    else if (plan!.spec.mode === 'online') startWalWatch();
    const online = plan!.spec.mode === 'online';
    if (online && wf.patched('bounded-write-stop')) {
      boundedStop = true;
      for (;;) {
        await syncWal();
        if (continueAsNew) return;
        const abandoned = (await cutoverWithinBound()) ?? (await finalize(online));
        if (abandoned === undefined) return;
        await abandonCutover(abandoned);
      }
    }
    if (online) {
      await syncWal();
      if (continueAsNew) return;
      await stopWrites();
    }
    await validate();
    await finalize(online);
  }

  async function prepare(): Promise<void> {
    // ── INIT ──
    setPhase('INIT', 'preflight checks');
    // A password in the input while this worker stores payloads unencrypted: every activity would store
    // it again in plain text (one table put 7 copies in history). Refuse before the first one.
    if (specCarriesPassword(spec) && wf.patched('refuse-unencrypted-password') && !(await local.payloadEncryption()).encrypted) {
      throw ApplicationFailure.create({
        message:
          'the spec carries a password and this worker stores payloads unencrypted (PG_DTS_CODEC_KEY is not set): refused before it is stored again. ' +
          'Set PG_DTS_CODEC_KEY on the workers and the client, or leave the password out and let the workers resolve it (PGPASSWORD, ~/.pgpass, PGPASSFILE)',
        type: 'SpecError',
        nonRetryable: true,
      });
    }
    // Created paused (the REST API's create, `dts start --paused`): not even the read-only preflight
    // connects before the start.
    if (state.paused && wf.patched('pause-before-preflight')) {
      wf.setCurrentDetails('**INIT** (created paused: nothing runs until resume)');
      await pauseGate();
      wf.setCurrentDetails('**INIT**\n\npreflight checks');
    }
    // The plan goes to the target and only its first page of tables comes back (runs recorded before
    // this kept the whole plan in history).
    const byRef = wf.patched('plan-in-target');
    plan = await quick.preflight.executeWithOptions(
      { ...quickOpts, summary: 'preflight checks', retry: { ...quickOpts.retry, maximumAttempts: 3 } },
      byRef ? [spec, { migrationId, track: TABLES_PAGE }] : [spec],
    );
    if (byRef) {
      planRef = { target: plan.spec.target, migrationId };
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
    const online = plan.spec.mode === 'online';
    keysAfterCutover = online && plan.applyReplicaRole === false && wf.patched('keys-after-cutover');

    // ── CREATING_TABLES ──
    await pauseGate();
    const tableCount = plan.tableCount ?? plan.tables.length;
    setPhase('CREATING_TABLES', `${plan.sourceDescription} → ${plan.targetDescription}, ${tableCount} tables`);
    tablesCreated = true;
    if (wf.patched('target-marks')) marks = migrationId;
    let foreignKeys = false;
    if (planRef) {
      const created = await schema.createPlannedTables.executeWithOptions({ ...schemaOptsNow(), summary: `create ${tableCount} target tables` }, [
        { spec: plan.spec, plan: planRef, ...(marks ? { migrationId: marks } : {}) },
      ]);
      state.notices.push(...created.warnings, ...(created.warningsLeftOut ? [`${created.warningsLeftOut} more warnings about the tables' definitions`] : []));
      foreignKeys = created.foreignKeys;
    } else {
      defs = await schema.createTargetTables.executeWithOptions({ ...schemaOptsNow(), summary: `create ${plan.tables.length} target tables` }, [
        { spec: plan.spec, tables: plan.tables, ...(marks ? { migrationId: marks } : {}) },
      ]);
      for (const d of defs) state.notices.push(...(d.warnings ?? []));
    }
    if (online) {
      if (plan.replicaIdentityFull.length) {
        replicaIdentityChanged = true;
        await step('setReplicaIdentity', 'set REPLICA IDENTITY FULL', { source: plan.spec.source, tables: plan.replicaIdentityFull.map((r) => ({ table: r.table, identity: 'full' as const })) });
      }
      replicationCreated = true;
      await step('createPublication', `create publication ${publication}`, { source: plan.spec.source, publication, ...tablesOr(() => ({ tables: defs.map((d) => d.source) })) });
      startWalWatch();
    }
    if (planRef) {
      await migrateByReference(plan, foreignKeys);
      return;
    }

    // ── MIGRATING_DATA ──
    await pauseGate();
    setPhase('MIGRATING_DATA', `copying ${defs.length} tables, ${plan.spec.parallelism} at a time`);
    if (wf.patched('ranged-copies')) {
      const split = plan.spec.copy;
      const plans = await step('planCopies', 'measure tables, split the large ones into page ranges', {
        source: plan.spec.source,
        tables: defs.map((d) => d.source),
        splitAboveBytes: split?.splitAboveBytes,
        rangeBytes: split?.rangeBytes,
        minRanges: plan.spec.parallelism,
      });
      copyPlans = new Map(defs.map((d, i) => [tableKey(d), plans[i]!]));
    }
    perTablePostLoad = wf.patched('post-load-per-table');
    if (online) await copyInSnapshot((snap) => copyAll(snap.snapshotName));
    else await copyAll();
    const rangedTargets = defs.filter((d) => copyPlans?.get(tableKey(d))?.ranges).map((d) => d.target);
    if (rangedTargets.length) await step('forgetCopyProgress', 'forget the range copy records', { target: plan.spec.target, tables: rangedTargets });
    if (perTablePostLoad) {
      // Every table is finished: the foreign keys between them (both ends must be there).
      if (defs.some((d) => (d.postLoadSteps ?? []).some((st) => st.kind === 'foreign-key') || (d.foreignKeys?.length ?? 0) > 0)) {
        if (keysAfterCutover) foreignKeysPending = true;
        else {
          const finished = await schema.finishTargetTables.executeWithOptions({ ...schemaOptsNow(), summary: 'create foreign keys' }, [
            { target: plan.spec.target, defs, parallelism: plan.spec.parallelism, part: 'foreign-keys' },
          ]);
          state.notices.push(...finished.skipped);
        }
      }
      return;
    }
    for (const t of state.tables) t.state = 'indexing';
    const finished = await schema.finishTargetTables.executeWithOptions({ ...schemaOptsNow(), summary: 'create indexes and constraints, analyze' }, [
      { target: plan.spec.target, defs, parallelism: plan.spec.parallelism },
    ]);
    state.notices.push(...finished.skipped);
  }

  /** MIGRATING_DATA with the plan kept on the target: batches of units, then the foreign keys. */
  async function migrateByReference(p: MigrationPlan, foreignKeys: boolean): Promise<void> {
    const ref = planRef!;
    await pauseGate();
    setPhase('MIGRATING_DATA', `copying ${progress.tablesTotal} tables, ${p.spec.parallelism} at a time`);
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
    // Online runs since 'resume-copy': a lost snapshot costs only the units in flight.
    const rounds = p.spec.mode === 'online' && wf.patched('resume-copy') ? newCopyRounds() : undefined;
    const copyRound = (snapshot?: string, at?: { lsn: string; resumed: boolean }) => {
      Object.assign(round, { snapshot, running: new Map(), live: new Map(), doneRows: new Map(), rate: new Map(), landed: false });
      return copyBatches(
        {
          batches: batches.batches,
          ranged,
          parallelism: p.spec.parallelism,
          state,
          progress,
          track: TABLES_PAGE,
          copyMs,
          inFlight: copiesInFlight,
          paused: pausedCopies,
          main,
          round,
          pauseGate,
          rounds,
          prepareRanged: (ords, snap, snapshotLsn) =>
            step('prepareRangedCopies', `empty ${ords.length} tables copied in ranges`, {
              target: p.spec.target,
              plan: ref,
              ords,
              snapshot: snap,
              ...(snapshotLsn !== undefined ? { snapshotLsn } : {}),
              ...(marks ? { migrationId: marks } : {}),
            }),
          copyBatch: (input) =>
            copy.copyTableBatch.executeWithOptions({ ...batchOpts, summary: `copy batch ${input.batch + 1}/${batches.batches}` }, [
              {
                source: p.spec.source,
                target: p.spec.target,
                plan: ref,
                ...input,
                ...(marks ? { migrationId: marks } : {}),
                ...(p.spec.copy?.maxLockWaitSeconds ? { maxLockWaitSeconds: p.spec.copy.maxLockWaitSeconds } : {}),
              },
            ]),
          finish: async (what) => {
            const finished = await schema.finishTargetTables.executeWithOptions(
              { ...schemaOptsNow(), allowEagerDispatch: false, summary: 'batch' in what ? `indexes, constraints and ANALYZE of batch ${what.batch + 1}` : `indexes, constraints and ANALYZE of ${what.ords.length} ranged tables` },
              [{ target: p.spec.target, plan: ref, ...what, parallelism: 1, part: 'tables' }],
            );
            state.notices.push(...finished.skipped);
          },
        },
        snapshot,
        at,
      );
    };
    if (p.spec.mode === 'online') await copyInSnapshot((snap, resumed) => copyRound(snap.snapshotName, rounds ? { lsn: snap.consistentPoint, resumed } : undefined), { resume: rounds !== undefined });
    else await copyRound();
    if (foreignKeys && keysAfterCutover) foreignKeysPending = true;
    else if (foreignKeys) {
      const finished = await schema.finishTargetTables.executeWithOptions({ ...schemaOptsNow(), summary: 'create foreign keys' }, [
        { target: p.spec.target, plan: ref, parallelism: p.spec.parallelism, part: 'foreign-keys' },
      ]);
      state.notices.push(...finished.skipped);
    }
  }

  async function syncWal(): Promise<void> {
    const p = plan!;
    // ── SYNCING_WAL ──
    await pauseGate();
    setPhase('SYNCING_WAL', p.spec.cutover.mode === 'manual' ? 'waiting for the cutover signal' : 'cutting over once the lag is small');
    for (const t of state.tables) t.state = 'syncing';
    startFenceInstall();
    if (p.spec.validation.live && !continued && !liveScope) startLiveValidation();
    proofUsed = p.spec.validation.checksum && wf.patched('live-proof');
    for (;;) {
      // Auto cutover needs a fresh report from this run of the apply, not one from before a pause.
      const since = state.replication?.updatedAt;
      const cutoverDue = () =>
        p.spec.cutover.mode === 'manual'
          ? cutoverRequested
          : !retryWait && state.replication !== undefined && state.replication.updatedAt !== since && state.replication.lagBytes <= p.spec.cutover.maxLagBytes;
      // Back from an abandoned cutover attempt, the apply may still be running.
      if (!applyScope) startApply();
      if (proofUsed) startProof();
      // With the proof on, the cutover waits for its first full pass: chunks it has not verified would
      // be compared inside the write stop.
      const proofReady = () => !proofUsed || proofEnded || (state.proof?.passesComplete ?? 0) > 0;
      if (wants(p.spec.notify, 'ready-for-cutover') && !readyAlerted) {
        const lagSmall = () => state.replication !== undefined && state.replication.updatedAt !== since && state.replication.lagBytes <= p.spec.cutover.maxLagBytes;
        readyAlerted = true;
        void wf.condition(() => state.phase !== 'SYNCING_WAL' || (lagSmall() && proofReady())).then(() => {
          if (state.phase !== 'SYNCING_WAL') return undefined;
          const how = p.spec.cutover.mode === 'manual' ? 'send the cutover signal (dts cutover)' : 'the cutover starts now';
          return alert('ready-for-cutover', `ready for cutover: lag ${state.replication?.lagBytes ?? 0} bytes; ${how}`, { lagBytes: state.replication?.lagBytes, lagSeconds: state.replication?.lagSeconds });
        }, () => undefined);
      }
      // Likewise for the fence's installation in auto mode: a cutover before it ends creates the
      // triggers in the write stop. A manual cutover goes when asked: an application transaction that
      // holds a table's lock keeps the installation waiting as long as it lasts, and the user decides.
      const fenceReady = () => installDone === undefined || installSettled || (p.spec.cutover.mode === 'manual' && cutoverRequested);
      await untilOrApplyFails(() => state.paused || (cutoverDue() && proofReady() && fenceReady()) || historyFull(p) || proofFailure !== undefined);
      if (proofFailure !== undefined) throw ApplicationFailure.nonRetryable(proofFailure, 'ValidationError');
      if (!state.paused && cutoverDue()) {
        if (p.spec.cutover.mode === 'manual') {
          // Drain the backlog before fencing, so that writes stop only for the last changes: up to
          // 5 minutes, then fence anyway (the apply still has to pass the fence before VALIDATING).
          wf.setCurrentDetails('**SYNCING_WAL**\n\ncutover requested: waiting for the lag to be small before stopping writes');
          // Bounded: a report from after the signal, i.e. an apply that runs now (one lost with its
          // worker is retried only after its heartbeat timeout, longer than the write-stop bound).
          const reportedBefore = state.replication?.updatedAt;
          await wf.condition(
            () =>
              applyError !== undefined ||
              (state.replication !== undefined && (!boundedStop || state.replication.updatedAt !== reportedBefore) && state.replication.lagBytes <= p.spec.cutover.maxLagBytes),
            '5 minutes',
          );
          if (applyError !== undefined) throw applyError;
        }
        return;
      }
      // Paused, or this run's history is long: either way the apply stops here; the slot keeps the WAL
      // and the next apply resumes from the position recorded on the target.
      stopProof();
      await stopApply();
      if (!state.paused) {
        if (installDone) await stopFenceInstall();
        continueAsNew = {
          plan: p,
          defs,
          state,
          startedAt,
          copyMs: [...copyMs],
          cutoverRequested: false,
          ...(marks ? { marks } : {}),
          ...(planRef ? { planRef } : {}),
          ...(foreignKeysPending ? { foreignKeysPending } : {}),
          ...(readyAlerted ? { readyAlerted } : {}),
        };
        return;
      }
      wf.setCurrentDetails('**SYNCING_WAL** (paused: the apply is stopped, the slot retains WAL)');
      await pauseGate();
      wf.setCurrentDetails('**SYNCING_WAL**');
    }
  }

  async function stopWrites(): Promise<void> {
    const p = plan!;
    liveScope?.cancel();
    stopProof();
    // Guarded: an await here, even of nothing, would reorder the commands of recorded histories.
    if (installDone) await stopFenceInstall();
    // ── STOPPING_WRITES ──
    setPhase('STOPPING_WRITES', 'fencing source writes');
    fenceSet = true;
    fenceDeadline = undefined;
    // Not cancellable: a fence committed after cleanup had looked for it would stay forever. A cancel
    // that arrived meanwhile takes effect right after, and cleanup lifts the fence.
    // Bounded: retried only within the write-stop bound (a fence a lost attempt committed releases itself).
    const fence = await wf.CancellationScope.nonCancellable(() =>
      boundedStop
        ? quick.fenceSource.executeWithOptions(
            { ...fenceOpts, scheduleToCloseTimeout: `${writeStopBound()} seconds`, heartbeatTimeout: fencedHeartbeat, summary: `fence ${tableCount()} source tables for at most ${writeStopBound()} s` },
            [{ ...fenceInput(), maxWriteStopSeconds: writeStopBound() }],
          )
        : quick.fenceSource.executeWithOptions({ ...fenceOpts, summary: `fence ${tableCount()} source tables` }, [fenceInput()]),
    );
    if (main.consideredCancelled) throw new wf.CancelledFailure('cancelled while fencing');
    fencedAt = fence.fencedAt;
    fenceDeadline = fence.deadline;
    state.cutover = { ...state.cutover, requested: cutoverRequested, fencedAt: fence.fencedAt, fenceLsn: fence.fenceLsn, deadline: fence.deadline, windowMs: undefined };
    const fenced = (o: ActivityOptions): ActivityOptions => (boundedStop ? { ...o, heartbeatTimeout: fencedHeartbeat } : o);
    await awaitFencePassed({ target: p.spec.target, slot, token: fence.token }, fence.fenceLsn, fenced(waitOpts));
    const sequenceInput = { source: p.spec.source, target: p.spec.target, ...tablesOr(() => ({ sequences: sequencesOf(defs) })) };
    sequences = boundedStop
      ? await quick.syncSequences.executeWithOptions({ ...fenced(quickOpts), summary: 'set target sequences to the source values' }, [sequenceInput])
      : await step('syncSequences', 'set target sequences to the source values', sequenceInput);
  }

  async function validate(): Promise<void> {
    const p = plan!;
    // ── VALIDATING ──
    const v = p.spec.validation;
    const levels = ['row counts', v.sampleSize > 0 ? `${v.sampleSize} sampled rows` : '', v.checksum ? (proofUsed ? 'checksums of the chunks changed since the proof' : 'checksums') : ''].filter(Boolean).join(', ');
    setPhase('VALIDATING', `comparing ${levels}`);
    if (!v.checksum && wf.patched('live-proof')) {
      state.proof = { state: 'off', pass: 0, passesComplete: 0, tables: tableCount(), chunks: 0, chunksVerified: 0, rowsCovered: 0 };
      state.notices.push('content proof off (validation.checksum = false): only row counts and sampled rows were compared');
    }
    const validatingStarted = Date.now();
    const opts = boundedStop ? { ...validationOpts, heartbeatTimeout: fencedHeartbeat } : validationOpts;
    const repair = repairOn();
    const validated = await validation.validateMigration.executeWithOptions({ ...opts, summary: `compare ${levels}${repair ? ', repair what differs' : ''}` }, [
      {
        source: p.spec.source,
        target: p.spec.target,
        ...tablesOr(() => ({ tables: defs.map((d) => ({ source: d.source, target: d.target, keyColumns: d.keyColumns, copyColumns: d.copyColumns })) })),
        ...(planRef ? { track: TABLES_PAGE } : {}),
        sampleSize: v.sampleSize,
        checksum: v.checksum,
        chunkRows: v.chunkRows,
        parallelism: p.spec.parallelism,
        ...(proofUsed ? { proofSlot: slot } : {}),
        // Whole schemas migrated: a table created in one since the start is reported.
        ...(p.spec.tables ? {} : { schemas: p.spec.schemas }),
        ...(repair
          ? { repair: { maxRows: v.repairMaxRows ?? 0, limitName: 'validation.repairMaxRows', ...(marks ? { migrationId: marks } : {}), ...(p.applyReplicaRole === false ? { replicaRole: false } : {}) } }
          : {}),
      },
    ]);
    if (validated.repair?.tables) {
      repaired = { tables: validated.repair.tables, rows: validated.repair.rows };
      state.notices.push(`validation.repair rewrote ${validated.repair.rows} row(s) of ${validated.repair.tables} table(s) on the target from the source; every repaired chunk compared again (the report lists them by table)`);
    }
    counts = validated.results;
    validatingMs = Date.now() - validatingStarted;
    if (v.checksum) {
      const r = proofReport();
      state.proof = {
        ...(state.proof ?? { pass: 0, passesComplete: 0 }),
        state: 'validated',
        tables: tableCount(),
        chunks: r.chunks,
        chunksVerified: r.chunks,
        rowsCovered: r.rowsCovered,
        reverifiedAtCutover: r.reverifiedAtCutover,
      };
    }
    state.validation = counts.map((c) => ({
      source: c.source,
      countsMatch: c.countsMatch,
      sample: c.sample,
      checksum: c.checksum,
      mismatches: c.mismatches.length,
      ...(c.error ? { error: c.error } : {}),
      ...(c.repair ? { repaired: c.repair.rows } : {}),
    }));
    for (const c of counts) {
      const ts = state.tables.find((t) => t.source === c.source);
      if (ts) ts.state = c.ok ? 'validated' : 'failed';
    }
    if (validated.failure) throw ApplicationFailure.nonRetryable(`validation failed:\n${validated.failure}`, 'ValidationError');
  }

  /** Returns why the cutover was abandoned when its bounded fence did not hold to the end. */
  async function finalize(online: boolean): Promise<string | undefined> {
    const p = plan!;
    // ── FINALIZING ──
    setPhase('FINALIZING', 'stopping the apply, dropping the slot and publication, releasing writes');
    if (online && boundedStop) {
      // The apply stops before writes are released: later source writes belong to no migration.
      await stopApply();
      const reverse = p.spec.afterCutover === 'reverse';
      // Before the application can write the target: from this slot on, every change there flows back.
      if (reverse) await createReverse(p);
      const keepReadOnly = p.spec.afterCutover === 'keep-source-read-only' || reverse;
      const committed = await quick.commitCutover.executeWithOptions(
        {
          ...quickOpts,
          heartbeatTimeout: fencedHeartbeat,
          summary: reverse ? 'check the fence held, keep it against all but the reverse apply' : keepReadOnly ? 'check the fence held, keep it' : 'check the fence held, release source writes',
        },
        [{ ...fenceInput(), deadline: fenceDeadline!, keepReadOnly, ...(reverse ? { allowReplica: true } : {}) }],
      );
      if (!committed.held) {
        if (reverse) await wf.CancellationScope.nonCancellable(() => dropReverse(p));
        return committed.reason ?? 'the fence did not hold';
      }
      cutOver = true;
      walScope?.cancel();
      if (reverse) state.notices.push("the source tables stay fenced against the application's writes while the target's changes flow back to them (afterCutover = reverse)");
      else if (keepReadOnly) state.notices.push('the source tables stay read-only (afterCutover = keep-source-read-only)');
      else {
        state.cutover = { ...state.cutover!, windowMs: Date.parse(committed.liftedAt!) - Date.parse(fencedAt!) };
        if (committed.pending) await fenceRemoval.removeFence.executeWithOptions({ ...fenceRemovalOpts, summary: 'drop the released fence triggers' }, [fenceInput()]);
        fenceSet = false;
      }
      await step('dropReplication', `drop slot and publication ${slot}`, { source: p.spec.source, target: p.spec.target, slot, publication });
      replicationCreated = false;
      await restoreReplicaIdentity();
    } else if (online) {
      // The apply stops before writes are released: later source writes belong to no migration.
      await stopApply();
      cutOver = true;
      if (p.spec.afterCutover === 'restore-writes') {
        const lifted = await step('liftFence', 'release source writes', fenceInput());
        state.cutover = { ...state.cutover!, windowMs: Date.parse(lifted.liftedAt) - Date.parse(fencedAt!) };
        if (lifted.pending) await fenceRemoval.removeFence.executeWithOptions({ ...fenceRemovalOpts, summary: 'drop the released fence triggers' }, [fenceInput()]);
        fenceSet = false;
      } else {
        state.notices.push('the source tables stay read-only (afterCutover = keep-source-read-only)');
      }
      await step('dropReplication', `drop slot and publication ${slot}`, { source: p.spec.source, target: p.spec.target, slot, publication });
      replicationCreated = false;
      await restoreReplicaIdentity();
    }
    if (foreignKeysPending) {
      // The apply has stopped: nothing replicated can trip them, and their checks fire from now on.
      const finished = await schema.finishTargetTables.executeWithOptions({ ...schemaOptsNow(), summary: 'create foreign keys (NOT VALID, then VALIDATE)' }, [
        { target: p.spec.target, ...tablesOr(() => ({ defs })), parallelism: p.spec.parallelism, part: 'foreign-keys', notValidFirst: true },
      ]);
      state.notices.push(...finished.skipped);
      foreignKeysPending = false;
    }
    // spec.owners exists only in runs started after it: the same commands as before for recorded runs.
    if (p.spec.objects || p.spec.owners) {
      // After the cutover, outside the write-stop window; one object that cannot be created is reported,
      // never a reason to fail a migration whose data is already across. Owners move only now, once the
      // apply (which writes as the migration role) has stopped.
      try {
        objects = await schema.createSchemaObjects.executeWithOptions({ ...schemaOptsNow(), summary: p.spec.objects ? 'create views, functions and triggers' : 'carry owners and grants' }, [
          {
            source: p.spec.source,
            target: p.spec.target,
            schemas: p.spec.schemas,
            ...tablesOr(() => ({ tables: defs.map((d) => ({ source: d.source, target: d.target })) })),
            schemaMapping: p.spec.schemaMapping,
            tableSuffix: p.spec.tableSuffix,
            ...(p.spec.owners !== undefined ? { owners: p.spec.owners } : {}),
            ...(marks ? { migrationId: marks } : {}),
            ...(p.spec.objects ? {} : { objects: false }),
          },
        ]);
        state.notices.push(...objects.notices, ...objects.skipped.map((x) => `${x.object} was not created: ${x.reason}`));
      } catch (e) {
        if (wf.isCancellation(e)) throw e;
        state.notices.push(`views, functions and triggers were not created: ${errorMessage(e)}`);
      }
    }
    if (online && boundedStop && p.spec.afterCutover === 'reverse') {
      await fallback(p);
      if (continueAsNew) return undefined;
    }
    if (planRef) await forgetPlan(p);
    return undefined;
  }

  // ── FALLBACK_READY (afterCutover "reverse") ──

  const reverseDrop = (p: MigrationPlan) => ({ source: p.spec.target, target: p.spec.source, slot: reverseSlot, publication: reverseSlot });
  /** The rollback's fence, on the target's tables (and their partitions). */
  const targetFenceInput = () => ({ source: plan!.spec.target, migrationId: reverseId, ...tablesOr(() => ({ tables: reverseFenceTables(defs) })), reverse: true });

  async function createReverse(p: MigrationPlan): Promise<void> {
    reverseCreated = true;
    const r = await step('createReverseReplication', `create slot and publication ${reverseSlot} on the target`, {
      target: p.spec.target,
      slot: reverseSlot,
      ...tablesOr(() => ({ tables: targetTables(defs) })),
    });
    state.notices.push(...r.replicaIdentityFull.map((t) => `target table ${t} had no replica identity: REPLICA IDENTITY FULL was set so that its changes can flow back to the source`));
  }

  async function dropReverse(p: MigrationPlan): Promise<void> {
    await step('dropReplication', `drop the reverse slot and publication ${reverseSlot}`, reverseDrop(p));
    reverseCreated = false;
  }

  /**
   * The target's changes flow back to the still-fenced source until `commit` or `rollback`. Pause
   * stops the reverse apply (the target's slot keeps the WAL); a long phase continues as new.
   */
  async function fallback(p: MigrationPlan): Promise<void> {
    setPhase('FALLBACK_READY', "the target's changes flow back to the source: signal commit to stay on the target, rollback to move back");
    state.fallback = { slot: reverseSlot, fallbackReadyAt: state.fallback?.fallbackReadyAt ?? new Date().toISOString(), ...(state.fallback?.decision ? { decision: state.fallback.decision } : {}) };
    if (streamingSlot !== reverseSlot) {
      streamingSlot = reverseSlot;
      state.replication = undefined;
    }
    const decided = () => state.fallback?.decision !== undefined;
    for (;;) {
      if (!state.paused && !applyScope) startApply(true);
      await untilOrApplyFails(() => state.paused || decided() || historyFull(p));
      if (decided()) break;
      await stopApply();
      if (!state.paused) {
        continueAsNew = { plan: p, defs, state, startedAt, copyMs: [...copyMs], cutoverRequested: false, fallback: true, ...(marks ? { marks } : {}), ...(planRef ? { planRef } : {}) };
        return;
      }
      wf.setCurrentDetails('**FALLBACK_READY** (paused: the reverse apply is stopped, the target slot retains WAL)');
      await wf.condition(() => !state.paused || decided());
      wf.setCurrentDetails('**FALLBACK_READY**');
    }
    if (state.fallback!.decision === 'commit') {
      // The old server is abandoned: its fence now stops every write, the reverse apply's included.
      await stopApply();
      await step('hardenFence', 'keep the source fenced for good', { source: p.spec.source, migrationId });
      await dropReverse(p);
      state.notices.push('fallback committed: the reverse replication was dropped; the source tables stay fenced (dts cleanup releases them)');
      return;
    }
    await rollBack(p);
  }

  /** ROLLING_BACK: target fenced, its last writes applied to the source, sequences carried back, source writes released. */
  async function rollBack(p: MigrationPlan): Promise<void> {
    setPhase('ROLLING_BACK', 'fencing the target, applying its last changes to the source, releasing source writes');
    if (state.paused) Object.assign(state, { paused: false, lastControl: 'resumed for the rollback: it needs the reverse apply' });
    if (!applyScope) startApply(true);
    targetFenceSet = true;
    // Not cancellable, as STOPPING_WRITES' fence: one committed after cleanup had looked would stay.
    const fence = await wf.CancellationScope.nonCancellable(() =>
      quick.fenceSource.executeWithOptions({ ...fenceOpts, summary: `fence ${tableCount()} target tables` }, [targetFenceInput()]),
    );
    if (main.consideredCancelled) throw new wf.CancelledFailure('cancelled while fencing the target');
    await awaitFencePassed({ target: p.spec.source, slot: reverseSlot, token: fence.token }, fence.fenceLsn, waitOpts);
    await stopApply();
    const seqs = await step('syncSequences', 'set source sequences to the target values', {
      source: p.spec.target,
      target: p.spec.source,
      ...tablesOr(() => ({ sequences: reverseSequencesOf(defs) })),
      reverse: true,
    });
    state.fallback = { ...state.fallback!, sequences: seqs };
    const lifted = await step('liftFence', 'release source writes (rolled back)', fenceInput());
    if (lifted.pending) await fenceRemoval.removeFence.executeWithOptions({ ...fenceRemovalOpts, summary: 'drop the released fence triggers' }, [fenceInput()]);
    fenceSet = false;
    await dropReverse(p);
    // The target stays fenced: the application is back on the source, a write to the target would be lost.
    state.notices.push(`rolled back: the source holds every write made on the target and takes writes again; the target tables stay fenced (dts cleanup ${reverseId} --source <target> releases them)`);
    rolledBack = true;
  }

  /**
   * STOPPING_WRITES and VALIDATING within cutover.maxWriteStopSeconds. The fence lets writes through
   * by itself at its deadline, with or without a worker; this timer only makes the workflow notice
   * (when a worker runs it again), stop the cutover's steps and go back to SYNCING_WAL. Returns why
   * the attempt was abandoned, or undefined when it can go on to FINALIZING.
   */
  async function cutoverWithinBound(): Promise<string | undefined> {
    const bound = writeStopBound();
    const work = new wf.CancellationScope();
    const timer = new wf.CancellationScope();
    let timedOut = false;
    void timer.run(() => wf.sleep(bound * 1000)).then(
      () => {
        timedOut = true;
        work.cancel();
      },
      () => undefined,
    );
    try {
      await work.run(async () => {
        await stopWrites();
        await validate();
      });
      return undefined;
    } catch (e) {
      if (main.consideredCancelled) throw e;
      if (timedOut && wf.isCancellation(e)) return `the cutover did not finish within ${bound} s (cutover.maxWriteStopSeconds) in ${state.phase}`;
      // A step lost with its worker, or one that kept failing (a lock timeout), past its bound.
      if (isTimeout(e)) return `a cutover step timed out in ${state.phase} (${errorMessage(e)})`;
      // A step retried on another worker after the fence had expired saw writes made since: its
      // verdict (a validation mismatch, say) is about a source that was not fenced any more.
      if (fenceDeadline !== undefined) {
        const deadline = fenceDeadline;
        const holds = await wf.CancellationScope.nonCancellable(() => step('fenceHolds', 'is the source still fenced', { source: plan!.spec.source, migrationId, deadline }));
        if (!holds) return `the fence expired at ${deadline} (cutover.maxWriteStopSeconds) before ${state.phase} finished: ${errorMessage(e).replace(/\s+/g, ' ').slice(0, 200)}`;
      }
      throw e;
    } finally {
      timer.cancel();
    }
  }

  /** An abandoned attempt: writes released for good, back to SYNCING_WAL, the reason in the status. */
  async function abandonCutover(reason: string): Promise<void> {
    abandonedAttempts++;
    setPhase('SYNCING_WAL', `${reason}: source writes released`);
    await wf.CancellationScope.nonCancellable(async () => {
      const lifted = await step('liftFence', 'release source writes (cutover abandoned)', fenceInput());
      if (lifted.pending) await fenceRemoval.removeFence.executeWithOptions({ ...fenceRemovalOpts, summary: 'drop the released fence triggers' }, [fenceInput()]);
    });
    fenceSet = false;
    // The abandoned attempt's verdicts were about a source that may have been written meanwhile.
    state.validation = undefined;
    // A commit or rollback sent during its FINALIZING was about a fallback that did not begin.
    state.fallback = undefined;
    const manual = plan!.spec.cutover.mode === 'manual';
    cutoverRequested = false;
    const delay = cutoverRetryDelayMs(abandonedAttempts, writeStopBound());
    state.cutover = {
      requested: false,
      attempts: abandonedAttempts + 1,
      abandoned: reason,
      ...(manual ? {} : { retryAt: new Date(Date.now() + delay).toISOString() }),
    };
    state.notices.push(`cutover attempt ${abandonedAttempts} abandoned: ${reason}; source writes released, ${manual ? 'waiting for a new cutover signal' : `trying again in ${Math.round(delay / 1000)} s`}`);
    if (!manual) {
      retryWait = true;
      void wf.sleep(delay).then(
        () => void (retryWait = false),
        () => undefined,
      );
    }
  }

  /** Leaves nothing behind that hurts the source: no apply, slot, publication or fence. */
  async function cleanup(dropTarget: boolean): Promise<void> {
    if (!plan) return;
    const p = plan;
    const failures: string[] = [];
    // Each step on its own, the fence first: one failing step must not keep the source blocked.
    const attempt = async (what: string, fn: () => Promise<unknown>) => {
      try {
        await fn();
      } catch (e) {
        failures.push(`${what}: ${errorMessage(e)}`);
      }
    };
    stopProof();
    walScope?.cancel();
    await attempt('stop the apply', stopApply);
    // Settles with the activity's end (its cancel reaches it at its next heartbeat, within seconds).
    if (proofStopped) await attempt('stop the content proof', () => proofStopped!);
    await attempt('stop the snapshot holder', stopHolder);
    if (installDone) await attempt('stop the fence installation', stopFenceInstall);
    if (fenceSet && !(cutOver && p.spec.afterCutover === 'keep-source-read-only')) {
      await attempt('release source writes', async () => {
        const lifted = await step('liftFence', 'cleanup: release source writes', fenceInput());
        if (lifted.pending) await fenceRemoval.removeFence.executeWithOptions({ ...fenceRemovalOpts, summary: 'cleanup: drop the released fence triggers' }, [fenceInput()]);
      });
    }
    if (targetFenceSet) {
      await attempt('release target writes', async () => {
        const lifted = await step('liftFence', 'cleanup: release target writes', targetFenceInput());
        if (lifted.pending) await fenceRemoval.removeFence.executeWithOptions({ ...fenceRemovalOpts, summary: 'cleanup: drop the released target fence triggers' }, [targetFenceInput()]);
      });
    }
    if (reverseCreated) await attempt('drop the reverse slot and publication', () => dropReverse(p));
    if (replicationCreated) {
      await attempt('drop the slot and publication', () =>
        step('dropReplication', `cleanup: drop slot and publication ${slot}`, { source: p.spec.source, target: p.spec.target, slot, publication }),
      );
    }
    await attempt('restore replica identities', restoreReplicaIdentity);
    // After the cutover the target is the live database: never drop it then.
    if (dropTarget && tablesCreated && !cutOver) {
      await attempt('drop the target tables', async () => {
        const r = await step('dropTargetTables', 'cleanup: drop the target tables this migration created', {
          target: p.spec.target,
          ...tablesOr(() => ({ tables: p.tables.map((t) => t.target) })),
          ...(marks ? { migrationId: marks } : {}),
        });
        // A number from runs recorded before tables were kept.
        if (typeof r === 'object') state.notices.push(...r.kept.map((k) => `target table not dropped: ${k}`));
      });
    }
    if (planRef) await attempt('forget the plan', () => forgetPlan(p));
    const rangedTargets = defs.filter((d) => copyPlans?.get(tableKey(d))?.ranges).map((d) => d.target);
    if (tablesCreated && rangedTargets.length) {
      await attempt('forget the range copy records', () => step('forgetCopyProgress', 'cleanup: forget the range copy records', { target: p.spec.target, tables: rangedTargets }));
    }
    if (failures.length) {
      state.notices.push(...failures.map((f) => `cleanup incomplete: ${f}`));
      throw ApplicationFailure.nonRetryable(`cleanup incomplete, check the source: ${failures.join('; ')}`, 'CleanupFailed');
    }
  }

  try {
    await main.run(run);
    if (continueAsNew) {
      await wf.condition(wf.allHandlersFinished);
      // Signals handled while this run was winding down: a cancel still cancels, a cutover carries over.
      if (cancelRequested || main.consideredCancelled) throw new wf.CancelledFailure('cancelled before continuing as new');
      continueAsNew.cutoverRequested = cutoverRequested;
      // Memo (source → target, shown by the API and UI) and search attributes carry over to the next run.
      const info = wf.workflowInfo();
      return await wf.makeContinueAsNewFunc<typeof migrationWorkflow>({ memo: info.memo, typedSearchAttributes: info.typedSearchAttributes })(spec, continueAsNew);
    }
    if (rolledBack) {
      setPhase('ROLLED_BACK', 'rolled back to the source');
      return (finalReport = report('ROLLED_BACK'));
    }
    setPhase('COMPLETED', 'migration complete');
    const done = (finalReport = report('COMPLETED'));
    await alert('completed', 'migration completed', { cutoverWindowMs: done.cutoverWindowMs, tables: done.tablesTotal ?? done.tables.length });
    return done;
  } catch (caught) {
    if (caught instanceof wf.ContinueAsNew) throw caught;
    // The WAL watcher stopped the run by cancelling it: a failure with its reason, not a cancel.
    const err = walError ?? caught;
    const cancelled = wf.isCancellation(err);
    const message = cancelled ? undefined : errorMessage(err);
    state.error = message;
    await wf.CancellationScope.nonCancellable(() => cleanup(cancelled && !plan?.spec.keepTargetOnCancel));
    if (foreignKeysPending && !(cancelled && !plan?.spec.keepTargetOnCancel)) {
      state.notices.push('the target tables were left without their foreign keys: they are created at FINALIZING when the target role may not set session_replication_role');
    }
    setPhase(cancelled ? 'CANCELLED' : 'FAILED', message);
    await wf.CancellationScope.nonCancellable(() =>
      cancelled ? alert('cancelled', 'migration cancelled; cleanup done') : alert('failed', `migration failed: ${message}`, { error: message }),
    );
    finalReport = report(cancelled ? 'CANCELLED' : 'FAILED', message);
    if (cancelled) {
      if (cancelRequested) {
        // Runs recorded before the patch ended normally with the report as result (COMPLETED).
        if (!wf.patched('cancel-ends-canceled')) return finalReport;
        // The cancel signal ends the run as Temporal's CANCELED, like `temporal workflow cancel`: only a
        // cancellation the server has recorded may end a run so, and the server refuses a workflow's
        // request to cancel itself; an activity asks as a client would, then the run waits for the
        // request to arrive (its root scope is cancelled then).
        const requested = await step('requestOwnCancellation', 'cancel: end as Temporal CANCELED').then(
          () => true,
          () => false,
        );
        if (!requested) return finalReport;
        await wf.condition(() => false);
      }
      throw err;
    }
    throw ApplicationFailure.create({ message: message!, type: 'MigrationFailed', nonRetryable: true, details: [finalReport] });
  }
}

/** This run's history is long enough to continue as new. */
function historyFull(p: MigrationPlan): boolean {
  const i = wf.workflowInfo();
  return i.continueAsNewSuggested || i.historyLength > (p.spec.historyEventsLimit ?? HISTORY_EVENTS_LIMIT);
}

function hasType(err: unknown, type: string): boolean {
  for (let e = err as { type?: string; cause?: unknown } | undefined; e; e = e.cause as typeof e) {
    if (e.type === type) return true;
  }
  return false;
}

/** A copy could not import the exported snapshot: its holder is gone even if not yet noticed. */
function isSnapshotLost(err: unknown): boolean {
  for (let e = err as { type?: string; cause?: unknown } | undefined; e; e = e.cause as typeof e) {
    if (e.type === 'SnapshotLost') return true;
  }
  return false;
}

/** An activity that timed out (its worker lost) rather than failed. */
function isTimeout(err: unknown): boolean {
  for (let e = err as { name?: string; cause?: unknown } | undefined; e; e = e.cause as typeof e) {
    if (e.name === 'TimeoutFailure') return true;
  }
  return false;
}

function errorMessage(err: unknown): string {
  // ActivityFailure wraps the activity's own error as its cause: that message is the useful one.
  let e = err as { message?: string; cause?: unknown } | undefined;
  while (e && typeof e === 'object' && e.cause && (e as { name?: string }).name === 'ActivityFailure') e = e.cause as typeof e;
  return e?.message ?? String(err);
}

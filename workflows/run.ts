/**
 * One migration run's state, as one typed value handed to every phase (`phase(run)`), and the few
 * helpers every phase uses. `ContinuedSync` is the part a run carries across continue-as-new; the
 * rest is rebuilt from it. Deterministic workflow code.
 */
import * as wf from '@temporalio/workflow';
import type { Activities } from '../activities';
import type { MigrationPlan } from '../activities/preflight';
import type { TableDef } from '../activities/model';
import type { CopyPlan } from '../activities/copy-plan';
import type { MigrationSpecInput, NotifyEvent } from '../activities/spec';
import type { PlanRef } from '../activities/plan-store';
import { MigrationPhaseKey, type IndexBuildProgress, type MigrationProgress, type MigrationReport, type MigrationStatus, type Phase, type SnapshotReady, type TableStatus } from './contract';
import { fenceTables, reverseFenceTables } from './plan-views';
import { migrationIdOf, reverseIdFor, slotNameFor } from './names';
import { notifyOf, wants, type NotifyPayload } from './notify';
import { DEFAULT_MAX_WRITE_STOP_SECONDS } from './state';
import { newCopyRound, type CopyRound } from './progress';
import type { copyWorkflow } from './copy-child';
import { call, fenceRemovalOpts, notifyOpts, step } from './activities';
import { errorMessage } from './failures';

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

type ValidationResults = Awaited<ReturnType<Activities['validateMigration']>>['results'];

export interface MigrationRun {
  readonly spec: MigrationSpecInput;
  readonly continued: ContinuedSync | undefined;
  readonly startedAt: number;
  readonly migrationId: string;
  /** The slot and the publication (same name). */
  readonly slot: string;
  /** afterCutover "reverse": the fallback's slot and publication on the target, its rollback fence's id. */
  readonly reverseId: string;
  readonly reverseSlot: string;
  /** What the `status` query shows. */
  readonly state: MigrationStatus;
  /** The phases run in it; a cancel (or the WAL watcher's verdict) cancels it. */
  readonly main: wf.CancellationScope;
  plan: MigrationPlan | undefined;
  /** Inline plans only: by reference they stay on the target. */
  defs: TableDef[];
  /**
   * The plan (tables, definitions, copy batches) kept on the target, not in history: activities read
   * it by this reference. Absent in runs recorded before it: they carry the plan inline.
   */
  planRef: PlanRef | undefined;
  /** By reference: what the workflow knows of every table, in numbers. */
  readonly progress: MigrationProgress;
  readonly copyMs: Map<string, number>;
  /** Passed to every activity that creates, empties or drops target tables: only marked ones are touched. */
  marks: string | undefined;
  /** Set by the signals. */
  cancelRequested: boolean;
  cutoverRequested: boolean;
  readonly snapshots: Map<number, SnapshotReady>;
  /** Threshold alerts armed (re-armed once the value falls to half its threshold); a new run re-arms them. */
  readonly alertsArmed: { lag: boolean; wal: boolean };
  /** The report once the run has ended (the `report` query): a CANCELED run carries none. */
  finalReport: MigrationReport | null;
  /** SYNCING_WAL or FALLBACK_READY ends this run: what the next one starts from. */
  continueAsNew: ContinuedSync | undefined;
  /**
   * The target role may not set session_replication_role (plan.applyReplicaRole false): the apply
   * runs with triggers firing, so the foreign keys are created at FINALIZING, once it has stopped.
   */
  keysAfterCutover: boolean;
  /** Foreign keys left for FINALIZING. */
  foreignKeysPending: boolean;
  /** ready-for-cutover is sent once per migration (carried across continue-as-new). */
  readyAlerted: boolean;
  /** What cleanup must undo. */
  readonly created: {
    tables: boolean;
    replication: boolean;
    replicaIdentity: boolean;
    /** afterCutover "reverse": the reverse slot and publication may exist on the target. */
    reverse: boolean;
  };
  readonly copy: {
    round: CopyRound;
    inFlight: Set<wf.CancellationScope>;
    /** Copies interrupted by a pause (not by a cancel): redone, whatever the flag says by the time they end. */
    paused: Set<wf.CancellationScope>;
    /** Table sizes and page ranges (tables over spec.copy.splitAboveBytes), planned once. */
    plans: Map<string, CopyPlan> | undefined;
    /**
     * Each table's own post-load DDL (indexes, keys, constraints, ANALYZE) runs as soon as its last unit
     * has landed, beside the other copies; foreign keys once every table is finished. Runs recorded
     * before it built everything after the last copy, in one activity.
     */
    perTablePostLoad: boolean;
    /** Cleanup waits for the holder to end before dropping the slot it may be about to create. */
    stopHolder: () => Promise<void>;
    /** Index builds running on the target, per post-load activity (its last `indexProgress` report). */
    indexBuilds: Map<string, IndexBuildProgress[]>;
    /** The copy child of the round running (patch 'copy-child'), its end, how many were started, the last pause state sent. */
    child: wf.ChildWorkflowHandle<typeof copyWorkflow> | undefined;
    childEnded: Promise<void> | undefined;
    children: number;
    controlSeq: number;
  };
  readonly apply: {
    scope: wf.CancellationScope | undefined;
    done: Promise<void> | undefined;
    /** A stop asked for and not yet settled (VALIDATING's, while a lost worker's apply times out). */
    stopping: Promise<void> | undefined;
    error: unknown;
    /** The slot the running apply streams from (status): the forward one, the reverse one in FALLBACK_READY. */
    streamingSlot: string;
    /** The last fence marker the apply reported as committed. */
    fenceToken: string | undefined;
  };
  readonly fence: {
    /** Source fence triggers may exist (installed, armed or released but not dropped). */
    set: boolean;
    /** ROLLING_BACK has fenced the target (cleanup releases it). */
    targetSet: boolean;
    at: string | undefined;
    deadline: string | undefined;
    /** The current attempt's fence marker token (STOPPING_WRITES). */
    token?: string;
    /** SYNCING_WAL: the fence triggers' installation as a pass-through (STOPPING_WRITES then only arms them). */
    installScope: wf.CancellationScope | undefined;
    installDone: Promise<void> | undefined;
    installSettled: boolean;
  };
  readonly cutover: {
    /** The fence carries a deadline (cutover.maxWriteStopSeconds); runs recorded before it do not. */
    bounded: boolean;
    /** auto mode: the wait between an abandoned cutover attempt and the next. */
    retryWait: boolean;
    abandonedAttempts: number;
    /** FINALIZING has stopped the apply: the target is now the database of record. */
    done: boolean;
    rolledBack: boolean;
  };
  /** The content proof during SYNCING_WAL: its scope, whether it ended, a divergence it confirmed. */
  readonly proof: {
    scope: wf.CancellationScope | undefined;
    /** Settles once the proof activity has really stopped (WAIT_CANCELLATION_COMPLETED); cleanup waits for it. */
    stopped: Promise<void> | undefined;
    ended: boolean;
    used: boolean;
    failure: string | undefined;
    startedAt: number | undefined;
    liveMs: number;
    validatingMs: number | undefined;
  };
  liveScope: wf.CancellationScope | undefined;
  /** The WAL watcher and its final verdict (budget exceeded, slot invalidated): the migration fails with it. */
  walScope: wf.CancellationScope | undefined;
  walError: unknown;
  /** What the report lists. */
  readonly results: {
    sequences: MigrationReport['sequences'];
    counts: ValidationResults;
    /** validation.repair: what VALIDATING rewrote on the target. */
    repaired: MigrationReport['repair'];
    objects: (MigrationReport['objects'] & { notices: string[] }) | undefined;
  };
}

/** A new run, or the next one of a continued sync. Synchronous: the handlers are set right after it. */
export function newRun(spec: MigrationSpecInput, continued?: ContinuedSync): MigrationRun {
  const migrationId = migrationIdOf(spec, wf.workflowInfo().workflowId);
  const slot = slotNameFor(migrationId);
  const reverseId = reverseIdFor(migrationId);
  const reverseSlot = slotNameFor(reverseId);
  const state: MigrationStatus = continued?.state ?? { migrationId, phase: 'INIT', paused: false, mode: 'online', tables: [], notices: [] };
  const fallback = continued?.fallback === true;
  return {
    spec,
    continued,
    startedAt: continued?.startedAt ?? Date.now(),
    migrationId,
    slot,
    reverseId,
    reverseSlot,
    state,
    main: new wf.CancellationScope(),
    plan: continued?.plan,
    defs: continued?.defs ?? [],
    planRef: continued?.planRef,
    progress: state.progress ?? { tablesTotal: 0, tablesCopied: 0, rowsCopied: 0, bytesCopied: 0 },
    copyMs: new Map<string, number>(continued?.copyMs ?? []),
    marks: continued?.marks,
    cancelRequested: false,
    cutoverRequested: continued?.cutoverRequested ?? false,
    snapshots: new Map(),
    alertsArmed: { lag: true, wal: true },
    finalReport: null,
    continueAsNew: undefined,
    keysAfterCutover: false,
    foreignKeysPending: continued?.foreignKeysPending ?? false,
    readyAlerted: continued?.readyAlerted ?? false,
    created: {
      tables: continued !== undefined,
      replication: continued !== undefined && !fallback,
      replicaIdentity: continued !== undefined && !fallback && (continued.plan.replicaIdentityFull?.length ?? 0) > 0,
      reverse: fallback,
    },
    copy: { round: newCopyRound(), inFlight: new Set(), paused: new Set(), plans: undefined, perTablePostLoad: false, stopHolder: async () => undefined, indexBuilds: new Map(), child: undefined, childEnded: undefined, children: 0, controlSeq: 0 },
    apply: { scope: undefined, done: undefined, stopping: undefined, error: undefined, streamingSlot: fallback ? reverseSlot : slot, fenceToken: undefined },
    fence: { set: fallback, targetSet: false, at: undefined, deadline: undefined, installScope: undefined, installDone: undefined, installSettled: false },
    cutover: { bounded: false, retryWait: false, abandonedAttempts: 0, done: fallback, rolledBack: false },
    proof: { scope: undefined, stopped: undefined, ended: false, used: false, failure: undefined, startedAt: undefined, liveMs: 0, validatingMs: undefined },
    liveScope: undefined,
    walScope: undefined,
    walError: undefined,
    results: { sequences: [], counts: [], repaired: undefined, objects: undefined },
  };
}

/** The plan, once INIT has made it: every phase after INIT may rely on it. */
export const planOf = (run: MigrationRun): MigrationPlan => run.plan!;

export function setPhase(run: MigrationRun, phase: Phase, details?: string): void {
  run.state.phase = phase;
  delete run.state.waiting;
  wf.upsertSearchAttributes([{ key: MigrationPhaseKey, value: phase }]);
  wf.setCurrentDetails(`**${phase}**${details ? `\n\n${details}` : ''}`);
  // Through the SDK's workflow logger: not emitted on replay, and the worker's log line carries the
  // workflow id (the migration) like every activity's.
  wf.log.info(`phase ${phase}`, { phase, ...(details ? { details } : {}) });
}

export const pauseGate = (run: MigrationRun): Promise<void> => wf.condition(() => !run.state.paused);

export const tableStatus = (run: MigrationRun, def: { source: { schema: string; name: string } }): TableStatus =>
  run.state.tables.find((t) => t.source === `${def.source.schema}.${def.source.name}`)!;

/** The tables' input of an activity: inline, or the plan's reference. */
export const tablesOr = <T>(run: MigrationRun, inline: () => T): { plan: PlanRef } | T => (run.planRef ? { plan: run.planRef } : inline());

/** How many tables the migration has, whether their definitions are here or on the target. */
export const tableCount = (run: MigrationRun): number => (run.planRef ? run.progress.tablesTotal : run.defs.length);

export const writeStopBound = (run: MigrationRun): number => planOf(run).spec.cutover.maxWriteStopSeconds ?? DEFAULT_MAX_WRITE_STOP_SECONDS;

/** validation.repair is on (runs recorded before it never are: the marker only in runs that use it). */
export const repairOn = (run: MigrationRun): boolean => run.plan?.spec.validation.repair === true && wf.patched('validation-repair');

// Partitions too: a statement trigger on a partitioned table does not fire for writes made
// straight into one of its partitions.
export const fenceInput = (run: MigrationRun) => ({ source: planOf(run).spec.source, migrationId: run.migrationId, ...tablesOr(run, () => ({ tables: fenceTables(run.defs) })) });

/** The rollback's fence, on the target's tables (and their partitions). */
export const targetFenceInput = (run: MigrationRun) => ({
  source: planOf(run).spec.target,
  migrationId: run.reverseId,
  ...tablesOr(run, () => ({ tables: reverseFenceTables(run.defs) })),
  reverse: true,
});

/** Releases a fence (`liftFence`), then drops its triggers if the release left them (`removeFence`). */
export async function releaseFence(run: MigrationRun, input: Parameters<Activities['liftFence']>[0], summary: string, removalSummary = 'drop the released fence triggers'): Promise<Awaited<ReturnType<Activities['liftFence']>>> {
  const lifted = await step('liftFence', summary, input);
  if (lifted.pending) await call(fenceRemovalOpts, removalSummary, 'removeFence', input);
  return lifted;
}

/** The plan kept on the target goes with the migration (its rows only: other migrations may share the tables). */
export const forgetPlan = (run: MigrationRun, p: MigrationPlan) => step('forgetPlan', 'forget the plan kept on the target', { target: p.spec.target, migrationId: run.migrationId });

export async function restoreReplicaIdentity(run: MigrationRun): Promise<void> {
  const plan = run.plan;
  if (!run.created.replicaIdentity || !plan) return;
  await step('setReplicaIdentity', 'restore replica identities', { source: plan.spec.source, tables: plan.replicaIdentityFull.map((r) => ({ table: r.table, identity: r.original })) });
  run.created.replicaIdentity = false;
}

/** Waits for `fn`, but fails as soon as the apply fails: nothing else would notice. */
export async function untilOrApplyFails(run: MigrationRun, fn: () => boolean): Promise<void> {
  await wf.condition(() => fn() || run.apply.error !== undefined);
  if (run.apply.error !== undefined) throw run.apply.error;
}

/** This run's history is long enough to continue as new. */
export function historyFull(p: MigrationPlan): boolean {
  const i = wf.workflowInfo();
  return i.continueAsNewSuggested || i.historyLength > (p.spec.historyEventsLimit ?? HISTORY_EVENTS_LIMIT);
}

/**
 * What SYNCING_WAL (or, with `fallback`, FALLBACK_READY) hands to the next run. The keys in this
 * order: the next run's input is history too.
 */
export function carried(run: MigrationRun, p: MigrationPlan, fallback: boolean): ContinuedSync {
  return {
    plan: p,
    defs: run.defs,
    state: run.state,
    startedAt: run.startedAt,
    copyMs: [...run.copyMs],
    cutoverRequested: false,
    ...(fallback ? { fallback: true as const } : {}),
    ...(run.marks ? { marks: run.marks } : {}),
    ...(run.planRef ? { planRef: run.planRef } : {}),
    ...(!fallback && run.foreignKeysPending ? { foreignKeysPending: true } : {}),
    ...(!fallback && run.readyAlerted ? { readyAlerted: true } : {}),
  };
}

/**
 * One webhook event (spec.notify) through an activity; its failure becomes a notice. Names and
 * numbers only: the spec, users and passwords never go into the payload.
 */
export async function alert(run: MigrationRun, event: NotifyEvent, message: string, extra: Partial<NotifyPayload> = {}): Promise<void> {
  const { plan, state } = run;
  const n = plan?.spec.notify ?? notifyOf(run.spec);
  if (!wants(n, event) || !wf.patched('notify-webhooks')) return;
  const payload: NotifyPayload = {
    event,
    migrationId: run.migrationId,
    workflowId: wf.workflowInfo().workflowId,
    phase: state.phase,
    at: new Date().toISOString(),
    ...(plan ? { source: plan.sourceDescription, target: plan.targetDescription } : {}),
    message,
    ...extra,
  };
  try {
    await call(notifyOpts, `notify: ${event}`, 'notifyWebhook', { url: n.url, payload });
  } catch (e) {
    state.notices.push(`webhook for ${event} not delivered: ${errorMessage(e)}`);
  }
}

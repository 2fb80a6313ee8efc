/**
 * The activities as the worker registers them: one table of functions, built by a factory so the
 * worker wires its dependencies once, and composed of one group per phase. Each function is the
 * Temporal-facing edge (heartbeats, cancellation, signals to the workflow, error classification; the
 * helpers are in `edge.ts`); the database work lives in the phase modules. Activity names are part of
 * recorded histories: a group may move an activity, never rename it.
 */
import { Context } from '@temporalio/activity';
import { createReverseReplication, createPublication, dropPublication, dropSlot, setReplicaIdentity } from './replication';
import { copyTable, forgetCopyProgress, prepareRangedCopy, type CopyTableInput, type CopyTableResult } from './copy';
import { planCopies } from './copy-plan';
import { fenceHolds, fenceSource, hardenFence, installFence, liftFence, removeFence, syncSequences } from './stop-writes';
import { commitCutover } from './finalize';
import { requestApplyStop } from './apply/stop-request';
import { during } from './errors';
import { preflight, type MigrationPlan, type OtherMigration } from './preflight';
import { notifyWebhook } from './notify';
import { migrationIdOf } from '../workflows/names';
import { createTargetTables } from './create-tables';
import { finishTargetTables } from './post-load';
import {
  formatValidationFailure,
  proveLive,
  validateAndRepair,
  validateLive,
  validateTables,
  type LiveTableValidation,
  type ProveLiveInput,
  type ProveLiveResult,
  type RepairOutcome,
  type RepairSettings,
  type TableValidationResult,
  type ValidateHooks,
  type ValidateLiveInput,
  type ValidateProgress,
  type ValidateTablesInput,
} from './validate';
import { findSchemaDrift } from './schema-drift';
import { runApply } from './apply/run';
import type { ApplyTable } from './apply/options';
import { readApplyProgress } from './apply/progress';
import { withClient } from './db';
import { slotWalSignal, statusQuery, WORKFLOW_TYPE, type MigrationStatus } from '../workflows/contract';
import { readSlotWal, walFailure, walReportDue, walVerdict, type WalBudget, type WalVerdict } from './wal';
import { dropApplyProgress, dropTargetTables, type DropTargetResult } from './cleanup';
import { findOrphans, formatLeftover, runningMigrationIds } from './leftovers';
import { migrateSchemaObjects, type SchemaObjectsInput, type SchemaObjectsResult } from './objects';
import type { ConnectionSpec, QualifiedName } from './spec';
import { forgetPlan, readDefs, readTablePlans, storeDefs, storeTablePlans, type PlanRef } from './plan-store';
import { batchDefs, copyBatch, planCopyBatches, type CopyBatchInput, type CopyBatchResult } from './copy-batch';
import { CopyLockWatch } from './lock-wait';
import { applyProgressSignals, CopyProgressReporter, IndexProgressReporter, lockWaitLimit, proofProgressSignals } from './progress-signals';
import { holdSnapshot, type HoldSnapshotInput } from './snapshot-holder';
import { fenceTables, namePairs, reverseFenceTables, reverseNamePairs, reverseSequencesOf, sequencesOf, targetTables, validationTables } from '../workflows/plan-views';
import {
  atEdge,
  beating,
  cancellable,
  defaultLog,
  resolve,
  resolveSide,
  RESULTS_BEYOND_PAGE,
  signalWorkflow,
  sleep,
  throwIfCancelled,
  type ActivityLog,
  type ByRef,
  type Reversible,
} from './edge';

export interface ActivityDeps {
  /** Optional logger; activities log through Temporal's activity logger by default. */
  log?: ActivityLog;
  /** The worker encrypts payloads (a payload codec is configured). */
  encrypted?: boolean;
}

/** What the activities of one worker share: its logger and the copy progress reports of its copies. */
interface Shared {
  log: ActivityLog;
  copyReporter: CopyProgressReporter;
}

export function createActivities(deps: ActivityDeps = {}) {
  const shared: Shared = { log: deps.log ?? defaultLog, copyReporter: new CopyProgressReporter() };
  return atEdge({
    ...workflowActivities(deps),
    ...initActivities(shared),
    ...createTablesActivities(),
    ...migrateDataActivities(shared),
    ...syncWalActivities(),
    ...fenceActivities(),
    ...validateActivities(),
    ...finalizeActivities(),
    ...cleanupActivities(),
  });
}

export type Activities = ReturnType<typeof createActivities>;

// ---------------------------------------------------------------------------------------------
// The groups, in the order of the phases.

/** What the workflow asks of Temporal or of the worker itself, in any phase. */
function workflowActivities(deps: ActivityDeps) {
  return {
    /** An alert to spec.notify's webhook (bounded retries in the workflow; a failure never fails the migration). */
    notifyWebhook,
    /**
     * Asks Temporal to cancel the calling workflow run: a run may end as CANCELED only once the server
     * has recorded a cancellation, and a workflow cannot request its own (the cancel signal's end).
     */
    requestOwnCancellation: beating(async (): Promise<void> => {
      const exec = Context.current().info.workflowExecution;
      if (!exec) throw new Error('activity was not started by a workflow');
      await Context.current().client.workflow.getHandle(exec.workflowId, exec.runId).cancel();
    }),
    /** Whether this worker encrypts payloads (a local activity: the workflow asks before storing a password). */
    async payloadEncryption(): Promise<{ encrypted: boolean }> {
      return { encrypted: deps.encrypted ?? false };
    },
  };
}

/** INIT. */
function initActivities(shared: Shared) {
  return {
    preflight: beating((spec: unknown, store?: { migrationId: string; track: number }) => runPreflight(shared, spec, store)),
  };
}

/** CREATING_TABLES. */
function createTablesActivities() {
  return {
    createTargetTables: (...a: Parameters<typeof createTargetTables>) => cancellable(() => createTargetTables(...a)),
    createPlannedTables,
  };
}

/** MIGRATING_DATA: the snapshot, the copies and each table's post-load DDL. */
function migrateDataActivities(shared: Shared) {
  return {
    /** The size of each table and, for the large ones, the page ranges to copy. */
    planCopies: beating(planCopies),
    /** By reference: sizes, page ranges and batches, stored with the plan. */
    planCopyBatches: beating(planCopyBatches),
    prepareRangedCopies: beating(prepareRangedCopies),
    forgetCopyProgress: beating(forgetCopyProgress),
    holdSnapshot: (input: HoldSnapshotInput) => holdSnapshot(Context.current(), input),
    copyTable: (input: CopyTableInput) => copyOneTable(shared, input),
    copyTableBatch: (input: CopyBatchInput) => copyOneBatch(shared, input),
    finishTargetTables: finishTables,
  };
}

/** SYNCING_WAL: the publication, the apply, the WAL budget and the checks that run beside them. */
function syncWalActivities() {
  return {
    createPublication: beating(async (input: ByRef<Parameters<typeof createPublication>[0], 'tables'>) =>
      createPublication(await resolve(input, 'tables', (defs) => defs.map((d) => d.source))),
    ),
    setReplicaIdentity: beating(setReplicaIdentity),
    applyChanges,
    watchSlotWal,
    validateLive: validateLiveTables,
    proveLive: proveTablesLive,
  };
}

/**
 * The fence: installed during SYNCING_WAL, armed at STOPPING_WRITES, lifted or removed after the
 * cutover. `reverse` (afterCutover "reverse", by reference): the fence is on the target's tables.
 */
function fenceActivities() {
  return {
    fenceSource: beating(async (input: Reversible<ByRef<Parameters<typeof fenceSource>[0], 'tables'>>) =>
      fenceSource(await resolveSide(input, 'tables', fenceTables, reverseFenceTables)),
    ),
    // The source's fence triggers as a pass-through, armed by fenceSource at the cutover.
    installFence: async (input: ByRef<Parameters<typeof installFence>[0], 'tables'>) => {
      const ctx = Context.current();
      // Beating from the start: the plan's read counts against the short heartbeat timeout too.
      return cancellable(async (heartbeat) => installFence(await resolve(input, 'tables', fenceTables), { heartbeat, signal: ctx.cancellationSignal }));
    },
    awaitFenceApplied,
    liftFence: beating(async (input: Reversible<ByRef<Parameters<typeof liftFence>[0], 'tables'>>) => liftFence(await resolveSide(input, 'tables', fenceTables, reverseFenceTables))),
    removeFence: beating(async (input: Reversible<ByRef<Parameters<typeof removeFence>[0], 'tables'>>) => removeFence(await resolveSide(input, 'tables', fenceTables, reverseFenceTables))),
    syncSequences: beating(async (input: Reversible<ByRef<Parameters<typeof syncSequences>[0], 'sequences'>>) => {
      const result = await syncSequences(await resolveSide(input, 'sequences', sequencesOf, reverseSequencesOf));
      // By reference: how many, and the first ones (one per sequence would grow with the tables).
      return input.plan ? result.slice(0, RESULTS_BEYOND_PAGE) : result;
    }),
    commitCutover: beating(async (input: ByRef<Parameters<typeof commitCutover>[0], 'tables'>) => commitCutover(await resolve(input, 'tables', fenceTables))),
    fenceHolds: beating(fenceHolds),
    hardenFence: beating(hardenFence),
  };
}

/** VALIDATING. */
function validateActivities() {
  return { validateMigration };
}

/** FINALIZING. */
function finalizeActivities() {
  return {
    /** spec.objects: views, materialized views, functions and triggers, renamed through the mapping. */
    async createSchemaObjects(input: ByRef<SchemaObjectsInput, 'tables'>): Promise<SchemaObjectsResult> {
      const ctx = Context.current();
      const resolved = await resolve(input, 'tables', namePairs);
      return cancellable((heartbeat) => migrateSchemaObjects(resolved, { heartbeat, signal: ctx.cancellationSignal }));
    },
    /** afterCutover "reverse": publication and slot on the target, before the application moves there. */
    createReverseReplication: beating(async (input: ByRef<Parameters<typeof createReverseReplication>[0], 'tables'>) =>
      createReverseReplication(await resolve(input, 'tables', targetTables)),
    ),
  };
}

/** The end of a migration (finalized, cancelled or failed): what it made goes. */
function cleanupActivities() {
  return {
    dropTargetTables: beating(dropPlannedTargetTables),
    dropReplication: beating(dropReplication),
    forgetPlan: beating(forgetMigrationPlan),
  };
}

// ---------------------------------------------------------------------------------------------
// INIT

/** Running migrations (but `self`) whose status names `migrationId`; each asked for at most 5 s. */
async function runningMigrationsWithId(ctx: Context, migrationId: string, self: string | undefined): Promise<OtherMigration[]> {
  const found: OtherMigration[] = [];
  let seen = 0;
  for await (const w of ctx.client.workflow.list({ query: `WorkflowType = '${WORKFLOW_TYPE}' AND ExecutionStatus = 'Running'` })) {
    if (++seen > 1000) break;
    if (w.workflowId === self) continue;
    const status = await Promise.race([
      ctx.client.workflow.getHandle(w.workflowId, w.runId).query<MigrationStatus>(statusQuery.name).catch(() => undefined),
      sleep(5_000).then(() => undefined),
    ]);
    if (status?.migrationId === migrationId) found.push({ workflowId: w.workflowId });
  }
  return found;
}

/**
 * Refuses an id that a running migration (found through Temporal's visibility) already uses. With
 * `store`: the table list goes to the plan store on the target once every check has passed, and the
 * result carries only its first `store.track` tables and the count.
 */
async function runPreflight(shared: Shared, spec: unknown, store?: { migrationId: string; track: number }): Promise<MigrationPlan> {
  const ctx = Context.current();
  const self = ctx.info.workflowExecution?.workflowId;
  const explicitId = typeof (spec as { id?: unknown } | null)?.id === 'string';
  const plan = await preflight(spec, {
    migrationId: self ? migrationIdOf(spec, self) : undefined,
    // A derived id is unique with its workflow id; only an explicit spec.id can be shared.
    runningWithId: explicitId ? (id) => runningMigrationsWithId(ctx, id, self) : undefined,
  });
  await noticeLeftovers(shared, ctx, plan);
  if (!store) return plan;
  await storeTablePlans({ target: plan.spec.target, migrationId: store.migrationId }, plan.tables).catch((err: unknown) => {
    throw during(err, 'store the migration plan on the target');
  });
  return { ...plan, tables: plan.tables.slice(0, store.track), tableCount: plan.tables.length };
}

/** Advisory: what migrations that no longer run left on these servers, as a notice of the plan. */
async function noticeLeftovers(shared: Shared, ctx: Context, plan: MigrationPlan): Promise<void> {
  try {
    const orphans = await findOrphans(plan.spec.source, plan.spec.target, await runningMigrationIds(ctx.client));
    if (orphans.length) {
      plan.notices.push(
        `${orphans.length} leftover(s) of pg-dts migrations that no longer run (dts orphans lists them, dts cleanup <id> removes them): ` +
          orphans.slice(0, 10).map(formatLeftover).join('; ') +
          (orphans.length > 10 ? '; …' : ''),
      );
    }
  } catch (err) {
    shared.log.warn('could not look for leftovers of earlier migrations', { error: (err as Error).message });
  }
}

// ---------------------------------------------------------------------------------------------
// CREATING_TABLES

/** By reference: the definitions are stored with the plan; the workflow gets counts. */
async function createPlannedTables(input: { spec: Parameters<typeof createTargetTables>[0]['spec']; plan: PlanRef; migrationId?: string }) {
  return cancellable(async () => {
    const tables = await readTablePlans(input.plan).catch((err: unknown) => {
      throw during(err, 'read the migration plan from the target');
    });
    const defs = await createTargetTables({ spec: input.spec, tables, migrationId: input.migrationId });
    await storeDefs(input.plan, defs).catch((err: unknown) => {
      throw during(err, 'store the table definitions on the target');
    });
    const warnings = defs.flatMap((d) => d.warnings ?? []);
    return {
      tables: defs.length,
      warnings: warnings.slice(0, RESULTS_BEYOND_PAGE),
      warningsLeftOut: Math.max(0, warnings.length - RESULTS_BEYOND_PAGE),
      foreignKeys: defs.some((d) => (d.postLoadSteps ?? []).some((st) => st.kind === 'foreign-key') || (d.foreignKeys?.length ?? 0) > 0),
    };
  });
}

// ---------------------------------------------------------------------------------------------
// MIGRATING_DATA

/**
 * Before one copy round of ranged tables: empties them and forgets earlier range records. Returns
 * how many ranges an earlier round had committed (copied twice from now on).
 */
async function prepareRangedCopies(input: {
  target: ConnectionSpec;
  tables?: QualifiedName[];
  plan?: PlanRef;
  ords?: number[];
  snapshot?: string;
  snapshotLsn?: string;
  migrationId?: string;
}): Promise<number> {
  const tables = input.tables ?? (input.plan ? (await readDefs(input.plan, input.ords ?? [])).map((d) => d.target) : []);
  let removed = 0;
  for (const table of tables) removed += await prepareRangedCopy({ target: input.target, table, snapshot: input.snapshot, snapshotLsn: input.snapshotLsn, migrationId: input.migrationId });
  return removed;
}

async function copyOneTable(shared: Shared, input: CopyTableInput): Promise<CopyTableResult> {
  const table = `${input.table.source.schema}.${input.table.source.name}`;
  const edge = copyEdge(shared, input, input.range ? `${table}#${input.range.id}` : table);
  edge.table(table, input.table, { rows: 0, bytes: 0 });
  try {
    const result = await copyTable(input, { heartbeat: edge.heartbeat, signal: edge.signal });
    shared.log.info('table copied', { table, range: input.range?.id, rows: result.rows, ms: result.durationMs });
    return result;
  } catch (err) {
    throw edge.failure(err);
  } finally {
    await edge.close();
  }
}

/** Copies one batch of units (many small tables, or one page range) inside the snapshot. */
async function copyOneBatch(shared: Shared, input: CopyBatchInput): Promise<CopyBatchResult> {
  const edge = copyEdge(shared, input, `batch ${input.batch}`);
  try {
    const result = await copyBatch(input, {
      unit: (u) => edge.table(u.table, u.names, u.at),
      heartbeat: edge.heartbeat,
      copied: (c) => shared.log.info('table copied', { table: c.table, range: c.range, batch: input.batch, rows: c.rows, ms: c.durationMs }),
      signal: edge.signal,
    });
    shared.log.info('batch copied', { batch: input.batch, units: result.units, rows: result.rows, ms: result.durationMs });
    return result;
  } catch (err) {
    throw edge.failure(err);
  } finally {
    await edge.close();
  }
}

type Progress = { rows: number; bytes: number };
/** The workflow run an activity's progress signals go to, when not the one that started it (a copy child's migration). */
type ReportTo = { workflowId: string; runId: string };

/**
 * One copy activity's edge: heartbeats, progress reports per table (`table()` when a batch moves on
 * to the next), the lock-wait watch and copy.maxLockWaitSeconds.
 */
function copyEdge(shared: Shared, input: { source: ConnectionSpec; target: ConnectionSpec; snapshot?: string; maxLockWaitSeconds?: number; reportTo?: ReportTo }, unit: string) {
  const ctx = Context.current();
  const exec = input.reportTo ?? ctx.info.workflowExecution;
  let table = unit;
  // Where the current table started in the unit's progress: reports are per table.
  let start: Progress = { rows: 0, bytes: 0 };
  let last: Progress = { rows: 0, bytes: 0 };
  const report = () => {
    if (exec) shared.copyReporter.update(ctx, exec.workflowId, exec.runId, { table, unit, snapshot: input.snapshot, rows: last.rows - start.rows, bytes: last.bytes - start.bytes, ...(watch.waiting ? { waiting: watch.waiting } : {}) });
  };
  const limit = lockWaitLimit(input.maxLockWaitSeconds);
  const watch = new CopyLockWatch({ source: input.source, target: input.target }, report, limit.watch);
  return {
    signal: limit.signal(ctx.cancellationSignal),
    table(name: string, names: Parameters<CopyLockWatch['table']>[0], at: Progress) {
      table = name;
      start = at;
      watch.table(names);
    },
    heartbeat(p: Progress) {
      ctx.heartbeat(p);
      last = p;
      watch.progress(p.rows);
      report();
    },
    failure: (err: unknown): unknown => limit.failure(table) ?? err,
    async close() {
      await watch.close();
      if (exec) shared.copyReporter.done(exec.workflowId, exec.runId, unit);
    },
  };
}

/** Keys, indexes, constraints, foreign keys and ANALYZE on several sessions. */
async function finishTables(input: ByRef<Parameters<typeof finishTargetTables>[0], 'defs'> & { batch?: number; ords?: number[]; reportTo?: ReportTo }) {
  const ctx = Context.current();
  return cancellable(async (heartbeat) => {
    const { batch, ords, reportTo, ...rest } = input;
    const resolved =
      rest.defs || !rest.plan
        ? await resolve<Parameters<typeof finishTargetTables>[0], 'defs'>(rest, 'defs', (d) => d)
        : { ...rest, defs: batch !== undefined ? await batchDefs(rest.plan, batch) : await readDefs(rest.plan, ords) };
    const exec = reportTo ?? ctx.info.workflowExecution;
    const reporter = exec ? new IndexProgressReporter(ctx, exec.workflowId, exec.runId, reportTo ? `${ctx.info.workflowExecution?.runId}/${ctx.info.activityId}` : ctx.info.activityId) : undefined;
    try {
      return await finishTargetTables(resolved, { heartbeat, signal: ctx.cancellationSignal, ...(reporter ? { builds: (b) => reporter.update(b) } : {}) });
    } finally {
      await reporter?.close();
    }
  });
}

// ---------------------------------------------------------------------------------------------
// SYNCING_WAL

interface ApplyChangesInput {
  source: ConnectionSpec;
  target: ConnectionSpec;
  slot: string;
  publication: string;
  tables: ApplyTable[];
  reportEveryMs?: number;
  /** The cutover's lag threshold (spec.cutover.maxLagBytes): a report that first gets under it is signalled at once. */
  cutoverLagBytes?: number;
  /** false: the target role may not set session_replication_role (MigrationPlan.applyReplicaRole). */
  replicaRole?: boolean;
}

/**
 * Streams the slot into the target until cancelled. Resumes from the target's recorded position
 * after any crash or retry. Reports progress to the workflow by signal.
 */
async function applyChanges(byRef: Reversible<ByRef<ApplyChangesInput, 'tables'>>): Promise<{ appliedLsn: string }> {
  const ctx = Context.current();
  const prev = ctx.info.heartbeatDetails as { transactions?: number; changes?: number } | undefined;
  // Cancellation arrives only with a heartbeat's response: beat every second from the start (the
  // plan's read included: the heartbeat timeout is short), not only when the apply reports
  // progress, so a pause or cutover stops it promptly.
  let lastDetails: unknown = prev;
  const beat = setInterval(() => ctx.heartbeat(lastDetails), 1000);
  try {
    // The tables are read from the plan while the apply connects (runApply awaits them).
    const tables = resolveSide(byRef, 'tables', namePairs, reverseNamePairs).then((i) => i.tables);
    tables.catch(() => undefined); // runApply's to report
    const base = { transactions: prev?.transactions ?? 0, changes: prev?.changes ?? 0 };
    const signals = applyProgressSignals(byRef);
    const controller = new AbortController();
    ctx.cancellationSignal.addEventListener('abort', () => controller.abort());
    const result = await runApply({
      source: byRef.source,
      target: byRef.target,
      slot: byRef.slot,
      publication: byRef.publication,
      tables,
      ...(byRef.replicaRole === false ? { replicaRole: false } : {}),
      signal: controller.signal,
      onProgress: (raw) => {
        // Counts accumulate across attempts: a retried apply continues the totals of the last one.
        const p = { ...raw, transactions: base.transactions + raw.transactions, changes: base.changes + raw.changes };
        lastDetails = p;
        ctx.heartbeat(p);
        signals.progress(p);
      },
    });
    await signals.sent();
    // Stopped by cancellation (the workflow's, or a worker shutdown): say so, never "completed",
    // or the workflow would take a stopped apply for a finished one.
    throwIfCancelled(ctx);
    return { appliedLsn: result.appliedLsn };
  } catch (err) {
    throwIfCancelled(ctx);
    throw during(err, 'apply changes');
  } finally {
    clearInterval(beat);
  }
}

/**
 * The WAL budget, from the slot's creation until cancelled: reports what the slot retains, fails
 * (non-retryable) past wal.maxRetainedBytes or when the source has invalidated the slot. A slot
 * not created yet is waited for.
 */
async function watchSlotWal(input: { source: ConnectionSpec; slot: string; everyMs?: number } & WalBudget): Promise<void> {
  const ctx = Context.current();
  let prev: { verdict: WalVerdict; retainedBytes: number; at: number } | undefined;
  while (!ctx.cancellationSignal.aborted) {
    const w = await readSlotWal(input.source, input.slot).catch((err: unknown) => {
      throw during(err, `read replication slot ${input.slot}`);
    });
    ctx.heartbeat();
    const verdict = walVerdict(w, input);
    const now = Date.now();
    if (w.exists && walReportDue(prev, verdict, w.retainedBytes, now)) {
      prev = { verdict, retainedBytes: w.retainedBytes, at: now };
      await signalWorkflow(slotWalSignal.name, { retainedBytes: w.retainedBytes, walStatus: w.walStatus, verdict }).catch(() => undefined);
    }
    if (verdict === 'over' || verdict === 'lost') throw walFailure(input.slot, w, input, verdict);
    await sleep(input.everyMs ?? 5000, ctx.cancellationSignal);
  }
  throwIfCancelled(ctx);
}

/** The page of tables and the first others `keep` picks: a list by reference must not grow with the tables. */
function pageAndFirst<T>(results: T[], track: number, keep: (r: T) => boolean): T[] {
  return [...results.filter((_, i) => i < track), ...results.filter((r, i) => i >= track && keep(r)).slice(0, RESULTS_BEYOND_PAGE)];
}

/** Advisory check: tolerates rows changing under it. */
async function validateLiveTables(byRef: ByRef<ValidateLiveInput, 'tables'> & { track?: number }): Promise<LiveTableValidation[]> {
  const ctx = Context.current();
  const input = await resolve<ValidateLiveInput, 'tables'>(byRef, 'tables', validationTables);
  const results = await validateLive(input, { onProgress: (p) => ctx.heartbeat(p), signal: ctx.cancellationSignal });
  throwIfCancelled(ctx);
  if (!byRef.plan) return results;
  return pageAndFirst(results, byRef.track ?? 0, (r) => r.checksum === 'mismatch');
}

/**
 * The content proof's passes, until cancelled (or a divergence is confirmed). Its state lives on
 * the target, so a retry, a new run or VALIDATING continues from it.
 */
async function proveTablesLive(byRef: ByRef<ProveLiveInput, 'tables'>): Promise<ProveLiveResult> {
  const ctx = Context.current();
  const signals = proofProgressSignals();
  // From the start, the plan's read included: the heartbeat timeout is short (backgroundHeartbeat).
  const beat = setInterval(() => ctx.heartbeat(signals.last()), 1000);
  try {
    const input = await resolve<ProveLiveInput, 'tables'>(byRef, 'tables', validationTables);
    const result = await proveLive(input, { signal: ctx.cancellationSignal, onProofProgress: (p) => signals.progress(p) });
    await signals.sent();
    throwIfCancelled(ctx);
    return result;
  } finally {
    signals.stop();
    clearInterval(beat);
  }
}

// ---------------------------------------------------------------------------------------------
// STOPPING_WRITES

/** Waits until the apply has committed the fence marker on the target (heartbeating). */
async function awaitFenceApplied(input: { target: ConnectionSpec; slot: string; token: string }): Promise<{ appliedLsn: string }> {
  const ctx = Context.current();
  // Inside the write stop: one session, read every 20 ms for the first 2 s (an idle apply commits the
  // fence within a few ms; at 200 ms, a session each, this wait was 230 ms of a 600-1,300 ms window),
  // then every 200 ms (an unbounded cutover may wait here for a lagging apply).
  const started = Date.now();
  return withClient(input.target, async (c) => {
    for (;;) {
      const p = await readApplyProgress(c, input.slot);
      if (p?.fenceToken === input.token) return { appliedLsn: p.appliedLsn };
      ctx.heartbeat({ appliedLsn: p?.appliedLsn });
      await sleep(Date.now() - started < 2_000 ? 20 : 200, ctx.cancellationSignal);
      if (ctx.cancellationSignal.aborted) throw new Error('cancelled while waiting for the apply to pass the fence');
    }
  });
}

// ---------------------------------------------------------------------------------------------
// VALIDATING

interface ValidationOutcome {
  results: TableValidationResult[];
  failure?: string;
  schemaDrift?: string[];
  totals?: { tables: number; failed: number; repaired?: number };
  repair?: RepairOutcome;
}

/** Counts, sampled rows and (optionally) chunked checksums, with the failure report. */
async function validateMigration(
  byRef: ByRef<ValidateTablesInput, 'tables'> & { schemas?: string[]; track?: number; repair?: RepairSettings; stopApply?: { slot: string; token: string } },
): Promise<ValidationOutcome> {
  const ctx = Context.current();
  // The workflow cancels the apply as this starts; the request reaches it sooner (stop-request.ts).
  // Not awaited: a slow connect must not hold the validation (or its heartbeats) back.
  if (byRef.stopApply) void requestApplyStop(byRef.target, byRef.stopApply.slot, byRef.stopApply.token).catch(() => undefined);
  const input = { ...(await resolve<ValidateTablesInput, 'tables'>(byRef, 'tables', validationTables)), schemas: byRef.schemas };
  // Beat on a timer too: a comparison blocked in one long query must still hear a cancel.
  const beat = setInterval(() => ctx.heartbeat(), 1000);
  try {
    // DDL the apply never saw (no write came after it) is found here, not in the rows.
    const drifted = findSchemaDrift(input).catch((err: unknown) => {
      throw during(err, 'compare the source schema with the one migrated');
    });
    const hooks = { onProgress: (p: ValidateProgress) => ctx.heartbeat(p), signal: ctx.cancellationSignal };
    const { drift, results, repair } = await validateBesideDrift(input, drifted, byRef.repair, hooks);
    throwIfCancelled(ctx);
    const failure = validationFailure(results, drift, repair);
    if (!byRef.plan) return { results, failure, ...(drift.length ? { schemaDrift: drift } : {}), ...(repair ? { repair } : {}) };
    return boundedOutcome(results, failure, drift, repair, byRef.track ?? 0);
  } finally {
    clearInterval(beat);
  }
}

/**
 * The tables compared while the schema is compared: both only read, and inside the write stop the
 * schema's check no longer adds its time to the tables'. A repair writes: it waits for the schema's
 * verdict, and never runs on a schema that drifted (the failure names the drift). Nothing is left
 * running when it throws: the schema's failure first, as when it ran alone before the tables.
 */
async function validateBesideDrift(
  input: ValidateTablesInput,
  drifted: Promise<string[]>,
  repairSettings: RepairSettings | undefined,
  hooks: ValidateHooks,
): Promise<{ drift: string[]; results: TableValidationResult[]; repair?: RepairOutcome }> {
  if (repairSettings) {
    const drift = await drifted;
    return { drift, ...(drift.length ? { results: await validateTables(input, hooks) } : await validateAndRepair(input, repairSettings, hooks)) };
  }
  const [d, r] = await Promise.allSettled([drifted, validateTables(input, hooks)]);
  if (d.status === 'rejected') throw d.reason;
  if (r.status === 'rejected') throw r.reason;
  return { drift: d.value, results: r.value };
}

/** Everything VALIDATING found wrong, as one message; undefined when nothing. */
function validationFailure(results: TableValidationResult[], drift: string[], repair: RepairOutcome | undefined): string | undefined {
  const failures: string[] = [];
  if (repair?.refused) failures.push(`validation.repair: ${repair.refused}`);
  if (drift.length) {
    failures.push(
      'the source schema changed during the migration; pg-dts does not replicate DDL, so the target lacks these changes ' +
        `(restart the migration once the source schema is settled):\n${drift.map((d) => `  - ${d}`).join('\n')}`,
    );
  }
  if (results.some((r) => !r.ok)) failures.push(formatValidationFailure(results));
  return failures.length ? failures.join('\n') : undefined;
}

/** By reference: the page of tables and the first failing or repaired others, with the totals. */
function boundedOutcome(results: TableValidationResult[], failure: string | undefined, drift: string[], repair: RepairOutcome | undefined, track: number): ValidationOutcome {
  return {
    results: pageAndFirst(results, track, (r) => !r.ok || !!r.repair),
    failure: failure && failure.length > 64 * 1024 ? `${failure.slice(0, 64 * 1024)}\n…` : failure,
    ...(drift.length ? { schemaDrift: drift.slice(0, RESULTS_BEYOND_PAGE) } : {}),
    totals: { tables: results.length, failed: results.filter((r) => !r.ok).length, ...(repair ? { repaired: repair.tables } : {}) },
    ...(repair ? { repair } : {}),
  };
}

// ---------------------------------------------------------------------------------------------
// Cleanup

async function dropPlannedTargetTables(input: { target: ConnectionSpec; tables?: QualifiedName[]; plan?: PlanRef; migrationId?: string }): Promise<DropTargetResult> {
  try {
    // By reference: INIT's list (CREATING_TABLES may have failed before storing definitions).
    const tables = input.tables ?? (input.plan ? (await readTablePlans(input.plan)).map((t) => t.target) : []);
    return await dropTargetTables(input.target, tables, input.migrationId);
  } catch (err) {
    throw during(err, 'drop target tables');
  }
}

/** Drops the slot (ending its walsender), the publication and the target's progress row. */
async function dropReplication(input: { source: ConnectionSpec; target: ConnectionSpec; slot: string; publication: string }): Promise<void> {
  try {
    await dropSlot(input.source, input.slot);
    await dropPublication(input.source, input.publication);
    await dropApplyProgress(input.target, input.slot);
  } catch (err) {
    throw during(err, 'drop replication slot and publication');
  }
}

/** A migration kept by reference: its plan rows go. */
async function forgetMigrationPlan(input: { target: ConnectionSpec; migrationId: string }): Promise<void> {
  const plan: PlanRef = { target: input.target, migrationId: input.migrationId };
  try {
    // Range records exist only for tables copied in ranges; naming every table is harmless.
    const defs = await readDefs(plan).catch(() => []);
    if (defs.length) await forgetCopyProgress({ target: input.target, tables: defs.map((d) => d.target) });
    await forgetPlan(input.target, input.migrationId);
  } catch (err) {
    throw during(err, 'forget the migration plan');
  }
}

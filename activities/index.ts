/**
 * The activities as the worker registers them. Built by a factory so the worker wires dependencies
 * once (STYLE.md §3). Each function is the Temporal-facing edge: heartbeats, cancellation and error
 * classification live here; the database work lives in the phase modules.
 */
import { CancelledFailure, Context, log as activityLog } from '@temporalio/activity';
import { ApplicationFailure } from '@temporalio/common';
import { createResumeSnapshot, createReverseReplication, createSlotWithSnapshot, createPublication, dropPublication, dropSlot, setReplicaIdentity, slotCreationBlocker } from './replication';
import { copyTable, forgetCopyProgress, planCopies, prepareRangedCopy, type CopyTableInput, type CopyTableResult } from './copy';
import { commitCutover, fenceHolds, fenceSource, hardenFence, installFence, liftFence, removeFence, syncSequences } from './cutover';
import { classify } from './errors';
import { preflight, type MigrationPlan, type OtherMigration } from './preflight';
import { notifyWebhook } from './notify';
import { migrationIdOf } from '../workflows/names';
import { createTargetTables, finishTargetTables } from './schema';
import {
  formatValidationFailure,
  proveLive,
  validateAndRepair,
  validateLive,
  validateTables,
  type LiveTableValidation,
  type ProofProgress,
  type ProveLiveInput,
  type ProveLiveResult,
  type RepairOutcome,
  type RepairSettings,
  type TableValidationResult,
  type ValidateLiveInput,
  type ValidateProgress,
  type ValidateTablesInput,
} from './validate';
import { findSchemaDrift } from './schema-drift';
import { runApply } from './apply/run';
import type { ApplyTable } from './apply/options';
import { readApplyProgress } from './apply/progress';
import { withCancellation, withClient } from './db';
import { applyProgressSignal, proofProgressSignal, slotWaitSignal, slotWalSignal, snapshotReadySignal, statusQuery, WORKFLOW_TYPE, type MigrationStatus, type SlotWaitReport } from '../workflows/contract';
import { readSlotWal, walFailure, walReportDue, walVerdict, type WalBudget, type WalVerdict } from './wal';
import { dropApplyProgress, dropTargetTables, type DropTargetResult } from './cleanup';
import { findOrphans, formatLeftover, runningMigrationIds } from './leftovers';
import { migrateSchemaObjects, type SchemaObjectsInput, type SchemaObjectsResult } from './objects';
import type { ConnectionSpec, QualifiedName } from './spec';
import { forgetPlan, readDefs, readTablePlans, storeDefs, storeTablePlans, type PlanRef } from './plan-store';
import { batchDefs, copyBatch, planCopyBatches, type CopyBatchInput, type CopyBatchResult } from './copy-batch';
import { CopyLockWatch } from './lock-wait';
import { CopyProgressReporter, IndexProgressReporter, lockWaitLimit } from './progress-signals';
import type { TableDef } from './model';
import { fenceTables, namePairs, reverseFenceTables, reverseNamePairs, reverseSequencesOf, sequencesOf, targetTables, validationTables } from '../workflows/plan-views';

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

export interface ActivityDeps {
  /** Optional logger; activities log through Temporal's activity logger by default. */
  log?: { info(msg: string, meta?: Record<string, unknown>): void; warn(msg: string, meta?: Record<string, unknown>): void };
  /** The worker encrypts payloads (a payload codec is configured). */
  encrypted?: boolean;
}

/** Its abort listener goes with it: the snapshot holder sleeps once a second for hours. */
const sleep = (ms: number, signal?: AbortSignal) =>
  new Promise<void>((resolve) => {
    const onAbort = () => {
      clearTimeout(t);
      resolve();
    };
    const t = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    signal?.addEventListener('abort', onAbort, { once: true });
  });

function throwIfCancelled(ctx: Context): void {
  if (ctx.cancellationSignal.aborted) {
    const reason: unknown = ctx.cancellationSignal.reason;
    throw reason instanceof Error ? reason : new CancelledFailure(String(reason ?? 'cancelled'));
  }
}

async function signalWorkflow(name: string, arg: unknown): Promise<void> {
  const ctx = Context.current();
  const exec = ctx.info.workflowExecution;
  if (!exec) throw new Error('activity was not started by a workflow');
  const { workflowId, runId } = exec;
  await ctx.client.workflow.getHandle(workflowId, runId).signal(name, arg);
}

/**
 * For activities that spend their time in long SQL statements (DDL, index builds): beats every 2 s so
 * that a cancel is heard, and a cancel cancels their statements on the server and ends as a
 * cancellation (the workflow waits for that before it cleans up, so nothing commits afterwards).
 */
async function cancellable<T>(fn: (heartbeat: (details?: unknown) => void) => Promise<T>): Promise<T> {
  const ctx = Context.current();
  // The timer repeats the activity's last details, so the UI keeps showing its progress.
  let last: unknown;
  const heartbeat = (details?: unknown) => {
    last = details;
    ctx.heartbeat(details);
  };
  const beat = setInterval(() => ctx.heartbeat(last), 2000);
  try {
    const result = await withCancellation(ctx.cancellationSignal, () => fn(heartbeat));
    // Code that reports per-statement failures may have taken the cancelled statements for those.
    throwIfCancelled(ctx);
    return result;
  } catch (err) {
    throwIfCancelled(ctx);
    throw err;
  } finally {
    clearInterval(beat);
  }
}

/**
 * Quick steps beat every 2 s, so that a lost worker is noticed within the heartbeat timeout the
 * workflow gives them (5 s while source writes are stopped, 30 s otherwise), not after their
 * 5-minute start-to-close. Only for activities that send no heartbeat details of their own (this
 * beat carries none).
 */
function beating<A extends unknown[], T>(fn: (...a: A) => Promise<T>): (...a: A) => Promise<T> {
  return async (...a: A) => {
    const ctx = Context.current();
    ctx.heartbeat();
    const beat = setInterval(() => ctx.heartbeat(), 2000);
    try {
      return await fn(...a);
    } finally {
      clearInterval(beat);
    }
  };
}

/**
 * An input whose tables the workflow sends by reference (`plan`): they are read from the plan stored
 * on the target and derived from the definitions by `view`. Inputs with the tables inline (runs
 * recorded before the plan store) pass through unchanged.
 */
type ByRef<I, K extends keyof I> = Omit<I, K> & Partial<Pick<I, K>> & { plan?: PlanRef };
async function resolve<I, K extends keyof I>(input: ByRef<I, K>, key: K, view: (defs: TableDef[]) => I[K]): Promise<I> {
  if (input[key] !== undefined || !input.plan) return input as unknown as I;
  const { plan, ...rest } = input;
  const defs = await readDefs(plan).catch((err: unknown) => {
    throw classify(err, 'read the migration plan from the target');
  });
  return { ...rest, [key]: view(defs) } as unknown as I;
}

/** afterCutover "reverse": the input names the target's side of the plan (the changes flow back). */
type Reversible<I> = I & { reverse?: boolean };
async function resolveSide<I, K extends keyof I>(input: Reversible<ByRef<I, K>>, key: K, view: (defs: TableDef[]) => I[K], reverseView: (defs: TableDef[]) => I[K]): Promise<I> {
  const { reverse, ...rest } = input;
  return resolve<I, K>(rest as ByRef<I, K>, key, reverse ? reverseView : view);
}

/** Results listed in full for the workflow's page of tables, and for at most this many others (the failing ones). */
const RESULTS_BEYOND_PAGE = 100;

export function createActivities(deps: ActivityDeps = {}) {
  const log = deps.log ?? activityLog;
  const copyReporter = new CopyProgressReporter();
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
    /**
     * INIT; refuses an id that a running migration (found through Temporal's visibility) already uses.
     * With `store`: the table list goes to the plan store on the target once every check has passed,
     * and the result carries only its first `store.track` tables and the count.
     */
    preflight: beating(async (spec: unknown, store?: { migrationId: string; track: number }): Promise<MigrationPlan> => {
      const ctx = Context.current();
      const self = ctx.info.workflowExecution?.workflowId;
      const explicitId = typeof (spec as { id?: unknown } | null)?.id === 'string';
      const plan = await preflight(spec, {
        migrationId: self ? migrationIdOf(spec, self) : undefined,
        // A derived id is unique with its workflow id; only an explicit spec.id can be shared.
        runningWithId: explicitId ? (id) => runningMigrationsWithId(ctx, id, self) : undefined,
      });
      // Advisory: what migrations that no longer run left on these servers.
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
        log.warn('could not look for leftovers of earlier migrations', { error: (err as Error).message });
      }
      if (!store) return plan;
      await storeTablePlans({ target: plan.spec.target, migrationId: store.migrationId }, plan.tables).catch((err: unknown) => {
        throw classify(err, 'store the migration plan on the target');
      });
      return { ...plan, tables: plan.tables.slice(0, store.track), tableCount: plan.tables.length };
    }),
    createTargetTables: (...a: Parameters<typeof createTargetTables>) => cancellable(() => createTargetTables(...a)),
    /** CREATING_TABLES by reference: the definitions are stored with the plan; the workflow gets counts. */
    async createPlannedTables(input: { spec: Parameters<typeof createTargetTables>[0]['spec']; plan: PlanRef; migrationId?: string }) {
      return cancellable(async () => {
        const tables = await readTablePlans(input.plan).catch((err: unknown) => {
          throw classify(err, 'read the migration plan from the target');
        });
        const defs = await createTargetTables({ spec: input.spec, tables, migrationId: input.migrationId });
        await storeDefs(input.plan, defs).catch((err: unknown) => {
          throw classify(err, 'store the table definitions on the target');
        });
        const warnings = defs.flatMap((d) => d.warnings ?? []);
        return {
          tables: defs.length,
          warnings: warnings.slice(0, RESULTS_BEYOND_PAGE),
          warningsLeftOut: Math.max(0, warnings.length - RESULTS_BEYOND_PAGE),
          foreignKeys: defs.some((d) => (d.postLoadSteps ?? []).some((st) => st.kind === 'foreign-key') || (d.foreignKeys?.length ?? 0) > 0),
        };
      });
    },
    /** End of MIGRATING_DATA: keys, indexes, constraints, foreign keys and ANALYZE on several sessions. */
    async finishTargetTables(input: ByRef<Parameters<typeof finishTargetTables>[0], 'defs'> & { batch?: number; ords?: number[] }) {
      const ctx = Context.current();
      return cancellable(async (heartbeat) => {
        const { batch, ords, ...rest } = input;
        const resolved =
          rest.defs || !rest.plan
            ? await resolve<Parameters<typeof finishTargetTables>[0], 'defs'>(rest, 'defs', (d) => d)
            : { ...rest, defs: batch !== undefined ? await batchDefs(rest.plan, batch) : await readDefs(rest.plan, ords) };
        const exec = ctx.info.workflowExecution;
        const reporter = exec ? new IndexProgressReporter(ctx, exec.workflowId, exec.runId, ctx.info.activityId) : undefined;
        try {
          return await finishTargetTables(resolved, { heartbeat, signal: ctx.cancellationSignal, ...(reporter ? { builds: (b) => reporter.update(b) } : {}) });
        } finally {
          await reporter?.close();
        }
      });
    },
    createPublication: beating(async (input: ByRef<Parameters<typeof createPublication>[0], 'tables'>) =>
      createPublication(await resolve(input, 'tables', (defs) => defs.map((d) => d.source))),
    ),
    setReplicaIdentity: beating(setReplicaIdentity),
    // `reverse` (afterCutover "reverse", by reference): the fence is on the target's tables.
    fenceSource: beating(async (input: Reversible<ByRef<Parameters<typeof fenceSource>[0], 'tables'>>) =>
      fenceSource(await resolveSide(input, 'tables', fenceTables, reverseFenceTables)),
    ),
    // SYNCING_WAL: the source's fence triggers as a pass-through, armed by fenceSource at the cutover.
    installFence: async (input: ByRef<Parameters<typeof installFence>[0], 'tables'>) => {
      const resolved = await resolve(input, 'tables', fenceTables);
      const ctx = Context.current();
      return cancellable((heartbeat) => installFence(resolved, { heartbeat, signal: ctx.cancellationSignal }));
    },
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
    /** FINALIZING with afterCutover "reverse": publication and slot on the target, before the application moves there. */
    createReverseReplication: beating(async (input: ByRef<Parameters<typeof createReverseReplication>[0], 'tables'>) =>
      createReverseReplication(await resolve(input, 'tables', targetTables)),
    ),

    /** MIGRATING_DATA by reference: sizes, page ranges and batches, stored with the plan. */
    planCopyBatches: beating(planCopyBatches),

    /** Copies one batch of units (many small tables, or one page range) inside the snapshot. */
    async copyTableBatch(input: CopyBatchInput): Promise<CopyBatchResult> {
      const ctx = Context.current();
      const exec = ctx.info.workflowExecution;
      const unit = `batch ${input.batch}`;
      let table = unit;
      // Where the current table started in the batch's progress: reports are per table.
      let start = { rows: 0, bytes: 0 };
      let last = { rows: 0, bytes: 0 };
      const report = () => {
        if (exec) copyReporter.update(ctx, exec.workflowId, exec.runId, { table, unit, snapshot: input.snapshot, rows: last.rows - start.rows, bytes: last.bytes - start.bytes, ...(watch.waiting ? { waiting: watch.waiting } : {}) });
      };
      const limit = lockWaitLimit(input.maxLockWaitSeconds);
      const watch = new CopyLockWatch({ source: input.source, target: input.target }, report, limit.watch);
      try {
        const result = await copyBatch(input, {
          unit: (u) => {
            table = u.table;
            start = u.at;
            watch.table(u.names);
          },
          heartbeat: (p) => {
            ctx.heartbeat(p);
            last = p;
            watch.progress(p.rows);
            report();
          },
          copied: (c) => log.info('table copied', { table: c.table, range: c.range, batch: input.batch, rows: c.rows, ms: c.durationMs }),
          signal: limit.signal(ctx.cancellationSignal),
        });
        log.info('batch copied', { batch: input.batch, units: result.units, rows: result.rows, ms: result.durationMs });
        return result;
      } catch (err) {
        throw limit.failure(table) ?? err;
      } finally {
        await watch.close();
        if (exec) copyReporter.done(exec.workflowId, exec.runId, unit);
      }
    },

    /** The end of a migration kept by reference (finalized, cancelled or failed): its plan rows go. */
    forgetPlan: beating(async (input: { target: ConnectionSpec; migrationId: string }): Promise<void> => {
      const plan: PlanRef = { target: input.target, migrationId: input.migrationId };
      try {
        // Range records exist only for tables copied in ranges; naming every table is harmless.
        const defs = await readDefs(plan).catch(() => []);
        if (defs.length) await forgetCopyProgress({ target: input.target, tables: defs.map((d) => d.target) });
        await forgetPlan(input.target, input.migrationId);
      } catch (err) {
        throw classify(err, 'forget the migration plan');
      }
    }),

    /** FINALIZING (spec.objects): views, materialized views, functions and triggers, renamed through the mapping. */
    async createSchemaObjects(input: ByRef<SchemaObjectsInput, 'tables'>): Promise<SchemaObjectsResult> {
      const ctx = Context.current();
      const resolved = await resolve(input, 'tables', namePairs);
      return cancellable((heartbeat) => migrateSchemaObjects(resolved, { heartbeat, signal: ctx.cancellationSignal }));
    },

    /** VALIDATING: counts, sampled rows and (optionally) chunked checksums, with the failure report. */
    async validateMigration(
      byRef: ByRef<ValidateTablesInput, 'tables'> & { schemas?: string[]; track?: number; repair?: RepairSettings },
    ): Promise<{ results: TableValidationResult[]; failure?: string; schemaDrift?: string[]; totals?: { tables: number; failed: number; repaired?: number }; repair?: RepairOutcome }> {
      const ctx = Context.current();
      const input = { ...(await resolve<ValidateTablesInput, 'tables'>(byRef, 'tables', validationTables)), schemas: byRef.schemas };
      // Beat on a timer too: a comparison blocked in one long query must still hear a cancel.
      const beat = setInterval(() => ctx.heartbeat(), 1000);
      try {
        // DDL the apply never saw (no write came after it) is found here, not in the rows.
        const drift = await findSchemaDrift(input).catch((err: unknown) => {
          throw classify(err, 'compare the source schema with the one migrated');
        });
        const hooks = { onProgress: (p: ValidateProgress) => ctx.heartbeat(p), signal: ctx.cancellationSignal };
        // validation.repair: never on a schema that drifted (the failure below names the drift).
        const { results, repair } = byRef.repair && !drift.length ? await validateAndRepair(input, byRef.repair, hooks) : { results: await validateTables(input, hooks), repair: undefined };
        throwIfCancelled(ctx);
        const failures: string[] = [];
        if (repair?.refused) failures.push(`validation.repair: ${repair.refused}`);
        if (drift.length) {
          failures.push(
            'the source schema changed during the migration; pg-dts does not replicate DDL, so the target lacks these changes ' +
              `(restart the migration once the source schema is settled):\n${drift.map((d) => `  - ${d}`).join('\n')}`,
          );
        }
        if (results.some((r) => !r.ok)) failures.push(formatValidationFailure(results));
        const failure = failures.length ? failures.join('\n') : undefined;
        if (!byRef.plan) return { results, failure, ...(drift.length ? { schemaDrift: drift } : {}), ...(repair ? { repair } : {}) };
        // By reference: the page of tables and the first failing or repaired others, with the totals.
        const track = byRef.track ?? 0;
        const listed = [...results.filter((_, i) => i < track), ...results.filter((r, i) => i >= track && (!r.ok || r.repair)).slice(0, RESULTS_BEYOND_PAGE)];
        return {
          results: listed,
          failure: failure && failure.length > 64 * 1024 ? `${failure.slice(0, 64 * 1024)}\n…` : failure,
          ...(drift.length ? { schemaDrift: drift.slice(0, RESULTS_BEYOND_PAGE) } : {}),
          totals: { tables: results.length, failed: results.filter((r) => !r.ok).length, ...(repair ? { repaired: repair.tables } : {}) },
          ...(repair ? { repair } : {}),
        };
      } finally {
        clearInterval(beat);
      }
    },

    /** Advisory check during SYNCING_WAL: tolerates rows changing under it. */
    async validateLive(byRef: ByRef<ValidateLiveInput, 'tables'> & { track?: number }): Promise<LiveTableValidation[]> {
      const ctx = Context.current();
      const input = await resolve<ValidateLiveInput, 'tables'>(byRef, 'tables', validationTables);
      const results = await validateLive(input, { onProgress: (p) => ctx.heartbeat(p), signal: ctx.cancellationSignal });
      throwIfCancelled(ctx);
      if (!byRef.plan) return results;
      const track = byRef.track ?? 0;
      return [...results.filter((_, i) => i < track), ...results.filter((r, i) => i >= track && r.checksum === 'mismatch').slice(0, RESULTS_BEYOND_PAGE)];
    },

    /**
     * SYNCING_WAL: the content proof's passes, until cancelled (or a divergence is confirmed). Its
     * state lives on the target, so a retry, a new run or VALIDATING continues from it.
     */
    async proveLive(byRef: ByRef<ProveLiveInput, 'tables'>): Promise<ProveLiveResult> {
      const ctx = Context.current();
      const input = await resolve<ProveLiveInput, 'tables'>(byRef, 'tables', validationTables);
      let last: ProofProgress | undefined;
      let sent = '';
      let every = 2000;
      let pending: Promise<void> = Promise.resolve();
      const send = () => {
        if (!last || JSON.stringify(last) === sent) return;
        sent = JSON.stringify(last);
        const p = last;
        pending = pending.then(() => signalWorkflow(proofProgressSignal.name, p).catch(() => undefined));
      };
      // Every signal is a history event: every 2 s at first, doubling to 30 s; the first complete pass
      // at once (the cutover waits for it).
      let timer: NodeJS.Timeout | undefined;
      const tick = () => {
        send();
        every = Math.min(30_000, every * 2);
        timer = setTimeout(tick, every);
      };
      timer = setTimeout(tick, every);
      const beat = setInterval(() => ctx.heartbeat(last), 1000);
      try {
        const result = await proveLive(input, {
          signal: ctx.cancellationSignal,
          onProofProgress: (p) => {
            const first = p.passesComplete > 0 && (last?.passesComplete ?? 0) === 0;
            last = p;
            if (first) send();
          },
        });
        await pending;
        throwIfCancelled(ctx);
        return result;
      } finally {
        clearTimeout(timer);
        clearInterval(beat);
      }
    },

    dropTargetTables: beating(async (input: { target: ConnectionSpec; tables?: QualifiedName[]; plan?: PlanRef; migrationId?: string }): Promise<DropTargetResult> => {
      try {
        // By reference: INIT's list (CREATING_TABLES may have failed before storing definitions).
        const tables = input.tables ?? (input.plan ? (await readTablePlans(input.plan)).map((t) => t.target) : []);
        return await dropTargetTables(input.target, tables, input.migrationId);
      } catch (err) {
        throw classify(err, 'drop target tables');
      }
    }),

    /** MIGRATING_DATA: the size of each table and, for the large ones, the page ranges to copy. */
    planCopies: beating(planCopies),

    /**
     * Before one copy round of ranged tables: empties them and forgets earlier range records. Returns
     * how many ranges an earlier round had committed (copied twice from now on).
     */
    prepareRangedCopies: beating(async (input: {
      target: ConnectionSpec;
      tables?: QualifiedName[];
      plan?: PlanRef;
      ords?: number[];
      snapshot?: string;
      snapshotLsn?: string;
      migrationId?: string;
    }): Promise<number> => {
      const tables = input.tables ?? (input.plan ? (await readDefs(input.plan, input.ords ?? [])).map((d) => d.target) : []);
      let removed = 0;
      for (const table of tables) removed += await prepareRangedCopy({ target: input.target, table, snapshot: input.snapshot, snapshotLsn: input.snapshotLsn, migrationId: input.migrationId });
      return removed;
    }),

    forgetCopyProgress: beating(forgetCopyProgress),

    async copyTable(input: CopyTableInput): Promise<CopyTableResult> {
      const ctx = Context.current();
      const exec = ctx.info.workflowExecution;
      const table = `${input.table.source.schema}.${input.table.source.name}`;
      const unit = input.range ? `${table}#${input.range.id}` : table;
      let last = { rows: 0, bytes: 0 };
      const report = () => {
        if (exec) copyReporter.update(ctx, exec.workflowId, exec.runId, { table, unit, snapshot: input.snapshot, rows: last.rows, bytes: last.bytes, ...(watch.waiting ? { waiting: watch.waiting } : {}) });
      };
      const limit = lockWaitLimit(input.maxLockWaitSeconds);
      const watch = new CopyLockWatch({ source: input.source, target: input.target }, report, limit.watch);
      watch.table(input.table);
      try {
        const result = await copyTable(input, {
          heartbeat: (p) => {
            ctx.heartbeat(p);
            last = p;
            watch.progress(p.rows);
            report();
          },
          signal: limit.signal(ctx.cancellationSignal),
        });
        log.info('table copied', { table, range: input.range?.id, rows: result.rows, ms: result.durationMs });
        return result;
      } catch (err) {
        throw limit.failure(table) ?? err;
      } finally {
        await watch.close();
        if (exec) copyReporter.done(exec.workflowId, exec.runId, unit);
      }
    },

    /**
     * Creates the slot, tells the workflow the exported snapshot's name, then keeps the creating
     * connection open and idle until cancelled (every copy has imported the snapshot by then). If this
     * activity dies, the snapshot dies with it; the workflow notices by the heartbeat timeout.
     */
    async holdSnapshot(input: {
      source: ConnectionSpec;
      slot: string;
      attempt: number;
      failover?: boolean;
      /**
       * A resumed copy: the migration's slot stays as it is; the snapshot comes from a temporary slot
       * of this name (gone with this activity's connection).
       */
      resumeSlot?: string;
      /** slot.maxWaitSeconds: how long the slot's creation may wait for older transactions. */
      maxWaitSeconds?: number;
    }): Promise<{ consistentPoint: string }> {
      const ctx = Context.current();
      // CREATE_REPLICATION_SLOT waits until every transaction older than it has ended, for as long as
      // they run: beat meanwhile (or the 20 s heartbeat timeout ends the holder), let a cancel cancel
      // the statement, and tell the workflow which transaction it waits for.
      const since = new Date().toISOString();
      let waiting: SlotWaitReport | undefined;
      const beat = setInterval(() => ctx.heartbeat({ creatingSlot: since, ...(waiting ? { waiting } : {}) }), 2000);
      // Every signal is a history event: one when the blocker changes, else refreshes 5 s, 10 s, ... 5 min apart.
      let refreshMs = 5000;
      let lastSent = 0;
      // slot.maxWaitSeconds: the creation is cancelled on the server and the holder fails naming what it waited for.
      const giveUp = new AbortController();
      ctx.cancellationSignal.addEventListener('abort', () => giveUp.abort(), { once: true });
      let timedOut: string | undefined;
      const limit = input.maxWaitSeconds
        ? setTimeout(() => {
            const on = waiting?.pid !== undefined ? `the transaction of pid ${waiting.pid} (open ${waiting.ageSeconds ?? '?'} s${waiting.state ? `, ${waiting.state}` : ''})` : 'older transactions';
            timedOut = `the replication slot's creation waited ${input.maxWaitSeconds} s (slot.maxWaitSeconds) for ${on} to end; end it, or start when no long transaction runs on the source`;
            giveUp.abort();
          }, input.maxWaitSeconds * 1000)
        : undefined;
      const watch = setInterval(() => {
        void slotCreationBlocker(input.source, input.resumeSlot ?? input.slot)
          .then((b) => {
            if (b === undefined) return undefined;
            const changed = b.pid !== waiting?.pid || waiting === undefined;
            waiting = { for: 'slot creation', since, ...b };
            if (!changed && Date.now() - lastSent < refreshMs) return undefined;
            if (!changed) refreshMs = Math.min(300_000, refreshMs * 2);
            lastSent = Date.now();
            return signalWorkflow(slotWaitSignal.name, waiting);
          })
          .catch(() => undefined);
      }, 5000);
      let handle: Awaited<ReturnType<typeof createSlotWithSnapshot>>;
      try {
        handle = await withCancellation(giveUp.signal, () =>
          input.resumeSlot ? createResumeSnapshot(input.source, input.resumeSlot) : createSlotWithSnapshot(input.source, input.slot, { failover: input.failover }),
        );
      } catch (err) {
        throwIfCancelled(ctx);
        if (timedOut) throw ApplicationFailure.create({ message: timedOut, type: 'SlotWaitTimeout', nonRetryable: true });
        throw err;
      } finally {
        clearInterval(beat);
        clearInterval(watch);
        clearTimeout(limit);
      }
      try {
        await signalWorkflow(snapshotReadySignal.name, {
          attempt: input.attempt,
          snapshotName: handle.snapshotName,
          consistentPoint: handle.consistentPoint,
        });
        // The snapshot lives exactly as long as this connection: if the server ends it, fail at once so
        // the workflow redoes the copy instead of waiting on a snapshot nobody can import any more.
        let lost: Error | undefined;
        const onLost = (err?: Error) => void (lost ??= new Error(`the connection holding snapshot ${handle.snapshotName} was lost${err ? `: ${err.message}` : ''}`));
        handle.client.on('error', onLost);
        handle.client.on('end', () => onLost());
        while (!ctx.cancellationSignal.aborted && !lost) {
          ctx.heartbeat({ snapshotName: handle.snapshotName });
          await sleep(1000, ctx.cancellationSignal);
        }
        throwIfCancelled(ctx);
        if (lost) throw lost;
        return { consistentPoint: handle.consistentPoint };
      } finally {
        await handle.client.end().catch(() => undefined);
      }
    },

    /**
     * SYNCING_WAL: streams the slot into the target until cancelled. Resumes from the target's
     * recorded position after any crash or retry. Reports progress to the workflow by signal.
     */
    async applyChanges(
      byRef: Reversible<ByRef<
        {
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
        },
        'tables'
      >>,
    ): Promise<{ appliedLsn: string }> {
      const ctx = Context.current();
      const input = await resolveSide(byRef, 'tables', namePairs, reverseNamePairs);
      let lastSignal = 0;
      const startedAt = Date.now();
      let lastFence: string | undefined;
      let lastSignalledLag = Number.POSITIVE_INFINITY;
      let pending: Promise<void> = Promise.resolve();
      const prev = ctx.info.heartbeatDetails as { transactions?: number; changes?: number } | undefined;
      const base = { transactions: prev?.transactions ?? 0, changes: prev?.changes ?? 0 };
      const controller = new AbortController();
      ctx.cancellationSignal.addEventListener('abort', () => controller.abort());
      // Cancellation arrives only with a heartbeat's response: beat every second from the start, not
      // only when the apply reports progress, so a pause or cutover stops it promptly.
      let lastDetails: unknown = prev;
      const beat = setInterval(() => ctx.heartbeat(lastDetails), 1000);
      try {
        const result = await runApply({
          source: input.source,
          target: input.target,
          slot: input.slot,
          publication: input.publication,
          tables: input.tables,
          ...(input.replicaRole === false ? { replicaRole: false } : {}),
          signal: controller.signal,
          onProgress: (raw) => {
            // Counts accumulate across attempts: a retried apply continues the totals of the last one.
            const p = { ...raw, transactions: base.transactions + raw.transactions, changes: base.changes + raw.changes };
            lastDetails = p;
            ctx.heartbeat(p);
            const now = Date.now();
            const fenceNew = p.fenceToken !== undefined && p.fenceToken !== lastFence;
            // Every signal is a history event: report every 2 s while the lag matters (first minutes
            // of a run, or the apply behind), then every 15 s; the fence marker at once.
            const steady = now - startedAt > 120_000 && p.lagBytes < 1024 * 1024;
            const every = input.reportEveryMs ?? (steady ? 15_000 : 2_000);
            // The lag has just come under the cutover threshold: the workflow waits for that news.
            const caughtUp = input.cutoverLagBytes !== undefined && p.lagBytes <= input.cutoverLagBytes && lastSignalledLag > input.cutoverLagBytes;
            if (fenceNew || caughtUp || now - lastSignal >= every) {
              lastSignal = now;
              lastSignalledLag = p.lagBytes;
              lastFence = p.fenceToken;
              // Serialise signals so the workflow sees progress in order; a failed signal is not fatal.
              pending = pending.then(() => signalWorkflow(applyProgressSignal.name, p).catch(() => undefined));
            }
          },
        });
        await pending;
        // Stopped by cancellation (the workflow's, or a worker shutdown): say so, never "completed",
        // or the workflow would take a stopped apply for a finished one.
        throwIfCancelled(ctx);
        return { appliedLsn: result.appliedLsn };
      } catch (err) {
        throwIfCancelled(ctx);
        throw classify(err, 'apply changes');
      } finally {
        clearInterval(beat);
      }
    },

    /**
     * The WAL budget, from the slot's creation until cancelled: reports what the slot retains, fails
     * (non-retryable) past wal.maxRetainedBytes or when the source has invalidated the slot. A slot
     * not created yet is waited for.
     */
    async watchSlotWal(input: { source: ConnectionSpec; slot: string; everyMs?: number } & WalBudget): Promise<void> {
      const ctx = Context.current();
      let prev: { verdict: WalVerdict; retainedBytes: number; at: number } | undefined;
      while (!ctx.cancellationSignal.aborted) {
        const w = await readSlotWal(input.source, input.slot).catch((err: unknown) => {
          throw classify(err, `read replication slot ${input.slot}`);
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
    },

    /** Waits until the apply has committed the fence marker on the target (heartbeating). */
    async awaitFenceApplied(input: { target: ConnectionSpec; slot: string; token: string }): Promise<{ appliedLsn: string }> {
      const ctx = Context.current();
      for (;;) {
        const p = await withClient(input.target, (c) => readApplyProgress(c, input.slot));
        if (p?.fenceToken === input.token) return { appliedLsn: p.appliedLsn };
        ctx.heartbeat({ appliedLsn: p?.appliedLsn });
        await sleep(200, ctx.cancellationSignal);
        if (ctx.cancellationSignal.aborted) throw new Error('cancelled while waiting for the apply to pass the fence');
      }
    },

    /** Drops the slot (ending its walsender), the publication and the target's progress row. */
    dropReplication: beating(async (input: { source: ConnectionSpec; target: ConnectionSpec; slot: string; publication: string }): Promise<void> => {
      try {
        await dropSlot(input.source, input.slot);
        await dropPublication(input.source, input.publication);
        await dropApplyProgress(input.target, input.slot);
      } catch (err) {
        throw classify(err, 'drop replication slot and publication');
      }
    }),

  };
}

export type Activities = ReturnType<typeof createActivities>;

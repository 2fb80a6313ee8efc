/**
 * What every activity needs at the Temporal edge: heartbeats, cancellation, signals back to the
 * workflow, inputs the workflow sends by reference to the plan stored on the target, and the one
 * place where errors become Temporal failures (`toFailure`, applied to every activity by `atEdge`).
 * The phase modules do the database work and never see Temporal's activity context or failures.
 */
import { ApplicationFailure, CancelledFailure, Context, log as activityLog } from '@temporalio/activity';
import { during, finalVerdict, StepError } from './errors';
import { withCancellation } from './db';
import { readDefs, type PlanRef } from './plan-store';
import type { TableDef } from './model';

export interface ActivityLog {
  info(msg: string, meta?: Record<string, unknown>): void;
  warn(msg: string, meta?: Record<string, unknown>): void;
}

/** Temporal's activity logger: the default when the worker passes none. */
export const defaultLog: ActivityLog = activityLog;

/** Results listed in full for the workflow's page of tables, and for at most this many others (the failing ones). */
export const RESULTS_BEYOND_PAGE = 100;

/**
 * The error an activity ends with, as Temporal carries it: a final one (activities/errors.ts
 * `finalVerdict`) becomes a non-retryable ApplicationFailure of its registry type; a step's error
 * stays retryable with the step's message, without its cause (the driver's own error is not carried
 * into history); anything else (cancellation, Temporal's own failures, an error no step named) as is.
 */
export function toFailure(err: unknown): unknown {
  const final = finalVerdict(err);
  if (final) return ApplicationFailure.create({ message: final.message, type: final.type, nonRetryable: true, details: final.details === undefined ? undefined : [final.details] });
  if (err instanceof StepError) {
    const plain = new Error(err.message);
    plain.name = err.name;
    return plain;
  }
  return err;
}

type AnyFn = (...a: never[]) => unknown;

/** Every function of the registry, its errors turned into Temporal failures at this edge and nowhere else. */
export function atEdge<T extends Record<string, AnyFn>>(activities: T): T {
  const wrapped: Record<string, AnyFn> = {};
  for (const [name, fn] of Object.entries(activities)) {
    wrapped[name] = async (...a: never[]) => {
      try {
        return await fn(...a);
      } catch (err) {
        throw toFailure(err);
      }
    };
  }
  return wrapped as T;
}

/** Its abort listener goes with it: the snapshot holder sleeps once a second for hours. */
export const sleep = (ms: number, signal?: AbortSignal) =>
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

export function throwIfCancelled(ctx: Context): void {
  if (ctx.cancellationSignal.aborted) {
    const reason: unknown = ctx.cancellationSignal.reason;
    throw reason instanceof Error ? reason : new CancelledFailure(String(reason ?? 'cancelled'));
  }
}

export async function signalWorkflow(name: string, arg: unknown): Promise<void> {
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
export async function cancellable<T>(fn: (heartbeat: (details?: unknown) => void) => Promise<T>): Promise<T> {
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
export function beating<A extends unknown[], T>(fn: (...a: A) => Promise<T>): (...a: A) => Promise<T> {
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
export type ByRef<I, K extends keyof I> = Omit<I, K> & Partial<Pick<I, K>> & { plan?: PlanRef };
export async function resolve<I, K extends keyof I>(input: ByRef<I, K>, key: K, view: (defs: TableDef[]) => I[K]): Promise<I> {
  if (input[key] !== undefined || !input.plan) return input as unknown as I;
  const { plan, ...rest } = input;
  const defs = await readDefs(plan).catch((err: unknown) => {
    throw during(err, 'read the migration plan from the target');
  });
  return { ...rest, [key]: view(defs) } as unknown as I;
}

/** afterCutover "reverse": the input names the target's side of the plan (the changes flow back). */
export type Reversible<I> = I & { reverse?: boolean };
export async function resolveSide<I, K extends keyof I>(input: Reversible<ByRef<I, K>>, key: K, view: (defs: TableDef[]) => I[K], reverseView: (defs: TableDef[]) => I[K]): Promise<I> {
  const { reverse, ...rest } = input;
  return resolve<I, K>(rest as ByRef<I, K>, key, reverse ? reverseView : view);
}

/**
 * Builds a worker for the migration task queue. Used by `npm run worker`, the demo and the tests.
 */
import type { Connection as ClientConnection } from '@temporalio/client';
import { NativeConnection, Worker, type WorkerOptions as TemporalWorkerOptions, type WorkflowBundleOption } from '@temporalio/worker';
import { temporal } from '@temporalio/proto';
import type { DataConverter } from '@temporalio/common';
import { createActivities } from '../activities';
import { FAILURE_CONVERTER_PATH } from '../connection/codec';
import { bundleInProcess, prebuiltWorkflowBundle } from './bundle';
import { setFlagsFromString } from 'node:v8';
import { workerTuning, type WorkerTuning } from './config';

let bundle: Promise<WorkflowBundleOption> | undefined;
/**
 * The workflow code, once per process: the prebuilt bundle (worker/bundle.ts) when it was built from
 * the current sources, else bundled here with webpack (seconds, and about 100 MB more for good).
 * PG_DTS_WORKFLOW_BUNDLE=build always bundles here.
 */
export function workflowBundle(env: NodeJS.ProcessEnv = process.env): Promise<WorkflowBundleOption> {
  bundle ??= (async () => {
    if (env.PG_DTS_WORKFLOW_BUNDLE !== 'build') {
      const prebuilt = prebuiltWorkflowBundle();
      if (prebuilt.fresh) return { codePath: prebuilt.codePath };
    }
    return bundleInProcess();
  })();
  return bundle;
}

export interface WorkerOptions {
  connection: NativeConnection;
  namespace: string;
  taskQueue: string;
  maxConcurrentActivityTaskExecutions?: number;
  /** Memory settings; default workerTuning(process.env) (worker/config.ts). */
  tuning?: Partial<WorkerTuning>;
  /** Payload codec etc. (connection/codec.ts): must match the clients' when payloads are encrypted. */
  dataConverter?: DataConverter;
  /** Workflow code; default workflowBundle(). */
  workflowBundle?: WorkflowBundleOption;
}

/**
 * The Worker options that follow from the memory settings (worker/config.ts). isolateExecutionTimeout is
 * not in the SDK's WorkerOptions type ("not exposed at the moment") but Worker.create honours it (1.24:
 * user options are spread over the defaults); test/unit/worker-config.test.ts checks the compiled value.
 */
export function temporalWorkerOptions(
  tuning: WorkerTuning,
): Pick<TemporalWorkerOptions, 'maxConcurrentActivityTaskExecutions' | 'maxCachedWorkflows' | 'workflowThreadPoolSize' | 'debugMode'> & { isolateExecutionTimeout?: string } {
  return {
    maxConcurrentActivityTaskExecutions: tuning.maxConcurrentActivityTaskExecutions,
    maxCachedWorkflows: tuning.maxCachedWorkflows,
    // 0 threads: the SDK's in-thread mode (named debugMode, made for debuggers) with the same 5 s limit
    // on one workflow activation as the threaded mode (debugMode alone would lift it). Saves the thread's
    // own V8 isolate and Node environment, about 40 MB; workflow activations are short and rare here.
    ...(tuning.workflowThreadPoolSize === 0 ? { debugMode: true, isolateExecutionTimeout: '5s' } : { workflowThreadPoolSize: tuning.workflowThreadPoolSize }),
  };
}

export async function createWorker(opts: WorkerOptions): Promise<Worker> {
  const tuning = { ...workerTuning(), ...opts.tuning };
  if (opts.maxConcurrentActivityTaskExecutions !== undefined) tuning.maxConcurrentActivityTaskExecutions = opts.maxConcurrentActivityTaskExecutions;
  // V8 reads this when it creates an isolate: it sizes the young generation of isolates created from now
  // on (a workflow thread, if any), not this thread's, which only a node flag sets
  // (node --max-semi-space-size=N, or NODE_OPTIONS: config.ts MAIN_SEMI_SPACE_MB, what npm run worker sets).
  if (tuning.semiSpaceMb !== undefined) setFlagsFromString(`--max-semi-space-size=${tuning.semiSpaceMb}`);
  // Read by V8 each time it sets the next old-generation limit: applies to this thread too.
  if (tuning.heapGrowingPercent !== undefined) setFlagsFromString(`--heap-growing-percent=${tuning.heapGrowingPercent}`);
  return Worker.create({
    connection: opts.connection,
    namespace: opts.namespace,
    taskQueue: opts.taskQueue,
    workflowBundle: opts.workflowBundle ?? (await workflowBundle()),
    activities: createActivities({ encrypted: Boolean(opts.dataConverter?.payloadCodecs?.length) }),
    // The bundle is built with the same failure converter (worker/bundle.ts): workflow and activity
    // failures alike keep their message in an encoded (with a key, encrypted) payload.
    dataConverter: { ...opts.dataConverter, failureConverterPath: FAILURE_CONVERTER_PATH },
    ...(temporalWorkerOptions(tuning) as Partial<TemporalWorkerOptions>),
    // Cancellation reaches an activity only with a heartbeat response: send heartbeats promptly so a
    // cancelled apply or snapshot holder stops within a second or two (the cutover window waits on it).
    maxHeartbeatThrottleInterval: '1 second',
  });
}

/** Search attributes the workflow writes; registered if the namespace lacks them. */
export const SEARCH_ATTRIBUTES = { MigrationPhase: temporal.api.enums.v1.IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD };

/** Takes a client Connection or the worker's NativeConnection (no second, grpc-js connection needed). */
export async function ensureSearchAttributes(connection: Pick<ClientConnection, 'operatorService'>, namespace: string): Promise<string[]> {
  const existing = await connection.operatorService.listSearchAttributes({ namespace });
  const have = { ...(existing.customAttributes ?? {}), ...(existing.systemAttributes ?? {}) };
  const missing = Object.fromEntries(Object.entries(SEARCH_ATTRIBUTES).filter(([k]) => !(k in have)));
  if (Object.keys(missing).length === 0) return [];
  await connection.operatorService.addSearchAttributes({ namespace, searchAttributes: missing });
  return Object.keys(missing);
}

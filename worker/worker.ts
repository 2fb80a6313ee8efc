/**
 * Builds a worker for the migration task queue. Used by `npm run worker`, the demo and the tests.
 */
import type { Connection as ClientConnection } from '@temporalio/client';
import { NativeConnection, Worker, type WorkflowBundleOption } from '@temporalio/worker';
import { temporal } from '@temporalio/proto';
import type { DataConverter } from '@temporalio/common';
import { createActivities } from '../activities';
import { bundleInProcess, prebuiltWorkflowBundle } from './bundle';

export { workflowsPath } from './bundle';

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
  /** Payload codec etc. (client/codec.ts): must match the clients' when payloads are encrypted. */
  dataConverter?: DataConverter;
  /** Workflow code; default workflowBundle(). */
  workflowBundle?: WorkflowBundleOption;
}

export async function createWorker(opts: WorkerOptions): Promise<Worker> {
  return Worker.create({
    connection: opts.connection,
    namespace: opts.namespace,
    taskQueue: opts.taskQueue,
    workflowBundle: opts.workflowBundle ?? (await workflowBundle()),
    activities: createActivities(),
    dataConverter: opts.dataConverter,
    maxConcurrentActivityTaskExecutions: opts.maxConcurrentActivityTaskExecutions ?? 32,
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

/**
 * Builds a worker for the migration task queue. Used by `npm run worker`, the demo and the tests.
 */
import type { Connection as ClientConnection } from '@temporalio/client';
import { NativeConnection, Worker, bundleWorkflowCode, type WorkflowBundleWithSourceMap } from '@temporalio/worker';
import { temporal } from '@temporalio/proto';
import type { DataConverter } from '@temporalio/common';
import path from 'node:path';
import { createActivities } from '../activities';

export const workflowsPath = path.join(__dirname, '..', 'workflows', 'index.ts');

let bundle: Promise<WorkflowBundleWithSourceMap> | undefined;
/** The workflow bundle is built once per process (it takes seconds). */
export function workflowBundle(): Promise<WorkflowBundleWithSourceMap> {
  bundle ??= bundleWorkflowCode({ workflowsPath, logger: quietBundlerLogger });
  return bundle;
}

const quietBundlerLogger = {
  trace: () => undefined,
  debug: () => undefined,
  info: () => undefined,
  log: () => undefined,
  warn: (m: string, meta?: unknown) => console.warn(m, meta ?? ''),
  error: (m: string, meta?: unknown) => console.error(m, meta ?? ''),
};

export interface WorkerOptions {
  connection: NativeConnection;
  namespace: string;
  taskQueue: string;
  maxConcurrentActivityTaskExecutions?: number;
  /** Payload codec etc. (client/codec.ts): must match the clients' when payloads are encrypted. */
  dataConverter?: DataConverter;
}

export async function createWorker(opts: WorkerOptions): Promise<Worker> {
  return Worker.create({
    connection: opts.connection,
    namespace: opts.namespace,
    taskQueue: opts.taskQueue,
    workflowBundle: await workflowBundle(),
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

export async function ensureSearchAttributes(connection: ClientConnection, namespace: string): Promise<string[]> {
  const existing = await connection.operatorService.listSearchAttributes({ namespace });
  const have = { ...(existing.customAttributes ?? {}), ...(existing.systemAttributes ?? {}) };
  const missing = Object.fromEntries(Object.entries(SEARCH_ATTRIBUTES).filter(([k]) => !(k in have)));
  if (Object.keys(missing).length === 0) return [];
  await connection.operatorService.addSearchAttributes({ namespace, searchAttributes: missing });
  return Object.keys(missing);
}

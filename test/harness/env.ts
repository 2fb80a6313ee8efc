/**
 * One test environment: a source and a target PostgreSQL cluster, a Temporal dev server and a worker
 * polling a task queue of its own. Everything real; torn down by stop().
 */
import { randomUUID } from 'node:crypto';
import type { TestWorkflowEnvironment } from '@temporalio/testing';
import { Worker } from '@temporalio/worker';
import { startCluster, versionFromEnv, type PgCluster } from './pg-cluster';
import { startTemporal } from './temporal';
import { createWorker } from '../../worker/worker';
import { quietTemporalLogs } from '../../worker/logging';
import { loadShopData, SHOP_SCHEMA } from './fixtures';
import { WORKFLOW_TYPE, type MigrationReport, type MigrationStatus } from '../../workflows/contract';
import type { MigrationSpecInput } from '../../activities/spec';
import { reportOf } from '../../client/temporal';

export interface TestEnv {
  /** A new database `name` on both clusters; on the source, the shop schema with data at `scale`. */
  shopDatabase(name: string, scale?: number): Promise<void>;
  source: PgCluster;
  target: PgCluster;
  temporal: TestWorkflowEnvironment;
  taskQueue: string;
  startMigration(spec: MigrationSpecInput | Record<string, unknown>, workflowId?: string): Promise<MigrationHandle>;
  /** Restarts the worker (simulates a worker crash: in-flight activities are lost and retried). */
  restartWorker(): Promise<void>;
  stop(): Promise<void>;
}

export interface MigrationHandle {
  workflowId: string;
  status(): Promise<MigrationStatus>;
  result(): Promise<MigrationReport>;
  signal(name: 'pause' | 'resume' | 'cancel' | 'cutover'): Promise<void>;
  waitForPhase(phase: string, timeoutMs?: number): Promise<MigrationStatus>;
}

export interface EnvOptions {
  sourceSettings?: Record<string, string | number>;
  /** Major versions of the two clusters; default PG_DTS_TEST_SOURCE_VERSION / PG_DTS_TEST_TARGET_VERSION, else the system's. */
  sourceVersion?: number;
  targetVersion?: number;
  /** false: no worker in the test's process (tests that run workers in processes of their own). */
  inProcessWorker?: boolean;
}

export async function startEnv(opts: EnvOptions = {}): Promise<TestEnv> {
  quietTemporalLogs(process.env.PG_DTS_TEST_LOG === 'info' ? undefined : 'ERROR');
  const sourceVersion = opts.sourceVersion ?? versionFromEnv('PG_DTS_TEST_SOURCE_VERSION');
  const targetVersion = opts.targetVersion ?? versionFromEnv('PG_DTS_TEST_TARGET_VERSION');
  const [source, target, temporal] = await Promise.all([
    startCluster({ name: 'source', settings: opts.sourceSettings, version: sourceVersion }),
    startCluster({ name: 'target', version: targetVersion }),
    startTemporal(),
  ]);
  const taskQueue = `test-${randomUUID()}`;
  let worker: Worker | undefined;
  let running: Promise<void> | undefined;
  const startWorker = async () => {
    worker = await createWorker({ connection: temporal.nativeConnection, namespace: temporal.namespace ?? 'default', taskQueue });
    running = worker.run();
  };
  const stopWorker = async () => {
    if (worker && worker.getState() === 'RUNNING') worker.shutdown();
    await running?.catch(() => undefined);
  };
  if (opts.inProcessWorker !== false) await startWorker();
  return {
    async shopDatabase(name, scale = 0.2) {
      await source.createDatabase(name);
      await target.createDatabase(name);
      const c = await source.client(name);
      try {
        await c.query(SHOP_SCHEMA);
        await loadShopData(c, scale);
      } finally {
        await c.end();
      }
    },
    source,
    target,
    temporal,
    taskQueue,
    async startMigration(spec, workflowId = `test-${randomUUID()}`) {
      const handle = await temporal.client.workflow.start(WORKFLOW_TYPE, { taskQueue, workflowId, args: [spec] });
      const status = () => handle.query<MigrationStatus>('status');
      return {
        workflowId,
        status,
        // A cancelled migration ends CANCELED, without a result: its report comes from the `report` query.
        result: () => reportOf(handle),
        signal: (name) => handle.signal(name),
        async waitForPhase(phase, timeoutMs = 120_000) {
          const deadline = Date.now() + timeoutMs;
          for (;;) {
            const s = await status();
            if (s.phase === phase) return s;
            if (['COMPLETED', 'FAILED', 'CANCELLED'].includes(s.phase) && s.phase !== phase) {
              throw new Error(`migration ended in ${s.phase} while waiting for ${phase}: ${s.error ?? ''}`);
            }
            if (Date.now() > deadline) throw new Error(`timed out waiting for phase ${phase}; now ${s.phase}`);
            await new Promise((r) => setTimeout(r, 200));
          }
        },
      };
    },
    async restartWorker() {
      await stopWorker();
      await startWorker();
    },
    async stop() {
      await stopWorker();
      await Promise.allSettled([temporal.teardown(), source.destroy(), target.destroy()]);
    },
  };
}

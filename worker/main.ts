/**
 * `npm run worker` / `dts worker`: a worker for the migration task queue, configured from
 * TEMPORAL_ADDRESS, TEMPORAL_NAMESPACE and TEMPORAL_TASK_QUEUE, encrypting payloads when
 * PG_DTS_CODEC_KEY is set (the same key as the clients and the API). Start as many as you like: any
 * worker takes any copy. SIGINT/SIGTERM shut it down gracefully.
 *
 * The workflow code comes from the prebuilt bundle (`npm run build:bundle`, worker/bundle.ts). When it
 * is missing or stale the worker rebuilds it in a child process, so webpack's memory goes away with the
 * child instead of staying in the worker; if that fails it bundles in process, as before.
 *
 * Memory (issue 7; worker/config.ts): one workflow thread (PG_DTS_WORKFLOW_THREADS; 0 would save its
 * ~40 MB isolate but slowed a large apply), copies use 256 KiB stream buffers (PG_DTS_COPY_BUFFER_KB). The main thread's
 * young generation is a node flag, `--max-semi-space-size=32` in `npm run worker` and the Docker image
 * (config.ts MAIN_SEMI_SPACE_MB: less of the apply's data promoted, 13-20% less worker CPU in a
 * catch-up); the log says what it runs with. Smaller costs CPU: `--max-semi-space-size=4` saved ~20 MB
 * idle but one 1 GiB transaction peaked higher (330 MB vs 274 MB) and took more CPU (24.6 s vs 17.4 s).
 */
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import type { WorkflowBundleOption } from '@temporalio/worker';
import { NativeConnection } from '@temporalio/worker';
import { buildInChildProcess, prebuiltWorkflowBundle, repoRoot } from './bundle';
import { describeTemporalSecurity, mainSemiSpaceMb, payloadEncryption, temporalConnectionOptions, temporalSettings, workerTuning, youngGeneration } from './config';
import { startMemoryLog } from './memory';
import { createWorker, ensureSearchAttributes } from './worker';
import { installWorkerRuntime } from './logging';
import { freeLoopbackPort, parseAddress, startMetricsServer, type MetricsServer } from './metrics';
import { connectTemporal, type TemporalContext } from '../connection/connect';

export async function runWorker(env: NodeJS.ProcessEnv = process.env): Promise<void> {
  const s = temporalSettings(env);
  const tuning = workerTuning(env);
  const metricsAddress = env.PG_DTS_METRICS_ADDRESS;
  if (metricsAddress) parseAddress(metricsAddress); // a malformed address fails before anything starts
  const runtime = installWorkerRuntime(env, metricsAddress ? await freeLoopbackPort() : undefined);
  const log = runtime.logger;
  if (tuning.memoryLogMs > 0) startMemoryLog(tuning.memoryLogMs);
  const { codec, dataConverter } = payloadEncryption(env);
  const connectionOptions = temporalConnectionOptions(env);
  const connection = await NativeConnection.connect(connectionOptions).catch((err: Error) => {
    throw new Error(`cannot reach Temporal at ${s.address}: ${err.message}`);
  });
  let metrics: { server: MetricsServer; temporal: TemporalContext } | undefined;
  try {
    const added = await ensureSearchAttributes(connection, s.namespace);
    if (added.length) log.info(`registered search attributes in namespace ${s.namespace}: ${added.join(', ')}`);
    const workflowBundle = workflowCode(env, (m) => log.info(m), (m) => log.warn(m));
    const worker = await createWorker({ connection, namespace: s.namespace, taskQueue: s.taskQueue, dataConverter, tuning, ...(workflowBundle ? { workflowBundle } : {}) });
    if (metricsAddress) {
      const temporal = await connectTemporal({ env });
      const server = await startMetricsServer({ address: metricsAddress, client: temporal.client, taskQueue: s.taskQueue, coreMetricsUrl: runtime.coreMetricsUrl });
      metrics = { server, temporal };
      log.info(`metrics at ${server.url}`);
    }
    const encryption = codec ? `payload encryption on (key id ${codec.keyId})` : 'payload encryption off (PG_DTS_CODEC_KEY not set)';
    log.info(`pg-dts worker polling task queue ${s.taskQueue} on ${s.address} (namespace ${s.namespace}, ${describeTemporalSecurity(connectionOptions)}); ${encryption}`);
    log.info(
      `memory settings: ${tuning.workflowThreadPoolSize === 0 ? 'workflows on the main thread' : `${tuning.workflowThreadPoolSize} workflow thread(s)`}, ` +
        `up to ${tuning.maxConcurrentActivityTaskExecutions} activities, ${tuning.maxCachedWorkflows} cached workflows` +
        (tuning.heapGrowingPercent ? `, V8 heap growing ${tuning.heapGrowingPercent}%` : '') +
        `, ${youngGeneration(mainSemiSpaceMb())}`,
    );
    const alive = env.PG_DTS_HEALTH_FILE ? startHealthFile(env.PG_DTS_HEALTH_FILE, () => worker.getState() === 'RUNNING') : undefined;
    try {
      await worker.run();
    } finally {
      if (alive) clearInterval(alive);
    }
  } finally {
    await metrics?.server.close();
    await metrics?.temporal.close();
    await connection.close();
  }
}

/**
 * Touches `file` every 10 s while the worker polls, for a container healthcheck that needs no port
 * (the Dockerfile's checks that the file is under a minute old).
 */
function startHealthFile(file: string, running: () => boolean): NodeJS.Timeout {
  const touch = () => {
    if (running()) writeFileSync(file, `${new Date().toISOString()}\n`);
  };
  touch();
  const timer = setInterval(touch, 10_000);
  timer.unref();
  return timer;
}

/**
 * The prebuilt bundle, rebuilt first in a child process when it is missing or stale; undefined (bundle
 * in process) when that fails or PG_DTS_WORKFLOW_BUNDLE=build.
 */
function workflowCode(env: NodeJS.ProcessEnv, info: (m: string) => void, warn: (m: string) => void): WorkflowBundleOption | undefined {
  if (env.PG_DTS_WORKFLOW_BUNDLE === 'build') return undefined;
  const before = prebuiltWorkflowBundle();
  if (before.fresh) {
    info(`workflow bundle ${path.relative(repoRoot, before.codePath)} (built ${before.manifest.builtAt})`);
    return { codePath: before.codePath };
  }
  info(`${before.reason}: building the workflow bundle`);
  const built = buildInChildProcess(undefined, env);
  const after = prebuiltWorkflowBundle();
  if (after.fresh) return { codePath: after.codePath };
  // Not built, or a source changed again meanwhile.
  warn(`could not use a prebuilt workflow bundle (${built ? after.reason : 'build failed'}): bundling in this process`);
  return undefined;
}

if (require.main === module) {
  runWorker().catch((err) => {
    console.error(err instanceof Error ? err.message : err);
    process.exit(1);
  });
}

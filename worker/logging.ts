/**
 * The worker process's Temporal runtime: its logger and, when asked, its metrics exporter. Installed
 * once per process, before any connection.
 *
 * Logs: one line per event. `PG_DTS_LOG_FORMAT=json` writes one JSON object per line with `time`,
 * `level`, `message`, the event's fields, and `migrationId` on every line about a migration (derived
 * from the workflow id, which the SDK attaches to every workflow and activity log entry, as the
 * status and report's `migrationId` is). The SDK core's own
 * log lines are forwarded through the same logger.
 */
import { DefaultLogger, Runtime, type LogEntry, type LogLevel } from '@temporalio/worker';
import { copyChildParent, migrationIdFor } from '../workflows/names';

let installed = false;

/** Temporal's own log level for in-process workers (tests, demo, benchmarks): warnings and up. */
export function quietTemporalLogs(level: 'WARN' | 'ERROR' = 'WARN'): void {
  if (installed) return;
  installed = true;
  try {
    Runtime.install({ logger: new DefaultLogger(level) });
  } catch {
    // A runtime already exists (installed by someone else first): keep it.
  }
}

export type LogFormat = 'text' | 'json';

export function logFormat(env: NodeJS.ProcessEnv = process.env): LogFormat {
  const f = env.PG_DTS_LOG_FORMAT ?? 'text';
  if (f !== 'text' && f !== 'json') throw new Error(`PG_DTS_LOG_FORMAT must be json or text, not ${JSON.stringify(f)}`);
  return f;
}

/** One log entry as one JSON line (pure: unit-tested). BigInts become strings; the migration is named. */
export function jsonLine(entry: Pick<LogEntry, 'level' | 'message' | 'meta'> & { timestampNanos: bigint }): string {
  const meta = (entry.meta ?? {}) as Record<string, unknown>;
  // The id the status and the report carry (and slot names derive from); workflowId stays beside it.
  // A copy child's lines (its activities', its own) are about its migration.
  const workflowId = typeof meta.workflowId === 'string' ? (meta.workflowType === 'copyWorkflow' ? copyChildParent(meta.workflowId) : meta.workflowId) : undefined;
  const migrationId = workflowId !== undefined ? migrationIdFor(workflowId) : undefined;
  const line = {
    time: new Date(Number(entry.timestampNanos / 1_000_000n)).toISOString(),
    level: entry.level.toLowerCase(),
    message: entry.message,
    ...(migrationId ? { migrationId } : {}),
    ...meta,
  };
  return JSON.stringify(line, (_k, v: unknown) => (typeof v === 'bigint' ? v.toString() : v));
}

export interface WorkerRuntime {
  logger: DefaultLogger;
  /** Where the SDK core serves its metrics (loopback), when metrics were asked for. */
  coreMetricsUrl?: string;
}

/**
 * Installs the runtime for `npm run worker` / `dts worker`: INFO logs in the chosen format, and the
 * core's Prometheus exporter on `coreMetricsPort` (loopback) when given.
 */
export function installWorkerRuntime(env: NodeJS.ProcessEnv, coreMetricsPort?: number): WorkerRuntime {
  const format = logFormat(env);
  const level = (env.PG_DTS_LOG_LEVEL?.toUpperCase() ?? 'INFO') as LogLevel;
  const logger =
    format === 'json'
      ? new DefaultLogger(level, (entry) => process.stdout.write(`${jsonLine(entry)}\n`))
      : new DefaultLogger(level);
  const coreMetricsUrl = coreMetricsPort ? `http://127.0.0.1:${coreMetricsPort}/metrics` : undefined;
  Runtime.install({
    logger,
    telemetryOptions: {
      logging: { filter: { core: 'WARN', other: 'ERROR' }, forward: {} },
      ...(coreMetricsPort ? { metrics: { prometheus: { bindAddress: `127.0.0.1:${coreMetricsPort}`, countersTotalSuffix: true } } } : {}),
    },
  });
  installed = true;
  return { logger, coreMetricsUrl };
}

/** Worker settings from the environment (documented in README.md; their names are part of the public contract). */
import { applyWriters } from '../activities/apply/options';
export {
  describeTemporalSecurity,
  fileFromEnv,
  payloadEncryption,
  temporalConnectionOptions,
  temporalSettings,
  TemporalTlsError,
  type TemporalConnectionOptions,
  type TemporalSettings,
} from '../connection/settings';

/**
 * How much the worker process holds, from the environment (see workerTuning for the defaults and why):
 *   PG_DTS_MAX_ACTIVITIES       activities at a time on this worker (copies, the apply, ...); default 32
 *   PG_DTS_MAX_CACHED_WORKFLOWS workflow runs kept in memory between tasks (sticky cache); default 50
 *   PG_DTS_WORKFLOW_THREADS     worker threads running workflow code, each its own V8 isolate and Node
 *                               environment (~40 MB); default 1. 0 runs workflow code on the main thread:
 *                               ~40 MB less, but a 1 GiB transaction's apply took 47.4 s instead of 33.2 s
 *                               (worker CPU 26.2 s vs 15.7 s) in one A/B (bench/apply.ts --seconds 10
 *                               --backlog 0), in line with an earlier 54 vs 48 s
 *   PG_DTS_SEMI_SPACE_MB        V8 young-generation semi-space (MB) of workflow threads, if any; default 4
 *                               (the main thread's is a node flag: MAIN_SEMI_SPACE_MB, see main.ts)
 *   PG_DTS_HEAP_GROWING_PERCENT V8's old-generation growing factor, 1 + N/100 (V8 picks 1.1 to 4 itself
 *                               when unset, the default): 15 to 40 about halves the apply's growth on a
 *                               1 GiB transaction but cost +60% of the apply's CPU in one measurement
 *   PG_DTS_MEMORY_LOG_MS        log process.memoryUsage() every this many ms (0 = never, the default)
 *   PG_DTS_APPLY_WRITERS        target sessions each apply writes through, 1 (default) or 2: read by the
 *                               apply as it starts (activities/apply/options.ts), checked here at start
 */
export interface WorkerTuning {
  maxConcurrentActivityTaskExecutions: number;
  maxCachedWorkflows: number;
  workflowThreadPoolSize: number;
  /** undefined: leave V8's default (16 MB on 64-bit). */
  semiSpaceMb?: number;
  /** undefined: V8's own dynamic factor. */
  heapGrowingPercent?: number;
  memoryLogMs: number;
  applyWriters: 1 | 2;
}

export const DEFAULT_TUNING: WorkerTuning = {
  maxConcurrentActivityTaskExecutions: 32,
  maxCachedWorkflows: 50,
  workflowThreadPoolSize: 1,
  semiSpaceMb: 4,
  memoryLogMs: 0,
  applyWriters: 1,
};

export function workerTuning(env: NodeJS.ProcessEnv = process.env): WorkerTuning {
  const int = (name: string, fallback: number, min: number): number => {
    const raw = env[name];
    if (raw === undefined || raw === '') return fallback;
    const n = Number(raw);
    if (!Number.isInteger(n) || n < min) throw new Error(`${name} must be an integer ≥ ${min} (got ${JSON.stringify(raw)})`);
    return n;
  };
  const semi = env.PG_DTS_SEMI_SPACE_MB;
  return {
    maxConcurrentActivityTaskExecutions: int('PG_DTS_MAX_ACTIVITIES', DEFAULT_TUNING.maxConcurrentActivityTaskExecutions, 1),
    maxCachedWorkflows: int('PG_DTS_MAX_CACHED_WORKFLOWS', DEFAULT_TUNING.maxCachedWorkflows, 0),
    workflowThreadPoolSize: int('PG_DTS_WORKFLOW_THREADS', DEFAULT_TUNING.workflowThreadPoolSize, 0),
    semiSpaceMb: semi === 'default' ? undefined : int('PG_DTS_SEMI_SPACE_MB', DEFAULT_TUNING.semiSpaceMb!, 1),
    heapGrowingPercent: env.PG_DTS_HEAP_GROWING_PERCENT ? int('PG_DTS_HEAP_GROWING_PERCENT', 0, 1) : undefined,
    memoryLogMs: int('PG_DTS_MEMORY_LOG_MS', DEFAULT_TUNING.memoryLogMs, 0),
    applyWriters: applyWriters(env),
  };
}

/**
 * The main thread's young-generation semi-space (MB) that `npm run worker`, the Docker image and
 * docker-compose.yml start node with (`node --max-semi-space-size=32`; V8's default is 16). The apply
 * holds a group's decoded changes until the target has written them, longer than two collections of a
 * 16 MB young generation, so most of them were promoted and copied twice. Measured (BENCHMARKS.md,
 * session 27): the worker's CPU in a 100,000-transaction catch-up 1.77 s against 2.22 s at the
 * median of four cycles each (2.13 s against 2.45 s over ten, with a fixed 32 MB), catch-ups 1.45×
 * native's rate against 1.36×; peak RSS within the noise of a whole migration (213-256 MB against
 * 234-235 MB). Only a node flag sets it (V8 sizes a heap when it creates it): NODE_OPTIONS accepts it.
 */
export const MAIN_SEMI_SPACE_MB = 32;

/**
 * The main thread's semi-space (MB) that node was started with: the last --max-semi-space-size in
 * NODE_OPTIONS or on the command line (which comes after it), undefined when neither sets it.
 */
export function mainSemiSpaceMb(execArgv: readonly string[] = process.execArgv, nodeOptions: string = process.env.NODE_OPTIONS ?? ''): number | undefined {
  let mb: number | undefined;
  const words = [...nodeOptions.split(/\s+/), ...execArgv];
  for (let i = 0; i < words.length; i++) {
    const m = /^--max[-_]semi[-_]space[-_]size(?:=(.*))?$/.exec(words[i]!);
    if (!m) continue;
    const v = Number(m[1] ?? words[i + 1]);
    if (Number.isFinite(v) && v > 0) mb = v;
  }
  return mb;
}

/** The worker's start-up log's words for the main thread's young generation (mainSemiSpaceMb). */
export function youngGeneration(mb: number | undefined): string {
  return mb === undefined
    ? `main thread's young generation at V8's default (start node with --max-semi-space-size=${MAIN_SEMI_SPACE_MB}, as npm run worker does, or set it in NODE_OPTIONS: the apply then takes less CPU)`
    : `main thread's young generation ${mb} MB semi-space`;
}

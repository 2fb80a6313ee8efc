/** Worker and client settings from the environment (documented in README.md; their names are part of the public contract). */
import { readFileSync } from 'node:fs';
import type { DataConverter } from '@temporalio/common';
import type { TLSConfig } from '@temporalio/common/lib/internal-non-workflow';
import { DEFAULT_TASK_QUEUE } from '../workflows/contract';
import { codecFromEnv, dataConverterFor, type AesGcmCodec } from '../client/codec';

export interface TemporalSettings {
  address: string;
  namespace: string;
  taskQueue: string;
}

export function temporalSettings(env: NodeJS.ProcessEnv = process.env): TemporalSettings {
  return {
    address: env.TEMPORAL_ADDRESS || 'localhost:7233',
    namespace: env.TEMPORAL_NAMESPACE || 'default',
    taskQueue: env.TEMPORAL_TASK_QUEUE || DEFAULT_TASK_QUEUE,
  };
}

/**
 * The content of the file an environment variable names (certificates, keys); undefined when unset.
 * The error names the variable, the path and the errno code, never content.
 */
export function fileFromEnv(env: NodeJS.ProcessEnv, name: string, fail: (message: string) => Error): Buffer | undefined {
  const path = env[name]?.trim();
  if (!path) return undefined;
  try {
    return readFileSync(path);
  } catch (err) {
    throw fail(`${name}: cannot read ${path} (${(err as NodeJS.ErrnoException).code ?? 'error'})`);
  }
}

export class TemporalTlsError extends Error {
  override name = 'TemporalTlsError';
}

/** What worker (NativeConnection), CLI and API (Connection) pass when they connect to Temporal. */
export interface TemporalConnectionOptions {
  address: string;
  tls?: TLSConfig;
  apiKey?: string;
}

/**
 * TLS, mTLS and API key as the Temporal CLI reads them: TEMPORAL_TLS_CERT and TEMPORAL_TLS_KEY (client
 * certificate and key files, mTLS), TEMPORAL_TLS_CA (the server's CA file), TEMPORAL_TLS_SERVER_NAME
 * (SNI / name checked), TEMPORAL_API_KEY (bearer key; implies TLS, as with the CLI), TEMPORAL_TLS=true
 * (TLS with the system's CAs) or false (no TLS even with an API key). Errors name the variable and the
 * file, never a key.
 */
export function temporalConnectionOptions(env: NodeJS.ProcessEnv = process.env): TemporalConnectionOptions {
  const { address } = temporalSettings(env);
  const file = (name: string) => fileFromEnv(env, name, (m) => new TemporalTlsError(m));
  const crt = file('TEMPORAL_TLS_CERT');
  const key = file('TEMPORAL_TLS_KEY');
  if (Boolean(crt) !== Boolean(key)) throw new TemporalTlsError('TEMPORAL_TLS_CERT and TEMPORAL_TLS_KEY go together (the client certificate and its key)');
  const ca = file('TEMPORAL_TLS_CA');
  const serverName = env.TEMPORAL_TLS_SERVER_NAME?.trim() || undefined;
  const apiKey = env.TEMPORAL_API_KEY?.trim() || undefined;
  const flag = env.TEMPORAL_TLS?.trim().toLowerCase();
  if (flag !== undefined && flag !== '' && !['true', 'false', '1', '0'].includes(flag)) throw new TemporalTlsError('TEMPORAL_TLS must be true or false');
  const explicit = flag === 'true' || flag === '1' ? true : flag === 'false' || flag === '0' ? false : undefined;
  const configured = Boolean(crt || ca || serverName);
  if (explicit === false && configured) throw new TemporalTlsError('TEMPORAL_TLS=false contradicts TEMPORAL_TLS_CERT / _CA / _SERVER_NAME');
  const useTls = explicit ?? (configured || apiKey !== undefined);
  const tls: TLSConfig | undefined = useTls
    ? {
        ...(serverName ? { serverNameOverride: serverName } : {}),
        ...(ca ? { serverRootCACertificate: ca } : {}),
        ...(crt && key ? { clientCertPair: { crt, key } } : {}),
      }
    : undefined;
  return { address, ...(tls ? { tls } : {}), ...(apiKey ? { apiKey } : {}) };
}

/** "TLS, mTLS, API key" for the start-up line: what is on, never what the secrets are. */
export function describeTemporalSecurity(o: TemporalConnectionOptions): string {
  const parts = [o.tls ? (o.tls.clientCertPair ? 'mTLS' : 'TLS') : 'no TLS'];
  if (o.apiKey) parts.push('API key');
  return parts.join(', ');
}

/**
 * Payload encryption from PG_DTS_CODEC_KEY (client/codec.ts): the data converter workers and
 * clients must share, or undefined (plain JSON payloads) when the key is not set. Throws
 * CodecKeyError on a malformed key, without echoing it.
 */
export function payloadEncryption(env: NodeJS.ProcessEnv = process.env): { codec?: AesGcmCodec; dataConverter?: DataConverter } {
  const codec = codecFromEnv(env);
  return { codec, dataConverter: dataConverterFor(codec) };
}

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
 *                               (the main thread's is a node flag, left at V8's default: see main.ts)
 *   PG_DTS_HEAP_GROWING_PERCENT V8's old-generation growing factor, 1 + N/100 (V8 picks 1.1 to 4 itself
 *                               when unset, the default): 15 to 40 about halves the apply's growth on a
 *                               1 GiB transaction but cost +60% of the apply's CPU in one measurement
 *   PG_DTS_MEMORY_LOG_MS        log process.memoryUsage() every this many ms (0 = never, the default)
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
}

export const DEFAULT_TUNING: WorkerTuning = {
  maxConcurrentActivityTaskExecutions: 32,
  maxCachedWorkflows: 50,
  workflowThreadPoolSize: 1,
  semiSpaceMb: 4,
  memoryLogMs: 0,
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
  };
}

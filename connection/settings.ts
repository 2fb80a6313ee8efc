/**
 * How the worker and the clients reach Temporal, from the environment (documented in README.md; their
 * names are part of the public contract): address, namespace, task queue, TLS or mTLS, API key, and
 * the payload encryption both sides must share.
 */
import { readFileSync } from 'node:fs';
import type { DataConverter } from '@temporalio/common';
import type { TLSConfig } from '@temporalio/common/lib/internal-non-workflow';
import { DEFAULT_TASK_QUEUE } from '../workflows/contract';
import { codecFromEnv, dataConverterFor, type AesGcmCodec } from './codec';

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
 * Payload encryption from PG_DTS_CODEC_KEY (connection/codec.ts): the data converter workers and
 * clients must share, or undefined (plain JSON payloads) when the key is not set. Throws
 * CodecKeyError on a malformed key, without echoing it.
 */
export function payloadEncryption(env: NodeJS.ProcessEnv = process.env): { codec?: AesGcmCodec; dataConverter?: DataConverter } {
  const codec = codecFromEnv(env);
  return { codec, dataConverter: dataConverterFor(codec) };
}

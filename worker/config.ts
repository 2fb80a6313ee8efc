/** Worker and client settings from the environment (DESIGN.md §2). */
import type { DataConverter } from '@temporalio/common';
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
 * Payload encryption from PG_DTS_CODEC_KEY (client/codec.ts): the data converter workers and
 * clients must share, or undefined (plain JSON payloads) when the key is not set. Throws
 * CodecKeyError on a malformed key, without echoing it.
 */
export function payloadEncryption(env: NodeJS.ProcessEnv = process.env): { codec?: AesGcmCodec; dataConverter?: DataConverter } {
  const codec = codecFromEnv(env);
  return { codec, dataConverter: dataConverterFor(codec) };
}

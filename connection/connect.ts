/**
 * A Temporal client for TEMPORAL_ADDRESS / TEMPORAL_NAMESPACE, with the payload codec when
 * PG_DTS_CODEC_KEY is set: what the CLI, the REST API and the worker's own client share.
 */
import { Client, Connection } from '@temporalio/client';
import { temporalConnectionOptions, temporalSettings, type TemporalSettings } from './settings';
import { codecFromEnv, dataConverterFor, type AesGcmCodec } from './codec';

export interface TemporalContext {
  client: Client;
  connection: Connection;
  settings: TemporalSettings;
  codec?: AesGcmCodec;
  close(): Promise<void>;
}

/**
 * A client for TEMPORAL_ADDRESS / TEMPORAL_NAMESPACE. `lazy` connects on first use (the API starts
 * even while Temporal is down, and says so in /health); otherwise an unreachable server fails here.
 */
export async function connectTemporal(opts: { env?: NodeJS.ProcessEnv; lazy?: boolean } = {}): Promise<TemporalContext> {
  const env = opts.env ?? process.env;
  const settings = temporalSettings(env);
  const codec = codecFromEnv(env);
  const options = temporalConnectionOptions(env);
  let connection: Connection;
  if (opts.lazy) {
    connection = Connection.lazy(options);
  } else {
    connection = await Connection.connect(options).catch((err: Error) => {
      throw new TemporalUnavailableError(`cannot reach Temporal at ${settings.address}: ${err.message}`);
    });
  }
  const client = new Client({ connection, namespace: settings.namespace, dataConverter: dataConverterFor(codec) });
  return { client, connection, settings, codec, close: () => connection.close() };
}

export class TemporalUnavailableError extends Error {
  override name = 'TemporalUnavailableError';
}

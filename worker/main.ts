/**
 * `npm run worker` / `dts worker`: a worker for the migration task queue, configured from
 * TEMPORAL_ADDRESS, TEMPORAL_NAMESPACE and TEMPORAL_TASK_QUEUE, encrypting payloads when
 * PG_DTS_CODEC_KEY is set (the same key as the clients and the API). Start as many as you like: any
 * worker takes any copy. SIGINT/SIGTERM shut it down gracefully.
 */
import { Connection } from '@temporalio/client';
import { NativeConnection } from '@temporalio/worker';
import { payloadEncryption, temporalSettings } from './config';
import { createWorker, ensureSearchAttributes } from './worker';

export async function runWorker(env: NodeJS.ProcessEnv = process.env): Promise<void> {
  const s = temporalSettings(env);
  const { codec, dataConverter } = payloadEncryption(env);
  const clientConnection = await Connection.connect({ address: s.address }).catch((err: Error) => {
    throw new Error(`cannot reach Temporal at ${s.address}: ${err.message}`);
  });
  try {
    const added = await ensureSearchAttributes(clientConnection, s.namespace);
    if (added.length) console.log(`registered search attributes in namespace ${s.namespace}: ${added.join(', ')}`);
  } finally {
    await clientConnection.close();
  }
  const connection = await NativeConnection.connect({ address: s.address });
  const worker = await createWorker({ connection, namespace: s.namespace, taskQueue: s.taskQueue, dataConverter });
  const encryption = codec ? `payload encryption on (key id ${codec.keyId})` : 'payload encryption off (PG_DTS_CODEC_KEY not set)';
  console.log(`pg-dts worker polling task queue ${s.taskQueue} on ${s.address} (namespace ${s.namespace}); ${encryption}`);
  await worker.run();
  await connection.close();
}

if (require.main === module) {
  runWorker().catch((err) => {
    console.error(err instanceof Error ? err.message : err);
    process.exit(1);
  });
}

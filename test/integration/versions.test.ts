/**
 * Major-version upgrades: online migrations under concurrent writes between PostgreSQL versions, each
 * ending COMPLETED with every table and sequence equal on both sides and nothing left on the source.
 *
 * CI runs the pairs that bound the range: the oldest source to the newest target, 14 (the oldest with
 * pgoutput messages and the first to need its own slot syntax) to the newest, and the newest to itself.
 * `npm run test:versions` runs the longer matrix (VERSION_MATRIX below); PG_DTS_TEST_VERSION_PAIRS
 * ("12-18,13-16") picks pairs by hand. Binaries come from test/harness/pg-binaries.ts, cached.
 */
import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { TestWorkflowEnvironment } from '@temporalio/testing';
import type { Worker } from '@temporalio/worker';
import { startCluster, type PgCluster } from '../harness/pg-cluster';
import { startTemporal } from '../harness/temporal';
import { fingerprint, sequenceValues, sourceLeftovers } from '../harness/compare';
import { loadShopData, SHOP_SCHEMA, SHOP_TABLES, startWriter } from '../harness/fixtures';
import { createWorker } from '../../worker/worker';
import { quietTemporalLogs } from '../../worker/logging';
import { WORKFLOW_TYPE, type MigrationReport } from '../../workflows/contract';

const OLDEST_SOURCE = 12;
const NEWEST = 18;
const CI_PAIRS: Array<[number, number]> = [
  [OLDEST_SOURCE, NEWEST],
  [14, NEWEST],
  [NEWEST, NEWEST],
];

/**
 * A covering subset of sources 12–18 × targets 13–18 (21 of 42 pairs): every source to the newest
 * target, the oldest source to every target, and every version to itself and to the next one.
 */
export function versionMatrix(): Array<[number, number]> {
  const pairs = new Map<string, [number, number]>();
  const add = (s: number, t: number) => void pairs.set(`${s}-${t}`, [s, t]);
  for (let s = OLDEST_SOURCE; s <= NEWEST; s++) {
    add(s, NEWEST);
    if (s >= 13) add(s, s);
    if (s < NEWEST) add(s, s + 1);
  }
  for (let t = 13; t <= NEWEST; t++) add(OLDEST_SOURCE, t);
  return [...pairs.values()].sort((a, b) => a[0] - b[0] || a[1] - b[1]);
}

function chosenPairs(): Array<[number, number]> {
  const raw = process.env.PG_DTS_TEST_VERSION_PAIRS;
  if (!raw) return CI_PAIRS;
  if (raw === 'matrix') return versionMatrix();
  return raw.split(',').map((p) => {
    const m = /^\s*(\d+)\s*-\s*(\d+)\s*$/.exec(p);
    if (!m) throw new Error(`PG_DTS_TEST_VERSION_PAIRS: "${p}" is not SOURCE-TARGET (e.g. 12-18)`);
    return [Number(m[1]), Number(m[2])];
  });
}

const pairs = chosenPairs();
let temporal: TestWorkflowEnvironment;
let worker: Worker;
let running: Promise<void>;
const taskQueue = `versions-${randomUUID()}`;
const clusters = new Map<string, Promise<PgCluster>>();

/** One cluster per side and version, started on first use: a version's pairs share it (a database each). */
function cluster(side: 'source' | 'target', version: number): Promise<PgCluster> {
  const key = `${side}-${version}`;
  let c = clusters.get(key);
  if (!c) {
    // Small, so the writer's big transaction is spilled to disk by the source's decoder (setting added in 13).
    const settings: Record<string, string> = side === 'source' && version >= 13 ? { logical_decoding_work_mem: "'64kB'" } : {};
    c = startCluster({ name: `v${version}-${side}`, version, settings });
    clusters.set(key, c);
  }
  return c;
}

beforeAll(async () => {
  quietTemporalLogs(process.env.PG_DTS_TEST_LOG === 'info' ? undefined : 'ERROR');
  temporal = await startTemporal();
  worker = await createWorker({ connection: temporal.nativeConnection, namespace: temporal.namespace ?? 'default', taskQueue });
  running = worker.run();
}, 300_000);

afterAll(async () => {
  if (worker?.getState() === 'RUNNING') worker.shutdown();
  await running?.catch(() => undefined);
  const all = await Promise.allSettled([...clusters.values()]);
  await Promise.allSettled([temporal?.teardown(), ...all.map((c) => (c.status === 'fulfilled' ? c.value.destroy() : undefined))]);
});

describe('online migration between major versions', () => {
  it.each(pairs)('PostgreSQL %i → %i under writes: COMPLETED, every table and sequence equal', async (from, to) => {
    const [source, target] = await Promise.all([cluster('source', from), cluster('target', to)]);
    const major = async (c: PgCluster) => Math.floor(Number((await c.query<{ v: string }>(`SELECT current_setting('server_version_num') AS v`))[0]!.v) / 10000);
    expect([await major(source), await major(target)]).toEqual([from, to]);

    const db = `shop_${from}_${to}`;
    await Promise.all([source.createDatabase(db), target.createDatabase(db)]);
    const c = await source.client(db);
    try {
      await c.query(SHOP_SCHEMA);
      await loadShopData(c, 0.2);
    } finally {
      await c.end();
    }
    // Writes run through the copy, the sync and up to the fence (where the source refuses them).
    const writer = startWriter(() => source.client(db), { bigTransactionRows: 5_000, pauseMs: 5 });
    while (writer.stats.transactions < 10) await new Promise((r) => setTimeout(r, 20));
    const handle = await temporal.client.workflow.start(WORKFLOW_TYPE, {
      taskQueue,
      workflowId: `versions-${from}-${to}-${randomUUID()}`,
      args: [
        {
          source: source.uri(db),
          target: target.uri(db),
          schemas: ['public', 'Sales Dept'],
          cutover: { mode: 'auto' },
          validation: { checksum: true, sampleSize: 200 },
        },
      ],
    });
    // Let the apply carry some writes before the automatic cutover fences the source.
    const report = (await handle.result()) as MigrationReport;
    const stats = await writer.stop();
    expect(stats.errors).toEqual([]);
    expect(stats.fenced).toBe(true);
    expect(stats.transactions).toBeGreaterThan(10);
    expect(report.phase).toBe('COMPLETED');
    expect(report.tables.every((t) => t.countsMatch)).toBe(true);
    expect((await handle.query<{ replication?: { transactions: number } }>('status')).replication?.transactions).toBeGreaterThan(0);

    for (const [schema, table] of SHOP_TABLES) {
      const a = await fingerprint(source, db, schema, table);
      const b = await fingerprint(target, db, schema, table);
      expect({ table: `${schema}.${table}`, ...b }).toEqual({ table: `${schema}.${table}`, ...a });
    }
    expect(await sequenceValues(target, db)).toEqual(await sequenceValues(source, db));
    expect(await sourceLeftovers(source, db)).toEqual({ slots: 0, pubs: 0, fences: 0 });
    // Our schema (fence function; the fence marker table on sources before 14) is gone too.
    expect(await source.query(`SELECT 1 FROM pg_namespace WHERE nspname = 'pgdts'`, [], db)).toEqual([]);
  });
});

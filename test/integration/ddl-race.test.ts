/**
 * Idempotent DDL raced by concurrent sessions (real cluster): many copies of one migration create
 * pgdts.copy_progress at once, and each loser of the race sees one of several errors (a unique
 * violation in the catalog, "relation already exists", "type already exists"). Every session must
 * end with the table there and no error (bench/many at 2,000 tables once failed on 42710).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startCluster, type PgCluster } from '../harness/pg-cluster';
import { connect, runIdempotentDdl } from '../../activities/db';
import { COPY_PROGRESS_DDL } from '../../activities/copy';

let pg: PgCluster;

beforeAll(async () => {
  pg = await startCluster({ name: 'ddl-race' });
  await pg.createDatabase('race');
});

afterAll(async () => {
  await pg?.destroy();
});

describe('runIdempotentDdl', () => {
  it('twelve sessions creating the copy records at once, forty times over: all succeed', async () => {
    const clients = await Promise.all(Array.from({ length: 12 }, () => connect(pg.uri('race'))));
    try {
      for (let round = 0; round < 40; round++) {
        await clients[0]!.query('DROP SCHEMA IF EXISTS pgdts CASCADE');
        const outcomes = await Promise.allSettled(clients.map((c) => runIdempotentDdl(c, COPY_PROGRESS_DDL, 2)));
        const failed = outcomes.flatMap((o) => (o.status === 'rejected' ? [`${(o.reason as { code?: string }).code}: ${(o.reason as Error).message}`] : []));
        expect({ round, failed }).toEqual({ round, failed: [] });
        const [r] = await pg.query<{ ok: boolean }>(`SELECT to_regclass('pgdts.copy_progress') IS NOT NULL AS ok`, [], 'race');
        expect(r!.ok).toBe(true);
      }
    } finally {
      await Promise.all(clients.map((c) => c.end()));
    }
  }, 120_000);
});

/**
 * Issue 16: a schema-per-tenant database (2,000 small tables, each with a primary key, an index and
 * 20 rows) migrated online to COMPLETED, with every workflow run's history inside the limits that
 * keep it healthy whatever the table count: at most 10,000 events and 10 MB, no payload over 512 KB,
 * no workflow task over 1 s. Before the plan was kept on the target this history reached 23,000
 * events and 9.4 MB, its continue-as-new payload failed at 2.5 MB and each workflow task took 21 s.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startEnv, type TestEnv } from '../harness/env';
import { activitySpans, historyLimits } from '../harness/history';
import type { PgCluster } from '../harness/pg-cluster';

const TABLES = 2000;
const ROWS = 20;
let env: TestEnv;

beforeAll(async () => {
  env = await startEnv();
});

afterAll(async () => {
  await env?.stop();
});

/** One script builds every table (a round trip per table would be most of the setup's time). */
const BUILD = `DO $$ BEGIN
  FOR i IN 1..${TABLES} LOOP
    EXECUTE format('CREATE TABLE tenant.t%s (id int PRIMARY KEY, v text NOT NULL, at timestamptz NOT NULL DEFAULT now())', i);
    EXECUTE format('CREATE INDEX ON tenant.t%s (v)', i);
    EXECUTE format('INSERT INTO tenant.t%s (id, v) SELECT g, md5(g::text || %L) FROM generate_series(1, ${ROWS}) g', i, i);
    IF i % 250 = 0 THEN COMMIT; END IF;
  END LOOP;
END $$`;

/** Count and content hash of every table, one query per 250 tables. */
async function fingerprints(cluster: PgCluster, db: string): Promise<Map<string, string>> {
  const out = new Map<string, string>();
  for (let from = 1; from <= TABLES; from += 250) {
    const parts: string[] = [];
    for (let i = from; i < Math.min(TABLES + 1, from + 250); i++) {
      parts.push(`SELECT 't${i}' AS t, count(*)::text || ':' || coalesce(md5(string_agg(r::text, E'\\n' ORDER BY r::text)), 'empty') AS f FROM tenant.t${i} r`);
    }
    const rows = await cluster.query<{ t: string; f: string }>(parts.join(' UNION ALL '), [], db);
    for (const r of rows) out.set(r.t, r.f);
  }
  return out;
}

describe('2,000 tables', () => {
  it('migrate online to COMPLETED, every table equal, every history run within the limits', async () => {
    const db = 'many';
    await env.source.createDatabase(db);
    await env.target.createDatabase(db);
    const built = Date.now();
    // Separate statements: COMMIT inside DO needs a statement of its own.
    await env.source.query('CREATE SCHEMA tenant', [], db);
    await env.source.query(BUILD, [], db);
    await env.source.query('ANALYZE', [], db);
    console.log(`built ${TABLES} tables in ${Date.now() - built} ms`);

    const m = await env.startMigration({
      source: env.source.uri(db),
      target: env.target.uri(db),
      schemas: ['tenant'],
      parallelism: 2,
      cutover: { mode: 'manual' },
      validation: { checksum: false, sampleSize: 5 },
    });
    const t0 = Date.now();
    // While the copy runs, the status names the units in flight (at most parallelism of them) and the
    // table each is on, whichever page that table is on.
    const inFlight: Array<{ unit: string; table: string }> = [];
    for (let s = await m.status(); ['INIT', 'CREATING_TABLES', 'MIGRATING_DATA'].includes(s.phase) && Date.now() - t0 < 280_000; s = await m.status()) {
      expect(s.copying?.length ?? 0).toBeLessThanOrEqual(2);
      inFlight.push(...(s.copying ?? []));
      await new Promise((r) => setTimeout(r, 250));
    }
    expect(inFlight.length).toBeGreaterThan(0);
    for (const c of inFlight) expect(c).toMatchObject({ unit: expect.stringMatching(/^batch \d+$/), table: expect.stringMatching(/^tenant\.t\d+$/) });
    const syncing = await m.waitForPhase('SYNCING_WAL', 280_000);
    expect(syncing.copying).toBeUndefined();
    console.log(`SYNCING_WAL after ${Date.now() - t0} ms`);
    // A small answer whatever the table count: a page of tables and the totals.
    expect(syncing.tables.length).toBeLessThanOrEqual(200);
    expect(syncing.tablesTotal).toBe(TABLES);
    expect(syncing.progress).toMatchObject({ tablesTotal: TABLES, tablesCopied: TABLES, rowsCopied: TABLES * ROWS });
    expect(JSON.stringify(syncing).length).toBeLessThan(256 * 1024);

    // Changes to 100 tables while the sync runs reach the target through the apply.
    await env.source.query(
      `DO $$ BEGIN FOR i IN 1..100 LOOP
         EXECUTE format('UPDATE tenant.t%s SET v = v || ''!'' WHERE id = 1', i * 20);
         EXECUTE format('INSERT INTO tenant.t%s (id, v) VALUES (1000, ''new'')', i * 20 - 1);
         EXECUTE format('DELETE FROM tenant.t%s WHERE id = 2', i * 20 - 2);
       END LOOP; END $$`,
      [],
      db,
    );
    await m.signal('cutover');
    const report = await m.result();
    expect(report.phase).toBe('COMPLETED');
    expect(report.tablesTotal).toBe(TABLES);
    expect(report.tables.length).toBeLessThanOrEqual(200);
    expect(report.tables.every((t) => t.countsMatch)).toBe(true);

    const [a, b] = await Promise.all([fingerprints(env.source, db), fingerprints(env.target, db)]);
    expect(a.size).toBe(TABLES);
    const differing = [...a].filter(([t, f]) => b.get(t) !== f).map(([t]) => t);
    expect(differing).toEqual([]);
    // The target's indexes came across too (primary key and one index per table).
    const [idx] = await env.target.query<{ n: number }>(`SELECT count(*)::int AS n FROM pg_indexes WHERE schemaname = 'tenant'`, [], db);
    expect(idx!.n).toBe(2 * TABLES);
    // The plan kept on the target is gone with the migration.
    const [left] = await env.target.query<{ n: number }>(`SELECT count(*)::int AS n FROM pg_namespace WHERE nspname = 'pgdts'`, [], db);
    expect(left!.n).toBe(0);

    const spans = await activitySpans(env.temporal, m.workflowId);
    const byType = new Map<string, { n: number; ms: number; max: number }>();
    for (const s of spans) {
      const t = byType.get(s.type) ?? { n: 0, ms: 0, max: 0 };
      const d = (s.endedAt ?? s.scheduledAt) - (s.startedAt ?? s.scheduledAt);
      byType.set(s.type, { n: t.n + 1, ms: t.ms + d, max: Math.max(t.max, d) });
    }
    console.log(`activities: ${JSON.stringify([...byType])}`);
    const runs = await historyLimits(env.temporal, m.workflowId);
    console.log(`histories: ${JSON.stringify(runs)}`);
    for (const r of runs) {
      expect({ run: r.runId, events: r.events <= 10_000, bytes: r.bytes <= 10 * 1024 ** 2, payload: r.largestPayload <= 512 * 1024, task: r.longestTaskMs <= 1000 }).toEqual({
        run: r.runId,
        events: true,
        bytes: true,
        payload: true,
        task: true,
      });
    }
  }, 400_000);
});

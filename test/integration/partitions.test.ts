/**
 * Declarative partitioning, migrated online: range, list and hash partitioning, two levels, default
 * partitions, a partition attached with another column order and a dropped column; rows that move
 * between partitions during SYNCING_WAL (and writes made straight into a partition) must end in the
 * right partition on the target. Compared root by root and partition by partition.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startEnv, type TestEnv } from '../harness/env';
import { fingerprint } from '../harness/compare';

let env: TestEnv;

beforeAll(async () => {
  env = await startEnv();
});

afterAll(async () => {
  await env?.stop();
});

const SCHEMA = `
CREATE SEQUENCE public.events_id_seq;
-- Used by no column: an application calls nextval() on it.
CREATE SEQUENCE public.invoice_no START 1000 INCREMENT 7;
SELECT nextval('public.invoice_no');
CREATE TABLE public.events (
  id bigint NOT NULL DEFAULT nextval('public.events_id_seq'),
  gone int,
  at timestamptz NOT NULL,
  region text NOT NULL,
  payload jsonb,
  PRIMARY KEY (id, at, region)
) PARTITION BY RANGE (at);
ALTER TABLE public.events DROP COLUMN gone;
CREATE TABLE public.events_2023 PARTITION OF public.events FOR VALUES FROM ('2023-01-01 00:00:00+00') TO ('2024-01-01 00:00:00+00');
CREATE TABLE public.events_2024 PARTITION OF public.events FOR VALUES FROM ('2024-01-01 00:00:00+00') TO ('2025-01-01 00:00:00+00') PARTITION BY LIST (region);
CREATE TABLE public."events_2024_EU" PARTITION OF public.events_2024 FOR VALUES IN ('eu', 'uk');
CREATE TABLE public.events_2024_rest PARTITION OF public.events_2024 DEFAULT;
-- Attached with its own column order and a dropped column: pgoutput converts its rows to the root's.
CREATE TABLE public.events_2025 (payload jsonb, junk int, region text NOT NULL, id bigint NOT NULL DEFAULT nextval('public.events_id_seq'), at timestamptz NOT NULL);
ALTER TABLE public.events_2025 DROP COLUMN junk;
ALTER TABLE public.events ATTACH PARTITION public.events_2025 FOR VALUES FROM ('2025-01-01 00:00:00+00') TO ('2026-01-01 00:00:00+00');
CREATE TABLE public.events_other PARTITION OF public.events DEFAULT;
CREATE INDEX events_payload ON public.events USING gin (payload);
CREATE INDEX events_2023_region ON public.events_2023 (region);

CREATE TABLE public.accounts (id int PRIMARY KEY, owner text NOT NULL, balance numeric(12,2) NOT NULL DEFAULT 0) PARTITION BY HASH (id);
CREATE TABLE public.accounts_0 PARTITION OF public.accounts FOR VALUES WITH (MODULUS 3, REMAINDER 0);
CREATE TABLE public.accounts_1 PARTITION OF public.accounts FOR VALUES WITH (MODULUS 3, REMAINDER 1);
CREATE TABLE public.accounts_2 PARTITION OF public.accounts FOR VALUES WITH (MODULUS 3, REMAINDER 2);

CREATE TABLE public.tickets (id int, status text, note text, PRIMARY KEY (id, status)) PARTITION BY LIST (status);
CREATE TABLE public.tickets_open PARTITION OF public.tickets FOR VALUES IN ('open');
CREATE TABLE public.tickets_closed PARTITION OF public.tickets FOR VALUES IN ('closed', 'done');
CREATE TABLE public.tickets_other PARTITION OF public.tickets DEFAULT;

INSERT INTO public.events (at, region, payload)
  SELECT timestamptz '2023-01-01 00:00:00+00' + g * interval '1 day 1 hour 0.000001 second',
         (ARRAY['eu', 'us', 'uk', 'apac'])[1 + g % 4], jsonb_build_object('g', g, 'tag', 'x' || (g % 7))
    FROM generate_series(0, 1500) g;
INSERT INTO public.accounts SELECT g, 'owner ' || g, g * 1.5 FROM generate_series(1, 300) g;
INSERT INTO public.tickets SELECT g, (ARRAY['open', 'closed', 'done', 'weird'])[1 + g % 4], 'note ' || g FROM generate_series(1, 400) g;
ANALYZE;
`;

/** Every relation of the tree below `root` (the root included), as schema/name pairs. */
async function tree(cluster: TestEnv['source'], db: string, root: string): Promise<Array<{ schema: string; name: string; leaf: boolean }>> {
  return cluster.query<{ schema: string; name: string; leaf: boolean }>(
    `SELECT n.nspname AS schema, c.relname AS name, t.isleaf AS leaf FROM pg_partition_tree($1::regclass) t
       JOIN pg_class c ON c.oid = t.relid JOIN pg_namespace n ON n.oid = c.relnamespace ORDER BY t.level, c.relname`,
    [root],
    db,
  );
}

describe('partitioned tables', () => {
  it('migrate with their partitions, and rows moving between partitions during SYNCING_WAL land right', async () => {
    const db = 'parts';
    await env.source.createDatabase(db);
    await env.target.createDatabase(db);
    await env.source.query(SCHEMA, [], db);

    const m = await env.startMigration({
      source: env.source.uri(db),
      target: env.target.uri(db),
      schemaMapping: { public: 'moved' },
      tableSuffix: '_p',
      cutover: { mode: 'manual' },
    });
    const syncing = await m.waitForPhase('SYNCING_WAL', 90_000);
    // Roots only: partitions are not tables of their own in the migration.
    expect(syncing.tables.map((t) => t.source).sort()).toEqual(['public.accounts', 'public.events', 'public.tickets']);

    const w = await env.source.client(db);
    try {
      // Range: a year later moves 2023 rows into the 2024 sub-partitions and 2024 rows into 2025.
      await w.query(`UPDATE public.events SET at = at + interval '1 year' WHERE id % 10 = 0 AND at < '2025-01-01'`);
      // List, second level: eu -> us moves rows from events_2024_EU to events_2024_rest.
      await w.query(`UPDATE public.events SET region = 'us', payload = payload || '{"moved": true}' WHERE region = 'eu' AND at >= '2024-01-01' AND at < '2025-01-01' AND id % 3 = 0`);
      // Into and out of the default partition.
      await w.query(`UPDATE public.events SET at = '2031-06-01 12:00:00.123456+00' WHERE id % 97 = 1`);
      await w.query(`UPDATE public.events SET at = '2023-02-03 04:05:06+00' WHERE id = (SELECT min(id) FROM public.events_other)`);
      // Written straight into a partition (published through the root), and through the root.
      await w.query(`INSERT INTO public.events_2025 (region, at, payload) VALUES ('eu', '2025-05-05 05:05:05+00', '{"direct": 1}')`);
      await w.query(`INSERT INTO public.events (at, region) VALUES ('1999-12-31 23:59:59.999999+00', 'old'), ('2024-07-01 00:00:00+00', 'uk')`);
      await w.query(`DELETE FROM public.events WHERE id % 50 = 7`);
      // Hash: a new key usually hashes to another partition (the old key travels in the change).
      await w.query(`UPDATE public.accounts SET id = id + 1000, balance = balance + 1 WHERE id % 5 = 0`);
      await w.query(`DELETE FROM public.accounts WHERE id % 7 = 0`);
      // List with default: statuses move rows between all three partitions, in one transaction.
      await w.query('BEGIN');
      await w.query(`UPDATE public.tickets SET status = 'closed' WHERE status = 'open' AND id % 2 = 0`);
      await w.query(`UPDATE public.tickets SET status = 'open', note = note || ' reopened' WHERE status = 'weird' AND id % 3 = 0`);
      await w.query(`UPDATE public.tickets SET status = 'strange' WHERE status = 'done' AND id % 5 = 0`);
      await w.query('COMMIT');
      await w.query(`SELECT nextval('public.invoice_no') FROM generate_series(1, 3)`);
    } finally {
      await w.end();
    }
    await m.signal('cutover');
    const report = await m.result();
    expect(report.phase).toBe('COMPLETED');
    for (const t of report.tables) expect(t.countsMatch, t.source).toBe(true);

    for (const root of ['events', 'accounts', 'tickets']) {
      const src = await tree(env.source, db, `public.${root}`);
      const dst = await tree(env.target, db, `moved.${root}_p`);
      // Same tree under mapped names (suffix on every partition).
      expect(dst.map((r) => `${r.schema}.${r.name}`)).toEqual(src.map((r) => `moved.${r.name}_p`));
      // Same rows in every partition: a row moved on the source moved on the target. Columns named
      // (in the root's order): events_2025 has its own column order on the source.
      const cols = (
        await env.source.query<{ a: string }>(
          `SELECT attname AS a FROM pg_attribute WHERE attrelid = $1::regclass AND attnum > 0 AND NOT attisdropped ORDER BY attnum`,
          [`public.${root}`],
          db,
        )
      ).map((c) => c.a);
      for (const r of src) {
        const a = await fingerprint(env.source, db, r.schema, r.name, cols);
        const b = await fingerprint(env.target, db, 'moved', `${r.name}_p`, cols);
        expect({ partition: r.name, ...b }).toEqual({ partition: r.name, ...a });
      }
    }
    // The moves really happened (the test would be vacuous otherwise).
    const [moved] = await env.source.query<{ other: number; rest: number }>(
      `SELECT (SELECT count(*)::int FROM public.events_other) AS other, (SELECT count(*)::int FROM public.events_2024_rest WHERE payload ? 'moved') AS rest`,
      [],
      db,
    );
    expect(moved!.other).toBeGreaterThan(5);
    expect(moved!.rest).toBeGreaterThan(5);

    // The root's index cascaded to every leaf; the partition's own index came along; the sequence moved on.
    const idx = await env.target.query<{ t: string; n: number }>(
      `SELECT c.relname AS t, count(*)::int AS n FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid
         JOIN pg_namespace s ON s.oid = c.relnamespace WHERE s.nspname = 'moved' AND c.relname LIKE 'events%' GROUP BY 1 ORDER BY 1`,
      [],
      db,
    );
    expect(Object.fromEntries(idx.map((r) => [r.t, r.n]))).toEqual({
      events_p: 2,
      events_2023_p: 3,
      events_2024_p: 2,
      events_2024_EU_p: 2,
      events_2024_rest_p: 2,
      events_2025_p: 2,
      events_other_p: 2,
    });
    const [seq] = await env.target.query<{ v: string }>(`SELECT last_value::text AS v FROM moved.events_id_seq_p`, [], db);
    const [srcSeq] = await env.source.query<{ v: string }>(`SELECT last_value::text AS v FROM public.events_id_seq`, [], db);
    expect(seq!.v).toBe(srcSeq!.v);
    // The sequence no column uses came along, at the source's value at cutover.
    const [free] = await env.target.query<{ v: string; called: boolean }>(`SELECT last_value::text AS v, is_called AS called FROM moved.invoice_no_p`, [], db);
    expect(free).toEqual({ v: '1021', called: true });
    expect(await env.target.query<{ n: string }>(`SELECT nextval('moved.invoice_no_p')::text AS n`, [], db)).toEqual([{ n: '1028' }]);
  });

  it('refuses a partition named on its own, and a partitioned table with an unlogged partition, before creating anything', async () => {
    const db = 'parts_refused';
    await env.source.createDatabase(db);
    await env.target.createDatabase(db);
    await env.source.query(
      `CREATE TABLE public.p (id int PRIMARY KEY) PARTITION BY RANGE (id);
       CREATE TABLE public.p_1 PARTITION OF public.p FOR VALUES FROM (0) TO (10);
       CREATE TABLE public.q (id int PRIMARY KEY) PARTITION BY RANGE (id);
       CREATE UNLOGGED TABLE public.q_1 PARTITION OF public.q FOR VALUES FROM (0) TO (10);`,
      [],
      db,
    );
    const one = await env.startMigration({ source: env.source.uri(db), target: env.target.uri(db), tables: ['public.p_1'] });
    const e1 = (await one.result().catch((e: unknown) => e)) as { cause?: { message?: string } };
    expect(e1.cause?.message).toContain('partitions cannot be migrated on their own: public.p_1 (a partition of public.p)');
    const two = await env.startMigration({ source: env.source.uri(db), target: env.target.uri(db), tables: ['public.q'] });
    const e2 = (await two.result().catch((e: unknown) => e)) as { cause?: { message?: string } };
    expect(e2.cause?.message).toContain('partitioned table public.q has partitions whose changes are not in the WAL: public.q_1 (unlogged)');
    expect(await env.target.query(`SELECT 1 FROM pg_class WHERE relnamespace = 'public'::regnamespace AND relkind IN ('r', 'p')`, [], db)).toHaveLength(0);
  });
});

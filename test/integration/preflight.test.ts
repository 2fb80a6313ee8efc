/**
 * INIT refuses, before touching the source, with one clear message for each precondition.
 * Calls the preflight activity directly against real clusters; the end-to-end refusals through the
 * workflow are in migration.test.ts.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ApplicationFailure } from '@temporalio/common';
import { withClient } from '../../activities/db';
import { preflight } from '../../activities/preflight';
import { toFailure } from '../../activities/edge';
import { startCluster, type PgCluster } from '../harness/pg-cluster';

let src: PgCluster;
let dst: PgCluster;
let oldWal: PgCluster;

const SCHEMA = `
  CREATE TABLE public.users (id int PRIMARY KEY, name text);
  CREATE TABLE public.nokey (a int, b text);
  CREATE TABLE public."Mixed Case" (id int PRIMARY KEY);
  CREATE TABLE public.pnokey (a int, b text) PARTITION BY RANGE (a);
  CREATE TABLE public.pnokey_low PARTITION OF public.pnokey FOR VALUES FROM (0) TO (100);
  CREATE TABLE public.pnokey_high PARTITION OF public.pnokey FOR VALUES FROM (100) TO (200);
  ALTER TABLE public.pnokey_high REPLICA IDENTITY FULL;
`;

/** Everything preflight could conceivably change on the source, to prove it changed nothing. */
async function sourceState(c: PgCluster, db = 'app') {
  const [r] = await c.query(
    `SELECT (SELECT count(*) FROM pg_replication_slots)::int AS slots,
            (SELECT count(*) FROM pg_publication)::int AS pubs,
            (SELECT count(*) FROM pg_class)::int AS classes,
            (SELECT count(*) FROM pg_trigger)::int AS triggers,
            (SELECT string_agg(relname || ':' || relreplident::text, ',' ORDER BY relname) FROM pg_class WHERE relnamespace = 'public'::regnamespace AND relkind = 'r') AS identities`,
    [],
    db,
  );
  return r;
}

async function refusal(spec: Record<string, unknown>): Promise<string> {
  const before = await sourceState(src);
  const err = await preflight(spec).then(
    () => undefined,
    // As the worker carries it: the activity edge makes the Temporal failure.
    (e: unknown) => toFailure(e),
  );
  expect(err, 'preflight should have refused').toBeInstanceOf(ApplicationFailure);
  expect((err as ApplicationFailure).nonRetryable).toBe(true);
  expect(await sourceState(src)).toEqual(before);
  return (err as ApplicationFailure).message;
}

beforeAll(async () => {
  [src, dst, oldWal] = await Promise.all([
    startCluster({ name: 'pf-src', settings: { max_replication_slots: 2 } }),
    startCluster({ name: 'pf-dst' }),
    startCluster({ name: 'pf-replica', settings: { wal_level: 'replica' } }),
  ]);
  for (const c of [src, dst, oldWal]) await c.createDatabase('app');
  await src.query(SCHEMA, [], 'app');
  await oldWal.query(SCHEMA, [], 'app');
  await src.query(`CREATE ROLE app_user LOGIN`, []);
  await src.query(`GRANT SELECT ON ALL TABLES IN SCHEMA public TO app_user`, [], 'app');
});

afterAll(async () => {
  await Promise.allSettled([src?.destroy(), dst?.destroy(), oldWal?.destroy()]);
});

describe('preflight refusals', () => {
  const base = () => ({ source: src.uri('app'), target: dst.uri('app'), tables: ['users', 'Mixed Case'] });

  it('accepts a valid spec and plans the mapped names', async () => {
    const plan = await preflight({ ...base(), tableSuffix: '_x', schemaMapping: { public: 'app' } });
    expect(plan.tables.map((t) => `${t.target.schema}.${t.target.name}`)).toEqual(['app.users_x', 'app.Mixed Case_x']);
    expect(plan.sourceDescription).toBe(`127.0.0.1:${src.port}/app`);
  });

  it('refuses a temporary table: its pg_temp_N schema is reserved', async () => {
    // A temporary table lives in its session's pg_temp_N schema, as long as that session does.
    const holder = await src.client('app');
    try {
      await holder.query('CREATE TEMP TABLE tmp_rows (id int PRIMARY KEY)');
      const schema = (await holder.query<{ s: string }>('SELECT nspname::text AS s FROM pg_namespace WHERE oid = pg_my_temp_schema()')).rows[0]!.s;
      expect(await refusal({ ...base(), tables: ['users', `${schema}.tmp_rows`] })).toContain(`tables: "${schema}" is a reserved schema`);
    } finally {
      await holder.end();
    }
  });

  it('malformed spec fields and identifiers', async () => {
    expect(await refusal({ ...base(), parallelism: -1 })).toMatch(/invalid migration spec: parallelism/);
    expect(await refusal({ ...base(), tables: ['a.b.c'] })).toMatch(/more than one unquoted dot/);
    expect(await refusal({ source: 'http://x', target: dst.uri('app') })).toMatch(/source: must be a postgres:\/\//);
    expect(await refusal({ ...base(), cutover: { mode: 'sometimes' } })).toMatch(/cutover\.mode/);
  });

  it('unreachable servers, unknown tables and schemas', async () => {
    expect(await refusal({ ...base(), target: 'postgres://postgres@127.0.0.1:1/app' })).toContain('cannot connect to the target (127.0.0.1:1/app)');
    expect(await refusal({ ...base(), tables: ['users', 'ghost'] })).toContain('table(s) not found on the source: public.ghost');
    expect(await refusal({ ...base(), tables: undefined, schemas: ['nope'] })).toContain('schema(s) not found on the source: "nope"');
  });

  it('wrong wal_level', async () => {
    const err = await preflight({ ...base(), source: oldWal.uri('app') }).catch((e: Error) => e.message);
    expect(err).toContain('the source has wal_level = replica; online migration needs wal_level = logical');
    // Offline mode does not need logical decoding.
    await expect(preflight({ ...base(), source: oldWal.uri('app'), mode: 'offline' })).resolves.toBeDefined();
  });

  it('missing REPLICATION privilege', async () => {
    const spec = { ...base(), source: `postgres://app_user@127.0.0.1:${src.port}/app` };
    expect(await refusal(spec)).toContain('the source role "app_user" may not open a replication connection: ALTER ROLE "app_user" REPLICATION');
  });

  it('no free replication slot', async () => {
    await src.query(`SELECT pg_create_logical_replication_slot('other1', 'pgoutput'), pg_create_logical_replication_slot('other2', 'pgoutput')`, [], 'app');
    try {
      expect(await refusal(base())).toContain('the source has no free replication slot: 2 of max_replication_slots = 2 in use');
    } finally {
      await src.query(`SELECT pg_drop_replication_slot('other1'), pg_drop_replication_slot('other2')`, [], 'app');
    }
  });

  it('every pg-dts session runs without JIT, whatever the server says (its catalog queries compiled for seconds)', async () => {
    await src.query(`ALTER SYSTEM SET jit = on`);
    await src.query(`ALTER SYSTEM SET jit_above_cost = 0`);
    await src.query('SELECT pg_reload_conf()');
    try {
      expect((await src.query<{ jit: string }>('SHOW jit', [], 'app'))[0]!.jit).toBe('on');
      expect(await withClient(src.uri('app'), async (c) => (await c.query<{ jit: string }>('SHOW jit')).rows[0]!.jit)).toBe('off');
    } finally {
      await src.query(`ALTER SYSTEM RESET jit`);
      await src.query(`ALTER SYSTEM RESET jit_above_cost`);
      await src.query('SELECT pg_reload_conf()');
    }
  });

  it('one free replication slot: accepted, with a notice that a lost snapshot would mean copying everything again', async () => {
    expect((await preflight(base())).notices.join('\n')).not.toContain('no spare');
    await src.query(`SELECT pg_create_logical_replication_slot('other1', 'pgoutput')`, [], 'app');
    try {
      const plan = await preflight(base());
      expect(plan.notices.join('\n')).toContain("the source has no spare replication slot (1 free) beyond the migration's own: if a worker is lost during the copy");
    } finally {
      await src.query(`SELECT pg_drop_replication_slot('other1')`, [], 'app');
    }
  });

  it('a table without replica identity, named; or set FULL when asked', async () => {
    expect(await refusal({ ...base(), tables: ['users', 'nokey'] })).toMatch(/table\(s\) without a replica identity .*: public\.nokey\./);
    const plan = await preflight({ ...base(), tables: ['users', 'nokey'], setReplicaIdentityFull: true });
    expect(plan.replicaIdentityFull).toEqual([{ table: { schema: 'public', name: 'nokey' }, original: 'default' }]);
    expect(plan.notices.join()).toContain('public.nokey has no replica identity');
    // A partitioned table: each partition is checked (pnokey_high has FULL).
    expect(await refusal({ ...base(), tables: ['users', 'pnokey'] })).toMatch(/without a replica identity .*: public\.pnokey_low\./);
  });

  it('target tables already exist; source and target the same tables', async () => {
    await dst.query(`CREATE TABLE public.users (id int)`, [], 'app');
    try {
      expect(await refusal(base())).toContain('target table(s) already exist: public.users');
    } finally {
      await dst.query(`DROP TABLE public.users`, [], 'app');
    }
    expect(await refusal({ ...base(), target: src.uri('app') })).toContain(
      'source and target are the same database and these tables would be migrated onto themselves: public.users, public.Mixed Case',
    );
    // The same database is fine with a suffix.
    await expect(preflight({ ...base(), target: src.uri('app'), tableSuffix: '_copy' })).resolves.toBeDefined();
  });
});

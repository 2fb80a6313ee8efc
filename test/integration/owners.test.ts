/**
 * `objects: true` carries owners and grants (issue 18 point 2), through the whole workflow on real
 * servers. The source's schema, tables, sequences, type, views, matviews and functions are owned by
 * an ordinary role `alice`, with grants to `bob` (column grants, a REVOKE EXECUTE … FROM PUBLIC);
 * a table, a matview and a function belong to `ghost`, a role the target lacks, and a SECURITY
 * DEFINER function to the superuser. After an online migration:
 * - during SYNCING_WAL every target table is still the migration role's (the apply writes as it);
 * - afterwards every object has the source's owner and exactly the source's ACL; ghost's stay with
 *   the migration role, named in a notice; the tables' content equals the source's;
 * - alice's SECURITY DEFINER function is alice's on the target: bob, allowed to run it, cannot make
 *   himself superuser through it; the superuser's SECURITY DEFINER function is not created;
 * - the matview is refreshed as alice (its query records current_user), ghost's matview is not
 *   refreshed as a superuser.
 * With an `owners` object naming no role for ghost, preflight refuses before anything is created;
 * with `owners.map`, ghost's objects go to the mapped role.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { WorkflowFailedError } from '@temporalio/client';
import { fingerprint } from '../harness/compare';
import { startEnv, type TestEnv } from '../harness/env';

let env: TestEnv;

const SOURCE_DDL = `
CREATE SCHEMA audit;
CREATE TABLE audit.refresh_log (who text NOT NULL, at timestamptz NOT NULL DEFAULT now());
GRANT USAGE ON SCHEMA audit TO PUBLIC;
GRANT INSERT ON audit.refresh_log TO PUBLIC;

CREATE SCHEMA app AUTHORIZATION alice;
GRANT USAGE ON SCHEMA app TO PUBLIC;
CREATE TYPE app.mood AS ENUM ('ok', 'bad');
ALTER TYPE app.mood OWNER TO alice;
REVOKE USAGE ON TYPE app.mood FROM PUBLIC;
GRANT USAGE ON TYPE app.mood TO bob;
CREATE TABLE app.accounts (id serial PRIMARY KEY, name text NOT NULL, mood app.mood NOT NULL DEFAULT 'ok', secret text);
ALTER TABLE app.accounts OWNER TO alice;
GRANT SELECT (id, name) ON app.accounts TO bob;
CREATE TABLE app.events (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, what text);
ALTER TABLE app.events OWNER TO alice;
GRANT SELECT, INSERT ON app.events TO bob WITH GRANT OPTION;
CREATE SEQUENCE app.ticket_no;
ALTER SEQUENCE app.ticket_no OWNER TO alice;
GRANT USAGE ON SEQUENCE app.ticket_no TO bob;
CREATE TABLE app.logs (id int, at date, PRIMARY KEY (id, at)) PARTITION BY RANGE (at);
CREATE TABLE app.logs_2026 PARTITION OF app.logs FOR VALUES FROM ('2026-01-01') TO ('2027-01-01');
ALTER TABLE app.logs OWNER TO alice;
ALTER TABLE app.logs_2026 OWNER TO alice;
GRANT SELECT ON app.logs TO bob;
GRANT UPDATE ON app.logs_2026 TO bob;
CREATE TABLE app.haunted (id int PRIMARY KEY, note text);
ALTER TABLE app.haunted OWNER TO ghost;
GRANT SELECT ON app.haunted TO bob;

-- alice's SECURITY DEFINER function runs any SQL as alice: bob may call it, PUBLIC may not
CREATE FUNCTION app.run_as_owner(q text) RETURNS void LANGUAGE plpgsql SECURITY DEFINER AS $$ BEGIN EXECUTE q; END $$;
ALTER FUNCTION app.run_as_owner(text) OWNER TO alice;
REVOKE EXECUTE ON FUNCTION app.run_as_owner(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION app.run_as_owner(text) TO bob;
-- the superuser's: recreated it would hand out superuser
CREATE FUNCTION app.run_as_postgres(q text) RETURNS void LANGUAGE plpgsql SECURITY DEFINER AS $$ BEGIN EXECUTE q; END $$;
REVOKE EXECUTE ON FUNCTION app.run_as_postgres(text) FROM PUBLIC;
CREATE FUNCTION app.account_count() RETURNS bigint LANGUAGE sql STABLE AS 'SELECT count(*) FROM app.accounts';
ALTER FUNCTION app.account_count() OWNER TO alice;
REVOKE EXECUTE ON FUNCTION app.account_count() FROM PUBLIC;
-- records who runs it: the matview's query calls it at every refresh
CREATE FUNCTION app.record_who() RETURNS text LANGUAGE plpgsql VOLATILE AS $$
BEGIN INSERT INTO audit.refresh_log (who) VALUES (current_user); RETURN current_user::text; END $$;
ALTER FUNCTION app.record_who() OWNER TO alice;

CREATE VIEW app.names AS SELECT id, name FROM app.accounts;
ALTER VIEW app.names OWNER TO alice;
GRANT SELECT ON app.names TO bob;
CREATE MATERIALIZED VIEW app.moods AS SELECT mood, count(*) AS n, app.record_who() AS refreshed_by FROM app.accounts GROUP BY mood WITH NO DATA;
ALTER MATERIALIZED VIEW app.moods OWNER TO alice;
GRANT SELECT ON app.moods TO bob;
CREATE MATERIALIZED VIEW app.ghost_view AS SELECT count(*) AS n, app.record_who() AS refreshed_by FROM app.haunted WITH NO DATA;
ALTER MATERIALIZED VIEW app.ghost_view OWNER TO ghost;

INSERT INTO app.accounts (name, mood, secret) SELECT 'account ' || i, CASE WHEN i % 3 = 0 THEN 'bad' ELSE 'ok' END::app.mood, md5(i::text) FROM generate_series(1, 200) i;
INSERT INTO app.events (what) SELECT 'event ' || i FROM generate_series(1, 50) i;
INSERT INTO app.haunted SELECT i, 'boo ' || i FROM generate_series(1, 10) i;
INSERT INTO app.logs SELECT i, date '2026-01-01' + i FROM generate_series(1, 30) i;
SELECT nextval('app.ticket_no') FROM generate_series(1, 7);
REFRESH MATERIALIZED VIEW app.moods;
REFRESH MATERIALIZED VIEW app.ghost_view;
`;

/** Owner and ACL of every object of schema app (and the schema), as text: the same on both sides once carried. */
const ACCESS_SQL = `
  SELECT 'schema app' AS object, pg_get_userbyid(nspowner)::text AS owner, nspacl::text AS acl FROM pg_namespace WHERE nspname = 'app'
  UNION ALL
  SELECT c.relkind::text || ' ' || c.relname, pg_get_userbyid(c.relowner)::text, c.relacl::text
    FROM pg_class c WHERE c.relnamespace = 'app'::regnamespace AND c.relkind IN ('r', 'p', 'S', 'v', 'm')
  UNION ALL
  SELECT 'column ' || c.relname || '.' || a.attname, NULL, a.attacl::text
    FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid WHERE c.relnamespace = 'app'::regnamespace AND a.attacl IS NOT NULL
  UNION ALL
  SELECT 'function ' || p.proname || CASE WHEN p.prosecdef THEN ' (security definer)' ELSE '' END, pg_get_userbyid(p.proowner)::text, p.proacl::text
    FROM pg_proc p WHERE p.pronamespace = 'app'::regnamespace
  UNION ALL
  SELECT 'type ' || t.typname, pg_get_userbyid(t.typowner)::text, t.typacl::text FROM pg_type t WHERE t.typnamespace = 'app'::regnamespace AND t.typtype = 'e'
  ORDER BY 1`;

type Access = { object: string; owner: string | null; acl: string | null };

async function prepare(db: string): Promise<void> {
  await env.source.createDatabase(db);
  await env.target.createDatabase(db);
  await env.source.query(SOURCE_DDL, [], db);
  // The target has the audit table the matview's function writes to (not migrated), and no ghost.
  await env.target.query(
    `CREATE SCHEMA audit; CREATE TABLE audit.refresh_log (who text NOT NULL, at timestamptz NOT NULL DEFAULT now());
     GRANT USAGE ON SCHEMA audit TO PUBLIC; GRANT INSERT ON audit.refresh_log TO PUBLIC;`,
    [],
    db,
  );
}

async function sameContent(db: string, tables: string[]): Promise<void> {
  for (const t of tables) {
    const [a, b] = await Promise.all([fingerprint(env.source, db, 'app', t), fingerprint(env.target, db, 'app', t)]);
    expect(a.rows, t).toBeGreaterThan(0);
    expect({ table: t, ...b }).toEqual({ table: t, ...a });
  }
}

beforeAll(async () => {
  env = await startEnv();
  await env.source.query(`CREATE ROLE alice LOGIN; CREATE ROLE bob LOGIN; CREATE ROLE ghost LOGIN; CREATE ROLE carol LOGIN`);
  await env.target.query(
    `CREATE ROLE alice LOGIN; CREATE ROLE bob LOGIN; CREATE ROLE carol LOGIN;
     CREATE ROLE migrator LOGIN IN ROLE alice; GRANT SET ON PARAMETER session_replication_role TO migrator`,
  );
});

afterAll(async () => {
  await env?.stop();
});

describe('objects: true carries owners and grants', () => {
  const db = 'owners1';
  let report: Awaited<ReturnType<Awaited<ReturnType<TestEnv['startMigration']>>['result']>>;
  let duringSync: string[];

  beforeAll(async () => {
    await prepare(db);
    const m = await env.startMigration({ source: env.source.uri(db), target: env.target.uri(db), schemas: ['app'], objects: true, cutover: { mode: 'manual' } });
    await m.waitForPhase('SYNCING_WAL', 180_000);
    // The apply writes as the migration role, which still owns every table it writes.
    duringSync = (
      await env.target.query<{ owner: string }>(`SELECT DISTINCT pg_get_userbyid(relowner)::text AS owner FROM pg_class WHERE relnamespace = 'app'::regnamespace AND relkind IN ('r', 'p', 'S')`, [], db)
    ).map((r) => r.owner);
    await env.source.query(`SET ROLE alice; INSERT INTO app.accounts (name, secret) VALUES ('late', 'x'); UPDATE app.events SET what = 'changed' WHERE id <= 5`, [], db);
    await m.signal('cutover');
    report = await m.result();
  }, 300_000);

  it('completes, the tables equal the source, ownership moved only after the apply', async () => {
    expect(report.phase).toBe('COMPLETED');
    expect(duringSync).toEqual(['postgres']);
    await sameContent(db, ['accounts', 'events', 'haunted', 'logs', 'logs_2026']);
  });

  it('gives every object the source owner and exactly its grants; ghost’s stay with the migration role, named', async () => {
    const [src, dst] = await Promise.all([env.source.query<Access>(ACCESS_SQL, [], db), env.target.query<Access>(ACCESS_SQL, [], db)]);
    const isGhost = (a: Access) => /haunted|ghost_view|run_as_postgres/.test(a.object);
    expect(dst.filter((a) => !isGhost(a))).toEqual(src.filter((a) => !isGhost(a)));
    // What the sample carries: a column grant, a grant option, a revoked PUBLIC execute, a revoked type usage.
    const acl = (o: string) => dst.find((a) => a.object === o)?.acl;
    expect(acl('column accounts.name')).toBe('{bob=r/alice}');
    expect(acl('r events')).toBe('{alice=arwdDxt/alice,bob=a*r*/alice}');
    expect(acl('function account_count')).toBe('{alice=X/alice}');
    expect(acl('type mood')).toBe('{alice=U/alice,bob=U/alice}');
    // ghost's grants cannot be carried, bob's on ghost's table are.
    expect(dst.find((a) => a.object === 'r haunted')).toEqual({ object: 'r haunted', owner: 'postgres', acl: '{postgres=arwdDxt/postgres,bob=r/postgres}' });
    expect(dst.find((a) => a.object === 'S ticket_no')?.owner).toBe('alice');
    expect(report.notices.filter((n) => /^role\(s\) "ghost" own or are granted objects on the source and do not exist on the target: what they own stays owned by "postgres"/.test(n))).toHaveLength(2);
    expect(report.notices.join('\n')).toMatch(/"ghost" .* \(found in preflight: owners move at FINALIZING/);
  });

  it('a REVOKE EXECUTE … FROM PUBLIC holds on the target', async () => {
    const c = await env.target.client(db);
    try {
      await c.query('SET ROLE carol');
      await expect(c.query('SELECT app.account_count()')).rejects.toThrow(/permission denied for function account_count/);
      await c.query('RESET ROLE; SET ROLE alice');
      expect((await c.query<{ n: string }>('SELECT app.account_count() AS n')).rows[0]!.n).toBe('201');
    } finally {
      await c.end();
    }
  });

  it('the SECURITY DEFINER function is alice’s: bob runs it as alice and cannot make himself superuser', async () => {
    expect(report.objects?.created).toContain('function app.run_as_owner(text)');
    const c = await env.target.client(db);
    try {
      await c.query('SET ROLE bob');
      await expect(c.query(`SELECT app.run_as_owner('ALTER ROLE bob SUPERUSER')`)).rejects.toThrow(/must be superuser to alter superuser roles/);
      await c.query(`SELECT app.run_as_owner('INSERT INTO app.events (what) VALUES (current_user)')`);
      await c.query('RESET ROLE; SET ROLE carol');
      await expect(c.query(`SELECT app.run_as_owner('SELECT 1')`)).rejects.toThrow(/permission denied for function run_as_owner/);
    } finally {
      await c.end();
    }
    const who = await env.target.query<{ what: string }>(`SELECT what FROM app.events ORDER BY id DESC LIMIT 1`, [], db);
    expect(who).toEqual([{ what: 'alice' }]);
    const su = await env.target.query<{ rolsuper: boolean }>(`SELECT rolsuper FROM pg_roles WHERE rolname = 'bob'`);
    expect(su).toEqual([{ rolsuper: false }]);
    // The superuser's is not recreated, and the report says why.
    const skipped = report.objects?.skipped.find((s) => s.object === 'function app.run_as_postgres(text)');
    expect(skipped?.reason).toMatch(/^SECURITY DEFINER: its owner on the target would be "postgres", a superuser/);
    expect(await env.target.query(`SELECT 1 FROM pg_proc WHERE proname = 'run_as_postgres'`, [], db)).toEqual([]);
  });

  it('refreshes the materialized view as its owner, and not ghost’s as a superuser', async () => {
    const log = await env.target.query<{ who: string }>(`SELECT who FROM audit.refresh_log`, [], db);
    expect(log.map((r) => r.who)).toEqual(['alice', 'alice']);
    const rows = `SELECT mood::text, n, refreshed_by FROM app.moods ORDER BY 1`;
    const [a, b] = await Promise.all([env.source.query(rows, [], db), env.target.query(rows, [], db)]);
    expect(a.length).toBe(2);
    // The target's holds the row written during the sync, which the source's (refreshed before it) does not.
    expect(b).toEqual(a.map((r) => ({ ...r, n: r.mood === 'ok' ? String(Number(r.n) + 1) : r.n })));
    const populated = await env.target.query<{ p: boolean }>(`SELECT relispopulated AS p FROM pg_class WHERE oid = 'app.ghost_view'::regclass`, [], db);
    expect(populated).toEqual([{ p: false }]);
    expect(report.notices.join('\n')).toMatch(/materialized view app\.ghost_view: not refreshed: its owner on the target, "postgres", is a superuser and its source owner "ghost" is not/);
  });
});

describe('an owners object', () => {
  it('refuses in preflight, naming the roles to create, when a source owner has no role on the target', async () => {
    const db = 'owners2';
    await prepare(db);
    const m = await env.startMigration({ source: env.source.uri(db), target: env.target.uri(db), schemas: ['app'], objects: true, owners: { map: { alice: 'alice' } } });
    const err = await m.result().then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(WorkflowFailedError);
    expect(String((err as WorkflowFailedError).cause?.message)).toMatch(/the target has no role "ghost", which own\(s\) what the migration creates/);
    expect(await env.target.query(`SELECT 1 FROM pg_namespace WHERE nspname = 'app'`, [], db)).toEqual([]);
  });

  it('gives a mapped role what a missing role owned, and refreshes its matview as that role (offline)', async () => {
    const db = 'owners3';
    await prepare(db);
    const m = await env.startMigration({
      source: env.source.uri(db),
      target: env.target.uri(db),
      schemas: ['app'],
      mode: 'offline',
      objects: true,
      owners: { map: { ghost: 'carol' } },
    });
    const report = await m.result();
    expect(report.phase).toBe('COMPLETED');
    await sameContent(db, ['accounts', 'events', 'haunted', 'logs', 'logs_2026']);
    const owners = await env.target.query<{ relname: string; owner: string; acl: string | null }>(
      `SELECT relname::text, pg_get_userbyid(relowner)::text AS owner, relacl::text AS acl FROM pg_class WHERE oid IN ('app.haunted'::regclass, 'app.ghost_view'::regclass) ORDER BY 1`,
      [],
      db,
    );
    expect(owners).toEqual([
      { relname: 'ghost_view', owner: 'carol', acl: null },
      { relname: 'haunted', owner: 'carol', acl: '{carol=arwdDxt/carol,bob=r/carol}' },
    ]);
    const log = await env.target.query<{ who: string }>(`SELECT who FROM audit.refresh_log ORDER BY who`, [], db);
    expect(log.map((r) => r.who)).toEqual(['alice', 'alice', 'carol']);
    expect(report.notices.join('\n')).not.toMatch(/do not exist on the target/);
  });
});

describe('owners without objects', () => {
  it('gives the tables, sequences, type and schema their owners and grants, and creates no view or function', async () => {
    const db = 'owners6';
    await prepare(db);
    const m = await env.startMigration({ source: env.source.uri(db), target: env.target.uri(db), schemas: ['app'], mode: 'offline', owners: { map: { ghost: 'carol' } } });
    const report = await m.result();
    expect(report.phase).toBe('COMPLETED');
    await sameContent(db, ['accounts', 'events', 'haunted', 'logs', 'logs_2026']);
    const [src, dst] = await Promise.all([env.source.query<Access>(ACCESS_SQL, [], db), env.target.query<Access>(ACCESS_SQL, [], db)]);
    const tablesEtc = (a: Access) => /^(schema|type|column|[rpS]) /.test(a.object) && !/haunted/.test(a.object);
    expect(dst.filter(tablesEtc)).toEqual(src.filter(tablesEtc));
    expect(dst.find((a) => a.object === 'r haunted')).toEqual({ object: 'r haunted', owner: 'carol', acl: '{carol=arwdDxt/carol,bob=r/carol}' });
    expect(dst.filter((a) => /^(function|v|m) /.test(a.object))).toEqual([]);
  });
});

describe('a target role that is no superuser (managed services)', () => {
  const asMigrator = (uri: string) => uri.replace('postgres://postgres@', 'postgres://migrator@');

  it('carries the owners it is a member of, online under writes, after the apply has stopped', async () => {
    const db = 'owners4';
    await prepare(db);
    await env.target.query(`GRANT CREATE ON DATABASE ${db} TO migrator`);
    const m = await env.startMigration({ source: env.source.uri(db), target: asMigrator(env.target.uri(db)), schemas: ['app'], objects: true, cutover: { mode: 'manual' } });
    await m.waitForPhase('SYNCING_WAL', 180_000);
    await env.source.query(`SET ROLE alice; INSERT INTO app.accounts (name, secret) SELECT 'late ' || i, 'x' FROM generate_series(1, 20) i; UPDATE app.events SET what = 'changed' WHERE id <= 5`, [], db);
    await env.source.query(`UPDATE app.haunted SET note = 'moved' WHERE id = 1`, [], db);
    await m.signal('cutover');
    const report = await m.result();
    expect(report.phase).toBe('COMPLETED');
    await sameContent(db, ['accounts', 'events', 'haunted', 'logs', 'logs_2026']);
    const [src, dst] = await Promise.all([env.source.query<Access>(ACCESS_SQL, [], db), env.target.query<Access>(ACCESS_SQL, [], db)]);
    const isGhost = (a: Access) => /haunted|ghost_view|run_as_postgres/.test(a.object);
    expect(dst.filter((a) => !isGhost(a))).toEqual(src.filter((a) => !isGhost(a)));
    expect(dst.find((a) => a.object === 'r haunted')?.owner).toBe('migrator');
    expect(report.objects?.created).toContain('function app.run_as_owner(text)');
    // moods as its owner alice; ghost_view stays migrator's, which is no superuser: refreshed as migrator.
    const log = await env.target.query<{ who: string }>(`SELECT who FROM audit.refresh_log ORDER BY who`, [], db);
    expect(log.map((r) => r.who)).toEqual(['alice', 'alice', 'migrator']);
    // The superuser's function: never membership of a superuser, which would make migrator one.
    expect(report.notices.join('\n')).toMatch(/is neither a superuser nor a member of "postgres": .* map "postgres", a superuser, to another role in spec\.owners\.map/);
  }, 300_000);

  it('with an owners object, refuses in preflight an owner it is not a member of, naming the GRANT', async () => {
    const db = 'owners5';
    await prepare(db);
    await env.target.query(`GRANT CREATE ON DATABASE ${db} TO migrator`);
    const m = await env.startMigration({
      source: env.source.uri(db),
      target: asMigrator(env.target.uri(db)),
      schemas: ['app'],
      objects: true,
      owners: { map: { ghost: 'carol' } },
    });
    const err = await m.result().then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(WorkflowFailedError);
    expect(String((err as WorkflowFailedError).cause?.message)).toBe(
      'the target role "migrator" is not a superuser and cannot give what the migration creates to "carol", "postgres" (ALTER … OWNER TO needs membership of the new owner): ' +
        'GRANT "carol" TO "migrator"; map "postgres", a superuser, to another role in spec.owners.map',
    );
    expect(await env.target.query(`SELECT 1 FROM pg_namespace WHERE nspname = 'app'`, [], db)).toEqual([]);
  });
});

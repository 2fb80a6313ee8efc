/**
 * Target-side safety (issue 18), each finding reproduced on real servers through the workflow:
 * source-defined expressions never run with our rights, nothing we did not create is dropped or
 * truncated, reserved names are refused, one migration per id, rights checked before anything changes.
 */
import { existsSync, rmSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { WorkflowFailedError } from '@temporalio/client';
import { startEnv, type MigrationHandle, type TestEnv } from '../harness/env';
import { fingerprint } from '../harness/compare';
import { preflight } from '../../activities/preflight';
import { createTargetTables } from '../../activities/create-tables';
import { copyTable } from '../../activities/copy';
import { dropTargetTables } from '../../activities/cleanup';

let env: TestEnv;
let dbCounter = 0;

/** An empty database of the same name on both clusters, the source loaded with `ddl`. */
async function databases(ddl: string): Promise<{ db: string; source: string; target: string }> {
  const db = `safety${++dbCounter}`;
  await env.source.createDatabase(db);
  await env.target.createDatabase(db);
  await env.source.query(ddl, [], db);
  return { db, source: env.source.uri(db), target: env.target.uri(db) };
}

async function targetTables(db: string): Promise<string[]> {
  const rows = await env.target.query<{ t: string }>(
    `SELECT n.nspname || '.' || c.relname AS t FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
      WHERE c.relkind IN ('r', 'p') AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast') ORDER BY 1`,
    [],
    db,
  );
  return rows.map((r) => r.t);
}

/** The message a migration failed with (it must fail). */
async function failure(m: MigrationHandle): Promise<string> {
  const err = await m.result().then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err, 'the migration should have failed').toBeInstanceOf(WorkflowFailedError);
  expect((await m.status()).phase).toBe('FAILED');
  return String((err as WorkflowFailedError).cause?.message);
}

beforeAll(async () => {
  env = await startEnv();
});

afterAll(async () => {
  await env?.stop();
});

describe('source-defined expressions', () => {
  it('refuses, before changing anything, CHECKs and domain CHECKs that would read files or run SQL as the target superuser', async () => {
    // The file name carries the server's port: the source writes its own when the CHECK is added there.
    const leak = `/tmp/pgdts-safety-${process.pid}-`;
    const { db, source, target } = await databases(`
      CREATE TABLE public.reads (id int PRIMARY KEY, v text);
      CREATE TABLE public.writes (id int PRIMARY KEY, v int);
      INSERT INTO public.reads VALUES (1, 'x');
      INSERT INTO public.writes VALUES (1, 1);
      ALTER TABLE public.reads ADD CHECK (v <> pg_read_file('/etc/passwd'));
      SELECT lo_from_bytea(4242, 'owned');
      ALTER TABLE public.writes ADD CONSTRAINT writes_v_check CHECK (lo_export(4242, '${leak}' || inet_server_port()) > 0);
      CREATE DOMAIN public.sneaky AS text CHECK (query_to_xml('SELECT pg_read_file(''/etc/passwd'')', true, true, '') IS NOT NULL);
      CREATE TABLE public.via_domain (id int PRIMARY KEY, v public.sneaky);
      CREATE FUNCTION public.escalate(int) RETURNS boolean LANGUAGE sql AS 'SELECT set_config(''role'', ''none'', false) IS NOT NULL';
      CREATE TABLE public.via_function (id int PRIMARY KEY, v int CHECK (public.escalate(v)));
      CREATE TABLE public.harmless (id int PRIMARY KEY, v text CHECK (length(lower(v)) < 10 AND now() > '2000-01-01'), at timestamptz CHECK (at < clock_timestamp()));
      CREATE INDEX ON public.harmless (lower(v)) WHERE v <> '';
      INSERT INTO public.harmless VALUES (1, 'a', '2001-01-01');`);
    // The same large object on the target: only the refusal keeps it from writing the file there.
    await env.target.query(`SELECT lo_from_bytea(4242, 'owned')`, [], db);
    const m = await env.startMigration({ source, target, mode: 'offline' });
    const error = await failure(m);
    expect(error).toContain('CHECK constraint reads_v_check on public.reads calls pg_read_file(text)');
    expect(error).toContain('CHECK constraint writes_v_check on public.writes calls lo_export(oid,text)');
    expect(error).toContain('CHECK constraint sneaky_check of domain public.sneaky calls query_to_xml(text,boolean,boolean,text)');
    expect(error).toContain('CHECK constraint via_function_v_check on public.via_function calls public.escalate(integer) (a user-defined function)');
    expect(error, 'the harmless table is not named').not.toContain('harmless');
    expect(error, 'no file content in the error').not.toMatch(/root:|\/bin\/(ba)?sh/);
    expect(existsSync(`${leak}${env.source.port}`), 'the source evaluated it').toBe(true);
    rmSync(`${leak}${env.source.port}`, { force: true });
    expect(existsSync(`${leak}${env.target.port}`), 'nothing written by the target').toBe(false);
    expect(await targetTables(db), 'nothing created on the target').toEqual([]);

    // The same source without the offending tables migrates, its built-in CHECKs and index intact.
    const ok = await env.startMigration({ source, target, mode: 'offline', tables: ['public.harmless'] });
    expect((await ok.result()).phase).toBe('COMPLETED');
    expect(await fingerprint(env.target, db, 'public', 'harmless')).toEqual(await fingerprint(env.source, db, 'public', 'harmless'));
  });
});

describe('what we did not create', () => {
  it('a target table created by someone else after preflight is refused at every phase: never adopted, emptied or dropped', async () => {
    const { db, source, target } = await databases(`
      CREATE TABLE public.a (id int PRIMARY KEY, v text);
      INSERT INTO public.a SELECT g, 'src' || g FROM generate_series(1, 50) g;`);
    const plan = await preflight({ source, target });
    // Between INIT and CREATING_TABLES, someone creates the same table and writes to it.
    await env.target.query(`CREATE TABLE public.a (id int PRIMARY KEY, v text); INSERT INTO public.a VALUES (1, 'theirs')`, [], db);
    const theirs = await fingerprint(env.target, db, 'public', 'a');
    const created = await createTargetTables({ ...plan, migrationId: 'm_safety' }).then(
      () => 'created',
      (e: Error) => e.message,
    );
    expect(created).toContain('target table(s) public.a were not created by migration m_safety');
    const def = { source: { schema: 'public', name: 'a' }, target: { schema: 'public', name: 'a' }, copyColumns: ['id', 'v'] };
    const copied = await copyTable({ source, target, table: def, migrationId: 'm_safety' }, { heartbeat: () => undefined, signal: new AbortController().signal }).then(
      () => 'copied',
      (e: Error) => e.message,
    );
    expect(copied).toContain('were not created by migration m_safety');
    const dropped = await dropTargetTables(target, [def.target], 'm_safety');
    expect(dropped).toEqual({ dropped: 0, kept: ['public.a: not created by this migration'] });
    expect(await fingerprint(env.target, db, 'public', 'a'), 'their table and row untouched').toEqual(theirs);
  });

  it('cancel drops only what it created (tables, schemas, types, sequences, extensions), never with CASCADE; pgdts keeps what is not ours', async () => {
    const { db, source, target } = await databases(`
      CREATE EXTENSION citext;
      CREATE SCHEMA sales;
      CREATE TYPE sales.state AS ENUM ('new', 'paid');
      CREATE DOMAIN sales.amount AS numeric CHECK (VALUE >= 0);
      CREATE SEQUENCE sales.invoice_no;
      CREATE TABLE sales.orders (id int PRIMARY KEY, state sales.state, total sales.amount, email citext, no bigint DEFAULT nextval('sales.invoice_no'));
      INSERT INTO sales.orders VALUES (1, 'new', 3, 'A@x', 1);
      CREATE TABLE public.t1 (id int PRIMARY KEY, v text);
      CREATE TABLE public.t2 (id int PRIMARY KEY, t1 int REFERENCES public.t1);
      CREATE TABLE public.t3 (id int PRIMARY KEY);
      INSERT INTO public.t1 SELECT g, 'v' || g FROM generate_series(1, 100) g;
      INSERT INTO public.t2 SELECT g, g FROM generate_series(1, 100) g;
      INSERT INTO public.t3 SELECT generate_series(1, 10);`);
    // Someone's own table in a schema named like ours.
    await env.target.query(`CREATE SCHEMA pgdts; CREATE TABLE pgdts.keep (id int); INSERT INTO pgdts.keep VALUES (7)`, [], db);
    // A type of the same name that was there before: used as it is, and kept.
    await env.target.query(`CREATE TYPE public.mood AS ENUM ('ok')`, [], db);
    await env.source.query(`CREATE TYPE public.mood AS ENUM ('ok'); ALTER TABLE public.t3 ADD COLUMN m public.mood`, [], db);
    const m = await env.startMigration({ source, target, schemas: ['public', 'sales'], cutover: { mode: 'manual' } });
    await m.waitForPhase('SYNCING_WAL');
    expect(await env.target.query(`SELECT count(*)::int AS n FROM sales.orders`, [], db)).toEqual([{ n: 1 }]);
    // Objects of someone else's that depend on our tables.
    await env.target.query(`CREATE VIEW public.their_view AS SELECT id FROM public.t1; CREATE TABLE public.their_refs (id int REFERENCES public.t3)`, [], db);
    await m.signal('cancel');
    const report = await m.result();
    expect(report.phase).toBe('CANCELLED');
    expect(await targetTables(db)).toEqual(['pgdts.keep', 'public.t1', 'public.t3', 'public.their_refs']);
    const notices = (await m.status()).notices.join('\n');
    expect(notices).toMatch(/target table not dropped: public\.t1: kept, other objects depend on it \(view their_view depends on table t1\)/);
    expect(notices).toMatch(/target table not dropped: public\.t3: kept, other objects depend on it \(constraint their_refs_id_fkey on table their_refs depends on table t3\)/);
    expect(await env.target.query(`SELECT count(*)::int AS n FROM public.their_view`, [], db)).toEqual([{ n: 100 }]);
    expect(await env.target.query(`SELECT id FROM pgdts.keep`, [], db)).toEqual([{ id: 7 }]);
    const [left] = await env.target.query(
      `SELECT (SELECT count(*)::int FROM pg_namespace WHERE nspname = 'sales') AS schemas,
              (SELECT count(*)::int FROM pg_extension WHERE extname = 'citext') AS extensions,
              (SELECT string_agg(typname, ',' ORDER BY typname) FROM pg_type WHERE typtype IN ('e', 'd') AND typnamespace <> 'information_schema'::regnamespace) AS types,
              (SELECT count(*)::int FROM pg_class WHERE relkind = 'S') AS sequences`,
      [],
      db,
    );
    expect(left, 'only the type that was there before is left').toEqual({ schemas: 0, extensions: 0, types: 'mood', sequences: 0 });
  });
});

describe('names', () => {
  it('a target name PostgreSQL would truncate (over 63 bytes with the suffix) is refused at INIT', async () => {
    const long = 'ü'.repeat(28); // 28 characters, 56 bytes
    const { db, source, target } = await databases(`CREATE TABLE public."${long}" (id int PRIMARY KEY)`);
    const error = await failure(await env.startMigration({ source, target, tableSuffix: '_migrated', mode: 'offline' }));
    expect(error).toContain(`table "${long}_migrated"`);
    expect(error).toContain('longer than 63 bytes');
    expect(await targetTables(db)).toEqual([]);
  });
});

describe('one migration per id', () => {
  it('a second workflow with the same spec.id is refused at INIT naming the running one; the first is unharmed', async () => {
    const { db, source, target } = await databases(`
      CREATE TABLE public.k (id int PRIMARY KEY, v int);
      INSERT INTO public.k SELECT g, g FROM generate_series(1, 200) g;`);
    await env.target.query('CREATE SCHEMA other', [], db);
    const first = await env.startMigration({ id: 'shared_id', source, target, cutover: { mode: 'manual' } });
    await first.waitForPhase('SYNCING_WAL');
    const slotBefore = await env.source.query<{ slot_name: string }>(`SELECT slot_name FROM pg_replication_slots`, [], db);
    // Outside pgdts (whose progress, plan and proof tables the running first migration may still be
    // creating), the target holds the first migration's table alone.
    const ours = async () => (await targetTables(db)).filter((t) => !t.startsWith('pgdts.'));
    const tablesBefore = await ours();
    expect(tablesBefore).toEqual(['public.k']);
    const second = await env.startMigration({ id: 'shared_id', source, target, schemaMapping: { public: 'other' } });
    const error = await failure(second);
    expect(error).toContain(`migration id "shared_id" is in use by running workflow(s) ${first.workflowId}`);
    expect(await env.source.query(`SELECT slot_name FROM pg_replication_slots`, [], db)).toEqual(slotBefore);
    expect(await ours(), 'the second created nothing').toEqual(tablesBefore);
    await env.source.query(`UPDATE public.k SET v = v + 1 WHERE id <= 20`, [], db);
    await first.signal('cutover');
    expect((await first.result()).phase).toBe('COMPLETED');
    expect(await fingerprint(env.target, db, 'public', 'k')).toEqual(await fingerprint(env.source, db, 'public', 'k'));
  });
});

describe('rights', () => {
  it('a source role with REPLICATION alone is refused at INIT, naming each missing right; granted them, it passes', async () => {
    const { db, source, target } = await databases(`
      CREATE TABLE public.r1 (id serial PRIMARY KEY);
      CREATE TABLE public.r2 (id int PRIMARY KEY);`);
    await env.source.query(`DO $$ BEGIN CREATE ROLE repl_only LOGIN REPLICATION; EXCEPTION WHEN duplicate_object THEN NULL; END $$`);
    await env.source.query(`REVOKE CREATE ON DATABASE ${db} FROM PUBLIC; GRANT SELECT ON public.r1 TO repl_only`, [], db);
    const asRepl = source.replace('postgres://postgres@', 'postgres://repl_only@');
    const error = await preflight({ source: asRepl, target }).then(
      () => 'passed',
      (e: Error) => e.message,
    );
    expect(error).toContain('the source role "repl_only" lacks rights the migration needs');
    expect(error).toContain('SELECT on r2');
    expect(error).not.toContain('SELECT on r1');
    expect(error).toContain('ownership of r1 (owned by postgres)');
    expect(error).toContain(`CREATE on database ${db}`);
    expect(error).toContain('SELECT on sequence r1_id_seq');
    expect(await targetTables(db), 'nothing on the target').toEqual([]);
    // Offline needs SELECT only.
    await env.source.query(`GRANT SELECT ON public.r2 TO repl_only`, [], db);
    await expect(preflight({ source: asRepl, target, mode: 'offline' })).resolves.toBeDefined();
    await env.source.query(`ALTER TABLE public.r1 OWNER TO repl_only; ALTER TABLE public.r2 OWNER TO repl_only; GRANT CREATE ON DATABASE ${db} TO repl_only`, [], db);
    await expect(preflight({ source: asRepl, target })).resolves.toBeDefined();
  });
});

describe('target rights', () => {
  it('a target role that may not create the mapped schema is refused at INIT', async () => {
    const { db, source, target } = await databases(`CREATE TABLE public.x (id int PRIMARY KEY)`);
    await env.target.query(`DO $$ BEGIN CREATE ROLE tgt_plain LOGIN; EXCEPTION WHEN duplicate_object THEN NULL; END $$`);
    await env.target.query(`REVOKE CREATE ON DATABASE ${db} FROM PUBLIC; REVOKE CREATE ON SCHEMA public FROM PUBLIC`, [], db);
    const asPlain = target.replace('postgres://postgres@', 'postgres://tgt_plain@');
    const error = await preflight({ source, target: asPlain, mode: 'offline', schemaMapping: { public: 'app' } }).then(
      () => 'passed',
      (e: Error) => e.message,
    );
    expect(error).toBe(`the target role "tgt_plain" lacks CREATE on database ${db}: it creates the migrated tables in their schemas (and a missing schema in the database)`);
    const inPublic = await preflight({ source, target: asPlain, mode: 'offline' }).then(
      () => 'passed',
      (e: Error) => e.message,
    );
    expect(inPublic).toContain('lacks CREATE on schema public');
    await env.target.query(`GRANT CREATE ON SCHEMA public TO tgt_plain`, [], db);
    await expect(preflight({ source, target: asPlain, mode: 'offline' })).resolves.toBeDefined();
  });
});

describe('objects: true', () => {
  it('never recreates a SECURITY DEFINER function owned by a superuser, which would hand out its rights; other functions come along (owners.test: an ordinary owner\'s is carried)', async () => {
    const { db, source, target } = await databases(`
      CREATE TABLE public.o (id int PRIMARY KEY);
      CREATE FUNCTION public.as_owner() RETURNS text LANGUAGE sql SECURITY DEFINER AS 'SELECT current_user::text';
      REVOKE EXECUTE ON FUNCTION public.as_owner() FROM PUBLIC;
      CREATE FUNCTION public.plain() RETURNS int LANGUAGE sql AS 'SELECT 1';`);
    const m = await env.startMigration({ source, target, mode: 'offline', objects: true });
    const report = await m.result();
    expect(report.phase).toBe('COMPLETED');
    const notices = (await m.status()).notices.join('\n');
    expect(notices).toMatch(/as_owner\(\) was not created: SECURITY DEFINER: its owner on the target would be "postgres", a superuser/);
    expect(await env.target.query(`SELECT proname FROM pg_proc WHERE pronamespace = 'public'::regnamespace ORDER BY 1`, [], db)).toEqual([{ proname: 'plain' }]);
  });
});

/**
 * Managed PostgreSQL shapes roles like this: no superuser anywhere. The source role has REPLICATION
 * and owns the tables (RDS grants replication through `rds_replication`). On the target, RDS's
 * `rds_superuser`-like role may set session_replication_role (PostgreSQL 15+: GRANT SET ON
 * PARAMETER): the apply runs in replica mode. Cloud SQL's `cloudsqlsuperuser` and Azure's
 * `azure_pg_admin` may not: the apply runs with triggers firing, and the foreign keys (and the
 * user's triggers, objects: true) are created at FINALIZING, once it has stopped. Both online
 * migrations, with an application writing, must end equal; a source role short of a right is refused
 * before anything is created, naming what to grant.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { WorkflowFailedError } from '@temporalio/client';
import { startEnv, type TestEnv } from '../harness/env';
import { fingerprint, qualified, sourceLeftovers } from '../harness/compare';
import { SHOP_TABLES, startWriter } from '../harness/fixtures';
import { activitySpans } from '../harness/history';
import { preflight } from '../../activities/preflight';

let env: TestEnv;

const uriAs = (uri: string, user: string) => uri.replace('postgres://postgres@', `postgres://${user}@`);

beforeAll(async () => {
  env = await startEnv();
  // Roles exist per cluster; databases are made per test.
  await env.source.query(`CREATE ROLE app_owner LOGIN REPLICATION; CREATE ROLE rds_replication NOLOGIN; GRANT rds_replication TO app_owner`);
  await env.target.query(
    `CREATE ROLE rds_superuser NOLOGIN CREATEDB CREATEROLE;
     GRANT SET ON PARAMETER session_replication_role TO rds_superuser;
     CREATE ROLE migrator LOGIN IN ROLE rds_superuser;
     CREATE ROLE cloudsqlsuperuser NOLOGIN CREATEDB CREATEROLE;
     CREATE ROLE cloud_migrator LOGIN IN ROLE cloudsqlsuperuser`,
  );
});

afterAll(async () => {
  await env?.stop();
});

/** A shop database on the source owned (tables, schemas, database) by app_owner, and an empty target database owned by `targetOwner`. */
async function managedShop(db: string, targetOwner: string): Promise<void> {
  await env.shopDatabase(db);
  await env.source.query(
    `ALTER DATABASE ${db} OWNER TO app_owner;
     ALTER SCHEMA public OWNER TO app_owner;
     ALTER SCHEMA "Sales Dept" OWNER TO app_owner;
     ${SHOP_TABLES.map(([s, t]) => `ALTER TABLE ${qualified(s, t)} OWNER TO app_owner;`).join('\n')}`,
    [],
    db,
  );
  await env.target.query(`ALTER DATABASE ${db} OWNER TO ${targetOwner}`);
  await env.target.query(`ALTER SCHEMA public OWNER TO ${targetOwner}`, [], db);
}

describe('managed-service roles, no superuser on either side', () => {
  it('migrates online under writes and ends equal', async () => {
    const db = 'managed1';
    await managedShop(db, 'migrator');
    const writer = startWriter(() => env.source.client(db), { pauseMs: 2 });
    const m = await env.startMigration({
      source: uriAs(env.source.uri(db), 'app_owner'),
      target: uriAs(env.target.uri(db), 'migrator'),
      schemas: ['public', 'Sales Dept'],
      cutover: { mode: 'manual' },
    });
    await m.waitForPhase('SYNCING_WAL', 180_000);
    await new Promise((r) => setTimeout(r, 1500));
    const written = await writer.stop();
    expect(written.errors).toEqual([]);
    expect(written.transactions).toBeGreaterThan(20);
    await m.signal('cutover');
    const report = await m.result();
    expect(report.phase).toBe('COMPLETED');
    // A role that may set session_replication_role keeps the replica path: keys in MIGRATING_DATA.
    expect(report.notices.join('\n')).not.toContain('may not set session_replication_role');
    const keys = (await activitySpans(env.temporal, m.workflowId)).filter((s) => s.type === 'finishTargetTables' && (s.input[0] as { part?: string }).part === 'foreign-keys');
    expect(keys.map((s) => (s.input[0] as { notValidFirst?: boolean }).notValidFirst)).toEqual([undefined]);
    for (const [s, t] of SHOP_TABLES) {
      const [a, b] = await Promise.all([fingerprint(env.source, db, s, t), fingerprint(env.target, db, s, t)]);
      expect({ table: `${s}.${t}`, ...b }).toEqual({ table: `${s}.${t}`, ...a });
    }
    expect(await sourceLeftovers(env.source, db)).toEqual({ slots: 0, pubs: 0, fences: 0 });
    const owners = await env.target.query<{ owner: string }>(
      `SELECT DISTINCT pg_get_userbyid(c.relowner) AS owner FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname IN ('public', 'Sales Dept') AND c.relkind IN ('r', 'p', 'S')`,
      [],
      db,
    );
    expect(owners.map((o) => o.owner)).toEqual(['migrator']);
    const [su] = await env.target.query<{ rolsuper: boolean }>(`SELECT rolsuper FROM pg_roles WHERE rolname = 'migrator'`);
    expect(su!.rolsuper).toBe(false);
  });

  it('a target role that may not set session_replication_role (Cloud SQL, Azure): foreign keys and triggers after the cutover, equal under writes', async () => {
    const db = 'managed2';
    await managedShop(db, 'cloud_migrator');
    const [may] = await env.target.query<{ su: boolean; may_set: boolean }>(
      `SELECT rolsuper AS su, has_parameter_privilege('cloud_migrator', 'session_replication_role', 'SET') AS may_set FROM pg_roles WHERE rolname = 'cloud_migrator'`,
    );
    expect(may).toEqual({ su: false, may_set: false });
    // A user trigger that would write its row a second time if it fired for replicated rows (the rows
    // it writes on the source are replicated too), identity and generated columns written meanwhile.
    await env.source.query(
      `CREATE FUNCTION public.order_audit() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN INSERT INTO public.audit_log VALUES ('trigger', 'order ' || NEW.id, NULL); RETURN NEW; END $$;
       CREATE TRIGGER orders_audit AFTER INSERT ON public.orders FOR EACH ROW EXECUTE FUNCTION public.order_audit();
       CREATE TABLE public.gen (id int GENERATED ALWAYS AS IDENTITY PRIMARY KEY, a int NOT NULL, b int GENERATED ALWAYS AS (a * 2) STORED);
       INSERT INTO public.gen (a) SELECT g FROM generate_series(1, 500) g;
       ALTER TABLE public.gen OWNER TO app_owner; ALTER FUNCTION public.order_audit() OWNER TO app_owner`,
      [],
      db,
    );
    const tables = [...SHOP_TABLES, ['public', 'gen'] as const];
    const writer = startWriter(() => env.source.client(db), { pauseMs: 2 });
    let genWrites = 0;
    let stopGen = false;
    const gen = (async () => {
      const c = await env.source.client(db);
      try {
        while (!stopGen) {
          await c.query(`INSERT INTO public.gen (a) VALUES ($1)`, [++genWrites]);
          await c.query(`UPDATE public.gen SET a = a + 1 WHERE id = (SELECT min(id) + $1::int % 100 FROM public.gen)`, [genWrites]);
          await new Promise((r) => setTimeout(r, 5));
        }
      } finally {
        await c.end();
      }
    })();
    const m = await env.startMigration({
      source: uriAs(env.source.uri(db), 'app_owner'),
      target: uriAs(env.target.uri(db), 'cloud_migrator'),
      schemas: ['public', 'Sales Dept'],
      cutover: { mode: 'manual' },
      objects: true,
      // Chunks of 1,000 rows: the larger tables carry the proof's chunk triggers (_wi, _wu, _wd).
      validation: { chunkRows: 1000 },
    });
    await m.waitForPhase('SYNCING_WAL', 180_000);
    // The apply, started again with the chunk triggers in place, accepts them as the proof's (it
    // refuses any other trigger that would fire without replica mode).
    const chunkTriggers = async () =>
      (await env.target.query<{ n: number }>(`SELECT count(*)::int AS n FROM pg_trigger WHERE tgname LIKE 'pg\\_dts\\_%\\_wu'`, [], db))[0]!.n;
    for (let i = 0; i < 300 && (await chunkTriggers()) === 0; i++) await new Promise((r) => setTimeout(r, 200));
    expect(await chunkTriggers()).toBeGreaterThan(0);
    await m.signal('pause');
    await m.signal('resume');
    // During the sync nothing of the user's on the target tables fires: no foreign key, no trigger yet
    // (the content proof's write marks only count writes, in pgdts; they are gone at the end, below).
    const firing = await env.target.query<{ n: number }>(
      `SELECT count(*)::int AS n FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname IN ('public', 'Sales Dept')
          AND NOT EXISTS (SELECT 1 FROM pg_proc f JOIN pg_namespace fn ON fn.oid = f.pronamespace WHERE f.oid = t.tgfoid AND fn.nspname = 'pgdts')`,
      [],
      db,
    );
    expect(firing[0]!.n).toBe(0);
    await new Promise((r) => setTimeout(r, 1500));
    const written = await writer.stop();
    stopGen = true;
    await gen;
    expect(written.errors).toEqual([]);
    expect(written.transactions).toBeGreaterThan(20);
    expect(genWrites).toBeGreaterThan(20);
    const [triggered] = await env.source.query<{ n: number }>(`SELECT count(*)::int AS n FROM public.audit_log WHERE actor = 'trigger'`, [], db);
    expect(triggered!.n).toBeGreaterThan(0);
    await m.signal('cutover');
    const report = await m.result();
    expect(report.phase).toBe('COMPLETED');
    expect(report.notices.join('\n')).toContain('may not set session_replication_role: the apply runs without it');
    // The apply ran without replica mode, and the foreign keys came once it had stopped, after the
    // cutover's point of no return: one NOT VALID-then-VALIDATE step, none in MIGRATING_DATA.
    const spans = await activitySpans(env.temporal, m.workflowId);
    const input = (s: { input: unknown[] }) => s.input[0] as { part?: string; notValidFirst?: boolean; replicaRole?: boolean };
    const applies = spans.filter((s) => s.type === 'applyChanges');
    expect(applies.length).toBeGreaterThan(0);
    expect(applies.every((s) => input(s).replicaRole === false)).toBe(true);
    const keys = spans.filter((s) => s.type === 'finishTargetTables' && input(s).part === 'foreign-keys');
    expect(keys.map((s) => input(s).notValidFirst)).toEqual([true]);
    const committed = spans.find((s) => s.type === 'commitCutover')!;
    expect(keys[0]!.scheduledAt).toBeGreaterThanOrEqual(committed.endedAt!);
    for (const [s, t] of tables) {
      const [a, b] = await Promise.all([fingerprint(env.source, db, s, t), fingerprint(env.target, db, s, t)]);
      expect({ table: `${s}.${t}`, ...b }).toEqual({ table: `${s}.${t}`, ...a });
    }
    expect(await sourceLeftovers(env.source, db)).toEqual({ slots: 0, pubs: 0, fences: 0 });
    // Afterwards: both foreign keys, validated; the trigger, firing; identity and sequences carried over.
    const fks = await env.target.query<{ name: string; valid: boolean }>(
      `SELECT conname AS name, convalidated AS valid FROM pg_constraint WHERE contype = 'f' ORDER BY 1`,
      [],
      db,
    );
    expect(fks).toEqual([
      { name: 'Order Items_order_id_fkey', valid: true },
      { name: 'orders_customer_id_fkey', valid: true },
    ]);
    const trg = await env.target.query<{ tgname: string; tgenabled: string }>(
      `SELECT tgname, tgenabled FROM pg_trigger WHERE tgrelid = 'public.orders'::regclass AND NOT tgisinternal`,
      [],
      db,
    );
    expect(trg).toEqual([{ tgname: 'orders_audit', tgenabled: 'O' }]);
    const app = await env.target.client(db);
    try {
      await app.query(`SET ROLE cloud_migrator`);
      const o = await app.query<{ id: string }>(`INSERT INTO public.orders (customer_id, total, placed_at) SELECT max(id), 1, now() FROM public.customers RETURNING id::text`);
      const audit = await app.query(`SELECT 1 FROM public.audit_log WHERE actor = 'trigger' AND action = $1`, [`order ${o.rows[0]!.id}`]);
      expect(audit.rowCount).toBe(1);
      const g = await app.query<{ id: number; b: number }>(`INSERT INTO public.gen (a) VALUES (21) RETURNING id, b`);
      expect(g.rows[0]!.b).toBe(42);
      // The foreign key is enforced.
      await expect(app.query(`INSERT INTO public.orders (customer_id, total, placed_at) VALUES (-1, 1, now())`)).rejects.toThrow(/foreign key/);
    } finally {
      await app.end();
    }
  });

  it('refuses a source role short of a right, naming what to grant, before creating anything', async () => {
    const db = 'managed3';
    await Promise.all([env.source.createDatabase(db), env.target.createDatabase(db)]);
    await env.source.query(
      `CREATE TABLE public.customers (id serial PRIMARY KEY, email text);
       CREATE TABLE public.audit_log (actor text); ALTER TABLE public.audit_log REPLICA IDENTITY FULL;
       ALTER TABLE public.customers OWNER TO app_owner; ALTER TABLE public.audit_log OWNER TO app_owner`,
      [],
      db,
    );
    await env.target.query(`ALTER DATABASE ${db} OWNER TO cloud_migrator`);
    await env.source.query(
      `CREATE ROLE repl_member LOGIN IN ROLE rds_replication; CREATE ROLE not_owner LOGIN REPLICATION;
       GRANT CREATE ON DATABASE ${db} TO not_owner`,
    );
    await env.source.query(`GRANT SELECT ON ALL TABLES IN SCHEMA public TO not_owner`, [], db);
    const target = uriAs(env.target.uri(db), 'cloud_migrator');
    const refusal = (source: string) => preflight({ source, target, schemas: ['public'] }).then(() => 'passed', (e: Error) => e.message);
    // rds_replication grants replication on RDS only (its walsender); this server needs the attribute.
    const member = await refusal(uriAs(env.source.uri(db), 'repl_member'));
    expect(member).toContain('the source role "repl_member" may not open a replication connection: GRANT rds_replication TO "repl_member"');
    expect(member).toContain('on this server ALTER ROLE "repl_member" REPLICATION');
    const notOwner = await refusal(uriAs(env.source.uri(db), 'not_owner'));
    expect(notOwner).toContain('the source role "not_owner" lacks rights the migration needs');
    expect(notOwner).toContain('ownership of customers (owned by app_owner), to publish it, fence it (create and drop its trigger)');
    expect(notOwner).toContain('ownership of audit_log (owned by app_owner), to publish it, fence it (create and drop its trigger)');
    expect(notOwner).toContain('ALTER TABLE customers OWNER TO not_owner (or GRANT app_owner TO not_owner);');
    expect(notOwner).toContain('GRANT SELECT ON SEQUENCE customers_id_seq TO not_owner;');
    expect(notOwner).not.toContain('CREATE on database');
    const made = await env.target.query<{ n: number }>(`SELECT count(*)::int AS n FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'public'`, [], db);
    expect(made[0]!.n).toBe(0);
    expect(await sourceLeftovers(env.source, db)).toEqual({ slots: 0, pubs: 0, fences: 0 });
  });
});

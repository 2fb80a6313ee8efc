/**
 * Managed PostgreSQL shapes roles like this: no superuser anywhere. The source role has REPLICATION
 * and owns the tables (RDS grants replication through `rds_replication`); the target role owns its
 * database and is a member of an `rds_superuser`-like role that may set session_replication_role
 * (PostgreSQL 15+: GRANT SET ON PARAMETER), but is no superuser. The online migration with an
 * application writing must end equal; a target role that may not set session_replication_role is
 * refused before anything is created, naming what to grant.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { WorkflowFailedError } from '@temporalio/client';
import { startEnv, type TestEnv } from '../harness/env';
import { fingerprint, qualified, sourceLeftovers } from '../harness/compare';
import { SHOP_TABLES, startWriter } from '../harness/fixtures';

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
     CREATE ROLE plain_owner LOGIN`,
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

  it('refuses a target role that may not set session_replication_role, before creating anything', async () => {
    const db = 'managed2';
    await managedShop(db, 'plain_owner');
    const m = await env.startMigration({
      source: uriAs(env.source.uri(db), 'app_owner'),
      target: uriAs(env.target.uri(db), 'plain_owner'),
      schemas: ['public'],
    });
    const err = await m.result().then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(WorkflowFailedError);
    const msg = String((err as WorkflowFailedError).cause?.message);
    expect(msg).toContain('plain_owner');
    expect(msg).toContain('GRANT SET ON PARAMETER session_replication_role');
    const made = await env.target.query<{ n: number }>(`SELECT count(*)::int AS n FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'public'`, [], db);
    expect(made[0]!.n).toBe(0);
    expect(await sourceLeftovers(env.source, db)).toEqual({ slots: 0, pubs: 0, fences: 0 });
  });
});

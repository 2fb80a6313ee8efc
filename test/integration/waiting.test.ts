/**
 * Waiting is visible: a transaction left open on the source makes the replication slot's creation
 * wait (CREATE_REPLICATION_SLOT waits for every older transaction with an xid). The status names the
 * transaction's pid and age while the snapshot holder keeps beating past its 20 s heartbeat timeout;
 * once the transaction ends the migration completes, source and target equal. A copy that waits for
 * a lock on its table (here a reader of its target table) is named in `status.copying` and `dts
 * status` with the lock and the backend holding it; an index build is shown with its phase.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Client } from 'pg';
import { startEnv, type TestEnv } from '../harness/env';
import { SHOP_TABLES } from '../harness/fixtures';
import { fingerprint, sourceLeftovers } from '../harness/compare';
import { waitFor } from '../harness/wait';
import { formatStatus } from '../../client/format';

let env: TestEnv;

beforeAll(async () => {
  env = await startEnv();
}, 180_000);

afterAll(async () => {
  await env?.stop();
});

/**
 * A database of a big table and a small one, migrated on one session (largest first: big is copied
 * before small). As soon as MIGRATING_DATA begins (the target tables exist, big's copy is ahead of
 * small's), a reader takes small's target table: small's copy then waits for it (its TRUNCATE needs
 * an ACCESS EXCLUSIVE lock). Returns the migration and the reader, its transaction open.
 */
async function smallHeldOnTarget(db: string, extra: Record<string, unknown> = {}) {
  await env.source.createDatabase(db);
  await env.target.createDatabase(db);
  await env.source.query(
    `CREATE TABLE public.big (id int PRIMARY KEY, v text);
     INSERT INTO public.big SELECT g, repeat(md5(g::text), 4) FROM generate_series(1, 200000) g;
     CREATE TABLE public.small (id int PRIMARY KEY, v text);
     INSERT INTO public.small SELECT g, md5(g::text) FROM generate_series(1, 100) g;`,
    [],
    db,
  );
  const m = await env.startMigration({ source: env.source.uri(db), target: env.target.uri(db), tables: ['big', 'small'], parallelism: 1, ...extra });
  await waitFor('MIGRATING_DATA', async () => ((await m.status()).phase === 'MIGRATING_DATA' ? true : undefined), 120_000, 20);
  const reader: Client = await env.target.client(db);
  await reader.query('BEGIN');
  await reader.query('SELECT count(*) FROM public.small');
  const pid = (await reader.query<{ pid: number }>('SELECT pg_backend_pid() AS pid')).rows[0]!.pid;
  return { m, reader, pid };
}

describe('waiting visibility', () => {
  it('the status names the transaction the slot creation waits for; the holder outlives its heartbeat timeout', async () => {
    await env.shopDatabase('wt', 0.05);
    // In another database: the wait is for every transaction of the server, and no lock of it touches the migrated tables.
    const blocker: Client = await env.source.client('postgres');
    let committed = false;
    try {
      await blocker.query('CREATE TABLE IF NOT EXISTS held (i int)');
      await blocker.query('BEGIN');
      await blocker.query('INSERT INTO held VALUES (1)');
      const pid = (await blocker.query<{ pid: number }>('SELECT pg_backend_pid() AS pid')).rows[0]!.pid;

      const m = await env.startMigration({ source: env.source.uri('wt'), target: env.target.uri('wt'), schemas: ['public', 'Sales Dept'] });
      const first = await waitFor('status.waiting names the blocker', async () => {
        const s = await m.status();
        return s.waiting?.pid === pid ? s : undefined;
      }, 90_000);
      expect(first.waiting).toMatchObject({ for: 'slot creation', pid, ageSeconds: expect.any(Number), state: 'idle in transaction' });
      expect(formatStatus(first)).toContain(`waits for transaction of pid ${pid}`);

      // Past the holder's 20 s heartbeat timeout: it is still the same attempt, waiting, its age grown.
      await new Promise((r) => setTimeout(r, 30_000));
      const later = await m.status();
      expect(later.phase).toBe('MIGRATING_DATA');
      expect(later.error).toBeUndefined();
      expect(later.waiting?.pid).toBe(pid);
      expect(later.waiting!.ageSeconds!).toBeGreaterThan(first.waiting!.ageSeconds!);
      expect(later.notices.join('\n')).not.toMatch(/snapshot/i);

      await blocker.query('COMMIT');
      committed = true;
      const report = await m.result();
      expect(report.phase).toBe('COMPLETED');
      expect((await m.status()).waiting).toBeUndefined();
      for (const [schema, table] of SHOP_TABLES) {
        expect(await fingerprint(env.target, 'wt', schema, table), `${schema}.${table}`).toEqual(await fingerprint(env.source, 'wt', schema, table));
      }
    } finally {
      if (!committed) await blocker.query('ROLLBACK').catch(() => undefined);
      await blocker.end();
    }
  }, 300_000);

  it('slot.maxWaitSeconds fails the migration naming the transaction, and leaves nothing on the source', async () => {
    await env.shopDatabase('wt_limit', 0.02);
    const blocker: Client = await env.source.client('postgres');
    try {
      await blocker.query('CREATE TABLE IF NOT EXISTS held (i int)');
      await blocker.query('BEGIN');
      await blocker.query('INSERT INTO held VALUES (2)');
      const pid = (await blocker.query<{ pid: number }>('SELECT pg_backend_pid() AS pid')).rows[0]!.pid;
      const m = await env.startMigration({ source: env.source.uri('wt_limit'), target: env.target.uri('wt_limit'), schemas: ['public', 'Sales Dept'], slot: { maxWaitSeconds: 8 } });
      const err = await m.result().then(
        () => undefined,
        (e: Error) => e,
      );
      expect(err).toBeDefined();
      const s = await m.status();
      expect(s.phase).toBe('FAILED');
      expect(s.error).toMatch(new RegExp(`waited 8 s \\(slot.maxWaitSeconds\\) for the transaction of pid ${pid} \\(open \\d+ s, idle in transaction\\)`));
      expect(s.notices.join('\n')).not.toMatch(/snapshot holder lost/);
      expect(await sourceLeftovers(env.source, 'wt_limit')).toEqual({ slots: 0, pubs: 0, fences: 0 });
    } finally {
      await blocker.query('ROLLBACK').catch(() => undefined);
      await blocker.end();
    }
  }, 180_000);

  it('a copy waiting for a table lock: status.copying names the lock and its holder; released, the migration completes', async () => {
    const db = 'wt_lock';
    const { m, reader, pid } = await smallHeldOnTarget(db);
    let released = false;
    try {
      const s = await waitFor('status.copying to name the lock on small', async () => {
        const st = await m.status();
        return st.copying?.some((c) => c.waiting?.pid === pid) ? st : undefined;
      }, 120_000);
      const unit = s.copying!.find((c) => c.waiting)!;
      expect(unit.table).toBe('public.small');
      expect(unit.waiting).toMatchObject({ side: 'target', table: 'public.small', mode: 'AccessExclusiveLock', pid, state: 'idle in transaction', waitedSeconds: expect.any(Number) });
      expect(formatStatus(s)).toMatch(new RegExp(`waiting: the copy of public\\.small \\(.*\\) has waited \\d+ s for AccessExclusiveLock on the target table public\\.small, held by pid ${pid} \\(idle in transaction, transaction open \\d+ s\\)`));
      await reader.query('ROLLBACK');
      released = true;
      const report = await m.result();
      expect(report.phase).toBe('COMPLETED');
      for (const t of ['big', 'small']) {
        expect(await fingerprint(env.target, db, 'public', t), t).toEqual(await fingerprint(env.source, db, 'public', t));
      }
    } finally {
      if (!released) await reader.query('ROLLBACK').catch(() => undefined);
      await reader.end();
    }
  }, 300_000);

  it('an index build running on the target is shown with its phase while MIGRATING_DATA lasts', async () => {
    const db = 'wt_index';
    await env.source.createDatabase(db);
    await env.target.createDatabase(db);
    // An expression index that takes seconds to build: md5 over 16 KB per row.
    await env.source.query(
      `CREATE TABLE public.ix (id int PRIMARY KEY, v text);
       INSERT INTO public.ix SELECT g, md5(g::text) FROM generate_series(1, 250000) g;
       CREATE INDEX ix_expensive ON public.ix (md5(repeat(v, 500)));`,
      [],
      db,
    );
    const m = await env.startMigration({ source: env.source.uri(db), target: env.target.uri(db), tables: ['ix'] });
    const s = await waitFor('status.indexing to show the build', async () => {
      const st = await m.status();
      return st.indexing?.some((b) => b.index === 'ix_expensive') ? st : undefined;
    }, 180_000);
    const b = s.indexing!.find((x) => x.index === 'ix_expensive')!;
    expect(b).toMatchObject({ table: 'public.ix', phase: expect.stringMatching(/^building index|^initializing|^waiting/), seconds: expect.any(Number) });
    expect(formatStatus(s)).toMatch(/indexing public\.ix: ix_expensive, /);
    const report = await m.result();
    expect(report.phase).toBe('COMPLETED');
    expect((await m.status()).indexing).toBeUndefined();
    expect(await fingerprint(env.target, db, 'public', 'ix')).toEqual(await fingerprint(env.source, db, 'public', 'ix'));
    const [idx] = await env.target.query<{ n: number }>(`SELECT count(*)::int AS n FROM pg_indexes WHERE tablename = 'ix' AND indexname = 'ix_expensive'`, [], db);
    expect(idx!.n).toBe(1);
  }, 300_000);

  it('copy.maxLockWaitSeconds fails the migration naming the lock and its holder, and leaves nothing on the source', async () => {
    const db = 'wt_lock_limit';
    const { m, reader, pid } = await smallHeldOnTarget(db, { copy: { maxLockWaitSeconds: 4 } });
    let released = false;
    try {
      // The failure is known before its cleanup ends: dropping the target tables waits for the reader too.
      const s = await waitFor('the limit to fail the migration', async () => {
        const st = await m.status();
        return st.error ? st : undefined;
      }, 120_000);
      await reader.query('ROLLBACK');
      released = true;
      const err = await m.result().then(
        () => undefined,
        (e: Error) => e,
      );
      expect(err).toBeDefined();
      expect((await m.status()).phase).toBe('FAILED');
      expect(s.error).toMatch(new RegExp(`the copy of public\\.small waited \\d+ s \\(copy\\.maxLockWaitSeconds = 4\\) for AccessExclusiveLock on the target table public\\.small, held by pid ${pid} \\(idle in transaction, transaction open \\d+ s\\)`));
      expect(await sourceLeftovers(env.source, db)).toEqual({ slots: 0, pubs: 0, fences: 0 });
    } finally {
      if (!released) await reader.query('ROLLBACK').catch(() => undefined);
      await reader.end();
    }
  }, 300_000);
});

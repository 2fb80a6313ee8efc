/**
 * Cancelling an activity's statements (activities/db.ts withCancellation) on a server with no free
 * connection slot: the protocol's CancelRequest needs none, where pg_cancel_backend needs a session.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Client } from 'pg';
import { connect, sendCancelRequest, withCancellation } from '../../activities/db';
import { startCluster, type PgCluster } from '../harness/pg-cluster';

let pg: PgCluster;

beforeAll(async () => {
  pg = await startCluster({ name: 'cancel', settings: { max_connections: 3, superuser_reserved_connections: 0 } });
});

afterAll(async () => {
  await pg?.destroy();
});

describe('cancelling statements', () => {
  it('cancels a running statement and closes its session while the server is at max_connections', async () => {
    const ac = new AbortController();
    const others: Client[] = [];
    try {
      let query: Promise<unknown> | undefined;
      const started = withCancellation(ac.signal, async () => {
        const c = await connect(pg.uri());
        query = c.query('SELECT pg_sleep(60)');
        query.catch(() => undefined);
      });
      await started;
      // Every other slot taken: a new session is refused.
      others.push(await pg.client(), await pg.client());
      const refused = await pg.client().then(
        (c) => (others.push(c), undefined),
        (e: { code?: string }) => e.code,
      );
      expect(refused, 'the server has no free connection slot').toBe('53300');
      const t0 = Date.now();
      ac.abort();
      const err = await query!.then(
        () => undefined,
        (e: Error & { code?: string }) => e,
      );
      expect(err, 'the statement ends with an error').toBeDefined();
      expect(Date.now() - t0, 'cancelled at once, not after the 60 s sleep').toBeLessThan(10_000);
      // The session is gone: its slot is free again.
      const deadline = Date.now() + 10_000;
      for (;;) {
        const n = await others[0]!.query<{ n: string }>(`SELECT count(*)::text AS n FROM pg_stat_activity WHERE query = 'SELECT pg_sleep(60)'`);
        if (n.rows[0]!.n === '0') break;
        if (Date.now() > deadline) throw new Error('the cancelled session is still there');
        await new Promise((r) => setTimeout(r, 100));
      }
    } finally {
      await Promise.all(others.map((c) => c.end().catch(() => undefined)));
    }
  });

  it('a CancelRequest cancels only the statement, and reports delivery', async () => {
    const c = await pg.client();
    try {
      const q = c.query('SELECT pg_sleep(60)').then(
        () => undefined,
        (e: Error) => e,
      );
      await new Promise((r) => setTimeout(r, 200));
      expect(await sendCancelRequest(c)).toBe(true);
      expect(await q).toMatchObject({ code: '57014' });
      // The session goes on.
      expect((await c.query<{ one: number }>('SELECT 1 AS one')).rows[0]!.one).toBe(1);
    } finally {
      await c.end();
    }
  });
});

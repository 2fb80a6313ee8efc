/**
 * A real sample database nobody here wrote: pagila v3.1.0 (enum, domains, arrays, tsvector, bytea, a
 * range-partitioned `payment` table with partition-local indexes and foreign keys, serial sequences,
 * triggers that rewrite `last_update`). Loaded with psql, migrated online through a schema mapping while
 * an application keeps writing (to `payment` too, moving rows between its partitions), cut over by
 * hand, then compared table by table and sequence by sequence.
 */
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { promisify } from 'node:util';
import type { Client } from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startEnv, type TestEnv } from '../harness/env';
import { fingerprint } from '../harness/compare';

const PAGILA = path.resolve(__dirname, '../../../shared/data/pagila');
const present = existsSync(path.join(PAGILA, 'pagila-schema.sql')) && existsSync(path.join(PAGILA, 'pagila-data.sql'));
if (!present) {
  // eslint-disable-next-line no-console
  console.warn(`pagila.test: skipped, the pagila sample database is not at ${PAGILA} (pagila-schema.sql + pagila-data.sql, v3.1.0)`);
}

const run = promisify(execFile);

function psqlBinary(): string {
  for (const p of [process.env.PG_BIN_DIR && path.join(process.env.PG_BIN_DIR, 'psql'), '/usr/lib/postgresql/15/bin/psql']) {
    if (p && existsSync(p)) return p;
  }
  return 'psql';
}

async function psqlFile(uri: string, file: string): Promise<void> {
  await run(psqlBinary(), [uri, '-X', '-q', '-v', 'ON_ERROR_STOP=1', '-f', file], { maxBuffer: 64 * 1024 * 1024 });
}

let env: TestEnv;

beforeAll(async () => {
  if (present) env = await startEnv();
});

afterAll(async () => {
  await env?.stop();
});

/**
 * What the video store's application does meanwhile: rentals with their payments, payments corrected
 * and re-dated into the next month (another partition), refunds deleted, customers and films edited
 * (their triggers set last_update = now() on the source). Runs until the fence refuses writes.
 */
function startPagilaWriter(connect: () => Promise<Client>) {
  const stats = { transactions: 0, fenced: false, errors: [] as string[], moved: 0 };
  let stopping = false;
  const done = (async () => {
    const c = await connect();
    try {
      for (let i = 1; !stopping; i++) {
        try {
          await c.query('BEGIN');
          switch (i % 6) {
            case 0: {
              const r = await c.query<{ id: number }>(
                `INSERT INTO public.rental (rental_date, inventory_id, customer_id, staff_id)
                 VALUES (timestamptz '2022-06-20 10:00:00+00' + $1::int * interval '1 second', 1 + $1::int % 4500, 1 + $1::int % 599, 1 + $1::int % 2) RETURNING rental_id AS id`,
                [i],
              );
              await c.query(
                `INSERT INTO public.payment (customer_id, staff_id, rental_id, amount, payment_date)
                 VALUES (1 + $1::int % 599, 1 + $1::int % 2, $2::int, 4.99, timestamptz '2022-06-20 10:00:00.123456+00' + $1::int * interval '1 second')`,
                [i, r.rows[0]!.id],
              );
              break;
            }
            case 1:
              await c.query(`UPDATE public.payment SET amount = amount + 0.01 WHERE payment_id = 1 + ($1::int * 37) % 32000`, [i]);
              break;
            case 2: {
              // payment_date is in the key and picks the partition: the row moves to the next month's.
              const r = await c.query(
                `UPDATE public.payment SET payment_date = payment_date + interval '1 month'
                  WHERE payment_id = (SELECT payment_id FROM public.payment WHERE payment_date < '2022-07-01' AND payment_id % 11 = $1::int % 11 ORDER BY payment_id LIMIT 1 OFFSET $1::int % 50)`,
                [i],
              );
              stats.moved += r.rowCount ?? 0;
              break;
            }
            case 3:
              await c.query(`DELETE FROM public.payment WHERE payment_id = 5 + ($1::int * 53) % 32000`, [i]);
              break;
            case 4:
              await c.query(`UPDATE public.customer SET email = lower(email), activebool = NOT activebool WHERE customer_id = 1 + $1::int % 599`, [i]);
              break;
            case 5:
              await c.query(
                `UPDATE public.film SET rental_rate = rental_rate + 0.01, description = description || ' (' || ($1::int)::text || ')',
                        special_features = special_features || ARRAY['Trailers'] WHERE film_id = 1 + $1::int % 1000`,
                [i],
              );
              break;
          }
          await c.query('COMMIT');
          stats.transactions++;
        } catch (err) {
          await c.query('ROLLBACK').catch(() => undefined);
          const code = (err as { code?: string }).code;
          if (code === '25006') {
            stats.fenced = true;
            return;
          }
          // The fence's CREATE TRIGGERs lock the tables one by one: a transaction touching them in
          // another order can deadlock with it, and PostgreSQL rolls one back (seen once in CI). The
          // rolled-back writes exist on neither side; the client retries, as it would on any deadlock.
          if (code === '40P01') continue;
          stats.errors.push(`${code}: ${(err as Error).message}`);
          if (stats.errors.length > 20) throw err;
        }
        await new Promise((r) => setTimeout(r, 2));
      }
    } finally {
      await c.end().catch(() => undefined);
    }
  })();
  return {
    stats,
    async stop() {
      stopping = true;
      await done;
      return stats;
    },
  };
}

describe('pagila', () => {
  it.skipIf(!present)('migrates online with concurrent writes and ends identical, table by table and sequence by sequence', async () => {
    const db = 'pagila';
    await env.source.createDatabase(db);
    await env.target.createDatabase(db);
    await psqlFile(env.source.uri(db), path.join(PAGILA, 'pagila-schema.sql'));
    await psqlFile(env.source.uri(db), path.join(PAGILA, 'pagila-data.sql'));
    await env.source.query('ANALYZE', [], db);

    const writer = startPagilaWriter(() => env.source.client(db));
    while (writer.stats.transactions < 30) await new Promise((r) => setTimeout(r, 20));
    const m = await env.startMigration({
      source: env.source.uri(db),
      target: env.target.uri(db),
      schemaMapping: { public: 'pagila' },
      cutover: { mode: 'manual' },
    });
    await m.waitForPhase('SYNCING_WAL', 90_000);
    const before = writer.stats.transactions;
    for (let i = 0; i < 100 && ((await m.status()).replication?.transactions ?? 0) < 30; i++) await new Promise((r) => setTimeout(r, 100));
    expect(writer.stats.transactions).toBeGreaterThan(before);
    await m.signal('cutover');
    const report = await m.result();
    const stats = await writer.stop();
    expect(stats.errors).toEqual([]);
    expect(stats.fenced).toBe(true);
    expect(stats.moved).toBeGreaterThan(0);
    expect(report.phase).toBe('COMPLETED');

    // Every pagila table, payment by its root (its partitions with it).
    const tables = (
      await env.source.query<{ name: string }>(`SELECT relname AS name FROM pg_class WHERE relnamespace = 'public'::regnamespace AND relkind IN ('r', 'p') AND NOT relispartition ORDER BY 1`, [], db)
    ).map((r) => r.name);
    expect(tables).toEqual(['actor', 'address', 'category', 'city', 'country', 'customer', 'film', 'film_actor', 'film_category', 'inventory', 'language', 'payment', 'rental', 'staff', 'store']);
    expect(report.tables.map((t) => t.target).sort()).toEqual(tables.map((t) => `pagila.${t}`));
    for (const t of report.tables) expect(t.countsMatch, t.source).toBe(true);
    // Same content: the writes went through, and no trigger rewrote last_update on the target (the apply
    // runs with session_replication_role = replica; the triggers are not migrated either).
    for (const t of tables) {
      const a = await fingerprint(env.source, db, 'public', t);
      const b = await fingerprint(env.target, db, 'pagila', t);
      expect({ table: t, ...b }).toEqual({ table: t, ...a });
    }
    // payment's rows sit in the same partitions on both sides.
    const parts = (
      await env.source.query<{ name: string }>(`SELECT relid::regclass::text AS name FROM pg_partition_tree('public.payment') WHERE isleaf ORDER BY 1`, [], db)
    ).map((r) => r.name.replace(/^(public\.)?/, ''));
    expect(parts).toHaveLength(7);
    for (const p of parts) {
      const a = await fingerprint(env.source, db, 'public', p);
      const b = await fingerprint(env.target, db, 'pagila', p);
      expect({ partition: p, ...b }).toEqual({ partition: p, ...a });
    }
    // Sequence by sequence: the target's continue where the source's stand.
    const seqs = await env.source.query<{ name: string; last: string | null }>(
      `SELECT sequencename AS name, last_value::text AS last FROM pg_sequences WHERE schemaname = 'public' ORDER BY 1`,
      [],
      db,
    );
    expect(seqs).toHaveLength(13);
    for (const s of seqs) {
      const [t] = await env.target.query<{ last: string | null }>(
        `SELECT last_value::text AS last FROM pg_sequences WHERE schemaname = 'pagila' AND sequencename = $1`,
        [s.name],
        db,
      );
      expect({ sequence: s.name, last: t?.last }).toEqual({ sequence: s.name, last: s.last });
    }
    // The user types came along under the mapped schema, and the film table uses them.
    const [film] = await env.target.query<{ rating: string; year: string }>(
      `SELECT format_type(r.atttypid, r.atttypmod) AS rating, format_type(y.atttypid, y.atttypmod) AS year
         FROM pg_attribute r, pg_attribute y
        WHERE r.attrelid = 'pagila.film'::regclass AND r.attname = 'rating' AND y.attrelid = 'pagila.film'::regclass AND y.attname = 'release_year'`,
      [],
      db,
    );
    expect(film).toEqual({ rating: 'pagila.mpaa_rating', year: 'pagila.year' });
    // The partitions' own foreign keys and indexes were created on the target partitions.
    const [fk] = await env.target.query<{ fks: number; idx: number }>(
      `SELECT (SELECT count(*)::int FROM pg_constraint WHERE contype = 'f' AND conrelid = 'pagila.payment_p2022_03'::regclass) AS fks,
              (SELECT count(*)::int FROM pg_index WHERE indrelid = 'pagila.payment_p2022_03'::regclass) AS idx`,
      [],
      db,
    );
    const [srcFk] = await env.source.query<{ fks: number; idx: number }>(
      `SELECT (SELECT count(*)::int FROM pg_constraint WHERE contype = 'f' AND conrelid = 'public.payment_p2022_03'::regclass) AS fks,
              (SELECT count(*)::int FROM pg_index WHERE indrelid = 'public.payment_p2022_03'::regclass) AS idx`,
      [],
      db,
    );
    expect(fk).toEqual(srcFk);
  });
});

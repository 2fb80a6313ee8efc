/**
 * Large changes through the apply (activities/apply/framer.ts, spool.ts), against real clusters: with low
 * thresholds (a change over 64 kB is read as it arrives, its values over 16 kB go to spool files and
 * reach the target through COPY), every kind of change with large values — in keyed, REPLICA IDENTITY
 * FULL and partitioned tables, mixed with small changes to the same rows in one transaction, old rows
 * with large values, values that need COPY escaping, typed columns (bytea, jsonb, varchar(n), text[],
 * a domain with a check) — then both sides compared row by row. The 100 MB case, with the worker's
 * memory watched, is in large-values.test.ts.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startCluster, type PgCluster } from '../harness/pg-cluster';
import { compareLsn } from '../../activities/apply/lsn';
import type { ApplyResult } from '../../activities/apply/options';
import { runApply } from '../../activities/apply/run';

let source: PgCluster;
let target: PgCluster;

beforeAll(async () => {
  [source, target] = await Promise.all([startCluster({ name: 'large-src' }), startCluster({ name: 'large-tgt' })]);
});

afterAll(async () => {
  await Promise.all([source?.destroy(), target?.destroy()]);
});

const TABLES = ['k', 'f', 'p'];

async function hash(c: PgCluster, table: string): Promise<{ rows: number; hash: string }> {
  const r = await c.query<{ n: string; h: string | null }>(
    `SELECT count(*)::text AS n, md5(string_agg(md5(t::text), ',' ORDER BY md5(t::text))) AS h FROM ${table} t`,
  );
  return { rows: Number(r[0]!.n), hash: r[0]!.h ?? 'empty' };
}

describe('large changes through the apply', () => {
  it('are applied exactly through the spool, in order with the small changes around them', async () => {
    const ddl = `
      CREATE DOMAIN short_text AS text CHECK (length(VALUE) < 500000);
      CREATE TABLE k (id int PRIMARY KEY, t text, b bytea, j jsonb, v varchar(400000), arr text[], d short_text, small int,
                      len int GENERATED ALWAYS AS (length(t)) STORED);
      CREATE TABLE f (a int, t text);
      ALTER TABLE f REPLICA IDENTITY FULL;
      CREATE TABLE p (id int, part int, t text, PRIMARY KEY (id, part)) PARTITION BY LIST (part);
      CREATE TABLE p1 PARTITION OF p FOR VALUES IN (1);
      CREATE TABLE p2 PARTITION OF p FOR VALUES IN (2);`;
    await source.query(ddl);
    await target.query(ddl);
    await source.query(`CREATE PUBLICATION pub FOR TABLE k, f, p WITH (publish_via_partition_root = true)`);
    await source.query(`SELECT pg_create_logical_replication_slot('s', 'pgoutput')`);

    // ~100 kB of text that COPY must escape (tabs, newlines, CR, backslashes), quotes and non-ASCII.
    const text = (seed: string) => `repeat('${seed}' || E'\\t\\\\ "q'' é€ 🐘\\r\\n' || md5('${seed}'), 1500)`;
    const bytea = (seed: string) => `decode(repeat(md5('${seed}'), 2000), 'hex')`;
    const json = (seed: string) => `(SELECT jsonb_agg(jsonb_build_object('k', i, 's', md5('${seed}' || i), 'e', E'\\n\\\\')) FROM generate_series(1, 2000) i)`;
    const arr = (seed: string) => `(SELECT array_agg(md5('${seed}' || i) || E'\\t,"{') FROM generate_series(1, 3000) i)`;
    const src = await source.client();
    try {
      await src.query(`INSERT INTO k (id, t, small) VALUES (0, 'small row', 0)`);
      // One transaction: small and large changes to the same rows; their order decides the result.
      await src.query(`BEGIN;
        INSERT INTO k (id, t, small) VALUES (1, 'first', 1);
        UPDATE k SET t = ${text('a')}, b = ${bytea('a')}, j = ${json('a')}, v = ${text('v')}, arr = ${arr('a')}, d = ${text('d')} WHERE id = 1;
        UPDATE k SET small = 2 WHERE id = 1;
        INSERT INTO k (id, t, b) VALUES (2, ${text('b')}, ${bytea('b')});
        UPDATE k SET id = 3 WHERE id = 2;
        INSERT INTO k (id, t, small) VALUES (4, 'to delete', 4);
        UPDATE k SET t = ${text('c')} WHERE id = 4;
        DELETE FROM k WHERE id = 4;
        UPDATE k SET small = 10 WHERE id = 0;
        COMMIT`);
      // Unchanged TOAST: a small update to a row with large values (sent without them).
      await src.query(`UPDATE k SET small = 3 WHERE id = 1`);
      // A large value replaced by NULL, and an empty one.
      await src.query(`UPDATE k SET b = NULL, v = '' WHERE id = 3`);
      // REPLICA IDENTITY FULL: duplicates with large values, the old row (large) identifies the one to change.
      await src.query(`INSERT INTO f SELECT 1, ${text('f')} FROM generate_series(1, 3)`);
      await src.query(`INSERT INTO f VALUES (2, ${text('g')})`);
      await src.query(`UPDATE f SET a = 10 WHERE ctid = (SELECT ctid FROM f WHERE a = 1 LIMIT 1)`);
      await src.query(`UPDATE f SET t = ${text('h')} WHERE a = 2`);
      await src.query(`DELETE FROM f WHERE ctid = (SELECT ctid FROM f WHERE a = 1 LIMIT 1)`);
      // Partitioned, through the root: a large row moves between partitions.
      await src.query(`INSERT INTO p VALUES (1, 1, ${text('p')}), (2, 1, 'small')`);
      await src.query(`UPDATE p SET part = 2, t = t || ${text('q')} WHERE id = 1`);
      await src.query(`UPDATE p SET part = 2 WHERE id = 2`);
    } finally {
      await src.end();
    }
    const end = (await source.query<{ l: string }>('SELECT pg_current_wal_lsn()::text AS l'))[0]!.l;

    const spoolDir = fs.mkdtempSync(path.join(os.tmpdir(), 'pgdts-apply-large-'));
    const ac = new AbortController();
    let result: ApplyResult | undefined;
    let maxFiles = 0;
    try {
      const run = runApply({
        source: source.uri(),
        target: target.uri(),
        slot: 's',
        publication: 'pub',
        tables: TABLES.map((n) => ({ source: { schema: 'public', name: n }, target: { schema: 'public', name: n } })),
        signal: ac.signal,
        progressIntervalMs: 200,
        largeChangeBytes: 64 * 1024,
        largeValueBytes: 16 * 1024,
        spoolDir,
        onProgress: (p) => {
          const dirs = fs.readdirSync(spoolDir);
          for (const d of dirs) maxFiles = Math.max(maxFiles, fs.readdirSync(path.join(spoolDir, d)).length);
          if (compareLsn(p.appliedLsn, end) >= 0) ac.abort();
        },
      });
      const deadline = setTimeout(() => ac.abort(), 60_000);
      result = await run;
      clearTimeout(deadline);
      // Spool files live until their group commits, and the run's directory goes with the run.
      expect(fs.readdirSync(spoolDir)).toEqual([]);
    } finally {
      fs.rmSync(spoolDir, { recursive: true, force: true });
    }
    // 2 large updates/inserts of k + 1 key move with values + 1 update of id 4 + f's 4 inserts/2 updates/1 delete + p's insert and move.
    console.log(`large changes: ${result!.largeChanges}, most spool files at once: ${maxFiles}, changes: ${result!.changes}`);
    expect(result!.largeChanges).toBeGreaterThanOrEqual(10);
    expect(maxFiles, 'spool files are released after each commit').toBeLessThan(40);
    for (const t of TABLES) {
      const [a, b] = await Promise.all([hash(source, t), hash(target, t)]);
      expect({ table: t, ...b }).toEqual({ table: t, ...a });
    }
    const check = `SELECT id, small, len, md5(t) AS t, md5(b) AS b, md5(j::text) AS j, md5(v) AS v, md5(arr::text) AS arr, md5(d) AS d FROM k ORDER BY id`;
    expect(await target.query(check)).toEqual(await source.query(check));
    expect((await target.query<{ n: string }>(`SELECT count(*)::text AS n FROM p2`))[0]!.n).toBe('2');
  });
});

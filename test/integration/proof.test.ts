/**
 * The content proof by default: chunks verified while the source writes (SYNCING_WAL), only the chunks
 * changed since re-checked at cutover, divergences named by key, before or at the cutover.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { WorkflowFailedError } from '@temporalio/client';
import { startEnv, type TestEnv } from '../harness/env';
import { fingerprint } from '../harness/compare';
import { SHOP_TABLES, startWriter } from '../harness/fixtures';
import { formatMismatch, proveLive, validateTables } from '../../activities/validate';
import { chunkFingerprintSql, insertProofChunksSql, NOT_FINGERPRINTED } from '../../activities/validate/sql';
import { armWriteMarks, ensureProofSchema, runSql } from '../../activities/validate/proof-store';
import { rangesBetween } from '../../activities/validate/compare';
import { Client } from 'pg';
import type { ValidateTableSpec } from '../../activities/validate/contract';
import type { MigrationReport } from '../../workflows/contract';
import { dropApplyProgress } from '../../activities/cleanup';
import { ensureApplyProgressTable, progressUpsert } from '../../activities/apply/progress';
import { compareLsn, lsnToBigInt } from '../../activities/apply/lsn';

let env: TestEnv;

beforeAll(async () => {
  env = await startEnv();
});

afterAll(async () => {
  await env?.stop();
});

const ITEMS_DDL = `
CREATE TABLE public.items (id int PRIMARY KEY, v int NOT NULL, body text);
ALTER TABLE public.items ALTER body SET STORAGE EXTERNAL;
INSERT INTO public.items SELECT g, g, CASE WHEN g % 100 = 0 THEN (SELECT string_agg(md5(g::text || x::text), '') FROM generate_series(1, 200) x) ELSE 'b' || g END
  FROM generate_series(1, 5000) g;
CREATE TABLE public.bag (a int, b text);
INSERT INTO public.bag SELECT g % 50, 'x' || (g % 7) FROM generate_series(1, 300) g;
CREATE TABLE public.parts (id int PRIMARY KEY, v text) PARTITION BY RANGE (id);
CREATE TABLE public.parts_1 PARTITION OF public.parts FOR VALUES FROM (MINVALUE) TO (1000);
CREATE TABLE public.parts_2 PARTITION OF public.parts FOR VALUES FROM (1000) TO (MAXVALUE);
INSERT INTO public.parts SELECT g, 'p' || g FROM generate_series(1, 1999) g;
`;

const items: ValidateTableSpec = { source: { schema: 'public', name: 'items' }, target: { schema: 'public', name: 'items' }, keyColumns: ['id'], copyColumns: ['id', 'v', 'body'] };
const parts: ValidateTableSpec = { source: { schema: 'public', name: 'parts' }, target: { schema: 'public', name: 'parts' }, keyColumns: ['id'], copyColumns: ['id', 'v'] };
const bag: ValidateTableSpec = { source: { schema: 'public', name: 'bag' }, target: { schema: 'public', name: 'bag' }, keyColumns: [], copyColumns: ['a', 'b'] };

/** The same database of ITEMS_DDL on both servers: the target a copy of the source. */
/** No proof session is left on the target's database once proveLive returned; then its progress table dropped. */
async function expectNoProofSessionLeft(db: string, target: string, slot: string): Promise<void> {
  const [left] = await env.target.query<{ n: number }>(`SELECT count(*)::int AS n FROM pg_stat_activity WHERE datname = $1 AND application_name = 'pg-dts proof'`, [db], db);
  expect(left!.n).toBe(0);
  await dropApplyProgress(target, slot);
}

async function itemsDatabases(db: string): Promise<{ source: string; target: string }> {
  for (const cluster of [env.source, env.target]) {
    await cluster.createDatabase(db);
    await cluster.query(ITEMS_DDL, [], db);
  }
  return { source: env.source.uri(db), target: env.target.uri(db) };
}

describe('the proof, activity by activity', () => {
  it('proves every chunk live; at cutover re-checks only the chunks changed on either side, naming each key', async () => {
    const db = 'proof_units';
    const sides = await itemsDatabases(db);
    const input = { ...sides, slot: 'proof_units', tables: [items, bag, parts], chunkRows: 1000, leafRows: 50, fanout: 4 };
    // The source is idle and the target is a copy: nothing to wait for.
    const caughtUp = { waitForTarget: async () => true };

    const first = await proveLive({ ...input, maxPasses: 1 }, caughtUp);
    expect(first.divergence).toBeUndefined();
    expect(first.progress).toMatchObject({ passesComplete: 1, chunks: 8, chunksVerified: 8, rowsCovered: 7299 });
    // Values stored out of line: the change below is to a TOASTed value.
    const [toast] = await env.target.query<{ t: string }>(`SELECT reltoastrelid::regclass::text AS t FROM pg_class WHERE oid = 'public.items'::regclass`, [], db);
    const [chunks] = await env.target.query<{ n: number }>(`SELECT count(DISTINCT chunk_id)::int AS n FROM ${toast!.t}`, [], db);
    expect(chunks!.n).toBe(50);

    // Chunks of 1,000 ids: 1 untouched; 4 changed alike on both sides (what the apply does); 2, 3 and 5
    // changed on the target alone: a value, a deleted row, a TOASTed value and an extra row.
    await env.source.query(`UPDATE public.items SET v = v + 10 WHERE id = 3500`, [], db);
    await env.target.query(
      `UPDATE public.items SET v = v + 10 WHERE id = 3500;
       UPDATE public.items SET v = v + 1 WHERE id = 1500;
       DELETE FROM public.items WHERE id = 2500;
       UPDATE public.items SET body = body || 'x' WHERE id = 4500;
       INSERT INTO public.items VALUES (5001, 0, 'extra');
       DELETE FROM public.bag WHERE ctid = (SELECT min(ctid) FROM public.bag WHERE a = 7);
       UPDATE public.parts SET v = 'moved' WHERE id = 1500;`,
      [],
      db,
    );

    const [it, bg, pt] = await validateTables({ ...sides, tables: [items, bag, parts], chunkRows: 1000, leafRows: 50, fanout: 4, proofSlot: 'proof_units' });
    // items (five chunks, an integer key) carries a count per chunk: chunk 1, written by no one, is not
    // read; chunk 4, written alike on both sides (id 3500), is checked by that key alone; chunks 2, 3
    // and 5, whose written keys differ, are read again. bag (one chunk) has the table's count.
    expect(it!.proof).toEqual({ chunks: 5, verifiedBeforeCutover: 2, reverifiedAtCutover: 3, rows: 5000, readAtCutover: 3, keysReadAtCutover: 1 });
    expect(it!.mismatches.map(formatMismatch).map((m) => m.replace(/ \[chunk .*\]$/, ''))).toEqual([
      'id=1500: different (v)',
      'id=2500: missing-on-target',
      'id=4500: different (body)',
      'id=5001: extra-on-target',
    ]);
    expect({ counts: it!.countsMatch, source: it!.sourceRows, target: it!.targetRows, ok: it!.ok }).toEqual({ counts: true, source: 5000, target: 5000, ok: false });
    expect(bg!.proof).toEqual({ chunks: 1, verifiedBeforeCutover: 0, reverifiedAtCutover: 1, rows: 300, readAtCutover: 1 });
    expect(bg!.mismatches).toMatchObject([{ kind: 'missing-on-target' }]);
    // A partitioned table: tuples of different partitions told apart (tableoid), the changed one found.
    // A partitioned table carries no write marks (its rows live in its partitions): always read.
    expect(pt!.proof).toEqual({ chunks: 2, verifiedBeforeCutover: 1, reverifiedAtCutover: 1, rows: 1999, readAtCutover: 2 });
    expect(pt!.mismatches.map(formatMismatch).map((m) => m.replace(/ \[chunk .*\]$/, ''))).toEqual(['id=1500: different (v)']);

    // The live proof finds the same divergence itself, before any cutover.
    const second = await proveLive({ ...input, maxPasses: 3 }, caughtUp);
    const byTable = new Map(second.divergence?.map((r) => [r.source, r.mismatches.map((m) => `${formatMismatch(m).replace(/ \[chunk .*\]$/, '')}`)]));
    expect(byTable.get('public.items')).toEqual(['id=1500: different (v)', 'id=2500: missing-on-target', 'id=4500: different (body)', 'id=5001: extra-on-target']);
    expect(byTable.get('public.bag')).toHaveLength(1);
    expect(byTable.get('public.parts')).toEqual(['id=1500: different (v)']);

    // Repaired: every chunk proven again, none left for the cutover.
    await env.target.query(
      `UPDATE public.items SET v = v - 1 WHERE id = 1500;
       INSERT INTO public.items SELECT g, g, (SELECT string_agg(md5(g::text || x::text), '') FROM generate_series(1, 200) x) FROM generate_series(2500, 2500) g;
       UPDATE public.items SET body = left(body, -1) WHERE id = 4500;
       DELETE FROM public.items WHERE id = 5001;
       INSERT INTO public.bag VALUES (7, 'x0');
       UPDATE public.parts SET v = 'p1500' WHERE id = 1500;`,
      [],
      db,
    );
    const healed = await proveLive({ ...input, maxPasses: 1 }, caughtUp);
    expect(healed.divergence).toBeUndefined();
    expect(healed.progress).toMatchObject({ chunks: 8, chunksVerified: 8 });
    // No write on the target since the pass: the cutover reads nothing of items or bag (their counts
    // come from the proof); the partitioned table is read.
    const tableScans = async (...tables: string[]) => {
      const [r] = await env.target.query<{ n: number }>(
        `SELECT coalesce(sum(seq_scan + coalesce(idx_scan, 0)), 0)::int AS n FROM pg_stat_user_tables WHERE relname = ANY ($1::text[])`,
        [tables],
        db,
      );
      return r!.n;
    };
    const [itemsBefore, bagBefore] = [await tableScans('items'), await tableScans('bag')];
    const [again, bagAgain, partsAgain] = await validateTables({ ...sides, tables: [items, bag, parts], chunkRows: 1000, proofSlot: 'proof_units' });
    expect({ ok: again!.ok, sample: again!.sample, proof: again!.proof }).toEqual({
      ok: true,
      sample: 'match',
      proof: { chunks: 5, verifiedBeforeCutover: 5, reverifiedAtCutover: 0, rows: 5000, readAtCutover: 0 },
    });
    // The keyless bag is not sampled: its sample would count the sampled rows over the whole table on
    // both sides, a scan growing with it inside the write stop, for rows its proof vouches for.
    expect({ ok: bagAgain!.ok, rows: bagAgain!.sourceRows, sample: bagAgain!.sample, proof: bagAgain!.proof }).toEqual({
      ok: true,
      rows: 300,
      sample: 'not-run',
      proof: { chunks: 1, verifiedBeforeCutover: 1, reverifiedAtCutover: 0, rows: 300, readAtCutover: 0 },
    });
    expect(partsAgain!.proof).toMatchObject({ reverifiedAtCutover: 0, readAtCutover: 2 });
    await new Promise((r) => setTimeout(r, 600)); // the validation sessions' statistics, flushed as they close
    // The sample (1,000 rows by key) still reads items; the point is the proof's part: with the
    // sample off, neither table is scanned at all.
    expect(await tableScans('items')).toBeGreaterThan(itemsBefore);
    expect(await tableScans('bag')).toBe(bagBefore);
    const scansMid = await tableScans('items', 'bag');
    const quiet = await validateTables({ ...sides, tables: [items, bag], chunkRows: 1000, sampleSize: 0, proofSlot: 'proof_units' });
    expect(quiet.map((r) => r.ok)).toEqual([true, true]);
    await new Promise((r) => setTimeout(r, 600));
    expect(await tableScans('items', 'bag')).toBe(scansMid);

    // Written alike on both sides since the pass (what the apply does): checked by the written keys
    // alone, a row more counted from the statements' delta, nothing read.
    const alikeSql = `UPDATE public.items SET v = v + 7 WHERE id = 2222; INSERT INTO public.items VALUES (6000, 6000, 'new')`;
    await env.source.query(alikeSql, [], db);
    await env.target.query(alikeSql, [], db);
    const [alike] = await validateTables({ ...sides, tables: [items], chunkRows: 1000, sampleSize: 0, proofSlot: 'proof_units' });
    expect({ ok: alike!.ok, source: alike!.sourceRows, target: alike!.targetRows, proof: alike!.proof }).toEqual({
      ok: true,
      source: 5001,
      target: 5001,
      proof: { chunks: 5, verifiedBeforeCutover: 5, reverifiedAtCutover: 0, rows: 5001, readAtCutover: 0, keysReadAtCutover: 2 },
    });
    // The keys recorded before a chunk's proof are forgotten by it: a pass leaves none behind.
    expect((await proveLive({ ...input, maxPasses: 1 }, caughtUp)).progress).toMatchObject({ chunks: 8, chunksVerified: 8 });
    const [keysLeft] = await env.target.query<{ n: number }>(`SELECT count(*)::int AS n FROM pgdts.proof_keys`, [], db);
    expect(keysLeft!.n).toBe(0);

    // DDL rewriting the table on the target fires no write trigger: the relfilenode in the count tells.
    await env.target.query(`ALTER TABLE public.items ALTER COLUMN body TYPE text USING upper(body)`, [], db);
    const [rewritten] = await validateTables({ ...sides, tables: [items], chunkRows: 1000, sampleSize: 0, proofSlot: 'proof_units' });
    expect({ ok: rewritten!.ok, read: rewritten!.proof?.readAtCutover }).toEqual({ ok: false, read: 5 });
    await env.target.query(`ALTER TABLE public.items ALTER COLUMN body TYPE text USING lower(body)`, [], db);
    expect((await proveLive({ ...input, maxPasses: 1 }, caughtUp)).progress).toMatchObject({ chunks: 8, chunksVerified: 8 });

    // A write on the target after the last pass, by anyone (here: another role, outside any apply),
    // moves the count of the chunk it wrote: the cutover reads that chunk again and names the key.
    await env.target.query(`CREATE ROLE proof_stray LOGIN; GRANT USAGE ON SCHEMA public TO proof_stray; GRANT UPDATE, SELECT ON public.items TO proof_stray`, [], db);
    await env.target.query(`SET ROLE proof_stray; UPDATE public.items SET v = v + 1 WHERE id = 4242; RESET ROLE`, [], db);
    const [stray] = await validateTables({ ...sides, tables: [items], chunkRows: 1000, sampleSize: 0, proofSlot: 'proof_units' });
    expect({ ok: stray!.ok, read: stray!.proof?.readAtCutover, rechecked: stray!.proof?.reverifiedAtCutover }).toEqual({ ok: false, read: 1, rechecked: 1 });
    expect(stray!.mismatches.map(formatMismatch).map((m) => m.replace(/ \[chunk .*\]$/, ''))).toEqual(['id=4242: different (v)']);
    await env.target.query(`UPDATE public.items SET v = v - 1 WHERE id = 4242`, [], db);
    expect((await proveLive({ ...input, maxPasses: 1 }, caughtUp)).progress).toMatchObject({ chunks: 8, chunksVerified: 8 });
    // A key moved from one chunk to another counts in both (the statement's old and new rows): the row
    // missing from the first chunk and the extra one in the last are found, and the three chunks
    // nobody wrote are not read.
    await env.target.query(`UPDATE public.items SET id = 100000 WHERE id = 10`, [], db);
    const [moved] = await validateTables({ ...sides, tables: [items], chunkRows: 1000, sampleSize: 0, proofSlot: 'proof_units' });
    expect({ ok: moved!.ok, read: moved!.proof?.readAtCutover }).toEqual({ ok: false, read: 2 });
    expect(moved!.mismatches.map(formatMismatch).map((m) => m.replace(/ \[chunk .*\]$/, ''))).toEqual(['id=10: missing-on-target', 'id=100000: extra-on-target']);
    const [counted] = await env.target.query<{ chunks: number[] }>(`SELECT array_agg(chunk ORDER BY chunk) AS chunks FROM pgdts.proof_chunk_writes WHERE slot_name = 'proof_units'`, [], db);
    expect(counted!.chunks).toEqual([0, 1, 2, 3, 4]);
    // A TRUNCATE counts too.
    await env.target.query(`TRUNCATE public.bag`, [], db);
    const [emptied] = await validateTables({ ...sides, tables: [bag], sampleSize: 0, proofSlot: 'proof_units' });
    expect({ ok: emptied!.ok, target: emptied!.targetRows, read: emptied!.proof?.readAtCutover }).toEqual({ ok: false, target: 0, read: 1 });

    // Cleanup takes the marks away: no trigger, function or count of ours is left.
    await dropApplyProgress(sides.target, 'proof_units');
    const [left] = await env.target.query<{ triggers: number; fns: number; counts: number }>(
      `SELECT (SELECT count(*)::int FROM pg_trigger WHERE tgname LIKE 'proof\\_units\\_w%') AS triggers,
              (SELECT count(*)::int FROM pg_proc WHERE proname = 'proof_units_writes') AS fns,
              (SELECT count(*)::int FROM pgdts.proof_writes WHERE slot_name = 'proof_units') +
              (SELECT count(*)::int FROM pgdts.proof_chunk_writes WHERE slot_name = 'proof_units') AS counts`,
      [],
      db,
    );
    expect(left).toEqual({ triggers: 0, fns: 0, counts: 0 });
  });
});

describe('a table counted per chunk', () => {
  it('is proven without tuple fingerprints; a chunk whose marks stop holding is read whole again, and a change made meanwhile is found', async () => {
    const db = 'proof_no_fp';
    const sides = await itemsDatabases(db);
    const input = { ...sides, slot: 'proof_no_fp', tables: [items, parts], chunkRows: 1000, leafRows: 50, fanout: 4 };
    const caughtUp = { waitForTarget: async () => true };
    expect((await proveLive({ ...input, maxPasses: 1 }, caughtUp)).progress).toMatchObject({ chunks: 7, chunksVerified: 7 });
    // items (five chunks, an integer key) is counted per chunk: its reads leave the fingerprints out;
    // parts (partitioned: no marks) keeps them, its later passes compare them.
    const stored = async () =>
      Object.fromEntries(
        (
          await env.target.query<{ t: string; fp: boolean[] }>(
            `SELECT table_name AS t, array_agg(DISTINCT source_tuples = $1 AND target_tuples = $1) AS fp FROM pgdts.proof_chunks WHERE slot_name = 'proof_no_fp' GROUP BY 1`,
            [NOT_FINGERPRINTED],
            db,
          )
        ).map((r) => [r.t, r.fp]),
      );
    expect(await stored()).toEqual({ 'public.items': [true], 'public.parts': [false] });
    // A change on the target with the chunk counts bypassed (their triggers disabled, then enabled
    // again: their row versions change, so no stored mark holds): every chunk is read again, the
    // changed one named.
    const triggers = ['proof_no_fp_wi', 'proof_no_fp_wu', 'proof_no_fp_wd'];
    await env.target.query(
      `${triggers.map((t) => `ALTER TABLE public.items DISABLE TRIGGER ${t};`).join(' ')}
       UPDATE public.items SET v = v + 1 WHERE id = 1500;
       ${triggers.map((t) => `ALTER TABLE public.items ENABLE ALWAYS TRIGGER ${t};`).join(' ')}`,
      [],
      db,
    );
    const found = await proveLive({ ...input, maxPasses: 3 }, caughtUp);
    expect(found.divergence?.map((r) => [r.source, r.mismatches.map((m) => formatMismatch(m).replace(/ \[chunk .*\]$/, ''))])).toEqual([['public.items', ['id=1500: different (v)']]]);
    await env.target.query(`UPDATE public.items SET v = v - 1 WHERE id = 1500`, [], db);
    expect((await proveLive({ ...input, maxPasses: 1 }, caughtUp)).progress).toMatchObject({ chunks: 7, chunksVerified: 7 });
    expect(await stored()).toEqual({ 'public.items': [true], 'public.parts': [false] });
  });
});

describe('a pass while the apply is far behind the source', () => {
  it('starts once the apply has caught up with where the source was (more than 1 MB behind), not chunk by chunk meanwhile', async () => {
    const db = 'proof_behind';
    const sides = await itemsDatabases(db);
    const slot = 'proof_behind';
    const input = { ...sides, slot, tables: [items], chunkRows: 1000, leafRows: 50, fanout: 4 };
    const currentLsn = async () => (await env.source.query<{ lsn: string }>('SELECT pg_current_wal_insert_lsn()::text AS lsn', [], db))[0]!.lsn;
    const applied = async (lsn: string) => {
      const c = new Client({ connectionString: sides.target });
      await c.connect();
      try {
        await ensureApplyProgressTable(c);
        await c.query(progressUpsert(slot, lsnToBigInt(lsn), undefined));
      } finally {
        await c.end();
      }
    };
    // Each wait: the position asked for, and how many chunks of the slot were planned by then.
    const waits: Array<{ lsn: string; planned: number }> = [];
    const hooks = {
      waitForTarget: async (lsn: string) => {
        const [p] = await env.target.query<{ n: number }>(`SELECT count(*)::int AS n FROM pgdts.proof_chunks WHERE slot_name = $1`, [slot], db);
        waits.push({ lsn, planned: p!.n });
        // The catch-up takes a while: not the pass's time (a pass over 5 s would not count yet).
        if (p!.n === 0) await new Promise((r) => setTimeout(r, 5500));
        return true;
      },
    };

    // The apply's recorded position 2 MB of WAL behind the source.
    await applied(await currentLsn());
    await env.source.query(`SELECT pg_logical_emit_message(false, 'pg-dts test', repeat('x', 2000000))`, [], db);
    const behind = await currentLsn();
    const first = await proveLive({ ...input, maxPasses: 1 }, hooks);
    expect(first.progress).toMatchObject({ chunks: 5, chunksVerified: 5, passesComplete: 1 });
    expect(first.progress.lastPassMs).toBeLessThan(5000);
    // The first wait comes before any chunk is planned, for a position past the WAL written.
    expect(waits[0]!.planned).toBe(0);
    expect(compareLsn(waits[0]!.lsn, behind)).toBeGreaterThanOrEqual(0);

    // Caught up (within 1 MB): the pass starts at once; every wait is a chunk's.
    await env.target.query(`UPDATE public.items SET v = v + 1 WHERE id = 10`, [], db);
    await env.source.query(`UPDATE public.items SET v = v + 1 WHERE id = 10`, [], db);
    await applied(await currentLsn());
    waits.length = 0;
    const second = await proveLive({ ...input, maxPasses: 1 }, hooks);
    expect(second.progress).toMatchObject({ chunks: 5, chunksVerified: 5 });
    expect(waits.length).toBeGreaterThan(0);
    expect(waits.every((w) => w.planned === 5)).toBe(true);
    await dropApplyProgress(sides.target, slot);
  });
});

describe('a table counted per chunk, written on the target by someone else during the first pass', () => {
  it('is named a divergence while the source holds still, before any fence', async () => {
    const db = 'proof_stray_writer';
    const sides = await itemsDatabases(db);
    const input = { ...sides, slot: 'proof_stray', tables: [items], chunkRows: 1000, leafRows: 50, fanout: 4 };
    // A row differs on the target, and every wait for the apply finds another write to it there (not
    // the apply's: the source holds still), so the chunk's mark has moved by each target read. Its
    // first source read carries no fingerprint: the content the source held tells it to look again.
    const stray = async () => {
      await env.target.query(`UPDATE public.items SET v = v + 1 WHERE id = 1500`, [], db);
      return true;
    };
    await stray();
    const found = await proveLive({ ...input, maxPasses: 3 }, { waitForTarget: stray });
    expect(found.divergence?.map((r) => [r.source, r.mismatches.map((m) => formatMismatch(m).replace(/ \[chunk .*\]$/, ''))])).toEqual([['public.items', ['id=1500: different (v)']]]);
  });
});

describe('the pairs of a pass', () => {
  /**
   * The first pair to compare a chunk waits there, once and up to 30 s, until another pair has compared
   * one: that the second pair takes part does not depend on how soon it was set up.
   */
  function bothPairs(): (pair: number) => Promise<void> {
    const seen = new Set<number>();
    let release = () => {};
    const both = new Promise<void>((r) => (release = r));
    let waited = false;
    return async (pair) => {
      seen.add(pair);
      if (seen.size > 1) return release();
      if (waited) return;
      waited = true;
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([both, new Promise((r) => (timer = setTimeout(r, 30_000)))]);
      clearTimeout(timer);
    };
  }
  // 50 chunks of items on one pair; the other reads the keyless bag (one chunk) first, or has no table.
  it.each([
    ['once their own tables are done', [items, bag], 'proof_pairs_help'],
    ['when there are fewer tables than pairs', [items], 'proof_pairs_alone'],
  ])("take chunks of a table still being compared %s; a row changed in any chunk is named, whichever pair read it", async (_, tables, db) => {
    const sides = await itemsDatabases(db);
    const input = { ...sides, slot: 'proof_pairs', tables, parallelism: 2, chunkRows: 100, leafRows: 20, fanout: 4 };
    await env.target.query(`UPDATE public.items SET v = -v WHERE id IN (150, 2550, 4950)`, [], db);
    const compared: { chunk: number; pair: number }[] = [];
    const met = bothPairs();
    const found = await proveLive(
      { ...input, maxPasses: 3 },
      {
        waitForTarget: async () => true,
        onChunkCompared: async (table, chunk, pair) => {
          if (table !== 'public.items') return;
          compared.push({ chunk, pair });
          await met(pair);
        },
      },
    );
    expect(found.divergence?.map((r) => [r.source, r.mismatches.map((m) => formatMismatch(m).replace(/ \[chunk .*\]$/, ''))])).toEqual([
      ['public.items', ['id=150: different (v)', 'id=2550: different (v)', 'id=4950: different (v)']],
    ]);
    // The first pass compared every chunk once, on both pairs; the second only the three not proven.
    const times = new Map<number, number>();
    for (const c of compared) times.set(c.chunk, (times.get(c.chunk) ?? 0) + 1);
    expect(times.size).toBe(50);
    expect([...times.values()].filter((n) => n === 2)).toHaveLength(3);
    expect([...times.values()].filter((n) => n !== 1 && n !== 2)).toEqual([]);
    expect(new Set(compared.slice(0, 50).map((c) => c.pair)).size).toBe(2);
  });
  it('stop taking chunks, every pair, once one waited in vain for the apply; the next pass proves every chunk', async () => {
    const db = 'proof_pairs_lag';
    const sides = await itemsDatabases(db);
    const input = { ...sides, slot: 'proof_pairs_lag', tables: [items], parallelism: 2, chunkRows: 100, leafRows: 20, fanout: 4 };
    // Row 1050 (chunk 10) not yet applied on the target, and the apply never reaches the source's position.
    await env.target.query(`UPDATE public.items SET v = v + 1 WHERE id = 1050`, [], db);
    let waits = 0;
    const pairs = new Set<number>();
    const met = bothPairs();
    const lagging = await proveLive({ ...input, maxPasses: 1 }, { waitForTarget: async () => (waits++, false), onChunkCompared: (_, __, pair) => (pairs.add(pair), met(pair)) });
    expect({ waits, chunks: lagging.progress.chunks, passesComplete: lagging.progress.passesComplete }).toEqual({ waits: 1, chunks: 50, passesComplete: 0 });
    // Each pair finishes the chunk it is comparing, and leaves the rest (read ahead or not yet taken).
    expect(lagging.progress.chunksVerified).toBeLessThan(30);
    expect(pairs.size).toBe(2);
    await env.target.query(`UPDATE public.items SET v = v - 1 WHERE id = 1050`, [], db);
    const next = await proveLive({ ...input, maxPasses: 1 }, { waitForTarget: async () => true });
    expect(next.progress).toMatchObject({ chunks: 50, chunksVerified: 50, passesComplete: 1 });
    await expectNoProofSessionLeft(db, sides.target, 'proof_pairs_lag');
  });
});

describe("a big table's chunks", () => {
  it('are cut from a sample whose size tells the rows, not from stale statistics', async () => {
    const db = 'proof_sampled';
    // 1.1 M rows analyzed, then all but 500,000 deleted and not vacuumed: the planner still estimates
    // 1.1 M (over the sampling threshold), the table holds 500,000.
    const ddl = `CREATE TABLE public.big (id int PRIMARY KEY, v int NOT NULL) WITH (autovacuum_enabled = off);
      INSERT INTO public.big SELECT g, g FROM generate_series(1, 1100000) g; ANALYZE public.big; DELETE FROM public.big WHERE id > 500000`;
    await Promise.all(
      [env.source, env.target].map(async (cluster) => {
        await cluster.createDatabase(db);
        await cluster.query(ddl, [], db);
      }),
    );
    const [est] = await env.source.query<{ n: number }>(`SELECT reltuples::int8 AS n FROM pg_class WHERE oid = 'public.big'::regclass`, [], db);
    expect(Number(est!.n)).toBeGreaterThan(1_000_000);
    const big: ValidateTableSpec = { source: { schema: 'public', name: 'big' }, target: { schema: 'public', name: 'big' }, keyColumns: ['id'], copyColumns: ['id', 'v'] };
    // Every read of the table by index on the source (a count(*) too: an index-only scan), so its
    // index scans count the reads of the table; a sample is not one.
    await env.source.query(`ALTER DATABASE ${db} SET enable_seqscan = off`);
    const scans = async () => {
      await new Promise((r) => setTimeout(r, 1000)); // the sessions' statistics, flushed as they close
      const [r] = await env.source.query<{ n: number }>(`SELECT idx_scan::int AS n FROM pg_stat_user_tables WHERE relname = 'big'`, [], db);
      return r!.n;
    };
    const before = await scans();
    const proof = await proveLive({ source: env.source.uri(db), target: env.target.uri(db), slot: 'proof_sampled', tables: [big], chunkRows: 100_000, maxPasses: 1 }, { waitForTarget: async () => true });
    // Five chunks of rows: about five chunks (eleven from the estimate; the ~40 pages of live rows the
    // sample reads count them within about a sixth: 3 to 8 is nearly four standard errors), every row proven.
    const { chunks, chunksVerified, rowsCovered } = proof.progress;
    expect({ chunksVerified, rowsCovered, sized: chunks >= 3 && chunks <= 8 }).toEqual({ chunksVerified: chunks, rowsCovered: 500_000, sized: true });
    // The chunks' reads and nothing else: no count(*) of the table before them.
    expect((await scans()) - before).toBe(chunks);
  });
});

describe('the write marks of a table of many chunks', () => {
  it("cost a statement what its rows cost, not its rows times the table's chunks", async () => {
    const db = 'proof_many_chunks';
    const slot = 'proof_many_chunks';
    await env.target.createDatabase(db);
    await env.target.query(`CREATE TABLE public.m (id int PRIMARY KEY, v int NOT NULL); INSERT INTO public.m SELECT g, g FROM generate_series(1, 20000) g`, [], db);
    const c = new Client({ connectionString: env.target.uri(db) });
    await c.connect();
    try {
      // 2,000 chunks of 10 rows, counted per chunk.
      await ensureProofSchema(c, slot);
      const ranges = rangesBetween(Array.from({ length: 1999 }, (_, i) => [String(10 * (i + 1) + 1)]));
      await runSql(c, insertProofChunksSql(slot, 'public.m', ranges));
      expect(await armWriteMarks(c, slot, { schema: 'public', name: 'm' }, 'public.m', { column: 'id', type: 'integer' })).toBe('armed');
      // Every row written in one statement: each chunk counted once, each key recorded. Parsing the
      // chunks' bounds once per row instead of once per statement took seconds here (40,000 old and
      // new rows times 2,000 bounds); once, well under one.
      const t0 = performance.now();
      await c.query('UPDATE public.m SET v = v + 1');
      const ms = performance.now() - t0;
      const [counted] = (
        await c.query<{ chunks: number; writes: number; keys: number }>(
          `SELECT count(*)::int AS chunks, sum(writes)::int AS writes, (SELECT count(*)::int FROM pgdts.proof_keys WHERE slot_name = $1) AS keys FROM pgdts.proof_chunk_writes WHERE slot_name = $1`,
          [slot],
        )
      ).rows;
      expect(counted).toEqual({ chunks: 2000, writes: 2000, keys: 20000 });
      expect(ms).toBeLessThan(1500);
    } finally {
      await c.end();
    }
  });
});

describe('the tuple fingerprint', () => {
  it('is the same in every transaction for the same tuples, and differs for a tuple written anew at the same ctid', async () => {
    const db = 'proof_tuple_id';
    await env.source.createDatabase(db);
    await env.source.query(`CREATE TABLE public.fp (id int PRIMARY KEY, v int) WITH (autovacuum_enabled = off); INSERT INTO public.fp VALUES (1, 1)`, [], db);
    const [v] = await env.source.query<{ n: number }>(`SELECT current_setting('server_version_num')::int AS n`, [], db);
    const shape = { table: { schema: 'public', name: 'fp' }, columns: ['id', 'v'], keyColumns: ['id'], keyTypes: ['integer'], tidHash: v!.n >= 140000 };
    const read = async () => {
      const q = chunkFingerprintSql(shape, {});
      const [r] = await env.source.query<{ n: string; f: string; at: string }>(`WITH r AS (${q.text}) SELECT r.*, (SELECT ctid::text FROM public.fp) AS at FROM r`, q.values, db);
      return r!;
    };
    const first = await read();
    // Transactions in between: the same tuples, the same fingerprint.
    for (let i = 0; i < 3; i++) await env.source.query(`SELECT txid_current()`, [], db);
    expect(await read()).toEqual(first);
    // The same row deleted, vacuumed away and inserted again lands on the same ctid with another xmin.
    await env.source.query(`DELETE FROM public.fp`, [], db);
    await env.source.query(`VACUUM public.fp`, [], db);
    await env.source.query(`INSERT INTO public.fp VALUES (1, 1)`, [], db);
    const again = await read();
    expect({ n: again.n, at: again.at }).toEqual({ n: first.n, at: first.at });
    expect(again.f).not.toBe(first.f);
  });
});

describe('a chunk the apply writes while the proof reads it', () => {
  it('is proven but for the keys written meanwhile, which the cutover compares by key; a stray write among them is not proven', async () => {
    const db = 'proof_busy';
    const sides = await itemsDatabases(db);
    const input = { ...sides, slot: 'proof_busy', tables: [items], chunkRows: 1000, leafRows: 50, fanout: 4 };
    let waits = 0;
    const idle = { waitForTarget: async () => (waits++, true) };
    // A first pass arms the chunk marks (items: five chunks, an integer key); the target already
    // equal, no chunk waits for the apply.
    expect((await proveLive({ ...input, maxPasses: 1 }, idle)).progress).toMatchObject({ chunks: 5, chunksVerified: 5 });
    expect(waits).toBe(0);
    // A pass with writes while it reads, as a busy source makes them. The source is ahead of the
    // target (row 400), so the first chunk's target differs and its read waits for the apply: in that
    // wait the apply catches up, then rows 100 and 200 change on the source and only 100 is applied;
    // on the next wait (the busy chunk's held source snapshot) 200 is applied too, or (`stray`)
    // someone writes row 300 instead.
    const busyPass = async (stray: boolean) => {
      await env.target.query(`UPDATE public.items SET v = v + 1000 WHERE id IN (100, 200)`, [], db);
      await env.source.query(`UPDATE public.items SET v = v + 1000 WHERE id IN (100, 200); UPDATE public.items SET v = v + 5 WHERE id = 400`, [], db);
      // Every chunk read whole again (not proven again by its written keys, the next describe).
      await env.target.query(`UPDATE pgdts.proof_chunks SET source_tuples = NULL, target_tuples = NULL WHERE slot_name = 'proof_busy'`, [], db);
      let calls = 0;
      const hooks = {
        waitForTarget: async () => {
          calls++;
          if (calls === 1) {
            await env.target.query(`UPDATE public.items SET v = v + 5 WHERE id = 400`, [], db);
            await env.source.query(`UPDATE public.items SET v = v + 1 WHERE id IN (100, 200)`, [], db);
            await env.target.query(`UPDATE public.items SET v = v + 1 WHERE id = 100`, [], db);
          } else if (calls === 2) {
            await env.target.query(stray ? `UPDATE public.items SET v = v + 1 WHERE id = 300` : `UPDATE public.items SET v = v + 1 WHERE id = 200`, [], db);
          }
          return true;
        },
      };
      const pass = await proveLive({ ...input, maxPasses: 1 }, hooks);
      const [chunk] = await env.target.query<{ source_tuples: string | null; target_writes: string | null }>(
        `SELECT source_tuples, target_writes FROM pgdts.proof_chunks WHERE slot_name = 'proof_busy' AND chunk = 0`,
        [],
        db,
      );
      return { pass, chunk: chunk!, calls };
    };

    const busy = await busyPass(false);
    expect(busy.calls).toBeGreaterThanOrEqual(2);
    expect(busy.pass.divergence).toBeUndefined();
    // Proven but for the written keys, with the count read before the chunk's source read.
    expect(busy.chunk.source_tuples).toBe('all-but-written-keys');
    expect(busy.pass.progress).toMatchObject({ chunks: 5, chunksVerified: 5 });
    // The cutover: the first chunk by its written keys (400, 100 and 200), nothing read.
    const [cut] = await validateTables({ ...sides, tables: [items], chunkRows: 1000, sampleSize: 0, proofSlot: 'proof_busy' });
    expect({ ok: cut!.ok, rows: cut!.sourceRows, target: cut!.targetRows, proof: cut!.proof }).toEqual({
      ok: true,
      rows: 5000,
      target: 5000,
      proof: { chunks: 5, verifiedBeforeCutover: 5, reverifiedAtCutover: 0, rows: 5000, readAtCutover: 0, keysReadAtCutover: 3 },
    });

    // A stray write (row 300) among the keys written meanwhile, row 200 never applied: not proven.
    const strayed = await busyPass(true);
    expect(strayed.chunk.source_tuples).toBeNull();
    await env.target.query(`UPDATE public.items SET v = v - 1 WHERE id = 300; UPDATE public.items SET v = v + 1 WHERE id = 200`, [], db);
    const [after] = await validateTables({ ...sides, tables: [items], chunkRows: 1000, sampleSize: 0, proofSlot: 'proof_busy' });
    expect(after!.ok).toBe(true);
    await dropApplyProgress(sides.target, 'proof_busy');
  });
});

describe('a first pass the apply falls behind', () => {
  it('stops at the chunk that waited in vain: the chunks after it stay unproven, their source reads started ahead included; the next pass proves them', async () => {
    const db = 'proof_lag';
    const sides = await itemsDatabases(db);
    const input = { ...sides, slot: 'proof_lag', tables: [items], chunkRows: 1000, leafRows: 50, fanout: 4 };
    // Row 1500 (the second chunk) not yet applied on the target, and the apply never reaches the source's position.
    await env.target.query(`UPDATE public.items SET v = v + 1 WHERE id = 1500`, [], db);
    let waits = 0;
    const lagging = await proveLive({ ...input, maxPasses: 1 }, { waitForTarget: async () => (waits++, false) });
    // One wait (the second chunk's): the three chunks read ahead on the source are not compared.
    expect({ waits, progress: lagging.progress }).toMatchObject({ waits: 1, progress: { chunks: 5, chunksVerified: 1, passesComplete: 0 } });
    const stored = await env.target.query<{ proven: boolean }>(`SELECT source_tuples IS NOT NULL AS proven FROM pgdts.proof_chunks WHERE slot_name = 'proof_lag' ORDER BY chunk`, [], db);
    expect(stored.map((c) => c.proven)).toEqual([true, false, false, false, false]);
    // The row applied: the next pass proves every chunk, and counts.
    await env.target.query(`UPDATE public.items SET v = v - 1 WHERE id = 1500`, [], db);
    const next = await proveLive({ ...input, maxPasses: 1 }, { waitForTarget: async () => true });
    expect(next.progress).toMatchObject({ chunks: 5, chunksVerified: 5, passesComplete: 1 });
    await expectNoProofSessionLeft(db, sides.target, 'proof_lag');
  });
});

describe('a chunk written since proven, in the next pass', () => {
  it('is proven again by the keys written since alone; a key written during that read waits for the cutover; a stray write is found', async () => {
    const db = 'proof_again';
    const sides = await itemsDatabases(db);
    const input = { ...sides, slot: 'proof_again', tables: [items], chunkRows: 1000, leafRows: 50, fanout: 4 };
    const idle = { waitForTarget: async () => true };
    const stored = async () =>
      env.target.query<{ chunk: number; source_tuples: string | null; target_writes: string | null }>(
        `SELECT chunk, source_tuples, target_writes FROM pgdts.proof_chunks WHERE slot_name = 'proof_again' ORDER BY chunk`,
        [],
        db,
      );
    // The first pass arms the chunk marks; the second proves at the marks (nothing written).
    expect((await proveLive({ ...input, maxPasses: 2 }, idle)).progress).toMatchObject({ chunks: 5, chunksVerified: 5, lastPassKeys: 0 });
    const proven = await stored();
    // Rows 100 and 200 (chunk 0) and 3000 (chunk 2) change on the source and, as the apply would, on the target.
    const write = `UPDATE public.items SET v = v + 7, body = body || 'x' WHERE id IN (100, 200, 3000)`;
    await env.source.query(write, [], db);
    await env.target.query(write, [], db);
    // While the pass waits for the apply inside its source snapshot, row 100 changes again on both
    // sides: the target's key is written after the count read before the snapshot.
    let calls = 0;
    const hooks = {
      waitForTarget: async () => {
        if (++calls === 1) {
          await env.source.query(`UPDATE public.items SET v = v + 1 WHERE id = 100`, [], db);
          await env.target.query(`UPDATE public.items SET v = v + 1 WHERE id = 100`, [], db);
        }
        return true;
      },
    };
    const again = await proveLive({ ...input, maxPasses: 1 }, hooks);
    expect(again.divergence).toBeUndefined();
    // One wait for the table; rows 200 and 3000 compared by key (100 was written during the read);
    // no chunk read whole (that would wait for the apply again, once per chunk).
    expect({ calls, progress: again.progress }).toMatchObject({ calls: 1, progress: { chunks: 5, chunksVerified: 5, rowsCovered: 5000, lastPassKeys: 2 } });
    const after = await stored();
    expect(after.map((c) => c.source_tuples === 'all-but-written-keys')).toEqual([true, false, true, false, false]);
    // Chunks 1, 3, 4 unchanged; 0 and 2 keep the count read before the snapshot (chunk 0: one write
    // since, row 100's second; chunk 2: none).
    for (const i of [1, 3, 4]) expect(after[i]!.target_writes).toBe(proven[i]!.target_writes);
    // The cutover compares row 100 by key and nothing else.
    const [cut] = await validateTables({ ...sides, tables: [items], chunkRows: 1000, sampleSize: 0, proofSlot: 'proof_again' });
    expect({ ok: cut!.ok, rows: cut!.sourceRows, proof: cut!.proof }).toEqual({
      ok: true,
      rows: 5000,
      proof: { chunks: 5, verifiedBeforeCutover: 5, reverifiedAtCutover: 0, rows: 5000, readAtCutover: 0, keysReadAtCutover: 1 },
    });
    // The proof's keys up to each chunk's count are gone: only row 100's second write remains.
    const [keys] = await env.target.query<{ n: number }>(`SELECT count(*)::int AS n FROM pgdts.proof_keys WHERE slot_name = 'proof_again'`, [], db);
    expect(keys!.n).toBe(1);

    // Row 3000 written again on both sides, and the apply does not reach the source's position in
    // time: the chunks stay proven as stored (not read whole), the pass does not count, and the
    // cutover compares rows 100 and 3000 by key.
    await env.source.query(`UPDATE public.items SET v = v + 1 WHERE id = 3000`, [], db);
    await env.target.query(`UPDATE public.items SET v = v + 1 WHERE id = 3000`, [], db);
    const lagging = await proveLive({ ...input, maxPasses: 1 }, { waitForTarget: async () => false });
    expect(lagging.progress).toMatchObject({ chunks: 5, chunksVerified: 5, passesComplete: 0, lastPassKeys: 0 });
    expect((await stored()).map((c) => c.target_writes)).toEqual(after.map((c) => c.target_writes));
    const [late] = await validateTables({ ...sides, tables: [items], chunkRows: 1000, sampleSize: 0, proofSlot: 'proof_again' });
    expect({ ok: late!.ok, keys: late!.proof!.keysReadAtCutover, read: late!.proof!.readAtCutover }).toEqual({ ok: true, keys: 2, read: 0 });
    // At the cutover, a stray write on a written key (row 100, on the target alone): its chunk is read
    // and the row named; chunk 2's key still alike.
    await env.target.query(`UPDATE public.items SET v = -100 WHERE id = 100`, [], db);
    const [strayCut] = await validateTables({ ...sides, tables: [items], chunkRows: 1000, sampleSize: 0, proofSlot: 'proof_again' });
    expect({ ok: strayCut!.ok, keys: strayCut!.proof!.keysReadAtCutover, read: strayCut!.proof!.readAtCutover }).toEqual({ ok: false, keys: 1, read: 1 });
    expect(strayCut!.mismatches.map(formatMismatch).map((m) => m.replace(/ \[chunk .*\]$/, ''))).toEqual(['id=100: different (v)']);
    await env.target.query(`UPDATE public.items SET v = 108 WHERE id = 100`, [], db); // 100 + 7 + 1, as on the source
    // Our triggers disabled for a while (a bulk load on the target, say) and enabled again: the row
    // written meanwhile went uncounted, but the triggers' row versions are part of every mark, so no
    // stored mark matches any more; the cutover reads the chunks again and names the row.
    const enable = ['writes', 'wi', 'wu', 'wd'].map((t) => `ALTER TABLE public.items ENABLE ALWAYS TRIGGER proof_again_${t};`).join(' ');
    await env.target.query(`ALTER TABLE public.items DISABLE TRIGGER USER; UPDATE public.items SET v = -5 WHERE id = 4500; ${enable}`, [], db);
    const [gap] = await validateTables({ ...sides, tables: [items], chunkRows: 1000, sampleSize: 0, proofSlot: 'proof_again' });
    expect({ ok: gap!.ok, read: gap!.proof!.readAtCutover, rows: gap!.mismatches.map(formatMismatch).map((m) => m.replace(/ \[chunk .*\]$/, '')) }).toEqual({
      ok: false,
      read: 5,
      rows: ['id=4500: different (v)'],
    });
    await env.target.query(`UPDATE public.items SET v = 4500 WHERE id = 4500`, [], db);

    // A stray write on the target alone (row 250, chunk 0), and a row deleted there (row 2500): not
    // proven again by key; the pass finds both and names them.
    await env.target.query(`UPDATE public.items SET v = -1 WHERE id = 250; DELETE FROM public.items WHERE id = 2500`, [], db);
    const stray = await proveLive({ ...input, maxPasses: 1 }, idle);
    expect(stray.divergenceText).toMatch(/250/);
    expect(stray.divergenceText).toMatch(/2500/);
    await dropApplyProgress(sides.target, 'proof_again');
  });
});

let dbCounter = 0;
async function freshDatabases(scale: number): Promise<{ db: string; source: string; target: string }> {
  const db = `proofshop${++dbCounter}`;
  await env.shopDatabase(db, scale);
  return { db, source: env.source.uri(db), target: env.target.uri(db) };
}

async function fenceTriggers(db: string): Promise<number> {
  const [r] = await env.source.query<{ n: number }>(`SELECT count(*)::int AS n FROM pg_trigger WHERE tgname LIKE 'pg_dts_fence%'`, [], db);
  return r!.n;
}

describe('online migration with the default spec', () => {
  it('a row changed, a row deleted, a row added and a TOASTed value changed on the target during SYNCING_WAL fail the migration, naming each key', async () => {
    const { db, source, target } = await freshDatabases(0.2);
    const writer = startWriter(() => env.source.client(db), { pauseMs: 20 });
    const m = await env.startMigration({ source, target, cutover: { mode: 'manual' } });
    await m.waitForPhase('SYNCING_WAL');
    for (let i = 0; i < 300 && (await m.status()).proof?.state !== 'ready'; i++) await new Promise((r) => setTimeout(r, 200));
    expect((await m.status()).proof).toMatchObject({ state: 'ready', chunksVerified: expect.any(Number) });
    // Rows the writer never touches (it changes the lowest keys, the newest rows and scratch). One
    // transaction each: the write marks' counters are locked per table, and one transaction writing
    // several tables could deadlock with the apply's group writing them in another order (seen once).
    for (const sql of [
      `UPDATE public.customers SET name = 'changed on the target' WHERE id = 77`,
      `DELETE FROM public.kv WHERE k = 'key99'`,
      `INSERT INTO public.orders (id, customer_id, total, placed_at) VALUES (9999999, 1, 1, '2024-01-01')`,
      `UPDATE public.documents SET body = body || '!' WHERE id = 150`,
    ])
      await env.target.query(sql, [], db);
    await m.signal('cutover');
    const err = (await m.result().catch((e: unknown) => e)) as WorkflowFailedError;
    await writer.stop();
    expect(err).toBeInstanceOf(WorkflowFailedError);
    const message = String(err.cause?.message);
    // Found at cutover (these tables are written all the time, so their chunks rarely hold still for the
    // live proof to confirm a row), or before it by the proof.
    expect(message).toContain('validation failed');
    expect(message).toMatch(/public\.customers -> public\.customers: .*id=77: different \(name\)/);
    expect(message).toMatch(/public\.kv -> public\.kv: .*k=key99: missing-on-target/);
    expect(message).toMatch(/public\.orders -> public\.orders: .*id=9999999: extra-on-target/);
    expect(message).toMatch(/public\.documents -> public\.documents: .*id=150: different \(body\)/);
    const failed = await m.status();
    expect(failed.phase).toBe('FAILED');
    expect(await fenceTriggers(db)).toBe(0); // never fenced, or released again
  });

  it('a row changed on the target while the source holds still fails during SYNCING_WAL, before any fence', async () => {
    const { db, source, target } = await freshDatabases(0.05);
    const m = await env.startMigration({ source, target, cutover: { mode: 'manual' } });
    await m.waitForPhase('SYNCING_WAL');
    for (let i = 0; i < 300 && (await m.status()).proof?.state !== 'ready'; i++) await new Promise((r) => setTimeout(r, 200));
    await env.target.query(`UPDATE public.orders SET note = 'changed on the target' WHERE id = 42`, [], db);
    // No cutover requested: the proof's next pass finds it.
    const err = (await m.result().catch((e: unknown) => e)) as WorkflowFailedError;
    const message = String(err.cause?.message);
    expect(message).toContain('validation failed (found by the content proof during SYNCING_WAL, before any write stop)');
    expect(message).toMatch(/public\.orders -> public\.orders: .*id=42: different \(note\)/);
    const failed = await m.status();
    expect(failed.phase).toBe('FAILED');
    expect(failed.proof?.state).toBe('diverged');
    expect(failed.cutover?.fencedAt).toBeUndefined(); // the source was never fenced
    expect(await fenceTriggers(db)).toBe(0);
  });

  it('a clean migration under concurrent writes completes with the proof in the report: chunks verified live, the changed ones again at cutover', async () => {
    const { db, source, target } = await freshDatabases(0.5);
    const writer = startWriter(() => env.source.client(db), { pauseMs: 5 });
    // Chunks of 1,000 rows (the smallest allowed): the writer changes some of each table's chunks, not all.
    const m = await env.startMigration({ source, target, validation: { chunkRows: 1000 } });
    const report: MigrationReport = await m.result();
    const stats = await writer.stop();
    expect(stats.errors).toEqual([]);
    expect(report.phase).toBe('COMPLETED');
    const proof = report.proof!;
    expect(proof.enabled).toBe(true);
    expect(proof.chunks).toBeGreaterThanOrEqual(report.tables.length);
    console.log(`proof: ${JSON.stringify(proof)}, cutover window ${report.cutoverWindowMs} ms`);
    expect(proof.verifiedBeforeCutover + proof.reverifiedAtCutover).toBe(proof.chunks);
    // Chunks the writer left alone since their verification were not read again inside the write stop;
    // the written chunks of tables counted by chunk were checked by the keys written since (the rest
    // of the written chunks compared again).
    expect(proof.verifiedBeforeCutover).toBeGreaterThan(0);
    expect(proof.reverifiedAtCutover).toBeGreaterThan(0);
    expect(proof.keysReadAtCutover).toBeGreaterThan(0);
    expect(proof.livePasses).toBeGreaterThanOrEqual(1);
    expect(proof.rowsCovered).toBe(report.tables.reduce((n, t) => n + t.sourceRows, 0));
    for (const t of report.tables) expect({ t: t.source, checksum: t.checksum, proven: t.proof?.rows }).toEqual({ t: t.source, checksum: 'match', proven: t.sourceRows });
    // Content equal on both sides, table by table.
    for (const [schema, table] of SHOP_TABLES.filter(([s]) => s === 'public')) {
      const a = await fingerprint(env.source, db, schema, table);
      const b = await fingerprint(env.target, db, schema, table);
      expect({ table, ...b }).toEqual({ table, ...a });
    }
    const status = await m.status();
    expect(status.proof).toMatchObject({ state: 'validated', chunks: proof.chunks, reverifiedAtCutover: proof.reverifiedAtCutover });
    // The proof's state went with the migration: nothing of ours is left on the target.
    const [left] = await env.target.query<{ t: string | null; s: number; marks: number }>(
      `SELECT to_regclass('pgdts.proof_chunks')::text AS t, (SELECT count(*)::int FROM pg_namespace WHERE nspname = 'pgdts') AS s,
              (SELECT count(*)::int FROM pg_trigger WHERE tgname LIKE 'pg\\_dts\\_%\\_w%') AS marks`,
      [],
      db,
    );
    expect(left).toEqual({ t: null, s: 0, marks: 0 });
  });

  it('a database quiet at the cutover: the write stop reads no chunk again, whatever its size', async () => {
    const { db, source, target } = await freshDatabases(0.3);
    const writer = startWriter(() => env.source.client(db), { pauseMs: 5 });
    const m = await env.startMigration({ source, target, cutover: { mode: 'manual' }, validation: { chunkRows: 1000 } });
    await m.waitForPhase('SYNCING_WAL');
    await new Promise((r) => setTimeout(r, 1500));
    expect((await writer.stop()).errors).toEqual([]);
    // The writes have stopped: wait for a proof pass that began after the apply had caught up.
    const ready = async () => {
      const s = await m.status();
      return s.proof?.state === 'ready' && (s.proof.chunksVerified ?? 0) === s.proof.chunks ? s.proof.passesComplete : 0;
    };
    let pass = 0;
    for (let i = 0; i < 300 && !(pass = await ready()); i++) await new Promise((r) => setTimeout(r, 200));
    for (let i = 0; i < 300 && (await ready()) < pass + 2; i++) await new Promise((r) => setTimeout(r, 200));
    await m.signal('cutover');
    const report: MigrationReport = await m.result();
    expect(report.phase).toBe('COMPLETED');
    console.log(`quiet cutover: proof ${JSON.stringify(report.proof)}, window ${report.cutoverWindowMs} ms`);
    // Every chunk proven before the cutover and not one of them read again inside the write stop.
    expect(report.proof).toMatchObject({ enabled: true, reverifiedAtCutover: 0, readAtCutover: 0 });
    expect(report.proof!.verifiedBeforeCutover).toBe(report.proof!.chunks);
    for (const t of report.tables) expect({ t: t.source, checksum: t.checksum, counts: t.sourceRows === t.targetRows }).toEqual({ t: t.source, checksum: 'match', counts: true });
    for (const [schema, table] of SHOP_TABLES.filter(([s]) => s === 'public')) {
      const a = await fingerprint(env.source, db, schema, table);
      const b = await fingerprint(env.target, db, schema, table);
      expect({ table, ...b }).toEqual({ table, ...a });
    }
  });

  it('validation.checksum = false turns the proof off, and the report says so', async () => {
    const { source, target } = await freshDatabases(0.05);
    const m = await env.startMigration({ source, target, validation: { checksum: false } });
    const report = await m.result();
    expect(report.phase).toBe('COMPLETED');
    expect(report.proof).toMatchObject({ enabled: false, chunks: 0 });
    expect(report.notices.join('\n')).toContain('content proof off (validation.checksum = false)');
    expect(report.tables.every((t) => t.checksum === 'not-run')).toBe(true);
  });
});

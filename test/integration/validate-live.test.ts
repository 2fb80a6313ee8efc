/**
 * validateLive against a real apply (runApply, no Temporal) while an application keeps writing to the
 * source: no false mismatch while rows change under it; a corrupted target row is reported by key,
 * also once the source is idle (the check nudges the apply past its read position).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ApplyResult } from '../../activities/apply/options';
import { runApply } from '../../activities/apply/run';
import { validateLive, validateTables } from '../../activities/validate';
import { ROW_MD5_KEY } from '../../activities/validate/compare';
import type { ValidateTableSpec } from '../../activities/validate/contract';
import { startCluster, type PgCluster } from '../harness/pg-cluster';

const DDL = `
CREATE TABLE public.items (id int PRIMARY KEY, v int NOT NULL, note text, updated timestamptz);
CREATE TABLE public.bag (a int, b text);
`;
const SLOT = 'pgdts_live_test';

let source: PgCluster;
let target: PgCluster;
let apply: { result: Promise<ApplyResult>; abort: AbortController } | undefined;

const items: ValidateTableSpec = {
  source: { schema: 'public', name: 'items' },
  target: { schema: 'public', name: 'items' },
  keyColumns: ['id'],
  copyColumns: ['id', 'v', 'note', 'updated'],
};
const bag: ValidateTableSpec = {
  source: { schema: 'public', name: 'bag' },
  target: { schema: 'public', name: 'bag' },
  keyColumns: [],
  copyColumns: ['a', 'b'],
};
const tuning = { chunkRows: 500, leafRows: 50, fanout: 4, recheckDelayMs: 100 };

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * Updates rows 1..2000, flips rows 2001..2010 back and forth, inserts rows above 100000 and deletes most of
 * them again right away, and adds rows to bag, until stopped.
 */
function startWriter() {
  let stop = false;
  let writes = 0;
  const done = (async () => {
    const c = await source.client();
    try {
      let next = 100_000;
      while (!stop) {
        const id = 1 + Math.floor(Math.random() * 2000);
        await c.query(`UPDATE public.items SET v = v + 1, updated = clock_timestamp() WHERE id = $1`, [id]);
        await c.query(`INSERT INTO public.items VALUES ($1, 0, 'new', clock_timestamp())`, [next++]);
        if (next % 3 === 0) await c.query(`DELETE FROM public.items WHERE id = $1`, [next - 2]);
        if (next % 5 === 0) await c.query(`INSERT INTO public.bag VALUES ($1, $2)`, [next, `w${next}`]);
        // Flip-flops: the same ten rows change back and forth (content repeats, row versions do not).
        await c.query(`UPDATE public.items SET note = CASE WHEN note = 'tick' THEN 'tock' ELSE 'tick' END WHERE id = $1`, [2001 + (next % 10)]);
        writes++;
        await sleep(3);
      }
    } finally {
      await c.end().catch(() => undefined);
    }
  })();
  // Surfaced by stop(); until then, not an unhandled rejection.
  done.catch(() => undefined);
  return {
    async stop() {
      stop = true;
      await done;
      return writes;
    },
  };
}

async function targetCaughtUp(): Promise<void> {
  const [s] = await source.query<{ lsn: string }>('SELECT pg_current_wal_insert_lsn()::text AS lsn');
  for (let i = 0; i < 300; i++) {
    const [r] = await target.query<{ ok: boolean }>(`SELECT applied_lsn >= $1::pg_lsn AS ok FROM pgdts.apply_progress WHERE slot_name = $2`, [s!.lsn, SLOT]);
    if (r?.ok) return;
    await source.query(`SELECT pg_logical_emit_message(true, 'test', '')`);
    await sleep(100);
  }
  throw new Error('the apply did not catch up');
}

beforeAll(async () => {
  [source, target] = await Promise.all([startCluster({ name: 'live-src' }), startCluster({ name: 'live-tgt' })]);
  await Promise.all([source.query(DDL + 'ALTER TABLE public.bag REPLICA IDENTITY FULL; CREATE PUBLICATION pub FOR TABLE public.items, public.bag;'), target.query(DDL)]);
  await source.query(`SELECT pg_create_logical_replication_slot($1, 'pgoutput')`, [SLOT]);
  const abort = new AbortController();
  apply = {
    abort,
    result: runApply({
      source: source.uri(),
      target: target.uri(),
      slot: SLOT,
      publication: 'pub',
      tables: [
        { source: items.source, target: items.target },
        { source: bag.source, target: bag.target },
      ],
      signal: abort.signal,
      progressIntervalMs: 200,
    }),
  };
  apply.result.catch(() => undefined);
  // Everything reaches the target through the apply.
  await source.query(`INSERT INTO public.items SELECT g, g % 17, 'note ' || g, timestamptz '2024-01-01 00:00+00' + g * interval '1.5 second' FROM generate_series(1, 5000) g`);
  await source.query(`INSERT INTO public.bag SELECT g % 100, 'b' || (g % 100) FROM generate_series(1, 400) g`);
  await targetCaughtUp();
});

afterAll(async () => {
  apply?.abort.abort();
  await apply?.result.catch(() => undefined);
  await source?.query(`SELECT pg_drop_replication_slot($1)`, [SLOT]).catch(() => undefined);
  await Promise.all([source?.destroy(), target?.destroy()]);
});

describe('validateLive', () => {
  it('finds no difference while the source is written to, then reports corrupted target rows by key', async () => {
    const writer = startWriter();
    try {
      await sleep(300);
      const clean = await validateLive({ source: source.uri(), target: target.uri(), tables: [items, bag], slot: SLOT, ...tuning });
      for (const r of clean) {
        expect({ table: r.source, mismatches: r.mismatches, error: r.error }).toEqual({ table: r.source, mismatches: [], error: undefined });
        expect(r.checksum).not.toBe('mismatch');
      }
      expect(clean[0]!.chunks).toBeGreaterThanOrEqual(10);

      // Rows the writer never touches: changed, deleted and added behind the apply's back.
      await target.query(
        `UPDATE public.items SET note = 'corrupt' WHERE id = 4321; DELETE FROM public.items WHERE id = 4500; INSERT INTO public.bag VALUES (-1, 'stray')`,
      );
      const live = await validateLive({ source: source.uri(), target: target.uri(), tables: [items, bag], slot: SLOT, ...tuning });
      expect(live[0]!.checksum).toBe('mismatch');
      expect(live[0]!.mismatches.map((m) => ({ key: m.key, kind: m.kind, columns: m.columns }))).toEqual([
        { key: { id: '4321' }, kind: 'different', columns: ['note'] },
        { key: { id: '4500' }, kind: 'missing-on-target', columns: undefined },
      ]);
      expect(live[1]!.checksum).toBe('mismatch');
      expect(live[1]!.mismatches.map((m) => [Object.keys(m.key), m.kind])).toEqual([[[ROW_MD5_KEY], 'extra-on-target']]);
    } finally {
      const writes = await writer.stop();
      expect(writes).toBeGreaterThan(50);
    }

    // Idle source: every comparison must still get the target past its read position.
    const started = Date.now();
    const idle = await validateLive({ source: source.uri(), target: target.uri(), tables: [items], slot: SLOT, ...tuning });
    expect(idle[0]!.mismatches.map((m) => m.key.id)).toEqual(['4321', '4500']);
    expect(Date.now() - started).toBeLessThan(60_000);

    // A target that never catches up cannot confirm anything: unsettled, not a mismatch.
    const lagging = await validateLive({ source: source.uri(), target: target.uri(), tables: [items], ...tuning }, { waitForTarget: async () => false });
    expect(lagging[0]!.checksum).toBe('unsettled');
    expect(lagging[0]!.mismatches).toEqual([]);
    expect(lagging[0]!.unsettledRows).toBe(2);

    // Writes stopped and applied: the strict check agrees with the live one, row for row.
    await targetCaughtUp();
    const [strict] = await validateTables({ source: source.uri(), target: target.uri(), tables: [items], sampleSize: 0, ...tuning });
    expect(strict!.mismatches.map((m) => [m.key.id, m.kind])).toEqual([
      ['4321', 'different'],
      ['4500', 'missing-on-target'],
    ]);
    expect(strict!.sourceRows).toBe(strict!.targetRows + 1);
  });
});

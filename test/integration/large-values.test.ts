/**
 * Large values and a large transaction through an online migration, with the worker's memory watched.
 *
 * Before the copy the source holds a 100 MB bytea and a 50 MB text. During SYNCING_WAL: one
 * transaction of 300,000 rows (~115 MB of text, far beyond the source's logical_decoding_work_mem of
 * 64 kB, so the walsender spills it and streams it after the commit), then another 100 MB bytea and
 * an update of the 50 MB text to a new 50 MB value. Then a manual cutover, and both sides compared
 * (md5 of each large value; a content hash of the 301,000 rows).
 *
 * The worker runs in this process. Its resident memory (RSS) is sampled every 100 ms, and its live
 * memory (V8 heap in use + external buffers, right after a forced full GC) every 2 s, per phase. RSS
 * alone also counts garbage V8 has not collected yet, which grows with the allocation rate: applying
 * a 300 MB transaction raised RSS by 164 MB without the forced GC; with it, by 32 MB, and live memory
 * by 4 MB.
 * The bounds, and why:
 *  - copy: RSS grows < 100 MB while 150 MB of values go through (COPY streams partial CopyData
 *    messages; holding the 100 MB bytea alone would exceed it);
 *  - the 300,000-row transaction: live memory grows < 64 MB (holding the transaction would take its
 *    115 MB of text, more as JS objects). The apply holds by design, each bounded in bytes: up to 2 MB
 *    of received messages waiting for the target, 2 MB of folded changes not yet written, 4 MB of the
 *    group's changes kept for a replay, one statement of 1 MB; measured alone (apply only, GC every
 *    300 ms) it grows 20-25 MB whether the transaction has 300,000 or 900,000 rows; here +9 MB (read
 *    after one GC instead of two, which still counted dead Buffers not yet swept: +60-70 MB);
 *  - the large values: RSS grows < 100 MB and live memory < 64 MB, while the 100 MB bytea alone is a
 *    200 MB replication message (hex text). The replication protocol carries one change as one
 *    message, which pg's protocol parser would hold whole, then the apply as a string, then pg as a
 *    query parameter: before activities/apply/spool.ts this phase grew live memory by 390-660 MB. Now
 *    a change over 8 MiB is read off the socket as it arrives, its large values go to spool files and
 *    from there through COPY into a temporary table the change's statement reads: measured +0 MB RSS,
 *    +25 MB live (the same as the phases without large values);
 *  - the whole run: RSS peak < 256 MB over the baseline (measured ~60 MB).
 * The measured numbers are printed.
 *
 * VALIDATING's sampled-row comparison is turned off here: it fetches sampled rows whole, as text, from
 * both sides (activities/validate/sql.ts rowsByKeySql), so these two rows alone took the worker to
 * 1.2-1.5 GB over the baseline. That is the validation's to fix (compare wide columns by hash), not the
 * copy's or the apply's, and it would double this test's time.
 */
import v8 from 'node:v8';
import vm from 'node:vm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { compareLsn } from '../../activities/apply/lsn';
import { fingerprint } from '../harness/compare';
import { startEnv, type TestEnv } from '../harness/env';

const MB = 1024 * 1024;
const ROWS = 300_000;
/** Each row's payload: this many md5s (32 characters each). */
const PAYLOAD_MD5S = 12;

let env: TestEnv;

beforeAll(async () => {
  env = await startEnv({ sourceSettings: { logical_decoding_work_mem: "'64kB'", max_wal_size: "'4GB'" } });
});

afterAll(async () => {
  await env?.stop();
});

/**
 * Resident set size sampled every 100 ms, and live memory (V8 heap in use + external buffers) right
 * after a forced full GC every 2 s: RSS also counts garbage V8 has not collected yet, which grows
 * with the allocation rate, not with what the worker holds. `phase()` starts a new phase.
 */
function memorySampler() {
  v8.setFlagsFromString('--expose-gc');
  const gc = vm.runInNewContext('gc') as () => void;
  const rss = () => process.memoryUsage().rss;
  const live = () => {
    // Twice: V8 frees dead ArrayBuffers' memory (Buffers, counted in `external`) on a concurrent
    // sweeper after a full GC; the next GC first finishes that sweep, so only then does `external`
    // stop counting buffers that are already garbage (one GC read up to ~50 MB of them in CI).
    gc();
    gc();
    const m = process.memoryUsage();
    return m.heapUsed + m.external;
  };
  type Phase = { name: string; start: number; peak: number; liveStart: number; livePeak: number; at: number };
  const phases: Phase[] = [];
  const fresh = (name: string): Phase => {
    const l = live();
    const r = rss();
    return { name, start: r, peak: r, liveStart: l, livePeak: l, at: Date.now() };
  };
  let current = fresh('baseline');
  const timer = setInterval(() => {
    const r = rss();
    if (r > current.peak) current.peak = r;
  }, 100);
  const liveTimer = setInterval(() => {
    const l = live();
    if (l > current.livePeak) current.livePeak = l;
  }, 2000);
  return {
    phase(name: string) {
      current.peak = Math.max(current.peak, rss());
      phases.push(current);
      current = fresh(name);
    },
    stop() {
      clearInterval(timer);
      clearInterval(liveTimer);
      this.phase('end');
      return phases;
    },
  };
}

/**
 * A bytea of `mb` MB: a 1 MB random block repeated (pglz looks back only 4 kB: it stays incompressible,
 * so the value really is that large in the TOAST table and the WAL), made different per call.
 */
const bigBytea = (mb: number) => `decode(repeat((SELECT string_agg(md5(random()::text || i), '') FROM generate_series(1, 32768 * 2) i), ${mb}), 'hex')`;
/** A text of `mb` MB with tabs, newlines, quotes, backslashes and non-ASCII. */
const bigText = (mb: number) =>
  `repeat((SELECT string_agg(md5(random()::text || i) || E'\\t"\\\\é€\\n''', '') FROM generate_series(1, 1024) i), ${Math.ceil((mb * MB) / (1024 * 42))})`; // 42 bytes a piece (é: 2, €: 3)

async function waitForApply(handle: Awaited<ReturnType<TestEnv['startMigration']>>, lsn: string, timeoutMs = 120_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const s = await handle.status();
    if (s.replication && compareLsn(s.replication.confirmedLsn, lsn) >= 0) return;
    if (['FAILED', 'CANCELLED', 'COMPLETED'].includes(s.phase)) throw new Error(`migration ended in ${s.phase}: ${s.error ?? ''}`);
    if (Date.now() > deadline) throw new Error(`apply did not reach ${lsn} in time (at ${s.replication?.confirmedLsn ?? 'nothing yet'})`);
    await new Promise((r) => setTimeout(r, 250));
  }
}

describe('large values and a large transaction', () => {
  // 300 s: over 400 MB of values go through copy and apply; on a loaded two-core machine it ran past the default 180 s.
  it('go through copy and apply exactly; memory does not grow with the transaction and holds one value at a time', { timeout: 300_000 }, async () => {
    const db = 'large';
    await env.source.createDatabase(db);
    await env.target.createDatabase(db);
    const src = await env.source.client(db);
    try {
      await src.query(`CREATE TABLE public.blobs (id int PRIMARY KEY, b bytea, t text)`);
      await src.query(`CREATE TABLE public.items (id bigint PRIMARY KEY, payload text NOT NULL)`);
      await src.query(`INSERT INTO public.blobs VALUES (1, ${bigBytea(100)}, ${bigText(50)})`);
      await src.query(`INSERT INTO public.items SELECT i, repeat(md5(i::text), ${PAYLOAD_MD5S}) FROM generate_series(1, 1000) i`);
      const sizes = await src.query<{ b: number; t: number }>(`SELECT octet_length(b) AS b, octet_length(t) AS t FROM public.blobs`);
      expect(sizes.rows[0]!.b).toBe(100 * MB);
      expect(sizes.rows[0]!.t).toBeGreaterThanOrEqual(50 * MB);

      const mem = memorySampler();
      mem.phase('copy');
      const m = await env.startMigration({
        source: env.source.uri(db),
        target: env.target.uri(db),
        cutover: { mode: 'manual' },
        validation: { sampleSize: 0 },
      });
      await m.waitForPhase('SYNCING_WAL', 120_000);

      mem.phase(`one transaction of ${ROWS} rows`);
      await src.query('BEGIN');
      await src.query(`INSERT INTO public.items SELECT i, repeat(md5(i::text), ${PAYLOAD_MD5S}) FROM generate_series(1001, ${1000 + ROWS}) i`);
      await src.query('COMMIT');
      await waitForApply(m, (await src.query<{ l: string }>('SELECT pg_current_wal_lsn()::text AS l')).rows[0]!.l);

      mem.phase('a 100 MB bytea inserted, the 50 MB text replaced');
      await src.query(`INSERT INTO public.blobs VALUES (2, ${bigBytea(100)}, NULL)`);
      await src.query(`UPDATE public.blobs SET t = ${bigText(50)} WHERE id = 1`);
      await waitForApply(m, (await src.query<{ l: string }>('SELECT pg_current_wal_lsn()::text AS l')).rows[0]!.l);

      mem.phase('cutover (counts only)');
      await m.signal('cutover');
      const report = await m.result();
      const phases = mem.stop();
      expect(report.phase).toBe('COMPLETED');

      // Content: every large value byte for byte, every row.
      const valuesSql = `SELECT id, md5(b) AS b, md5(t) AS t, octet_length(b) AS bl, octet_length(t) AS tl FROM public.blobs ORDER BY id`;
      const [a, b] = await Promise.all([env.source.query(valuesSql, [], db), env.target.query(valuesSql, [], db)]);
      expect(a).toHaveLength(2);
      expect(b).toEqual(a);
      const [fa, fb] = await Promise.all([fingerprint(env.source, db, 'public', 'items'), fingerprint(env.target, db, 'public', 'items')]);
      expect(fa.rows).toBe(ROWS + 1000);
      expect(fb).toEqual(fa);

      const baseline = phases[0]!.start;
      const rows = phases.slice(1).map((p, i) => ({
        phase: p.name,
        seconds: Math.round(((phases[i + 2]?.at ?? Date.now()) - p.at) / 100) / 10,
        'rss at start (MB)': Math.round(p.start / MB),
        'peak (MB)': Math.round(p.peak / MB),
        'peak over phase start (MB)': Math.round((p.peak - p.start) / MB),
        'peak over baseline (MB)': Math.round((p.peak - baseline) / MB),
        'live at start (MB)': Math.round(p.liveStart / MB),
        'live peak over start (MB)': Math.round((p.livePeak - p.liveStart) / MB),
      }));
      // eslint-disable-next-line no-console
      console.log(`worker process RSS, baseline ${Math.round(baseline / MB)} MB`);
      // eslint-disable-next-line no-console
      console.table(rows);

      const phase = (prefix: string) => phases.find((p) => p.name.startsWith(prefix))!;
      const copy = phase('copy');
      expect((copy.peak - copy.start) / MB, 'RSS growth during the copy').toBeLessThan(100);
      const txn = phase('one transaction');
      expect((txn.livePeak - txn.liveStart) / MB, 'live memory growth while applying the 300,000-row transaction').toBeLessThan(64);
      const big = phase('a 100 MB bytea');
      expect((big.peak - big.start) / MB, 'RSS growth while applying the large values').toBeLessThan(100);
      expect((big.livePeak - big.liveStart) / MB, 'live memory growth while applying the large values').toBeLessThan(64);
      const overall = Math.max(...phases.map((p) => p.peak));
      expect((overall - baseline) / MB, 'RSS peak over the baseline for the whole migration').toBeLessThan(256);
    } finally {
      await src.end();
    }
  });
});

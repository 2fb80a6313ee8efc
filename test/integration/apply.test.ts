/**
 * The WAL apply engine against real clusters (no Temporal): a source with a pgoutput slot, a target with
 * the same tables, writes of every kind on the source, then a content comparison of both sides.
 */
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { Client } from 'pg';
import { startCluster, type PgCluster } from '../harness/pg-cluster';
import { fingerprint as harnessFingerprint } from '../harness/compare';
import { lsnToBigInt } from '../../activities/apply/lsn';
import type { ApplyOptions, ApplyProgress, ApplyResult, ApplyTable } from '../../activities/apply/options';
import { APPLY_PROGRESS_DDL, readApplyProgress } from '../../activities/apply/progress';
import { runApply } from '../../activities/apply/run';
import { applyApplicationName } from '../../activities/apply/target';
import { requestApplyStop } from '../../activities/apply/stop-request';

let source: PgCluster;
let target: PgCluster;

beforeAll(async () => {
  [source, target] = await Promise.all([
    // Small decoding memory: big transactions spill to disk in the walsender, as they would in production.
    startCluster({ name: 'apply-src', settings: { logical_decoding_work_mem: "'64kB'" } }),
    startCluster({ name: 'apply-tgt' }),
  ]);
});

afterAll(async () => {
  await Promise.all([source?.destroy(), target?.destroy()]);
});

// Tests that turn a second writer on (runApply reads it at its start) leave it off for the next.
afterEach(() => {
  delete process.env.PG_DTS_APPLY_WRITERS;
});

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const q = (s: string) => `"${s.replace(/"/g, '""')}"`;

async function session(c: PgCluster): Promise<Client> {
  const cl = await c.client();
  // Same text rendering on both sides for the comparison, whatever the servers' defaults.
  await cl.query(`SET timezone = 'UTC'; SET extra_float_digits = 3; SET datestyle = 'ISO, YMD'; SET intervalstyle = postgres`);
  return cl;
}

async function fingerprint(c: PgCluster, table: string): Promise<{ rows: number; hash: string }> {
  const cl = await session(c);
  try {
    const r = await cl.query<{ n: string; h: string | null }>(
      `SELECT count(*)::text AS n, md5(string_agg(t::text, E'\\n' ORDER BY t::text)) AS h FROM ${table} t`,
    );
    return { rows: Number(r.rows[0]!.n), hash: r.rows[0]!.h ?? 'empty' };
  } finally {
    await cl.end();
  }
}

async function expectSame(pairs: [string, string][]): Promise<void> {
  for (const [s, t] of pairs) {
    const [a, b] = await Promise.all([fingerprint(source, s), fingerprint(target, t)]);
    expect({ table: t, ...b }).toEqual({ table: t, ...a });
  }
}

interface Run {
  result: Promise<ApplyResult>;
  progress: ApplyProgress[];
  abort: () => void;
  /** Resolves with the first progress report that satisfies `pred`. */
  until: (pred: (p: ApplyProgress) => boolean, timeoutMs?: number) => Promise<ApplyProgress>;
}

function startApply(opts: Omit<ApplyOptions, 'signal' | 'onProgress'>): Run {
  const ac = new AbortController();
  const progress: ApplyProgress[] = [];
  const waiters: { pred: (p: ApplyProgress) => boolean; resolve: (p: ApplyProgress) => void }[] = [];
  const result = runApply({
    progressIntervalMs: 200,
    ...opts,
    signal: ac.signal,
    onProgress: (p) => {
      progress.push(p);
      for (const w of [...waiters]) {
        if (w.pred(p)) {
          waiters.splice(waiters.indexOf(w), 1);
          w.resolve(p);
        }
      }
    },
  });
  result.catch(() => undefined);
  return {
    result,
    progress,
    abort: () => ac.abort(),
    until: (pred, timeoutMs = 120_000) =>
      new Promise<ApplyProgress>((resolve, reject) => {
        const last = progress.at(-1);
        if (last && pred(last)) return resolve(last);
        const t = setTimeout(() => reject(new Error(`apply did not get there in ${timeoutMs} ms; last: ${JSON.stringify(progress.at(-1))}`)), timeoutMs);
        waiters.push({ pred, resolve: (p) => (clearTimeout(t), resolve(p)) });
        // A failed apply never gets there: surface its error instead of a timeout.
        result.then(
          () => undefined,
          (e: unknown) => (clearTimeout(t), reject(e)),
        );
      }),
  };
}

/** An apply from where the target stands up to the fence `token`, then stopped: its result. */
async function applyUpTo(opts: Omit<ApplyOptions, 'signal' | 'onProgress'>, token: string): Promise<ApplyResult> {
  const run = startApply(opts);
  await run.until((p) => p.fenceToken === token);
  run.abort();
  return run.result;
}

async function slotState(slot: string): Promise<{ active: boolean; confirmed: string }> {
  const r = await source.query<{ active: boolean; confirmed: string }>(
    'SELECT active, confirmed_flush_lsn::text AS confirmed FROM pg_replication_slots WHERE slot_name = $1',
    [slot],
  );
  return r[0]!;
}

/** Samples "slot confirmed ≤ target applied" until stopped (confirmed is read first: it only grows). */
function watchConfirmedNeverAhead(slot: string) {
  let stop = false;
  const violations: string[] = [];
  let samples = 0;
  let maxConfirmed = 0n;
  const done = (async () => {
    const s = await source.client();
    const t = await target.client();
    try {
      // A failing test tears the clusters down under us: end quietly then.
      while (!stop) {
        const c = (await s.query<{ lsn: string }>('SELECT confirmed_flush_lsn::text AS lsn FROM pg_replication_slots WHERE slot_name = $1', [slot])).rows[0]?.lsn;
        const p = await readApplyProgress(t, slot).catch(() => undefined);
        if (c && p) {
          samples++;
          if (lsnToBigInt(c) > maxConfirmed) maxConfirmed = lsnToBigInt(c);
          if (lsnToBigInt(c) > lsnToBigInt(p.appliedLsn)) violations.push(`confirmed ${c} > applied ${p.appliedLsn}`);
        }
        await sleep(20);
      }
    } catch {
      stop = true;
    } finally {
      await s.end().catch(() => undefined);
      await t.end().catch(() => undefined);
    }
  })();
  return {
    async stop() {
      stop = true;
      await done;
      return { violations, samples, maxConfirmed };
    },
  };
}

const map = (names: string[], targetSchema = 'dst', suffix = '_m'): ApplyTable[] =>
  names.map((n) => ({ source: { schema: 'public', name: n }, target: { schema: targetSchema, name: n + suffix } }));

describe('runApply', () => {
  const TABLES = ['pk_t', 'uniq_t', 'full_t', 'toast_t', 'bulk_t', 'trunc_a', 'trunc_b'];
  const pairs = (): [string, string][] => TABLES.map((n) => [`public.${n}`, `dst.${n}_m`]);

  it('applies inserts, updates, deletes, TOAST, truncates, a 200k-row transaction and the fence exactly', async () => {
    const ddl = (schema: string, sfx: string) => {
      const t = (n: string) => `${q(schema)}.${q(n + sfx)}`;
      return `
        CREATE TABLE ${t('pk_t')} (
          id int GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
          t text, ts timestamptz, tsn timestamp, n numeric, f float8, f4 real, j jsonb, b bytea, arr int[], d date, iv interval,
          twice int GENERATED ALWAYS AS (id * 2) STORED);
        CREATE TABLE ${t('uniq_t')} (a int NOT NULL, b text NOT NULL, v text);
        CREATE UNIQUE INDEX ${q('uniq_ab' + sfx)} ON ${t('uniq_t')} (a, b);
        ALTER TABLE ${t('uniq_t')} REPLICA IDENTITY USING INDEX ${q('uniq_ab' + sfx)};
        CREATE TABLE ${t('full_t')} (a int, j json, p point, x xml);
        ALTER TABLE ${t('full_t')} REPLICA IDENTITY FULL;
        CREATE TABLE ${t('toast_t')} (id int PRIMARY KEY, small text, big text, seq bigint GENERATED ALWAYS AS IDENTITY);
        ALTER TABLE ${t('toast_t')} ALTER big SET STORAGE EXTERNAL;
        CREATE TABLE ${t('bulk_t')} (id bigint PRIMARY KEY, v text);
        CREATE TABLE ${t('trunc_a')} (id int PRIMARY KEY);
        CREATE TABLE ${t('trunc_b')} (id int PRIMARY KEY, a int REFERENCES ${t('trunc_a')});`;
    };
    await source.query(ddl('public', ''));
    await target.query(`CREATE SCHEMA dst; ${ddl('dst', '_m')}`);
    // Would corrupt or reject every replicated row if triggers fired on the target.
    await target.query(`
      CREATE FUNCTION dst.boom() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'trigger fired'; END $$;
      CREATE TRIGGER boom BEFORE INSERT OR UPDATE OR DELETE ON dst.pk_t_m FOR EACH ROW EXECUTE FUNCTION dst.boom();`);
    await source.query(`CREATE PUBLICATION pub1 FOR TABLE ${TABLES.join(', ')}`);
    await source.query(`SELECT pg_create_logical_replication_slot('s1', 'pgoutput')`);

    // Server defaults that would garble text values if the walsender's output were parsed by a target
    // session with its own defaults: the apply must pin both sides to one unambiguous format.
    const alterSystem = async (c: PgCluster, settings: Record<string, string>) => {
      for (const [k, v] of Object.entries(settings)) await c.query(`ALTER SYSTEM SET ${k} = '${v}'`);
      await c.query('SELECT pg_reload_conf()');
    };
    await alterSystem(source, { datestyle: 'SQL, DMY', timezone: 'America/New_York', intervalstyle: 'sql_standard', bytea_output: 'escape', extra_float_digits: '0', lc_monetary: 'C' });
    await alterSystem(target, { datestyle: 'German', timezone: 'Asia/Kolkata', intervalstyle: 'iso_8601', bytea_output: 'escape' });
    const src = await source.client();
    await src.query(`
      INSERT INTO pk_t (t, ts, tsn, n, f, f4, j, b, arr, d, iv) VALUES
        (E'héllo 🐘 "quoted" \\\\ back\\ttab\\nline', '2024-02-29 23:59:59.123456+05:30', '2024-01-02 03:04:05.000001',
         1234567890123456789012345678901234567890.0123456789, 'NaN', 'Infinity', '{"a": [1, 2.50, null], "b": "x"}',
         '\\x00ff10', '{1,NULL,3}', 'infinity', '1 year 2 mons 3 days 04:05:06.789'),
        ('', '-infinity', 'infinity', 'NaN', '-Infinity', '-0', 'null', '', '{}', '2000-01-31', '-1 day'),
        (NULL, '1999-12-31 23:59:59.999999+00', '0001-01-01 00:00:00', -0.0000000000000000000000000000000000000001,
         1.7976931348623157e308, 1.17549435e-38, '[]', NULL, NULL, NULL, NULL),
        ('x', '2000-01-01 00:00:00.5+14', NULL, 0.1, 0.1, 0.1, '{"k": "\\u00e9"}', '\\x', '{{1,2},{3,4}}', '1999-01-08', '00:00:00.000001')`);
    await src.query(`INSERT INTO uniq_t SELECT g, 'k' || g, 'v' || g FROM generate_series(1, 20) g`);
    await src.query(`INSERT INTO full_t VALUES (1, '{"a": 1}', '(1,2)', '<x/>'), (1, '{"a": 1}', '(1,2)', '<x/>'), (1, '{"a": 1}', '(1,2)', '<x/>'), (2, NULL, NULL, NULL), (2, NULL, NULL, NULL)`);
    await src.query(`INSERT INTO toast_t SELECT g, 's' || g, (SELECT string_agg(md5(g::text || i::text), '') FROM generate_series(1, 1000) i) FROM generate_series(1, 5) g`);
    // Updates: plain, key changes (old key 'K'), unchanged TOAST ('u'), duplicates under FULL.
    await src.query(`UPDATE pk_t SET t = t || '!', n = n * 3, ts = ts + interval '1 microsecond' WHERE id IN (1, 2)`);
    await src.query(`UPDATE uniq_t SET a = a + 1000 WHERE a <= 5`);
    await src.query(`UPDATE uniq_t SET v = NULL WHERE a BETWEEN 6 AND 8`);
    await src.query(`UPDATE toast_t SET small = 'changed' WHERE id = 2`);
    await src.query(`UPDATE toast_t SET id = 100 WHERE id = 3`);
    await src.query(`UPDATE toast_t SET big = big || 'tail' WHERE id = 4`);
    await src.query(`UPDATE full_t SET a = 10 WHERE ctid = (SELECT ctid FROM full_t WHERE a = 1 LIMIT 1)`);
    await src.query(`DELETE FROM full_t WHERE ctid = (SELECT ctid FROM full_t WHERE a = 2 LIMIT 1)`);
    // Identity values that change: the key (moved row) and a non-key identity column beside TOASTed data.
    await src.query(`UPDATE pk_t SET id = DEFAULT WHERE id = 4`);
    await src.query(`UPDATE toast_t SET seq = DEFAULT, small = 'reseq' WHERE id = 2`);
    await src.query(`UPDATE toast_t SET seq = DEFAULT WHERE id = 4`);
    // Interleaved transactions apply in commit order: A reads what B committed after A began.
    const other = await source.client();
    await src.query(`BEGIN; INSERT INTO uniq_t VALUES (500, 'a', 'A')`);
    await other.query(`BEGIN; INSERT INTO uniq_t VALUES (501, 'b', 'B'); COMMIT`);
    await src.query(`UPDATE uniq_t SET v = 'A saw B' WHERE a = 501; COMMIT`);
    await other.end();
    // Deletes, a rollback, savepoints.
    await src.query(`DELETE FROM pk_t WHERE id = 3`);
    await src.query(`DELETE FROM uniq_t WHERE a IN (1001, 9)`);
    await src.query(`DELETE FROM toast_t WHERE id = 5`);
    await src.query(`BEGIN; INSERT INTO pk_t (t) VALUES ('rolled back'); DELETE FROM uniq_t; ROLLBACK`);
    await src.query(`BEGIN; INSERT INTO pk_t (t) VALUES ('kept 1'); SAVEPOINT s; INSERT INTO pk_t (t) VALUES ('undone');
                     UPDATE uniq_t SET v = 'undone'; ROLLBACK TO s; INSERT INTO pk_t (t) VALUES ('kept 2'); COMMIT`);
    // TRUNCATE of two tables (one references the other), then new rows.
    await src.query(`INSERT INTO trunc_a SELECT generate_series(1, 10); INSERT INTO trunc_b SELECT g, g FROM generate_series(1, 10) g`);
    await src.query(`TRUNCATE trunc_b, trunc_a`);
    await src.query(`INSERT INTO trunc_a VALUES (42); INSERT INTO trunc_b VALUES (1, 42)`);
    // Many small transactions, then one of 200k rows (far over logical_decoding_work_mem).
    await src.query(`DO $$ BEGIN FOR i IN 1..300 LOOP INSERT INTO bulk_t VALUES (-i, 'small ' || i); COMMIT; END LOOP; END $$`);
    await src.query(`INSERT INTO bulk_t SELECT g, md5(g::text) FROM generate_series(1, 200000) g`);
    await src.query(`BEGIN; UPDATE bulk_t SET v = v || '+' WHERE id % 10 = 0; DELETE FROM bulk_t WHERE id % 10 = 1; COMMIT`);
    const fence = await src.query<{ lsn: string }>(`SELECT pg_logical_emit_message(true, 'pg-dts-fence', 'tok1')::text AS lsn`);
    await src.end();

    const watch = watchConfirmedNeverAhead('s1');
    const t0 = Date.now();
    const run = startApply({ source: source.uri(), target: target.uri(), slot: 's1', publication: 'pub1', tables: map(TABLES) });
    const atFence = await run.until((p) => p.fenceToken === 'tok1');
    const seconds = (Date.now() - t0) / 1000;
    // An idle source shows no lag once the keepalives say so.
    const idle = await run.until((p) => p.lagBytes === 0, 30_000);
    run.abort();
    const result = await run.result;
    const { violations, samples } = await watch.stop();

    console.log(`apply: ${atFence.changes} changes in ${atFence.transactions} transactions in ${seconds.toFixed(1)} s (${Math.round(atFence.changes / seconds)} changes/s)`);
    expect(atFence.transactions).toBeGreaterThan(300);
    expect(lsnToBigInt(atFence.appliedLsn)).toBeGreaterThan(lsnToBigInt(fence.rows[0]!.lsn));
    expect(idle.lagBytes).toBe(0);
    expect(result.fenceToken).toBe('tok1');
    await expectSame(pairs());

    // Spot checks of exactness beyond the hash.
    const spot = async (c: PgCluster, table: string) => {
      const cl = await session(c);
      try {
        return (await cl.query(`SELECT ts::text, n::text, f::text, f4::text, b::text, iv::text FROM ${table} WHERE id = 1`)).rows[0];
      } finally {
        await cl.end();
      }
    };
    const tgtRow = await spot(target, 'dst.pk_t_m');
    expect(tgtRow).toEqual(await spot(source, 'public.pk_t'));
    expect(tgtRow).toMatchObject({ ts: '2024-02-29 18:29:59.123457+00', n: '3703703670370370367037037036703703703670.0370370367', f: 'NaN' });
    const dupCount = await target.query<{ n: string }>(`SELECT count(*)::text AS n FROM dst.full_t_m WHERE a = 1`);
    expect(dupCount[0]!.n).toBe('2');

    const prog = await readProgress('s1');
    const slot = await slotState('s1');
    expect(prog?.fenceToken).toBe('tok1');
    // Stopping confirms everything applied: the slot keeps no WAL the target already has.
    expect(slot.confirmed).toBe(prog!.appliedLsn);
    expect(result.appliedLsn).toBe(prog!.appliedLsn);
    expect(lsnToBigInt(slot.confirmed)).toBeGreaterThan(lsnToBigInt(fence.rows[0]!.lsn));
    expect(slot.active).toBe(false);
    expect(samples).toBeGreaterThan(5);
    expect(violations).toEqual([]);

    // A restart resumes after the fence: nothing is applied twice.
    const again = startApply({ source: source.uri(), target: target.uri(), slot: 's1', publication: 'pub1', tables: map(TABLES) });
    await sleep(1500);
    again.abort();
    const r2 = await again.result;
    expect(r2.transactions).toBe(0);
    await expectSame(pairs());
    await source.query(`SELECT pg_drop_replication_slot('s1')`);
  });

  it('resumes exactly once after the target backend is killed, an abort, and a dropped walsender', async () => {
    await source.query(`
      CREATE TABLE acc (id int PRIMARY KEY, v bigint NOT NULL);
      CREATE TABLE dups (a int, b text);
      ALTER TABLE dups REPLICA IDENTITY FULL;
      INSERT INTO acc SELECT g, 0 FROM generate_series(0, 49) g;`);
    await target.query(`
      CREATE TABLE dst.acc_m (id int PRIMARY KEY, v bigint NOT NULL);
      CREATE TABLE dst.dups_m (a int, b text);
      INSERT INTO dst.acc_m SELECT g, 0 FROM generate_series(0, 49) g;`);
    await source.query(`CREATE PUBLICATION pub2 FOR TABLE acc, dups`);
    await source.query(`SELECT pg_create_logical_replication_slot('s2', 'pgoutput')`);
    const tables = map(['acc', 'dups']);
    const opts = { source: source.uri(), target: target.uri(), slot: 's2', publication: 'pub2', tables };

    // Continuous writes: small transactions with duplicates (a double apply would show as extra rows),
    // and every 25th a bigger one so that interruptions land inside transactions too.
    let writing = true;
    let written = 0;
    const writer = (async () => {
      const c = await source.client();
      try {
        for (let i = 0; writing; i++) {
          const big = i % 25 === 0 ? `INSERT INTO dups SELECT ${i % 10}, 'bulk' FROM generate_series(1, 3000);` : '';
          const del = i % 7 === 0 ? `DELETE FROM dups WHERE ctid = (SELECT ctid FROM dups WHERE a = ${i % 10} LIMIT 1);` : '';
          await c.query(`BEGIN; INSERT INTO dups VALUES (${i % 10}, 'x'), (${i % 10}, 'x'); UPDATE acc SET v = v + ${i} WHERE id = ${i % 50}; ${big} ${del} COMMIT`);
          written++;
          if (i % 5 === 0) await sleep(2);
        }
      } finally {
        await c.end().catch(() => undefined);
      }
    })();
    writer.catch(() => undefined);
    const watch = watchConfirmedNeverAhead('s2');

    // 1. The target session dies mid-stream: the apply fails; nothing half-applied remains.
    const run1 = startApply(opts);
    await run1.until((p) => p.transactions >= 30);
    await target.query(`SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1`, [applyApplicationName('s2')]);
    const e1 = (await run1.result.catch((e: Error) => e)) as Error;
    console.log(`killed target session: ${e1.message}`);
    expect(e1).toBeInstanceOf(Error);
    const afterKill = await readProgress('s2');

    // 2. Restarted at once (the old walsender has released the slot), then stopped by abort mid-stream.
    const run2 = startApply(opts);
    await run2.until((p) => p.transactions >= 30);
    run2.abort();
    const r2 = await run2.result;
    expect(lsnToBigInt(r2.appliedLsn)).toBeGreaterThan(lsnToBigInt(afterKill!.appliedLsn));
    expect((await slotState('s2')).active).toBe(false);

    // 3. The walsender on the source is terminated: the apply fails cleanly.
    const run3 = startApply(opts);
    await run3.until((p) => p.transactions >= 30);
    await source.query(`SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE slot_name = 's2' AND active_pid IS NOT NULL`);
    const e3 = (await run3.result.catch((e: Error) => e)) as Error;
    console.log(`killed walsender: ${e3.message}`);
    expect(e3.message).toMatch(/replication|source/i);

    // 4. Final run: writes stop, the fence passes, and both sides are identical.
    const run4 = startApply(opts);
    await run4.until((p) => p.transactions >= 10);
    writing = false;
    await writer;
    await source.query(`SELECT pg_logical_emit_message(true, 'pg-dts-fence', 'tok2')`);
    await run4.until((p) => p.fenceToken === 'tok2');
    run4.abort();
    await run4.result;
    const { violations, samples, maxConfirmed } = await watch.stop();

    console.log(`resume test: ${written} source transactions, ${samples} samples of confirmed <= applied`);
    expect(written).toBeGreaterThan(100);
    await expectSame([
      ['public.acc', 'dst.acc_m'],
      ['public.dups', 'dst.dups_m'],
    ]);
    expect(samples).toBeGreaterThan(20);
    expect(maxConfirmed).toBeGreaterThan(0n);
    expect(violations).toEqual([]);
    await source.query(`SELECT pg_drop_replication_slot('s2')`);
  });

  it('stops with clear errors: constraint failure, DDL on the source, an unmapped table, no superuser', async () => {
    await source.query(`
      CREATE TABLE err_t (id int PRIMARY KEY, v text);
      CREATE TABLE ddl_t (id int PRIMARY KEY, v text);
      CREATE TABLE unmapped_t (id int PRIMARY KEY);
      CREATE PUBLICATION pub3 FOR TABLE err_t, ddl_t, unmapped_t;`);
    await source.query(`SELECT pg_create_logical_replication_slot('s3', 'pgoutput')`);
    await target.query(`
      CREATE TABLE dst.err_t_m (id int PRIMARY KEY, v text CONSTRAINT no_secrets CHECK (v <> 'secret-value'));
      CREATE TABLE dst.ddl_t_m (id int PRIMARY KEY, v text);`);
    await source.query(`INSERT INTO err_t VALUES (1, 'secret-value')`);
    await source.query(`ALTER TABLE ddl_t ADD COLUMN extra int; INSERT INTO ddl_t VALUES (1, 'a', 2)`);
    await source.query(`INSERT INTO unmapped_t VALUES (1)`);
    await source.query(`SELECT pg_logical_emit_message(true, 'pg-dts-fence', 'tok3')`);
    const opts = { source: source.uri(), target: target.uri(), slot: 's3', publication: 'pub3', tables: map(['err_t', 'ddl_t']) };

    const r1 = startApply(opts);
    const e1 = (await r1.result.catch((e: Error) => e)) as Error;
    expect(e1.message).toMatch(/INSERT into dst\.err_t_m failed: .*no_secrets/);
    expect(e1.message).not.toContain('secret-value');
    expect((await slotState('s3')).active).toBe(false);

    await target.query(`ALTER TABLE dst.err_t_m DROP CONSTRAINT no_secrets`);
    const e2 = (await startApply(opts).result.catch((e: Error) => e)) as Error;
    expect(e2.message).toContain('source table public.ddl_t no longer matches target table dst.ddl_t_m');
    expect(e2.message).toContain('only on the source: extra');

    await target.query(`ALTER TABLE dst.ddl_t_m ADD COLUMN extra int`);
    const e3 = (await startApply(opts).result.catch((e: Error) => e)) as Error;
    expect(e3.message).toContain('INSERT on source table public.unmapped_t, which is not one of the migrated tables');

    await target.query(`CREATE TABLE dst.unmapped_t_m (id int PRIMARY KEY)`);
    const r4 = startApply({ ...opts, tables: map(['err_t', 'ddl_t', 'unmapped_t']) });
    await r4.until((p) => p.fenceToken === 'tok3');
    r4.abort();
    await r4.result;
    await expectSame([
      ['public.err_t', 'dst.err_t_m'],
      ['public.ddl_t', 'dst.ddl_t_m'],
      ['public.unmapped_t', 'dst.unmapped_t_m'],
    ]);

    // A target user that may not switch off triggers is refused with what to do about it.
    await target.query(`CREATE ROLE app LOGIN; GRANT ALL ON SCHEMA dst TO app; GRANT CREATE ON DATABASE postgres TO app`);
    const appUri = target.uri().replace('postgres@', 'app@');
    const e5 = (await startApply({ ...opts, target: appUri }).result.catch((e: Error) => e)) as Error;
    expect(e5.message).toMatch(/session_replication_role.*superuser/);

    // Without replica mode (replicaRole: false) whatever fires on a target table would fire for
    // replicated rows: a user's trigger, a foreign key (its triggers on either end). Refused, named;
    // a trigger enabled for replica mode only does not fire there.
    await target.query(
      `CREATE FUNCTION dst.noop() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NEW; END $$;
       CREATE TRIGGER user_trg BEFORE INSERT ON dst.err_t_m FOR EACH ROW EXECUTE FUNCTION dst.noop()`,
    );
    const e6 = (await startApply({ ...opts, replicaRole: false }).result.catch((e: Error) => e)) as Error;
    expect(e6.message).toContain('the target tables carry trigger user_trg on dst.err_t_m');
    await target.query(`ALTER TABLE dst.err_t_m ENABLE REPLICA TRIGGER user_trg; ALTER TABLE dst.ddl_t_m ADD CONSTRAINT ddl_fk FOREIGN KEY (id) REFERENCES dst.err_t_m (id) NOT VALID`);
    const e7 = (await startApply({ ...opts, replicaRole: false }).result.catch((e: Error) => e)) as Error;
    expect(e7.message).toContain('the target tables carry foreign key ddl_fk of dst.ddl_t_m:');
    expect(e7.message).not.toContain('user_trg');
    await target.query(`ALTER TABLE dst.ddl_t_m DROP CONSTRAINT ddl_fk; DROP TRIGGER user_trg ON dst.err_t_m`);
    await source.query(`SELECT pg_drop_replication_slot('s3')`);
  });

  it('leaves no session behind when its start fails on either side or for want of the tables', async () => {
    await source.query(`CREATE TABLE start_t (id int PRIMARY KEY); CREATE TABLE start_t2 (id int PRIMARY KEY)`);
    await source.query(`SELECT pg_create_logical_replication_slot('s_start', 'pgoutput')`);
    await target.query(`CREATE SCHEMA IF NOT EXISTS dst; CREATE TABLE dst.start_t_m (id int PRIMARY KEY); CREATE TABLE dst.start_t2_m (id int PRIMARY KEY)`);
    // With a second writer: its session too.
    process.env.PG_DTS_APPLY_WRITERS = '2';
    const ours = async () => {
      // Closed sessions leave the servers' views a moment after the client has gone.
      for (let i = 0; ; i++) {
        const [t] = await target.query<{ n: number }>(`SELECT count(*)::int AS n FROM pg_stat_activity WHERE application_name = ANY($1)`, [
          [applyApplicationName('s_start'), applyApplicationName('s_start', 2)],
        ]);
        const [m] = await source.query<{ n: number }>(`SELECT count(*)::int AS n FROM pg_stat_activity WHERE application_name = 'pg-dts apply monitor'`);
        if ((t!.n === 0 && m!.n === 0) || i === 40) return { target: t!.n, monitor: m!.n };
        await sleep(50);
      }
    };
    const opts = { source: source.uri(), target: target.uri(), slot: 's_start', publication: 'no_such_pub', tables: map(['start_t', 'start_t2']) };
    // The source is out of reach: the target's session, opened at the same time, is closed.
    const e1 = (await startApply({ ...opts, source: source.uri().replace(`:${source.port}/`, ':1/') }).result.catch((e: Error) => e)) as Error;
    expect(e1.message).toContain('cannot connect to the source');
    expect(await ours()).toEqual({ target: 0, monitor: 0 });
    // Both connected, the source's checks fail (no publication) while the target's run.
    const e2 = (await startApply(opts).result.catch((e: Error) => e)) as Error;
    expect(e2.message).toBe('publication no_such_pub does not exist on the source');
    expect(await ours()).toEqual({ target: 0, monitor: 0 });
    // The tables never come (the plan could not be read): both connections are closed.
    const ac = new AbortController();
    const e3 = (await runApply({ ...opts, tables: Promise.reject(new Error('the plan is gone')), signal: ac.signal }).catch((e: Error) => e)) as Error;
    expect(e3.message).toBe('the plan is gone');
    expect(await ours()).toEqual({ target: 0, monitor: 0 });
    await source.query(`SELECT pg_drop_replication_slot('s_start')`);
  });

  it('applies to a partitioned table published through its root, with REPLICA IDENTITY FULL duplicates', async () => {
    const ddl = (t: string) => `
      CREATE TABLE ${t} (id int, k int, v text) PARTITION BY RANGE (k);
      CREATE TABLE ${t}_1 PARTITION OF ${t} FOR VALUES FROM (0) TO (10);
      CREATE TABLE ${t}_2 PARTITION OF ${t} FOR VALUES FROM (10) TO (20);`;
    await source.query(`${ddl('part_t')}
      ALTER TABLE part_t REPLICA IDENTITY FULL; ALTER TABLE part_t_1 REPLICA IDENTITY FULL; ALTER TABLE part_t_2 REPLICA IDENTITY FULL;
      CREATE PUBLICATION pub5 FOR TABLE part_t WITH (publish_via_partition_root = true);`);
    await source.query(`SELECT pg_create_logical_replication_slot('s5', 'pgoutput')`);
    await target.query(`CREATE SCHEMA IF NOT EXISTS dst; ${ddl('dst.part_t_m')}`);
    await source.query(`INSERT INTO part_t VALUES (1, 5, 'd'), (1, 5, 'd'), (1, 5, 'd'), (2, 15, 'e'), (2, 15, 'e')`);
    // Same ctid in both partitions is likely here: only (tableoid, ctid) names one row.
    await source.query(`UPDATE part_t SET k = 16 WHERE ctid = (SELECT ctid FROM part_t_1 WHERE id = 1 LIMIT 1) AND tableoid = 'part_t_1'::regclass`);
    await source.query(`DELETE FROM part_t WHERE ctid = (SELECT ctid FROM part_t_2 WHERE id = 2 LIMIT 1) AND tableoid = 'part_t_2'::regclass`);
    await source.query(`UPDATE part_t SET v = 'changed' WHERE ctid = (SELECT ctid FROM part_t_1 LIMIT 1) AND tableoid = 'part_t_1'::regclass`);
    await expectSameAfterFence('s5', 'pub5', ['part_t'], 'tok5', [
      ['public.part_t_1', 'dst.part_t_m_1'],
      ['public.part_t_2', 'dst.part_t_m_2'],
    ]);
    await source.query(`TRUNCATE part_t; INSERT INTO part_t VALUES (3, 3, 'after')`);
    await expectSameAfterFence('s5', 'pub5', ['part_t'], 'tok6', [
      ['public.part_t_1', 'dst.part_t_m_1'],
      ['public.part_t_2', 'dst.part_t_m_2'],
    ]);
    await source.query(`SELECT pg_drop_replication_slot('s5')`);
  });

  it('keeps the walsender alive while idle and while a target statement is blocked (wal_sender_timeout 1s)', async () => {
    await source.query(`ALTER SYSTEM SET wal_sender_timeout = '1s'`);
    await source.query(`SELECT pg_reload_conf()`);
    try {
      await source.query(`CREATE TABLE hb_t (id int PRIMARY KEY); CREATE PUBLICATION pub4 FOR TABLE hb_t`);
      await source.query(`SELECT pg_create_logical_replication_slot('s4', 'pgoutput')`);
      await target.query(`CREATE SCHEMA IF NOT EXISTS dst; CREATE TABLE dst.hb_t_m (id int PRIMARY KEY)`);
      const count = async () => Number((await target.query<{ n: string }>('SELECT count(*)::text AS n FROM dst.hb_t_m'))[0]!.n);
      const waitCount = async (n: number) => {
        for (let i = 0; i < 300 && (await count()) < n; i++) await sleep(50);
        expect(await count()).toBe(n);
      };
      // Progress is rare here: only keepalive answers and status updates keep the connection.
      const run = startApply({ source: source.uri(), target: target.uri(), slot: 's4', publication: 'pub4', tables: map(['hb_t']), progressIntervalMs: 30_000 });
      let settled = false;
      run.result.then(
        () => (settled = true),
        () => (settled = true),
      );
      await source.query(`INSERT INTO hb_t VALUES (1)`);
      await waitCount(1);
      await sleep(4000); // idle: several timeouts long
      await source.query(`INSERT INTO hb_t VALUES (2)`);
      await waitCount(2);

      // A target lock holds the apply inside a statement (stream paused) for several timeouts.
      const locker = await target.client();
      await locker.query(`BEGIN; LOCK TABLE dst.hb_t_m IN ACCESS EXCLUSIVE MODE`);
      await source.query(`INSERT INTO hb_t VALUES (3)`);
      await sleep(4000);
      expect(await source.query(`SELECT 1 FROM pg_stat_activity WHERE application_name = 'pg-dts walsender s4'`)).toHaveLength(1);
      await locker.query('COMMIT');
      await locker.end();
      await waitCount(3);

      expect(settled).toBe(false);
      run.abort();
      expect((await run.result).transactions).toBe(3);
    } finally {
      await source.query(`ALTER SYSTEM RESET wal_sender_timeout`);
      await source.query(`SELECT pg_reload_conf()`);
      await source.query(`SELECT pg_drop_replication_slot('s4')`).catch(() => undefined);
    }
  });
});

describe('the cutover stops the apply past its fence (stop-request.ts)', () => {
  it('stops at a request naming its slot and the fence it committed, and ignores any other or an earlier run\'s', async () => {
    await source.query(`CREATE TABLE sr_t (id int PRIMARY KEY, v text); CREATE PUBLICATION pubsr FOR TABLE sr_t`);
    await source.query(`SELECT pg_create_logical_replication_slot('ssr', 'pgoutput')`);
    await target.query(`CREATE SCHEMA IF NOT EXISTS dst; CREATE TABLE dst.sr_t_m (id int PRIMARY KEY, v text)`);
    try {
      await source.query(`INSERT INTO sr_t SELECT g, 'r' || g FROM generate_series(1, 100) g`);
      // Progress every 30 s: the test sees the stop by the run's end, not by a report.
      const run = startApply({ source: source.uri(), target: target.uri(), slot: 'ssr', publication: 'pubsr', tables: map(['sr_t']), progressIntervalMs: 30_000 });
      let ended = false;
      void run.result.then(() => void (ended = true), () => void (ended = true));
      await run.until((p) => p.transactions >= 1);
      // Before its fence: a request naming the token it will commit is ignored.
      await requestApplyStop(target.uri(), 'ssr', 'toksr');
      await sleep(500);
      expect(ended).toBe(false);
      await source.query(`SELECT pg_logical_emit_message(true, 'pg-dts-fence', 'toksr')`);
      await run.until((p) => p.fenceToken === 'toksr');
      // Another slot's request, and one naming another fence: ignored.
      await requestApplyStop(target.uri(), 'other', 'toksr');
      await requestApplyStop(target.uri(), 'ssr', 'tokother');
      await sleep(500);
      expect(ended).toBe(false);
      // Its own: a clean stop at once, no cancellation needed.
      const asked = Date.now();
      await requestApplyStop(target.uri(), 'ssr', 'toksr');
      const r = await Promise.race([run.result, sleep(5_000).then(() => Promise.reject(new Error('the apply did not stop at its request')))]);
      expect(Date.now() - asked).toBeLessThan(2_000);
      expect(r.fenceToken).toBe('toksr');
      expect((await slotState('ssr')).active).toBe(false);
      await expectSame([['sr_t', 'dst.sr_t_m']]);
      // A later run (the attempt abandoned, the apply resumed) does not obey a late request for the
      // fence an earlier run committed.
      const again = startApply({ source: source.uri(), target: target.uri(), slot: 'ssr', publication: 'pubsr', tables: map(['sr_t']), progressIntervalMs: 30_000 });
      let againEnded = false;
      void again.result.then(() => void (againEnded = true), () => void (againEnded = true));
      await again.until((p) => p.fenceToken === 'toksr');
      await requestApplyStop(target.uri(), 'ssr', 'toksr');
      await sleep(500);
      expect(againEnded).toBe(false);
      again.abort();
      await again.result;
    } finally {
      await source.query(`SELECT pg_drop_replication_slot('ssr')`).catch(() => undefined);
    }
  });
});

describe('runApply groups source transactions', () => {
  it('cuts a group at the fence, replays a group whose set-based write trips a unique index, and rolls a failed group back whole', async () => {
    const ddl = (t: string, extra = '') => `CREATE TABLE ${t} (id int PRIMARY KEY, u int NOT NULL, v text${extra}); CREATE UNIQUE INDEX ON ${t} (u);`;
    await source.query(`${ddl('grp_t')} CREATE TABLE grp_full (a int, b text); ALTER TABLE grp_full REPLICA IDENTITY FULL;
      CREATE PUBLICATION pub6 FOR TABLE grp_t, grp_full`);
    await source.query(`SELECT pg_create_logical_replication_slot('s6', 'pgoutput')`);
    await target.query(`CREATE SCHEMA IF NOT EXISTS dst; ${ddl('dst.grp_t_m', `, CONSTRAINT no_poison CHECK (v IS DISTINCT FROM 'poison')`)} CREATE TABLE dst.grp_full_m (a int, b text)`);
    const opts = {
      source: source.uri(),
      target: target.uri(),
      slot: 's6',
      publication: 'pub6',
      tables: map(['grp_t', 'grp_full']),
      // One group for everything between two fences, whatever the timing.
      maxGroupChanges: 1_000_000,
      maxGroupMs: 60_000,
      firstGroupMs: 60_000,
      groupIdleMs: 1_000,
    };
    const lsn = async (sql: string) => (await source.query<{ l: string }>(sql))[0]!.l;
    const src = await source.client();
    // Group 1: 200 one-row transactions (and a FULL table, applied change by change), then fence g0.
    for (let i = 1; i <= 200; i++) await src.query(`INSERT INTO grp_t VALUES (${i}, ${i}, 'v${i}'); INSERT INTO grp_full VALUES (${i % 7}, 'x')`);
    await src.query(`BEGIN; INSERT INTO grp_t VALUES (1000, 1000, 'at the fence')`);
    const g0Msg = (await src.query<{ l: string }>(`SELECT pg_logical_emit_message(true, 'pg-dts-fence', 'g0')::text AS l`)).rows[0]!.l;
    await src.query('COMMIT');
    const g0After = await lsn('SELECT pg_current_wal_insert_lsn()::text AS l');
    // Group 2: rows 1 and 2 swap their unique u (through a third value), updates and deletes of the
    // same keys in other transactions, a FULL-table delete; as one set-based UPDATE the swap collides.
    await src.query(`BEGIN; UPDATE grp_t SET u = -1 WHERE id = 1; UPDATE grp_t SET u = 1 WHERE id = 2; UPDATE grp_t SET u = 2 WHERE id = 1; COMMIT`);
    for (let i = 3; i <= 100; i++) await src.query(`UPDATE grp_t SET v = v || '+' WHERE id = ${i}; UPDATE grp_t SET v = v || '!' WHERE id = ${i}`);
    await src.query(`DELETE FROM grp_t WHERE id BETWEEN 150 AND 160; INSERT INTO grp_t VALUES (155, 155, 'back')`);
    await src.query(`DELETE FROM grp_full WHERE ctid = (SELECT ctid FROM grp_full WHERE a = 3 LIMIT 1)`);
    await src.query(`SELECT pg_logical_emit_message(true, 'pg-dts-fence', 'g1')`);
    // Group 3: fails on its 51st transaction (the target refuses the row).
    for (let i = 301; i <= 350; i++) await src.query(`INSERT INTO grp_t VALUES (${i}, ${i}, 'v${i}'); UPDATE grp_t SET v = 'u${i}' WHERE id = ${i - 300}`);
    await src.query(`INSERT INTO grp_t VALUES (351, 351, 'poison')`);
    for (let i = 352; i <= 400; i++) await src.query(`INSERT INTO grp_t VALUES (${i}, ${i}, 'v${i}')`);
    await src.query(`SELECT pg_logical_emit_message(true, 'pg-dts-fence', 'g2')`);
    await src.end();

    const replays: { table?: string; code?: string; changes: number }[] = [];
    const run1 = startApply({ ...opts, onReplay: (r) => replays.push(r) });
    const atG0 = await run1.until((p) => p.fenceToken === 'g0');
    // The group ends with the fence's transaction: nothing after it rides along.
    expect(lsnToBigInt(atG0.appliedLsn)).toBeGreaterThan(lsnToBigInt(g0Msg));
    expect(lsnToBigInt(atG0.appliedLsn)).toBeLessThanOrEqual(lsnToBigInt(g0After));
    expect((await target.query(`SELECT v FROM dst.grp_t_m WHERE id = 1000`))[0]).toEqual({ v: 'at the fence' });
    const e1 = (await run1.result.catch((e: Error) => e)) as Error;
    expect(e1.message).toMatch(/INSERT into dst\.grp_t_m failed: .*no_poison/);
    expect(replays.map((r) => r.code)).toContain('23505');
    // The failed group left nothing behind: the position is g1's, and no row of group 3 is there.
    const p1 = await readProgress('s6');
    expect(p1?.fenceToken).toBe('g1');
    expect((await target.query<{ n: string }>(`SELECT count(*)::text AS n FROM dst.grp_t_m WHERE id BETWEEN 301 AND 400 OR v LIKE 'u%'`))[0]!.n).toBe('0');
    expect((await target.query(`SELECT id, u FROM dst.grp_t_m WHERE id IN (1, 2) ORDER BY id`))).toEqual([
      { id: 1, u: 2 },
      { id: 2, u: 1 },
    ]);

    // Fixed on the target, the restart applies group 3 exactly once.
    await target.query(`ALTER TABLE dst.grp_t_m DROP CONSTRAINT no_poison`);
    const run2 = startApply(opts);
    await run2.until((p) => p.fenceToken === 'g2');
    run2.abort();
    const r2 = await run2.result;
    expect(r2.transactions).toBe(101);
    await expectSame([
      ['public.grp_t', 'dst.grp_t_m'],
      ['public.grp_full', 'dst.grp_full_m'],
    ]);
    await source.query(`SELECT pg_drop_replication_slot('s6')`);
  });
});

describe('runApply sends a group\'s statements back to back', () => {
  it('rolls back what was sent behind a failed set-based statement and replays the group exactly once', async () => {
    await source.query(`CREATE TABLE pipe_a (id int PRIMARY KEY, u int NOT NULL UNIQUE); CREATE TABLE pipe_b (id int PRIMARY KEY, v text);
      CREATE TABLE pipe_h (n int, note text); CREATE PUBLICATION pub_pipe FOR TABLE pipe_a, pipe_b, pipe_h;
      INSERT INTO pipe_a SELECT g, g FROM generate_series(1, 4) g; INSERT INTO pipe_b SELECT g, 'b' FROM generate_series(1, 60) g`);
    await source.query(`SELECT pg_create_logical_replication_slot('s_pipe', 'pgoutput')`);
    await target.query(`CREATE SCHEMA IF NOT EXISTS dst; CREATE TABLE dst.pipe_a_m (id int PRIMARY KEY, u int NOT NULL UNIQUE);
      CREATE TABLE dst.pipe_b_m (id int PRIMARY KEY, v text); CREATE TABLE dst.pipe_h_m (n int, note text);
      INSERT INTO dst.pipe_a_m SELECT g, g FROM generate_series(1, 4) g; INSERT INTO dst.pipe_b_m SELECT g, 'b' FROM generate_series(1, 60) g`);
    const opts = {
      source: source.uri(),
      target: target.uri(),
      slot: 's_pipe',
      publication: 'pub_pipe',
      tables: map(['pipe_a', 'pipe_b', 'pipe_h']),
      // One group per fence; pipe_b's 60 rows in six statements.
      maxBatchRows: 10,
      maxGroupChanges: 1_000_000,
      maxGroupMs: 60_000,
      firstGroupMs: 60_000,
      groupIdleMs: 1_000,
    };
    const src = await source.client();
    // A swap of unique values: as one set-based UPDATE it collides (23505), change by change it does not.
    const swap = (x: number, y: number) => `BEGIN; UPDATE pipe_a SET u = -1 WHERE id = ${x}; UPDATE pipe_a SET u = ${x} WHERE id = ${y}; UPDATE pipe_a SET u = ${y} WHERE id = ${x}; COMMIT`;
    const rowsOf = (tag: string) => `UPDATE pipe_b SET v = v || '${tag}'; INSERT INTO pipe_h SELECT g, '${tag}' FROM generate_series(1, 5) g`;
    // Group 1: pipe_b's six UPDATEs, then pipe_a's failing one (last), with pipe_h's INSERT batch sent behind it.
    await src.query(rowsOf('1'));
    await src.query(swap(1, 2));
    await src.query(`SELECT pg_logical_emit_message(true, 'pg-dts-fence', 'p1')`);
    // Group 2: pipe_a's failing UPDATE first, pipe_b's statements sent behind it.
    await src.query(swap(3, 4));
    await src.query(rowsOf('2'));
    await src.query(`SELECT pg_logical_emit_message(true, 'pg-dts-fence', 'p2')`);
    await src.end();

    const replays: { table?: string; code?: string }[] = [];
    const r = await applyUpTo({ ...opts, onReplay: (x) => replays.push(x) }, 'p2');
    expect(r.transactions).toBe(6);
    expect(replays.map((x) => [x.table, x.code])).toEqual([
      ['dst.pipe_a_m', '23505'],
      ['dst.pipe_a_m', '23505'],
    ]);
    expect(await target.query(`SELECT note, count(*)::int AS n FROM dst.pipe_h_m GROUP BY note ORDER BY note`)).toEqual([
      { note: '1', n: 5 },
      { note: '2', n: 5 },
    ]);
    await expectSame([
      ['public.pipe_a', 'dst.pipe_a_m'],
      ['public.pipe_b', 'dst.pipe_b_m'],
      ['public.pipe_h', 'dst.pipe_h_m'],
    ]);
    await source.query(`SELECT pg_drop_replication_slot('s_pipe')`);
  });
});

describe('runApply past the retention bound', () => {
  it('writes a plain table with a unique index beside its key change by change once a group can no longer be replayed', async () => {
    await source.query(`CREATE TABLE uq_t (id int PRIMARY KEY, u int NOT NULL UNIQUE); CREATE TABLE uq_fill (id int PRIMARY KEY);
      INSERT INTO uq_t VALUES (1, 1), (2, 2); CREATE PUBLICATION pubuq FOR TABLE uq_t, uq_fill`);
    await source.query(`SELECT pg_create_logical_replication_slot('suq', 'pgoutput')`);
    await target.query(`CREATE SCHEMA IF NOT EXISTS dst; CREATE TABLE dst.uq_t_m (id int PRIMARY KEY, u int NOT NULL UNIQUE);
      CREATE TABLE dst.uq_fill_m (id int PRIMARY KEY); INSERT INTO dst.uq_t_m VALUES (1, 1), (2, 2)`);
    // One source transaction past what a group keeps for a replay (20,000 changes), then rows 1 and 2
    // swap their unique u: as one set-based UPDATE that trips the unique index, with nothing to replay.
    await source.query(`BEGIN; INSERT INTO uq_fill SELECT generate_series(1, 22000);
      UPDATE uq_t SET u = -1 WHERE id = 1; UPDATE uq_t SET u = 1 WHERE id = 2; UPDATE uq_t SET u = 2 WHERE id = 1; COMMIT`);
    await source.query(`SELECT pg_logical_emit_message(true, 'pg-dts-fence', 'uq')`);
    await applyUpTo({ source: source.uri(), target: target.uri(), slot: 'suq', publication: 'pubuq', tables: map(['uq_t', 'uq_fill']) }, 'uq');
    await expectSame([
      ['public.uq_t', 'dst.uq_t_m'],
      ['public.uq_fill', 'dst.uq_fill_m'],
    ]);
    await source.query(`SELECT pg_drop_replication_slot('suq')`);
  });
});

describe('runApply under crashes inside group commits', () => {
  it('folds what arrives into the next group while a group is written, in order, and applies it exactly', async () => {
    // fa_k: keyed, each transaction overwrites rows with its own number, inserts a key and deletes an
    // older one (a change folded out of order or into the wrong group shows as a wrong value, a key
    // conflict or a leftover row); fa_log: no key, rows in order (a lost or doubled batch shows).
    await source.query(`
      CREATE TABLE fa_k (id int PRIMARY KEY, v bigint NOT NULL);
      CREATE TABLE fa_log (n int, t text);
      ALTER TABLE fa_log REPLICA IDENTITY FULL;
      INSERT INTO fa_k SELECT g, 0 FROM generate_series(0, 49) g;
      CREATE PUBLICATION pubfa FOR TABLE fa_k, fa_log;`);
    await source.query(`SELECT pg_create_logical_replication_slot('sfa', 'pgoutput')`);
    await target.query(`
      CREATE SCHEMA IF NOT EXISTS dst;
      CREATE TABLE dst.fa_k_m (id int PRIMARY KEY, v bigint NOT NULL);
      CREATE TABLE dst.fa_log_m (n int, t text);
      INSERT INTO dst.fa_k_m SELECT g, 0 FROM generate_series(0, 49) g;
      CREATE SCHEMA IF NOT EXISTS pgdts;
      CREATE TABLE IF NOT EXISTS pgdts.apply_progress (slot_name text PRIMARY KEY, applied_lsn pg_lsn NOT NULL, fence_token text, updated_at timestamptz NOT NULL DEFAULT now());
      -- Each group's commit takes 20 ms more: time for the stream to bring the next group.
      CREATE FUNCTION public.slow_commit() RETURNS trigger LANGUAGE plpgsql AS $$
      BEGIN IF NEW.slot_name = 'sfa' THEN PERFORM pg_sleep(0.02); END IF; RETURN NEW; END $$;
      CREATE TRIGGER slow_commit AFTER UPDATE ON pgdts.apply_progress FOR EACH ROW EXECUTE FUNCTION public.slow_commit();
      ALTER TABLE pgdts.apply_progress ENABLE ALWAYS TRIGGER slow_commit;`);
    try {
      const src = await source.client();
      for (let i = 1; i <= 2000; i += 200) {
        const body: string[] = [];
        for (let j = i; j < i + 200; j++) {
          const del = j > 3 ? `DELETE FROM fa_k WHERE id = ${1000 + j - 3};` : '';
          body.push(`BEGIN; UPDATE fa_k SET v = ${j} WHERE id IN (${j % 50}, ${(j * 13) % 50}); INSERT INTO fa_k VALUES (${1000 + j}, ${j}); ${del} INSERT INTO fa_log VALUES (${j}, 'row ${j}'); COMMIT;`);
        }
        await src.query(body.join('\n'));
      }
      await src.end();
      const opts = { source: source.uri(), target: target.uri(), slot: 'sfa', publication: 'pubfa', tables: map(['fa_k', 'fa_log']), maxGroupChanges: 200 };
      await source.query(`SELECT pg_logical_emit_message(true, 'pg-dts-fence', 'tokfa')`);
      const run = startApply(opts);
      await run.until((p) => p.fenceToken === 'tokfa');
      run.abort();
      const r = await run.result;
      expect(r.transactions).toBe(2001); // and the fence's
      // Most of the backlog arrives while some group is being written.
      expect(r.foldedAhead).toBeGreaterThan(2000);
      await expectSame([
        ['fa_k', 'dst.fa_k_m'],
        ['fa_log', 'dst.fa_log_m'],
      ]);
    } finally {
      await target.query(`DROP TRIGGER IF EXISTS slow_commit ON pgdts.apply_progress; DROP FUNCTION IF EXISTS public.slow_commit()`);
      await source.query(`SELECT pg_drop_replication_slot('sfa')`).catch(() => undefined);
    }
  });

  it("commits a run's first group young and lets the next ones grow (a resumed backlog reaches the target at once)", async () => {
    await source.query(`CREATE TABLE ramp (id int PRIMARY KEY, v text); CREATE PUBLICATION pubramp FOR TABLE ramp`);
    await source.query(`SELECT pg_create_logical_replication_slot('sramp', 'pgoutput')`);
    await target.query(`
      CREATE SCHEMA IF NOT EXISTS dst;
      CREATE TABLE dst.ramp_m (id int PRIMARY KEY, v text);
      ${APPLY_PROGRESS_DDL.join(';\n')};
      -- Each group's commit writes its progress row: log how many rows the target holds then.
      CREATE TABLE public.ramp_commits (at timestamptz NOT NULL DEFAULT clock_timestamp(), rows int NOT NULL);
      CREATE FUNCTION public.ramp_commit() RETURNS trigger LANGUAGE plpgsql AS $$
      BEGIN IF NEW.slot_name = 'sramp' THEN INSERT INTO public.ramp_commits (rows) SELECT count(*) FROM dst.ramp_m; END IF; RETURN NEW; END $$;
      CREATE TRIGGER ramp_commit AFTER INSERT OR UPDATE ON pgdts.apply_progress FOR EACH ROW EXECUTE FUNCTION public.ramp_commit();
      ALTER TABLE pgdts.apply_progress ENABLE ALWAYS TRIGGER ramp_commit;`);
    try {
      // A backlog of 5,000 one-row transactions, then the fence.
      const src = await source.client();
      for (let i = 0; i < 5000; i += 500) {
        await src.query(Array.from({ length: 500 }, (_, j) => `BEGIN; INSERT INTO ramp VALUES (${i + j}, 'r${i + j}'); COMMIT;`).join('\n'));
      }
      await src.end();
      await source.query(`SELECT pg_logical_emit_message(true, 'pg-dts-fence', 'tokramp')`);
      // Groups would otherwise be cut only by age (60 s) or an idle stream (60 s): here by the fence alone.
      const run = startApply({ source: source.uri(), target: target.uri(), slot: 'sramp', publication: 'pubramp', tables: map(['ramp']), maxGroupMs: 60_000, groupIdleMs: 60_000, maxGroupChanges: 1_000_000 });
      await run.until((p) => p.fenceToken === 'tokramp');
      run.abort();
      expect((await run.result).transactions).toBe(5001);
      const commits = (await target.query<{ rows: number }>(`SELECT rows FROM public.ramp_commits ORDER BY at`)).map((r) => r.rows).filter((n) => n > 0);
      // The first group holds a part of the backlog, not all of it; later groups hold more.
      expect(commits.length).toBeGreaterThanOrEqual(3);
      expect(commits[0]).toBeLessThan(5000);
      const sizes = commits.map((n, i) => n - (commits[i - 1] ?? 0));
      expect(Math.max(...sizes.slice(1))).toBeGreaterThan(sizes[0]!);
      expect(commits.at(-1)).toBe(5000);
      await expectSame([['ramp', 'dst.ramp_m']]);
    } finally {
      await target.query(`DROP TRIGGER IF EXISTS ramp_commit ON pgdts.apply_progress; DROP FUNCTION IF EXISTS public.ramp_commit() CASCADE`);
      await source.query(`SELECT pg_drop_replication_slot('sramp')`).catch(() => undefined);
    }
  });

  it.each([
    ['while the apply was stopping', 'stop'],
    ['with progress ticks waiting behind it', 'fail'],
  ] as const)('does not record a group whose COMMIT failed %s', async (_what, mode) => {
    // A deferred check on the progress row fails the first group's COMMIT after a second. 'stop': the
    // apply is stopped meanwhile; a clean stop commits the open group, but not this one again. 'fail':
    // the apply runs on, its progress ticks (every 50 ms) find the group old enough to commit and queue
    // a commit of it behind the failing one. Neither may run: the failed COMMIT ended the target
    // transaction, so a retry would commit the progress row alone and the rows were lost.
    const slot = `sgl_${mode}`;
    const pub = `pubgl_${mode}`;
    const tbl = `gl_${mode}`;
    await source.query(`
      CREATE TABLE ${tbl} (id int PRIMARY KEY, v text);
      CREATE PUBLICATION ${pub} FOR TABLE ${tbl};`);
    await source.query(`SELECT pg_create_logical_replication_slot($1, 'pgoutput')`, [slot]);
    await target.query(`
      CREATE SCHEMA IF NOT EXISTS dst;
      CREATE TABLE dst.${tbl}_m (id int PRIMARY KEY, v text);
      CREATE SCHEMA IF NOT EXISTS pgdts;
      ${APPLY_PROGRESS_DDL.join(';\n')};
      CREATE SEQUENCE public.${tbl}_seq;
      CREATE FUNCTION public.${tbl}_fail_once() RETURNS trigger LANGUAGE plpgsql AS $$
      BEGIN
        -- Only a commit that brings rows (a group's), and once: nextval is not rolled back.
        IF NEW.slot_name = '${slot}' AND EXISTS (SELECT 1 FROM dst.${tbl}_m) AND nextval('public.${tbl}_seq') = 1 THEN
          PERFORM pg_sleep(1);
          RAISE EXCEPTION 'deferred check failed';
        END IF;
        RETURN NEW;
      END $$;
      CREATE CONSTRAINT TRIGGER ${tbl}_fail_once AFTER UPDATE ON pgdts.apply_progress DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION public.${tbl}_fail_once();
      ALTER TABLE pgdts.apply_progress ENABLE ALWAYS TRIGGER ${tbl}_fail_once;`);
    try {
      await source.query(`INSERT INTO ${tbl} SELECT g, 'row ' || g FROM generate_series(1, 100) g`);
      const opts = { source: source.uri(), target: target.uri(), slot, publication: pub, tables: map([tbl]), progressIntervalMs: 50 };
      const run = startApply(opts);
      if (mode === 'stop') {
        // Stop while that COMMIT waits in the trigger.
        const deadline = Date.now() + 30_000;
        for (;;) {
          const r = await target.query(`SELECT 1 FROM pg_stat_activity WHERE application_name = $1 AND wait_event = 'PgSleep'`, [applyApplicationName(slot)]);
          if (r.length) break;
          if (Date.now() > deadline) throw new Error('the apply never reached its COMMIT');
          await sleep(20);
        }
        run.abort();
        await run.result.catch(() => undefined);
      } else {
        await expect(run.result).rejects.toThrow(/deferred check failed/);
      }
      const progress = await readProgress(slot);
      const rows = await target.query<{ n: string }>(`SELECT count(*)::text AS n FROM dst.${tbl}_m`);
      // Nothing applied.
      expect(rows[0]!.n).toBe('0');
      const state = await slotState(slot);
      expect(lsnToBigInt(progress!.appliedLsn)).toBeLessThanOrEqual(lsnToBigInt(state.confirmed));
      // The next run applies the transaction (it would not, were it recorded as applied on the target or
      // confirmed on the slot; either may have moved to an idle position inside it, which is safe).
      await expectSameAfterFence(slot, pub, [tbl], `tok_${mode}`, [[tbl, `dst.${tbl}_m`]]);
    } finally {
      await target.query(`DROP TRIGGER IF EXISTS ${tbl}_fail_once ON pgdts.apply_progress; DROP FUNCTION IF EXISTS public.${tbl}_fail_once(); DROP SEQUENCE IF EXISTS public.${tbl}_seq`);
      await source.query(`SELECT pg_drop_replication_slot($1)`, [slot]).catch(() => undefined);
    }
  });

  it('stays exactly once and in commit order when the target dies while a group commits with a backlog waiting', async () => {
    // ord_t: keyed, every transaction overwrites a few rows with its own number (a reordered or lost
    // group leaves other values), inserts a new key and deletes an older one (a group applied twice
    // fails on the key, one lost leaves rows behind). log_t: no key, duplicates (change by change; a
    // double apply shows as extra rows).
    await source.query(`
      CREATE TABLE ord_t (id int PRIMARY KEY, v bigint NOT NULL, note text);
      CREATE TABLE log_t (a int, b text);
      ALTER TABLE log_t REPLICA IDENTITY FULL;
      INSERT INTO ord_t SELECT g, 0, 'init' FROM generate_series(0, 29) g;
      -- Key changes of rows with an unchanged TOASTed value cannot be folded: applied one by one.
      CREATE TABLE toast_k (id int PRIMARY KEY, big text);
      ALTER TABLE toast_k ALTER big SET STORAGE EXTERNAL;
      INSERT INTO toast_k SELECT g, repeat(md5(g::text), 100) FROM generate_series(1, 3000) g;
      CREATE PUBLICATION pub7 FOR TABLE ord_t, log_t, toast_k;`);
    await source.query(`SELECT pg_create_logical_replication_slot('s7', 'pgoutput')`);
    await target.query(`
      CREATE SCHEMA IF NOT EXISTS dst;
      CREATE TABLE dst.ord_t_m (id int PRIMARY KEY, v bigint NOT NULL, note text);
      CREATE TABLE dst.log_t_m (a int, b text);
      INSERT INTO dst.ord_t_m SELECT g, 0, 'init' FROM generate_series(0, 29) g;
      CREATE TABLE dst.toast_k_m (id int PRIMARY KEY, big text);
      INSERT INTO dst.toast_k_m SELECT g, repeat(md5(g::text), 100) FROM generate_series(1, 3000) g;`);
    // The apply's progress write for this slot is slow (the next group is folded meanwhile), and the
    // n-th one kills its own session inside the group's commit. ALWAYS: it fires under
    // session_replication_role = replica too.
    await target.query(`
      CREATE SCHEMA IF NOT EXISTS pgdts;
      CREATE TABLE IF NOT EXISTS pgdts.apply_progress (slot_name text PRIMARY KEY, applied_lsn pg_lsn NOT NULL, fence_token text, updated_at timestamptz NOT NULL DEFAULT now());
      CREATE TABLE public.crash_ctl (n int NOT NULL);
      INSERT INTO public.crash_ctl VALUES (-1);
      CREATE FUNCTION public.crash_at_commit() RETURNS trigger LANGUAGE plpgsql AS $$
      DECLARE left_ int;
      BEGIN
        IF NEW.slot_name = 's7' THEN
          PERFORM pg_sleep(0.01);
          UPDATE public.crash_ctl SET n = n - 1 RETURNING n INTO left_;
          IF left_ = 0 THEN
            PERFORM pg_terminate_backend(pg_backend_pid());
            PERFORM pg_sleep(5);
          END IF;
        END IF;
        RETURN NEW;
      END $$;
      CREATE TRIGGER crash_at_commit AFTER UPDATE ON pgdts.apply_progress FOR EACH ROW EXECUTE FUNCTION public.crash_at_commit();
      ALTER TABLE pgdts.apply_progress ENABLE ALWAYS TRIGGER crash_at_commit;`);
    try {
      // A backlog, so that the stream always has the next group waiting while one is written.
      const src = await source.client();
      const TXNS = 3000;
      for (let i = 1; i <= TXNS; i += 100) {
        const body: string[] = [];
        for (let j = i; j < i + 100; j++) {
          const del = j > 5 ? `DELETE FROM ord_t WHERE id = ${1000 + j - 5};` : '';
          const logDel = j % 7 === 0 ? `DELETE FROM log_t WHERE ctid = (SELECT ctid FROM log_t WHERE a = ${j % 10} LIMIT 1);` : '';
          body.push(
            `BEGIN; UPDATE ord_t SET v = ${j}, note = 'txn ${j}' WHERE id IN (${j % 30}, ${(j * 7) % 30}); INSERT INTO ord_t VALUES (${1000 + j}, ${j}, NULL); ${del} ` +
              `INSERT INTO log_t VALUES (${j % 10}, 'x'), (${j % 10}, 'x'); ${logDel} UPDATE toast_k SET id = id + 100000 WHERE id = ${j}; COMMIT;`,
          );
        }
        await src.query(body.join('\n'));
      }
      await src.query(`SELECT pg_logical_emit_message(true, 'pg-dts-fence', 'tok7')`);
      await src.end();

      const opts = { source: source.uri(), target: target.uri(), slot: 's7', publication: 'pub7', tables: map(['ord_t', 'log_t', 'toast_k']), maxGroupChanges: 60 };
      const watch = watchConfirmedNeverAhead('s7');
      const seen: bigint[] = [];
      let crashes = 0;
      // Each run dies at its n-th group commit (n varies), until one gets through the backlog to the fence.
      let through = false;
      for (let attempt = 0; attempt < 100 && !through; attempt++) {
        await target.query(`UPDATE public.crash_ctl SET n = $1`, [3 + ((attempt * 7) % 11)]);
        const run = startApply(opts);
        const r = await run.until((p) => p.fenceToken === 'tok7').catch((e: Error) => e);
        if (r instanceof Error) {
          crashes++;
          expect(r.message).toMatch(/target|terminat|connection/i);
        } else {
          through = true;
          run.abort();
          await run.result.catch(() => undefined); // a crash in a later idle progress write changes nothing
        }
        seen.push(lsnToBigInt((await readProgress('s7'))!.appliedLsn));
      }
      expect(through).toBe(true);
      const { violations, samples } = await watch.stop();
      console.log(`crash test: ${crashes} crashes inside a group commit, applied positions ${seen.length}, ${samples} samples`);
      expect(crashes).toBeGreaterThan(10);
      // Each crashed run still committed the groups before the failing one: progress moved forward.
      expect(seen.filter((l, i) => i > 0 && l > seen[i - 1]!).length).toBeGreaterThan(5);
      expect(violations).toEqual([]);
      for (const [s, t] of [
        ['ord_t', 'ord_t_m'],
        ['log_t', 'log_t_m'],
        ['toast_k', 'toast_k_m'],
      ] as const) {
        const [a, b] = await Promise.all([harnessFingerprint(source, 'postgres', 'public', s), harnessFingerprint(target, 'postgres', 'dst', t)]);
        expect({ table: t, ...b }).toEqual({ table: t, ...a });
      }
    } finally {
      await target.query(`DROP TRIGGER IF EXISTS crash_at_commit ON pgdts.apply_progress; DROP FUNCTION IF EXISTS public.crash_at_commit(); DROP TABLE IF EXISTS public.crash_ctl`);
      await source.query(`SELECT pg_drop_replication_slot('s7')`).catch(() => undefined);
    }
  });
});

/** Emits a fence, applies until it, stops, and compares the tables. */
async function expectSameAfterFence(slot: string, publication: string, tables: string[], token: string, pairs: [string, string][]): Promise<void> {
  await source.query(`SELECT pg_logical_emit_message(true, 'pg-dts-fence', $1)`, [token]);
  const run = startApply({ source: source.uri(), target: target.uri(), slot, publication, tables: map(tables) });
  await run.until((p) => p.fenceToken === token);
  run.abort();
  await run.result;
  await expectSame(pairs);
}

async function readProgress(slot: string) {
  const c = await target.client();
  try {
    return await readApplyProgress(c, slot);
  } finally {
    await c.end();
  }
}

describe('runApply with a second writer', () => {
  it('writes the largest table without foreign keys on a session of its own, committed first, and leaves out what it committed ahead of a failed commit', async () => {
    const tables = `
      CREATE TABLE sw_big (id int PRIMARY KEY, v text);
      CREATE TABLE sw_small (id int PRIMARY KEY, v text);
      CREATE TABLE sw_log (n int, t text);
      CREATE TABLE sw_parent (id int PRIMARY KEY, pad text);
      CREATE TABLE sw_child (id int PRIMARY KEY, p int REFERENCES sw_parent);`;
    // sw_parent is the largest table, but tied to sw_child by a foreign key: sw_big is the second writer's.
    const rows = `
      INSERT INTO sw_big SELECT g, repeat('b', 200) FROM generate_series(1, 2000) g;
      INSERT INTO sw_small SELECT g, 's' FROM generate_series(1, 20) g;
      INSERT INTO sw_parent SELECT g, repeat('p', 1500) FROM generate_series(1, 2000) g;
      INSERT INTO sw_child SELECT g, g FROM generate_series(1, 100) g;`;
    await source.query(`${tables} ALTER TABLE sw_log REPLICA IDENTITY FULL; ${rows}
      CREATE PUBLICATION pubsw FOR TABLE sw_big, sw_small, sw_log, sw_parent, sw_child;`);
    await source.query(`SELECT pg_create_logical_replication_slot('ssw', 'pgoutput')`);
    await target.query(`CREATE SCHEMA IF NOT EXISTS dst; SET search_path = dst; ${tables.replace(/ (sw_\w+) \(/g, ' $1_m (').replace('REFERENCES sw_parent', 'REFERENCES sw_parent_m')} ${rows.replace(/INTO (sw_\w+)/g, 'INTO $1_m')} ANALYZE`);
    const names = ['sw_big', 'sw_small', 'sw_log', 'sw_parent', 'sw_child'];
    const pairs = names.map((n): [string, string] => [`public.${n}`, `dst.${n}_m`]);
    const opts = { source: source.uri(), target: target.uri(), slot: 'ssw', publication: 'pubsw', tables: map(names) };
    const sessions = async (writer: 1 | 2) =>
      (await target.query<{ n: number }>(`SELECT count(*)::int AS n FROM pg_stat_activity WHERE application_name = $1`, [applyApplicationName('ssw', writer)]))[0]!.n;
    const writerRow = async () =>
      (await target.query<{ table: string; lsn: string }>(`SELECT target_table AS table, applied_lsn::text AS lsn FROM pgdts.apply_writer_progress WHERE slot_name = 'ssw'`));

    // Every kind of change, the tables of both sessions in one transaction, and a TRUNCATE of both.
    const src = await source.client();
    for (let i = 1; i <= 60; i++) {
      await src.query(`BEGIN;
        INSERT INTO sw_big VALUES (${10_000 + i}, 'new'); UPDATE sw_big SET v = v || '+' WHERE id = ${i};
        DELETE FROM sw_big WHERE id = ${1000 + i}; INSERT INTO sw_small VALUES (${100 + i}, 'n${i}');
        INSERT INTO sw_log VALUES (${i}, 'l'); UPDATE sw_parent SET pad = 'q' WHERE id = ${i}; INSERT INTO sw_child VALUES (${200 + i}, ${i});
        COMMIT`);
      if (i === 30) await src.query(`TRUNCATE sw_big, sw_small; INSERT INTO sw_big SELECT g, 'again' FROM generate_series(1, 500) g`);
    }
    await src.query(`SELECT pg_logical_emit_message(true, 'pg-dts-fence', 'w1')`);
    // A trigger of the content proof's write marks (its function pgdts.pg_dts_<id>_writes) does not
    // keep the second writer away; anyone else's does (below).
    await target.query(`CREATE SCHEMA IF NOT EXISTS pgdts;
      CREATE FUNCTION pgdts.pg_dts_ssw_writes() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NULL; END $$;
      CREATE TRIGGER ssw_writes AFTER INSERT ON dst.sw_small_m FOR EACH STATEMENT EXECUTE FUNCTION pgdts.pg_dts_ssw_writes();
      ALTER TABLE dst.sw_small_m ENABLE ALWAYS TRIGGER ssw_writes;`);
    process.env.PG_DTS_APPLY_WRITERS = '2'; // one session by default
    const run1 = startApply(opts);
    await run1.until((p) => p.fenceToken === 'w1');
    expect({ first: await sessions(1), second: await sessions(2) }).toEqual({ first: 1, second: 1 });
    expect((await writerRow()).map((r) => r.table)).toEqual(['"dst"."sw_big_m"']);
    await expectSame(pairs);
    run1.abort();
    await run1.result;

    // The first session's commit of the next group fails after the second writer committed its part.
    await target.query(`
      CREATE FUNCTION public.sw_fail() RETURNS trigger LANGUAGE plpgsql AS $$
      BEGIN IF NEW.slot_name = 'ssw' AND NEW.fence_token = 'w2' THEN RAISE EXCEPTION 'sw: commit refused'; END IF; RETURN NEW; END $$;
      CREATE TRIGGER sw_fail BEFORE UPDATE ON pgdts.apply_progress FOR EACH ROW EXECUTE FUNCTION public.sw_fail();
      ALTER TABLE pgdts.apply_progress ENABLE ALWAYS TRIGGER sw_fail;`);
    for (let i = 1; i <= 40; i++) {
      await src.query(`INSERT INTO sw_big VALUES (${20_000 + i}, 'ahead'); DELETE FROM sw_big WHERE id = ${i}; INSERT INTO sw_small VALUES (${200 + i}, 'behind')`);
    }
    await src.query(`SELECT pg_logical_emit_message(true, 'pg-dts-fence', 'w2')`);
    const oneGroup = { maxGroupChanges: 1_000_000, maxGroupMs: 60_000, firstGroupMs: 60_000, groupIdleMs: 1_000 };
    const e2 = (await startApply({ ...opts, ...oneGroup }).result.catch((e: Error) => e)) as Error;
    expect(e2.message).toContain('sw: commit refused');
    const applied = lsnToBigInt((await readProgress('ssw'))!.appliedLsn);
    const [ahead] = await writerRow();
    expect(lsnToBigInt(ahead!.lsn)).toBeGreaterThan(applied);
    expect((await target.query<{ big: number; small: number }>(
      `SELECT (SELECT count(*)::int FROM dst.sw_big_m WHERE id > 20000) AS big, (SELECT count(*)::int FROM dst.sw_small_m WHERE id > 200) AS small`,
    ))[0]).toEqual({ big: 40, small: 0 });

    // The next run, with one session (the default), applies the rest of that group once: sw_big's
    // part (an INSERT again would fail on its key) is left out.
    await target.query(`DROP TRIGGER sw_fail ON pgdts.apply_progress; DROP FUNCTION public.sw_fail()`);
    delete process.env.PG_DTS_APPLY_WRITERS;
    expect((await applyUpTo(opts, 'w2')).skippedBeforeCopy).toBe(80);
    await expectSame(pairs);

    // Writes, a fence, an apply up to it: the sessions it had then; every table compared after.
    const oneRound = async (token: string) => {
      await src.query(`UPDATE sw_big SET v = '${token}' WHERE id <= 100; INSERT INTO sw_small VALUES (${900 + Number(token.slice(1))}, '${token}')`);
      await src.query(`SELECT pg_logical_emit_message(true, 'pg-dts-fence', '${token}')`);
      const run = startApply(opts);
      await run.until((p) => p.fenceToken === token);
      const seen = { first: await sessions(1), second: await sessions(2) };
      run.abort();
      await run.result;
      await expectSame(pairs);
      return seen;
    };
    try {
      // By default one session writes every table.
      expect(await oneRound('w3')).toEqual({ first: 1, second: 0 });
      // Nor with a trigger of someone else's on any of the tables (it could write the other session's table).
      await target.query(`CREATE FUNCTION public.sw_noop() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NULL; END $$;
        CREATE TRIGGER sw_noop AFTER INSERT ON dst.sw_small_m FOR EACH STATEMENT EXECUTE FUNCTION public.sw_noop();
        ALTER TABLE dst.sw_small_m ENABLE ALWAYS TRIGGER sw_noop;`);
      process.env.PG_DTS_APPLY_WRITERS = '2';
      expect(await oneRound('w4')).toEqual({ first: 1, second: 0 });
      await target.query(`DROP TRIGGER sw_noop ON dst.sw_small_m; DROP FUNCTION public.sw_noop()`);
    } finally {
      await src.end();
    }
    await source.query(`SELECT pg_drop_replication_slot('ssw')`);
  });
});

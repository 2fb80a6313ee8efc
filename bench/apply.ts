/**
 * Apply benchmark (issue 7): pg-dts's WAL apply beside PostgreSQL's native logical replication
 * (CREATE SUBSCRIPTION), on the same source, the same workload, in the same run.
 *
 *   1. live load: pgbench (builtin tpcb-like) at a fixed rate for a fixed time while pg-dts is in
 *      SYNCING_WAL (manual cutover) and a native subscription replicates the same tables into a second
 *      target database; every second: lag (bytes) and applied transactions on both sides; then the
 *      catch-up time once the load stops;
 *   2. one large transaction (default 1 GiB) on the source: time to apply it on both sides and the
 *      worker's peak RSS meanwhile;
 *   3. cutover with the load running: the write-stop window (fence → release) from the report, and the
 *      VALIDATING phase's time;
 *   4. backlog: slots created, a 20,000-transaction backlog written while nobody applies, then the
 *      native subscription enabled and timed; then pg-dts's apply engine (runApply, in this process)
 *      timed on its own slot over the same WAL.
 * The worker runs `worker/main.ts` in a child process; its RSS is read from /proc/<pid>/status.
 * Transactions applied are counted on each target from pgbench_history (one row per pgbench
 * transaction), so both sides are measured the same way; changes = 4 per transaction (3 UPDATEs and
 * 1 INSERT).
 *
 *   npx tsx bench/apply.ts [--rate R] [--seconds S] [--scale N] [--clients C] [--big-mb M] [--backlog T]
 */
import { randomUUID } from 'node:crypto';
import { Command } from 'commander';
import type { Client } from 'pg';
import type { PgCluster } from '../test/harness/pg-cluster';
import { startTemporal } from '../test/harness/temporal';
import { quietTemporalLogs } from '../worker/logging';
import { runApply } from '../activities/apply/run';
import { armWriteMarks, ensureProofSchema } from '../activities/validate/proof-store';
import { insertProofChunksSql, type KeyRange } from '../activities/validate/sql';
import {
  bash,
  bytes,
  contentHash,
  machineDescription,
  mb,
  num,
  medianOf,
  pgbenchInit,
  ratio,
  recreateDatabase,
  RssMonitor,
  say,
  sec,
  shq,
  sleep,
  startBenchClusters,
  startMigration,
  table,
  timed,
  WorkerProcess,
  lsnBig,
  processCpuSec,
  type RunResult,
  startPgbench,
} from './common';

const DB = 'bench';
const PGBENCH_TABLES = ['pgbench_accounts', 'pgbench_branches', 'pgbench_tellers', 'pgbench_history'];
/** The keyed pgbench tables' keys, for chunk marks. */
const PGBENCH_KEYS: Record<string, { column: string; type: string } | undefined> = {
  pgbench_accounts: { column: 'aid', type: 'integer' },
  pgbench_branches: { column: 'bid', type: 'integer' },
  pgbench_tellers: { column: 'tid', type: 'integer' },
};

/** Key ranges of 100,000 rows over one integer key, as the proof plans its chunks. */
async function benchChunks(c: Client, table: string, column: string): Promise<KeyRange[]> {
  const r = await c.query<{ k: string }>(`SELECT k::text FROM (SELECT ${column} AS k, row_number() OVER (ORDER BY ${column}) AS n FROM public.${table}) x WHERE n % 100000 = 1 AND n > 1 ORDER BY k`);
  const bounds = r.rows.map((x) => [x.k]);
  return [...bounds, undefined].map((hi, i) => ({ ...(i > 0 ? { lo: bounds[i - 1]! } : {}), ...(hi ? { hi } : {}) }));
}
const BIG = 'bench_big';
const CHANGES_PER_TXN = 4;

interface Options {
  rate: number;
  seconds: number;
  scale: number;
  clients: number;
  bigMb: number;
  backlog: number;
  backlogOnly: boolean;
  repeat: number;
  /** Engine settings (ApplyOptions) per pg-dts variant of the backlog test. */
  variants: Array<Record<string, unknown>>;
  rounds: number;
}

function options(): Options {
  const o = new Command()
    .name('bench/apply.ts')
    .description('WAL apply: pg-dts vs native logical replication')
    .option('--rate <tps>', 'pgbench -R: transactions per second offered during the live load', '1000')
    .option('--seconds <s>', 'pgbench -T: length of the live load', '60')
    .option('--scale <n>', 'pgbench scale of the source', '10')
    .option('--clients <n>', 'pgbench -c', '4')
    .option('--big-mb <mb>', 'size of the one large transaction (0 = skip)', '1024')
    .option('--backlog <n>', 'transactions in the backlog test (0 = skip)', '20000')
    .option('--backlog-only', 'run only the backlog test (no Temporal, no worker)')
    .option('--repeat <n>', 'with --backlog-only: run the backlog test this many times', '1')
    .option('--variants <json>', 'backlog: a JSON array of engine settings (ApplyOptions) to compare, e.g. \'[{}, {"foldAhead": false}]\' (default: PG_DTS_BENCH_APPLY_OPTIONS or the defaults)')
    .option('--rounds <n>', 'backlog: apply the same backlog this many times per variant (interleaved)', '1')
    .parse()
    .opts<Record<string, string>>();
  return {
    rate: Number(o.rate),
    seconds: Number(o.seconds),
    scale: Number(o.scale),
    clients: Number(o.clients),
    bigMb: Number(o.bigMb),
    backlog: Number(o.backlog),
    backlogOnly: Boolean(o.backlogOnly),
    repeat: Math.max(1, Number(o.repeat)),
    variants: o.variants ? (JSON.parse(o.variants) as Array<Record<string, unknown>>) : [JSON.parse(process.env.PG_DTS_BENCH_APPLY_OPTIONS ?? '{}') as Record<string, unknown>],
    rounds: Math.max(1, Number(o.rounds)),
  };
}

const pgbenchTps = (r: RunResult): string => /tps = ([\d.]+)/.exec(r.stdout)?.[1] ?? '?';
const pgbenchProcessed = (r: RunResult): string => /number of transactions actually processed: (\d+)/.exec(r.stdout)?.[1] ?? '?';

async function one<T>(c: Client, sql: string, params: unknown[] = []): Promise<T> {
  return (await c.query(sql, params)).rows[0] as T;
}
const historyCount = async (c: Client): Promise<number> => Number((await one<{ n: string }>(c, 'SELECT count(*)::text AS n FROM pgbench_history')).n);

async function waitUntil(pred: () => Promise<boolean>, timeoutMs: number, everyMs = 20): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (await pred()) return true;
    await sleep(everyMs);
  }
  return false;
}

async function main(): Promise<void> {
  const opt = options();
  quietTemporalLogs('ERROR');
  say(`machine: ${machineDescription()}`);
  say(`rate ${opt.rate} tps for ${opt.seconds} s, ${opt.clients} clients, scale ${opt.scale}, large transaction ${opt.bigMb} MB, backlog ${num(opt.backlog)} transactions`);
  const { source, target, destroy } = await startBenchClusters();
  const cleanups: Array<() => Promise<void>> = [destroy];
  const out: string[] = [];
  const clients: Client[] = [];
  try {
    await source.createDatabase(DB);
    await pgbenchInit(source, DB, opt.scale);
    await source.query(`CREATE TABLE ${BIG} (id bigint PRIMARY KEY, payload text NOT NULL)`, [], DB);
    if (opt.backlogOnly) {
      for (let i = 0; i < opt.repeat; i++) out.push('', `run ${i + 1} of ${opt.repeat}`, ...(await backlogTest(source, target, opt)));
      console.log(`\n${out.join('\n')}`);
      return;
    }

    // ── Native subscription (second target database), initial sync included ──
    await recreateDatabase(target, 'native');
    await bash(`pg_dump -s ${shq(source.uri(DB))} | psql -X -q -v ON_ERROR_STOP=1 ${shq(target.uri('native'))}`);
    await source.query(`CREATE PUBLICATION native_pub FOR TABLE ${[...PGBENCH_TABLES, BIG].join(', ')}`, [], DB);
    await target.query(
      `CREATE SUBSCRIPTION native_sub CONNECTION 'host=${source.host} port=${source.port} dbname=${DB} user=postgres' PUBLICATION native_pub WITH (copy_data = true)`,
      [],
      'native',
    );
    const synced = await waitUntil(
      async () => (await target.query<{ n: string }>(`SELECT count(*) FILTER (WHERE srsubstate <> 'r')::text AS n FROM pg_subscription_rel`, [], 'native'))[0]!.n === '0',
      600_000,
      250,
    );
    if (!synced) throw new Error('native subscription did not finish its initial sync');
    say('native subscription native_sub: initial sync done, streaming');

    // ── pg-dts: online, manual cutover, worker in a child process ──
    const temporal = await startTemporal();
    cleanups.unshift(() => temporal.teardown());
    const taskQueue = `bench-${randomUUID().slice(0, 8)}`;
    const worker = await WorkerProcess.start(temporal.address, taskQueue);
    cleanups.unshift(() => worker.stop());
    const rss = new RssMonitor(worker.pid);
    cleanups.unshift(async () => rss.stop());
    await recreateDatabase(target, 'dts');
    const driver = await startMigration(temporal.client, taskQueue, {
      source: source.uri(DB),
      target: target.uri('dts'),
      cutover: { mode: 'manual' },
    });
    await driver.waitForPhase('SYNCING_WAL');
    const first = await waitUntil(async () => (await driver.status()).replication !== undefined, 60_000, 200);
    if (!first) throw new Error('pg-dts apply did not report progress');
    const st0 = await driver.status();
    const slot = st0.replication!.slot;
    say(`pg-dts ${driver.workflowId}: SYNCING_WAL, slot ${slot}; worker RSS ${mb(rss.baseline)} at start`);

    const src = await source.client(DB);
    const dts = await target.client('dts');
    const nat = await target.client('native');
    clients.push(src, dts, nat);

    // ── 1. live load ──
    const base = { src: await historyCount(src), dts: await historyCount(dts), nat: await historyCount(nat) };
    say(`live load: pgbench -c ${opt.clients} -j 2 -R ${opt.rate} -T ${opt.seconds} (builtin tpcb-like)`);
    rss.begin('live');
    const loadStart = performance.now();
    const bench = startPgbench(source, DB, ['-c', String(opt.clients), '-j', '2', '-R', String(opt.rate), '-T', String(opt.seconds)]);
    let loadEnd: number | undefined;
    void bench.done.then(() => (loadEnd = performance.now()));
    const rows: string[][] = [['t (s)', 'source txns', 'pg-dts txns', 'pg-dts lag', 'behind', 'status lag', 'native txns', 'native lag', 'behind']];
    const samples: Array<{ t: number; load: boolean; dts: number; nat: number; dtsLag: number; natLag: number; dtsBehind: number; natBehind: number }> = [];
    // Seconds behind ≈ transactions not yet applied / the offered rate.
    const behind = (srcTx: number, applied: number) => Math.max(0, srcTx - applied) / opt.rate;
    let caughtDts: number | undefined;
    let caughtNat: number | undefined;
    let srcFinal: number | undefined;
    const deadline = performance.now() + (opt.seconds + 600) * 1000;
    for (let tick = 1; ; tick++) {
      await sleep(Math.max(0, loadStart + tick * 1000 - performance.now()));
      const now = performance.now();
      const [l, a, s, hd, hn, hs] = await Promise.all([
        one<{ cur: string; nat: string | null }>(src, `SELECT pg_current_wal_lsn()::text AS cur, (SELECT replay_lsn::text FROM pg_stat_replication WHERE application_name = 'native_sub') AS nat`),
        one<{ lsn: string } | undefined>(dts, 'SELECT applied_lsn::text AS lsn FROM pgdts.apply_progress WHERE slot_name = $1', [slot]),
        driver.status(),
        historyCount(dts),
        historyCount(nat),
        historyCount(src),
      ]);
      const cur = lsnBig(l.cur);
      const dtsLag = a ? Number(cur - lsnBig(a.lsn)) : NaN;
      const natLag = l.nat ? Number(cur - lsnBig(l.nat)) : NaN;
      const t = (now - loadStart) / 1000;
      const load = loadEnd === undefined;
      const dtsBehind = behind(hs - base.src, hd - base.dts);
      const natBehind = behind(hs - base.src, hn - base.nat);
      samples.push({ t, load, dts: hd - base.dts, nat: hn - base.nat, dtsLag, natLag, dtsBehind, natBehind });
      rows.push([
        t.toFixed(0),
        num(hs - base.src),
        num(hd - base.dts),
        bytes(Math.max(0, dtsLag)),
        `${dtsBehind.toFixed(2)} s`,
        bytes(s.replication?.lagBytes ?? NaN),
        num(hn - base.nat),
        bytes(Math.max(0, natLag)),
        `${natBehind.toFixed(2)} s`,
      ]);
      if (!load) {
        srcFinal ??= await historyCount(src);
        if (caughtDts === undefined && hd - base.dts >= srcFinal - base.src) caughtDts = now - loadEnd!;
        if (caughtNat === undefined && hn - base.nat >= srcFinal - base.src) caughtNat = now - loadEnd!;
        if (caughtDts !== undefined && caughtNat !== undefined) break;
      }
      if (now > deadline) break;
    }
    rss.end('live');
    const br = await bench.done;
    out.push('== Live load: applied transactions and lag, sampled every second ==', table(rows));
    const during = samples.filter((x) => x.load);
    const rateOf = (k: 'dts' | 'nat') => {
      const last = during[during.length - 1];
      return last ? last[k] / last.t : 0;
    };
    const lagStats = (k: 'dtsLag' | 'natLag' | 'dtsBehind' | 'natBehind') => {
      const v = during.map((x) => x[k]).filter((x) => Number.isFinite(x));
      return { max: Math.max(0, ...v), mean: v.length ? v.reduce((a, b) => a + b, 0) / v.length : 0 };
    };
    const ld = lagStats('dtsLag');
    const ln = lagStats('natLag');
    const sd = lagStats('dtsBehind');
    const sn = lagStats('natBehind');
    const offered = Number(pgbenchTps(br));
    out.push(
      '',
      `pgbench: ${pgbenchProcessed(br)} transactions, ${pgbenchTps(br)} tps offered (target rate ${opt.rate})`,
      table([
        ['', 'pg-dts', 'native'],
        ['applied during the load (txn/s)', rateOf('dts').toFixed(0), rateOf('nat').toFixed(0)],
        ['applied during the load (changes/s)', (rateOf('dts') * CHANGES_PER_TXN).toFixed(0), (rateOf('nat') * CHANGES_PER_TXN).toFixed(0)],
        ['lag during the load, mean (bytes of WAL)', bytes(ld.mean), bytes(ln.mean)],
        ['lag during the load, max (bytes of WAL)', bytes(ld.max), bytes(ln.max)],
        ['lag during the load, mean (s: txns behind / rate)', `${sd.mean.toFixed(2)} s`, `${sn.mean.toFixed(2)} s`],
        ['lag during the load, max (s: txns behind / rate)', `${sd.max.toFixed(2)} s`, `${sn.max.toFixed(2)} s`],
        ['catch-up after the load stopped', caughtDts !== undefined ? sec(caughtDts) : 'not within 10 min', caughtNat !== undefined ? sec(caughtNat) : 'not within 10 min'],
      ]),
      `pg-dts kept up: ${rateOf('dts') >= offered * 0.97 ? 'yes' : 'no'} (applied ${ratio(rateOf('dts'), offered)} of the offered rate); worker peak RSS during the load ${mb(rss.peak('live'))}, worker CPU ${rss.cpuSec('live').toFixed(1)} s`,
    );
    console.log(out.slice(-3).join('\n'));

    // ── 2. one large transaction ──
    if (opt.bigMb > 0) {
      const n = Math.round((opt.bigMb * 1024 * 1024) / 1024); // ~1 KiB of payload a row
      say(`large transaction: INSERT of ${num(n)} rows of 1 KiB (${opt.bigMb} MB) in one transaction`);
      rss.begin('big');
      const ins = await timed(() => src.query(`INSERT INTO ${BIG} SELECT g, repeat(md5(g::text), 32) FROM generate_series(1, ${n}) g`));
      const committed = performance.now();
      const bigCount = async (c: Client) => Number((await one<{ n: string }>(c, `SELECT count(*)::text AS n FROM ${BIG}`)).n);
      let dtsMs: number | undefined;
      let natMs: number | undefined;
      await waitUntil(
        async () => {
          if (dtsMs === undefined && (await bigCount(dts)) === n) dtsMs = performance.now() - committed;
          if (natMs === undefined && (await bigCount(nat)) === n) natMs = performance.now() - committed;
          return dtsMs !== undefined && natMs !== undefined;
        },
        30 * 60_000,
        500,
      );
      const peak = rss.end('big');
      out.push(
        '',
        `== One ${opt.bigMb} MB transaction (${num(n)} rows; the INSERT took ${sec(ins.ms)} on the source) ==`,
        table([
          ['', 'pg-dts', 'native'],
          ['applied, from the source commit', dtsMs !== undefined ? sec(dtsMs) : 'not within 30 min', natMs !== undefined ? sec(natMs) : 'not within 30 min'],
        ]),
        `worker peak RSS while streaming and applying it: ${mb(peak)} (at start ${mb(rss.baseline)}); worker CPU ${rss.cpuSec('big').toFixed(1)} s`,
      );
      console.log(out.slice(-4).join('\n'));
    }

    // ── 3. cutover under load ──
    say(`cutover with pgbench running at ${opt.rate} tps`);
    const hBefore = await historyCount(src);
    const bench2 = startPgbench(source, DB, ['-c', String(opt.clients), '-j', '2', '-R', String(opt.rate), '-T', '600']);
    await sleep(5000);
    await driver.signal('cutover');
    const run = await driver.done;
    // The fence rejects the clients' next write (SQLSTATE 25006): pgbench stops on its own.
    const stopped = await Promise.race([bench2.done.then(() => true), sleep(10_000).then(() => false)]);
    if (!stopped) bench2.stop();
    const b2 = await bench2.done;
    const rejected = (b2.stderr.match(/25006|read-only|fenced|aborted/gi) ?? []).length;
    out.push(
      '',
      '== Cutover with the load running ==',
      `report: ${run.report.phase}; cutover window (source writes stopped, fence → release): ${run.report.cutoverWindowMs !== undefined ? sec(run.report.cutoverWindowMs) : 'n/a'}`,
      `phases: STOPPING_WRITES ${sec(run.phases.durations.STOPPING_WRITES ?? NaN)}, VALIDATING ${sec(run.phases.durations.VALIDATING ?? NaN)}, FINALIZING ${sec(run.phases.durations.FINALIZING ?? NaN)} (status polled every 100 ms)`,
      `pgbench during the cutover: ${num((await historyCount(src)) - hBefore)} transactions committed, ${rejected} client errors/aborts at the fence`,
    );
    if (run.report.phase !== 'COMPLETED') throw new Error(`migration ended in ${run.report.phase}: ${run.report.error ?? ''}`);
    let same = true;
    for (const t of [...PGBENCH_TABLES, BIG]) {
      const [a, b] = await Promise.all([contentHash(source, DB, t), contentHash(target, 'dts', t)]);
      if (a.rows !== b.rows || a.hash !== b.hash) {
        same = false;
        out.push(`  ${t}: source ${a.rows} rows, pg-dts target ${b.rows} rows, hashes ${a.hash === b.hash ? 'equal' : 'differ'}`);
      }
    }
    out.push(same ? 'pg-dts target identical to the source after the cutover (row counts and content hashes of every table)' : 'pg-dts target DIFFERS from the source (see above)');
    console.log(out.slice(-5).join('\n'));
    await target.query('DROP SUBSCRIPTION native_sub', [], 'native');
    await source.query('DROP PUBLICATION native_pub', [], DB);
    await worker.stop();

    // ── 4. backlog ──
    if (opt.backlog > 0) out.push('', ...(await backlogTest(source, target, opt)));

    console.log(`\n${out.join('\n')}`);
  } finally {
    for (const c of clients) await c.end().catch(() => undefined);
    for (const c of cleanups) await c().catch((e: unknown) => console.error('cleanup:', (e as Error).message));
  }
}

interface BacklogRun {
  /** Target database (and, for pg-dts, slot) of this run. */
  db: string;
  variant: number;
  ms: number;
  firstMs: number;
  walsenderSec: number;
  applySec: number;
  nodeSec: number;
}

/**
 * One backlog written once, applied several times over the same WAL: native first, then pg-dts once per
 * variant and round (variants interleaved: A B A B ...), each on its own slot into its own copy of the
 * tables. Paired runs over one backlog separate engine settings better than runs over separate backlogs.
 */
async function backlogTest(source: PgCluster, target: PgCluster, opt: Options): Promise<string[]> {
  const perClient = Math.ceil(opt.backlog / opt.clients);
  const txns = perClient * opt.clients;
  const runs: Array<{ db: string; variant: number }> = [];
  for (let r = 0; r < opt.rounds; r++) opt.variants.forEach((_, v) => runs.push({ db: `bl_dts_${runs.length + 1}`, variant: v }));
  const dbs = ['bl_native', ...runs.map((r) => r.db)];
  say(`backlog: copying ${DB} (pgbench tables) to ${dbs.join(', ')}`);
  for (const db of dbs) {
    await recreateDatabase(target, db);
    await bash(`pg_dump ${PGBENCH_TABLES.map((t) => `-t ${t}`).join(' ')} ${shq(source.uri(DB))} | psql -X -q -v ON_ERROR_STOP=1 ${shq(target.uri(db))}`);
  }
  // A variant with `writeMarks: true` applies to tables carrying the content proof's write-mark
  // trigger, as during SYNCING_WAL: what the marks cost the apply. `writeMarks: "chunks"`: the keyed
  // tables carry a count per chunk of 100,000 rows (sql.ts, chunk marks), as the proof arms them.
  for (const r of runs) {
    const marks = opt.variants[r.variant]!.writeMarks;
    if (!marks) continue;
    const c = await target.client(r.db);
    try {
      await ensureProofSchema(c, r.db);
      for (const t of PGBENCH_TABLES) {
        const key = marks === 'chunks' ? PGBENCH_KEYS[t] : undefined;
        if (key) {
          const q = insertProofChunksSql(r.db, t, await benchChunks(c, t, key.column));
          await c.query(q.text, q.values);
        }
        if (!(await armWriteMarks(c, r.db, { schema: 'public', name: t }, t, key))) throw new Error(`no write marks on ${t}`);
      }
    } finally {
      await c.end();
    }
  }
  await source.query(`CREATE PUBLICATION bl_pub FOR TABLE ${PGBENCH_TABLES.join(', ')}`, [], DB);
  for (const r of runs) await source.query(`SELECT pg_create_logical_replication_slot($1, 'pgoutput')`, [r.db], DB);
  await target.query(
    `CREATE SUBSCRIPTION bl_sub CONNECTION 'host=${source.host} port=${source.port} dbname=${DB} user=postgres' PUBLICATION bl_pub WITH (copy_data = false, enabled = false)`,
    [],
    'bl_native',
  );
  say(`backlog: pgbench -c ${opt.clients} -j 2 -t ${perClient} (${num(txns)} transactions) while nothing applies`);
  const b = await timed(() => startPgbench(source, DB, ['-c', String(opt.clients), '-j', '2', '-t', String(perClient)]).done);
  const srcC = await source.client(DB);
  // The last transaction of the backlog sets a marker in a ten-row table: both sides keep the source's
  // commit order, so once a side shows the marker every earlier transaction is there too. Polling it is
  // an index lookup; counting pgbench_history every 10 ms took a sizeable share of the two cores while
  // the sides applied (checked once at the end instead).
  const marker = `backlog done ${randomUUID()}`;
  await srcC.query('UPDATE pgbench_branches SET filler = $1 WHERE bid = 1', [marker]);
  const want = await historyCount(srcC);
  const lsnAfter = (await srcC.query<{ l: string }>('SELECT pg_current_wal_lsn()::text AS l')).rows[0]!.l;
  const walBytes = Number((await srcC.query<{ b: string }>(`SELECT (pg_current_wal_lsn() - confirmed_flush_lsn)::text AS b FROM pg_replication_slots WHERE slot_name = $1`, [runs[0]!.db])).rows[0]!.b);
  await srcC.end();
  say(`backlog written in ${sec(b.ms)} (${pgbenchTps(b.value)} tps): ${mb(walBytes)} of WAL behind every slot, up to ${lsnAfter}`);

  // Times until every transaction is on the target, and CPU seconds of the side's server processes
  // (walsender on the source, apply backend on the target), read from /proc while they run: on a shared
  // machine wall-clock time is noisy, CPU less so.
  const poll = async (db: string, q: { target: string; source: string }): Promise<{ ms: number; firstMs: number; w: CpuWatch }> => {
    const c = await target.client(db);
    const s = await source.client(DB);
    const w = new CpuWatch();
    let firstMs = NaN;
    try {
      const start = await historyCount(c);
      const t0 = performance.now();
      const ok = await waitUntil(
        async () => {
          if (w.apply === undefined) w.apply = (await c.query<{ pid: number }>(q.target)).rows[0]?.pid;
          if (w.walsender === undefined) w.walsender = (await s.query<{ pid: number }>(q.source)).rows[0]?.pid;
          w.sample();
          if (Number.isNaN(firstMs)) {
            // More rows than at the start, read without counting them all.
            const more = await one<{ more: boolean }>(c, 'SELECT count(*) > $1 AS more FROM (SELECT 1 FROM pgbench_history LIMIT $1 + 1) h', [start]);
            if (more.more) firstMs = performance.now() - t0;
          }
          return (await one<{ done: boolean }>(c, 'SELECT rtrim(filler) = $1 AS done FROM pgbench_branches WHERE bid = 1', [marker])).done;
        },
        30 * 60_000,
        10,
      );
      w.sample();
      const ms = ok ? performance.now() - t0 : NaN;
      if (ok && (await historyCount(c)) < want) throw new Error(`${db}: the marker arrived before every pgbench_history row (commit order broken)`);
      return { ms, firstMs, w };
    } finally {
      await c.end();
      await s.end();
    }
  };
  // Native alone first: enable the subscription and time until every transaction is on the target.
  const natPoll = poll('bl_native', {
    target: `SELECT pid FROM pg_stat_subscription WHERE subname = 'bl_sub' AND pid IS NOT NULL`,
    source: `SELECT pid FROM pg_stat_replication WHERE application_name = 'bl_sub'`,
  });
  await target.query('ALTER SUBSCRIPTION bl_sub ENABLE', [], 'bl_native');
  const nat = await natPoll;
  say(`backlog: native subscription applied ${num(txns)} transactions in ${sec(nat.ms)}`);
  // Then pg-dts's engine alone on each of its slots, over the same WAL.
  const done: BacklogRun[] = [];
  let same = true;
  for (const r of runs) {
    const controller = new AbortController();
    const cpu0 = process.cpuUsage();
    const dtsPoll = poll(r.db, {
      target: `SELECT pid FROM pg_stat_activity WHERE application_name = 'pg-dts apply ${r.db}'`,
      source: `SELECT pid FROM pg_stat_replication WHERE application_name = 'pg-dts walsender ${r.db}'`,
    });
    const applying = runApply({
      source: source.uri(DB),
      target: target.uri(r.db),
      slot: r.db,
      publication: 'bl_pub',
      tables: PGBENCH_TABLES.map((t) => ({ source: { schema: 'public', name: t }, target: { schema: 'public', name: t } })),
      signal: controller.signal,
      ...Object.fromEntries(Object.entries(opt.variants[r.variant]!).filter(([k]) => k !== 'writeMarks')),
    });
    applying.catch(() => undefined);
    const d = await Promise.race([dtsPoll, applying.then(() => ({ ms: NaN, firstMs: NaN, w: new CpuWatch() }))]);
    const nodeCpu = process.cpuUsage(cpu0);
    controller.abort();
    const result = await applying.catch((e: Error) => ({ error: e.message }));
    say(`backlog: pg-dts ${variantName(opt, r.variant)} applied ${num(txns)} transactions in ${sec(d.ms)} (${JSON.stringify(result)})`);
    done.push({ ...r, ms: d.ms, firstMs: d.firstMs, walsenderSec: d.w.walsenderSec, applySec: d.w.applySec, nodeSec: (nodeCpu.user + nodeCpu.system) / 1e6 });
  }
  for (const t of PGBENCH_TABLES) {
    const hashes = await Promise.all([contentHash(source, DB, t), ...dbs.map((db) => contentHash(target, db, t))]);
    if (hashes.some((h) => h.hash !== hashes[0]!.hash || h.rows !== hashes[0]!.rows)) same = false;
  }
  await target.query('DROP SUBSCRIPTION bl_sub', [], 'bl_native');
  for (const r of runs) await source.query(`SELECT pg_drop_replication_slot($1)`, [r.db], DB);
  await source.query('DROP PUBLICATION bl_pub', [], DB);

  const lines = [`== Backlog: ${num(txns)} pgbench transactions (${mb(walBytes)} of WAL) waiting in each slot, applied by each side alone ==`];
  const rows: string[][] = [['', ...done.map((d) => `pg-dts ${variantName(opt, d.variant)}`), 'native']];
  const col = (f: (d: BacklogRun) => string, n: string): string[] => [...done.map(f), n];
  rows.push(['time to apply the backlog (from start)', ...col((d) => sec(d.ms), sec(nat.ms))]);
  rows.push(['  of which until the first transaction landed', ...col((d) => sec(d.firstMs), sec(nat.firstMs))]);
  rows.push(['transactions/s (whole time)', ...col((d) => num(txns / (d.ms / 1000)), num(txns / (nat.ms / 1000)))]);
  rows.push(['transactions/s (after the first landed)', ...col((d) => num(txns / ((d.ms - d.firstMs) / 1000)), num(txns / ((nat.ms - nat.firstMs) / 1000)))]);
  rows.push(['changes/s', ...col((d) => num((txns * CHANGES_PER_TXN) / (d.ms / 1000)), num((txns * CHANGES_PER_TXN) / (nat.ms / 1000)))]);
  rows.push(['CPU: walsender (source)', ...col((d) => `${d.walsenderSec.toFixed(2)} s`, `${nat.w.walsenderSec.toFixed(2)} s`)]);
  rows.push(['CPU: apply backend (target)', ...col((d) => `${d.applySec.toFixed(2)} s`, `${nat.w.applySec.toFixed(2)} s`)]);
  rows.push(['CPU: pg-dts node process (this one, apply + polling)', ...col((d) => `${d.nodeSec.toFixed(2)} s`, '-')]);
  rows.push(['CPU: total', ...col((d) => `${(d.walsenderSec + d.applySec + d.nodeSec).toFixed(2)} s`, `${(nat.w.walsenderSec + nat.w.applySec).toFixed(2)} s`)]);
  rows.push(['throughput vs native', ...col((d) => ratio(nat.ms, d.ms), '1.00×')]);
  lines.push(table(rows));
  if (opt.variants.length > 1 || opt.rounds > 1) {
    for (let v = 0; v < opt.variants.length; v++) {
      const mine = done.filter((d) => d.variant === v);
      const med = medianOf(mine.map((d) => d.ms));
      lines.push(`pg-dts ${variantName(opt, v)}: ${mine.map((d) => sec(d.ms)).join(', ')}; median ${sec(med)} = ${ratio(nat.ms, med)} native's; node CPU median ${medianOf(mine.map((d) => d.nodeSec)).toFixed(2)} s`);
    }
  }
  lines.push(`pg-dts throughput = ${done.map((d) => ratio(nat.ms, d.ms)).join(', ')} native's (target ≥ 1.0×, aim 1.5×); every target ${same ? 'identical to the source' : 'DIFFERS from the source'}`);
  return lines;
}

function variantName(opt: Options, v: number): string {
  return opt.variants.length > 1 ? `#${v + 1}` : '';
}


/** Last CPU time seen of one side's walsender and apply backend (they may exit before the end). */
class CpuWatch {
  walsender: number | undefined;
  apply: number | undefined;
  walsenderSec = 0;
  applySec = 0;
  sample(): void {
    if (this.walsender !== undefined) this.walsenderSec = processCpuSec(this.walsender) ?? this.walsenderSec;
    if (this.apply !== undefined) this.applySec = processCpuSec(this.apply) ?? this.applySec;
  }
}

main().catch((err: unknown) => {
  console.error(err instanceof Error ? err.stack ?? err.message : err);
  process.exit(1);
});

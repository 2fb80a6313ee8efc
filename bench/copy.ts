/**
 * Initial-copy benchmark (issue 7): in one run, on the same two throwaway clusters, times
 *   - pg-dts through a real Temporal dev server and a worker in a child process (`worker/main.ts`),
 *     offline and online: spec → COMPLETED and the MIGRATING_DATA phase alone;
 *   - `pgcopydb clone` with the same parallelism (--table-jobs J --index-jobs J);
 *   - pg-dts's copy activity alone (activities/copy.ts, in this process) the way the workflow could
 *     drive it: tables without their primary key, large tables split into page ranges, then every
 *     table's indexes and ANALYZE in parallel — what pg-dts would take with the PK built after the load;
 *   - the raw limit: `psql -c "\copy t to stdout" | psql -c "\copy t from stdin"` per table, J at a time,
 *     into tables without indexes (pg_dump --section=pre-data), and again into tables with their
 *     primary key (what pg-dts loads into), so the per-table stream can be compared like for like.
 * Every target gets a fresh database; every target is checked against the source (row count and an
 * order-independent content hash per table). Also samples the worker's peak RSS while it copies.
 *
 *   npx tsx bench/copy.ts [--scale N] [--jobs J] [--wide-rows R] [--only raw,raw-pk,pgcopydb,offline,online,activity]
 *                         [--worker-variants 'name=ENV=V,ENV=V;--node-flag|name2=...']
 * With --worker-variants, every pg-dts run is made once per variant, each with a worker process of its
 * own started with that environment and those node flags (same clusters, same source, interleaved), and
 * the memory summary adds the worker's RSS right after it started.
 */
import { Command } from 'commander';
import { readFileSync, statSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { randomUUID } from 'node:crypto';
import type { PgCluster } from '../test/harness/pg-cluster';
import { startTemporal } from '../test/harness/temporal';
import { quietTemporalLogs } from '../worker/logging';
import type { MigrationStatus } from '../workflows/contract';
import { copyTable, prepareRangedCopy, type CopyRange } from '../activities/copy';
import { planCopies } from '../activities/copy-plan';
import {
  bash,
  contentHash,
  createWideTable,
  dropDatabase,
  machineDescription,
  mb,
  num,
  parallel,
  pgbenchInit,
  pgcopydbClone,
  pgcopydbPath,
  ratio,
  recreateDatabase,
  RssMonitor,
  run,
  say,
  sec,
  shq,
  startBenchClusters,
  startMigration,
  procMemory,
  sleep,
  table,
  tableSizes,
  timed,
  WorkerProcess,
  type MigrationRun,
  type TableSize,
} from './common';

const SOURCE_DB = 'bench';
const ALL_RUNS = ['raw', 'raw-pk', 'pgcopydb', 'offline', 'online', 'activity'] as const;
type RunName = (typeof ALL_RUNS)[number];

interface Options {
  scale: number;
  jobs: number;
  wideRows: number;
  only: RunName[];
  verify: boolean;
  repeat: number;
  variants: WorkerVariant[];
  copyBuffers: number[];
  /** spec.copy.splitAboveBytes for the pg-dts runs (undefined: the spec's default). */
  splitAbove?: number;
  /** log_min_duration_statement on the target, and each run's slowest statements printed. */
  slowMs?: number;
}

export interface WorkerVariant {
  name: string;
  env?: Record<string, string>;
  nodeFlags?: string[];
}

/** 'name=ENV=V,ENV=V;--flag --flag|name2=...' → variants. */
export function parseWorkerVariants(spec: string | undefined): WorkerVariant[] {
  if (!spec) return [];
  return spec.split('|').map((v) => {
    const [head = '', flags = ''] = v.split(';');
    const eq = head.indexOf('=');
    const name = eq === -1 ? head : head.slice(0, eq);
    const env: Record<string, string> = {};
    for (const kv of (eq === -1 ? '' : head.slice(eq + 1)).split(',').filter((x) => x.includes('='))) env[kv.slice(0, kv.indexOf('='))] = kv.slice(kv.indexOf('=') + 1);
    return { name, env, nodeFlags: flags.split(' ').filter(Boolean) };
  });
}

function options(): Options {
  const cmd = new Command()
    .name('bench/copy.ts')
    .description('initial copy: pg-dts vs pgcopydb vs a raw psql pipe')
    .option('--scale <n>', 'pgbench scale of the source (100,000 pgbench_accounts rows per unit)', '200')
    .option('--jobs <n>', 'parallelism for every tool (tables at a time; pgcopydb --table-jobs and --index-jobs)', '4')
    .option('--wide-rows <n>', 'rows in the wide text/jsonb/bytea table (default scale × 5,000)')
    .option('--only <list>', `comma-separated subset of ${ALL_RUNS.join(',')}`, ALL_RUNS.join(','))
    .option('--repeat <n>', 'run every tool this many times (rotating the order) and report medians', '1')
    .option('--no-verify', 'skip the content-hash comparison of every target with the source')
    .option('--copy-buffers <list>', 'with activity: one activity run per stream buffer size in KiB (PG_DTS_COPY_BUFFER_KB), e.g. 256,1024')
    .option('--worker-variants <spec>', "pg-dts runs once per worker variant: 'name=ENV=V,ENV=V;--node-flag|name2=...'")
    .option('--split-above <bytes>', "pg-dts spec.copy.splitAboveBytes (tables larger are copied in page ranges; default the spec's 4 GiB)")
    .option('--slow-statements <ms>', "log the target's statements that take at least this long (log_min_duration_statement) and print each run's slowest")
    .parse();
  const o = cmd.opts<{ scale: string; jobs: string; wideRows?: string; only: string; verify: boolean; repeat: string; workerVariants?: string; copyBuffers?: string; splitAbove?: string; slowStatements?: string }>();
  const scale = Number(o.scale);
  const only = o.only.split(',').map((s) => s.trim()) as RunName[];
  for (const r of only) if (!ALL_RUNS.includes(r)) cmd.error(`unknown run ${r}`);
  return { scale, jobs: Number(o.jobs), wideRows: o.wideRows ? Number(o.wideRows) : scale * 5000, only, verify: o.verify, repeat: Math.max(1, Number(o.repeat)), variants: parseWorkerVariants(o.workerVariants), copyBuffers: o.copyBuffers ? o.copyBuffers.split(',').map(Number) : [], splitAbove: o.splitAbove ? Number(o.splitAbove) : undefined, slowMs: o.slowStatements ? Number(o.slowStatements) : undefined };
}

/**
 * The target's slowest statements while `fn` runs (its server log, log_min_duration_statement on):
 * where each tool's time goes after the data (index builds, constraints, ANALYZE).
 */
async function slowStatements<T>(target: PgCluster, label: string, fn: () => Promise<T>): Promise<T> {
  const log = join(dirname(target.dataDir), 'server.log');
  const from = statSync(log).size;
  const out = await fn();
  const text = readFileSync(log).subarray(from).toString('utf8');
  const found = [...text.matchAll(/duration: ([\d.]+) ms\s+(?:statement|execute [^:]*): ([^\n]*)/g)].map((m) => ({ ms: Number(m[1]), sql: m[2]!.slice(0, 110) }));
  found.sort((a, b) => b.ms - a.ms);
  say(`${label}: the target's ${Math.min(8, found.length)} slowest statements`);
  for (const f of found.slice(0, 8)) say(`  ${sec(f.ms).padStart(8)}  ${f.sql}`);
  return out;
}

interface ToolResult {
  name: string;
  totalMs: number;
  /** The data phase alone where the tool separates it (pg-dts MIGRATING_DATA; raw: all of it). */
  dataMs?: number;
  perTableMs: Map<string, number>;
  note?: string;
}

async function main(): Promise<void> {
  const opt = options();
  quietTemporalLogs('ERROR');
  say(`machine: ${machineDescription()}`);
  say(`scale ${opt.scale}, jobs ${opt.jobs}, wide rows ${num(opt.wideRows)}; runs: ${opt.only.join(', ')}`);
  const pgcopydb = pgcopydbPath();
  if (opt.only.includes('pgcopydb') && !pgcopydb) throw new Error('pgcopydb is not installed (apt-get install pgcopydb) or leave it out with --only');
  if (pgcopydb) say((await run(pgcopydb, ['--version'])).stdout.split('\n').find((l) => l.startsWith('pgcopydb')) ?? 'pgcopydb');

  const { source, target, destroy } = await startBenchClusters();
  if (opt.slowMs !== undefined) {
    await target.query(`ALTER SYSTEM SET log_min_duration_statement = ${Math.round(opt.slowMs)}`);
    await target.query('SELECT pg_reload_conf()');
  }
  const cleanups: Array<() => Promise<void>> = [destroy];
  try {
    await source.createDatabase(SOURCE_DB);
    const load = await timed(async () => {
      await pgbenchInit(source, SOURCE_DB, opt.scale);
      await createWideTable(source, SOURCE_DB, opt.wideRows);
    });
    const sizes = await tableSizes(source, SOURCE_DB);
    const total = sizes.reduce((a, s) => a + s.bytes, 0);
    say(`source loaded in ${sec(load.ms)}: ${mb(total)} of tables (+ ${mb(sizes.reduce((a, s) => a + s.indexBytes, 0))} of indexes)`);
    console.log(table([['table', 'rows', 'size', 'indexes'], ...sizes.map((s) => [s.table, num(s.rows), mb(s.bytes), mb(s.indexBytes)])]));
    const sourceHashes = opt.verify ? await hashes(source, SOURCE_DB, sizes) : undefined;

    const verify = async (name: string, db: string) => {
      if (!sourceHashes) return;
      const got = await hashes(target, db, sizes);
      const bad = sizes.filter((s) => got.get(s.table) !== sourceHashes.get(s.table)).map((s) => s.table);
      if (bad.length) throw new Error(`${name}: target differs from the source in ${bad.join(', ')}`);
      say(`${name}: every table identical to the source (row count and content hash)`);
    };

    const dtsRuns = opt.only.filter((r): r is 'offline' | 'online' => r === 'offline' || r === 'online');
    const memory: string[] = [];
    let dts: { temporal: Awaited<ReturnType<typeof startTemporal>>; taskQueue: string; rss: RssMonitor } | undefined;
    let temporal: Awaited<ReturnType<typeof startTemporal>> | undefined;
    if (dtsRuns.length) {
      say('starting a Temporal dev server and a worker process (worker/main.ts)');
      temporal = await startTemporal();
      const t = temporal;
      cleanups.unshift(() => t.teardown());
      if (!opt.variants.length) {
        const taskQueue = `bench-${randomUUID().slice(0, 8)}`;
        const worker = await WorkerProcess.start(temporal.address, taskQueue);
        cleanups.unshift(() => worker.stop());
        const rss = new RssMonitor(worker.pid);
        cleanups.unshift(async () => rss.stop());
        memory.push(`worker process (pid ${worker.pid}) RSS after start, idle: ${mb(rss.baseline)}`);
        dts = { temporal, taskQueue, rss };
      }
    }
    /** With variants: a worker of the variant's own for one run. */
    const withVariant = async <T>(v: WorkerVariant, fn: () => Promise<T>): Promise<T> => {
      const taskQueue = `bench-${randomUUID().slice(0, 8)}`;
      const worker = await WorkerProcess.start(temporal!.address, taskQueue, { env: v.env ?? {}, nodeFlags: v.nodeFlags ?? [] });
      const rss = new RssMonitor(worker.pid);
      await sleep(3000); // settled, like an idle worker
      const idle = procMemory(worker.pid)?.rss ?? 0;
      memory.push(`[${v.name}] worker RSS after start, idle: ${mb(idle)}`);
      dts = { temporal: temporal!, taskQueue, rss };
      try {
        return await fn();
      } finally {
        rss.stop();
        await worker.stop();
        dts = undefined;
      }
    };
    const largest = sizes[0]!.table;

    const dtsRun = async (mode: 'offline' | 'online', rep: number, variant?: string): Promise<ToolResult> => {
      const { temporal, taskQueue, rss } = dts!;
      const label = variant ? `${mode} [${variant}]` : mode;
      const db = `dts_${mode}`;
      const w = (k: string) => `${mode}-${k}-${rep}`;
      await recreateDatabase(target, db);
      say(`pg-dts ${mode}: migrating ${SOURCE_DB} -> ${db} (parallelism ${opt.jobs})`);
      let largestState = '';
      let dataOpen = false;
      const onStatus = (s: MigrationStatus) => {
        // Windows: the whole MIGRATING_DATA phase, and the largest table's own copy.
        if (s.phase === 'MIGRATING_DATA' && !dataOpen) {
          dataOpen = true;
          rss.begin(w('data'));
        } else if (s.phase !== 'MIGRATING_DATA' && dataOpen) {
          dataOpen = false;
          rss.end(w('data'));
        }
        const t = s.tables.find((x) => x.source === `public.${largest}`);
        if (t && t.state !== largestState) {
          if (t.state === 'copying') rss.begin(w('largest'));
          if (largestState === 'copying') rss.end(w('largest'));
          largestState = t.state;
        }
      };
      rss.begin(w('all'));
      const spec = { source: source.uri(SOURCE_DB), target: target.uri(db), mode, parallelism: opt.jobs, ...(opt.splitAbove !== undefined ? { copy: { splitAboveBytes: opt.splitAbove } } : {}) };
      const driver = await startMigration(temporal.client, taskQueue, spec, { onStatus });
      const r: MigrationRun = await driver.done;
      rss.end(w('all'));
      if (dataOpen) rss.end(w('data'));
      if (r.report.phase !== 'COMPLETED') throw new Error(`pg-dts ${mode} ended in ${r.report.phase}: ${r.report.error ?? ''}`);
      const phases = Object.entries(r.phases.durations)
        .map(([p, ms]) => `${p} ${sec(ms)}`)
        .join(', ');
      say(`pg-dts ${label}: COMPLETED in ${sec(r.totalMs)} (${phases})`);
      memory.push(
        `pg-dts ${label} (run ${rep}): worker peak RSS during the copy of ${largest}: ${mb(rss.peak(w('largest')))}; ` +
          `during MIGRATING_DATA: ${mb(rss.peak(w('data')))}; whole migration: ${mb(rss.peak(w('all')))}; worker CPU ${rss.cpuSec(w('all')).toFixed(1)} s`,
      );
      return {
        name: `pg-dts ${label}`,
        totalMs: r.totalMs,
        dataMs: r.phases.durations.MIGRATING_DATA,
        perTableMs: new Map(r.report.tables.map((t) => [t.source.replace(/^public\./, ''), t.copyDurationMs ?? NaN])),
      };
    };

    const runOne = async (name: RunName, rep: number): Promise<{ result: ToolResult; db: string }> => {
      switch (name) {
        case 'raw':
          return { result: await rawPipe(source, target, sizes, opt.jobs, false), db: 'raw' };
        case 'raw-pk':
          return { result: await rawPipe(source, target, sizes, opt.jobs, true), db: 'raw' };
        case 'pgcopydb':
          return { result: await pgcopydbRun(pgcopydb!, source, target, opt.jobs, rep === 1), db: 'pgcopydb' };
        case 'activity':
          return { result: await activityRun(source, target, sizes, opt.jobs), db: 'proj' };
        case 'offline':
        case 'online':
          return { result: await dtsRun(name, rep), db: `dts_${name}` };
      }
    };
    const runAll = async (name: RunName, rep: number): Promise<Array<{ result: ToolResult; db: string }>> => {
      if (name === 'activity' && opt.copyBuffers.length) {
        const out: Array<{ result: ToolResult; db: string }> = [];
        const sizes = opt.copyBuffers.map((_, i) => opt.copyBuffers[(i + rep - 1) % opt.copyBuffers.length]!);
        for (const kb of sizes) {
          process.env.PG_DTS_COPY_BUFFER_KB = String(kb);
          const { result } = await runOne(name, rep);
          out.push({ result: { ...result, name: `${result.name} [${kb} KiB buffers]` }, db: '' });
          await dropDatabase(target, 'proj');
        }
        delete process.env.PG_DTS_COPY_BUFFER_KB;
        return out;
      }
      if (!opt.variants.length || (name !== 'online' && name !== 'offline')) return [await runOne(name, rep)];
      const out: Array<{ result: ToolResult; db: string }> = [];
      // Rotated like the tools, so no variant always runs first.
      const vs = opt.variants.map((_, i) => opt.variants[(i + rep - 1) % opt.variants.length]!);
      for (const v of vs) {
        const result = await withVariant(v, () => dtsRun(name, rep, v.name));
        out.push({ result, db: '' });
        if (rep === 1) await verify(result.name, `dts_${name}`).catch((e: Error) => say(e.message));
        await dropDatabase(target, `dts_${name}`);
      }
      return out;
    };

    // Each repetition runs every tool once, in a rotated order, so a burst of load from elsewhere on
    // the machine does not always hit the same tool; the summary takes each tool's median.
    const byTool = new Map<string, ToolResult[]>();
    for (let rep = 1; rep <= opt.repeat; rep++) {
      const order = opt.only.map((_, i) => opt.only[(i + rep - 1) % opt.only.length]!);
      if (opt.repeat > 1) say(`── repetition ${rep} of ${opt.repeat}: ${order.join(', ')} ──`);
      for (const name of order) {
        const runs = opt.slowMs !== undefined ? await slowStatements(target, `${name} (run ${rep})`, () => runAll(name, rep)) : await runAll(name, rep);
        for (const { result, db } of runs) {
          byTool.set(result.name, [...(byTool.get(result.name) ?? []), result]);
          if (rep === 1 && db) await verify(result.name, db);
        }
        await dropDatabase(target, name === 'online' || name === 'offline' ? `dts_${name}` : name === 'raw-pk' ? 'raw' : name === 'activity' ? 'proj' : name);
      }
    }
    const results: ToolResult[] = [...byTool.values()].map((runs) => median(runs)).filter((r): r is ToolResult => r !== undefined);

    // ── Summary ──
    console.log(`\n== Initial copy: whole run${opt.repeat > 1 ? ` (median of ${opt.repeat} runs)` : ''} ==`);
    const byName = new Map(results.map((r) => [r.name, r]));
    const ref = byName.get('pgcopydb');
    console.log(
      table([
        ['tool', 'total', 'data phase', 'MB/s (total)', 'vs pgcopydb (total)', 'every run (total)'],
        ...results.map((r) => [
          r.name,
          sec(r.totalMs),
          r.dataMs !== undefined ? sec(r.dataMs) : '',
          (total / 1024 / 1024 / (r.totalMs / 1000)).toFixed(1),
          ref ? ratio(r.totalMs, ref.totalMs) : '',
          r.note ?? '',
        ]),
      ]),
    );
    const raw = byName.get('raw pipe');
    const rawPk = byName.get('raw pipe (with PK)');
    console.log('\n== Per table: copy stream time (pg-dts copyTable activity vs raw psql pipe, same parallelism) ==');
    const rows: string[][] = [['table', 'rows', 'raw', 'raw (PK)', ...results.filter((r) => r.name.startsWith('pg-dts')).flatMap((r) => [r.name.replace('pg-dts ', '').split(' ')[0]!, 'vs raw', 'vs raw(PK)'])]];
    for (const s of sizes) {
      const rr = raw?.perTableMs.get(s.table);
      const rp = rawPk?.perTableMs.get(s.table);
      const row = [s.table, num(s.rows), rr !== undefined ? sec(rr) : '', rp !== undefined ? sec(rp) : ''];
      for (const d of results.filter((r) => r.name.startsWith('pg-dts'))) {
        const ms = d.perTableMs.get(s.table);
        // Throughput ratio = raw time / our time (≥ 0.9 is the target).
        row.push(ms !== undefined ? sec(ms) : '', ms && rr ? ratio(rr, ms) : '', ms && rp ? ratio(rp, ms) : '');
      }
      rows.push(row);
    }
    console.log(table(rows));
    console.log('(vs raw = raw pipe time / pg-dts time, i.e. our throughput as a fraction of the pipe\'s; target ≥ 0.90×)');
    if (memory.length) console.log(`\n== Worker memory (VmRSS/VmHWM of the worker child process, sampled from /proc) ==\n${memory.join('\n')}`);
    if (ref) {
      for (const d of results.filter((r) => r.name.startsWith('pg-dts'))) {
        console.log(`${d.name}: ${ratio(d.totalMs, ref.totalMs)} pgcopydb's time for the whole copy (target ≤ 1.00×); MIGRATING_DATA alone ${d.dataMs !== undefined ? ratio(d.dataMs, ref.totalMs) : 'n/a'}`);
      }
    }
  } finally {
    for (const c of cleanups) await c().catch((e: unknown) => console.error('cleanup:', (e as Error).message));
  }
}

const TOOL_NAMES: Record<RunName, string> = {
  raw: 'raw pipe',
  'raw-pk': 'raw pipe (with PK)',
  pgcopydb: 'pgcopydb',
  activity: 'pg-dts activity (PK after the load, ranges)',
  offline: 'pg-dts offline',
  online: 'pg-dts online',
};
const toolName = (r: RunName): string => TOOL_NAMES[r];

/** Per metric, the median over the repetitions (the upper one of two). */
function median(runs: ToolResult[]): ToolResult | undefined {
  if (!runs.length) return undefined;
  const med = (v: number[]) => [...v].sort((a, b) => a - b)[Math.floor(v.length / 2)]!;
  const tables = new Set(runs.flatMap((r) => [...r.perTableMs.keys()]));
  const dataMs = runs.every((r) => r.dataMs !== undefined) ? med(runs.map((r) => r.dataMs!)) : undefined;
  return {
    name: runs[0]!.name,
    totalMs: med(runs.map((r) => r.totalMs)),
    dataMs,
    perTableMs: new Map([...tables].map((t) => [t, med(runs.map((r) => r.perTableMs.get(t) ?? NaN))])),
    note: runs.length > 1 ? `runs: ${runs.map((r) => sec(r.totalMs)).join(', ')}` : undefined,
  };
}

async function hashes(cluster: PgCluster, db: string, sizes: TableSize[]): Promise<Map<string, string>> {
  const m = new Map<string, string>();
  for (const s of sizes) {
    const h = await contentHash(cluster, db, s.table);
    m.set(s.table, `${h.rows}:${h.hash}`);
  }
  return m;
}

/** Per table `psql \copy to stdout | psql \copy from stdin`, `jobs` tables at a time. */
async function rawPipe(source: PgCluster, target: PgCluster, sizes: TableSize[], jobs: number, withPk: boolean): Promise<ToolResult> {
  const name = toolName(withPk ? 'raw-pk' : 'raw');
  await recreateDatabase(target, 'raw');
  // Tables only (pre-data); with PK: also post-data minus the secondary index, i.e. what pg-dts loads into.
  const sections = withPk ? '--section=pre-data --section=post-data' : '--section=pre-data';
  await bash(`pg_dump -s ${sections} ${shq(source.uri(SOURCE_DB))} | psql -X -q -v ON_ERROR_STOP=1 ${shq(target.uri('raw'))}`);
  if (withPk) await target.query('DROP INDEX IF EXISTS bench_wide_created_at', [], 'raw');
  say(`${name}: ${jobs} tables at a time`);
  const perTableMs = new Map<string, number>();
  const all = await timed(() =>
    parallel(sizes, jobs, async (s) => {
      const copyOut = `\\copy public.${s.table} to stdout`;
      const copyIn = `\\copy public.${s.table} from stdin`;
      const r = await timed(() => bash(`psql -X -q ${shq(source.uri(SOURCE_DB))} -c ${shq(copyOut)} | psql -X -q -v ON_ERROR_STOP=1 ${shq(target.uri('raw'))} -c ${shq(copyIn)}`));
      perTableMs.set(s.table, r.ms);
    }),
  );
  say(`${name}: ${sec(all.ms)}`);
  return { name, totalMs: all.ms, dataMs: all.ms, perTableMs };
}

/**
 * activities/copy.ts driven like the workflow could drive it: pre-data tables (no PK), tables over
 * 1 GiB in `jobs` page ranges, every unit `jobs` at a time; then per table its indexes/constraints
 * (pg_dump post-data) and ANALYZE, `jobs` tables at a time.
 */
async function activityRun(source: PgCluster, target: PgCluster, sizes: TableSize[], jobs: number): Promise<ToolResult> {
  const name = toolName('activity');
  await recreateDatabase(target, 'proj');
  await bash(`pg_dump -s --section=pre-data ${shq(source.uri(SOURCE_DB))} | psql -X -q -v ON_ERROR_STOP=1 ${shq(target.uri('proj'))}`);
  const cols = new Map<string, string[]>();
  for (const s of sizes) {
    const r = await source.query<{ a: string }>(
      `SELECT attname AS a FROM pg_attribute WHERE attrelid = $1::regclass AND attnum > 0 AND NOT attisdropped AND attgenerated = '' ORDER BY attnum`,
      [`public.${s.table}`],
      SOURCE_DB,
    );
    cols.set(s.table, r.map((x) => x.a));
  }
  say(`${name}: ${jobs} units at a time`);
  const perTableMs = new Map<string, number>();
  const hooks = { heartbeat: () => undefined, signal: new AbortController().signal };
  const started = performance.now();
  const all = await timed(async () => {
    const units: Array<{ table: string; range?: CopyRange }> = [];
    for (const s of sizes) {
      const q = { schema: 'public', name: s.table };
      const [plan] = await planCopies({ source: source.uri(SOURCE_DB), tables: [q], maxRanges: jobs });
      const ranges = plan?.ranges;
      if (ranges) {
        await prepareRangedCopy({ target: target.uri('proj'), table: q });
        units.push(...ranges.map((range) => ({ table: s.table, range })));
      } else units.push({ table: s.table });
    }
    const spans = new Map<string, { from: number; to: number }>();
    await parallel(units, jobs, async (u) => {
      const q = { schema: 'public', name: u.table };
      const from = performance.now();
      await copyTable({ source: source.uri(SOURCE_DB), target: target.uri('proj'), table: { source: q, target: q, copyColumns: cols.get(u.table)! }, range: u.range }, hooks);
      const sp = spans.get(u.table);
      spans.set(u.table, { from: Math.min(sp?.from ?? from, from), to: performance.now() });
    });
    for (const [t, sp] of spans) perTableMs.set(t, sp.to - sp.from);
    const copied = performance.now();
    await parallel(sizes, jobs, async (s) => {
      await bash(`pg_dump -s --section=post-data -t public.${s.table} ${shq(source.uri(SOURCE_DB))} | psql -X -q -v ON_ERROR_STOP=1 ${shq(target.uri('proj'))}`);
      await target.query(`ANALYZE public.${s.table}`, [], 'proj');
    });
    say(`${name}: copy ${sec(copied - started)}, then indexes and ANALYZE ${sec(performance.now() - copied)}`);
  });
  say(`${name}: ${sec(all.ms)}`);
  return { name, totalMs: all.ms, dataMs: all.ms, perTableMs };
}

async function pgcopydbRun(bin: string, source: PgCluster, target: PgCluster, jobs: number, printSummary: boolean): Promise<ToolResult> {
  await recreateDatabase(target, 'pgcopydb');
  const r = await pgcopydbClone(bin, source.uri(SOURCE_DB), target.uri('pgcopydb'), jobs);
  // pgcopydb prints its own per-step timing summary (a table) on stdout.
  if (r.summary && printSummary) console.log(r.summary);
  return { name: 'pgcopydb', totalMs: r.ms, perTableMs: new Map() };
}

main().catch((err: unknown) => {
  console.error(err instanceof Error ? err.stack ?? err.message : err);
  process.exit(1);
});

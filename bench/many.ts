/**
 * Many-tables benchmark (issue 16): a database of thousands of small tables (the schema-per-tenant
 * shape: primary key, one index, a few rows each), or one partitioned table of many partitions,
 * migrated in one run, on the same two throwaway clusters, by
 *   - pg-dts: a worker in a child process (`worker/main.ts`), the workflow started by a Temporal
 *     client against a real dev server, online with auto cutover and the default validation,
 *     spec → COMPLETED;
 *   - `pgcopydb clone` with the same parallelism (--table-jobs J --index-jobs J).
 * Prints both times and the ratio, every workflow run's history size (events, bytes, largest payload,
 * longest workflow task) and the worker's peak RSS; then checks every table of both targets against
 * the source (row count and content hash).
 *
 *   npx tsx bench/many.ts [--tables 10000 | --partitions 1000] [--rows 20] [--jobs 2] [--only dts,pgcopydb] [--max-write-stop S]
 */
import { Command } from 'commander';
import { randomUUID } from 'node:crypto';
import { startCluster, type PgCluster } from '../test/harness/pg-cluster';
import { historyLimits } from '../test/harness/history';
import { startTemporal } from '../test/harness/temporal';
import { quietTemporalLogs } from '../worker/logging';
import { BENCH_SETTINGS, machineDescription, mb, num, pgcopydbClone, pgcopydbPath, ratio, recreateDatabase, RssMonitor, say, sec, startMigration, table, timed, WorkerProcess } from './common';

const SOURCE_DB = 'many';
const TOOLS = ['dts', 'pgcopydb'] as const;
type Tool = (typeof TOOLS)[number];

interface Options {
  tables: number;
  partitions: number;
  rows: number;
  jobs: number;
  only: Tool[];
  maxWriteStop?: number;
  validation?: string;
}

function options(): Options {
  const cmd = new Command()
    .description('thousands of tables (or partitions): pg-dts vs pgcopydb clone')
    .option('--tables <n>', 'small tables, each with a primary key, one index and --rows rows', '10000')
    .option('--partitions <n>', 'instead: one table partitioned by range into this many partitions, --rows rows each')
    .option('--rows <n>', 'rows per table or partition', '20')
    .option('--jobs <n>', 'parallelism for both tools (spec.parallelism; pgcopydb --table-jobs and --index-jobs)', '2')
    .option('--only <list>', `comma-separated: ${TOOLS.join(',')}`, TOOLS.join(','))
    .option('--validation <json>', 'spec.validation for pg-dts, as JSON (default: the spec default)')
    .option('--max-write-stop <seconds>', 'spec cutover.maxWriteStopSeconds for pg-dts (default: the spec default, 30)')
    .parse();
  const o = cmd.opts<{ tables: string; partitions?: string; rows: string; jobs: string; only: string; maxWriteStop?: string; validation?: string }>();
  const only = o.only.split(',').map((s) => s.trim()) as Tool[];
  for (const t of only) if (!TOOLS.includes(t)) throw new Error(`--only: unknown tool ${t}`);
  return {
    tables: o.partitions ? 0 : Number(o.tables),
    partitions: Number(o.partitions ?? 0),
    rows: Number(o.rows),
    jobs: Number(o.jobs),
    only,
    ...(o.maxWriteStop ? { maxWriteStop: Number(o.maxWriteStop) } : {}),
    ...(o.validation ? { validation: o.validation } : {}),
  };
}

/** The source: N tables t00001… in public, or one table `events` with P partitions. */
async function createSource(source: PgCluster, opt: Options): Promise<number> {
  await recreateDatabase(source, SOURCE_DB);
  const c = await source.client(SOURCE_DB);
  try {
    if (opt.partitions) {
      await c.query(`CREATE TABLE public.events (id bigint NOT NULL, day int NOT NULL, payload text, PRIMARY KEY (day, id)) PARTITION BY RANGE (day)`);
      await c.query(`CREATE INDEX ON public.events (payload)`);
      for (let lo = 0; lo < opt.partitions; lo += 200) {
        const hi = Math.min(opt.partitions, lo + 200);
        await c.query(`DO $$ BEGIN FOR p IN ${lo}..${hi - 1} LOOP
          EXECUTE format('CREATE TABLE public.%I PARTITION OF public.events FOR VALUES FROM (%s) TO (%s)', 'events_p' || lpad(p::text, 5, '0'), p, p + 1);
        END LOOP; END $$`);
      }
      await c.query(`INSERT INTO public.events SELECT g, p, md5(g::text) FROM generate_series(0, $1::int - 1) p, generate_series(1, $2::int) g`, [opt.partitions, opt.rows]);
      return opt.partitions;
    }
    for (let lo = 1; lo <= opt.tables; lo += 250) {
      const hi = Math.min(opt.tables, lo + 249);
      await c.query(`DO $$ DECLARE t text; BEGIN FOR i IN ${lo}..${hi} LOOP
        t := 't' || lpad(i::text, 5, '0');
        EXECUTE format('CREATE TABLE public.%I (id int PRIMARY KEY, name text NOT NULL, created timestamptz NOT NULL DEFAULT now())', t);
        EXECUTE format('CREATE INDEX ON public.%I (name)', t);
        EXECUTE format('INSERT INTO public.%I (id, name) SELECT g, md5(g::text) FROM generate_series(1, ${opt.rows}) g', t);
      END LOOP; END $$`);
    }
    return opt.tables;
  } finally {
    await c.end();
  }
}

/** Row count and content hash of every plain table (partitions included) in public, one query. */
async function hashes(cluster: PgCluster, db: string): Promise<Map<string, string>> {
  const rows = await cluster.query<{ t: string; h: string }>(
    `SELECT c.relname AS t,
            (xpath('/row/h/text()', query_to_xml(format('SELECT count(*) || '':'' || coalesce(sum(hashtextextended(r::text, 0)), 0) AS h FROM public.%I r', c.relname), false, true, '')))[1]::text AS h
       FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
      WHERE n.nspname = 'public' AND c.relkind = 'r'`,
    [],
    db,
  );
  return new Map(rows.map((r) => [r.t, r.h]));
}

function sameAs(name: string, want: Map<string, string>, got: Map<string, string>): void {
  const bad = [...want].filter(([t, h]) => got.get(t) !== h).map(([t]) => t);
  if (bad.length) throw new Error(`${name}: ${bad.length} of ${want.size} tables differ from the source (first: ${bad.slice(0, 5).join(', ')})`);
  say(`${name}: all ${want.size} tables identical to the source (row count and content hash)`);
}

async function main(): Promise<void> {
  quietTemporalLogs();
  const opt = options();
  say(machineDescription());
  // pg_dump/pgcopydb lock every table in one transaction: the lock table must hold them all.
  const settings = { ...BENCH_SETTINGS, max_locks_per_transaction: 1024 };
  const [source, target] = await Promise.all([startCluster({ name: 'many-source', settings }), startCluster({ name: 'many-target', settings })]);
  const cleanups: Array<() => Promise<unknown>> = [() => source.destroy(), () => target.destroy()];
  const results: Array<{ tool: Tool; ms: number }> = [];
  try {
    const shape = opt.partitions ? `1 table of ${num(opt.partitions)} partitions` : `${num(opt.tables)} tables`;
    say(`source: ${shape}, ${opt.rows} rows each`);
    const made = await timed(() => createSource(source, opt));
    say(`source created in ${sec(made.ms)}`);
    const want = await hashes(source, SOURCE_DB);

    if (opt.only.includes('dts')) {
      say('starting a Temporal dev server and a worker process (worker/main.ts)');
      const temporal = await startTemporal();
      cleanups.unshift(() => temporal.teardown());
      const taskQueue = `bench-${randomUUID().slice(0, 8)}`;
      const worker = await WorkerProcess.start(temporal.address, taskQueue);
      cleanups.unshift(() => worker.stop());
      const rss = new RssMonitor(worker.pid);
      await recreateDatabase(target, 'dts');
      rss.begin('migration');
      const spec = { source: source.uri(SOURCE_DB), target: target.uri('dts'), parallelism: opt.jobs, ...(opt.maxWriteStop ? { cutover: { mode: 'auto', maxWriteStopSeconds: opt.maxWriteStop } } : {}), ...(opt.validation ? { validation: JSON.parse(opt.validation) as unknown } : {}) };
      const m = await startMigration(temporal.client, taskQueue, spec, { pollMs: 1000 });
      const r = await m.done;
      const mem = rss.end('migration');
      rss.stop();
      results.push({ tool: 'dts', ms: r.totalMs });
      const attempts = r.report.notices.filter((n) => n.includes('abandoned')).length;
      say(`pg-dts: cutover window ${r.report.cutoverWindowMs ?? '?'} ms${attempts ? ` (after ${attempts} abandoned attempts)` : ''}`);
      say(`pg-dts: ${r.report.phase} in ${sec(r.totalMs)}; phases ${Object.entries(r.phases.durations).map(([p, ms]) => `${p} ${sec(ms!)}`).join(', ')}`);
      say(`pg-dts worker peak RSS ${mb(mem)}`);
      const runs = await historyLimits(temporal, m.workflowId);
      console.log(
        table([
          ['workflow run', 'events', 'history', 'largest payload', 'longest task'],
          ...runs.map((h) => [`${h.workflowId} ${h.runId.slice(0, 8)}`, num(h.events), mb(h.bytes), `${(h.largestPayload / 1024).toFixed(1)} KB`, `${h.longestTaskMs} ms`]),
        ]),
      );
      sameAs('pg-dts', want, await hashes(target, 'dts'));
    }

    if (opt.only.includes('pgcopydb')) {
      const bin = pgcopydbPath();
      if (!bin) throw new Error('pgcopydb is not installed (apt-get install pgcopydb), or leave it out with --only dts');
      await recreateDatabase(target, 'pgcopydb');
      const r = await pgcopydbClone(bin, source.uri(SOURCE_DB), target.uri('pgcopydb'), opt.jobs);
      results.push({ tool: 'pgcopydb', ms: r.ms });
      sameAs('pgcopydb', want, await hashes(target, 'pgcopydb'));
    }

    const ref = results.find((r) => r.tool === 'pgcopydb');
    console.log(`\n${shape}, ${opt.rows} rows each, ${opt.jobs} jobs`);
    console.log(table([['tool', 'start → end', 'vs pgcopydb'], ...results.map((r) => [r.tool === 'dts' ? 'pg-dts (spec → COMPLETED, online)' : 'pgcopydb clone', sec(r.ms), ref ? ratio(r.ms, ref.ms) : 'n/a'])]));
  } finally {
    for (const c of cleanups) await c().catch(() => undefined);
  }
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});

/**
 * End-to-end benchmark (issue 24): what a user waits for, timed from outside, in one run on the same
 * two throwaway clusters and the same pgbench source:
 *   - pg-dts: `temporal workflow execute` (the official CLI) starts the workflow with a spec and
 *     returns when it is COMPLETED; the worker is `worker/main.ts` in a process of its own (what `npm
 *     run worker` runs); online, auto cutover, the default validation;
 *   - `pgcopydb clone` with the same parallelism (--table-jobs J --index-jobs J);
 *   - the raw psql pipe: the tables (pg_dump pre-data), `psql \copy … to stdout | psql \copy … from
 *     stdin` J tables at a time, then the indexes and keys (`pg_restore -j J --section=post-data`);
 *   - native logical replication's initial sync: CREATE SUBSCRIPTION (copy_data) into the schema,
 *     until every table is ready;
 * each `--repeat` times in a rotated order, medians compared. Every target is checked against the
 * source (row count and content hash per table).
 * Then the backlog: pg-dts (manual cutover, in SYNCING_WAL) and a native subscription, both caught up,
 * are paused (`pause` signal; ALTER SUBSCRIPTION … DISABLE) while pgbench writes N transactions; each
 * side alone is resumed (`resume` signal; … ENABLE) and timed until the last transaction is on its
 * target, and until the first one landed (the cold start); `--backlog-repeat` such cycles on the same
 * migration and subscription, medians compared.
 *
 * With --cutover-load R, one more pg-dts run per scale has pgbench writing R tps until the fence.
 *
 *   npx tsx bench/e2e.ts [--scales 50,200] [--jobs 2] [--repeat 3] [--backlogs 20000,60000] [--backlog-repeat 5] [--only pipe,pgcopydb,native,dts] [--cutover-load 1000]
 */
import { randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import { Command } from 'commander';
import type { WorkflowHandle } from '@temporalio/client';
import type { Client } from 'pg';
import type { PgCluster } from '../test/harness/pg-cluster';
import { activitySpans } from '../test/harness/history';
import { startTemporal } from '../test/harness/temporal';
import { ensureTemporalCli } from '../worker/temporal-cli';
import { quietTemporalLogs } from '../worker/logging';
import { WORKFLOW_TYPE, type MigrationReport, type MigrationStatus } from '../workflows/contract';
import {
  bash,
  contentHash,
  clusterCpu,
  coresBusy,
  machineDescription,
  machineTicks,
  processCpuSec,
  mb,
  medianOf,
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
  sleep,
  startPgbench,
  startBenchClusters,
  table,
  tableSizes,
  timed,
  WorkerProcess,
} from './common';

const SOURCE_DB = 'e2e';
const TOOLS = ['pipe', 'pgcopydb', 'native', 'dts'] as const;
type Tool = (typeof TOOLS)[number];
const TOOL_NAMES: Record<Tool, string> = {
  pipe: 'raw psql pipe + indexes',
  pgcopydb: 'pgcopydb clone',
  native: 'native initial sync',
  dts: 'pg-dts (CLI start → COMPLETED)',
};
const PGBENCH_TABLES = ['pgbench_accounts', 'pgbench_branches', 'pgbench_tellers', 'pgbench_history'];

interface Options {
  scales: number[];
  jobs: number;
  repeat: number;
  backlogs: number[];
  only: Tool[];
  cutoverLoad: number;
  /** Pause/write/resume cycles per backlog size. */
  backlogRepeat: number;
  /** Merged into the backlog run's spec (to see what a setting costs there, e.g. the proof off). */
  backlogSpec: Record<string, unknown>;
  /** How often pg-dts's status is read while it runs (phase times; each read is a workflow query). */
  pollMs: number;
  temporalConfig: string[];
}

function options(): Options {
  const o = new Command()
    .description('whole migration and backlog catch-up, timed from outside: pg-dts vs pgcopydb, a raw psql pipe and native replication')
    .option('--scales <list>', 'pgbench scales (50 ≈ 755 MB, 200 ≈ 3 GB)', '50')
    .option('--jobs <n>', 'parallelism of every tool', '2')
    .option('--repeat <n>', 'runs of each tool per scale (medians compared)', '3')
    .option('--backlogs <list>', 'backlog sizes in transactions (empty: no backlog test)', '20000')
    .option('--backlog-repeat <n>', 'pause/write/resume cycles per backlog size, on the same migration and subscription (medians compared)', '1')
    .option('--only <list>', `comma-separated: ${TOOLS.join(',')}`, TOOLS.join(','))
    .option('--cutover-load <tps>', 'then one more pg-dts run per scale with pgbench writing at this rate from the start until the fence (0: none)', '0')
    .option('--backlog-spec <json>', 'merged into the backlog run\'s spec, e.g. \'{"validation":{"checksum":false}}\'', '{}')
    .option('--poll-ms <ms>', "how often pg-dts's status is queried for the phase times (each query costs the worker and the server some CPU)", '50')
    .option('--temporal-config <list>', 'dynamic config of the dev server, comma-separated key=value (e.g. system.enableActivityEagerExecution=true); default: the server\'s own', '')
    .parse()
    .opts<{ scales: string; jobs: string; repeat: string; backlogs: string; backlogRepeat: string; only: string; cutoverLoad: string; backlogSpec: string; pollMs: string; temporalConfig: string }>();
  const list = (s: string) => s.split(',').map((x) => x.trim()).filter(Boolean);
  const only = list(o.only) as Tool[];
  for (const t of only) if (!TOOLS.includes(t)) throw new Error(`--only: unknown tool ${t}`);
  return { scales: list(o.scales).map(Number), jobs: Number(o.jobs), repeat: Number(o.repeat), backlogs: list(o.backlogs).map(Number), backlogRepeat: Math.max(1, Number(o.backlogRepeat)), only, cutoverLoad: Number(o.cutoverLoad), backlogSpec: JSON.parse(o.backlogSpec) as Record<string, unknown>, pollMs: Number(o.pollMs), temporalConfig: list(o.temporalConfig) };
}

interface Run {
  ms: number;
  /** pg-dts: the report (phases, cutover window). */
  report?: MigrationReport;
  /** pg-dts: the worker's peak RSS over the run. */
  rss?: number;
  /** pg-dts: time in each phase, as the status query showed them. */
  phases?: string;
  /** pg-dts: the content proof's passes, as the status query showed them (duration, keys compared by key). */
  passes?: string[];
  /** pg-dts: the activities of the cutover window (windowSteps). */
  window?: string;
}


interface Ctx {
  source: PgCluster;
  target: PgCluster;
  opt: Options;
  cli: string;
  temporal: { address: string; client: Awaited<ReturnType<typeof startTemporal>>['client'] };
  taskQueue: string;
  worker: WorkerProcess;
}

async function pipe(ctx: Ctx): Promise<Run> {
  const { source, target, opt } = ctx;
  await recreateDatabase(target, 'pipe');
  const dir = mkdtempSync(join(tmpdir(), 'pgdts-bench-e2e-'));
  try {
    const archive = join(dir, 'schema.dump');
    const r = await timed(async () => {
      await bash(`pg_dump -Fc -s -f ${shq(archive)} ${shq(source.uri(SOURCE_DB))}`);
      await bash(`pg_restore --section=pre-data -d ${shq(target.uri('pipe'))} ${shq(archive)}`);
      await parallel(PGBENCH_TABLES, opt.jobs, async (t) => {
        await bash(`psql -X -q ${shq(source.uri(SOURCE_DB))} -c ${shq(`\\copy public.${t} to stdout`)} | psql -X -q -v ON_ERROR_STOP=1 ${shq(target.uri('pipe'))} -c ${shq(`\\copy public.${t} from stdin`)}`);
      });
      await bash(`pg_restore -j ${opt.jobs} --section=post-data -d ${shq(target.uri('pipe'))} ${shq(archive)}`);
    });
    return { ms: r.ms };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

async function pgcopydb(ctx: Ctx): Promise<Run> {
  await recreateDatabase(ctx.target, 'pgcopydb');
  const r = await pgcopydbClone(pgcopydbPath()!, ctx.source.uri(SOURCE_DB), ctx.target.uri('pgcopydb'), ctx.opt.jobs);
  // With the timeline, pgcopydb's own per-table and per-step times beside pg-dts's activities.
  if (process.env.PG_DTS_BENCH_TIMELINE === '1') say(`pgcopydb's summary:\n${r.summary}`);
  return { ms: r.ms };
}

/** Until every table of the database's subscription has finished its initial sync. */
async function subscriptionReady(target: PgCluster, db: string, everyMs: number): Promise<void> {
  for (;;) {
    const [x] = await target.query<{ pending: number }>(`SELECT count(*)::int AS pending FROM pg_subscription_rel WHERE srsubstate <> 'r'`, [], db);
    if (x!.pending === 0) return;
    await sleep(everyMs);
  }
}

/** The schema (pg_dump -s) then CREATE SUBSCRIPTION with copy_data, until every table is ready. */
async function native(ctx: Ctx): Promise<Run> {
  const { source, target } = ctx;
  await recreateDatabase(target, 'native');
  await bash(`pg_dump -s ${shq(source.uri(SOURCE_DB))} | psql -X -q -v ON_ERROR_STOP=1 ${shq(target.uri('native'))}`);
  await source.query(`CREATE PUBLICATION e2e_pub FOR TABLE ${PGBENCH_TABLES.join(', ')}`, [], SOURCE_DB);
  try {
    const r = await timed(async () => {
      await target.query(
        `CREATE SUBSCRIPTION e2e_sub CONNECTION 'host=${source.host} port=${source.port} dbname=${SOURCE_DB} user=postgres' PUBLICATION e2e_pub`,
        [],
        'native',
      );
      await subscriptionReady(target, 'native', 20);
    });
    return { ms: r.ms };
  } finally {
    await target.query('DROP SUBSCRIPTION IF EXISTS e2e_sub', [], 'native');
    await source.query('DROP PUBLICATION IF EXISTS e2e_pub', [], SOURCE_DB);
  }
}

/** `temporal workflow execute`: starts the workflow and returns once it has ended. */
async function dts(ctx: Ctx): Promise<Run> {
  const { source, target, opt } = ctx;
  await recreateDatabase(target, 'dts');
  const workflowId = `e2e-${randomUUID().slice(0, 8)}`;
  const spec = { source: source.uri(SOURCE_DB), target: target.uri('dts'), parallelism: opt.jobs };
  const rss = new RssMonitor(ctx.worker.pid);
  rss.begin('run');
  // Where the time goes: each phase's start, from the status query (polled beside the CLI's wait).
  const t0 = performance.now();
  const seen = new Map<string, number>();
  const passes: string[] = [];
  let lastPass: string | undefined;
  let ended = false;
  const polling = (async () => {
    const h = ctx.temporal.client.workflow.getHandle(workflowId);
    while (!ended) {
      const s = await h.query<MigrationStatus>('status').catch(() => undefined);
      if (s && !seen.has(s.phase)) seen.set(s.phase, performance.now() - t0);
      const p = s?.proof;
      const pass = p?.lastPassMs === undefined ? undefined : `${sec(p.lastPassMs)}${p.lastPassKeys ? ` (${num(p.lastPassKeys)} keys)` : ''}${p.passesComplete ? '' : ' not counted'}`;
      if (pass !== undefined && `${p!.pass}:${pass}` !== lastPass) {
        lastPass = `${p!.pass}:${pass}`;
        passes.push(pass);
      }
      await sleep(ctx.opt.pollMs);
    }
  })();
  let r: Awaited<ReturnType<typeof timed>>;
  try {
    r = await timed(async () => {
      const cli = await run(ctx.cli, [
        'workflow', 'execute', '--address', ctx.temporal.address, '--namespace', 'default',
        '--type', WORKFLOW_TYPE, '--task-queue', ctx.taskQueue, '--workflow-id', workflowId, '--input', JSON.stringify(spec),
      ], { allowFail: true });
      // A CLI that stopped waiting before the end (seen once: exit after 3.3 s of a 16 s run) must not
      // shorten the time: the end is then awaited through the client.
      if (cli.code !== 0) {
        say(`temporal workflow execute exited with ${cli.code}: ${(cli.stderr || cli.stdout).trim().slice(-500)}; awaiting the end through the client`);
        await ctx.temporal.client.workflow.getHandle(workflowId).result().catch(() => undefined);
      }
      return cli;
    });
  } finally {
    // Whatever the end, the poller stops before the server may go away.
    ended = true;
    await polling;
  }
  const peak = rss.end('run');
  rss.stop();
  const marks = [...seen].filter(([p]) => p !== 'COMPLETED').sort((a, b) => a[1] - b[1]);
  const phases = marks.map(([p, at], i) => `${p} ${sec((marks[i + 1]?.[1] ?? r.ms) - at)}`).join(', ');
  const report = (await ctx.temporal.client.workflow
    .getHandle(workflowId)
    .result()
    .catch((err: unknown) => {
      const cause = (err as { cause?: { message?: string } }).cause?.message;
      throw new Error(`pg-dts failed: ${(err as Error).message}${cause ? `: ${cause}` : ''}`);
    })) as MigrationReport;
  if (report.phase !== 'COMPLETED') throw new Error(`pg-dts ended in ${report.phase}: ${report.error ?? ''}`);
  if (process.env.PG_DTS_BENCH_TIMELINE === '1') say(`activities of the last run: ${await timeline(ctx, workflowId)}`);
  return { ms: r.ms, report, rss: peak, phases, passes, window: await windowSteps(ctx, workflowId) };
}

/** With PG_DTS_BENCH_TIMELINE=1: every activity of the last run, `name scheduled/started..ended` in ms from the first one's scheduling. */
async function timeline(ctx: Ctx, workflowId: string): Promise<string> {
  const spans = await activitySpans({ client: ctx.temporal.client }, workflowId);
  const t0 = spans[0]?.scheduledAt ?? 0;
  const at = (t: number | undefined) => (t === undefined ? '?' : String(t - t0));
  return spans.map((s) => `${s.type} ${at(s.scheduledAt)}/${at(s.startedAt)}..${at(s.endedAt)}`).join(', ');
}

const RUNNERS: Record<Tool, (ctx: Ctx) => Promise<Run>> = { pipe, pgcopydb, native, dts };

/**
 * What the cutover window held, from the history of the migration's last run: each activity from the
 * fence's to the release's, as `name start+ms..end+ms` from the end of the fence activity (the gaps
 * between them are scheduling and workflow tasks).
 */
async function windowSteps(ctx: Ctx, workflowId: string): Promise<string> {
  const spans = await activitySpans({ client: ctx.temporal.client }, workflowId);
  const fence = spans.filter((s) => s.type === 'fenceSource' && s.outcome === 'completed').at(-1);
  // The release: the cutover's commit (or, after an abandoned attempt, liftFence).
  const lift = spans.filter((s) => (s.type === 'commitCutover' || s.type === 'liftFence') && s.outcome === 'completed').at(-1);
  if (!fence?.endedAt || !lift?.endedAt) return 'no completed fence and release in the last run';
  const t0 = fence.endedAt;
  const at = (t: number | undefined) => (t === undefined ? '?' : String(t - t0));
  return spans
    .filter((s) => s.scheduledAt >= fence.scheduledAt && s.scheduledAt <= lift.endedAt!)
    .map((s) => `${s.type} ${at(s.startedAt)}..${at(s.endedAt)}`)
    .join(', ');
}

async function hashes(cluster: PgCluster, db: string): Promise<string> {
  const hs = await Promise.all(PGBENCH_TABLES.map(async (t) => `${t}=${JSON.stringify(await contentHash(cluster, db, t))}`));
  return hs.join(' ');
}

async function wholeMigration(ctx: Ctx, scale: number): Promise<string[]> {
  const { source, target, opt } = ctx;
  await recreateDatabase(source, SOURCE_DB);
  const load = await timed(() => pgbenchInit(source, SOURCE_DB, scale));
  const sizes = await tableSizes(source, SOURCE_DB);
  const total = sizes.reduce((a, s) => a + s.bytes + s.indexBytes, 0);
  say(`scale ${scale}: source loaded in ${sec(load.ms)}, ${mb(total)} (tables and indexes)`);
  const want = await hashes(source, SOURCE_DB);
  const runs = new Map<Tool, Run[]>();
  for (let rep = 1; rep <= opt.repeat; rep++) {
    const order = opt.only.map((_, i) => opt.only[(i + rep - 1) % opt.only.length]!);
    for (const tool of order) {
      const r = await RUNNERS[tool](ctx);
      say(`scale ${scale}, run ${rep}: ${TOOL_NAMES[tool]} ${sec(r.ms)}${r.report ? ` (cutover window ${r.report.cutoverWindowMs} ms: ${r.window}; ${r.phases}; proof passes ${r.passes?.join(', ') || 'none seen'})` : ''}`);
      const got = await hashes(target, tool);
      if (got !== want) throw new Error(`${TOOL_NAMES[tool]}: the target differs from the source:\n  source ${want}\n  target ${got}`);
      runs.set(tool, [...(runs.get(tool) ?? []), r]);
      await target.query(`DROP DATABASE IF EXISTS "${tool}" WITH (FORCE)`);
    }
  }
  const med = new Map([...runs].map(([t, rs]) => [t, medianOf(rs.map((r) => r.ms))]));
  const ref = (t: Tool, ms: number) => (med.has(t) ? ratio(ms, med.get(t)!) : 'n/a');
  const lines = [`== Whole migration, pgbench scale ${scale} (${mb(total)}), ${opt.jobs} jobs, median of ${opt.repeat} ==`];
  lines.push(
    table([
      ['tool', 'median', 'every run', 'vs pgcopydb', 'vs pipe'],
      ...[...med].map(([t, ms]) => [TOOL_NAMES[t], sec(ms), runs.get(t)!.map((r) => sec(r.ms)).join(', '), ref('pgcopydb', ms), ref('pipe', ms)]),
    ]),
  );
  const d = runs.get('dts');
  if (d) {
    const w = d.map((r) => r.report!.cutoverWindowMs ?? NaN);
    lines.push(`pg-dts cutover window (fence → release, no load): ${w.map((x) => `${x} ms`).join(', ')}; median ${medianOf(w)} ms (target < 1,000 ms)`);
    lines.push(`pg-dts phases (run 1): ${d[0]!.phases}`);
    lines.push(`pg-dts worker peak RSS: ${d.map((r) => mb(r.rss ?? 0)).join(', ')} (target < 300 MB)`);
    if (med.has('pgcopydb')) lines.push(`pg-dts / pgcopydb = ${ratio(med.get('dts')!, med.get('pgcopydb')!)} (target ≤ 0.80×); / pipe = ${med.has('pipe') ? ratio(med.get('dts')!, med.get('pipe')!) : 'n/a'} (target ≤ 1.20×)`);
  }
  lines.push('every target identical to the source (row count and content hash per table)');
  return lines;
}

/**
 * pg-dts once more, with pgbench (tpcb-like, 4 clients) writing at `tps` from before the start until
 * the fence rejects its writes (every client aborts then): the cutover window under load, with what
 * the proof read again inside it. The source is then still, and compared with the target.
 */
async function dtsUnderLoad(ctx: Ctx, scale: number, tps: number): Promise<string[]> {
  const load = startPgbench(ctx.source, SOURCE_DB, ['-c', '4', '-j', '2', '-R', String(tps), '-T', '3600']);
  let r: Run;
  try {
    await sleep(2000);
    r = await dts(ctx);
  } finally {
    const stopped = await Promise.race([load.done.then(() => true), sleep(10_000).then(() => false)]);
    if (!stopped) load.stop();
  }
  const pgbench = await load.done;
  const processed = /number of transactions actually processed: (\d+)/.exec(pgbench.stdout)?.[1] ?? '?';
  const got = await hashes(ctx.target, 'dts');
  const want = await hashes(ctx.source, SOURCE_DB);
  await ctx.target.query(`DROP DATABASE IF EXISTS "dts" WITH (FORCE)`);
  if (got !== want) throw new Error(`pg-dts under load: the target differs from the source:\n  source ${want}\n  target ${got}`);
  const p = r.report!.proof;
  const abandoned = r.report!.notices.filter((n) => n.includes('abandoned'));
  return [
    `== pg-dts with pgbench at ${num(tps)} tps from the start to the fence, scale ${scale} ==`,
    `start → COMPLETED ${sec(r.ms)}; cutover window (fence → release) ${r.report!.cutoverWindowMs} ms (target < 2,000 ms): ${r.window}; ${r.phases}`,
    `proof: ${p ? `${num(p.chunks)} chunks, ${num(p.readAtCutover ?? NaN)} read again at cutover, ${num(p.reverifiedAtCutover)} re-verified, ${num(p.keysReadAtCutover ?? 0)} rows compared by the keys written since` : 'none'}; pgbench committed ${processed} transactions, then stopped at the fence`,
    `proof passes while the sync ran: ${r.passes?.join(', ') || 'none seen'}`,
    `cutover attempts abandoned (over cutover.maxWriteStopSeconds): ${abandoned.length ? abandoned.join(' | ') : 'none'}`,
    'target identical to the source after the cutover (row count and content hash per table)',
  ];
}

async function one<T>(c: Client, sql: string, params: unknown[] = []): Promise<T> {
  return (await c.query(sql, params)).rows[0] as T;
}

/**
 * A side's catch-up: until the last transaction landed, until the first one did, the machine's cores
 * busy meanwhile (on average), and the CPU seconds each party spent: the source's and the target's
 * PostgreSQL processes, and pg-dts's worker (none for native).
 */
interface CatchUp {
  ms: number;
  firstMs: number;
  cores: number;
  cpu: { source: number; target: number; worker?: number };
}

/**
 * Until the marker the backlog's last transaction wrote is on the target (commit order is kept on both
 * sides, so every earlier transaction is there too), and until the marker its first transaction wrote
 * landed. Both are one-row lookups: a count of pgbench_history, polled every 10 ms, scanned more rows
 * with each cycle and took CPU from the side being timed.
 */
/** "source 0.61 s, target 3.10 s, worker 1.02 s". */
function cpuText(cpu: CatchUp['cpu']): string {
  return `source ${sec(cpu.source * 1000)}, target ${sec(cpu.target * 1000)}${cpu.worker === undefined ? '' : `, worker ${sec(cpu.worker * 1000)}`}`;
}

async function timeUntilCaughtUp(
  clusters: { source: PgCluster; target: PgCluster; worker?: number },
  db: string,
  markers: { first: string; last: string },
  start: () => Promise<void>,
): Promise<CatchUp> {
  const { target } = clusters;
  const c = await target.client(db);
  try {
    const t0 = performance.now();
    const ticks = machineTicks();
    const [sourceCpu, targetCpu] = [clusterCpu(clusters.source), clusterCpu(target)];
    const worker0 = clusters.worker === undefined ? undefined : processCpuSec(clusters.worker);
    await start();
    let firstMs = NaN;
    for (;;) {
      if (Number.isNaN(firstMs) && (await one<{ done: boolean }>(c, 'SELECT rtrim(filler) = $1 AS done FROM pgbench_tellers WHERE tid = 1', [markers.first])).done) {
        firstMs = performance.now() - t0;
      }
      if ((await one<{ done: boolean }>(c, 'SELECT rtrim(filler) = $1 AS done FROM pgbench_branches WHERE bid = 1', [markers.last])).done) {
        const ms = performance.now() - t0;
        const cores = coresBusy(ticks, machineTicks(), cpus().length);
        const worker1 = clusters.worker === undefined ? undefined : processCpuSec(clusters.worker);
        const cpu = { source: sourceCpu(), target: targetCpu(), ...(worker0 !== undefined && worker1 !== undefined ? { worker: worker1 - worker0 } : {}) };
        return { ms, firstMs: Number.isNaN(firstMs) ? ms : firstMs, cores, cpu };
      }
      await sleep(10);
    }
  } finally {
    await c.end();
  }
}

/**
 * A clean restart: shared buffers empty, the OS page cache as it was. Then one session in each
 * database, as a server that has been running has had: the first one after a start rebuilds the
 * database's relation cache file, which is not what either side's resume should pay for.
 */
async function restart(cluster: PgCluster, databases: readonly string[]): Promise<void> {
  await cluster.stop('fast');
  await cluster.start();
  for (const db of databases) await cluster.query('SELECT 1', [], db);
}

/**
 * Both sides running and caught up, each slot's restart point where it confirmed: the subscription
 * left disabled by the cycle before kept its restart point about one backlog back (bl_sub 105 MB
 * behind against pg-dts's 49 MB at 100,000), so its next catch-up decoded that WAL again. A CHECKPOINT
 * logs the running transactions a walsender needs to move a restart point on; up to 30 s.
 */
async function slotsSettled(ctx: Ctx): Promise<void> {
  const { source, target } = ctx;
  await target.query('ALTER SUBSCRIPTION bl_sub ENABLE', [], 'bl_native');
  for (let tries = 0; tries < 60; tries++) {
    await source.query('CHECKPOINT', [], SOURCE_DB);
    await sleep(500);
    const [x] = await source.query<{ behind: number }>(
      `SELECT coalesce(max(greatest(pg_current_wal_lsn() - confirmed_flush_lsn, confirmed_flush_lsn - restart_lsn)), 0)::float8 AS behind FROM pg_replication_slots WHERE database = $1`,
      [SOURCE_DB],
    );
    if (x!.behind < 1024 * 1024) return;
  }
  say('backlog: the slots did not settle within 30 s (restart point or confirmed position more than 1 MB back)');
}

/**
 * One cycle: both sides paused (the apply stopped, the subscription disabled), pgbench writes `txns`
 * transactions, then each side alone is resumed and timed until caught up; both targets are compared
 * with the source.
 */
async function backlogCycle(ctx: Ctx, handle: WorkflowHandle, txns: number, label: string): Promise<{ actual: number; ours: CatchUp; nat: CatchUp }> {
  const { source, target } = ctx;
  await slotsSettled(ctx);
  // Both paused: the apply stopped, the subscription disabled.
  await handle.signal('pause');
  await target.query('ALTER SUBSCRIPTION bl_sub DISABLE', [], 'bl_native');
  for (;;) {
    const [x] = await source.query<{ active: number }>(`SELECT count(*)::int AS active FROM pg_replication_slots WHERE active AND database = $1`, [SOURCE_DB]);
    if (x!.active === 0) break;
    await sleep(100);
  }
  const clients = 4;
  const per = Math.ceil(txns / clients);
  say(`backlog ${label}: pgbench -c ${clients} -t ${per} (${num(per * clients)} transactions) while both sides are paused`);
  // The backlog's first transaction and its last each write a marker the timing looks for.
  const markers = { first: `backlog starts ${randomUUID()}`, last: `backlog done ${randomUUID()}` };
  await source.query('UPDATE pgbench_tellers SET filler = $1 WHERE tid = 1', [markers.first], SOURCE_DB);
  await run('pgbench', ['-n', '-h', source.host, '-p', String(source.port), '-U', 'postgres', '-c', String(clients), '-j', '2', '-t', String(per), SOURCE_DB]);
  await source.query('UPDATE pgbench_branches SET filler = $1 WHERE bid = 1', [markers.last], SOURCE_DB);
  // Each side starts from the same cache: the target restarted before each (its shared buffers
  // empty, the OS page cache warm for both). Without it, the side whose database was written last
  // starts with more of it in shared buffers (at 3 GB, before this: 393 MB of native's database
  // against 117 MB of pg-dts's, as pg_buffercache showed).
  const slots = await source.query<{ s: string }>(
    `SELECT slot_name || ': restart ' || pg_size_pretty(pg_current_wal_lsn() - restart_lsn) || ', confirmed ' || pg_size_pretty(pg_current_wal_lsn() - confirmed_flush_lsn) || ' behind' AS s FROM pg_replication_slots WHERE database = $1`,
    [SOURCE_DB],
  );
  say(`backlog ${label}: slots before the resume: ${slots.map((x) => x.s).join('; ')}`);
  await restart(target, ['bl_native', 'bl_dts']);
  const nat = await timeUntilCaughtUp({ source, target }, 'bl_native', markers, async () => {
    await target.query('ALTER SUBSCRIPTION bl_sub ENABLE', [], 'bl_native');
  });
  say(`backlog ${label}: native caught up in ${sec(nat.ms)} (first transaction after ${sec(nat.firstMs)}; ${nat.cores.toFixed(2)} cores busy; CPU ${cpuText(nat.cpu)})`);
  // Native disabled again: restarted, its walsender would decode on the source while pg-dts catches up.
  await target.query('ALTER SUBSCRIPTION bl_sub DISABLE', [], 'bl_native');
  await restart(target, ['bl_native', 'bl_dts']);
  const ours = await timeUntilCaughtUp({ source, target, worker: ctx.worker.pid }, 'bl_dts', markers, () => handle.signal('resume'));
  say(`backlog ${label}: pg-dts caught up in ${sec(ours.ms)} (first transaction after ${sec(ours.firstMs)}; ${ours.cores.toFixed(2)} cores busy; CPU ${cpuText(ours.cpu)})`);
  const want = await hashes(source, SOURCE_DB);
  const same = (await hashes(target, 'bl_dts')) === want && (await hashes(target, 'bl_native')) === want;
  if (!same) throw new Error('backlog: a target differs from the source');
  return { actual: per * clients, ours, nat };
}

async function backlog(ctx: Ctx, txns: number): Promise<string[]> {
  const { source, target, opt } = ctx;
  // pg-dts, manual cutover, until it applies in SYNCING_WAL.
  await recreateDatabase(target, 'bl_dts');
  const handle = await ctx.temporal.client.workflow.start(WORKFLOW_TYPE, {
    taskQueue: ctx.taskQueue,
    workflowId: `e2e-backlog-${randomUUID().slice(0, 8)}`,
    args: [{ source: source.uri(SOURCE_DB), target: target.uri('bl_dts'), parallelism: opt.jobs, cutover: { mode: 'manual' }, ...opt.backlogSpec }],
  });
  const status = () => handle.query<MigrationStatus>('status');
  for (;;) {
    const s = await status().catch(() => undefined);
    if (s?.phase === 'SYNCING_WAL' && s.replication) break;
    if (s && ['FAILED', 'CANCELLED', 'COMPLETED'].includes(s.phase)) throw new Error(`backlog: pg-dts ended in ${s.phase}`);
    await sleep(200);
  }
  // Native, caught up.
  await recreateDatabase(target, 'bl_native');
  await bash(`pg_dump -s ${shq(source.uri(SOURCE_DB))} | psql -X -q -v ON_ERROR_STOP=1 ${shq(target.uri('bl_native'))}`);
  await source.query(`CREATE PUBLICATION bl_pub FOR TABLE ${PGBENCH_TABLES.join(', ')}`, [], SOURCE_DB);
  await target.query(`CREATE SUBSCRIPTION bl_sub CONNECTION 'host=${source.host} port=${source.port} dbname=${SOURCE_DB} user=postgres' PUBLICATION bl_pub`, [], 'bl_native');
  try {
    await subscriptionReady(target, 'bl_native', 100);
    // Like for like: native is caught up and idle; pg-dts too, its content proof past its first pass
    // (else the first pass, reading every row on both servers, runs beside the backlog).
    for (;;) {
      const s = await status();
      if (!s.proof || s.proof.state === 'off' || s.proof.passesComplete > 0) break;
      await sleep(200);
    }
    const runs: Array<{ ours: CatchUp; nat: CatchUp }> = [];
    let actual = 0;
    for (let rep = 1; rep <= ctx.opt.backlogRepeat; rep++) {
      const cycle = await backlogCycle(ctx, handle, txns, `${rep}/${ctx.opt.backlogRepeat}`);
      actual = cycle.actual;
      runs.push(cycle);
    }
    const med = (f: (r: (typeof runs)[number]) => number) => medianOf(runs.map(f));
    const cpu = (side: 'ours' | 'nat') => ({
      source: med((r) => r[side].cpu.source),
      target: med((r) => r[side].cpu.target),
      ...(side === 'ours' ? { worker: med((r) => r.ours.cpu.worker ?? NaN) } : {}),
    });
    const ours = { ms: med((r) => r.ours.ms), firstMs: med((r) => r.ours.firstMs), cores: med((r) => r.ours.cores), cpu: cpu('ours') };
    const nat = { ms: med((r) => r.nat.ms), firstMs: med((r) => r.nat.firstMs), cores: med((r) => r.nat.cores), cpu: cpu('nat') };
    const every = runs.length > 1 ? `; every cycle's ratio: ${runs.map((r) => ratio(r.nat.ms, r.ours.ms)).join(', ')}` : '';
    return [
      `== Backlog of ${num(actual)} pgbench transactions, resume → caught up, each side alone${runs.length > 1 ? `, median of ${runs.length} cycles` : ''} ==`,
      table([
        ['', 'pg-dts (resume signal)', 'native (ALTER SUBSCRIPTION … ENABLE)'],
        ['resume → last transaction on the target', sec(ours.ms), sec(nat.ms)],
        ['resume → first transaction landed (cold start)', sec(ours.firstMs), sec(nat.firstMs)],
        ['transactions/s', num(actual / (ours.ms / 1000)), num(actual / (nat.ms / 1000))],
        [`cores busy meanwhile (of ${cpus().length}, whole machine)`, ours.cores.toFixed(2), nat.cores.toFixed(2)],
        ['CPU seconds: source PostgreSQL / target PostgreSQL / worker', cpuText(ours.cpu), cpuText(nat.cpu)],
      ]),
      `pg-dts rate = ${ratio(nat.ms, ours.ms)} native's (targets: ≥ 1.0× at 20,000; the steady rate ≥ 1.5× at 100,000)${every}; cold start ${sec(ours.firstMs)} (target < 0.30 s); both targets identical to the source; the target restarted before each side`,
    ];
  } finally {
    await handle.signal('cancel').catch(() => undefined);
    await handle.result().catch(() => undefined);
    await target.query('DROP SUBSCRIPTION IF EXISTS bl_sub', [], 'bl_native').catch(() => undefined);
    await source.query('DROP PUBLICATION IF EXISTS bl_pub', [], SOURCE_DB).catch(() => undefined);
  }
}

async function main(): Promise<void> {
  const opt = options();
  quietTemporalLogs('ERROR');
  say(`machine: ${machineDescription()}`);
  if (opt.only.includes('pgcopydb') && !pgcopydbPath()) throw new Error('pgcopydb is not installed (apt-get install pgcopydb), or leave it out with --only');
  const cli = ensureTemporalCli();
  const { source, target, destroy } = await startBenchClusters();
  const cleanups: Array<() => Promise<void>> = [destroy];
  const out: string[] = [];
  try {
    say(`starting a Temporal dev server${opt.temporalConfig.length ? ` (${opt.temporalConfig.join(', ')})` : ''} and a worker process (worker/main.ts)`);
    const temporal = await startTemporal(opt.temporalConfig);
    cleanups.unshift(() => temporal.teardown());
    const address = temporal.address;
    const taskQueue = `e2e-${randomUUID().slice(0, 8)}`;
    const worker = await WorkerProcess.start(address, taskQueue);
    cleanups.unshift(() => worker.stop());
    const ctx: Ctx = { source, target, opt, cli, temporal: { address, client: temporal.client }, taskQueue, worker };
    for (const scale of opt.scales) {
      const lines = await wholeMigration(ctx, scale);
      if (opt.cutoverLoad > 0 && opt.only.includes('dts')) lines.push('', ...(await dtsUnderLoad(ctx, scale, opt.cutoverLoad)));
      console.log(lines.join('\n'));
      out.push(...lines, '');
    }
    for (const n of opt.backlogs) out.push(...(await backlog(ctx, n)), '');
    console.log(`\nmachine: ${machineDescription()}\n${out.join('\n')}`);
  } finally {
    for (const c of cleanups) await c().catch((e: unknown) => console.error('cleanup:', (e as Error).message));
  }
}

main().catch((err: unknown) => {
  console.error(err instanceof Error ? err.stack ?? err.message : err);
  process.exit(1);
});

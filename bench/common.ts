/**
 * Shared pieces of the benchmarks (bench/copy.ts, bench/apply.ts): throwaway clusters with the
 * PostgreSQL 15 tools first on PATH, shell pipelines, a worker in a child process whose memory we
 * sample from /proc, a migration driver that times every phase, and number formatting.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { createWriteStream, existsSync, readFileSync, readdirSync, writeFileSync, mkdtempSync, rmSync } from 'node:fs';
import { cpus, freemem, tmpdir, totalmem } from 'node:os';
import { dirname, join } from 'node:path';
import type { Client as TemporalClient } from '@temporalio/client';
import { pgBinDir, startCluster, type PgCluster } from '../test/harness/pg-cluster';
import { WORKFLOW_TYPE, type MigrationReport, type MigrationStatus, type Phase } from '../workflows/contract';

export const ROOT = join(__dirname, '..');
export const PG_BIN = pgBinDir();

// ---------------------------------------------------------------------------------------------------
// Output
// ---------------------------------------------------------------------------------------------------

const t0 = Date.now();
export function say(msg: string): void {
  const s = ((Date.now() - t0) / 1000).toFixed(1).padStart(7);
  console.log(`[${s}s] ${msg}`);
}

export const sec = (ms: number): string => `${(ms / 1000).toFixed(2)} s`;
export const mb = (bytes: number): string => `${(bytes / 1024 / 1024).toFixed(1)} MB`;
/** Bytes in the unit that keeps them readable (lag is often a few kB). */
export const bytes = (b: number): string =>
  !Number.isFinite(b) ? 'n/a' : b < 1024 ? `${Math.round(b)} B` : b < 1024 * 1024 ? `${(b / 1024).toFixed(1)} kB` : mb(b);
export const ratio = (a: number, b: number): string => (b > 0 ? `${(a / b).toFixed(2)}×` : 'n/a');
/** The middle value (the mean of the two middle ones for an even count). */
export function medianOf(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}
export const num = (n: number): string => Math.round(n).toLocaleString('en-US');

/** A plain text table: first row is the header. */
export function table(rows: Array<Array<string | number>>): string {
  const cells = rows.map((r) => r.map(String));
  const widths = cells[0]!.map((_, i) => Math.max(...cells.map((r) => (r[i] ?? '').length)));
  const line = (r: string[]) => r.map((c, i) => (i === 0 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join('  ');
  return [line(cells[0]!), widths.map((w) => '-'.repeat(w)).join('  '), ...cells.slice(1).map(line)].join('\n');
}

export function machineDescription(): string {
  const cpu = cpus()[0]?.model ?? 'unknown CPU';
  let load = '';
  try {
    load = readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).join(' ');
  } catch {
    // not Linux
  }
  return `${cpus().length} × ${cpu}, ${mb(totalmem())} RAM (${mb(freemem())} free), load average ${load}, node ${process.version}, PostgreSQL binaries ${PG_BIN}`;
}

// ---------------------------------------------------------------------------------------------------
// Processes
// ---------------------------------------------------------------------------------------------------

/** The environment every tool runs with: PostgreSQL 15's binaries first on PATH. */
export function pgEnv(extra: NodeJS.ProcessEnv = {}): NodeJS.ProcessEnv {
  return { ...process.env, PATH: `${PG_BIN}:${process.env.PATH ?? ''}`, PGCONNECT_TIMEOUT: '15', ...extra };
}

export interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs a command to completion; rejects with its stderr when it fails (unless allowFail). */
export function run(cmd: string, args: string[], opts: { env?: NodeJS.ProcessEnv; allowFail?: boolean; cwd?: string } = {}): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { env: opts.env ?? pgEnv(), cwd: opts.cwd, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.on('error', reject);
    child.on('close', (code) => {
      const r = { code: code ?? -1, stdout, stderr };
      if (r.code !== 0 && !opts.allowFail) reject(new Error(`${cmd} ${args.join(' ')} exited with ${r.code}: ${stderr.slice(-2000)}`));
      else resolve(r);
    });
  });
}

/** A bash script with pipefail (for `psql … | psql …` pipes). */
/** pgbench (no vacuum) against `db` in the background; `stop` ends it (SIGINT) and `done` gives its output. */
export function startPgbench(cluster: PgCluster, db: string, args: string[]): { done: Promise<RunResult>; stop(): void } {
  const child = spawn('pgbench', ['-n', '-h', cluster.host, '-p', String(cluster.port), '-U', 'postgres', ...args, db], { env: pgEnv(), stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  const done = new Promise<RunResult>((resolve) => child.on('close', (code) => resolve({ code: code ?? -1, stdout, stderr })));
  return { done, stop: () => void child.kill('SIGINT') };
}

export const bash = (script: string, opts: { allowFail?: boolean } = {}): Promise<RunResult> => run('bash', ['-o', 'pipefail', '-c', script], opts);

/** Single-quotes a string for bash. */
export const shq = (s: string): string => `'${s.replace(/'/g, `'\\''`)}'`;

export async function timed<T>(fn: () => Promise<T>): Promise<{ ms: number; value: T }> {
  const start = performance.now();
  const value = await fn();
  return { ms: performance.now() - start, value };
}

/** Runs fns with at most `jobs` at a time, in order of the array. */
export async function parallel<T>(items: T[], jobs: number, fn: (item: T) => Promise<void>): Promise<void> {
  const queue = [...items];
  await Promise.all(
    Array.from({ length: Math.max(1, Math.min(jobs, items.length)) }, async () => {
      for (let it = queue.shift(); it !== undefined; it = queue.shift()) await fn(it);
    }),
  );
}

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

// ---------------------------------------------------------------------------------------------------
// Clusters and data
// ---------------------------------------------------------------------------------------------------

/**
 * Settings for both benchmark clusters, on top of the harness's (fsync off, synchronous_commit off):
 * enough WAL between checkpoints that no tool pays for a checkpoint storm the others do not.
 */
export const BENCH_SETTINGS: Record<string, string | number> = {
  max_wal_size: "'16GB'",
  checkpoint_timeout: "'30min'",
  shared_buffers: "'512MB'",
  maintenance_work_mem: "'256MB'",
  max_replication_slots: 20,
  max_wal_senders: 20,
  max_logical_replication_workers: 8,
  max_worker_processes: 16,
  wal_sender_timeout: "'60s'",
};

export async function startBenchClusters(): Promise<{ source: PgCluster; target: PgCluster; destroy(): Promise<void> }> {
  const [source, target] = await Promise.all([
    startCluster({ name: 'bench-source', settings: BENCH_SETTINGS }),
    startCluster({ name: 'bench-target', settings: BENCH_SETTINGS }),
  ]);
  return { source, target, destroy: async () => void (await Promise.allSettled([source.destroy(), target.destroy()])) };
}

export async function recreateDatabase(cluster: PgCluster, name: string): Promise<void> {
  await cluster.query(`DROP DATABASE IF EXISTS "${name}" WITH (FORCE)`);
  await cluster.createDatabase(name);
}

export async function dropDatabase(cluster: PgCluster, name: string): Promise<void> {
  await cluster.query(`DROP DATABASE IF EXISTS "${name}" WITH (FORCE)`);
}

/**
 * `pgbench -i -s N` with server-side data generation; primary keys included. pgbench_history has no
 * key: it gets REPLICA IDENTITY FULL (pg-dts preflight refuses a published table without a replica
 * identity; pgbench only ever INSERTs into it).
 */
export async function pgbenchInit(cluster: PgCluster, db: string, scale: number): Promise<void> {
  await run('pgbench', ['-i', '-q', '-s', String(scale), '--init-steps=dtGvp', '-h', cluster.host, '-p', String(cluster.port), '-U', 'postgres', db]);
  await cluster.query('ALTER TABLE pgbench_history REPLICA IDENTITY FULL', [], db);
}

export const WIDE_TABLE = 'bench_wide';

/** A wide table with text, jsonb, bytea, numeric and timestamptz columns (about 700 bytes a row). */
export async function createWideTable(cluster: PgCluster, db: string, rows: number): Promise<void> {
  await cluster.query(
    `CREATE TABLE ${WIDE_TABLE} (
       id bigint PRIMARY KEY,
       title text NOT NULL,
       body text,
       doc jsonb,
       blob bytea,
       score numeric(14,4),
       created_at timestamptz NOT NULL
     );
     INSERT INTO ${WIDE_TABLE}
     SELECT g, 'title ' || g, repeat(md5(g::text), 6),
            jsonb_build_object('id', g, 'tags', jsonb_build_array('alpha', 'beta', g % 17), 'name', md5(g::text),
                               'nested', jsonb_build_object('x', g * 1.5, 'y', md5((g + 1)::text), 'ok', g % 2 = 0)),
            decode(repeat(md5(g::text), 8), 'hex'), g / 7.0,
            timestamptz '2024-01-01 00:00:00+00' + g * interval '1.000001 second'
       FROM generate_series(1, ${Math.max(1, Math.floor(rows))}) g;
     CREATE INDEX ${WIDE_TABLE}_created_at ON ${WIDE_TABLE} (created_at);`,
    [],
    db,
  );
  await cluster.query(`VACUUM ANALYZE ${WIDE_TABLE}`, [], db);
}

export interface TableSize {
  table: string;
  rows: number;
  /** pg_table_size: heap + TOAST, without indexes. */
  bytes: number;
  indexBytes: number;
}

export async function tableSizes(cluster: PgCluster, db: string): Promise<TableSize[]> {
  const r = await cluster.query<{ t: string; rows: string; bytes: string; ib: string }>(
    `SELECT c.relname AS t, c.reltuples::bigint::text AS rows, pg_table_size(c.oid)::text AS bytes, pg_indexes_size(c.oid)::text AS ib
       FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
      WHERE n.nspname = 'public' AND c.relkind = 'r' ORDER BY pg_table_size(c.oid) DESC`,
    [],
    db,
  );
  return r.map((x) => ({ table: x.t, rows: Math.max(0, Number(x.rows)), bytes: Number(x.bytes), indexBytes: Number(x.ib) }));
}

/** Row count and an order-independent content hash (over each row's text form) of public.<table>. */
export async function contentHash(cluster: PgCluster, db: string, tableName: string): Promise<{ rows: number; hash: string }> {
  const r = await cluster.query<{ n: string; h: string | null }>(
    `SELECT count(*)::text AS n, sum(hashtextextended(r::text, 0)::numeric)::text AS h FROM public."${tableName}" r`,
    [],
    db,
  );
  return { rows: Number(r[0]!.n), hash: r[0]!.h ?? 'empty' };
}

export async function currentLsn(cluster: PgCluster, db = 'postgres'): Promise<bigint> {
  const r = await cluster.query<{ l: string }>('SELECT pg_current_wal_lsn()::text AS l', [], db);
  return lsnBig(r[0]!.l);
}

export function lsnBig(lsn: string): bigint {
  const [hi, lo] = lsn.split('/');
  return (BigInt(`0x${hi}`) << 32n) | BigInt(`0x${lo}`);
}

// ---------------------------------------------------------------------------------------------------
// A worker in a child process, and its memory
// ---------------------------------------------------------------------------------------------------

/** Resident set size of a process from /proc/<pid>/status, in bytes. */
export function procMemory(pid: number): { rss: number; hwm: number } | undefined {
  try {
    const s = readFileSync(`/proc/${pid}/status`, 'utf8');
    const kb = (k: string) => Number(new RegExp(`^${k}:\\s+(\\d+) kB`, 'm').exec(s)?.[1] ?? 0) * 1024;
    return { rss: kb('VmRSS'), hwm: kb('VmHWM') };
  } catch {
    return undefined;
  }
}

/** utime + stime of a process (all its threads) from /proc/<pid>/stat, in seconds. */
export function processCpuSec(pid: number): number | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return (Number(f[11]) + Number(f[12])) / 100; // fields 14 and 15, clock ticks (USER_HZ = 100)
  } catch {
    return undefined;
  }
}

/** CPU seconds (utime + stime) of every process whose parent is `ppid`, by pid, from /proc. */
function childrenCpu(ppid: number): Map<number, number> {
  const out = new Map<number, number>();
  for (const d of readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    try {
      const stat = readFileSync(`/proc/${d}/stat`, 'utf8');
      const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      if (Number(f[1]) === ppid) out.set(Number(d), (Number(f[11]) + Number(f[12])) / 100);
    } catch {
      // gone meanwhile
    }
  }
  return out;
}

/**
 * The CPU seconds a cluster's processes (its postmaster's children: backends, walsenders, background
 * workers) spend from now until the returned function is called. A process that ends in between is
 * not counted; one that starts in between is, whole.
 */
export function clusterCpu(cluster: PgCluster): () => number {
  const postmaster = Number(readFileSync(join(cluster.dataDir, 'postmaster.pid'), 'utf8').split('\n')[0]);
  const before = childrenCpu(postmaster);
  return () => {
    let sum = 0;
    for (const [pid, sec] of childrenCpu(postmaster)) sum += sec - (before.get(pid) ?? 0);
    return sum;
  };
}

/** Busy and total clock ticks of every core since boot (/proc/stat's first line: all but idle and iowait are busy). */
export function machineTicks(): { busy: number; total: number } {
  const f = readFileSync('/proc/stat', 'utf8').split('\n')[0]!.trim().split(/\s+/).slice(1, 9).map(Number);
  const total = f.reduce((a, b) => a + b, 0);
  return { busy: total - f[3]! - f[4]!, total };
}

/** Cores kept busy on average between two machineTicks() readings (every process, other tenants' too). */
export function coresBusy(a: { busy: number; total: number }, b: { busy: number; total: number }, cores: number): number {
  return b.total > a.total ? ((b.busy - a.busy) / (b.total - a.total)) * cores : NaN;
}

/**
 * Samples a process's VmRSS every 100 ms; windows report the peak inside them. At the start of a
 * window it also resets the kernel's own peak (VmHWM, `echo 5 > /proc/<pid>/clear_refs`) so the
 * window's peak includes spikes between samples.
 */
export class RssMonitor {
  private timer: NodeJS.Timeout;
  private windows = new Map<string, { peak: number; open: boolean; hwmReset: boolean; cpu0: number; cpu: number }>();
  baseline = 0;
  constructor(readonly pid: number) {
    this.baseline = procMemory(pid)?.rss ?? 0;
    this.timer = setInterval(() => this.sample(), 100);
    this.timer.unref();
  }
  private sample(): void {
    const m = procMemory(this.pid);
    if (!m) return;
    for (const w of this.windows.values()) if (w.open) w.peak = Math.max(w.peak, m.rss);
  }
  begin(name: string): void {
    let hwmReset = false;
    try {
      writeFileSync(`/proc/${this.pid}/clear_refs`, '5');
      hwmReset = true;
    } catch {
      // not allowed here: the sampled peak only
    }
    const cpu0 = processCpuSec(this.pid) ?? 0;
    this.windows.set(name, { peak: procMemory(this.pid)?.rss ?? 0, open: true, hwmReset, cpu0, cpu: 0 });
  }
  end(name: string): number {
    const w = this.windows.get(name);
    if (!w) return 0;
    if (w.open) {
      this.sample();
      const m = procMemory(this.pid);
      if (m && w.hwmReset) w.peak = Math.max(w.peak, m.hwm);
      w.cpu = (processCpuSec(this.pid) ?? w.cpu0) - w.cpu0;
      w.open = false;
    }
    return w.peak;
  }
  peak(name: string): number {
    return this.windows.get(name)?.peak ?? 0;
  }
  /** CPU seconds (user + system, every thread) the process used in the window: less noisy than wall time on a shared machine. */
  cpuSec(name: string): number {
    return this.windows.get(name)?.cpu ?? NaN;
  }
  stop(): void {
    clearInterval(this.timer);
  }
}

/** package.json's `worker` script as words: `[K=V ...] node <flags> --require tsx/cjs worker/main.ts`. */
function npmWorkerScript(): string[] {
  try {
    const script = (JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { scripts?: Record<string, string> }).scripts?.worker ?? '';
    return script.split(/\s+/).filter(Boolean);
  } catch {
    return [];
  }
}

/** The node flags of package.json's `worker` script, so the benchmarks' worker runs with what `npm run worker` runs. */
export function npmWorkerNodeFlags(): string[] {
  const words = npmWorkerScript();
  const node = words.indexOf('node');
  if (node < 0) return [];
  const end = words.indexOf('--require');
  return words.slice(node + 1, end === -1 ? words.length - 1 : end).filter((w) => w.startsWith('--'));
}

/** The environment assignments in front of package.json's `worker` script (e.g. MALLOC_ARENA_MAX=2). */
export function npmWorkerEnv(): Record<string, string> {
  const words = npmWorkerScript();
  const node = words.indexOf('node');
  return Object.fromEntries(words.slice(0, Math.max(0, node)).filter((w) => /^[A-Z_][A-Z0-9_]*=/.test(w)).map((w) => [w.slice(0, w.indexOf('=')), w.slice(w.indexOf('=') + 1)]));
}

/**
 * `worker/main.ts` (what `npm run worker` runs) in a child process of its own, so its memory is the
 * worker's alone. Logs go to a file.
 */
export class WorkerProcess {
  private constructor(
    readonly child: ChildProcess,
    readonly logFile: string,
  ) {}
  get pid(): number {
    return this.child.pid!;
  }

  /**
   * `opts.env` adds to the worker's environment (e.g. PG_DTS_WORKER_* settings, worker/config.ts) and
   * `opts.nodeFlags` go before the script; both default to PG_DTS_BENCH_WORKER_ENV (`K=V,K=V`) and
   * PG_DTS_BENCH_WORKER_FLAGS (space-separated) so any benchmark can compare worker settings.
   */
  static async start(address: string, taskQueue: string, opts: { env?: Record<string, string>; nodeFlags?: string[] } = {}): Promise<WorkerProcess> {
    const dir = mkdtempSync(join(tmpdir(), 'pgdts-bench-worker-'));
    const logFile = join(dir, 'worker.log');
    const log = createWriteStream(logFile);
    const envExtra = opts.env ?? {
      ...npmWorkerEnv(),
      ...Object.fromEntries((process.env.PG_DTS_BENCH_WORKER_ENV ?? '').split(',').filter((kv) => kv.includes('=')).map((kv) => [kv.slice(0, kv.indexOf('=')), kv.slice(kv.indexOf('=') + 1)])),
    };
    const nodeFlags = opts.nodeFlags ?? (process.env.PG_DTS_BENCH_WORKER_FLAGS !== undefined ? process.env.PG_DTS_BENCH_WORKER_FLAGS.split(' ').filter(Boolean) : npmWorkerNodeFlags());
    if (Object.keys(envExtra).length || nodeFlags.length) say(`worker process settings: ${[...nodeFlags, ...Object.entries(envExtra).map(([k, v]) => `${k}=${v}`)].join(' ')}`);
    const child = spawn(process.execPath, [...nodeFlags, '--require', 'tsx/cjs', join(ROOT, 'worker', 'main.ts')], {
      cwd: ROOT,
      env: { ...pgEnv(), TEMPORAL_ADDRESS: address, TEMPORAL_TASK_QUEUE: taskQueue, TEMPORAL_NAMESPACE: 'default', ...envExtra },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const w = new WorkerProcess(child, logFile);
    await new Promise<void>((resolve, reject) => {
      let out = '';
      const onData = (d: Buffer) => {
        log.write(d);
        out += d.toString();
        if (out.includes('pg-dts worker polling')) resolve();
      };
      // The worker's log goes to stderr (stdout is kept for command output): either may say it.
      child.stdout!.on('data', onData);
      child.stderr!.on('data', onData);
      child.on('exit', (code) => reject(new Error(`worker exited with ${code} before polling; see ${logFile}`)));
      setTimeout(() => reject(new Error(`worker did not start within 120 s; see ${logFile}`)), 120_000).unref();
    });
    return w;
  }

  /** Stops the worker; its log is removed unless `keepLog` (then its path is printed). */
  async stop(keepLog = process.env.PG_DTS_BENCH_KEEP_WORKER_LOG === '1'): Promise<void> {
    if (this.child.exitCode === null && this.child.signalCode === null) {
      const exited = new Promise<void>((r) => this.child.once('exit', () => r()));
      this.child.kill('SIGINT');
      const t = setTimeout(() => this.child.kill('SIGKILL'), 20_000);
      await exited;
      clearTimeout(t);
    }
    if (keepLog) console.log(`worker log: ${this.logFile}`);
    else rmSync(dirname(this.logFile), { recursive: true, force: true });
  }
}

// ---------------------------------------------------------------------------------------------------
// Driving a migration and timing its phases
// ---------------------------------------------------------------------------------------------------

export interface PhaseTimes {
  /** Milliseconds since the workflow was started, when each phase was first seen. */
  seenAt: Partial<Record<Phase, number>>;
  /** Milliseconds spent in each phase (seen → next phase seen); polling every `pollMs`. */
  durations: Partial<Record<Phase, number>>;
}

export interface MigrationRun {
  workflowId: string;
  report: MigrationReport;
  totalMs: number;
  phases: PhaseTimes;
}

export interface MigrationDriver {
  workflowId: string;
  status(): Promise<MigrationStatus>;
  signal(name: 'cutover' | 'pause' | 'resume' | 'cancel'): Promise<void>;
  waitForPhase(phase: Phase, timeoutMs?: number): Promise<void>;
  done: Promise<MigrationRun>;
}

const TERMINAL: Phase[] = ['COMPLETED', 'FAILED', 'CANCELLED'];

/**
 * Starts a migration and polls its `status` query every `pollMs`, noting when each phase begins.
 * `onStatus` sees every poll (for progress windows, lag sampling).
 */
export async function startMigration(
  client: TemporalClient,
  taskQueue: string,
  spec: Record<string, unknown>,
  opts: { pollMs?: number; onStatus?: (s: MigrationStatus, elapsedMs: number) => void } = {},
): Promise<MigrationDriver> {
  const workflowId = `bench-${randomUUID().slice(0, 8)}`;
  const started = performance.now();
  const handle = await client.workflow.start(WORKFLOW_TYPE, { taskQueue, workflowId, args: [spec] });
  const seenAt: PhaseTimes['seenAt'] = {};
  let phase: Phase = 'INIT';
  seenAt.INIT = 0;
  let ended = false;
  const waiters: Array<() => void> = [];
  const poll = async () => {
    while (!ended) {
      try {
        const s = await handle.query<MigrationStatus>('status');
        const now = performance.now() - started;
        if (s.phase !== phase) {
          phase = s.phase;
          seenAt[phase] ??= now;
          waiters.splice(0).forEach((w) => w());
        }
        opts.onStatus?.(s, now);
        if (TERMINAL.includes(s.phase)) return;
      } catch {
        // query while the workflow task is being processed: try again
      }
      await sleep(opts.pollMs ?? 100);
    }
  };
  const polling = poll();
  const done = (async (): Promise<MigrationRun> => {
    let report: MigrationReport;
    try {
      report = (await handle.result()) as MigrationReport;
    } catch (err) {
      // WorkflowFailedError → ApplicationFailure (details[0] is the workflow's report) → its message.
      let e = err as { message?: string; cause?: unknown } | undefined;
      const chain: string[] = [];
      while (e) {
        if (e.message) chain.push(e.message);
        e = e.cause as typeof e;
      }
      ended = true;
      throw new Error(`migration ${workflowId} failed: ${chain.join(': ')}`);
    }
    const totalMs = performance.now() - started;
    ended = true;
    await polling;
    seenAt[report.phase] ??= totalMs;
    const order = (Object.entries(seenAt) as Array<[Phase, number]>).sort((a, b) => a[1] - b[1]);
    const durations: PhaseTimes['durations'] = {};
    order.forEach(([p, at], i) => {
      const next = order[i + 1];
      if (next) durations[p] = next[1] - at;
    });
    return { workflowId, report, totalMs, phases: { seenAt, durations } };
  })();
  done.catch(() => {
    ended = true;
  });
  return {
    workflowId,
    status: () => handle.query<MigrationStatus>('status'),
    signal: (name) => handle.signal(name),
    async waitForPhase(p, timeoutMs = 30 * 60_000) {
      const deadline = Date.now() + timeoutMs;
      while (seenAt[p] === undefined) {
        if (Date.now() > deadline) throw new Error(`timed out waiting for ${p}`);
        if (TERMINAL.includes(phase) && p !== phase) throw new Error(`migration ended in ${phase} while waiting for ${p}`);
        await new Promise<void>((r) => {
          waiters.push(r);
          setTimeout(r, 200);
        });
      }
    },
    done,
  };
}

/** Where pgcopydb is, if installed (Debian package `pgcopydb`). */
export function pgcopydbPath(): string | undefined {
  for (const p of ['/usr/bin/pgcopydb', '/usr/local/bin/pgcopydb', join(PG_BIN, 'pgcopydb')]) if (existsSync(p)) return p;
  return undefined;
}

/**
 * `pgcopydb clone --table-jobs J --index-jobs J` from one database URI to another, in a scratch
 * directory of its own; the time it took and its own summary (stdout).
 */
export async function pgcopydbClone(bin: string, sourceUri: string, targetUri: string, jobs: number): Promise<{ ms: number; summary: string }> {
  const dir = mkdtempSync(join(tmpdir(), 'pgdts-bench-pgcopydb-'));
  try {
    const args = ['clone', '--source', sourceUri, '--target', targetUri, '--table-jobs', String(jobs), '--index-jobs', String(jobs), '--dir', dir];
    say(`pgcopydb: ${bin} ${args.join(' ')}`);
    const r = await timed(() => run(bin, args));
    say(`pgcopydb clone: ${sec(r.ms)}`);
    return { ms: r.ms, summary: r.value.stdout.trim() };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

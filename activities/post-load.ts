/**
 * The end of MIGRATING_DATA: each table's primary key, indexes, constraints and ANALYZE after its
 * load, on several sessions at once (the tables themselves: activities/create-tables.ts).
 */
import type { Client } from 'pg';
import { connect, sendCancelRequest } from './db';
import { during } from './errors';
import type { PostLoadStatement } from './ddl';
import type { TableDef } from './model';
import type { MigrationPlan } from './preflight';
import { qname } from './sql';
import { nameKey } from './naming';
import type { QualifiedName } from './spec';
import { IndexBuildWatch, type RunningStatement } from './index-progress';
import type { IndexBuildProgress } from '../workflows/contract';

/** SQLSTATEs meaning "this object is already there": a retried post-load step skips it. */
const ALREADY_THERE = new Set(['42P07', '42710', '42P16']);
/** ADD CONSTRAINT .. USING INDEX on an index an earlier attempt already attached. */
const ALREADY_ATTACHED = '55000';

/** Sessions building indexes and constraints at once when the caller does not say (spec.parallelism's default). */
export const DEFAULT_POST_LOAD_PARALLELISM = 4;

/**
 * Per session, unless the target is configured with more. Each build sorts with up to this much
 * memory, so the target may use parallelism × this (1 GiB at 4); we cannot know the target's RAM, and
 * 256MB already sorts large indexes mostly in memory. max_parallel_maintenance_workers is left to the
 * target's configuration: PostgreSQL only gives a build workers for large tables, caps them all by
 * max_parallel_workers, and the largest builds, which set the phase's length, are often the last ones
 * running, when our other sessions are idle; a DBA who wants none sets it to 0 on the target.
 */
const MAINTENANCE_WORK_MEM_KB = 256 * 1024;

/**
 * Every session: no statement timeout (an index build may rightly take hours; pg_dump's scripts say
 * the same), and maintenance_work_mem raised to MAINTENANCE_WORK_MEM_KB if lower.
 */
const SESSION_SETUP = `SELECT pg_backend_pid() AS pid, set_config('statement_timeout', '0', false),
       CASE WHEN setting::bigint < ${MAINTENANCE_WORK_MEM_KB} THEN set_config('maintenance_work_mem', '${MAINTENANCE_WORK_MEM_KB}kB', false) END
  FROM pg_settings WHERE name = 'maintenance_work_mem'`;

export interface FinishTargetTablesInput {
  target: MigrationPlan['spec']['target'];
  defs: TableDef[];
  /** How many sessions build indexes, constraints and statistics at once (spec.parallelism); default 4. */
  parallelism?: number;
  /**
   * Which part of the post-load work: everything (default), 'tables' (each table's own indexes, keys,
   * constraints and ANALYZE: the workflow runs it per table as soon as that table is copied) or
   * 'foreign-keys' (the keys between tables, once every table is finished).
   */
  part?: 'all' | 'tables' | 'foreign-keys';
  /**
   * Foreign keys are added NOT VALID, then validated (those that can be: PostLoadStep.validate): at
   * FINALIZING, when the apply ran without session_replication_role, so the keys' checks of the
   * existing rows do not hold the tables' writers back.
   */
  notValidFirst?: boolean;
}

/**
 * One unit of post-load work: its statements run in order on one session. A job starts once every
 * job in `after` has finished, and never while another job holding one of its `locks` runs.
 */
export interface PostLoadJob {
  id: number;
  /** The table it belongs to (a foreign key: the referencing table). */
  table: QualifiedName;
  kind: 'index' | 'constraints' | 'ordered' | 'analyze' | 'foreign-key';
  steps: PostLoadStatement[];
  after: number[];
  locks: string[];
  /** Larger first among ready jobs (estimated rows): the longest builds start early. */
  weight: number;
}

/**
 * Orders every table's post-load work (pure), pgcopydb-style:
 *   - a plain table's index builds, its key indexes included, are separate jobs without lock keys:
 *     CREATE INDEX takes a SHARE lock, so builds on one table run side by side;
 *   - then one 'constraints' job per table: attach the key indexes (USING INDEX, a catalog update),
 *     check and exclusion constraints, the replica identity (ALTER TABLE, an exclusive lock);
 *   - a partitioned table, or a TableDef without postLoadSteps (from before they existed), runs its
 *     statements in order in one 'ordered' job: order matters there (see buildTableDef);
 *   - then ANALYZE of the table, so foreign keys are checked with statistics;
 *   - foreign keys after ANALYZE of both tables, never two at once on a common table (ADD FOREIGN KEY
 *     locks both tables in SHARE ROW EXCLUSIVE, which conflicts with itself: two could deadlock).
 */
export function planPostLoad(defs: readonly TableDef[]): PostLoadJob[] {
  const jobs: PostLoadJob[] = [];
  const add = (j: Omit<PostLoadJob, 'id'>) => {
    const job = { ...j, id: jobs.length };
    jobs.push(job);
    return job;
  };
  // Every target name (roots and partitions) -> the index of its TableDef.
  const owner = new Map<string, number>();
  defs.forEach((d, i) => {
    owner.set(nameKey(d.target), i);
    for (const p of d.partitions ?? []) owner.set(nameKey(p.target), i);
  });
  const analyzed: number[] = [];
  defs.forEach((d) => {
    const key = nameKey(d.target);
    const weight = d.estimatedRows;
    const steps = statementsOf(d);
    const body = steps.filter((st) => st.kind !== 'foreign-key');
    let last: number[] = [];
    if (d.partitioned || !hasSteps(d)) {
      if (body.length) last = [add({ table: d.target, kind: 'ordered', steps: body, after: [], locks: [key], weight }).id];
    } else {
      const builds = body.filter((st) => st.kind === 'index').map((st) => add({ table: d.target, kind: 'index', steps: [st], after: [], locks: [], weight }).id);
      const alters = body.filter((st) => st.kind !== 'index');
      last = alters.length ? [add({ table: d.target, kind: 'constraints', steps: alters, after: builds, locks: [key], weight }).id] : builds;
    }
    const analyze: PostLoadStatement = { kind: 'constraint', sql: `ANALYZE ${qname(d.target)}` };
    analyzed.push(add({ table: d.target, kind: 'analyze', steps: [analyze], after: last, locks: [key], weight }).id);
  });
  defs.forEach((d, i) => {
    for (const st of statementsOf(d)) {
      if (st.kind !== 'foreign-key') continue;
      const key = nameKey(d.target);
      let after: number[];
      let locks: string[];
      if (st.references) {
        const ref = owner.get(nameKey(st.references));
        after = ref === undefined ? [analyzed[i]!] : [analyzed[i]!, analyzed[ref]!];
        locks = [key, ref === undefined ? nameKey(st.references) : nameKey(defs[ref]!.target)];
      } else {
        // Referenced table unknown: after every table, one such key at a time.
        after = [...analyzed];
        locks = [key, 'foreign keys of unknown tables'];
      }
      add({ table: d.target, kind: 'foreign-key', steps: [st], after: [...new Set(after)], locks: [...new Set(locks)], weight: d.estimatedRows });
    }
  });
  return jobs;
}

/**
 * postLoad with postLoadSteps. A TableDef from before postLoadSteps (or one whose lists disagree):
 * every statement a 'constraint' but the foreign keys, the tail of postLoad; planPostLoad runs them
 * in order.
 */
function statementsOf(d: TableDef): PostLoadStatement[] {
  if (hasSteps(d)) return d.postLoad.map((sql, i) => ({ ...d.postLoadSteps![i]!, sql }));
  const fks = new Set(d.foreignKeys ?? []);
  return d.postLoad.map((sql): PostLoadStatement => (fks.has(sql) ? { kind: 'foreign-key', sql } : { kind: 'constraint', sql }));
}

/**
 * The jobs of one part of the post-load work, renumbered; a kept job no longer waits for jobs left
 * out (the caller runs them before: each table is finished before its foreign keys).
 */
export function selectPostLoad(jobs: readonly PostLoadJob[], part: FinishTargetTablesInput['part'] = 'all'): PostLoadJob[] {
  if (part === 'all') return [...jobs];
  const kept = jobs.filter((j) => (part === 'foreign-keys') === (j.kind === 'foreign-key'));
  const ids = new Map(kept.map((j, i) => [j.id, i]));
  return kept.map((j) => ({ ...j, id: ids.get(j.id)!, after: j.after.filter((a) => ids.has(a)).map((a) => ids.get(a)!) }));
}

const hasSteps = (d: TableDef) => d.postLoadSteps !== undefined && d.postLoadSteps.length === d.postLoad.length;

/**
 * End of MIGRATING_DATA: every table's keys, indexes and constraints, ANALYZE, then foreign keys, on
 * `parallelism` sessions (planPostLoad says what may run together). Idempotent: a retry skips what an
 * earlier attempt created. A foreign key to a table that exists neither in the migration nor on the
 * target is reported in `skipped` instead of failing the migration.
 */
export interface FinishTargetTablesHooks {
  /** Called as jobs finish (the activity heartbeats with it). */
  heartbeat?(progress: { jobsDone: number; jobs: number }): void;
  /** Aborting it cancels the statements running on the target and rejects. */
  signal?: AbortSignal;
  /** The index builds running for over 1 s, on each change (an empty list once none runs). */
  builds?(builds: IndexBuildProgress[]): void;
}

export async function finishTargetTables(input: FinishTargetTablesInput, hooks: FinishTargetTablesHooks = {}): Promise<{ statements: number; skipped: string[] }> {
  const jobs = selectPostLoad(planPostLoad(input.defs), input.part);
  if (jobs.length === 0) return { statements: 0, skipped: [] };
  const sessions = Math.max(1, Math.min(Math.floor(input.parallelism ?? DEFAULT_POST_LOAD_PARALLELISM), jobs.length));
  let statements = 0;
  const skipped: string[] = [];
  let where = 'create indexes and constraints';
  const clients: Array<{ client: Client; pid: number }> = [];
  try {
    const opened = await Promise.allSettled(Array.from({ length: sessions }, () => connect(input.target, { applicationName: 'pg-dts schema' })));
    for (const o of opened) if (o.status === 'fulfilled') clients.push({ client: o.value, pid: 0 });
    // Fewer sessions than asked (max_connections reached on the target): go on with those there are.
    const refused = opened.find((o): o is PromiseRejectedResult => o.status === 'rejected');
    if (refused && clients.length === 0) throw refused.reason;
    for (const c of clients) c.pid = (await c.client.query<{ pid: number }>(SESSION_SETUP)).rows[0]!.pid;

    const runStep = async (c: Client, st: PostLoadStatement, job: PostLoadJob): Promise<void> => {
      try {
        if (input.notValidFirst && st.kind === 'foreign-key' && st.validate) {
          // Added by an earlier attempt: VALIDATE below is idempotent, and finishes what it began.
          await c.query(`${st.sql} NOT VALID`).catch((err: unknown) => {
            if (!ALREADY_THERE.has((err as { code?: string }).code ?? '')) throw err;
          });
          await c.query(st.validate);
        } else await c.query(st.sql);
        if (job.kind !== 'analyze') statements++;
      } catch (err) {
        const code = (err as { code?: string }).code ?? '';
        if (ALREADY_THERE.has(code)) return;
        if (st.usingIndex && code === ALREADY_ATTACHED) return;
        // A foreign key to a table that is neither migrated nor present on the target: the data is
        // there, the constraint cannot be; say so rather than fail the whole migration.
        if (st.kind === 'foreign-key' && code === '42P01') {
          skipped.push(`foreign key not created (${(err as Error).message}): ${st.sql}`);
          return;
        }
        throw Object.assign(err as object, { failedStatement: st.sql });
      }
    };
    const running = new Map<number, RunningStatement>();
    const builds = hooks.builds ? new IndexBuildWatch(input.target, running, hooks.builds) : undefined;
    try {
      await runJobs(jobs, clients, runStep, hooks, () => connect(input.target, { applicationName: 'pg-dts schema' }), running);
    } finally {
      await builds?.close();
    }
    return { statements, skipped };
  } catch (err) {
    // Cancelled: the caller's own reason (Temporal's CancelledFailure), not a failure of ours.
    if (hooks.signal?.aborted && err === hooks.signal.reason) throw err;
    const stmt = (err as { failedStatement?: string }).failedStatement;
    if (stmt) where = `create indexes and constraints (${stmt.length > 300 ? `${stmt.slice(0, 300)}…` : stmt})`;
    throw during(err, where);
  } finally {
    await Promise.all(clients.map((c) => c.client.end().catch(() => undefined)));
  }
}

/**
 * Runs the jobs on the sessions, each session taking the heaviest job that is ready and whose lock
 * keys are free. On the first failure nothing new starts and the statements still running are
 * cancelled (closing our end would not stop a long CREATE INDEX on the server), then it throws.
 */
async function runJobs(
  jobs: PostLoadJob[],
  sessions: Array<{ client: Client; pid: number }>,
  runStep: (c: Client, st: PostLoadStatement, job: PostLoadJob) => Promise<void>,
  hooks: FinishTargetTablesHooks,
  connectOne: () => Promise<Client>,
  running?: Map<number, RunningStatement>,
): Promise<void> {
  await new JobRunner(jobs, runStep, hooks, connectOne, running).run(sessions);
}

type Session = { client: Client; pid: number };

/** runJobs' state: which jobs wait for which, the lock keys held, the sessions busy, the first failure. */
class JobRunner {
  private readonly waiting: Map<number, Set<number>>;
  private readonly dependents = new Map<number, number[]>();
  private readonly pending: Set<number>;
  private readonly held = new Map<string, number>();
  /** Sessions running a job, by pid. */
  private readonly busy = new Map<number, Client>();
  private failure: { err: unknown } | undefined;
  private wake: Array<() => void> = [];
  private done = 0;
  private cancelling: Promise<void> | undefined;

  constructor(
    private readonly jobs: PostLoadJob[],
    private readonly runStep: (c: Client, st: PostLoadStatement, job: PostLoadJob) => Promise<void>,
    private readonly hooks: FinishTargetTablesHooks,
    private readonly connectOne: () => Promise<Client>,
    private readonly running?: Map<number, RunningStatement>,
  ) {
    this.waiting = new Map(jobs.map((j) => [j.id, new Set(j.after)]));
    for (const j of jobs) for (const a of j.after) this.dependents.set(a, [...(this.dependents.get(a) ?? []), j.id]);
    this.pending = new Set(jobs.map((j) => j.id));
  }

  async run(sessions: Session[]): Promise<void> {
    const signal = this.hooks.signal;
    const onAbort = () => this.abort();
    if (signal?.aborted) onAbort();
    signal?.addEventListener('abort', onAbort);
    try {
      await Promise.all(sessions.map((s) => this.worker(s)));
    } finally {
      signal?.removeEventListener('abort', onAbort);
      await this.cancelling;
    }
    if (this.failure) throw this.failure.err;
  }

  private notify(): void {
    const w = this.wake;
    this.wake = [];
    for (const f of w) f();
  }

  private abort(): void {
    if (this.failure) return;
    this.failure = { err: this.hooks.signal?.reason ?? new Error('cancelled') };
    this.cancelling = this.cancelRunning();
    this.notify();
  }

  /**
   * Stops what runs on the server: the protocol's CancelRequest for each busy session (needs no
   * connection slot); where that could not be sent, pg_cancel_backend from a free session of ours, else
   * from a new one.
   */
  private async cancelRunning(from?: Client): Promise<void> {
    const sessions = [...this.busy];
    const delivered = await Promise.all(sessions.map(([, c]) => sendCancelRequest(c)));
    const pids = sessions.filter((_, i) => !delivered[i]).map(([pid]) => pid);
    if (pids.length === 0) return;
    const sql = 'SELECT pg_cancel_backend(p) FROM unnest($1::int[]) AS p';
    if (from) return void (await from.query(sql, [pids]).catch(() => undefined));
    const c = await this.connectOne().catch(() => undefined);
    if (!c) return;
    await c.query(sql, [pids]).catch(() => undefined);
    await c.end().catch(() => undefined);
  }

  /** The heaviest job that waits for nothing and whose lock keys are free. */
  private pick(): PostLoadJob | undefined {
    let best: PostLoadJob | undefined;
    for (const id of this.pending) {
      const j = this.jobs[id]!;
      if (this.waiting.get(id)!.size > 0 || j.locks.some((l) => this.held.has(l))) continue;
      if (!best || j.weight > best.weight) best = j;
    }
    return best;
  }

  /** One session: takes jobs until none is left or one has failed. */
  private async worker(s: Session): Promise<void> {
    for (;;) {
      if (this.failure) return;
      if (this.pending.size === 0) return;
      const job = this.pick();
      if (!job) {
        if (this.busy.size === 0) {
          // Cannot happen with planPostLoad's jobs (they only wait for earlier ones); never hang on it.
          this.failure = { err: new Error(`post-load jobs ${[...this.pending].join(', ')} wait for jobs that never finish`) };
          this.notify();
          return;
        }
        await new Promise<void>((r) => this.wake.push(r));
        continue;
      }
      if (!(await this.runJob(s, job))) return;
    }
  }

  /** Runs one job's steps on the session; false once this or another job has failed. */
  private async runJob(s: Session, job: PostLoadJob): Promise<boolean> {
    this.pending.delete(job.id);
    for (const l of job.locks) this.held.set(l, job.id);
    this.busy.set(s.pid, s.client);
    try {
      for (const st of job.steps) {
        if (this.failure) return false;
        this.running?.set(s.pid, { table: job.table, sql: st.sql, since: Date.now() });
        await this.runStep(s.client, st, job);
      }
      return true;
    } catch (err) {
      if (!this.failure) {
        this.failure = { err };
        this.busy.delete(s.pid);
        await this.cancelRunning(s.client);
      }
      return false;
    } finally {
      if (!this.failure) this.hooks.heartbeat?.({ jobsDone: ++this.done, jobs: this.jobs.length });
      this.running?.delete(s.pid);
      this.busy.delete(s.pid);
      for (const l of job.locks) this.held.delete(l);
      for (const d of this.dependents.get(job.id) ?? []) this.waiting.get(d)!.delete(job.id);
      this.notify();
    }
  }
}

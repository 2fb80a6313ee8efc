/**
 * The chaos run (issue 19): a live migration under writes while the worker is killed with SIGKILL in
 * every phase, the source restarted and the target crashed during the sync. It must end COMPLETED
 * with identical content and sequences and, after `dts cleanup` of its read-only source, nothing left.
 *
 * The schedule does not trust timing to reach a phase: outside SYNCING_WAL each kill lands while a
 * real, harmless obstacle a user could meet holds the phase open — a maintenance job's lock on one
 * partition (INIT's preflight reads the partition tree), a long VACUUM's lock on a source table
 * (CREATE PUBLICATION, CREATING_TABLES), a long reader of a target table (the copy's TRUNCATE),
 * target tables locked at cutover (the apply cannot pass the fence: STOPPING_WRITES; the comparison
 * waits: VALIDATING). Each kill
 * is preceded and followed by a look at the phase; a kill outside the phase it was meant for fails
 * the run. Only within SYNCING_WAL are the points random (seeded), as are the delays everywhere.
 * Used by test/integration/chaos.test.ts (bounded, in CI) and `npm run chaos` (longer).
 */
import type { Client } from 'pg';
import { startEnv, type MigrationHandle, type TestEnv } from './env';
import { startWorkerProcess, type WorkerProcess } from './worker-process';
import { fingerprint, sourceLeftovers } from './compare';
import type { PgCluster } from './pg-cluster';
import { SHOP_TABLES } from './fixtures';
import { dts } from './dts';
import { waitFor } from './wait';
import { pendingActivities } from './history';
import { phaseOf } from '../../client/temporal';
import { PHASES, type MigrationReport, type MigrationStatus, type Phase } from '../../workflows/contract';

export interface ChaosOptions {
  seed: number;
  /**
   * Worker kills (10 or more): one each in INIT, CREATING_TABLES, the copy, STOPPING_WRITES and
   * VALIDATING, the rest in SYNCING_WAL.
   */
  kills: number;
  /** Shop data size (1 = about 20k rows). */
  scale: number;
  maxWriteStopSeconds: number;
  log: (line: string) => void;
}

export interface ChaosResult {
  seed: number;
  /** `phase` as the workflow reported it just before and just after the kill. */
  kills: Array<{ phase: Phase; detail: string; atMs: number }>;
  /** "INIT ×1, CREATING_TABLES ×1, ...", in phase order. */
  killsByPhase: string;
  /** Write stops the application saw that ended (abandoned cutover attempts), ms. */
  writeStops: number[];
  /** The completed cutover: from its fence to COMPLETED (the source then stays read-only until cleanup). */
  finalFenceToCompletedMs?: number;
  report: MigrationReport;
  /** Tables whose rows differ, and sequences the target would hand out again (below a committed source value). */
  differences: string[];
  leftovers: { slots: number; pubs: number; fences: number };
  durationMs: number;
}

/** mulberry32: small, seeded, good enough to pick delays. */
export function seededRandom(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * An application that keeps writing through everything: reconnects after a source restart, waits
 * out the fence (SQLSTATE 25006) and measures each write stop from the first rejected (or stalled)
 * write to the next that commits.
 */
function chaosWriter(connect: () => Promise<Client>, random: () => number) {
  let stopping = false;
  let stoppedSince: number | undefined;
  const stops: number[] = [];
  const errors: string[] = [];
  let committed = 0;
  const done = (async () => {
    let c: Client | undefined;
    for (let i = 1; !stopping; i++) {
      const start = Date.now();
      try {
        c ??= await connect();
        await c.query('BEGIN');
        const op = Math.floor(random() * 4);
        if (op === 0) await c.query(`INSERT INTO public.customers (email, name) VALUES ($1, 'chaos')`, [`chaos${i}-${start}@example.com`]);
        else if (op === 1) await c.query(`UPDATE public.orders SET total = total + 1, note = 'chaos' WHERE id = $1`, [1 + Math.floor(random() * 500)]);
        else if (op === 2) await c.query(`INSERT INTO public.kv VALUES ($1, $2) ON CONFLICT (k) DO UPDATE SET v = EXCLUDED.v`, [`chaos${i % 300}`, i]);
        else {
          await c.query(`DELETE FROM public.scratch WHERE id = $1`, [9_000_000 + ((i - 1) % 200)]);
          await c.query(`INSERT INTO public.scratch VALUES ($1, 'chaos') ON CONFLICT (id) DO UPDATE SET junk = 'chaos again'`, [9_000_000 + (i % 200)]);
        }
        await c.query('COMMIT');
        committed++;
        if (stoppedSince === undefined && Date.now() - start > 1000) stoppedSince = start;
        if (stoppedSince !== undefined) {
          stops.push(Date.now() - stoppedSince);
          stoppedSince = undefined;
        }
      } catch (err) {
        const code = (err as { code?: string }).code;
        await c?.query('ROLLBACK').catch(() => undefined);
        if (code === '25006') stoppedSince ??= start;
        else {
          // The source restarting: a new session next time.
          errors.push(`${code ?? ''} ${(err as Error).message}`);
          await c?.end().catch(() => undefined);
          c = undefined;
        }
      }
      await sleep(stoppedSince !== undefined ? 100 : 20);
    }
    await c?.end().catch(() => undefined);
  })();
  return {
    stops,
    errors,
    committed: () => committed,
    async stop() {
      stopping = true;
      await done;
    },
  };
}

/**
 * A partitioned table of the chaos database besides the shop's: INIT's preflight reads its partition
 * tree, which takes a share lock on every partition, so a lock on one partition holds INIT.
 */
const EVENTS_DDL = (rows: number) => `
CREATE TABLE public.events (id bigserial, at timestamptz NOT NULL, kind text, PRIMARY KEY (id, at)) PARTITION BY RANGE (at);
CREATE TABLE public.events_2025 PARTITION OF public.events FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
CREATE TABLE public.events_2026 PARTITION OF public.events FOR VALUES FROM ('2026-01-01') TO ('2027-01-01');
INSERT INTO public.events (at, kind) SELECT timestamptz '2025-06-01 00:00:00.5+00' + g * interval '3 minutes', 'event ' || g FROM generate_series(1, ${rows}) g;
ANALYZE public.events;`;
const CHAOS_TABLES: ReadonlyArray<readonly [string, string]> = [...SHOP_TABLES, ['public', 'events']];

/**
 * A session holding `mode` on `table` in an open transaction, as a maintenance job or a long report
 * would; `waiters()` counts the sessions queued behind it.
 */
async function holdLock(cluster: PgCluster, side: string, db: string, table: string, mode: string) {
  const c = await cluster.client(db);
  await c.query('BEGIN');
  await c.query(`LOCK TABLE ${table} IN ${mode} MODE`);
  return {
    what: `${mode} on the ${side} table ${table}`,
    async waiters(): Promise<number> {
      const [r] = await cluster.query<{ n: number }>(`SELECT count(*)::int AS n FROM pg_locks WHERE NOT granted AND relation = to_regclass($1)`, [table], db);
      return r!.n;
    },
    async release(): Promise<void> {
      await c.query('ROLLBACK').catch(() => undefined);
      await c.end().catch(() => undefined);
    },
  };
}
type Hold = Awaited<ReturnType<typeof holdLock>>;

/**
 * Committed source values the target sequence could hand out again: a sequence owned by a column
 * must be past that column's largest value on the source. (The source's own sequence may be further:
 * the fence rejects inserts after their default has called nextval().)
 */
async function sequenceDifferences(env: TestEnv, db: string): Promise<string[]> {
  const owned = await env.source.query<{ seq: string; tbl: string; col: string }>(
    `SELECT format('%I.%I', sn.nspname, s.relname) AS seq, format('%I.%I', tn.nspname, t.relname) AS tbl, quote_ident(a.attname) AS col
       FROM pg_depend d
       JOIN pg_class s ON s.oid = d.objid AND s.relkind = 'S' JOIN pg_namespace sn ON sn.oid = s.relnamespace
       JOIN pg_class t ON t.oid = d.refobjid JOIN pg_namespace tn ON tn.oid = t.relnamespace
       JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = d.refobjsubid
      WHERE d.classid = 'pg_class'::regclass AND d.refclassid = 'pg_class'::regclass AND d.deptype IN ('a', 'i') AND NOT t.relispartition
      ORDER BY 1`,
    [],
    db,
  );
  if (owned.length < 3) throw new Error(`expected the shop's sequences, found ${JSON.stringify(owned)}`);
  const out: string[] = [];
  for (const { seq, tbl, col } of owned) {
    const [src] = await env.source.query<{ max: string | null }>(`SELECT max(${col})::text AS max FROM ${tbl}`, [], db);
    const [dst] = await env.target.query<{ last: string; called: boolean }>(`SELECT last_value::text AS last, is_called AS called FROM ${seq}`, [], db).catch(() => []);
    const next = dst ? BigInt(dst.last) + (dst.called ? 1n : 0n) : undefined;
    if (next === undefined || (src!.max !== null && next <= BigInt(src!.max))) out.push(`sequence ${seq}: the target's next value ${next ?? 'missing'}, the source's ${tbl}.${col} up to ${src!.max}`);
  }
  return out;
}

export async function runChaos(opts: ChaosOptions): Promise<ChaosResult> {
  if (opts.kills < 10) throw new Error(`--kills ${opts.kills}: at least 10 (one each in INIT, CREATING_TABLES, the copy, STOPPING_WRITES and VALIDATING, five or more in SYNCING_WAL)`);
  const started = Date.now();
  const random = seededRandom(opts.seed);
  const log = (line: string) => opts.log(`[chaos ${((Date.now() - started) / 1000).toFixed(1)} s] ${line}`);
  log(`seed ${opts.seed}, ${opts.kills} worker kills, scale ${opts.scale}, maxWriteStopSeconds ${opts.maxWriteStopSeconds}`);
  const env: TestEnv = await startEnv({ inProcessWorker: false });
  const savedEnv = { ...process.env };
  /** Live workers, oldest first. */
  const workers: WorkerProcess[] = [];
  const spawnWorker = async () => {
    const w = await startWorkerProcess(env);
    workers.push(w);
    return w;
  };
  const holds = new Set<Hold>();
  /** A successor being started in the background (while the lost step's timeout runs anyway). */
  let spawning: Promise<unknown> | undefined;
  try {
    Object.assign(process.env, { TEMPORAL_ADDRESS: env.temporal.address, TEMPORAL_NAMESPACE: 'default', TEMPORAL_TASK_QUEUE: env.taskQueue });
    delete process.env.PG_DTS_CODEC_KEY;
    await spawnWorker();
    const db = 'chaos';
    await env.shopDatabase(db, opts.scale);
    await env.source.query(EVENTS_DDL(Math.max(100, Math.round(opts.scale * 2000))), [], db);
    const hold = async (cluster: PgCluster, side: string, table: string, mode: string) => {
      const h = await holdLock(cluster, side, db, table, mode);
      holds.add(h);
      return h;
    };
    const release = async (h: Hold) => {
      holds.delete(h);
      await h.release();
    };
    // Held before the start: INIT's preflight waits for this partition (a VACUUM FULL of it, say)...
    const partitionJob = await hold(env.source, 'source', 'public.events_2025', 'ACCESS EXCLUSIVE');
    // ... and CREATE PUBLICATION for this one (a long VACUUM: reads and writes go on).
    const tableJob = await hold(env.source, 'source', 'public.documents', 'SHARE UPDATE EXCLUSIVE');
    const writer = chaosWriter(() => env.source.client(db), seededRandom(opts.seed ^ 0x5eed));
    const m: MigrationHandle = await env.startMigration({
      source: env.source.uri(db),
      target: env.target.uri(db),
      schemas: ['public', 'Sales Dept'],
      parallelism: 2,
      cutover: { mode: 'manual', maxWriteStopSeconds: opts.maxWriteStopSeconds },
      // The source stays fenced after the cutover: the application's writes after it cannot reach
      // the target, so this keeps the final comparison exact; `dts cleanup` then gives them back.
      afterCutover: 'keep-source-read-only',
    });
    const kills: ChaosResult['kills'] = [];
    // The phase from the search attribute: no worker needed (a query waits for one to replay the run).
    const handle = env.temporal.client.workflow.getHandle(m.workflowId);
    const phaseNow = async (): Promise<Phase> => {
      const d = await handle.describe();
      if (d.status.name !== 'RUNNING') throw new Error(`migration ended (${d.status.name}, ${phaseOf(d) ?? '?'}) during the chaos: ${(await m.status().catch(() => undefined))?.error ?? ''}`);
      return phaseOf(d) ?? 'INIT';
    };
    /** The live worker running a started attempt of activity `name` (its identity is pid@host). */
    const runningOn = async (name: string): Promise<WorkerProcess | undefined> => {
      // The migration's and its copy child's (where the copy batches run).
      const identities = (await pendingActivities(env.temporal, m.workflowId)).filter((a) => a.activityType?.name === name && a.lastWorkerIdentity).map((a) => a.lastWorkerIdentity!);
      return workers.find((w) => identities.some((id) => id.startsWith(`${w.pid}@`)));
    };
    /**
     * SIGKILL of `victim` (default: the oldest worker) in `phase`, which the workflow must report
     * (status query: a live worker answers it) before and (search attribute) after. When no worker
     * is left, a successor starts in the background after a moment.
     */
    const kill = async (phase: Phase, detail: string, victim: WorkerProcess | undefined = workers[0]) => {
      const before = (await waitFor('the status query', () => m.status(), 60_000, 200)).phase;
      if (before !== phase) throw new Error(`chaos schedule: kill #${kills.length + 1} (${detail}) was meant for ${phase}, but the migration is in ${before}`);
      if (!victim) throw new Error('chaos schedule: no worker to kill');
      const withApply = (await runningOn('applyChanges')) === victim;
      await victim.kill();
      workers.splice(workers.indexOf(victim), 1);
      const after = await phaseNow();
      if (after !== phase) throw new Error(`chaos schedule: kill #${kills.length + 1} (${detail}) was meant for ${phase}, but the migration had moved on to ${after}`);
      kills.push({ phase, detail, atMs: Date.now() - started });
      log(`kill -9 worker #${kills.length} in ${phase}: ${detail}${withApply ? '; the apply ran there too' : ''}${workers.length ? '; another worker polling' : ''}`);
      if (workers.length === 0) spawning = sleep(Math.floor(random() * 1500)).then(spawnWorker);
    };
    /**
     * Waits until the migration is in `phase`, activity `step` runs on a live worker, a session
     * queues behind `h` (with `waiter`) and `ready` holds; then kills that worker at a seeded point.
     * `beforeKill`: the next obstacle, put in place while this one still holds the migration.
     */
    const killWhileHeld = async (
      phase: Phase,
      h: Hold,
      detail: string,
      opts: { step: string; waiter: boolean; ready?: (s: MigrationStatus) => boolean | Promise<boolean>; beforeKill?: () => Promise<unknown> },
    ) => {
      await spawning;
      let victim: WorkerProcess | undefined;
      const due = async () => {
        if (opts.waiter && (await h.waiters()) === 0) return false;
        const s = await m.status();
        if (s.phase !== phase || (opts.ready && !(await opts.ready(s)))) return false;
        victim = await runningOn(opts.step);
        return victim !== undefined;
      };
      await waitFor(`${opts.step} in ${phase} with ${h.what}`, async () => (await due()) || undefined, 240_000, 100).catch(async (e: unknown) => {
        throw new Error(`${(e as Error).message}; the migration is in ${await phaseNow().catch((x: unknown) => String(x))}`);
      });
      await opts.beforeKill?.();
      await sleep(Math.floor(random() * 1000));
      await kill(phase, `${detail}, ${h.what} held`, victim);
    };

    // INIT: the preflight waits for the partition. CREATING_TABLES: a long VACUUM or CREATE INDEX
    // CONCURRENTLY's lock, which reads and writes pass (the preflight's and the table definitions'
    // reads too) but CREATE PUBLICATION waits for. Both are held from the start.
    await killWhileHeld('INIT', partitionJob, 'the preflight waits', { step: 'preflight', waiter: true });
    await release(partitionJob);
    // The target tables exist once CREATE PUBLICATION waits: a long report on one of them will hold
    // the copy's TRUNCATE, with the snapshot exported and held; the kill loses it and the copy resumes
    // in a new one.
    let reader: Hold | undefined;
    await killWhileHeld('CREATING_TABLES', tableJob, 'CREATE PUBLICATION waits', {
      step: 'createPublication',
      waiter: true,
      beforeKill: async () => (reader = await hold(env.target, 'target', 'public.audit_log', 'ACCESS SHARE')),
    });
    await release(tableJob);
    await killWhileHeld('MIGRATING_DATA', reader!, 'the copy of public.audit_log waits (status.copying says so)', {
      step: 'copyTableBatch',
      waiter: true,
      ready: (s) => (s.copying ?? []).some((u) => u.waiting?.side === 'target' && u.waiting.table.includes('audit_log')),
    });
    await release(reader!);

    // SYNCING_WAL and the cutover. Attempt 1 right away (the apply runs, nothing is waiting for a
    // lost worker), two workers polling: a lock on the target table kv (the application writes it)
    // keeps the apply from passing the fence, and the worker waiting for it is killed in
    // STOPPING_WRITES. Then the kills at random points of SYNCING_WAL, with a source restart and a
    // target crash. Attempt 2, one worker (the kills leave one): a lock on the target table documents
    // keeps the comparison waiting, and the worker is killed in VALIDATING once the apply has stopped.
    // Each lock is held until the attempt is abandoned (its fence expired: the bound); then
    // the apply must come back. Attempt 3 completes.
    await waitFor('SYNCING_WAL', async () => (await phaseNow()) === 'SYNCING_WAL' || undefined, 300_000, 200);
    let report: MigrationReport | undefined;
    let failed: unknown;
    const result = m.result().then((r) => void (report = r));
    result.catch((e: unknown) => void (failed = e));
    /** The apply is running again and past what the source has written until now. */
    const caughtUp = async () => {
      const [{ lsn }] = (await env.source.query<{ lsn: string }>('SELECT pg_current_wal_lsn()::text AS lsn', [], db)) as [{ lsn: string }];
      await waitFor(`the apply to pass ${lsn}`, async () => {
        const applied = (await m.status()).replication?.confirmedLsn;
        if (!applied) return undefined;
        const [r] = await env.source.query<{ ok: boolean }>('SELECT $1::pg_lsn >= $2::pg_lsn AS ok', [applied, lsn], db);
        return r!.ok || undefined;
      }, 120_000, 200).catch(async (e: unknown) => {
        // Four heartbeat timeouts of the apply: it is not coming back. Say whether it is scheduled at all.
        const { raw } = await handle.describe();
        const apply = (raw.pendingActivities ?? []).some((a) => a.activityType?.name === 'applyChanges');
        throw new Error(`${(e as Error).message}${apply ? '' : ` (phase ${await phaseNow()}: no applyChanges activity is pending; the migration was not given its apply back after attempt ${attempt})`}`);
      });
    };
    let attempt = 0;
    /** `pollers`: workers polling when the kill comes (VALIDATING: one, as most deployments run). */
    const abandonedAttempt = async (phase: Phase, table: string, step: string, detail: string, pollers: number) => {
      attempt++;
      await Promise.all([
        // Else STOPPING_WRITES waits for an apply that a kill stopped, and the attempt ends before VALIDATING.
        phase === 'VALIDATING' ? caughtUp() : undefined,
        (async () => {
          await spawning;
          while (workers.length < pollers) await spawnWorker();
        })(),
      ]);
      const h = await hold(env.target, 'target', table, 'ACCESS EXCLUSIVE');
      await m.signal('cutover');
      log(`cutover signal ${attempt}, ${h.what} held`);
      await killWhileHeld(phase, h, detail, {
        step,
        waiter: false,
        // VALIDATING stops the apply while it compares: the kill may come before the lost worker's
        // apply has acknowledged that stop; the abandoned attempt must give the migration its apply
        // back once the stop settles (its heartbeat timeout), which caughtUp() checks next time.
      });
      // The next kill's successor starts while the fence runs out.
      const spare = spawnWorker();
      spare.catch(() => undefined);
      const back = await waitFor(`cutover attempt ${attempt} to be abandoned`, async () => {
        if (failed || report) return { ended: report?.phase ?? 'FAILED', abandoned: undefined };
        const s = await m.status().catch(() => undefined);
        return s?.phase === 'SYNCING_WAL' && s.cutover?.abandoned && !s.cutover.requested ? { ended: undefined, abandoned: s.cutover.abandoned } : undefined;
      }, 300_000, 200);
      await Promise.all([release(h), spare]);
      if (failed) throw failed;
      if (!back.abandoned) throw new Error(`chaos schedule: cutover attempt ${attempt} ended ${back.ended} while ${h.what} was held`);
      log(`cutover attempt ${attempt} abandoned: ${back.abandoned}`);
    };

    await abandonedAttempt('STOPPING_WRITES', 'public.kv', 'awaitFenceApplied', 'the wait for the apply to pass the fence (awaitFenceApplied)', 2);
    const killsInSync = opts.kills - 5;
    const restarts: Array<Promise<void>> = [];
    for (let i = 0; i < killsInSync; i++) {
      // The successor starts polling first, as with several workers deployed.
      await Promise.all([sleep(Math.floor(random() * 1000)), workers.length < 2 ? spawnWorker() : undefined]);
      // While the kills go on: a planned restart of the source (its walsenders wait for the apply to
      // confirm), a crash of the target.
      if (i === 1) {
        log('source restart (fast shutdown) during SYNCING_WAL');
        restarts.push(env.source.stop('fast').then(() => env.source.start()));
      } else if (i === 3) {
        log('target crash (immediate shutdown) during SYNCING_WAL');
        restarts.push(env.target.stop('immediate').then(() => env.target.start()));
      }
      // The apply's worker, or the oldest while the apply waits for its heartbeat timeout to run again.
      await kill('SYNCING_WAL', `random point ${i + 1} of ${killsInSync}`, (await runningOn('applyChanges')) ?? workers[0]);
    }
    await Promise.all(restarts);
    await abandonedAttempt('VALIDATING', 'public.documents', 'validateMigration', 'the comparison (validateMigration)', 1);
    await caughtUp();
    await m.signal('cutover');
    log(`cutover signal ${attempt + 1}`);
    await result.catch(() => undefined);
    if (failed) throw failed;
    await writer.stop();
    const final = await m.status();
    const finalFenceToCompletedMs = final.cutover?.fencedAt ? Date.parse(report!.finishedAt) - Date.parse(final.cutover.fencedAt) : undefined;
    const differences: string[] = [];
    for (const [schema, table] of CHAOS_TABLES) {
      const a = await fingerprint(env.source, db, schema, table);
      const b = await fingerprint(env.target, db, schema, table);
      if (a.rows !== b.rows || a.hash !== b.hash) differences.push(`${schema}.${table}: source ${a.rows} rows ${a.hash}, target ${b.rows} rows ${b.hash}`);
    }
    differences.push(...(await sequenceDifferences(env, db)));
    const cleaned = await dts('cleanup', m.workflowId);
    if (cleaned.code !== 0) throw new Error(`dts cleanup failed: ${cleaned.err}`);
    const leftovers = await sourceLeftovers(env.source, db);
    const killsByPhase = PHASES.map((p) => [p, kills.filter((k) => k.phase === p).length] as const)
      .filter(([, n]) => n > 0)
      .map(([p, n]) => `${p} ×${n}`)
      .join(', ');
    const result_: ChaosResult = {
      seed: opts.seed,
      kills,
      killsByPhase,
      writeStops: writer.stops,
      finalFenceToCompletedMs,
      report: report!,
      differences,
      leftovers,
      durationMs: Date.now() - started,
    };
    log(`COMPLETED after ${kills.length} kills: ${killsByPhase}; ${writer.committed()} application transactions`);
    log(`write stops seen by the application: ${writer.stops.map((w) => `${w} ms`).join(', ') || 'none ended'} (bound ${opts.maxWriteStopSeconds} s); completed cutover: fence to COMPLETED ${finalFenceToCompletedMs} ms`);
    log(`differences: ${differences.length ? differences.join('; ') : 'none'} (${CHAOS_TABLES.length} tables, sequences); left on the source after dts cleanup: ${JSON.stringify(leftovers)}`);
    log(`copy resumed after a lost snapshot: ${JSON.stringify(report!.copyResumes ?? 'no')}`);
    return result_;
  } finally {
    for (const h of holds) await h.release();
    await spawning?.catch(() => undefined);
    process.env = savedEnv;
    for (const w of workers) await w.kill();
    await env.stop();
  }
}

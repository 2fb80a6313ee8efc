/**
 * The chaos run (issue 19): a live migration under writes while the worker is killed with SIGKILL at
 * seeded random points of every phase it can recover from, the source restarted and the target
 * crashed during the sync, and the worker killed again as the cutover fences the source. It must end
 * COMPLETED with identical content and, after `dts cleanup` of its read-only source, nothing left.
 * Used by test/integration/chaos.test.ts (bounded, in CI) and `npm run chaos` (longer).
 */
import type { Client } from 'pg';
import { startEnv, type MigrationHandle, type TestEnv } from './env';
import { startWorkerProcess, type WorkerProcess } from './worker-process';
import { fingerprint, sourceLeftovers } from './compare';
import { SHOP_TABLES } from './fixtures';
import { dts } from './dts';
import { waitFor } from './wait';
import { phaseOf } from '../../client/temporal';
import type { MigrationReport } from '../../workflows/contract';

export interface ChaosOptions {
  seed: number;
  /** Worker kills at least (10 or more): one as the cutover fences the source, one more in VALIDATING when caught. */
  kills: number;
  /** Shop data size (1 = about 20k rows). */
  scale: number;
  maxWriteStopSeconds: number;
  log: (line: string) => void;
}

export interface ChaosResult {
  seed: number;
  kills: Array<{ phase: string; atMs: number }>;
  /** Write stops the application saw that ended (abandoned cutover attempts), ms. */
  writeStops: number[];
  /** The completed cutover: from its fence to COMPLETED (the source then stays read-only until cleanup). */
  finalFenceToCompletedMs?: number;
  report: MigrationReport;
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

export async function runChaos(opts: ChaosOptions): Promise<ChaosResult> {
  const started = Date.now();
  const random = seededRandom(opts.seed);
  const log = (line: string) => opts.log(`[chaos ${((Date.now() - started) / 1000).toFixed(1)} s] ${line}`);
  log(`seed ${opts.seed}, ${opts.kills} worker kills, scale ${opts.scale}, maxWriteStopSeconds ${opts.maxWriteStopSeconds}`);
  const env: TestEnv = await startEnv({ inProcessWorker: false });
  const savedEnv = { ...process.env };
  let worker: WorkerProcess | undefined;
  try {
    Object.assign(process.env, { TEMPORAL_ADDRESS: env.temporal.address, TEMPORAL_NAMESPACE: 'default', TEMPORAL_TASK_QUEUE: env.taskQueue });
    delete process.env.PG_DTS_CODEC_KEY;
    worker = await startWorkerProcess(env);
    const db = 'chaos';
    await env.shopDatabase(db, opts.scale);
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
    const phaseNow = async () => {
      const d = await handle.describe();
      if (d.status.name !== 'RUNNING') throw new Error(`migration ended (${d.status.name}, ${phaseOf(d) ?? '?'}) during the chaos: ${(await m.status().catch(() => undefined))?.error ?? ''}`);
      return phaseOf(d) ?? 'INIT';
    };
    /**
     * SIGKILL of the running worker. `overlap`: its successor is started first (as with several
     * workers deployed), which keeps the run short; otherwise no worker runs for a moment.
     */
    const kill = async (phase: () => Promise<string> | string, overlap = false) => {
      const old = worker!;
      if (overlap) worker = await startWorkerProcess(env);
      const at = await phase();
      await old.kill();
      kills.push({ phase: at, atMs: Date.now() - started });
      log(`kill -9 worker #${kills.length} in ${at}${overlap ? ' (its successor already polling)' : ''}`);
      if (!overlap) {
        await sleep(Math.floor(random() * 1500));
        worker = await startWorkerProcess(env);
      }
    };
    const killsBeforeCutover = opts.kills - 1;
    let copyKills = 0;
    let sourceRestarted = false;
    let targetCrashed = false;
    while (kills.length < killsBeforeCutover) {
      const s = { phase: await phaseNow() };
      // INIT and CREATING_TABLES run quick steps with a 5-minute start-to-close and no heartbeat: a
      // kill there costs minutes (seen: a kill during planCopies stalled the run 5 minutes). A kill in the copy loses the
      // exported snapshot; the copy resumes in a new one, keeping what was committed (at most 3 snapshots): once.
      // Only with a copy in flight: the steps around the copies (planCopies, ...) are quick ones too.
      if (s.phase === 'MIGRATING_DATA' && copyKills === 0 && (await m.status().catch(() => undefined))?.tables.some((t) => t.state === 'copying')) {
        copyKills++;
        await kill(() => 'MIGRATING_DATA (copying)');
        continue;
      }
      if (s.phase !== 'SYNCING_WAL') {
        await sleep(100);
        continue;
      }
      await sleep(Math.floor(random() * 2000));
      if (!sourceRestarted && kills.length >= 3) {
        sourceRestarted = true;
        log('source restart (fast shutdown) during SYNCING_WAL');
        await env.source.stop('fast');
        await env.source.start();
      } else if (!targetCrashed && kills.length >= 5) {
        targetCrashed = true;
        log('target crash (immediate shutdown) during SYNCING_WAL');
        await env.target.stop('immediate');
        await env.target.start();
      }
      await kill(phaseNow, true);
    }
    // The cutover: a kill as soon as the fence is up, then one in VALIDATING of a later attempt.
    await m.signal('cutover');
    log('cutover signal');
    const fenced = async () =>
      (await env.source.query<{ n: number }>(`SELECT count(*)::int AS n FROM pg_trigger WHERE tgname LIKE 'pg\\_dts\\_fence\\_%'`, [], db).catch(() => [{ n: 0 }]))[0]!.n > 0;
    await waitFor('the fence', async () => (await fenced()) || undefined, 300_000, 20);
    await kill(() => 'STOPPING_WRITES (fence up)');
    let report: MigrationReport | undefined;
    const result = m.result().then((r) => void (report = r));
    let failed: unknown;
    result.catch((e: unknown) => void (failed = e));
    while (!report && !failed) {
      const s = await m.status().catch(() => undefined);
      if (s && kills.length <= opts.kills && s.phase === 'VALIDATING') {
        await kill(() => 'VALIDATING');
        continue;
      }
      // An attempt was abandoned (the fence expired while the worker was gone): cut over again.
      if (s && s.phase === 'SYNCING_WAL' && s.cutover?.abandoned && !s.cutover.requested) {
        log(`cutover attempt abandoned: ${s.cutover.abandoned}; signalling again`);
        await m.signal('cutover');
        await sleep(1000);
      }
      await sleep(100);
    }
    if (failed) throw failed;
    await writer.stop();
    const final = await m.status();
    const finalFenceToCompletedMs = final.cutover?.fencedAt ? Date.parse(report!.finishedAt) - Date.parse(final.cutover.fencedAt) : undefined;
    const differences: string[] = [];
    for (const [schema, table] of SHOP_TABLES) {
      const a = await fingerprint(env.source, db, schema, table);
      const b = await fingerprint(env.target, db, schema, table);
      if (a.rows !== b.rows || a.hash !== b.hash) differences.push(`${schema}.${table}: source ${a.rows} rows ${a.hash}, target ${b.rows} rows ${b.hash}`);
    }
    const cleaned = await dts('cleanup', m.workflowId);
    if (cleaned.code !== 0) throw new Error(`dts cleanup failed: ${cleaned.err}`);
    const leftovers = await sourceLeftovers(env.source, db);
    const result_: ChaosResult = {
      seed: opts.seed,
      kills,
      writeStops: writer.stops,
      finalFenceToCompletedMs,
      report: report!,
      differences,
      leftovers,
      durationMs: Date.now() - started,
    };
    log(`COMPLETED after ${kills.length} kills in ${[...new Set(kills.map((k) => k.phase))].join(', ')}; ${writer.committed()} application transactions`);
    log(`write stops seen by the application: ${writer.stops.map((w) => `${w} ms`).join(', ') || 'none ended'} (bound ${opts.maxWriteStopSeconds} s); completed cutover: fence to COMPLETED ${finalFenceToCompletedMs} ms`);
    log(`differences: ${differences.length ? differences.join('; ') : 'none'}; left on the source after dts cleanup: ${JSON.stringify(leftovers)}`);
    if (report!.copyResumes) log(`copy resumed after a lost snapshot: ${JSON.stringify(report!.copyResumes)}`);
    return result_;
  } finally {
    process.env = savedEnv;
    await worker?.kill();
    await env.stop();
  }
}

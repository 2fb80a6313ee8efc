/**
 * `dts` without a Temporal server: usage errors exit 2 before anything is contacted, an unreachable
 * server exits 1, help documents the exit codes; and the pure status rendering behind the bars.
 */
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import { randomBytes } from 'node:crypto';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { dts } from '../harness/dts';
import { formatStatus, humanBytes, humanDuration, lagLine, overallLine, StatusBars, tableBars } from '../../client/format';
import type { MigrationStatus } from '../../workflows/contract';

const dir = mkdtempSync(join(tmpdir(), 'dts-cli-'));
const file = (name: string, content: string) => {
  const p = join(dir, name);
  writeFileSync(p, content);
  return p;
};

let saved: NodeJS.ProcessEnv;
beforeEach(() => {
  saved = { ...process.env };
  // Nothing listens here: a command that got as far as Temporal would fail with exit 1, not 2.
  process.env.TEMPORAL_ADDRESS = '127.0.0.1:1';
  delete process.env.PG_DTS_CODEC_KEY;
});
afterEach(() => {
  process.env = saved;
});


describe('dts usage', () => {
  it('documents commands, environment and exit codes; --help exits 0', async () => {
    const r = await dts('--help');
    expect(r.code).toBe(0);
    for (const cmd of ['start', 'status', 'list', 'pause', 'resume', 'cancel', 'cutover', 'worker', 'api', 'demo', 'codec-server']) {
      expect(r.out).toMatch(new RegExp(`\\n\\s+${cmd}\\b`));
    }
    expect(r.out).toMatch(/Exit codes:\n\s+0\s+success\n\s+1\s+the operation failed/);
    expect(r.out).toMatch(/TEMPORAL_ADDRESS/);
    expect((await dts('status', '--help')).out).toMatch(/--watch/);
  });

  it('exits 2 on unknown commands, options and missing arguments', async () => {
    expect((await dts('frobnicate')).code).toBe(2);
    expect((await dts('start')).code).toBe(2);
    expect((await dts('status')).code).toBe(2);
    expect((await dts('status', 'x', '--bogus')).code).toBe(2);
    expect((await dts('status', 'x', '--interval', '0')).code).toBe(2);
    expect((await dts('list', '--phase', 'NOT_A_PHASE')).code).toBe(2);
    expect((await dts('api', '--port', '70000')).code).toBe(2);
    expect((await dts()).code).toBe(2);
  });

  it('exits 2 on an unreadable, invalid or malformed spec, naming the field, before contacting Temporal', async () => {
    let r = await dts('start', '--config', join(dir, 'missing.json'));
    expect(r).toMatchObject({ code: 2, err: expect.stringMatching(/cannot read .*missing\.json: ENOENT/) });
    r = await dts('start', '--config', file('bad.json', '{ nope'));
    expect(r).toMatchObject({ code: 2, err: expect.stringMatching(/is not valid JSON/) });
    r = await dts('start', '--config', file('malformed.json', JSON.stringify({ source: 'postgres://a@h/db', target: 'mysql://x', tableSuffix: 'a-b' })));
    expect(r.code).toBe(2);
    expect(r.err).toMatch(/target: must be a postgres:\/\//);
    expect(r.err).toMatch(/tableSuffix: may only contain/);
  });

  it('refuses a password without payload encryption, and never prints it', async () => {
    const secret = 'Sup3r-S3cret-pw';
    const spec = { source: { host: 'h', user: 'u', password: secret, database: 'd' }, target: `postgres://u:${secret}@h2/d` };
    const r = await dts('start', '--config', file('pw.json', JSON.stringify(spec)));
    expect(r.code).toBe(2);
    expect(r.err).toMatch(/source contains a password.*PG_DTS_CODEC_KEY/s);
    expect(r.out + r.err).not.toContain(secret);
  });

  it('exits 2 on a malformed PG_DTS_CODEC_KEY, without echoing it', async () => {
    process.env.PG_DTS_CODEC_KEY = 'c2hvcnQ=';
    const r = await dts('start', '--config', file('ok.json', JSON.stringify({ source: 'postgres://a@h/db', target: 'postgres://a@h2/db' })));
    expect(r.code).toBe(2);
    expect(r.err).toMatch(/PG_DTS_CODEC_KEY decodes to 5 bytes, not 32/);
    expect(r.err).not.toContain('c2hvcnQ=');
  });

  it('exits 1 when Temporal cannot be reached', async () => {
    process.env.PG_DTS_CODEC_KEY = randomBytes(32).toString('base64');
    const r = await dts('status', 'some-id');
    expect(r.code).toBe(1);
    expect(r.err).toMatch(/cannot reach Temporal at 127\.0\.0\.1:1/);
  }, 30_000);
});

describe('status rendering', () => {
  const status: MigrationStatus = {
    migrationId: 'm1',
    phase: 'MIGRATING_DATA',
    paused: false,
    mode: 'online',
    tables: [
      { source: 'public.orders', target: 'app.orders', state: 'copying', rowsCopied: 500, rowsTotal: 1000 },
      { source: 'public.users', target: 'app.users', state: 'copied', rowsCopied: 1200, rowsTotal: 1000 },
      { source: 'public.empty', target: 'app.empty', state: 'pending', rowsCopied: 0 },
    ],
    replication: { slot: 's', confirmedLsn: '0/16B3748', sourceLsn: '0/16B9000', lagBytes: 22712, transactions: 3, changes: 40 },
    notices: ['n1'],
    lastControl: 'resumed in MIGRATING_DATA',
  };

  it('computes bar totals, rates and ETAs from successive samples', () => {
    const before = { at: 1_000, rows: new Map([['public.orders', 100]]) };
    const bars = tableBars(status, before, 3_000);
    expect(bars.map((b) => [b.name.trim(), b.value, b.total, b.state.trim()])).toEqual([
      ['public.orders', 500, 1000, 'copying'],
      ['public.users', 1200, 1200, 'copied'],
      ['public.empty', 0, 1, 'pending'],
    ]);
    expect(bars[0]!.rate).toBe('200 rows/s');
    expect(bars[0]!.eta).toBe('eta 3s');
    expect(bars[1]!.rate).toBe('');
  });

  it('renders the lag line and the text status', () => {
    expect(lagLine(status)).toBe('replication: lag 22.2 KiB, applied 0/16B3748, source 0/16B9000, 3 transactions / 40 changes applied');
    expect(lagLine({ ...status, replication: { ...status.replication!, lagSeconds: 1.25 } as never })).toMatch(/lag 22\.2 KiB \/ 1\.3 s/);
    const text = formatStatus(status);
    expect(text).toMatch(/^migration m1 {2}phase MIGRATING_DATA {2}mode online {2}tables 1\/3 copied/);
    expect(text).toMatch(/public\.orders +█{12}░{12} +500 rows {2}copying {2}-> app\.orders/);
    expect(text).toMatch(/last control: resumed in MIGRATING_DATA/);
    expect(humanBytes(512)).toBe('512 B');
    expect(humanBytes(3 * 1024 * 1024)).toBe('3.0 MiB');
    expect(humanDuration(3725)).toBe('1h02m05s');
  });

  it('a migration of thousands of tables: totals from progress, and how much of the list is shown', () => {
    const many: MigrationStatus = {
      ...status,
      tablesTotal: 2000,
      progress: { tablesTotal: 2000, tablesCopied: 850, rowsCopied: 17000, bytesCopied: 3 * 1024 * 1024, bytesPerSecond: 1024 * 1024, etaSeconds: 4 },
    };
    const text = formatStatus(many);
    expect(text).toMatch(/^migration m1 {2}phase MIGRATING_DATA {2}mode online {2}tables 850\/2000 copied {2}17000 rows, 3\.0 MiB {2}1\.0 MiB\/s {2}about 4 s left/);
    expect(text).toMatch(/\(3 of 2000 tables shown\)/);
  });

  it('the overall line: bytes of the total, percentage, rate, time left and units; 100% once the copy is over', () => {
    const copying: MigrationStatus = {
      ...status,
      progress: { tablesTotal: 3, tablesCopied: 1, rowsCopied: 1700, bytesCopied: 256 * 1024 * 1024, bytesTotal: 1024 * 1024 * 1024, bytesPerSecond: 8 * 1024 * 1024, etaSeconds: 96, batchesDone: 2, batchesTotal: 7 },
    };
    expect(overallLine(copying)).toBe(`overall ${'█'.repeat(6)}${'░'.repeat(18)}  25%  256.0 MiB of 1.0 GiB, 8.0 MiB/s, eta 1m36s, units 2/7`);
    expect(formatStatus(copying)).toContain('\n  overall ');
    // COPY text can run past the on-disk sizes; the line never says more than 100%.
    expect(overallLine({ ...copying, progress: { ...copying.progress!, bytesCopied: 2 * 1024 * 1024 * 1024 } })).toMatch(/ 100% {2}1\.0 GiB of 1\.0 GiB/);
    expect(overallLine({ ...copying, phase: 'SYNCING_WAL' })).toBe(`overall ${'█'.repeat(24)} 100%  1.0 GiB of 1.0 GiB, units 2/7`);
    expect(overallLine(status)).toBeUndefined();
  });

  it('summary mode lists the copy units in flight from the status, whatever page their table is on', () => {
    const s: MigrationStatus = { ...status, tablesTotal: 5000, copying: [{ unit: 'batch 7', table: 'tenant.t4711', rows: 1234, bytes: 2048 }] };
    const text = formatStatus(s, { summary: true });
    expect(text).toMatch(/tenant\.t4711 +1,234 rows, 2\.0 KiB {2}\(batch 7\)/);
    // The units stand in for the page's tables in state copying.
    expect(text).not.toMatch(/public\.orders .* copying/);
  });

  it('summary mode counts the tables per state and shows only those in flight', () => {
    const text = formatStatus(status, { summary: true });
    expect(text).toContain('tables: 1 copying, 1 pending, 1 copied');
    expect(text).toMatch(/public\.orders .* copying/);
    expect(text).not.toContain('public.users');
    expect(text).not.toContain('public.empty');
  });

  it('live bars past 20 tables: one line per table in flight (at most 10), the rest counted, and SIGINT released on stop', () => {
    const tables = Array.from({ length: 1500 }, (_, i) => ({ source: `t.t${i}`, target: `t.t${i}`, state: i < 12 ? ('copying' as const) : ('pending' as const), rowsCopied: i < 12 ? 50 : 0, rowsTotal: 100 }));
    const screen = new PassThrough() as PassThrough & NodeJS.WriteStream;
    Object.assign(screen, { isTTY: true, columns: 200, rows: 60, cursorTo: () => true, moveCursor: () => true, clearLine: () => true, clearScreenDown: () => true });
    let drawn = '';
    screen.on('data', (b: Buffer) => (drawn += b.toString()));
    const before = process.listenerCount('SIGINT');
    const bars = new StatusBars(screen);
    expect(process.listenerCount('SIGINT')).toBe(before + 1);
    bars.update({ ...status, tables, tablesTotal: 1500 });
    bars.stop();
    expect(process.listenerCount('SIGINT')).toBe(before);
    expect(drawn).toContain('tables: 12 copying, 1488 pending');
    const shownTables = new Set(drawn.match(/t\.t\d+ /g));
    expect(shownTables.size).toBe(10);
    expect(drawn).not.toContain('t.t12 ');
    // The cursor is shown again (cli-progress hid it while drawing).
    expect(drawn).toContain('\u001b[?25h');
  });
});

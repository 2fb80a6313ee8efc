/**
 * `dts verify` in-process: a commander program with registerVerify, run against two real clusters
 * whose tables are identical, then different; exit codes and printed keys checked.
 */
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { Command } from 'commander';
import { registerVerify, splitList } from '../../client/verify';
import { startCluster, type PgCluster } from '../harness/pg-cluster';

const SOURCE = `
CREATE SCHEMA "Sales Dept";
CREATE TABLE public.users (id int PRIMARY KEY, name text, born date, tags text[]);
CREATE TABLE public.log (at timestamptz, msg text);
CREATE TABLE "Sales Dept"."Order Items" ("Order ID" bigint, line int, qty numeric, PRIMARY KEY ("Order ID", line));
`;
const FILL = (users: string, log: string, items: string) => `
INSERT INTO ${users} SELECT g, 'user ' || g, date '1990-01-01' + g, ARRAY['t' || (g % 3), NULL] FROM generate_series(1, 2500) g;
INSERT INTO ${log} SELECT timestamptz '2024-05-01 12:00:00.123456+00' + g * interval '1 second', 'msg ' || (g % 40) FROM generate_series(1, 400) g;
INSERT INTO ${items} SELECT g / 4, g % 4, g * 0.25 FROM generate_series(0, 999) g;
`;
// The target is named through a schema mapping and a suffix: public -> app, "Sales Dept" -> crm, + _m.
const TARGET = `
CREATE SCHEMA app; CREATE SCHEMA crm;
CREATE TABLE app.users_m (id int PRIMARY KEY, name text, born date, tags text[]);
CREATE TABLE app.log_m (at timestamptz, msg text);
CREATE TABLE crm."Order Items_m" ("Order ID" bigint, line int, qty numeric, PRIMARY KEY ("Order ID", line));
`;

let source: PgCluster;
let target: PgCluster;

beforeAll(async () => {
  [source, target] = await Promise.all([startCluster({ name: 'verify-src' }), startCluster({ name: 'verify-tgt' })]);
  await source.query(SOURCE + FILL('public.users', 'public.log', '"Sales Dept"."Order Items"'));
  // Same rows, inserted in reverse order.
  await target.query(TARGET + FILL('app.users_m', 'app.log_m', 'crm."Order Items_m"').replace(/generate_series\((\d+), (\d+)\) g/g, 'generate_series($2, $1, -1) g'));
});

afterAll(async () => {
  await Promise.all([source?.destroy(), target?.destroy()]);
});

afterEach(() => {
  process.exitCode = undefined;
  vi.restoreAllMocks();
});

async function verify(...args: string[]): Promise<{ code: number; out: string; err: string }> {
  const out: string[] = [];
  const err: string[] = [];
  vi.spyOn(console, 'log').mockImplementation((...a: unknown[]) => void out.push(a.join(' ')));
  vi.spyOn(console, 'error').mockImplementation((...a: unknown[]) => void err.push(a.join(' ')));
  const program = new Command('dts').exitOverride();
  registerVerify(program);
  await program.parseAsync(['verify', ...args], { from: 'user' });
  const code = typeof process.exitCode === 'number' ? process.exitCode : 0;
  process.exitCode = undefined;
  vi.restoreAllMocks();
  return { code, out: out.join('\n'), err: err.join('\n') };
}

const base = () => [
  '--source',
  source.uri(),
  '--target',
  target.uri(),
  '--schemas',
  'public,Sales Dept',
  '--schema-mapping',
  'public=app,Sales Dept=crm',
  '--suffix',
  '_m',
  '--chunk-rows',
  '300',
];

describe('dts verify', () => {
  it('exits 0 and prints a table when the databases hold the same rows', async () => {
    const r = await verify(...base());
    expect(r.err).toBe('');
    expect(r.code).toBe(0);
    expect(r.out).toMatch(/^source\s+target\s+source rows\s+target rows\s+counts\s+sample\s+checksum\s+result$/m);
    expect(r.out).toMatch(/^Sales Dept\.Order Items\s+crm\.Order Items_m\s+1000\s+1000\s+equal\s+1000 equal\s+4 chunks equal\s+identical$/m);
    expect(r.out).toMatch(/^public\.log\s+app\.log_m\s+400\s+400\s+equal\s+400 equal\s+1 chunk equal\s+identical$/m);
    expect(r.out).toMatch(/^public\.users\s+app\.users_m\s+2500\s+2500\s+equal\s+1000 equal\s+9 chunks equal\s+identical$/m);
    expect(r.out).toContain('3 tables compared: 3 identical, 0 different');
  });

  it('exits 1 and names the differing keys when the target differs', async () => {
    await target.query(`UPDATE app.users_m SET born = born + 1 WHERE id = 1234; DELETE FROM crm."Order Items_m" WHERE "Order ID" = 17 AND line = 3`);
    try {
      const r = await verify(...base(), '--sample', '0', '--tables', 'users,"Sales Dept"."Order Items"');
      expect(r.code).toBe(1);
      expect(r.out).toMatch(/^public\.users\s+app\.users_m\s+2500\s+2500\s+equal\s+not run\s+DIFFER\s+DIFFERENT$/m);
      expect(r.out).toContain('  id=1234: different (born) [chunk ');
      expect(r.out).toContain('  "Order ID"=17, line=3: missing-on-target [chunk ');
      expect(r.out).toContain('2 tables compared: 0 identical, 2 different');

      // Counts and sample only: the sample (every row of these small tables) still sees both.
      const s = await verify(...base(), '--no-checksum', '--sample', '5000', '--tables', 'users,"Sales Dept"."Order Items"', '--json');
      expect(s.code).toBe(1);
      const json = JSON.parse(s.out) as Array<{ checksum: string; sample: string; mismatches: Array<{ key: Record<string, string> }> }>;
      expect(json.map((t) => [t.checksum, t.sample, t.mismatches.map((m) => m.key)])).toEqual([
        ['not-run', 'mismatch', [{ id: '1234' }]],
        ['not-run', 'mismatch', [{ 'Order ID': '17', line: '3' }]],
      ]);
    } finally {
      await target.query(`UPDATE app.users_m SET born = born - 1 WHERE id = 1234; INSERT INTO crm."Order Items_m" VALUES (17, 3, 71 * 0.25)`);
    }
    expect((await verify(...base())).code).toBe(0);
  });

  it('exits 1 when a target table is missing, 2 on bad usage', async () => {
    const missing = await verify(...base(), '--suffix', '_x');
    expect(missing.code).toBe(1);
    expect(missing.out).toContain('public.users -> app.users_x: table app.users_x does not exist on the target');
    expect(missing.out).toMatch(/^public\.users\s+app\.users_x\s+-\s+-\s+-\s+not run\s+not run\s+ERROR$/m);

    const badNumber = await verify(...base(), '--sample', 'many');
    expect(badNumber.code).toBe(2);
    expect(badNumber.err).toContain('--sample must be a whole number');

    const badUrl = await verify('--source', 'mysql://x', '--target', target.uri());
    expect(badUrl.code).toBe(2);
    expect(badUrl.err).toContain('source: must be a postgres:// or postgresql:// URI');

    const badMap = await verify(...base(), '--schema-mapping', 'public');
    expect(badMap.code).toBe(2);

    const noTable = await verify(...base(), '--tables', 'nope');
    expect(noTable.code).toBe(1);
    expect(noTable.err).toContain('table(s) not found on the source: public.nope');
  });

  it('splits lists on commas outside double quotes', () => {
    expect(splitList('a, "b,c".d ,,e')).toEqual(['a', '"b,c".d', 'e']);
  });
});

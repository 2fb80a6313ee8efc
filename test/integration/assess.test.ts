/**
 * `dts assess` and POST /api/v1/assess list every problem at once, read-only: a source with
 * wal_level = replica, a table without a replica identity, a role missing rights and a reserved schema
 * in the spec are all named in one run, nothing changes on either server, and the real command exits
 * 1; a sound spec exits 0 with sizes and estimates.
 */
import { writeFileSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { FastifyInstance } from 'fastify';
import { startCluster, type PgCluster } from '../harness/pg-cluster';
import { runCommand } from '../harness/process';
import { buildApi } from '../../client/api';
import { connectTemporal, type TemporalContext } from '../../client/temporal';
import type { Assessment } from '../../activities/assess';

let replicaSrc: PgCluster;
let src: PgCluster;
let dst: PgCluster;
const dir = mkdtempSync(join(tmpdir(), 'dts-assess-it-'));
const root = join(__dirname, '..', '..');

const SCHEMA = `
  CREATE TABLE public.users (id int PRIMARY KEY, name text);
  CREATE TABLE public.nokey (a int, b text);
  CREATE TABLE public.secret (id int PRIMARY KEY, v text);
  INSERT INTO public.users SELECT g, repeat('x', 200) FROM generate_series(1, 20000) g;
  ANALYZE public.users;
`;

/** Everything assess could conceivably change on a server, to prove it changed nothing. */
async function serverState(c: PgCluster) {
  const [r] = await c.query(
    `SELECT (SELECT count(*) FROM pg_replication_slots)::int AS slots,
            (SELECT count(*) FROM pg_publication)::int AS pubs,
            (SELECT count(*) FROM pg_class)::int AS classes,
            (SELECT count(*) FROM pg_namespace)::int AS schemas,
            (SELECT count(*) FROM pg_trigger)::int AS triggers,
            (SELECT string_agg(relname || ':' || relreplident::text, ',' ORDER BY relname) FROM pg_class WHERE relnamespace = 'public'::regnamespace AND relkind = 'r') AS identities`,
    [],
    'app',
  );
  return r;
}

function specFile(name: string, spec: unknown): string {
  const file = join(dir, `${name}.json`);
  writeFileSync(file, JSON.stringify(spec));
  return file;
}

const dtsBin = (...args: string[]) => runCommand(process.execPath, [join(root, 'bin', 'dts.js'), ...args], { cwd: root, timeoutMs: 90_000 });

beforeAll(async () => {
  [replicaSrc, src, dst] = await Promise.all([
    startCluster({ name: 'as-replica', settings: { wal_level: 'replica' } }),
    startCluster({ name: 'as-src' }),
    startCluster({ name: 'as-dst' }),
  ]);
  for (const c of [replicaSrc, src, dst]) await c.createDatabase('app');
  for (const c of [replicaSrc, src]) await c.query(SCHEMA, [], 'app');
  // A migration role that reads two of the three tables, owns none and may not replicate.
  await replicaSrc.query(`CREATE ROLE migrator LOGIN`);
  await replicaSrc.query(`GRANT SELECT ON public.users, public.nokey TO migrator`, [], 'app');
  await src.query(`ALTER TABLE public.nokey ADD PRIMARY KEY (a)`, [], 'app');
}, 120_000);

afterAll(async () => {
  await Promise.allSettled([replicaSrc?.destroy(), src?.destroy(), dst?.destroy()]);
});

describe('dts assess', () => {
  it('lists every planted problem at once, changes nothing, and exits 1', async () => {
    const source = `postgres://migrator@127.0.0.1:${replicaSrc.port}/app`;
    const file = specFile('bad', { source, target: dst.uri('app'), schemas: ['public', 'pg_catalog'] });
    const before = await Promise.all([serverState(replicaSrc), serverState(dst)]);

    const human = await dtsBin('assess', '--config', file, '--wal-sample', '1');
    expect(human.code, human.err).toBe(1);
    expect(human.out).toMatch(/problems \(\d+\): the migration would be refused/);
    expect(human.out).toContain('spec: schemas.1: is a reserved schema');
    expect(human.out).toContain('the source has wal_level = replica');
    expect(human.out).toContain('may not open a replication connection');
    expect(human.out).toMatch(/table\(s\) without a replica identity[^\n]*public\.nokey/);
    expect(human.out).toMatch(/lacks rights the migration needs: [^\n]*SELECT on secret/);

    const json = await dtsBin('assess', '--config', file, '--json', '--wal-sample', '0');
    expect(json.code).toBe(1);
    const a = JSON.parse(json.out) as Assessment;
    expect(a.ok).toBe(false);
    // Each problem on its own line: spec, wal_level, replication right, replica identity, table rights.
    expect(a.problems.length).toBeGreaterThanOrEqual(5);
    for (const re of [/reserved schema/, /wal_level = replica/, /replication connection/, /without a replica identity/, /SELECT on secret/]) {
      expect(a.problems.filter((p) => re.test(p)), String(re)).toHaveLength(1);
    }
    expect(a.problems.join('\n')).not.toContain('could not be checked');

    expect(await Promise.all([serverState(replicaSrc), serverState(dst)])).toEqual(before);
  }, 120_000);

  it('exits 0 on a sound spec, with sizes, the copy estimate and the WAL rate', async () => {
    const file = specFile('good', { source: src.uri('app'), target: dst.uri('app'), tableSuffix: '_m' });
    const before = await Promise.all([serverState(src), serverState(dst)]);
    const human = await dtsBin('assess', '--config', file, '--wal-sample', '1');
    expect(human.code, `${human.out}\n${human.err}`).toBe(0);
    expect(human.out).toContain('problems: none');
    expect(human.out).toMatch(/tables: 3, /);
    expect(human.out).toMatch(/copy: ~\d+ s for the data/);
    expect(human.out).toMatch(/WAL: the source wrote .* over 1 s/);
    const json = await dtsBin('assess', '--config', file, '--json', '--wal-sample', '1');
    expect(json.code).toBe(0);
    const a = JSON.parse(json.out) as Assessment;
    expect(a).toMatchObject({ ok: true, problems: [], mode: 'online', source: `127.0.0.1:${src.port}/app` });
    expect(a.tables!.count).toBe(3);
    expect(a.tables!.largest[0]).toMatchObject({ table: 'public.users', estimatedRows: 20000 });
    expect(a.tables!.dataBytes).toBeGreaterThan(4_000_000);
    expect(a.estimate!.walBytesPerSecond).toBeGreaterThanOrEqual(0);
    expect(await Promise.all([serverState(src), serverState(dst)])).toEqual(before);
  }, 120_000);

  it('exits 2 on an unreadable spec file', async () => {
    const r = await dtsBin('assess', '--config', join(dir, 'missing.json'));
    expect(r.code).toBe(2);
    expect(r.err).toContain('cannot read');
  }, 60_000);
});

describe('POST /api/v1/assess', () => {
  let ctx: TemporalContext;
  let app: FastifyInstance;
  const TOKEN = 'assess-test-token-0123456789abcdef';
  beforeAll(async () => {
    // The assessment needs no Temporal: a lazy connection to nowhere.
    ctx = await connectTemporal({ lazy: true, env: { TEMPORAL_ADDRESS: '127.0.0.1:1' } });
    app = await buildApi({ temporal: ctx, token: TOKEN });
  });
  afterAll(async () => {
    await app?.close();
    await ctx?.close();
  });

  it('needs the token, and lists the same problems', async () => {
    const body = {
      source_db: { host: '127.0.0.1', port: replicaSrc.port, user: 'migrator', dbname: 'app' },
      target_db: { host: '127.0.0.1', port: dst.port, user: 'postgres', dbname: 'app' },
      wal_sample_seconds: 0,
    };
    const anonymous = await app.inject({ method: 'POST', url: '/api/v1/assess', payload: body });
    expect(anonymous.statusCode).toBe(401);
    const res = await app.inject({ method: 'POST', url: '/api/v1/assess', payload: body, headers: { authorization: `Bearer ${TOKEN}` } });
    expect(res.statusCode, res.body).toBe(200);
    const a = res.json<Assessment>();
    expect(a.ok).toBe(false);
    for (const re of [/wal_level = replica/, /replication connection/, /replica identity/, /SELECT on secret/]) {
      expect(a.problems.some((p) => re.test(p)), String(re)).toBe(true);
    }
    const good = await app.inject({
      method: 'POST',
      url: '/api/v1/assess',
      payload: { ...body, source_db: { ...body.source_db, port: src.port, user: 'postgres' }, table_suffix: '_m' },
      headers: { authorization: `Bearer ${TOKEN}` },
    });
    expect(good.json<Assessment>()).toMatchObject({ ok: true, problems: [] });
    const doc = await app.inject({ method: 'GET', url: '/api/v1/openapi.json' });
    expect(Object.keys(doc.json<{ paths: Record<string, unknown> }>().paths)).toContain('/api/v1/assess');
  }, 60_000);
});

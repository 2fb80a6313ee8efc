/**
 * Every type in the catalog round-trips exactly through an online migration: one column of each with
 * edge values, copied, then changed during SYNCING_WAL (UPDATE, INSERT, DELETE) and applied, then both
 * sides compared. User-defined types (enum, domain, nested composite, range/multirange) are created on
 * the target through schemaMapping; extension types when the contrib extensions are installed.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startEnv, type TestEnv } from '../harness/env';
import { fingerprint } from '../harness/compare';

let env: TestEnv;
let extensions: { hstore: boolean; citext: boolean };

beforeAll(async () => {
  env = await startEnv();
  const avail = async (c: typeof env.source) =>
    new Set((await c.query<{ name: string }>(`SELECT name FROM pg_available_extensions WHERE name IN ('hstore', 'citext')`)).map((r) => r.name));
  const [a, b] = await Promise.all([avail(env.source), avail(env.target)]);
  extensions = { hstore: a.has('hstore') && b.has('hstore'), citext: a.has('citext') && b.has('citext') };
  for (const [name, ok] of Object.entries(extensions)) {
    // eslint-disable-next-line no-console
    if (!ok) console.warn(`types.test: extension ${name} is not installed on both servers (postgresql-contrib); its column is left out`);
  }
});

afterAll(async () => {
  await env?.stop();
});

/** Columns: name, type, and one edge value per row (SQL literals; NULL allowed). */
function columns(): Array<[string, string, string[]]> {
  const cols: Array<[string, string, string[]]> = [
    ['i2', 'smallint', ['-32768', '32767', '0']],
    ['i4', 'integer', ['-2147483648', '2147483647', 'NULL']],
    ['i8', 'bigint', ['-9223372036854775808', '9223372036854775807', '0']],
    ['num', 'numeric', [`'123456789012345678901234567890.123456789012345678901234567890'`, `'NaN'`, `'-0.000000000000000000001'`]],
    ['num_s', 'numeric(12,4)', ['-99999999.9999', '0.0001', 'NULL']],
    ['f4', 'real', [`'NaN'`, `'Infinity'`, `'-1.17549435e-38'`]],
    ['f8', 'double precision', [`'-Infinity'`, `'4.9e-324'`, `'1.7976931348623157e308'`]],
    ['f4b', 'real', [`'-Infinity'`, `'-0'`, `'3.4028235e38'`]],
    ['f8b', 'double precision', [`'NaN'`, `'Infinity'`, `'-0'`]],
    ['mon', 'money', [`'-92233720368547758.08'`, `'92233720368547758.07'`, `'0.01'`]],
    ['txt', 'text', [`E'tab\\there\\nnew line\\r\\\\ back\\\\slash \\'single\\' "double" \\u00fc \\u20ac \\U0001F600'`, `''`, `'NULL'`]],
    ['vc', 'varchar(12)', [`'  spaces  '`, `'ünï'`, 'NULL']],
    ['ch', 'char(4)', [`'ab'`, `'ab  '`, 'NULL']],
    // The one-byte internal type: a high-bit byte prints as an octal escape that only charin reads back.
    ['qc', '"char"', [`'\\351'`, `'a'`, 'NULL']],
    ['by', 'bytea', [`'\\x00ff5c0a27225c'`, `''`, `'\\x'`]],
    ['bo', 'boolean', ['true', 'false', 'NULL']],
    ['da', 'date', [`'infinity'`, `'-infinity'`, `'0044-03-15 BC'`]],
    ['ti', 'time', [`'23:59:59.999999'`, `'00:00:00'`, `'24:00:00'`]],
    ['ttz', 'timetz', [`'23:59:59.999999+14:59'`, `'00:00:00.000001-12'`, 'NULL']],
    ['ts', 'timestamp', [`'infinity'`, `'2024-02-29 12:34:56.789012'`, `'4713-01-01 00:00:00 BC'`]],
    ['tstz', 'timestamptz', [`'-infinity'`, `'2000-01-01 00:00:00.000001+05:30'`, `'294276-12-31 23:59:59.999999+00'`]],
    ['iv', 'interval', [`'1 year 2 mons 3 days 04:05:06.789012'`, `'-178000000 years'`, `'-1 day +00:00:00.000001'`]],
    ['uu', 'uuid', [`'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'`, `'00000000-0000-0000-0000-000000000000'`, 'NULL']],
    ['js', 'json', [`'{ "a" :  [1, 2 ,3] ,\n "b": "x\\ty", "a": 2 }'`, `'null'`, `'"\\u00fc"'`]],
    ['jb', 'jsonb', [`'{"b": [1, {"c": null}], "a": "\\u00fc"}'`, `'[]'`, `'12.50'`]],
    ['a2', 'integer[]', [`'{{1,NULL},{3,4}}'`, `'[0:1]={7,8}'`, `'{}'`]],
    ['a3', 'text[]', [`'{{{"a b",NULL},{"c\\"d",""}}}'`, `ARRAY[NULL]::text[]`, `'{"NULL","\\\\"}'`]],
    ['mood', '"Typ Schema".mood', [`'sad'`, `'it''s "fine"'`, 'NULL']],
    ['moods', '"Typ Schema".mood[]', [`'{happy,NULL,sad}'`, `'{}'`, 'NULL']],
    ['dom', '"Typ Schema".posint', ['1', '2147483647', 'NULL']],
    ['comp', '"Typ Schema".outer_t', [`'("(1,sad,""x,y"")","{""(2,happy,)"",NULL}",5)'`, `ROW(NULL, NULL, NULL)`, 'NULL']],
    ['r4', 'int4range', [`'[1,10)'`, `'empty'`, `'(,5]'`]],
    ['rts', 'tstzrange', [`'["2024-01-01 00:00:00.000001+00",infinity)'`, `'empty'`, 'NULL']],
    ['rf', '"Typ Schema".floatrange', [`'[1.5,2.25)'`, `'(,)'`, 'NULL']],
    ['mr', 'int4multirange', [`'{[1,3),[5,7)}'`, `'{}'`, 'NULL']],
    ['mrf', '"Typ Schema".floatmultirange', [`'{[1,2),[3,4]}'`, `'{}'`, 'NULL']],
    ['ip', 'inet', [`'192.168.0.1/24'`, `'::ffff:1.2.3.4/128'`, 'NULL']],
    ['cid', 'cidr', [`'10.0.0.0/8'`, `'2001:db8::/32'`, 'NULL']],
    ['mac', 'macaddr', [`'08:00:2b:01:02:03'`, 'NULL', 'NULL']],
    ['mac8', 'macaddr8', [`'08:00:2b:01:02:03:04:05'`, 'NULL', 'NULL']],
    ['bi', 'bit(5)', [`B'10101'`, `B'00000'`, 'NULL']],
    ['vb', 'varbit(10)', [`B'1'`, `B''`, 'NULL']],
    ['tsv', 'tsvector', [`'a:1A fat:2B,4C cat:5D ''it''''s'':6'`, `''`, 'NULL']],
    ['tsq', 'tsquery', [`'fat & (rat | !cat) <-> mouse:*'`, 'NULL', 'NULL']],
    ['pt', 'point', [`'(1.5,-2)'`, `'(NaN,Infinity)'`, 'NULL']],
    ['li', 'line', [`'{1,2,3}'`, 'NULL', 'NULL']],
    ['ls', 'lseg', [`'[(0,0),(1,1)]'`, 'NULL', 'NULL']],
    ['bx', 'box', [`'(1,1),(0,0)'`, 'NULL', 'NULL']],
    ['pa', 'path', [`'[(0,0),(1,1),(2,0)]'`, `'((0,0),(1,1))'`, 'NULL']],
    ['po', 'polygon', [`'((0,0),(1,1),(1,0))'`, 'NULL', 'NULL']],
    ['ci', 'circle', [`'<(0,0),1.5>'`, 'NULL', 'NULL']],
    ['x', 'xml', [`'<a b="1">x &amp; y<!-- c --></a>'`, `'text node'`, 'NULL']],
    ['o', 'oid', ['4294967295', '0', 'NULL']],
  ];
  if (extensions.hstore) cols.push(['hs', 'public.hstore', [`'"a"=>"1", "b c"=>NULL, "\\"q\\""=>"\\\\"'`, `''`, 'NULL']]);
  if (extensions.citext) cols.push(['cit', 'public.citext', [`'MiXeD Case'`, `'ß'`, 'NULL']]);
  return cols;
}

const TYPES_DDL = `
CREATE SCHEMA "Typ Schema";
CREATE TYPE "Typ Schema".mood AS ENUM ('sad', 'it''s "fine"', 'happy');
CREATE DOMAIN "Typ Schema".posint AS integer CHECK (VALUE > 0);
CREATE TYPE "Typ Schema".inner_t AS (a int, m "Typ Schema".mood, t text COLLATE "C");
CREATE TYPE "Typ Schema".outer_t AS (i "Typ Schema".inner_t, arr "Typ Schema".inner_t[], p "Typ Schema".posint);
CREATE TYPE "Typ Schema".floatrange AS RANGE (SUBTYPE = float8, SUBTYPE_DIFF = float8mi);
`;

describe('every type through copy and apply', () => {
  it('round-trips edge values, changed during SYNCING_WAL, with identity/generated/dropped columns, through schemaMapping', async () => {
    const db = 'types';
    await env.source.createDatabase(db);
    await env.target.createDatabase(db);
    const cols = columns();
    const c = await env.source.client(db);
    try {
      if (extensions.hstore) await c.query('CREATE EXTENSION hstore');
      if (extensions.citext) await c.query('CREATE EXTENSION citext');
      await c.query(TYPES_DDL);
      await c.query(`
        CREATE TABLE public.all_types (
          id int GENERATED ALWAYS AS IDENTITY (START WITH 10) PRIMARY KEY,
          gone_early text,
          by_default bigint GENERATED BY DEFAULT AS IDENTITY,
          ${cols.map(([n, t]) => `${n} ${t}`).join(',\n          ')},
          gen text GENERATED ALWAYS AS (i4::text || '/' || coalesce(txt, '-')) STORED,
          label text COLLATE "C" DEFAULT 'd''efault',
          gone_late int
        );
        -- Dropped columns in the table's history: attnums with holes, on the source only.
        ALTER TABLE public.all_types DROP COLUMN gone_early;
        -- No primary key: a unique index is the replica identity.
        CREATE TABLE public.by_index (k text NOT NULL, js json, pt point, x xml, v int);
        CREATE UNIQUE INDEX by_index_k ON public.by_index (k);
        ALTER TABLE public.by_index REPLICA IDENTITY USING INDEX by_index_k;
        -- No key at all, duplicates, and types without equality: REPLICA IDENTITY FULL.
        CREATE TABLE public.full_dups (js json, pt point, x xml, n int);
        ALTER TABLE public.full_dups REPLICA IDENTITY FULL;
        -- Skipped with a notice.
        CREATE UNLOGGED TABLE public.scratch (id int);
        CREATE FOREIGN DATA WRAPPER elsewhere_fdw; CREATE SERVER elsewhere FOREIGN DATA WRAPPER elsewhere_fdw;
        CREATE FOREIGN TABLE public.remote_rows (id int) SERVER elsewhere;
      `);
      const names = cols.map(([n]) => n).join(', ');
      for (let row = 0; row < 3; row++) {
        await c.query(`INSERT INTO public.all_types (${names}) VALUES (${cols.map(([, , v]) => v[row]).join(', ')})`);
      }
      await c.query(`ALTER TABLE public.all_types DROP COLUMN gone_late`);
      await c.query(`
        INSERT INTO public.by_index VALUES ('a', '{"x" : 1}', '(1,1)', '<a/>', 1), ('b', NULL, NULL, NULL, 2);
        INSERT INTO public.full_dups VALUES ('{ }', '(0,0)', '<d/>', 1), ('{ }', '(0,0)', '<d/>', 1), ('[1]', '(1,1)', NULL, 2);
        SELECT lo_from_bytea(0, 'a large object');
      `);
    } finally {
      await c.end();
    }

    const m = await env.startMigration({
      source: env.source.uri(db),
      target: env.target.uri(db),
      schemas: ['public'],
      schemaMapping: { public: 'app', 'Typ Schema': 'typ_new' },
      tableSuffix: '_m',
      cutover: { mode: 'manual' },
    });
    await m.waitForPhase('SYNCING_WAL', 90_000);

    // Change every column during SYNCING_WAL: these rows reach the target through the apply only.
    const w = await env.source.client(db);
    try {
      const names = cols.map(([n]) => n).join(', ');
      await w.query(`INSERT INTO public.all_types (${names}) SELECT ${names} FROM public.all_types WHERE id = 10`);
      await w.query(`INSERT INTO public.all_types (${names}) VALUES (${cols.map(([, , v]) => v[1]).join(', ')})`);
      // Row 11 takes row 10's values, row 12 row 11's: every edge value is written by an UPDATE too.
      await w.query(`BEGIN`);
      await w.query(`UPDATE public.all_types t SET (${names}) = (SELECT ${names} FROM public.all_types s WHERE s.id = t.id - 1), label = 'upd' WHERE t.id IN (11, 12)`);
      await w.query(`UPDATE public.all_types SET by_default = by_default + 100, mood = 'happy', comp.p = 7 WHERE id = 10`);
      await w.query(`COMMIT`);
      await w.query(`DELETE FROM public.all_types WHERE id = 13`);
      await w.query(`UPDATE public.by_index SET k = 'c', js = '{"y" :2}' WHERE k = 'a'`);
      await w.query(`DELETE FROM public.by_index WHERE k = 'b'`);
      await w.query(`UPDATE public.full_dups SET n = 3 WHERE ctid = (SELECT ctid FROM public.full_dups WHERE n = 1 LIMIT 1)`);
      await w.query(`DELETE FROM public.full_dups WHERE n = 2`);
      await w.query(`INSERT INTO public.full_dups VALUES ('{ }', '(0,0)', '<d/>', 1)`);
    } finally {
      await w.end();
    }
    await m.signal('cutover');
    const report = await m.result();
    expect(report.phase).toBe('COMPLETED');
    expect(report.tables.map((t) => t.target).sort()).toEqual(['app.all_types_m', 'app.by_index_m', 'app.full_dups_m']);
    for (const t of report.tables) expect(t.countsMatch, t.source).toBe(true);
    expect(report.notices).toEqual(
      expect.arrayContaining([
        expect.stringContaining('skipped public.scratch: unlogged tables are not written to the WAL'),
        expect.stringContaining('skipped public.remote_rows: foreign table: its rows live on another server'),
        expect.stringContaining('the source database holds 1 large object(s)'),
        expect.stringContaining('column o of public.all_types has type oid'),
      ]),
    );

    for (const [s, t] of [
      ['all_types', 'all_types_m'],
      ['by_index', 'by_index_m'],
      ['full_dups', 'full_dups_m'],
    ] as const) {
      const a = await fingerprint(env.source, db, 'public', s);
      const b = await fingerprint(env.target, db, 'app', t);
      expect({ table: s, ...b }).toEqual({ table: s, ...a });
    }
    const [src] = await env.source.query<{ n: number }>(`SELECT count(*)::int AS n FROM public.all_types`, [], db);
    expect(src!.n).toBe(4);

    // The user types exist under the mapped schema; the column types name them there.
    const types = await env.target.query<{ attname: string; type: string }>(
      `SELECT attname, format_type(atttypid, atttypmod) AS type FROM pg_attribute
        WHERE attrelid = 'app.all_types_m'::regclass AND attname IN ('mood', 'moods', 'dom', 'comp', 'rf', 'mrf') ORDER BY attnum`,
      [],
      db,
    );
    expect(types).toEqual([
      { attname: 'mood', type: 'typ_new.mood' },
      { attname: 'moods', type: 'typ_new.mood[]' },
      { attname: 'dom', type: 'typ_new.posint' },
      { attname: 'comp', type: 'typ_new.outer_t' },
      { attname: 'rf', type: 'typ_new.floatrange' },
      { attname: 'mrf', type: 'typ_new.floatmultirange' },
    ]);
    // Identity and generated columns kept their nature and the source's values; the sequence moved on.
    const [ids] = await env.target.query<{ a: string; d: string; gen: string; next: string }>(
      `SELECT (SELECT attidentity FROM pg_attribute WHERE attrelid = 'app.all_types_m'::regclass AND attname = 'id') AS a,
              (SELECT attidentity FROM pg_attribute WHERE attrelid = 'app.all_types_m'::regclass AND attname = 'by_default') AS d,
              (SELECT gen FROM app.all_types_m WHERE id = 11) AS gen,
              (SELECT last_value::text FROM pg_sequences WHERE schemaname = 'app' AND sequencename = 'all_types_id_seq_m') AS next`,
      [],
      db,
    );
    expect(ids).toEqual({ a: 'a', d: 'd', gen: expect.stringMatching(/^-2147483648\//), next: '14' });
    // The domain's check is there.
    await expect(env.target.query(`INSERT INTO app.all_types_m (dom) VALUES (0)`, [], db)).rejects.toThrow(/posint_check/);
  });

  it('migrates names with quotes, spaces, mixed case and non-ASCII online, through schemaMapping and tableSuffix', async () => {
    const db = 'names';
    await env.source.createDatabase(db);
    await env.target.createDatabase(db);
    const sch = '"Ünï ""q"" Sch"';
    const tbl = `${sch}."Tbl ""x"" é"`;
    const seq = `${sch}."Sëq ""1"""`;
    await env.source.query(
      `CREATE SCHEMA ${sch};
       CREATE SEQUENCE ${seq};
       CREATE TABLE ${tbl} ("Col ""q"" ü" int PRIMARY KEY DEFAULT nextval('${seq.replace(/'/g, "''")}'), "välue" text, "MixedCase" int);
       CREATE INDEX "ïdx ""v""" ON ${tbl} ("välue");
       CREATE TABLE public."no key ñ" ("a b" int, "C" text);
       ALTER TABLE public."no key ñ" REPLICA IDENTITY FULL;
       INSERT INTO ${tbl} ("välue", "MixedCase") SELECT 'v' || g, g FROM generate_series(1, 50) g;
       INSERT INTO public."no key ñ" SELECT g, 'ç' || g FROM generate_series(1, 20) g`,
      [],
      db,
    );
    const m = await env.startMigration({
      source: env.source.uri(db),
      target: env.target.uri(db),
      schemas: ['Ünï "q" Sch', 'public'],
      schemaMapping: { 'Ünï "q" Sch': 'Zïel "w"' },
      tableSuffix: '_v2',
      cutover: { mode: 'manual' },
    });
    await m.waitForPhase('SYNCING_WAL', 90_000);
    await env.source.query(
      `INSERT INTO ${tbl} ("välue", "MixedCase") VALUES ('new "q" ü', 99);
       UPDATE ${tbl} SET "välue" = 'upd é', "MixedCase" = -1 WHERE "Col ""q"" ü" % 7 = 0;
       DELETE FROM ${tbl} WHERE "Col ""q"" ü" % 11 = 0;
       UPDATE public."no key ñ" SET "C" = 'ü' WHERE "a b" % 3 = 0;
       DELETE FROM public."no key ñ" WHERE "a b" = 5`,
      [],
      db,
    );
    await m.signal('cutover');
    const report = await m.result();
    expect(report.phase).toBe('COMPLETED');
    expect(report.tables.map((t) => t.target).sort()).toEqual(['Zïel "w".Tbl "x" é_v2', 'public.no key ñ_v2']);
    for (const [ss, st, ts, tt] of [
      ['Ünï "q" Sch', 'Tbl "x" é', 'Zïel "w"', 'Tbl "x" é_v2'],
      ['public', 'no key ñ', 'public', 'no key ñ_v2'],
    ] as const) {
      const a = await fingerprint(env.source, db, ss, st);
      const b = await fingerprint(env.target, db, ts, tt);
      expect(a.rows).toBeGreaterThan(10);
      expect({ table: st, ...b }).toEqual({ table: st, ...a });
    }
    // The index and the sequence came through the mapping too, the sequence at the source's value.
    const [idx] = await env.target.query<{ n: number }>(`SELECT count(*)::int AS n FROM pg_indexes WHERE schemaname = 'Zïel "w"' AND indexname LIKE 'ïdx%'`, [], db);
    expect(idx!.n).toBe(1);
    const [tv] = await env.target.query<{ v: string }>(`SELECT last_value::text AS v FROM "Zïel ""w"""."Sëq ""1""_v2"`, [], db);
    const [sv] = await env.source.query<{ v: string }>(`SELECT last_value::text AS v FROM ${seq}`, [], db);
    expect(tv!.v).toBe(sv!.v);
  });

  it('stops with a final error naming the table when DDL changes a migrated table during SYNCING_WAL', async () => {
    const db = 'ddl';
    await env.source.createDatabase(db);
    await env.target.createDatabase(db);
    await env.source.query(
      `CREATE TYPE public.mood AS ENUM ('a', 'b'); CREATE TABLE public.t (id int PRIMARY KEY, v integer, m public.mood); INSERT INTO public.t VALUES (1, 1, 'a')`,
      [],
      db,
    );
    const m = await env.startMigration({ source: env.source.uri(db), target: env.target.uri(db), tableSuffix: '_d', cutover: { mode: 'manual' } });
    await m.waitForPhase('SYNCING_WAL', 90_000);
    await env.source.query(`UPDATE public.t SET v = 2`, [], db);
    await env.source.query(`ALTER TABLE public.t ALTER COLUMN v TYPE bigint; UPDATE public.t SET v = 3`, [], db);
    const err = (await m.result().catch((e: unknown) => e)) as { cause?: { message?: string; nonRetryable?: boolean } };
    expect(err.cause?.message).toContain(
      'DDL on the source during the migration: source table public.t no longer matches target table public.t_d (different type: v)',
    );
    const status = await m.status();
    expect(status.phase).toBe('FAILED');
    // Failed once, not retried: the apply error is final.
    const history = await env.temporal.client.workflow.getHandle(m.workflowId).fetchHistory();
    const events = history.events ?? [];
    const applyScheduled = new Set(
      events.filter((e) => e.activityTaskScheduledEventAttributes?.activityType?.name === 'applyChanges').map((e) => String(e.eventId)),
    );
    const attempts = events
      .filter((e) => e.activityTaskStartedEventAttributes && applyScheduled.has(String(e.activityTaskStartedEventAttributes.scheduledEventId)))
      .map((e) => e.activityTaskStartedEventAttributes!.attempt);
    expect(attempts).toEqual([1]);
    // Nothing is left on the source.
    const [left] = await env.source.query<{ slots: number; pubs: number }>(
      `SELECT (SELECT count(*)::int FROM pg_replication_slots) AS slots, (SELECT count(*)::int FROM pg_publication) AS pubs`,
      [],
      db,
    );
    expect(left).toEqual({ slots: 0, pubs: 0 });
    // What was applied before the DDL is on the target.
    expect(await env.target.query(`SELECT id, v, m::text FROM public.t_d`, [], db)).toEqual([{ id: 1, v: 2, m: 'a' }]);
  });

  it('fails validation naming each change when DDL during SYNCING_WAL reaches the apply as nothing (no write after it)', async () => {
    const db = 'drift';
    await env.source.createDatabase(db);
    await env.target.createDatabase(db);
    await env.source.query(
      `CREATE TABLE public.t (id int PRIMARY KEY, v int); CREATE TABLE public.u (id int PRIMARY KEY, w text);
       CREATE TABLE public.w (id int PRIMARY KEY, k int);
       INSERT INTO public.t VALUES (1, 1), (2, 2); INSERT INTO public.u VALUES (1, 'a'); INSERT INTO public.w VALUES (1, 7), (2, 7)`,
      [],
      db,
    );
    // An invalid index (a failed CREATE INDEX CONCURRENTLY) is not migrated, and is no drift either.
    await expect(env.source.query(`CREATE UNIQUE INDEX CONCURRENTLY w_k ON public.w (k)`, [], db)).rejects.toThrow(/could not create unique index/);
    const m = await env.startMigration({ source: env.source.uri(db), target: env.target.uri(db), tableSuffix: '_x', cutover: { mode: 'manual' } });
    await m.waitForPhase('SYNCING_WAL', 90_000);
    await env.source.query(`UPDATE public.t SET v = 10 WHERE id = 1`, [], db);
    // No write to these tables after the DDL: the apply never sees it.
    await env.source.query(
      `ALTER TABLE public.t ADD COLUMN extra int DEFAULT 5; CREATE INDEX u_w ON public.u (w);
       CREATE TABLE public.newtab (id int PRIMARY KEY); INSERT INTO public.newtab VALUES (1), (2)`,
      [],
      db,
    );
    await m.signal('cutover');
    const err = (await m.result().catch((e: unknown) => e)) as { cause?: { message?: string } };
    const message = err.cause?.message ?? '';
    expect(message).toContain('the source schema changed during the migration');
    expect(message).toContain('public.t: column(s) added: extra');
    expect(message).toContain('public.u: 2 index(es) on the source, 1 on the target public.u_x');
    expect(message).toContain('public.newtab: created on the source during the migration');
    expect(message).not.toContain('public.w');
    expect((await m.status()).phase).toBe('FAILED');
    // The rows themselves were applied (the drift is what fails), and the source is writable again with
    // nothing of the migration left on it.
    expect(await env.target.query(`SELECT id, v FROM public.t_x ORDER BY id`, [], db)).toEqual([
      { id: 1, v: 10 },
      { id: 2, v: 2 },
    ]);
    await env.source.query(`INSERT INTO public.t VALUES (3, 3)`, [], db);
    const [left] = await env.source.query<{ slots: number; pubs: number }>(
      `SELECT (SELECT count(*)::int FROM pg_replication_slots) AS slots, (SELECT count(*)::int FROM pg_publication) AS pubs`,
      [],
      db,
    );
    expect(left).toEqual({ slots: 0, pubs: 0 });
  });
});

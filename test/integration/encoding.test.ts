/**
 * A migration between databases of different encodings (LATIN1 source, UTF8 target): pg asks every
 * session for client_encoding UTF8 at startup, so the servers convert text both ways — in the copy
 * (text and binary COPY), in the apply (pgoutput renders values in the client encoding) and in
 * validation, whose checksum hashes row texts as UTF-8 when the encodings differ. Rows copied and
 * rows applied are compared as UTF-8 bytes, and validation (sample and checksum) must say match.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startEnv, type TestEnv } from '../harness/env';

let env: TestEnv;

beforeAll(async () => {
  env = await startEnv();
});

afterAll(async () => {
  await env?.stop();
});

const NAMES = ['Zoë Müller-Sørensen', 'façade ½ ¿qué? «ß»', 'plain ascii', 'Ægir Þór Ðóra', 'tab\tnew\nline \\ ÿ'];

/** Each value as UTF-8 bytes (hex), whatever the database's encoding and the session's. */
const utf8Rows = `SELECT id, encode(convert_to(name, 'UTF8'), 'hex') AS name, encode(convert_to(c, 'UTF8'), 'hex') AS c FROM public.people ORDER BY id`;
const decode = (rows: { id: number; name: string; c: string }[]) => rows.map((r) => ({ id: r.id, name: Buffer.from(r.name, 'hex').toString('utf8'), c: Buffer.from(r.c, 'hex').toString('utf8') }));

describe('different encodings', () => {
  it('migrates a LATIN1 database to a UTF8 one, copy and apply, characters intact and validated', async () => {
    const db = 'latin';
    await env.source.query(`CREATE DATABASE ${db} ENCODING 'LATIN1' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0`);
    await env.target.createDatabase(db);
    const src = await env.source.client(db);
    try {
      // The test's own session speaks UTF-8 so the literals below mean what they say.
      await src.query(`SET client_encoding = 'UTF8'`);
      // Column `c` is "char(12)" and a text column so that one table has a type of each COPY format path.
      await src.query(`CREATE TABLE public.people (id int PRIMARY KEY, name text NOT NULL, c char(12))`);
      await src.query(`CREATE TABLE public.tags (tag varchar(40) PRIMARY KEY)`);
      for (const [i, n] of NAMES.entries()) await src.query(`INSERT INTO public.people VALUES ($1, $2, $3)`, [i + 1, n, n.slice(0, 12)]);
      await src.query(`INSERT INTO public.tags VALUES ('Øre'), ('über')`);

      const m = await env.startMigration({ source: env.source.uri(db), target: env.target.uri(db), cutover: { mode: 'manual' }, validation: { checksum: true } });
      await m.waitForPhase('SYNCING_WAL', 120_000);
      for (const [i, n] of NAMES.entries()) await src.query(`INSERT INTO public.people VALUES ($1, $2, $3)`, [100 + i, `${n} (applied)`, n.slice(-12)]);
      await src.query(`UPDATE public.people SET name = name || ' - ändert' WHERE id = 1`);
      await src.query(`UPDATE public.tags SET tag = 'Øresund' WHERE tag = 'Øre'`);
      await m.signal('cutover');
      const report = await m.result();
      expect(report.phase).toBe('COMPLETED');
      expect(report.tables.map((t) => [t.source, t.countsMatch, t.sample, t.checksum, t.validationError])).toEqual([
        ['public.people', true, 'match', 'match', undefined],
        ['public.tags', true, 'match', 'match', undefined],
      ]);

      const [a, b] = await Promise.all([env.source.query<{ id: number; name: string; c: string }>(utf8Rows, [], db), env.target.query<{ id: number; name: string; c: string }>(utf8Rows, [], db)]);
      expect(a).toHaveLength(NAMES.length * 2);
      expect(b).toEqual(a);
      const rows = decode(b);
      expect(rows[0]!.name).toBe(`${NAMES[0]} - ändert`);
      expect(rows.find((r) => r.id === 101)!.name).toBe(`${NAMES[1]} (applied)`);
      const tags = await env.target.query<{ t: string }>(`SELECT encode(convert_to(tag, 'UTF8'), 'hex') AS t FROM public.tags ORDER BY 1`, [], db);
      expect(tags.map((t) => Buffer.from(t.t, 'hex').toString('utf8')).sort()).toEqual(['Øresund', 'über']);
    } finally {
      await src.end();
    }
  });
});

/**
 * validation.repair's pure parts: the spec's repair settings and the SQL a repair runs (exact text:
 * quoted names, typed keys, literals escaped for COPY, which takes no parameters).
 */
import { describe, expect, it } from 'vitest';
import { normalizeSpec, SpecError } from '../../activities/spec';
import { formatRepair, type TableValidationResult } from '../../activities/validate';
import { copyInSql, copyOutAllSql, copyOutByKeysSql, deleteByKeysSql, unmarkedRelationsSql, type TableShape } from '../../activities/validate/sql';

const composite: TableShape = {
  table: { schema: 'Sales Dept', name: 'Order "Items"' },
  columns: ['Order ID', 'line', 'note'],
  keyColumns: ['Order ID', 'line'],
  keyTypes: ['bigint', 'integer'],
};
const single: TableShape = { table: { schema: 'public', name: 't' }, columns: ['id', 'v'], keyColumns: ['id'], keyTypes: ['text'] };

describe('validation.repair in the spec', () => {
  const base = { source: 'postgres://u@h/db', target: 'postgres://u@h2/db' };
  it('is off unless asked for, and then carries its row limit (default 10,000)', () => {
    expect(normalizeSpec(base).validation).toEqual({ sampleSize: 1000, checksum: true, live: false, chunkRows: undefined });
    expect(normalizeSpec({ ...base, validation: { repair: true } }).validation).toMatchObject({ repair: true, repairMaxRows: 10_000 });
    expect(normalizeSpec({ ...base, validation: { repair: true, repairMaxRows: 50 } }).validation).toMatchObject({ repair: true, repairMaxRows: 50 });
  });
  it('refuses repair without the checksum, and a limit below 1', () => {
    expect(() => normalizeSpec({ ...base, validation: { repair: true, checksum: false } })).toThrow(SpecError);
    expect(() => normalizeSpec({ ...base, validation: { repair: true, checksum: false } })).toThrow(/validation\.repair: repair needs the checksum/);
    expect(() => normalizeSpec({ ...base, validation: { repair: true, repairMaxRows: 0 } })).toThrow(/repairMaxRows/);
  });
});

describe('repair SQL', () => {
  it('deletes by typed keys passed as text arrays', () => {
    expect(deleteByKeysSql(composite, [['1', '2'], ['3', '4']])).toEqual({
      text: 'DELETE FROM "Sales Dept"."Order ""Items""" t USING unnest($1::text[], $2::text[]) AS u(k0, k1) WHERE (t."Order ID", t."line") = (u.k0::bigint, u.k1::integer)',
      values: [['1', '3'], ['2', '4']],
    });
  });
  it('copies rows out by key with escaped literals, and in by column list', () => {
    expect(copyOutByKeysSql(single, [["it's"], ['a\\b']])).toBe(
      `COPY (SELECT t."id", t."v" FROM "public"."t" t WHERE t."id" IN (SELECT u.k0::text FROM (VALUES ('it''s'), ( E'a\\\\b')) AS u(k0))) TO STDOUT`,
    );
    expect(copyOutAllSql(composite)).toBe('COPY (SELECT t."Order ID", t."line", t."note" FROM "Sales Dept"."Order ""Items""" t) TO STDOUT');
    expect(copyInSql(composite)).toBe('COPY "Sales Dept"."Order ""Items""" ("Order ID", "line", "note") FROM STDIN');
  });
  it('looks for relations without the mark, partitions included', () => {
    const q = unmarkedRelationsSql([{ schema: 'public', name: 't' }], 'pg-dts migration m1');
    expect(q.values).toEqual([['"public"."t"'], 'pg-dts migration m1']);
    expect(q.text).toContain('pg_partition_tree(u.t::regclass)');
    expect(unmarkedRelationsSql([{ schema: 'public', name: 't' }], undefined).text).toContain(`LIKE 'pg-dts migration %'`);
  });
});

describe('repair report lines', () => {
  const result = (over: Partial<TableValidationResult>): TableValidationResult => ({
    source: 'public.t',
    target: 'app.t',
    sourceRows: 10,
    targetRows: 10,
    countsMatch: true,
    sample: 'match',
    sampledRows: 10,
    checksum: 'match',
    chunks: 2,
    mismatchedChunks: [],
    mismatches: [],
    mismatchesTruncated: false,
    ok: true,
    durationMs: 1,
    ...over,
  });
  it('one line per repaired table, keys below when asked, the rest counted', () => {
    const keyed = result({
      repair: {
        rows: 3, missing: 1, extra: 1, different: 1, deleted: 2, inserted: 2, keysTruncated: false,
        keys: [{ key: { id: '1' }, kind: 'missing-on-target' }, { key: { id: '2' }, kind: 'extra-on-target' }, { key: { id: '3' }, kind: 'different' }],
        chunks: [{ chunk: '1/2 [-∞ .. 5)', source: '5:7', target: '5:7', match: true }],
      },
    });
    const keyless = result({
      source: 'public.bag',
      target: 'app.bag',
      repair: { rows: 10, missing: 1, extra: 0, different: 0, deleted: 9, inserted: 10, wholeChunk: true, keysTruncated: false, keys: [{ key: { 'md5(row)': 'ab' }, kind: 'missing-on-target' }], chunks: [{ chunk: 'whole table', source: '10:1', target: '10:2', match: false }] },
    });
    expect(formatRepair([keyed, result({}), keyless], 2)).toEqual([
      'public.t -> app.t: 3 rows repaired (1 missing, 1 extra, 1 different); 1 chunk equal again',
      '  id=1: missing-on-target',
      '  id=2: extra-on-target',
      '  … and 1 more',
      'public.bag -> app.bag: its whole chunk replaced (9 rows deleted, 10 copied); chunk(s) still differ: whole table',
      '  "md5(row)"=ab: missing-on-target',
    ]);
  });
});

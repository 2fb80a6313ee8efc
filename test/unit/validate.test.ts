/**
 * The validation's pure parts: SQL text, chunk boundaries and labels, how differences are classified,
 * the live verdict, and the report formatting.
 */
import { describe, expect, it } from 'vitest';
import {
  bucketChecksumsSql,
  bucketRowsSql,
  chunkChecksumSql,
  chunkFingerprintSql,
  describeTableSql,
  keyRangePredicate,
  columnDigest,
  rowDigestsByKeySql,
  rowHashesSql,
  sampleKeysSql,
  splitPointsSql,
  typedHashOf,
  type TableShape,
} from '../../activities/validate/sql';
import {
  addRowHash,
  chunkLabel,
  classifyCount,
  classifyDifference,
  contentOf,
  differingColumns,
  differingKeys,
  keyId,
  keyRecord,
  liveVerdict,
  pickBoundaries,
  rangeLabel,
  rangesBetween,
  formatKey,
  formatMismatch,
  formatValidationFailure,
  reconcileAcrossChunks,
  withVersion,
} from '../../activities/validate/compare';
import type { TableValidationResult } from '../../activities/validate/contract';
import { formatVerifyResults, splitList } from '../../client/verify';

const composite: TableShape = {
  table: { schema: 'Sales Dept', name: 'Order "Items"' },
  columns: ['Order ID', 'line', 'note'],
  keyColumns: ['Order ID', 'line'],
  keyTypes: ['bigint', 'integer'],
};
const single: TableShape = { table: { schema: 'public', name: 't' }, columns: ['id', 'v'], keyColumns: ['id'], keyTypes: ['uuid'] };
const keyless: TableShape = { table: { schema: 'public', name: 'bag' }, columns: ['a', 'b'], keyColumns: [], keyTypes: [] };

describe('validation SQL', () => {
  it('checksums a key range with typed parameters and quoted names', () => {
    expect(chunkChecksumSql(composite, { lo: ['1', '2'], hi: ['5', '0'] }, 'hashtext')).toEqual({
      text:
        'SELECT count(*)::text AS n, coalesce(sum(hashtextextended(ROW(t."Order ID", t."line", t."note")::text COLLATE "C", 0)), 0)::text AS h ' +
        'FROM "Sales Dept"."Order ""Items""" t WHERE (t."Order ID", t."line") >= ($1::bigint, $2::integer) AND (t."Order ID", t."line") < ($3::bigint, $4::integer)',
      values: ['1', '2', '5', '0'],
    });
  });

  it('uses the first 64 bits of md5 when hashtext cannot be compared, and no predicate for a whole table', () => {
    expect(chunkChecksumSql(single, {}, 'md5')).toEqual({
      text: `SELECT count(*)::text AS n, coalesce(sum(('x' || left(md5(ROW(t."id", t."v")::text), 16))::bit(64)::bigint), 0)::text AS h FROM "public"."t" t WHERE TRUE`,
      values: [],
    });
    expect(chunkChecksumSql(keyless, {}, 'md5').text).toContain('FROM "public"."bag" t WHERE TRUE');
  });

  it("hashes a row of typed columns by each column's own hash, seeded by position, NULL as its seed; else by its text", () => {
    const typed: TableShape = { ...single, columns: ['id', 'n', 'c'], typedHash: ['uuid', 'integer', 'character(84)'] };
    expect(chunkChecksumSql(typed, {}, 'hashtext').text).toBe(
      'SELECT count(*)::text AS n, coalesce(sum(hashint4extended(0, coalesce(uuid_hash_extended(t."id", 1), 1) # coalesce(hashint4extended(t."n", 2), 2) # ' +
        'coalesce(hashbpcharextended(t."c" COLLATE "C", 3), 3))), 0)::text AS h FROM "public"."t" t WHERE TRUE',
    );
    // md5 (the servers' hashes differ) and different encodings keep the text of the row.
    expect(chunkChecksumSql(typed, {}, 'md5').text).toContain(`md5(ROW(t."id", t."n", t."c")::text)`);
    expect(chunkChecksumSql({ ...typed, utf8: true }, {}, 'hashtext').text).toContain(`convert_to(ROW(t."id", t."n", t."c")::text, 'UTF8')`);
    for (const t of ['smallint', 'integer', 'bigint', 'oid', 'uuid', 'text', 'character varying', 'character varying(20)', 'character(1)']) expect(typedHashOf(t), t).toBeDefined();
    // Types whose hash ignores what their text shows (numeric scale, timestamps' zone, unbounded
    // bpchar's trailing blanks), domains and arrays: the row's text.
    for (const t of ['numeric', 'numeric(10,2)', 'bpchar', 'timestamp with time zone', 'real', 'jsonb', 'integer[]', 'public.my_int', 'citext']) expect(typedHashOf(t), t).toBeUndefined();
    expect(typedHashOf('text')!('t."v"', 4)).toBe('hashtextextended(t."v"::text COLLATE "C", 4)');
    expect(typedHashOf('bigint')!('t."b"', 2)).toBe('hashint4extended((t."b" >> 32)::int4, hashint8extended(t."b", 2))');
  });

  it('builds range predicates for one key column, appending to the parameters given', () => {
    const values: unknown[] = ['x'];
    expect(keyRangePredicate(single, { hi: ['b'] }, values)).toBe('t."id" < $2::uuid');
    expect(values).toEqual(['x', 'b']);
    expect(keyRangePredicate(single, {}, [])).toBe('TRUE');
    expect(() => keyRangePredicate(single, { lo: ['1', '2'] }, [])).toThrow(/2 values for 1 key columns/);
    expect(() => keyRangePredicate(keyless, {}, [])).toThrow(/no key/);
  });

  it('reads row hashes in key order, with xmin when asked', () => {
    expect(rowHashesSql(single, { lo: ['a'] }, 10, true)).toEqual({
      text: 'SELECT t."id"::text AS k0, md5(ROW(t."id", t."v")::text) AS h, t.xmin::text AS v FROM "public"."t" t WHERE t."id" >= $1::uuid ORDER BY t."id" LIMIT $2',
      values: ['a', 10],
    });
    expect(rowHashesSql(single, {}, 10).text).not.toContain('xmin');
  });

  it('reads rows by key through unnest with ordinality, every column as a digest computed in the database', () => {
    expect(rowDigestsByKeySql(composite, [['1', '2'], ['3', '4']], ['text', 'text', 'utf8'])).toEqual({
      text:
        `SELECT u.ord::int AS ord, md5(t."Order ID"::text) AS c0, md5(t."line"::text) AS c1, md5(convert_to(t."note"::text, 'UTF8')) AS c2 ` +
        'FROM unnest($1::text[], $2::text[]) WITH ORDINALITY AS u(k0, k1, ord) JOIN "Sales Dept"."Order ""Items""" t ON (t."Order ID", t."line") = (u.k0::bigint, u.k1::integer)',
      values: [
        ['1', '3'],
        ['2', '4'],
      ],
    });
    expect(rowDigestsByKeySql(single, [['a']], ['text', 'bytes']).text).toBe(
      'SELECT u.ord::int AS ord, md5(t."id"::text) AS c0, md5(t."v") AS c1 FROM unnest($1::text[]) WITH ORDINALITY AS u(k0, ord) JOIN "public"."t" t ON t."id" = u.k0::uuid',
    );
    expect(() => rowDigestsByKeySql(single, [['a']], ['text'])).toThrow(/1 digest modes for 2 columns/);
  });

  it('digests bytea by its bytes, other values by their text form, in UTF-8 when the encodings differ', () => {
    expect(columnDigest('Big "B"', 'bytes')).toBe('md5(t."Big ""B""")');
    expect(columnDigest('x', 'text')).toBe('md5(t."x"::text)');
    expect(columnDigest('x', 'utf8')).toBe(`md5(convert_to(t."x"::text, 'UTF8'))`);
  });

  it('splits a range at every n-th key', () => {
    expect(splitPointsSql(composite, { hi: ['9', '9'] }, 100)).toEqual({
      text:
        'SELECT k0, k1 FROM (SELECT t."Order ID"::text AS k0, t."line"::text AS k1, row_number() OVER (ORDER BY t."Order ID", t."line") AS rn ' +
        'FROM "Sales Dept"."Order ""Items""" t WHERE (t."Order ID", t."line") < ($1::bigint, $2::integer)) s WHERE rn > 1 AND (rn - 1) % $3 = 0 ORDER BY rn',
      values: ['9', '9', 100],
    });
  });

  it('buckets rows of a table without a key by md5 prefix, computing md5 once per row', () => {
    expect(bucketChecksumsSql(keyless, 3).text).toBe(
      `SELECT substr(r.h, 1, 3) AS b, count(*)::text AS n, sum(('x' || left(r.h, 16))::bit(64)::bigint)::text AS h ` +
        `FROM (SELECT md5(ROW(t."a", t."b")::text) AS h FROM "public"."bag" t OFFSET 0) r GROUP BY 1`,
    );
    expect(bucketRowsSql(keyless, 2, ['ab'], true)).toEqual({
      text:
        `SELECT r.h, count(*)::text AS n, string_agg(r.v, ',' ORDER BY r.v) AS v FROM (SELECT md5(ROW(t."a", t."b")::text) AS h, t.xmin::text AS v ` +
        `FROM "public"."bag" t OFFSET 0) r WHERE substr(r.h, 1, 2) = ANY($1::text[]) GROUP BY r.h`,
      values: [['ab']],
    });
    expect(() => bucketChecksumsSql(keyless, 0)).toThrow(/out of range/);
  });

  it('samples from a share of the pages, or from the whole table', () => {
    expect(sampleKeysSql(single, 100, 0.0123456789)).toEqual({
      text: 'SELECT t."id"::text AS k0 FROM "public"."t" t TABLESAMPLE SYSTEM (0.0123457) ORDER BY random() LIMIT $1',
      values: [100],
    });
    expect(sampleKeysSql(single, 5).text).toBe('SELECT t."id"::text AS k0 FROM "public"."t" t ORDER BY random() LIMIT $1');
  });

  it('describes a table by its quoted name', () => {
    expect(describeTableSql(composite.table).values).toEqual(['"Sales Dept"."Order ""Items"""']);
    expect(describeTableSql(composite.table).text).toContain(`current_setting('server_encoding') AS encoding`);
    // The proof's tuple fingerprint: ctid hashed as a tid where the server has hashtidextended, else as text.
    expect(chunkFingerprintSql({ ...composite, tidHash: true }, {}).text).toContain('sum(hashtidextended(t.ctid, (t.xmin::text::int8 << 32) # t.tableoid::int8))');
    expect(chunkFingerprintSql(composite, {}).text).toContain('sum(hashtextextended(t.tableoid::text || t.ctid::text || t.xmin::text, 0))');
  });
});

describe('chunks', () => {
  const keys = Array.from({ length: 100 }, (_, i) => [String(i)]);

  it('picks distinct quantiles as boundaries, never the first key', () => {
    expect(pickBoundaries(keys, 4)).toEqual([['25'], ['50'], ['75']]);
    expect(pickBoundaries(keys.slice(0, 2), 10)).toEqual([['1']]);
    expect(pickBoundaries([], 4)).toEqual([]);
    expect(pickBoundaries(keys, 1)).toEqual([]);
  });

  it('turns boundaries into ranges covering the key space and labels them', () => {
    const ranges = rangesBetween([['10'], ['20']]);
    expect(ranges).toEqual([{ hi: ['10'] }, { lo: ['10'], hi: ['20'] }, { lo: ['20'] }]);
    expect(ranges.map((r, i) => chunkLabel(i, 3, r))).toEqual(['1/3 [-∞ .. 10)', '2/3 [10 .. 20)', '3/3 [20 .. +∞)']);
    expect(rangesBetween([['15']], { lo: ['10'], hi: ['20'] })).toEqual([
      { lo: ['10'], hi: ['15'] },
      { lo: ['15'], hi: ['20'] },
    ]);
    expect(rangeLabel({ lo: ['7', 'a b'] })).toBe('[(7, a b) .. +∞)');
    expect(chunkLabel(0, 1, {})).toBe('whole table');
  });
});

describe('differences', () => {
  it('classifies by presence and by multiplicity of duplicate keys', () => {
    expect(classifyDifference('a', undefined)).toBe('missing-on-target');
    expect(classifyDifference(undefined, 'a')).toBe('extra-on-target');
    expect(classifyDifference('a', 'b')).toBe('different');
    const dup = new Map<string, string>();
    addRowHash(dup, 'k', 'b');
    addRowHash(dup, 'k', 'a');
    expect(dup.get('k')).toBe('a|b');
    expect(classifyDifference('a', dup.get('k'))).toBe('extra-on-target');
    expect(classifyDifference(dup.get('k'), 'a')).toBe('missing-on-target');
    expect(classifyCount(2, 1)).toBe('missing-on-target');
    expect(classifyCount(1, 3)).toBe('extra-on-target');
  });

  it('compares content, not row versions', () => {
    const v = withVersion('abc', '123');
    expect(contentOf(v)).toBe('abc');
    expect(contentOf(`${withVersion('b', '1')}|${withVersion('a', '2')}`)).toBe('a|b');
    expect(contentOf(undefined)).toBeUndefined();
    expect(withVersion('abc', null)).toBe('abc');
    const src = new Map([
      ['k1', withVersion('h1', '10')],
      ['k2', withVersion('h2', '11')],
      ['k3', 'h3'],
    ]);
    const dst = new Map([
      ['k1', 'h1'],
      ['k2', 'changed'],
      ['k4', 'h4'],
    ]);
    expect(differingKeys(src, dst).sort()).toEqual(['k2', 'k3', 'k4']);
    expect(differingKeys(src, dst, new Set(['k1', 'k2']))).toEqual(['k2']);
  });

  it('names the columns whose text differs, NULL and empty string apart', () => {
    expect(differingColumns(['a', 'b', 'c'], ['1', null, 'x'], ['1', '', 'x'])).toEqual(['b']);
    expect(differingColumns(['a'], ['1'], ['1'])).toEqual([]);
  });

  it('maps key ids back to records', () => {
    const id = keyId(['ORD-1', '2']);
    expect(keyRecord(['Order No', 'line'], id)).toEqual({ 'Order No': 'ORD-1', line: '2' });
  });

  it('pairs a key found missing in one chunk and extra in another (collation differences)', () => {
    const found = [
      { id: 'a', kind: 'missing-on-target' as const, chunk: '1', hash: 'h' },
      { id: 'a', kind: 'extra-on-target' as const, chunk: '2', hash: 'h' },
      { id: 'b', kind: 'missing-on-target' as const, chunk: '1', hash: 'x' },
      { id: 'b', kind: 'extra-on-target' as const, chunk: '2', hash: 'y' },
      { id: 'c', kind: 'missing-on-target' as const, chunk: '1', hash: 'z' },
    ];
    expect(reconcileAcrossChunks(found).map((f) => [f.id, f.kind])).toEqual([
      ['b', 'different'],
      ['c', 'missing-on-target'],
    ]);
  });
});

describe('live verdict', () => {
  const v = (content: string, xmin: string) => withVersion(content, xmin);
  it('accepts a target equal to either source read', () => {
    expect(liveVerdict(v('a', '1'), 'a', v('b', '2'))).toBe('equal');
    expect(liveVerdict(v('a', '1'), 'b', v('b', '2'))).toBe('equal');
    expect(liveVerdict(undefined, undefined, v('b', '2'))).toBe('equal');
  });
  it('confirms a difference only when the same row version was read twice', () => {
    expect(liveVerdict(v('a', '1'), 'x', v('a', '1'))).toBe('different');
    expect(liveVerdict(v('a', '1'), undefined, v('a', '1'))).toBe('different');
    // Same content, new version: updated and updated back while we looked.
    expect(liveVerdict(v('a', '1'), 'b', v('a', '3'))).toBe('unsettled');
    expect(liveVerdict(v('a', '1'), 'x', v('b', '2'))).toBe('unsettled');
  });
  it('only suspects what it cannot see change: a row absent both times, or an aggregate', () => {
    expect(liveVerdict(undefined, 'x', undefined)).toBe('suspect');
    expect(liveVerdict('10:5', '11:7', '10:5')).toBe('suspect');
  });
});

describe('reports', () => {
  const result: TableValidationResult = {
    source: 'public.orders',
    target: 'app.orders',
    sourceRows: 10,
    targetRows: 9,
    countsMatch: false,
    sample: 'match',
    sampledRows: 10,
    checksum: 'mismatch',
    chunks: 2,
    mismatchedChunks: ['1/2 [-∞ .. 5)'],
    mismatches: [
      { key: { id: '3', 'Order No': 'A 1' }, kind: 'different', columns: ['note'], foundBy: 'checksum', chunk: '1/2 [-∞ .. 5)' },
      { key: { id: '4', 'Order No': null }, kind: 'missing-on-target', foundBy: 'checksum' },
    ],
    mismatchesTruncated: true,
    ok: false,
    durationMs: 5,
  };

  it('formats keys and mismatches without row values', () => {
    expect(formatKey({ id: '3', 'Order No': 'A 1' })).toBe('id=3, "Order No"=A 1');
    expect(formatMismatch(result.mismatches[0]!)).toBe('id=3, "Order No"=A 1: different (note) [chunk 1/2 [-∞ .. 5)]');
    expect(formatMismatch(result.mismatches[1]!)).toBe('id=4, "Order No"=NULL: missing-on-target');
  });

  it('summarises failing tables for the migration error', () => {
    expect(formatValidationFailure([result, { ...result, source: 'public.ok', ok: true }], 1)).toBe(
      'public.orders -> app.orders: rows 10 vs 9; checksum differs in 1 chunk(s); id=3, "Order No"=A 1: different (note) [chunk 1/2 [-∞ .. 5)]; and more',
    );
  });

  it('prints verify results as a table, then the differing keys', () => {
    const lines = formatVerifyResults([result, { ...result, source: 'public.users', target: 'app.users', countsMatch: true, targetRows: 10, ok: true, checksum: 'match', mismatches: [], mismatchesTruncated: false }], 1234);
    expect(lines).toEqual([
      'source         target      source rows  target rows  counts  sample    checksum        result',
      'public.orders  app.orders           10            9  DIFFER  10 equal  DIFFER          DIFFERENT',
      'public.users   app.users            10           10  equal   10 equal  2 chunks equal  identical',
      '',
      'public.orders -> app.orders: 10 rows on the source, 9 on the target; 1 of 2 checksum chunks differ; 2+ differing rows listed',
      '  id=3, "Order No"=A 1: different (note) [chunk 1/2 [-∞ .. 5)]',
      '  id=4, "Order No"=NULL: missing-on-target',
      '  … more rows differ (raise --max-mismatches to list them)',
      '',
      '2 tables compared: 1 identical, 1 different (1.2 s)',
    ]);
  });

  it('splits CLI lists on commas outside double quotes', () => {
    expect(splitList('a, "b,c".d ,,e')).toEqual(['a', '"b,c".d', 'e']);
  });
});

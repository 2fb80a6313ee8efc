import { describe, expect, it } from 'vitest';
import { KeyedChanges, copyChunks, copyField, copyInsertSql, deleteSql, insertSql, keyedRelation, textArray, textArrayBinary, updateSql, type KeyedRelation } from '../../activities/apply/batch';
import { UNCHANGED_TOAST, type ApplyRelation } from '../../activities/apply/statements';

const U: typeof UNCHANGED_TOAST = UNCHANGED_TOAST;
const limits = { maxRows: 1000, maxBytes: 1 << 20, bigValue: 1 << 20 };

const rel: ApplyRelation = {
  target: { schema: 'app', name: 'Order Items' },
  columns: ['id', 'name', 'body'],
  keyColumns: ['id'],
  replicaIdentity: 'default',
};
const k = keyedRelation(rel, ['integer', 'text', 'pg_catalog.bpchar'], ['', ' COLLATE "C"', ''])!;

describe('keyedRelation', () => {
  it('takes the replica identity key, or a FULL table target primary key', () => {
    expect(k.key).toEqual([0]);
    const full = keyedRelation({ ...rel, replicaIdentity: 'full', keyColumns: ['id', 'name', 'body'], targetPrimaryKey: ['name'] }, ['a', 'b', 'c'], undefined);
    expect(full?.key).toEqual([1]);
  });
  it('refuses tables without a usable key, or with a GENERATED ALWAYS identity outside the key', () => {
    expect(keyedRelation({ ...rel, replicaIdentity: 'full', keyColumns: ['id', 'name', 'body'] }, ['a', 'b', 'c'], undefined)).toBeUndefined();
    expect(keyedRelation({ ...rel, replicaIdentity: 'nothing' }, ['a', 'b', 'c'], undefined)).toBeUndefined();
    expect(keyedRelation({ ...rel, identityAlways: ['name'] }, ['a', 'b', 'c'], undefined)).toBeUndefined();
    expect(keyedRelation({ ...rel, identityAlways: ['id'] }, ['a', 'b', 'c'], undefined)).toBeDefined();
    expect(keyedRelation(rel, ['a'], undefined)).toBeUndefined();
  });
});

describe('textArray', () => {
  it('quotes every element and escapes backslashes and double quotes', () => {
    expect(textArray(['1', null, '', 'a"b\\c', '{x,y}', ' sp '])).toBe('{"1",NULL,"","a\\"b\\\\c","{x,y}"," sp "}');
  });
});

/** array_recv's reading of a one-dimensional text[] in binary form, as the text literal for comparison. */
function decode(b: unknown): string {
  if (!Buffer.isBuffer(b)) return String(b);
  const ndim = b.readInt32BE(0);
  expect(b.readUInt32BE(8)).toBe(25);
  if (ndim === 0) return '{}';
  expect(ndim).toBe(1);
  const n = b.readInt32BE(12);
  expect(b.readInt32BE(16)).toBe(1);
  const out: (string | null)[] = [];
  let o = 20;
  for (let i = 0; i < n; i++) {
    const l = b.readInt32BE(o);
    o += 4;
    if (l < 0) out.push(null);
    else {
      out.push(b.toString('utf8', o, o + l));
      o += l;
    }
  }
  expect(o).toBe(b.length);
  return textArray(out);
}
const decoded = <T extends { values: unknown[] }>(s: T) => ({ ...s, values: s.values.map(decode) });

describe('textArrayBinary', () => {
  it('writes the binary array format: dimensions, null flag, element type, bounds, then length + bytes', () => {
    expect(decode(textArrayBinary(['1', null, '', 'é€"\\', '{x}']))).toBe(textArray(['1', null, '', 'é€"\\', '{x}']));
    expect(textArrayBinary(['a', null]).readInt32BE(4)).toBe(1);
    expect(textArrayBinary(['a']).readInt32BE(4)).toBe(0);
    expect(decode(textArrayBinary([]))).toBe('{}');
  });
});

describe('set-based statements', () => {
  it('DELETE ... USING unnest, keys cast to the column type and collation', () => {
    expect(decoded(deleteSql(k, [['1'], ['2']]))).toEqual({
      op: 'DELETE',
      prepare: true,
      text: 'DELETE FROM "app"."Order Items" AS t USING ROWS FROM (unnest($1::text[])) AS v(k0) WHERE t."id" = v.k0::integer',
      values: ['{"1","2"}'],
      expect: 2,
    });
  });
  it('UPDATE ... FROM unnest of the key and the columns sent', () => {
    expect(decoded(updateSql(k, [2], [['1', U, 'b']]))).toEqual({
      op: 'UPDATE',
      prepare: true,
      text: 'UPDATE "app"."Order Items" AS t SET "body" = v.s0::pg_catalog.bpchar FROM ROWS FROM (unnest($1::text[]), unnest($2::text[])) AS v(k0, s0) WHERE t."id" = v.k0::integer',
      values: ['{"1"}', '{"b"}'],
      expect: 1,
    });
  });
  it('INSERT ... SELECT from unnest with OVERRIDING SYSTEM VALUE', () => {
    expect(insertSql(k, [['1', 'a', null], ['2', 'b', 'c']]).text).toBe(
      'INSERT INTO "app"."Order Items" ("id", "name", "body") OVERRIDING SYSTEM VALUE SELECT v.c0::integer, v.c1::text, v.c2::pg_catalog.bpchar FROM ROWS FROM (unnest($1::text[]), unnest($2::text[]), unnest($3::text[])) AS v(c0, c1, c2)',
    );
  });
  it('a composite key compares with the column collation', () => {
    const k2 = keyedRelation({ ...rel, keyColumns: ['id', 'name'] }, ['integer', 'text', 'text'], ['', ' COLLATE "C"', ''])!;
    expect(deleteSql(k2, [['1', 'x']]).text).toBe(
      'DELETE FROM "app"."Order Items" AS t USING ROWS FROM (unnest($1::text[]), unnest($2::text[])) AS v(k0, k1) WHERE t."id" = v.k0::integer AND t."name" = v.k1::text COLLATE "C"',
    );
  });
});

/** The net effect as [op, key..., values] for easy comparison. */
function net(kc: KeyedChanges, l = limits) {
  return [...kc.drain(l)].map((s) => ({ op: s.op, values: s.values.map(decode), expect: s.expect, prepare: s.prepare }));
}

describe('KeyedChanges: the net effect per key', () => {
  const fresh = (kr: KeyedRelation = k) => new KeyedChanges(kr);

  it('repeated updates of one row become one update with the last values; unchanged TOAST keeps earlier ones', () => {
    const kc = fresh();
    expect(kc.update({ new: ['1', 'a', 'x'] })).toBe(true);
    expect(kc.update({ new: ['1', 'b', U] })).toBe(true);
    expect(kc.update({ new: ['2', 'c', U] })).toBe(true);
    expect(net(kc)).toEqual([
      { op: 'UPDATE', values: ['{"1"}', '{"b"}', '{"x"}'], expect: 1, prepare: true },
      { op: 'UPDATE', values: ['{"2"}', '{"c"}'], expect: 1, prepare: true },
    ]);
    expect(kc.size).toBe(0);
  });

  it('insert then updates is one insert; insert then delete is nothing; delete then insert is an update', () => {
    const kc = fresh();
    kc.insert(['1', 'a', 'big']);
    kc.update({ new: ['1', 'b', U] });
    kc.insert(['2', 'x', null]);
    kc.delete({ oldKey: ['2', null, null] });
    kc.delete({ oldKey: ['3', null, null] });
    kc.insert(['3', 'again', null]);
    expect(net(kc)).toEqual([
      { op: 'UPDATE', values: ['{"3"}', '{"again"}', '{NULL}'], expect: 1, prepare: true },
      { op: 'INSERT', values: ['{"1"}', '{"b"}', '{"big"}'], expect: 1, prepare: true },
    ]);
  });

  it('a key change deletes the old key and inserts the new one, with values carried over', () => {
    const kc = fresh();
    kc.update({ new: ['1', 'a', 'body'] });
    expect(kc.update({ oldKey: ['1', null, null], new: ['5', 'a2', U] })).toBe(true);
    expect(net(kc)).toEqual([
      { op: 'DELETE', values: ['{"1"}'], expect: 1, prepare: true },
      { op: 'INSERT', values: ['{"5"}', '{"a2"}', '{"body"}'], expect: 1, prepare: true },
    ]);
  });

  it('refuses what it cannot express: a key change of a row whose unsent values it does not know, a taken key, a deleted row updated', () => {
    const kc = fresh();
    expect(kc.update({ oldKey: ['1', null, null], new: ['2', 'a', U] })).toBe(false);
    expect(kc.insert(['3', 'a', 'b'])).toBe(true);
    expect(kc.insert(['3', 'a', 'b'])).toBe(false);
    expect(kc.delete({ oldKey: ['4', null, null] })).toBe(true);
    expect(kc.update({ new: ['4', 'x', 'y'] })).toBe(false);
    expect(kc.delete({ oldKey: ['4', null, null] })).toBe(false);
    expect(kc.update({ new: [null, 'x', 'y'] })).toBe(false);
    expect(kc.update({ new: ['1', 'x'] })).toBe(false); // wrong width
  });

  it('a FULL table keyed by its target primary key finds rows by the old row', () => {
    const kf = keyedRelation({ ...rel, replicaIdentity: 'full', keyColumns: [], targetPrimaryKey: ['id'] }, ['integer', 'text', 'text'], undefined)!;
    const kc = fresh(kf);
    expect(kc.update({ new: ['1', 'x', 'y'] })).toBe(false); // FULL sends the old row: without it, no key
    expect(kc.update({ old: ['1', 'a', 'b'], new: ['1', 'x', U] })).toBe(true);
    expect(kc.delete({ old: ['2', 'a', 'b'] })).toBe(true);
    expect(net(kc).map((s) => [s.op, s.values])).toEqual([
      ['DELETE', ['{"2"}']],
      ['UPDATE', ['{"1"}', '{"x"}']],
    ]);
  });

  it('splits statements by rows and bytes; a row with a large value gets its own plain statement', () => {
    const kc = fresh();
    for (let i = 0; i < 5; i++) kc.insert([String(i), 'n', 'x'.repeat(10)]);
    kc.insert(['9', 'n', 'y'.repeat(100)]);
    kc.update({ new: ['20', 'n', 'z'.repeat(100)] });
    const out = [...kc.drain({ maxRows: 2, maxBytes: 1 << 20, bigValue: 100 })];
    expect(out.map((s) => [s.op, s.expect, s.prepare])).toEqual([
      ['UPDATE', 1, false],
      ['INSERT', 2, true],
      ['INSERT', 2, true],
      ['INSERT', 1, true],
      ['INSERT', 1, false],
    ]);
    expect(out[0]!.text).toBe('UPDATE "app"."Order Items" SET "name" = $1, "body" = $2 WHERE "id" = $3');
    expect(out[0]!.values).toEqual(['n', 'z'.repeat(100), '20']);
    expect(out[4]!.text).toBe('INSERT INTO "app"."Order Items" ("id", "name", "body") OVERRIDING SYSTEM VALUE VALUES ($1, $2, $3)');
  });

  it('with copy, all inserts (large values too) go as one COPY after the deletes and updates', () => {
    const kc = fresh();
    for (let i = 0; i < 5; i++) kc.insert([String(i), 'n', 'x'.repeat(10)]);
    kc.insert(['9', 'n', 'y'.repeat(100)]);
    kc.update({ new: ['20', 'n', 'z'.repeat(100)] });
    kc.delete({ oldKey: ['30', null, null] });
    const out = [...kc.drain({ maxRows: 2, maxBytes: 1 << 20, bigValue: 100, copy: true })];
    expect(out.map((s) => [s.op, s.expect, s.copyRows !== undefined])).toEqual([
      ['DELETE', 1, false],
      ['UPDATE', 1, false],
      ['INSERT', 6, true],
    ]);
    expect(out[2]!.text).toBe('COPY "app"."Order Items" ("id", "name", "body") FROM STDIN');
    expect(out[2]!.copyRows!.map((r) => r[0])).toEqual(['0', '1', '2', '3', '4', '9']);
  });

  it('tracks the bytes it holds', () => {
    const kc = fresh();
    kc.insert(['1', 'abc', null]);
    kc.update({ new: ['1', 'abcdef', U] });
    expect(kc.bytes).toBe(7);
    kc.delete({ oldKey: ['1', null, null] });
    expect(kc.bytes).toBe(0);
  });
});

describe('COPY text format', () => {
  it('escapes backslash, tab, newline and CR, writes NULL as \\N, and refuses an unchanged TOAST marker', () => {
    expect(copyField(null)).toBe('\\N');
    expect(copyField('plain é€')).toBe('plain é€');
    expect(copyField('a\\b\tc\nd\re')).toBe('a\\\\b\\tc\\nd\\re');
    expect(copyField('\\N')).toBe('\\\\N'); // the text "\N", not NULL
    expect(copyField('\\.')).toBe('\\\\.'); // never the end-of-data marker
    expect(() => copyField(U)).toThrow(/unchanged TOAST/);
  });
  it('writes the rows into buffers of at most the size asked (a larger value gets its own), in order', () => {
    const rows = Array.from({ length: 100 }, (_, i) => [String(i), i % 7 === 0 ? null : `v\t${i}é€`]);
    rows.push(['big', 'x'.repeat(300)], ['', '']);
    const chunks = [...copyChunks(rows, 50)];
    expect(chunks.length).toBeGreaterThan(10);
    for (const c of chunks) expect(c.length <= 50 || c.includes('x'.repeat(300))).toBe(true);
    const text = Buffer.concat(chunks).toString('utf8');
    expect(text.split('\n').slice(0, -1)).toEqual(rows.map((r) => r.map(copyField).join('\t')));
    expect(Buffer.concat([...copyChunks(rows)]).toString('utf8')).toBe(text);
    expect(Buffer.concat([...copyChunks([[], []], 1)]).toString('utf8')).toBe('\n\n'); // a table without columns
    expect(copyInsertSql(k, rows).expect).toBe(102);
  });
});

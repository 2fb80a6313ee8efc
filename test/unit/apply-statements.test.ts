import { describe, expect, it } from 'vitest';
import {
  UNCHANGED_TOAST,
  deleteStatement,
  insertStatement,
  truncateStatement,
  updateStatement,
  type ApplyRelation,
} from '../../activities/apply/statements';
import { safeDbMessage } from '../../activities/apply/errors';
import { bigIntToLsn, compareLsn, lsnToBigInt } from '../../activities/apply/lsn';
import { parsePgoutput } from '../../activities/apply/pgoutput';
import { startReplicationSql } from '../../activities/apply/source';

const U: typeof UNCHANGED_TOAST = UNCHANGED_TOAST;

const keyed: ApplyRelation = {
  target: { schema: 'app', name: 'Order Items' },
  columns: ['id', 'name', 'body'],
  keyColumns: ['id'],
  replicaIdentity: 'default',
};

const full: ApplyRelation = {
  target: { schema: 'public', name: 'dups' },
  columns: ['a', 'doc'],
  keyColumns: ['a', 'doc'],
  replicaIdentity: 'full',
};

describe('insertStatement', () => {
  it('inserts one row with untyped parameters and OVERRIDING SYSTEM VALUE', () => {
    expect(insertStatement(keyed, [['1', 'x', null]])).toEqual({
      text: 'INSERT INTO "app"."Order Items" ("id", "name", "body") OVERRIDING SYSTEM VALUE VALUES ($1, $2, $3)',
      values: ['1', 'x', null],
    });
  });

  it('inserts several rows in order in one statement', () => {
    expect(insertStatement(keyed, [['1', 'a', 'b'], ['2', null, 'd']])).toEqual({
      text: 'INSERT INTO "app"."Order Items" ("id", "name", "body") OVERRIDING SYSTEM VALUE VALUES ($1, $2, $3), ($4, $5, $6)',
      values: ['1', 'a', 'b', '2', null, 'd'],
    });
  });

  it('quotes identifiers with quotes and case', () => {
    const rel: ApplyRelation = { target: { schema: 'Sales "Dept"', name: 'T' }, columns: ['Col"1'], keyColumns: [], replicaIdentity: 'full' };
    expect(insertStatement(rel, [['v']]).text).toBe('INSERT INTO "Sales ""Dept"""."T" ("Col""1") OVERRIDING SYSTEM VALUE VALUES ($1)');
  });

  it('refuses rows of the wrong width or with unsent values, without naming values', () => {
    expect(() => insertStatement(keyed, [['1', 'secret']])).toThrow(/has 2 columns, the relation has 3/);
    expect(() => insertStatement(keyed, [['1', 'secret', U]])).toThrow('INSERT on app.Order Items: column body was not sent (unchanged TOAST value)');
    expect(() => insertStatement(keyed, [])).toThrow(/without rows/);
  });
});

describe('updateStatement', () => {
  it('sets every sent column and finds the row by the new key when the key did not change', () => {
    expect(updateStatement(keyed, { new: ['7', 'n', 'b'] })).toEqual({
      text: 'UPDATE "app"."Order Items" SET "id" = $1, "name" = $2, "body" = $3 WHERE "id" = $4',
      values: ['7', 'n', 'b', '7'],
    });
  });

  it('leaves unchanged TOAST columns out of SET (they are not NULL)', () => {
    expect(updateStatement(keyed, { new: ['7', null, U] })).toEqual({
      text: 'UPDATE "app"."Order Items" SET "id" = $1, "name" = $2 WHERE "id" = $3',
      values: ['7', null, '7'],
    });
  });

  it('uses the old key (K tuple) when the key changed', () => {
    expect(updateStatement(keyed, { oldKey: ['7', null, null], new: ['8', 'n', U] })).toEqual({
      text: 'UPDATE "app"."Order Items" SET "id" = $1, "name" = $2 WHERE "id" = $3',
      values: ['8', 'n', '7'],
    });
  });

  it('uses a composite key in column order of the key', () => {
    const rel: ApplyRelation = { target: { schema: 's', name: 'u' }, columns: ['a', 'v', 'b'], keyColumns: ['a', 'b'], replicaIdentity: 'index' };
    expect(updateStatement(rel, { oldKey: ['1', null, 'x'], new: ['2', 'v', 'x'] })).toEqual({
      text: 'UPDATE "s"."u" SET "a" = $1, "v" = $2, "b" = $3 WHERE "a" = $4 AND "b" = $5',
      values: ['2', 'v', 'x', '1', 'x'],
    });
  });

  it('REPLICA IDENTITY FULL: exactly one row, matched by ctid on every column compared as text', () => {
    expect(updateStatement(full, { old: ['1', '{"k": 1}'], new: ['2', U] })).toEqual({
      text:
        'UPDATE "public"."dups" SET "a" = $1 WHERE ctid = (SELECT ctid FROM "public"."dups" WHERE ' +
        '"a"::text COLLATE "C" IS NOT DISTINCT FROM $2::text AND "doc"::text COLLATE "C" IS NOT DISTINCT FROM $3::text LIMIT 1)',
      values: ['2', '1', '{"k": 1}'],
    });
  });

  it('REPLICA IDENTITY FULL compares NULLs with IS NOT DISTINCT FROM', () => {
    expect(updateStatement(full, { old: [null, null], new: ['1', null] })!.values).toEqual(['1', null, null, null]);
  });

  it('REPLICA IDENTITY FULL on a partitioned target names the row by (tableoid, ctid)', () => {
    const rel = { ...full, partitioned: true };
    expect(deleteStatement(rel, { old: ['1', null] }).text).toBe(
      'DELETE FROM "public"."dups" WHERE (tableoid, ctid) = (SELECT tableoid, ctid FROM "public"."dups" WHERE ' +
        '"a"::text COLLATE "C" IS NOT DISTINCT FROM $1::text AND "doc"::text COLLATE "C" IS NOT DISTINCT FROM $2::text LIMIT 1)',
    );
  });

  it('REPLICA IDENTITY FULL with a target primary key uses the key from the old row', () => {
    const rel: ApplyRelation = { ...full, targetPrimaryKey: ['a'] };
    expect(updateStatement(rel, { old: ['1', 'x'], new: ['1', 'y'] })).toEqual({
      text: 'UPDATE "public"."dups" SET "a" = $1, "doc" = $2 WHERE "a" = $3',
      values: ['1', 'y', '1'],
    });
  });

  it('returns null when nothing was sent to set', () => {
    const rel: ApplyRelation = { target: { schema: 's', name: 't' }, columns: ['big'], keyColumns: [], replicaIdentity: 'full' };
    expect(updateStatement(rel, { old: ['x'], new: [U] })).toBeNull();
  });

  it('refuses to guess a row', () => {
    expect(() => updateStatement(full, { new: ['1', '2'] })).toThrow('UPDATE on public.dups (REPLICA IDENTITY FULL) without the old row');
    const none: ApplyRelation = { ...keyed, keyColumns: [], replicaIdentity: 'nothing' };
    expect(() => updateStatement(none, { new: ['1', '2', '3'] })).toThrow(/no replica identity/);
    // The key is TOASTed and unchanged, and no old key came: nothing to find the row by.
    expect(() => updateStatement(keyed, { new: [U, 'x', 'y'] })).toThrow('UPDATE on app.Order Items: column id was not sent (unchanged TOAST value)');
  });
});

describe('GENERATED ALWAYS identity columns', () => {
  const ident: ApplyRelation = {
    target: { schema: 's', name: 't' },
    columns: ['id', 'seq', 'big'],
    keyColumns: ['id'],
    replicaIdentity: 'default',
    identityAlways: ['id', 'seq'],
    columnTypes: ['integer', 'bigint', 'text'],
  };

  it('leaves an unchanged identity key out of SET (it cannot be SET at all)', () => {
    const rel: ApplyRelation = { ...ident, identityAlways: ['id'] };
    expect(updateStatement(rel, { new: ['1', '5', 'x'] })).toEqual({ text: 'UPDATE "s"."t" SET "seq" = $1, "big" = $2 WHERE "id" = $3', values: ['5', 'x', '1'] });
  });

  it('guards an identity column whose old value was not sent, with a row move as fallback', () => {
    expect(updateStatement(ident, { new: ['1', '5', 'x'] })).toEqual({
      text: 'UPDATE "s"."t" SET "big" = $1 WHERE "id" = $2 AND "seq" IS NOT DISTINCT FROM $3',
      values: ['x', '1', '5'],
      fallback: {
        text: 'WITH m AS (DELETE FROM "s"."t" WHERE "id" = $1 RETURNING *) INSERT INTO "s"."t" ("id", "seq", "big") OVERRIDING SYSTEM VALUE SELECT $2::integer, $3::bigint, $4::text FROM m',
        values: ['1', '1', '5', 'x'],
      },
    });
    // Nothing else to set: the move alone, taking the unchanged TOAST value from the old row.
    expect(updateStatement(ident, { new: ['1', '5', U] })).toEqual({
      text: 'WITH m AS (DELETE FROM "s"."t" WHERE "id" = $1 RETURNING *) INSERT INTO "s"."t" ("id", "seq", "big") OVERRIDING SYSTEM VALUE SELECT $2::integer, $3::bigint, m."big" FROM m',
      values: ['1', '1', '5'],
    });
  });

  it('moves the row when the identity key changed', () => {
    expect(updateStatement(ident, { oldKey: ['1', null, null], new: ['2', '5', 'x'] })).toEqual({
      text: 'WITH m AS (DELETE FROM "s"."t" WHERE "id" = $1 RETURNING *) INSERT INTO "s"."t" ("id", "seq", "big") OVERRIDING SYSTEM VALUE SELECT $2::integer, $3::bigint, $4::text FROM m',
      values: ['1', '2', '5', 'x'],
    });
  });
});

describe('deleteStatement', () => {
  it('deletes by the old key', () => {
    expect(deleteStatement(keyed, { oldKey: ['9', null, null] })).toEqual({
      text: 'DELETE FROM "app"."Order Items" WHERE "id" = $1',
      values: ['9'],
    });
  });

  it('deletes exactly one of several identical rows for REPLICA IDENTITY FULL', () => {
    expect(deleteStatement(full, { old: ['1', '[1, 2]'] })).toEqual({
      text:
        'DELETE FROM "public"."dups" WHERE ctid = (SELECT ctid FROM "public"."dups" WHERE ' +
        '"a"::text COLLATE "C" IS NOT DISTINCT FROM $1::text AND "doc"::text COLLATE "C" IS NOT DISTINCT FROM $2::text LIMIT 1)',
      values: ['1', '[1, 2]'],
    });
  });

  it('needs the old key', () => {
    expect(() => deleteStatement(keyed, {})).toThrow('DELETE on app.Order Items without the old key');
  });
});

describe('truncateStatement', () => {
  it('repeats ONLY for every table and never cascades', () => {
    expect(truncateStatement([{ target: { schema: 'a', name: 'x' } }, { target: { schema: 'b', name: 'Y' } }])).toEqual({
      text: 'TRUNCATE ONLY "a"."x", ONLY "b"."Y"',
      values: [],
    });
  });

  it('restarts identity when the source did, and truncates partitioned tables with their partitions', () => {
    expect(truncateStatement([{ target: { schema: 'a', name: 'p' }, partitioned: true }, { target: { schema: 'a', name: 'x' } }], { restartIdentity: true }).text).toBe(
      'TRUNCATE "a"."p", ONLY "a"."x" RESTART IDENTITY',
    );
  });
});

describe('LSN helpers', () => {
  it('round-trips PostgreSQL LSN text and 64-bit integers', () => {
    expect(lsnToBigInt('0/0')).toBe(0n);
    expect(lsnToBigInt('16/B374D848')).toBe(0x16b374d848n);
    expect(lsnToBigInt('16/b374d848')).toBe(0x16b374d848n);
    expect(lsnToBigInt('FFFFFFFF/FFFFFFFF')).toBe(0xffffffffffffffffn);
    expect(bigIntToLsn(0x16b374d848n)).toBe('16/B374D848');
    expect(bigIntToLsn(0n)).toBe('0/0');
    expect(bigIntToLsn(0x100000000n)).toBe('1/0');
    expect(bigIntToLsn(lsnToBigInt('0/00000010'))).toBe('0/10');
  });

  it('compares numerically, not as strings', () => {
    // As strings "9/..." > "10/..." and "0/9" > "0/10".
    expect(compareLsn('9/FFFFFFFF', '10/0')).toBe(-1);
    expect(compareLsn('0/9', '0/10')).toBe(-1);
    expect(compareLsn('0/A', '0/a')).toBe(0);
    expect(compareLsn('1/0', '0/FFFFFFFF')).toBe(1);
  });

  it('rejects malformed input', () => {
    expect(() => lsnToBigInt('16-B374D848')).toThrow(/invalid LSN/);
    expect(() => lsnToBigInt('123456789/0')).toThrow(/invalid LSN/);
    expect(() => bigIntToLsn(-1n)).toThrow(/out of range/);
  });
});

// ---- pgoutput parsing: raw protocol bytes in, text values and explicit unchanged-TOAST out -------------

function msg(parts: (Buffer | string | [number, 'u8' | 'i16' | 'i32' | 'u32'] | bigint)[]): Buffer {
  return Buffer.concat(
    parts.map((p) => {
      if (Buffer.isBuffer(p)) return p;
      if (typeof p === 'string') return Buffer.from(p + '\0', 'utf8');
      if (typeof p === 'bigint') {
        const b = Buffer.alloc(8);
        b.writeBigUInt64BE(p);
        return b;
      }
      const [v, kind] = p;
      const b = Buffer.alloc(kind === 'u8' ? 1 : kind === 'i16' ? 2 : 4);
      if (kind === 'u8') b.writeUInt8(v);
      else if (kind === 'i16') b.writeInt16BE(v);
      else if (kind === 'i32') b.writeInt32BE(v);
      else b.writeUInt32BE(v);
      return b;
    }),
  );
}
const ch = (c: string): [number, 'u8'] => [c.charCodeAt(0), 'u8'];
const textCol = (s: string): Buffer => {
  const v = Buffer.from(s, 'utf8');
  return Buffer.concat([msg([ch('t'), [v.length, 'i32']]), v]);
};

describe('parsePgoutput', () => {
  it('keeps values as PostgreSQL text, NULL as null and unchanged TOAST as its own marker', () => {
    const buf = msg([ch('U'), [16385, 'u32'], ch('O'), [3, 'i16'], textCol('2024-01-02 03:04:05.123456+00'), ch('n'), textCol('big'), ch('N'), [3, 'i16'], textCol('NaN'), ch('n'), ch('u')]);
    expect(parsePgoutput(buf)).toEqual({
      tag: 'update',
      relationOid: 16385,
      key: null,
      old: ['2024-01-02 03:04:05.123456+00', null, 'big'],
      new: ['NaN', null, UNCHANGED_TOAST],
    });
  });

  it('reads relation, begin, commit and logical messages', () => {
    const rel = msg([ch('R'), [16390, 'u32'], 'Sales Dept', 'Items', ch('i'), [2, 'i16'], [1, 'u8'], 'id', [23, 'u32'], [-1, 'i32'], [0, 'u8'], 'v', [1700, 'u32'], [2621444, 'i32']]);
    expect(parsePgoutput(rel)).toEqual({
      tag: 'relation',
      relationOid: 16390,
      schema: 'Sales Dept',
      name: 'Items',
      replicaIdentity: 'index',
      columns: [
        { flags: 1, name: 'id', typeOid: 23, typeMod: -1 },
        { flags: 0, name: 'v', typeOid: 1700, typeMod: 2621444 },
      ],
    });
    expect(parsePgoutput(msg([ch('B'), 0x1_0000_0010n, 5n, [77, 'u32']]))).toEqual({ tag: 'begin', finalLsn: 0x100000010n, commitTime: 5n, xid: 77 });
    expect(parsePgoutput(msg([ch('C'), [0, 'u8'], 0x10n, 0x40n, 5n]))).toEqual({ tag: 'commit', flags: 0, commitLsn: 0x10n, endLsn: 0x40n, commitTime: 5n });
    const m = parsePgoutput(msg([ch('M'), [1, 'u8'], 0x20n, 'pg-dts-fence', [4, 'u32'], Buffer.from('tok1')]));
    expect(m).toMatchObject({ tag: 'message', transactional: true, lsn: 0x20n, prefix: 'pg-dts-fence' });
    expect(m.tag === 'message' && m.content.toString()).toBe('tok1');
    expect(parsePgoutput(msg([ch('T'), [2, 'u32'], [2, 'u8'], [1, 'u32'], [2, 'u32']]))).toEqual({
      tag: 'truncate',
      relationOids: [1, 2],
      cascade: false,
      restartIdentity: true,
    });
  });

  it('reads old keys of updates and deletes', () => {
    expect(parsePgoutput(msg([ch('D'), [5, 'u32'], ch('K'), [2, 'i16'], textCol('1'), ch('n')]))).toEqual({ tag: 'delete', relationOid: 5, key: ['1', null], old: null });
    expect(parsePgoutput(msg([ch('U'), [5, 'u32'], ch('K'), [1, 'i16'], textCol('1'), ch('N'), [1, 'i16'], textCol('2')]))).toEqual({
      tag: 'update',
      relationOid: 5,
      key: ['1'],
      old: null,
      new: ['2'],
    });
  });

  it('decodes UTF-8 text exactly', () => {
    expect(parsePgoutput(msg([ch('I'), [5, 'u32'], ch('N'), [1, 'i16'], textCol('héllo 🐘')]))).toEqual({ tag: 'insert', relationOid: 5, new: ['héllo 🐘'] });
  });

  it('reports malformed input instead of throwing', () => {
    const r = parsePgoutput(msg([ch('I'), [5, 'u32'], ch('N'), [1, 'i16'], ch('t'), [100, 'i32']]));
    expect(r.tag).toBe('invalid');
    expect(parsePgoutput(Buffer.from('Z')).tag).toBe('invalid');
  });
});

describe('replication command and error text', () => {
  it('quotes slot and publication', () => {
    expect(startReplicationSql('pg_dts_m1', 'Pub"x', '0/16B3748')).toBe(
      `START_REPLICATION SLOT "pg_dts_m1" LOGICAL 0/16B3748 (proto_version '1', publication_names '"Pub""x"', messages 'true')`,
    );
    expect(startReplicationSql('s', "it's", '0/0')).toContain(`publication_names '"it''s"'`);
  });

  it('keeps row values out of error messages', () => {
    const e = Object.assign(new Error('invalid input syntax for type integer: "secret"'), { code: '22P02' });
    expect(safeDbMessage(e)).toBe('invalid input syntax for type integer: … (SQLSTATE 22P02)');
    const q = Object.assign(new Error('value "12"34" is out of range for type integer'), { code: '22003' });
    expect(safeDbMessage(q)).toBe('value "…" is out of range for type integer (SQLSTATE 22003)');
    const b = Object.assign(new Error('invalid byte sequence for encoding "UTF8": 0xc3 0x28'), { code: '22021' });
    expect(safeDbMessage(b)).not.toContain('0xc3');
    expect(safeDbMessage(Object.assign(new Error('read ECONNRESET'), { code: 'ECONNRESET' }))).toBe('read ECONNRESET');
    const d = Object.assign(new Error('duplicate key value violates unique constraint "t_pkey"'), { code: '23505', detail: 'Key (id)=(5) already exists.' });
    expect(safeDbMessage(d)).toBe('duplicate key value violates unique constraint "t_pkey" (SQLSTATE 23505)');
  });
});

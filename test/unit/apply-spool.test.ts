/**
 * The replication framer (activities/apply/framer.ts) and the spool (spool.ts) on synthetic replication byte streams, in any
 * chunking: every XLogData message reaches `xlog` with its LSN and exact payload, keepalives reach
 * `keepalive`, other backend messages reach pg's parser byte for byte, in order; large changes reach
 * `large` parsed, equal to `parsePgoutput` of the original, with large values in spool files holding
 * exactly their bytes.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { UNCHANGED_TOAST, type TupleValue } from '../../activities/apply/statements';
import { ReplicationFramer, type LargeChange } from '../../activities/apply/framer';
import { parsePgoutput, type PgoutputMessage } from '../../activities/apply/pgoutput';
import { Spool, copyEscape, copyRow, inlineParams, isSpooled } from '../../activities/apply/spool';

const roots: string[] = [];
afterEach(() => {
  for (const r of roots.splice(0)) fs.rmSync(r, { recursive: true, force: true });
});
function spool(): Spool {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'pgdts-spool-test-'));
  roots.push(root);
  return new Spool(root);
}

const u8 = (n: number) => Buffer.from([n]);
const i16 = (n: number) => {
  const b = Buffer.alloc(2);
  b.writeInt16BE(n);
  return b;
};
const i32 = (n: number) => {
  const b = Buffer.alloc(4);
  b.writeInt32BE(n);
  return b;
};
function tuple(values: (string | null | typeof UNCHANGED_TOAST)[]): Buffer {
  const parts = [i16(values.length)];
  for (const v of values) {
    if (v === null) parts.push(u8(0x6e));
    else if (v === UNCHANGED_TOAST) parts.push(u8(0x75));
    else {
      const b = Buffer.from(v, 'utf8');
      parts.push(u8(0x74), i32(b.length), b);
    }
  }
  return Buffer.concat(parts);
}
let lsn = 0x1000;
/** A CopyData message with an XLogData header around a pgoutput payload. */
function xlog(payload: Buffer): Buffer {
  const h = Buffer.alloc(25);
  h[0] = 0x77;
  h.writeBigUInt64BE(BigInt(lsn), 1);
  h.writeBigUInt64BE(BigInt(lsn + 100), 9);
  h.writeBigInt64BE(12345n, 17);
  lsn += 0x100;
  return copyData(Buffer.concat([h, payload]));
}
function copyData(payload: Buffer): Buffer {
  return Buffer.concat([u8(0x64), i32(payload.length + 4), payload]);
}
/** Splits a byte stream into backend messages: [type, payload]. */
function frames(b: Buffer): [number, Buffer][] {
  const out: [number, Buffer][] = [];
  let p = 0;
  while (p < b.length) {
    const len = b.readInt32BE(p + 1);
    out.push([b[p]!, b.subarray(p + 5, p + 1 + len)]);
    p += 1 + len;
  }
  expect(p).toBe(b.length);
  return out;
}

const big = (n: number, piece: string) => piece.repeat(Math.ceil(n / piece.length)).slice(0, n);
const bigText = big(300_000, 'a\tb\\c\nd\re"f\'g é€ ');
const bigHex = `\\x${big(200_000, '0123456789abcdef')}`;

function stream(): Buffer {
  const rel = i32(16385);
  return Buffer.concat([
    xlog(Buffer.concat([u8(0x42), Buffer.alloc(20)])), // BEGIN
    xlog(Buffer.concat([u8(0x49), rel, u8(0x4e), tuple(['1', 'small', null])])), // small INSERT
    xlog(Buffer.concat([u8(0x49), rel, u8(0x4e), tuple(['2', bigText, null, '', bigHex, UNCHANGED_TOAST])])), // large INSERT
    copyData(Buffer.concat([u8(0x6b), Buffer.from('0000000100000abc', 'hex'), Buffer.alloc(8), u8(1)])), // keepalive, reply requested
    Buffer.concat([u8(0x4e), i32(4 + 6), Buffer.from('notice')]), // some other backend message
    xlog(Buffer.concat([u8(0x4d), u8(1), Buffer.alloc(8), Buffer.from('prefix\0'), i32(200_000), Buffer.alloc(200_000, 0x41)])), // large non-change: passes
    xlog(Buffer.concat([u8(0x55), rel, u8(0x4b), tuple(['2', null]), u8(0x4e), tuple(['3', bigText])])), // large UPDATE with old key
    xlog(Buffer.concat([u8(0x44), rel, u8(0x4f), tuple(['3', bigHex, 'x'])])), // large DELETE, old row
    xlog(Buffer.concat([u8(0x43), Buffer.alloc(25)])), // COMMIT
  ]);
}

function chunked(b: Buffer, sizes: () => number): Buffer[] {
  const out: Buffer[] = [];
  for (let p = 0; p < b.length; ) {
    const n = Math.max(1, Math.min(b.length - p, sizes()));
    out.push(b.subarray(p, p + n));
    p += n;
  }
  return out;
}

/** Replaces spooled markers by their files' contents. */
function resolve(s: Spool, t: readonly TupleValue[] | null): TupleValue[] | null {
  return t && t.map((v) => (isSpooled(v) ? fs.readFileSync(s.get(v)!.file, 'utf8') : v));
}
function resolved(s: Spool, m: PgoutputMessage): PgoutputMessage {
  switch (m.tag) {
    case 'insert':
      return { tag: 'insert', relationOid: m.relationOid, new: resolve(s, m.new)! };
    case 'update':
      return { tag: 'update', relationOid: m.relationOid, key: resolve(s, m.key), old: resolve(s, m.old), new: resolve(s, m.new)! };
    case 'delete':
      return { tag: 'delete', relationOid: m.relationOid, key: resolve(s, m.key), old: resolve(s, m.old) };
    default:
      return m;
  }
}

describe('ReplicationFramer', () => {
  const chunkings: [string, () => number][] = [
    ['one byte at a time', () => 1],
    ['7 bytes', () => 7],
    ['random up to 64 kB', () => 1 + Math.floor(Math.random() * 65536)],
    ['whole', () => Number.MAX_SAFE_INTEGER],
  ];
  type Event = { kind: 'xlog' | 'large'; lsn: number; msg: PgoutputMessage; size: number } | { kind: 'keepalive'; lsn: number; reply: boolean } | { kind: 'other'; type: number; bytes: Buffer };
  for (const [name, sizes] of chunkings) {
    it(`hands each message over in order, parsing large changes as they arrive (${name})`, () => {
      const input = stream();
      const s = spool();
      const events: Event[] = [];
      const forwarded: Buffer[] = [];
      const framer = new ReplicationFramer({
        spool: s,
        messageThreshold: 100_000,
        valueThreshold: 1000,
        forward: (b) => forwarded.push(Buffer.from(b)),
        xlog: (l, buf, start, end) => events.push({ kind: 'xlog', lsn: l, msg: parsePgoutput(buf, start, end), size: end - start }),
        large: (l, msg, size) => events.push({ kind: 'large', lsn: l, msg, size }),
        keepalive: (l, reply) => events.push({ kind: 'keepalive', lsn: l, reply }),
      });
      for (const c of chunked(input, sizes)) framer.push(c);
      const before = frames(input);
      // Forwarded bytes are whole messages, the non-CopyData ones, unchanged.
      const others = frames(Buffer.concat(forwarded));
      expect(others.map(([t]) => t)).toEqual(before.filter(([t]) => t !== 0x64).map(([t]) => t));
      expect(framer.count).toBe(3);
      const copies = before.filter(([t]) => t === 0x64);
      expect(events).toHaveLength(copies.length);
      let large = 0;
      for (let i = 0; i < copies.length; i++) {
        const p = copies[i]![1];
        const e = events[i]!;
        if (p[0] === 0x6b) {
          expect(e).toEqual({ kind: 'keepalive', lsn: 0x1_0000_0abc, reply: true });
          continue;
        }
        expect(e.kind === 'keepalive' || e.kind === 'other' ? undefined : e.lsn, `message ${i} LSN`).toBe(Number(p.readBigUInt64BE(1)));
        const expected = parsePgoutput(p.subarray(25));
        expect(expected.tag).not.toBe('invalid');
        const isLarge = p.length > 100_000 && [0x49, 0x55, 0x44].includes(p[25]!);
        if (!isLarge) {
          expect(e).toMatchObject({ kind: 'xlog', size: p.length - 25 });
          expect((e as { msg: PgoutputMessage }).msg, `message ${i}`).toEqual(expected);
          continue;
        }
        large++;
        expect(e).toMatchObject({ kind: 'large', size: p.length - 25 });
        const { spooled, ...plain } = (e as { msg: LargeChange }).msg;
        expect(spooled).toBeGreaterThan(0);
        // Nothing large is held in the message itself.
        expect(JSON.stringify([plain.tag === 'delete' ? null : plain.new, plain.tag === 'insert' ? null : [plain.key, plain.old]]).length).toBeLessThan(2000);
        expect(resolved(s, plain)).toEqual(expected);
      }
      expect(large).toBe(3);
      s.release(s.last);
      expect(fs.readdirSync(s.dir)).toEqual([]);
      s.close();
      expect(fs.existsSync(s.dir)).toBe(false);
    });
  }

  const quiet = { forward: () => undefined, xlog: () => undefined, large: () => undefined, keepalive: () => undefined };
  it('refuses a change that ends before its message does', () => {
    const s = spool();
    const framer = new ReplicationFramer({ spool: s, messageThreshold: 10, valueThreshold: 1000, ...quiet });
    const rel = i32(1);
    const body = Buffer.concat([u8(0x49), rel, u8(0x4e), tuple(['1', 'x'.repeat(50)]), Buffer.from('trailing')]);
    expect(() => framer.push(xlog(body))).toThrow(/longer than its message/);
  });

  it('takes a threshold below the headers as the headers (short messages stay whole)', () => {
    const s = spool();
    const kinds: string[] = [];
    const framer = new ReplicationFramer({
      spool: s,
      messageThreshold: 1,
      valueThreshold: 1000,
      forward: () => undefined,
      xlog: (_l, buf, start, end) => kinds.push(parsePgoutput(buf, start, end).tag),
      large: (_l, msg) => kinds.push(`large ${msg.tag}`),
      keepalive: () => kinds.push('keepalive'),
    });
    for (const c of chunked(stream(), () => 7)) framer.push(c);
    expect(kinds).toEqual(['begin', 'large insert', 'large insert', 'keepalive', 'message', 'large update', 'large delete', 'commit']);
  });

  it('refuses a CopyData message that is not replication data, and a bad length', () => {
    const s = spool();
    const framer = new ReplicationFramer({ spool: s, messageThreshold: 100, valueThreshold: 1000, ...quiet });
    expect(() => framer.push(copyData(Buffer.from('zzz')))).toThrow(/unknown message 0x7a/);
    expect(() => new ReplicationFramer({ spool: s, messageThreshold: 100, valueThreshold: 1000, ...quiet }).push(Buffer.concat([u8(0x64), i32(2)]))).toThrow(/bad message length/);
    expect(() => new ReplicationFramer({ spool: s, messageThreshold: 100, valueThreshold: 1000, ...quiet }).push(copyData(Buffer.from('w12')))).toThrow(/too short/);
  });

  it('removes spool directories of processes that are gone', () => {
    const root = fs.mkdtempSync(path.join(os.tmpdir(), 'pgdts-spool-test-'));
    roots.push(root);
    fs.mkdirSync(path.join(root, '999999999-abc'));
    fs.mkdirSync(path.join(root, `${process.pid}-keep`));
    const s = new Spool(root);
    expect(fs.existsSync(path.join(root, '999999999-abc'))).toBe(false);
    expect(fs.existsSync(path.join(root, `${process.pid}-keep`))).toBe(true);
    s.close();
  });
});

describe('the spool folder is private', () => {
  it('refuses a root that is a link, or open to other users', () => {
    const base = fs.mkdtempSync(path.join(os.tmpdir(), 'pgdts-spool-test-'));
    roots.push(base);
    const elsewhere = path.join(base, 'elsewhere');
    fs.mkdirSync(elsewhere, { mode: 0o700 });
    fs.symlinkSync(elsewhere, path.join(base, 'link'));
    expect(() => new Spool(path.join(base, 'link'))).toThrow(/is not a directory \(a symbolic link\?\)/);
    const open = path.join(base, 'open');
    fs.mkdirSync(open);
    fs.chmodSync(open, 0o777);
    expect(() => new Spool(open)).toThrow(/is open to other users \(mode 777\)/);
    expect(fs.readdirSync(open), 'nothing written there').toEqual([]);
  });
});

describe('spooled values to COPY', () => {
  it('escapes backslash, newline, carriage return and tab only', () => {
    expect(copyEscape(Buffer.from('a\\b\nc\rd\te"f\'é')).toString()).toBe('a\\\\b\\nc\\rd\\te"f\'é');
    const plain = Buffer.from('nothing to escape');
    expect(copyEscape(plain)).toBe(plain);
  });

  it('writes one row from the files, in small chunks', async () => {
    const s = spool();
    const a = s.create(0, 5);
    fs.writeSync(a.fd, 'x\ty\n');
    fs.closeSync(a.fd);
    const b = s.create(1, 3);
    fs.writeSync(b.fd, '\\x0');
    fs.closeSync(b.fd);
    const parts: Buffer[] = [];
    for await (const p of copyRow([a.value, b.value], 2)) parts.push(p);
    expect(Buffer.concat(parts).toString()).toBe('x\\ty\\n\t\\\\x0\n');
  });
});

describe('inlineParams', () => {
  it('replaces chosen parameters by expressions and renumbers the rest, outside quotes', () => {
    const text = `UPDATE "t$1" SET "a$2" = $1, b = $2, c = E'\\'$3' || '$4''$5' WHERE id = $3 AND x = $10 AND y = $11`;
    const values = ['v1', 'BIG', 'v3', 'v4', 'v5', 'v6', 'v7', 'v8', 'v9', 'v10', 'BIG2'];
    const r = inlineParams(text, values, (v) => (v === 'BIG' ? '(SELECT v1 FROM s)' : v === 'BIG2' ? '(SELECT v2 FROM s)' : undefined));
    expect(r.text).toBe(`UPDATE "t$1" SET "a$2" = $1, b = (SELECT v1 FROM s), c = E'\\'$3' || '$4''$5' WHERE id = $2 AND x = $9 AND y = (SELECT v2 FROM s)`);
    expect(r.values).toEqual(['v1', 'v3', 'v4', 'v5', 'v6', 'v7', 'v8', 'v9', 'v10']);
  });

  it('refuses a parameter without a value', () => {
    expect(() => inlineParams('SELECT $2', ['a'], () => undefined)).toThrow(/\$2 has no value/);
  });
});

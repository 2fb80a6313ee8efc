import { describe, expect, it } from 'vitest';
import { CopyOut } from '../../activities/copy-out';

/** One protocol message: code, int32 length (itself included), body. */
function msg(code: string, body: Buffer): Buffer {
  const h = Buffer.alloc(5);
  h[0] = code.charCodeAt(0);
  h.writeUInt32BE(body.length + 4, 1);
  return Buffer.concat([h, body]);
}

/** A random stream: rows of random sizes (some larger than any chunk), notices between them. */
function stream(seed: number) {
  let x = seed;
  const rnd = (n: number) => {
    x = (x * 1103515245 + 12345) % 2147483648;
    return x % n;
  };
  const rows: Buffer[] = [];
  const parts: Buffer[] = [msg('H', Buffer.from([0, 0, 2, 0, 0, 0, 0]))];
  for (let i = 0; i < 300; i++) {
    const size = rnd(10) === 0 ? 3000 + rnd(5000) : rnd(200);
    const row = Buffer.alloc(size);
    for (let j = 0; j < size; j++) row[j] = rnd(256);
    rows.push(row);
    parts.push(msg('d', row));
    if (rnd(50) === 0) parts.push(msg('N', Buffer.from('SNOTICE\0Mhello\0\0')));
  }
  const after = Buffer.concat([msg('C', Buffer.from('COPY 300\0')), msg('Z', Buffer.from('I'))]);
  return { rows, wire: Buffer.concat([...parts, msg('c', Buffer.alloc(0)), after]), after };
}

/** Runs the parser over `wire` cut into chunks; what it pushed, handed back to pg, and counted. */
function feed(wire: Buffer, cut: (left: number) => number, framed = false) {
  const c = new CopyOut('COPY t TO STDOUT', undefined, framed);
  const pushed: Buffer[] = [];
  const handedBack: Buffer[] = [];
  let ended = false;
  let detached = 0;
  const internals = c as unknown as { _buffer: { push(b: Buffer): void }; _detach(): void; _cleanup(): void };
  internals._buffer = { push: (b: Buffer) => void handedBack.push(Buffer.from(b)) };
  internals._detach = () => void detached++;
  internals._cleanup = () => undefined;
  c.on('data', (b: Buffer) => pushed.push(Buffer.from(b)));
  c.on('end', () => (ended = true));
  let p = 0;
  while (p < wire.length && detached === 0) {
    const n = Math.max(1, Math.min(cut(wire.length - p), wire.length - p));
    c._parse(wire.subarray(p, p + n));
    p += n;
  }
  return { c, pushed, handedBack, rest: wire.subarray(p), detached, ended: () => ended };
}

describe('CopyOut: COPY data out of the protocol stream', () => {
  const cuts: Array<[string, (left: number) => number]> = [
    ['whole', (l) => l],
    ['1 byte at a time', () => 1],
    ['4 bytes at a time', () => 4],
    ['7 bytes at a time', () => 7],
    ['random chunks', (() => {
      let x = 7;
      return () => (x = (x * 48271) % 2147483647) % 9000;
    })()],
  ];
  for (const [name, cut] of cuts) {
    it(`passes exactly the CopyData contents, counts them, and hands pg the rest (${name})`, async () => {
      const { rows, wire, after } = stream(name.length);
      const r = feed(wire, cut);
      await new Promise((res) => setImmediate(res));
      expect(Buffer.concat(r.pushed).equals(Buffer.concat(rows))).toBe(true);
      expect(r.c.messages).toBe(rows.length);
      expect(r.c.bytes).toBe(rows.reduce((s, b) => s + b.length, 0));
      expect(r.detached).toBe(1);
      expect(r.ended()).toBe(true);
      // What follows CopyDone reaches pg whole: from this chunk and every later one.
      expect(Buffer.concat([...r.handedBack, r.rest]).equals(after)).toBe(true);
    });
  }

  for (const [name, cut] of cuts) {
    it(`framed: passes whole CopyData messages only, whose contents are exactly the rows (${name})`, async () => {
      const { rows, wire, after } = stream(name.length + 1);
      const r = feed(wire, cut, true);
      await new Promise((res) => setImmediate(res));
      const contents: Buffer[] = [];
      const broken: number[] = [];
      r.pushed.forEach((b, i) => {
        // Each Buffer passed on is a sequence of whole CopyData messages (a CopyFail may follow any).
        let p = 0;
        while (p < b.length) {
          const end = b.length - p >= 5 && b[p] === 0x64 ? p + 1 + b.readUInt32BE(p + 1) : Infinity;
          if (end > b.length) {
            broken.push(i);
            break;
          }
          contents.push(b.subarray(p + 5, end));
          p = end;
        }
      });
      expect(broken).toEqual([]);
      expect(Buffer.concat(contents).equals(Buffer.concat(rows))).toBe(true);
      expect(r.c.messages).toBe(rows.length);
      expect(r.detached).toBe(1);
      expect(r.ended()).toBe(true);
      expect(Buffer.concat([...r.handedBack, r.rest]).equals(after)).toBe(true);
    });
  }

  it('stops at an ErrorResponse, even one cut after its first byte, and hands it to pg unread', () => {
    const err = msg('E', Buffer.from('SERROR\0C57014\0Mcanceled\0\0'));
    const wire = Buffer.concat([msg('d', Buffer.from('a\n')), msg('d', Buffer.from('b\n')), err, msg('Z', Buffer.from('I'))]);
    for (const cut of [() => 1, () => 3, (l: number) => l]) {
      const r = feed(wire, cut);
      expect(r.detached).toBe(1);
      expect(r.c.messages).toBe(2);
      expect(Buffer.concat([...r.handedBack, r.rest]).subarray(0, err.length).equals(err)).toBe(true);
    }
  });
});

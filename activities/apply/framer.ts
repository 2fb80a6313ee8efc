/**
 * The replication socket read by us (SYNCING_WAL): `ReplicationFramer` frames the replication
 * connection's bytes and hands each XLogData message to the engine straight from the socket's chunk;
 * a change message over `messageThreshold` bytes is parsed as it arrives (`ChangeReader`), its values
 * over `valueThreshold` bytes written to the spool (spool.ts), so no large value is ever held whole.
 */
import fs from 'node:fs';
import type { PgoutputMessage } from './pgoutput';
import type { Spool } from './spool';
import { UNCHANGED_TOAST, type TupleValue } from './statements';

// ---------------------------------------------------------------------------------------------------
// Incremental pgoutput change parser
// ---------------------------------------------------------------------------------------------------

/** What the parser needs next: a fixed-size field (a Buffer comes back) or a column value (its TupleValue). */
type Need = { fixed: number } | { value: number; column: number };
type Parse<T> = Generator<Need, T, unknown>;

function* u8(): Parse<number> {
  return ((yield { fixed: 1 }) as Buffer)[0]!;
}
function* u32(): Parse<number> {
  return ((yield { fixed: 4 }) as Buffer).readUInt32BE(0);
}

function* tuple(): Parse<TupleValue[]> {
  const n = ((yield { fixed: 2 }) as Buffer).readInt16BE(0);
  const out: TupleValue[] = new Array<TupleValue>(n);
  for (let i = 0; i < n; i++) {
    const kind = yield* u8();
    if (kind === 0x6e) out[i] = null;
    else if (kind === 0x75) out[i] = UNCHANGED_TOAST;
    else if (kind === 0x74) {
      const len = ((yield { fixed: 4 }) as Buffer).readInt32BE(0);
      if (len < 0) throw new Error('pgoutput negative length');
      out[i] = (yield { value: len, column: i }) as TupleValue;
    } else throw new Error(`pgoutput column kind 0x${kind.toString(16)} in a large change`);
  }
  return out;
}

/** The rest of an INSERT/UPDATE/DELETE after its tag byte (same result as `parsePgoutput`). */
function* change(tag: number): Parse<PgoutputMessage> {
  const relationOid = yield* u32();
  let k = yield* u8();
  if (tag === 0x49) {
    if (k !== 0x4e) throw new Error('pgoutput INSERT without a new tuple');
    return { tag: 'insert', relationOid, new: yield* tuple() };
  }
  if (tag === 0x55) {
    let key: TupleValue[] | null = null;
    let old: TupleValue[] | null = null;
    if (k === 0x4b) {
      key = yield* tuple();
      k = yield* u8();
    } else if (k === 0x4f) {
      old = yield* tuple();
      k = yield* u8();
    }
    if (k !== 0x4e) throw new Error('pgoutput UPDATE without a new tuple');
    return { tag: 'update', relationOid, key, old, new: yield* tuple() };
  }
  if (k === 0x4b) return { tag: 'delete', relationOid, key: yield* tuple(), old: null };
  if (k === 0x4f) return { tag: 'delete', relationOid, key: null, old: yield* tuple() };
  throw new Error('pgoutput DELETE without an old key or row');
}

/** Feeds one large change's bytes, in any chunking, to `change()`; values over `valueThreshold` go to the spool. */
class ChangeReader {
  private readonly gen: Parse<PgoutputMessage>;
  private need: Need | undefined;
  private result: PgoutputMessage | undefined;
  private acc: Buffer[] = [];
  private accLen = 0;
  private sink: { fd: number; left: number; marker: string } | undefined;
  /** Highest spool sequence number used by this change (0: none). */
  spooled = 0;

  constructor(
    tag: number,
    private readonly spool: Spool,
    private readonly valueThreshold: number,
  ) {
    this.gen = change(tag);
    this.advance(undefined);
  }

  private advance(v: unknown): void {
    let r = this.gen.next(v);
    for (;;) {
      if (r.done) {
        this.need = undefined;
        this.result = r.value;
        return;
      }
      const need = r.value;
      // Empty values need no bytes.
      if ('value' in need && need.value === 0) {
        r = this.gen.next('');
        continue;
      }
      this.need = need;
      if ('value' in need && need.value > this.valueThreshold) {
        const { marker, fd, value } = this.spool.create(need.column, need.value);
        this.sink = { fd, left: need.value, marker };
        this.spooled = value.seq;
      }
      return;
    }
  }

  feed(b: Buffer): void {
    let p = 0;
    while (p < b.length) {
      const need = this.need;
      if (!need) throw new Error('pgoutput change longer than its message');
      const sink = this.sink;
      if (sink) {
        const n = Math.min(sink.left, b.length - p);
        let written = 0;
        while (written < n) written += fs.writeSync(sink.fd, b, p + written, n - written);
        p += n;
        sink.left -= n;
        if (sink.left === 0) {
          fs.closeSync(sink.fd);
          this.sink = undefined;
          this.advance(sink.marker);
        }
        continue;
      }
      const want = 'fixed' in need ? need.fixed : need.value;
      const n = Math.min(want - this.accLen, b.length - p);
      this.acc.push(b.subarray(p, p + n));
      this.accLen += n;
      p += n;
      if (this.accLen === want) {
        const buf = this.acc.length === 1 ? Buffer.from(this.acc[0]!) : Buffer.concat(this.acc, want);
        this.acc = [];
        this.accLen = 0;
        this.advance('fixed' in need ? buf : buf.toString('utf8'));
      }
    }
  }

  finish(): PgoutputMessage & { tag: 'insert' | 'update' | 'delete' } {
    if (!this.result) throw new Error('pgoutput message ends early');
    return this.result as PgoutputMessage & { tag: 'insert' | 'update' | 'delete' };
  }

  /** Closes a file still open (a failure mid-value). */
  abort(): void {
    if (this.sink) fs.closeSync(this.sink.fd);
    this.sink = undefined;
  }
}

// ---------------------------------------------------------------------------------------------------
// Framing
// ---------------------------------------------------------------------------------------------------

export interface FramerOptions {
  spool: Spool;
  /** CopyData messages with a payload over this many bytes carrying a change are parsed as they arrive. */
  messageThreshold: number;
  /** In those, values over this many bytes go to the spool. */
  valueThreshold: number;
  /** Every protocol message other than CopyData, byte for byte and in order: for pg's parser. */
  forward: (bytes: Buffer) => void;
  /**
   * One XLogData message: its WAL start position and its pgoutput payload, `buf[start, end)` (valid
   * during the call only: the socket's chunk).
   */
  xlog: (walStart: number, buf: Buffer, start: number, end: number) => void;
  /** A large change, parsed as it arrived; `size` is its pgoutput payload's size. */
  large: (walStart: number, change: LargeChange, size: number) => void;
  /** A primary keepalive message. */
  keepalive: (walEnd: number, replyRequested: boolean) => void;
}

/** Backend message header (type, length) + XLogData header ('w', 3 × int64) + pgoutput tag. */
const SHORT_HEADER = 5;
const XLOG_HEADER = 25;
const LONG_HEADER = SHORT_HEADER + XLOG_HEADER + 1;
const TWO_32 = 4294967296;

export type LargeChange = Extract<PgoutputMessage, { tag: 'insert' | 'update' | 'delete' }> & { spooled: number };

/**
 * Reads the replication connection's bytes, in any chunking, and hands each CopyData message of the
 * replication stream to `xlog` / `keepalive` / `large` straight from the socket's chunk: no message
 * object, no copy, no LSN string per message (pg's parser and pg-logical-replication made all three,
 * ~30 % of the apply's CPU). A message cut by a chunk boundary is gathered into one Buffer first; one
 * over `messageThreshold` carrying a change is parsed as it arrives (ChangeReader), its large values
 * spooled. Everything else (the replies to START_REPLICATION, errors, the end of the stream) goes to
 * pg's parser unchanged, so the client's query still completes or fails as before.
 *
 * LSNs are passed as numbers: exact below 2^53 bytes of WAL (8 PiB).
 */
export class ReplicationFramer {
  private readonly hdr = Buffer.alloc(LONG_HEADER);
  private hdrLen = 0;
  /** Bytes of a non-CopyData message still to pass to pg's parser. */
  private forwardLeft = 0;
  /** A CopyData payload cut by a chunk boundary, being gathered. */
  private acc: Buffer | undefined;
  private accLen = 0;
  private big: { reader: ChangeReader; left: number; size: number; walStart: number } | undefined;
  /** Large changes parsed so far (tests and diagnostics). */
  count = 0;

  /** opts.messageThreshold, but never below a change's headers (the large path reads them first). */
  private readonly threshold: number;

  constructor(private readonly opts: FramerOptions) {
    this.threshold = Math.max(opts.messageThreshold, LONG_HEADER);
  }

  /** Bytes from the socket, in any chunking. Throws on a malformed stream (the caller ends the connection). */
  push(chunk: Buffer): void {
    const end = chunk.length;
    let p = 0;
    try {
      while (p < end) {
        if (this.forwardLeft > 0) {
          const n = Math.min(this.forwardLeft, end - p);
          this.opts.forward(chunk.subarray(p, p + n));
          this.forwardLeft -= n;
          p += n;
          continue;
        }
        const acc = this.acc;
        if (acc) {
          const n = Math.min(acc.length - this.accLen, end - p);
          chunk.copy(acc, this.accLen, p, p + n);
          this.accLen += n;
          p += n;
          if (this.accLen === acc.length) {
            this.acc = undefined;
            this.copyData(acc, 0, acc.length);
          }
          continue;
        }
        const big = this.big;
        if (big) {
          const n = Math.min(big.left, end - p);
          big.reader.feed(chunk.subarray(p, p + n));
          big.left -= n;
          p += n;
          if (big.left === 0) this.finishBig(big);
          continue;
        }
        if (this.hdrLen === 0 && end - p >= SHORT_HEADER) {
          // The common case: a whole message in this chunk.
          const type = chunk[p]!;
          const total = 1 + chunk.readInt32BE(p + 1);
          if (total < SHORT_HEADER) throw new Error('replication stream: bad message length');
          if (p + total <= end && (type !== 0x64 || total - SHORT_HEADER <= this.threshold)) {
            if (type === 0x64) this.copyData(chunk, p + SHORT_HEADER, p + total);
            else this.opts.forward(chunk.subarray(p, p + total));
            p += total;
            continue;
          }
        }
        // A message header cut by the chunk's end, or a message that goes on in the next chunks.
        const want = this.hdrLen < SHORT_HEADER ? SHORT_HEADER : LONG_HEADER;
        const n = Math.min(want - this.hdrLen, end - p);
        chunk.copy(this.hdr, this.hdrLen, p, p + n);
        this.hdrLen += n;
        p += n;
        if (this.hdrLen < want) continue;
        this.headerDone();
      }
    } catch (err) {
      this.big?.reader.abort();
      this.big = undefined;
      this.acc = undefined;
      throw err;
    }
  }

  /** A message header is complete in `hdr`: SHORT_HEADER bytes, or LONG_HEADER for a large CopyData. */
  private headerDone(): void {
    const payload = this.hdr.readInt32BE(1) - 4;
    if (payload < 0) throw new Error('replication stream: bad message length');
    if (this.hdrLen === SHORT_HEADER) {
      if (this.hdr[0] === 0x64 && payload > this.threshold) return; // a large CopyData: read on
      this.hdrLen = 0;
      if (this.hdr[0] !== 0x64) {
        this.opts.forward(Buffer.from(this.hdr.subarray(0, SHORT_HEADER)));
        this.forwardLeft = payload;
      } else if (payload === 0) this.copyData(this.hdr, SHORT_HEADER, SHORT_HEADER);
      else this.gather(payload, SHORT_HEADER);
      return;
    }
    this.hdrLen = 0;
    const tag = this.hdr[LONG_HEADER - 1]!;
    if (this.hdr[SHORT_HEADER] !== 0x77 || (tag !== 0x49 && tag !== 0x55 && tag !== 0x44)) {
      this.gather(payload, LONG_HEADER);
      return;
    }
    const b: NonNullable<ReplicationFramer['big']> = {
      reader: new ChangeReader(tag, this.opts.spool, this.opts.valueThreshold),
      left: payload - XLOG_HEADER - 1,
      size: payload - XLOG_HEADER,
      walStart: this.hdr.readUInt32BE(SHORT_HEADER + 1) * TWO_32 + this.hdr.readUInt32BE(SHORT_HEADER + 5),
    };
    this.big = b;
    if (b.left === 0) this.finishBig(b);
  }

  /** Starts gathering a CopyData payload whose first `have - SHORT_HEADER` bytes are in `hdr`. */
  private gather(payload: number, have: number): void {
    const acc = Buffer.allocUnsafe(payload);
    this.hdr.copy(acc, 0, SHORT_HEADER, have);
    this.acc = acc;
    this.accLen = have - SHORT_HEADER;
    if (this.accLen === payload) {
      this.acc = undefined;
      this.copyData(acc, 0, payload);
    }
  }

  /** One CopyData payload of the replication stream, `buf[start, end)`. */
  private copyData(buf: Buffer, start: number, end: number): void {
    const kind = buf[start];
    if (kind === 0x77) {
      if (end - start < XLOG_HEADER) throw new Error('replication stream: XLogData message too short');
      this.opts.xlog(buf.readUInt32BE(start + 1) * TWO_32 + buf.readUInt32BE(start + 5), buf, start + XLOG_HEADER, end);
    } else if (kind === 0x6b) {
      if (end - start < 18) throw new Error('replication stream: keepalive message too short');
      this.opts.keepalive(buf.readUInt32BE(start + 1) * TWO_32 + buf.readUInt32BE(start + 5), buf[start + 17] !== 0);
    } else {
      throw new Error(`replication stream: unknown message 0x${(kind ?? 0).toString(16)}`);
    }
  }

  private finishBig(big: NonNullable<ReplicationFramer['big']>): void {
    this.big = undefined;
    const msg = big.reader.finish();
    this.count++;
    this.opts.large(big.walStart, { ...msg, spooled: big.reader.spooled }, big.size);
  }
}

/**
 * Large changes through the apply without holding them in memory.
 *
 * The replication protocol carries one row change as one CopyData message, and pg's protocol parser
 * (under pg-logical-replication) buffers every message whole before anyone sees it: a row with a
 * 100 MB bytea arrives as a 200 MB message (hex text), then becomes a 200 MB string, then a 200 MB
 * query parameter. Instead, `ReplicationFramer` reads the replication socket itself (see there) and
 * parses CopyData messages over `messageThreshold` bytes that carry an INSERT, UPDATE or DELETE as
 * they arrive, writing each value over `valueThreshold` bytes to a file of its own (the spool). In the
 * parsed change each spooled value is a marker string (`SPOOL_MARK`...) that `Spool.get` resolves
 * to its file. The apply writes such a change through COPY from the file into a one-row temporary table
 * and a statement that reads the values from there (stream.ts, `applySpooled`), so neither direction
 * holds a value whole: the worker's memory stays flat whatever the size of a value.
 *
 * A marker starts with NUL, which no PostgreSQL text value can contain: should one ever reach the target
 * as a value, the server refuses it instead of storing it.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { PgoutputMessage } from './stream';
import { UNCHANGED_TOAST, type TupleValue } from './statements';

export const SPOOL_MARK = '\u0000pgdts-spooled:';


export interface SpooledValue {
  /** The file holding the value's text form, exactly as the walsender sent it. */
  file: string;
  bytes: number;
  /** Position of the value's column in the relation (pgoutput order). */
  column: number;
  /** Increases with arrival: everything up to a handled change's `seq` can be released after its commit. */
  seq: number;
}

export function isSpooled(v: TupleValue | undefined): v is string {
  return typeof v === 'string' && v.charCodeAt(0) === 0 && v.startsWith(SPOOL_MARK);
}

/** Directory per apply run under `root`; directories left by a process that is gone are removed. */
export class Spool {
  readonly dir: string;
  private seq = 0;
  private readonly values = new Map<string, SpooledValue>();

  constructor(root = defaultSpoolRoot()) {
    fs.mkdirSync(root, { recursive: true, mode: 0o700 });
    assertPrivateDir(root);
    for (const name of safeReaddir(root)) {
      const pid = Number(/^(\d+)-/.exec(name)?.[1]);
      if (pid && pid !== process.pid && !alive(pid)) fs.rmSync(path.join(root, name), { recursive: true, force: true });
    }
    this.dir = fs.mkdtempSync(path.join(root, `${process.pid}-`));
  }

  /** A new value's file, opened for writing; the caller closes it. */
  create(column: number, bytes: number): { marker: string; fd: number; value: SpooledValue } {
    const seq = ++this.seq;
    const file = path.join(this.dir, String(seq));
    const fd = fs.openSync(file, 'w', 0o600);
    const value: SpooledValue = { file, bytes, column, seq };
    const marker = `${SPOOL_MARK}${seq}`;
    this.values.set(marker, value);
    return { marker, fd, value };
  }

  get(marker: string): SpooledValue | undefined {
    return this.values.get(marker);
  }

  /** The sequence number of the last value spooled so far. */
  get last(): number {
    return this.seq;
  }

  /** Deletes the files of every value up to `seq` (their changes are committed, or were skipped). */
  release(seq: number): void {
    for (const [marker, v] of this.values) {
      if (v.seq > seq) continue;
      this.values.delete(marker);
      fs.rmSync(v.file, { force: true });
    }
  }

  close(): void {
    this.values.clear();
    fs.rmSync(this.dir, { recursive: true, force: true });
  }
}

/** Per user: in a shared /tmp another user could otherwise create the folder first. */
function defaultSpoolRoot(): string {
  return path.join(os.tmpdir(), `pgdts-spool-${process.getuid?.() ?? os.userInfo().username}`);
}

/**
 * The spool root holds row values: it must be a real folder (not a link elsewhere), ours, and closed
 * to others, or another local user could read the values or redirect our writes.
 */
export function assertPrivateDir(dir: string): void {
  const st = fs.lstatSync(dir);
  const uid = process.getuid?.();
  const problem = !st.isDirectory()
    ? 'is not a directory (a symbolic link?)'
    : uid !== undefined && st.uid !== uid
      ? `belongs to uid ${st.uid}, not to us (uid ${uid})`
      : (st.mode & 0o077) !== 0
        ? `is open to other users (mode ${(st.mode & 0o777).toString(8)})`
        : undefined;
  if (problem) throw new Error(`the spool folder ${dir} ${problem}: remove it, or set TMPDIR to a private folder`);
}

function safeReaddir(dir: string): string[] {
  try {
    return fs.readdirSync(dir);
  } catch {
    return [];
  }
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

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
        const payload = this.hdr.readInt32BE(1) - 4;
        if (payload < 0) throw new Error('replication stream: bad message length');
        if (this.hdrLen === SHORT_HEADER) {
          if (this.hdr[0] === 0x64 && payload > this.threshold) continue; // a large CopyData: read on
          this.hdrLen = 0;
          if (this.hdr[0] !== 0x64) {
            this.opts.forward(Buffer.from(this.hdr.subarray(0, SHORT_HEADER)));
            this.forwardLeft = payload;
          } else if (payload === 0) this.copyData(this.hdr, SHORT_HEADER, SHORT_HEADER);
          else this.gather(payload, SHORT_HEADER);
          continue;
        }
        this.hdrLen = 0;
        const tag = this.hdr[LONG_HEADER - 1]!;
        if (this.hdr[SHORT_HEADER] !== 0x77 || (tag !== 0x49 && tag !== 0x55 && tag !== 0x44)) {
          this.gather(payload, LONG_HEADER);
          continue;
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
    } catch (err) {
      this.big?.reader.abort();
      this.big = undefined;
      this.acc = undefined;
      throw err;
    }
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

// ---------------------------------------------------------------------------------------------------
// Writing spooled values: COPY text format, one row
// ---------------------------------------------------------------------------------------------------

/** COPY text escaping of one chunk of a value (backslash, newline, carriage return, tab). */
export function copyEscape(b: Buffer): Buffer {
  let extra = 0;
  for (let i = 0; i < b.length; i++) {
    const c = b[i]!;
    if (c === 0x5c || c === 0x0a || c === 0x0d || c === 0x09) extra++;
  }
  if (extra === 0) return b;
  const out = Buffer.allocUnsafe(b.length + extra);
  let o = 0;
  for (let i = 0; i < b.length; i++) {
    const c = b[i]!;
    if (c === 0x5c) {
      out[o++] = 0x5c;
      out[o++] = 0x5c;
    } else if (c === 0x0a) {
      out[o++] = 0x5c;
      out[o++] = 0x6e;
    } else if (c === 0x0d) {
      out[o++] = 0x5c;
      out[o++] = 0x72;
    } else if (c === 0x09) {
      out[o++] = 0x5c;
      out[o++] = 0x74;
    } else out[o++] = c;
  }
  return out;
}

/** One COPY text row of the spooled values' files, read in chunks of `chunkBytes`. */
export async function* copyRow(values: readonly SpooledValue[], chunkBytes = 256 * 1024): AsyncGenerator<Buffer> {
  for (let i = 0; i < values.length; i++) {
    if (i > 0) yield Buffer.from('\t');
    for await (const chunk of fs.createReadStream(values[i]!.file, { highWaterMark: chunkBytes })) yield copyEscape(chunk as Buffer);
  }
  yield Buffer.from('\n');
}

/**
 * Rewrites a statement's parameters: those whose value is a key of `inline` become that SQL expression,
 * the others are renumbered. Parameters are `$n` outside quoted identifiers and string literals.
 */
export function inlineParams<V>(text: string, values: readonly V[], inline: (v: V) => string | undefined): { text: string; values: V[] } {
  const kept: V[] = [];
  const replacement = values.map((v) => {
    const e = inline(v);
    if (e !== undefined) return e;
    kept.push(v);
    return `$${kept.length}`;
  });
  let out = '';
  let i = 0;
  while (i < text.length) {
    const c = text[i]!;
    if (c === '"' || c === "'") {
      // Skip a quoted identifier or literal; E'' literals escape with backslashes.
      const escapes = c === "'" && /[Ee]/.test(text[i - 1] ?? '') && !/[\w$]/.test(text[i - 2] ?? '');
      let j = i + 1;
      for (;;) {
        if (j >= text.length) throw new Error('unterminated quote in a statement');
        if (escapes && text[j] === '\\') j += 2;
        else if (text[j] === c) {
          if (text[j + 1] === c) j += 2;
          else break;
        } else j++;
      }
      out += text.slice(i, j + 1);
      i = j + 1;
      continue;
    }
    if (c === '$' && /\d/.test(text[i + 1] ?? '') && !/[\w$]/.test(text[i - 1] ?? '')) {
      let j = i + 1;
      while (j < text.length && /\d/.test(text[j]!)) j++;
      const n = Number(text.slice(i + 1, j));
      const r = replacement[n - 1];
      if (r === undefined) throw new Error(`statement parameter $${n} has no value`);
      out += r;
      i = j;
      continue;
    }
    out += c;
    i++;
  }
  return { text: out, values: kept };
}

/**
 * COPY ... TO STDOUT as a Readable of the data, with less work per row than pg-copy-streams' own.
 *
 * PostgreSQL sends one CopyData message per row. pg-copy-streams (7.0) keeps every message's content as
 * its own Buffer in a list and joins them again for each push: for a 20,000,000-row table that is tens
 * of millions of short-lived objects, the largest share of the worker's CPU during a copy (profiled in
 * BENCHMARKS.md, session 4). This subclass keeps everything else of it (how it takes the connection's
 * socket from pg, gives it back, reports errors and the row count) and replaces only its per-chunk
 * parser: it walks the 5-byte message headers of each socket chunk and passes on either the CopyData
 * messages themselves (`framed`: slices of the chunk, for CopyInFramed, which copyTable uses) or their
 * contents copied into one Buffer per chunk. It also counts the CopyData messages, for progress.
 */
import type { ReadableOptions, WritableOptions } from 'node:stream';
import { from as copyFrom, to as copyTo, type CopyStreamQuery, type CopyToStreamQuery } from 'pg-copy-streams';
import { copyStreamSocketOf } from './pg-internals';

const COPY_DATA = 0x64; // d
const ERROR_RESPONSE = 0x45; // E
/** Messages that may arrive between CopyData messages and are skipped (protocol-flow.html#PROTOCOL-COPY). */
const INTERSPERSED = new Set([0x48 /* H CopyOutResponse */, 0x53 /* S ParameterStatus */, 0x4e /* N NoticeResponse */, 0x41 /* A NotificationResponse */]);

/** The parts of pg-copy-streams' CopyToStreamQuery the parser uses (copy-to.js, 7.0). */
interface CopyToInternals {
  _buffer: { push(b: Buffer): void } | null;
  _detach(): void;
  _cleanup(): void;
}

type CopyToConstructor = new (text: string, options?: ReadableOptions) => CopyToStreamQuery;
// The class itself is not exported by the package's entry point; its instances carry it.
const CopyToBase = (copyTo('') as object).constructor as CopyToConstructor;

export class CopyOut extends CopyToBase {
  /**
   * @param framed pass on CopyData messages, for a CopyInFramed that writes them to the target as they
   *   are (frontend and backend CopyData messages are the same bytes): runs of whole messages as slices
   *   of the socket's chunk, nothing copied. A message cut by the chunk's end is passed as a message of
   *   its own holding the part that arrived (and the rest likewise): every Buffer passed on is whole
   *   messages, so a CopyFail sent after any of them is read as one (a copy cancelled mid-stream ends at
   *   once, test/integration/copy-abort.test.ts). Otherwise the contents alone, copied into one Buffer
   *   per chunk.
   */
  constructor(
    text: string,
    options?: ReadableOptions,
    private readonly framed = false,
  ) {
    super(text, options);
  }

  /** CopyData messages so far (one per row; binary COPY adds one for its trailer). */
  messages = 0;
  /** Bytes of COPY data so far. */
  bytes = 0;
  /** An incomplete message header from the end of the previous chunk. */
  private head: Buffer | null = null;
  /** Bytes of the current message still to come, and whether they are COPY data. */
  private left = 0;
  private data = false;
  /** The current message ends the COPY once read. */
  private last = false;

  /** One socket chunk (called by the base class); false when the consumer wants no more for now. */
  _parse(chunk: Buffer): boolean | undefined {
    const self = this as unknown as CopyToInternals;
    const buf = this.head ? Buffer.concat([this.head, chunk]) : chunk;
    this.head = null;
    const n = buf.length;
    // Contents: copied into `out`. Framed: runs of whole CopyData messages, buf[run, ...).
    const out = this.framed ? undefined : Buffer.allocUnsafe(n);
    let o = 0;
    let run = -1;
    let drained = true;
    const endRun = (at: number) => {
      if (run >= 0 && at > run) drained = this.push(buf.subarray(run, at)) && drained;
      run = -1;
    };
    let p = 0;
    let done = false;
    while (p < n && !done) {
      if (this.left > 0) {
        const k = Math.min(this.left, n - p);
        if (this.data) {
          if (out) o += buf.copy(out, o, p, p + k);
          else drained = this.push(copyData(buf, p, k)) && drained;
        }
        p += k;
        this.left -= k;
        if (this.left === 0 && this.last) done = true;
        continue;
      }
      const code = buf[p]!;
      if (code === ERROR_RESPONSE) {
        // pg reads the error (and what follows) itself; the base class then reports it.
        self._buffer!.push(buf.subarray(p));
        self._detach();
        return undefined;
      }
      if (n - p < 5) {
        endRun(p);
        this.head = Buffer.from(buf.subarray(p));
        break;
      }
      const len = buf.readUInt32BE(p + 1) - 4;
      if (code === COPY_DATA) {
        this.messages++;
        this.bytes += len;
        if (p + 5 + len <= n) {
          if (out) o += buf.copy(out, o, p + 5, p + 5 + len);
          else if (run < 0) run = p;
          p += 5 + len;
        } else {
          endRun(p);
          p += 5;
          this.data = true;
          this.left = len;
        }
        continue;
      }
      endRun(p);
      p += 5;
      // CopyDone, or anything else: the COPY ends after this message (as in the base class).
      this.data = false;
      this.left = len;
      this.last = !INTERSPERSED.has(code);
      if (len === 0 && this.last) done = true;
    }
    endRun(p);
    if (out && o > 0) drained = this.push(out.subarray(0, o)) && drained;
    if (done) {
      // What follows (CommandComplete, ReadyForQuery) is pg's to read.
      if (p < n) self._buffer!.push(buf.subarray(p));
      self._detach();
      this.push(null);
      self._cleanup();
    }
    return drained;
  }
}

/** A CopyData message holding buf[p, p + k). */
function copyData(buf: Buffer, p: number, k: number): Buffer {
  const m = Buffer.allocUnsafe(5 + k);
  m[0] = COPY_DATA;
  m.writeUInt32BE(k + 4, 1);
  buf.copy(m, 5, p, p + k);
  return m;
}

type CopyFromConstructor = new (text: string, options?: WritableOptions) => CopyStreamQuery;
const CopyFromBase = (copyFrom('') as object).constructor as CopyFromConstructor;

/**
 * COPY ... FROM STDIN written whole CopyData messages (a framed CopyOut's output), which it sends as
 * they are instead of wrapping each Buffer in a message of its own.
 */
export class CopyInFramed extends CopyFromBase {
  flushChunk(chunk: Buffer): boolean {
    return copyStreamSocketOf(this).write(chunk);
  }
}

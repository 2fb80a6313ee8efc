/**
 * Large changes through the apply without holding them in memory.
 *
 * The replication protocol carries one row change as one CopyData message, and pg's protocol parser
 * (under pg-logical-replication) buffers every message whole before anyone sees it: a row with a
 * 100 MB bytea arrives as a 200 MB message (hex text), then becomes a 200 MB string, then a 200 MB
 * query parameter. Instead, `ReplicationFramer` (framer.ts) reads the replication socket itself and
 * parses CopyData messages over `messageThreshold` bytes that carry an INSERT, UPDATE or DELETE as
 * they arrive, writing each value over `valueThreshold` bytes to a file of its own (the spool). In the
 * parsed change each spooled value is a marker string (`SPOOL_MARK`...) that `Spool.get` resolves
 * to its file. The apply writes such a change through COPY from the file into a one-row temporary table
 * and a statement that reads the values from there (writer.ts, `applySpooled`), so neither direction
 * holds a value whole: the worker's memory stays flat whatever the size of a value.
 *
 * A marker starts with NUL, which no PostgreSQL text value can contain: should one ever reach the target
 * as a value, the server refuses it instead of storing it.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { TupleValue } from './statements';

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

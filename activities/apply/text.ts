/**
 * UTF-8 between column values (strings) and the bytes of the replication stream and of the statements
 * the apply sends: Buffer's own codec, called without `toString`/`write`/`byteLength`'s argument
 * handling (which cost as much as the coding itself for the short values most columns hold: integers,
 * codes, timestamps), and short ASCII values done in JavaScript, about half the cost of a call into
 * the codec. Results are byte for byte those of `toString('utf8')` / `Buffer.from(s, 'utf8')`.
 */

interface Codec {
  utf8Slice(start: number, end: number): string;
  utf8Write(s: string, offset: number, length: number): number;
}
// Node's Buffer has both on every version we support; the public calls where it does not.
const proto = Buffer.prototype as unknown as Partial<Codec>;
const HAS_CODEC = typeof proto.utf8Slice === 'function' && typeof proto.utf8Write === 'function';

/** `b.toString('utf8', start, end)`. */
export const decodeUtf8: (b: Buffer, start: number, end: number) => string = HAS_CODEC
  ? (b, start, end) => (b as unknown as Codec).utf8Slice(start, end)
  : (b, start, end) => b.toString('utf8', start, end);

/** Values up to this many bytes (decoding) or characters (encoding) take the JavaScript path. */
const DECODE_SHORT = 8;
const ENCODE_SHORT = 16;

/** The text of `b[p, p + n)`. */
export function decodeText(b: Buffer, p: number, n: number): string {
  return n <= DECODE_SHORT ? shortText(b, p, n) : decodeUtf8(b, p, p + n);
}

function shortText(b: Buffer, p: number, n: number): string {
  let high = 0;
  for (let i = p; i < p + n; i++) high |= b[i]!;
  if (high >= 0x80) return decodeUtf8(b, p, p + n);
  const c = String.fromCharCode;
  switch (n) {
    case 0:
      return '';
    case 1:
      return c(b[p]!);
    case 2:
      return c(b[p]!, b[p + 1]!);
    case 3:
      return c(b[p]!, b[p + 1]!, b[p + 2]!);
    case 4:
      return c(b[p]!, b[p + 1]!, b[p + 2]!, b[p + 3]!);
    case 5:
      return c(b[p]!, b[p + 1]!, b[p + 2]!, b[p + 3]!, b[p + 4]!);
    case 6:
      return c(b[p]!, b[p + 1]!, b[p + 2]!, b[p + 3]!, b[p + 4]!, b[p + 5]!);
    case 7:
      return c(b[p]!, b[p + 1]!, b[p + 2]!, b[p + 3]!, b[p + 4]!, b[p + 5]!, b[p + 6]!);
    default:
      return c(b[p]!, b[p + 1]!, b[p + 2]!, b[p + 3]!, b[p + 4]!, b[p + 5]!, b[p + 6]!, b[p + 7]!);
  }
}

/** `Buffer.byteLength(s, 'utf8')`. */
export function utf8Length(s: string): number {
  const n = s.length;
  if (n <= ENCODE_SHORT) {
    let high = 0;
    for (let i = 0; i < n; i++) high |= s.charCodeAt(i);
    if (high < 0x80) return n;
  }
  return Buffer.byteLength(s, 'utf8');
}

/**
 * Writes `s` at `b[o]` and returns the bytes written; `room` bytes are free there (at least
 * `utf8Length(s)`). Like `b.write(s, o, 'utf8')`.
 */
export function encodeText(b: Buffer, s: string, o: number, room = b.length - o): number {
  const n = s.length;
  if (n <= ENCODE_SHORT && n <= room) {
    let i = 0;
    for (; i < n; i++) {
      const c = s.charCodeAt(i);
      if (c >= 0x80) break;
      b[o + i] = c;
    }
    if (i === n) return n;
  }
  return HAS_CODEC ? (b as unknown as Codec).utf8Write(s, o, room) : b.write(s, o, room, 'utf8');
}

import { describe, expect, it } from 'vitest';
import { decodeText, encodeText, utf8Length } from '../../activities/apply/text';

// Strings of every length around the short paths' limits, ASCII (control characters and DEL included)
// and not: 2-, 3- and 4-byte characters and a lone surrogate at the start, middle or end.
function samples(): string[] {
  const out: string[] = [];
  for (let n = 0; n <= 20; n++) {
    const ascii = Array.from({ length: n }, (_, i) => String.fromCharCode(i % 4 === 0 ? 0x7f : i % 4 === 1 ? 0x09 : i % 4 === 2 ? 0x00 : 0x41 + i)).join('');
    out.push(ascii);
    if (n === 0) continue;
    for (const at of [0, n >> 1, n - 1]) for (const odd of ['é', '€', '🐘', '\ud800']) out.push(ascii.slice(0, at) + odd + ascii.slice(at + 1));
  }
  return out;
}

describe('UTF-8 text of column values', () => {
  it('measures and writes every string as Buffer does', () => {
    for (const s of samples()) {
      const want = Buffer.from(s, 'utf8');
      expect(utf8Length(s)).toBe(want.length);
      const b = Buffer.alloc(want.length + 6, 0xaa);
      expect(encodeText(b, s, 3, want.length)).toBe(want.length);
      expect(b.subarray(3, 3 + want.length).equals(want), JSON.stringify(s)).toBe(true);
      expect(b[2]).toBe(0xaa);
      expect(b[3 + want.length]).toBe(0xaa);
      // Room left to the end of the buffer (how copyChunks calls it).
      const c = Buffer.alloc(want.length * 3 + 4, 0xaa);
      expect(encodeText(c, s, 1)).toBe(want.length);
      expect(c.subarray(1, 1 + want.length).equals(want)).toBe(true);
    }
  });

  it('reads every byte string as toString does, invalid UTF-8 included', () => {
    const inputs = samples().map((s) => Buffer.from(s, 'utf8'));
    for (let n = 1; n <= 12; n++) inputs.push(Buffer.from(Array.from({ length: n }, (_, i) => (i === n - 1 ? 0xe9 : 0x31)))); // a lone Latin-1 byte
    inputs.push(Buffer.from([0xc3])); // a cut 2-byte character
    for (const v of inputs) {
      const b = Buffer.concat([Buffer.from('xy'), v, Buffer.from('z')]);
      expect(decodeText(b, 2, v.length), v.toString('hex')).toBe(v.toString('utf8'));
    }
  });
});

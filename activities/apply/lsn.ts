/**
 * WAL positions (SYNCING_WAL): PostgreSQL's "16/B374D848" spelling and the 64-bit integers the apply
 * compares. LSNs compare as numbers, never as strings.
 */

const LSN_RE = /^([0-9A-Fa-f]{1,8})\/([0-9A-Fa-f]{1,8})$/;

/** "16/B374D848" -> 0x16B374D848n. LSNs compare as 64-bit integers, never as strings. */
export function lsnToBigInt(lsn: string): bigint {
  const m = LSN_RE.exec(lsn.trim());
  if (!m) throw new Error(`invalid LSN ${JSON.stringify(lsn)}`);
  return (BigInt(`0x${m[1]}`) << 32n) | BigInt(`0x${m[2]}`);
}

/** 0x16B374D848n -> "16/B374D848", PostgreSQL's own spelling. */
export function bigIntToLsn(n: bigint): string {
  if (n < 0n || n > 0xffffffffffffffffn) throw new Error(`LSN out of range: ${n}`);
  return `${(n >> 32n).toString(16).toUpperCase()}/${(n & 0xffffffffn).toString(16).toUpperCase()}`;
}

export function compareLsn(a: string, b: string): -1 | 0 | 1 {
  const x = lsnToBigInt(a);
  const y = lsnToBigInt(b);
  return x < y ? -1 : x > y ? 1 : 0;
}


export const maxBig = (a: bigint, b: bigint): bigint => (a > b ? a : b);

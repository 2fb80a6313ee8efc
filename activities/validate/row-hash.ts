/**
 * The 64-bit hash of a row that chunk checksums sum (sql.ts builds the queries around it): of the
 * row's text form, or of its columns' own hashes when every column's type has one that tells its
 * values apart (typedHashOf). Pure.
 */
import { ident } from '../sql';

/** A compared column of the table aliased `t`. */
export const col = (c: string): string => `t.${ident(c)}`;

/**
 * 64-bit row hash used by chunk checksums.
 * - `hashtext`: hashtextextended() over the row text (fast, built in since PostgreSQL 11); its result
 *   depends on the server's byte order, so it is only used when both sides agree on a probe.
 * - `md5`: the first 64 bits of md5(), identical everywhere; about twice as slow.
 */
export type RowHash = 'hashtext' | 'md5';

/** `ROW(t.c1, t.c2)::text`: the row's text form over the compared columns (`utf8`: as UTF-8 bytes). */
export function rowText(columns: readonly string[], utf8 = false): string {
  const text = `ROW(${columns.map(col).join(', ')})::text`;
  return utf8 ? `convert_to(${text}, 'UTF8')` : text;
}

/**
 * A column type whose extended hash function hashes exactly what it stores, so that two values hash
 * alike only if they are identical (as the row's text would tell), and the function exists on every
 * supported server (PostgreSQL 11+): integers, oid, uuid; text and varchar hashed as bytes (COLLATE
 * "C": a nondeterministic collation would hash equal-but-different strings alike); char(n), whose
 * values are all padded to n (its hash ignores trailing blanks: unbounded bpchar is left out). Any
 * other type (domains, arrays, numeric, timestamps...) keeps the row's text. Returns the SQL of the
 * column's 64-bit hash with seed `seed`, or undefined.
 */
export function typedHashOf(type: string): ((c: string, seed: number) => string) | undefined {
  if (type === 'smallint') return (c, seed) => `hashint2extended(${c}, ${seed})`;
  if (type === 'integer') return (c, seed) => `hashint4extended(${c}, ${seed})`;
  // hashint8extended folds the high half into the low one (it must equal the int4 hash of small
  // values): 1 and 4294967296 hash alike. The high half goes in again, hashed with that as the seed.
  if (type === 'bigint') return (c, seed) => `hashint4extended((${c} >> 32)::int4, hashint8extended(${c}, ${seed}))`;
  if (type === 'oid') return (c, seed) => `hashoidextended(${c}, ${seed})`;
  if (type === 'uuid') return (c, seed) => `uuid_hash_extended(${c}, ${seed})`;
  if (type === 'text' || /^character varying(\(\d+\))?$/.test(type)) return (c, seed) => `hashtextextended(${c}::text COLLATE "C", ${seed})`;
  if (/^character\(\d+\)$/.test(type)) return (c, seed) => `hashbpcharextended(${c} COLLATE "C", ${seed})`;
  return undefined;
}

/**
 * The 64-bit row hash; across encodings always md5 of the UTF-8 bytes (hashtextextended takes text).
 * With `typed` (the columns' types, TableShape.typedHash) each column's own hash, seeded with its
 * position (a value moved to another column hashes differently), combined by XOR, a NULL column
 * counting as its seed; the XOR is then mixed (as the seed of a hash of 0, mixed at all 64 bits):
 * chunks sum the row hashes, and a sum of plain XORs would miss a value swapped between two rows
 * whenever no bit differs in both the value and the rest of the row (about once in 10^8).
 */
export function rowHash64(columns: readonly string[], hash: RowHash, utf8 = false, typed?: readonly string[]): string {
  if (hash === 'hashtext' && !utf8 && typed && typed.length === columns.length && columns.length > 0) {
    return `hashint4extended(0, ${columns.map((c, i) => `coalesce(${typedHashOf(typed[i]!)!(col(c), i + 1)}, ${i + 1})`).join(' # ')})`;
  }
  return hash === 'hashtext' && !utf8
    ? `hashtextextended(${rowText(columns)} COLLATE "C", 0)`
    : `('x' || left(md5(${rowText(columns, utf8)}), 16))::bit(64)::bigint`;
}

/**
 * Set-based apply (pure, no I/O): the changes of many consecutive source transactions to one keyed
 * table, folded into their net effect per row key, then written as a few statements per table
 * (DELETE ... USING, UPDATE ... FROM, INSERT ... SELECT over unnest()ed text arrays).
 *
 * Why this is exact: the apply session runs with session_replication_role = replica, so no trigger,
 * rule or foreign-key check fires, and the changes of one table do not interact with another's; the
 * whole group commits as one target transaction, so nobody sees an intermediate state. Within a table
 * the net effect per key is what the source's sequence of changes leaves behind. What reordering can
 * break is a constraint checked row by row (a secondary unique index whose values swap between rows
 * inside the group): that surfaces as an error, and the engine then replays the group change by change
 * in source order (writer.ts).
 *
 * Every statement text depends only on the table, the kind and the set of columns written, never on
 * the number of rows: values travel as one text[] per column, so the engine prepares each statement
 * once per session. Each value is cast from its text form with the target column's own input function
 * (`castTypes`), as COPY and untyped parameters do.
 */
import { ident, qname } from '../sql';
import { encodeText, utf8Length } from './text';
import { UNCHANGED_TOAST, insertStatement, type ApplyRelation, type Tuple, type TupleValue } from './statements';

/** A target table the set-based path can write: it has a key that names one row. */
export interface KeyedRelation {
  rel: ApplyRelation;
  /** Indexes into rel.columns of the key. */
  key: readonly number[];
  /** Per column: the type to cast its text form to (with typmod; never a bare `bit` or `character`). */
  castTypes: readonly string[];
  /** Per column: ` COLLATE x` when the column's collation is not its type's default, else ''. */
  collations: readonly string[];
  /**
   * No unique index or exclusion constraint of the target can see the rows' order: every one is on
   * plain columns that include the whole key (so it is as unique as the key itself). Then the net
   * effect written in any order can never fail where the source's order would not.
   */
  orderFree: boolean;
}

/** A unique index or exclusion constraint of the target (or of one of its partitions). */
export interface TargetUnique {
  /** Its columns (null: none, only expressions). */
  cols: readonly string[] | null;
  /** Plain columns only: no expression, no predicate, not an exclusion constraint. */
  plain: boolean;
}

/**
 * The key for the set-based path, or undefined when the table must be applied change by change:
 * key identity (primary key / USING INDEX) or FULL with a target primary key; GENERATED ALWAYS
 * identity columns only in the key (they can never be SET); cast types known.
 */
export function keyedRelation(
  rel: ApplyRelation,
  castTypes: readonly string[] | undefined,
  collations: readonly string[] | undefined,
  uniques?: readonly TargetUnique[],
): KeyedRelation | undefined {
  if (!castTypes || castTypes.length !== rel.columns.length) return undefined;
  const keyNames = rel.replicaIdentity === 'full' ? (rel.targetPrimaryKey ?? []) : rel.replicaIdentity === 'nothing' ? [] : rel.keyColumns;
  if (keyNames.length === 0) return undefined;
  const key = keyNames.map((k) => rel.columns.indexOf(k));
  if (key.some((i) => i < 0)) return undefined;
  if ((rel.identityAlways ?? []).some((c) => !keyNames.includes(c))) return undefined;
  const orderFree = uniques !== undefined && uniques.every((u) => u.plain && keyNames.every((k) => u.cols?.includes(k)));
  return { rel, key, castTypes, collations: collations ?? rel.columns.map(() => ''), orderFree };
}

export interface KeyedUpdate {
  oldKey?: Tuple | null;
  old?: Tuple | null;
  new: Tuple;
}

export interface KeyedDelete {
  oldKey?: Tuple | null;
  old?: Tuple | null;
}

interface Entry {
  /** The row existed on the target before this batch's first change to it. */
  existed: boolean;
  /** Its final version (UNCHANGED_TOAST where never sent), or null: deleted. */
  row: TupleValue[] | null;
  /** The key's values. */
  key: string[];
}

export interface BatchStatement {
  op: 'INSERT' | 'UPDATE' | 'DELETE';
  /** Prepare under a name: the text does not depend on the values or their number. */
  prepare: boolean;
  text: string;
  /** Plain parameters, or text[] arrays in binary form (Buffers). */
  values: (string | Buffer | null)[];
  /** Rows the statement must affect. */
  expect: number;
  /** `text` is a COPY ... FROM STDIN and these are its rows (see copyInsertSql). */
  copyRows?: readonly (readonly TupleValue[])[];
}

export interface BatchLimits {
  /** Most rows in one statement. */
  maxRows: number;
  /** Most bytes of values in one statement. */
  maxBytes: number;
  /** A row with a value at least this long gets a statement of its own with plain parameters. */
  bigValue: number;
  /** Inserts go as one COPY (copyInsertSql) instead of INSERT statements. */
  copy?: boolean;
}

const valueBytes = (row: readonly TupleValue[]): number => {
  let n = 0;
  for (const v of row) if (typeof v === 'string') n += v.length;
  return n;
};

/**
 * The pending changes of one keyed table: at most one entry per key, in first-seen order. Each method
 * returns false (and changes nothing) when the change cannot be folded: the caller then writes what
 * is pending and applies that change on its own, in order.
 */
export class KeyedChanges {
  private entries = new Map<string, Entry>();
  /** Bytes of values held. */
  bytes = 0;

  constructor(readonly k: KeyedRelation) {}

  get size(): number {
    return this.entries.size;
  }

  private keyOf(t: Tuple | null | undefined): string | undefined {
    if (!t || t.length !== this.k.rel.columns.length) return undefined;
    let s = '';
    for (let j = 0; j < this.k.key.length; j++) {
      const v = t[this.k.key[j]!];
      if (typeof v !== 'string') return undefined; // NULL or not sent: not a usable key
      s = j === 0 ? v : `${s}\u0000${v}`; // PostgreSQL text never contains NUL
    }
    return s;
  }

  private keyValues(key: string): string[] {
    return this.k.key.length === 1 ? [key] : key.split('\u0000');
  }

  private oldSide(c: KeyedDelete, fallback?: Tuple): Tuple | null | undefined {
    return this.k.rel.replicaIdentity === 'full' ? c.old : (c.old ?? c.oldKey ?? fallback);
  }

  private set(key: string, e: Entry): void {
    const prev = this.entries.get(key);
    if (prev?.row) this.bytes -= valueBytes(prev.row);
    if (e.row) this.bytes += valueBytes(e.row);
    this.entries.set(key, e);
  }

  private drop(key: string): void {
    const prev = this.entries.get(key);
    if (prev?.row) this.bytes -= valueBytes(prev.row);
    this.entries.delete(key);
  }

  insert(row: Tuple): boolean {
    const key = this.keyOf(row);
    if (key === undefined || row.includes(UNCHANGED_TOAST)) return false;
    const e = this.entries.get(key);
    if (e && e.row !== null) return false; // the key is taken: let the target say so
    this.set(key, { existed: e?.existed ?? false, row: row as TupleValue[], key: e?.key ?? this.keyValues(key) });
    return true;
  }

  update(c: KeyedUpdate): boolean {
    const newKey = this.keyOf(c.new);
    const oldKey = this.keyOf(this.oldSide(c, c.new));
    if (newKey === undefined || oldKey === undefined) return false;
    const e = this.entries.get(oldKey);
    if (e && e.row === null) return false; // updating a row deleted earlier: let the target say so
    // Rows are never changed in place (merge copies): the decoded tuple itself can be held.
    const merged = e?.row ? merge(e.row, c.new) : (c.new as TupleValue[]);
    if (newKey === oldKey) {
      this.set(oldKey, { existed: e?.existed ?? true, row: merged, key: e?.key ?? this.keyValues(oldKey) });
      return true;
    }
    // The key changed: the old key's row goes, the new key's arrives (whole: nothing left unsent).
    if (merged.includes(UNCHANGED_TOAST)) return false;
    const target = this.entries.get(newKey);
    if (target && target.row !== null) return false;
    if (!e || e.existed) this.set(oldKey, { existed: true, row: null, key: this.keyValues(oldKey) });
    else this.drop(oldKey);
    this.set(newKey, { existed: target?.existed ?? false, row: merged, key: this.keyValues(newKey) });
    return true;
  }

  delete(c: KeyedDelete): boolean {
    const key = this.keyOf(this.oldSide(c));
    if (key === undefined) return false;
    const e = this.entries.get(key);
    if (e && e.row === null) return false;
    if (!e || e.existed) this.set(key, { existed: true, row: null, key: this.keyValues(key) });
    else this.drop(key);
    return true;
  }

  /**
   * The statements that write the net effect (deletes, then updates, then inserts); empties the batch.
   * Built one at a time as they are taken, so only one statement's parameters exist at once.
   */
  *drain(limits: BatchLimits): Generator<BatchStatement, void, undefined> {
    const deletes: string[][] = [];
    const updates = new Map<string, { set: number[]; rows: TupleValue[][] }>();
    const inserts: TupleValue[][] = [];
    const keySet = new Set(this.k.key);
    for (const e of this.entries.values()) {
      if (e.row === null) {
        if (e.existed) deletes.push(e.key);
        continue;
      }
      if (!e.existed) {
        inserts.push(e.row);
        continue;
      }
      const set: number[] = [];
      for (let i = 0; i < e.row.length; i++) if (!keySet.has(i) && e.row[i] !== UNCHANGED_TOAST) set.push(i);
      if (set.length === 0) continue; // nothing but the key was sent: nothing to write
      const mask = set.join(',');
      let u = updates.get(mask);
      if (!u) updates.set(mask, (u = { set, rows: [] }));
      u.rows.push(e.row);
    }
    this.entries = new Map();
    this.bytes = 0;
    for (let i = 0; i < deletes.length; i += limits.maxRows) yield deleteSql(this.k, deletes.slice(i, i + limits.maxRows));
    for (const u of updates.values()) {
      const big = u.rows.filter((r) => hasBig(r, limits.bigValue));
      yield* chunkRows(big.length ? u.rows.filter((r) => !hasBig(r, limits.bigValue)) : u.rows, limits, (part) => updateSql(this.k, u.set, part));
      for (const r of big) yield directUpdateSql(this.k, u.set, r);
    }
    if (limits.copy) {
      if (inserts.length) yield copyInsertSql(this.k, inserts);
      return;
    }
    const big = inserts.filter((r) => hasBig(r, limits.bigValue));
    yield* chunkRows(big.length ? inserts.filter((r) => !hasBig(r, limits.bigValue)) : inserts, limits, (part) => insertSql(this.k, part));
    for (const r of big) {
      const s = insertStatement(this.k.rel, [r]);
      yield { op: 'INSERT', prepare: false, text: s.text, values: s.values, expect: 1 };
    }
  }
}

function merge(base: readonly TupleValue[], next: Tuple): TupleValue[] {
  const out = base.slice();
  for (let i = 0; i < next.length; i++) if (next[i] !== UNCHANGED_TOAST) out[i] = next[i]!;
  return out;
}

export function hasBig(row: readonly TupleValue[], big: number): boolean {
  for (const v of row) if (typeof v === 'string' && v.length >= big) return true;
  return false;
}

function* chunkRows(rows: TupleValue[][], limits: BatchLimits, build: (part: TupleValue[][]) => BatchStatement): Generator<BatchStatement, void, undefined> {
  let part: TupleValue[][] = [];
  let bytes = 0;
  for (const r of rows) {
    const b = valueBytes(r);
    if (part.length > 0 && (part.length >= limits.maxRows || bytes + b > limits.maxBytes)) {
      yield build(part);
      part = [];
      bytes = 0;
    }
    part.push(r);
    bytes += b;
  }
  if (part.length) yield build(part);
}

/** A PostgreSQL array literal of text elements: every element quoted, `\` and `"` escaped. */
export function textArray(values: readonly (string | null)[]): string {
  const parts = new Array<string>(values.length);
  for (let i = 0; i < values.length; i++) {
    const v = values[i];
    if (v === null || v === undefined) parts[i] = 'NULL';
    else if (v.includes('\\') || v.includes('"')) parts[i] = `"${v.replace(/[\\"]/g, '\\$&')}"`;
    else parts[i] = `"${v}"`;
  }
  return `{${parts.join(',')}}`;
}

const TEXT_OID = 25;

/**
 * A text[] parameter in PostgreSQL's binary array format (array_recv): no quoting or escaping on
 * either side, each element's bytes copied once. pg sends Buffer parameters in binary.
 */
export function textArrayBinary(values: readonly (string | null)[]): Buffer {
  const n = values.length;
  if (n === 0) {
    const b = Buffer.alloc(12);
    b.writeUInt32BE(TEXT_OID, 8);
    return b;
  }
  const lens = new Int32Array(n);
  let size = 20;
  let hasNull = 0;
  for (let i = 0; i < n; i++) {
    const v = values[i];
    if (v === null || v === undefined) {
      lens[i] = -1;
      hasNull = 1;
      size += 4;
    } else {
      const l = utf8Length(v);
      lens[i] = l;
      size += 4 + l;
    }
  }
  const b = Buffer.allocUnsafe(size);
  b.writeInt32BE(1, 0); // dimensions
  b.writeInt32BE(hasNull, 4);
  b.writeUInt32BE(TEXT_OID, 8);
  b.writeInt32BE(n, 12); // elements
  b.writeInt32BE(1, 16); // lower bound
  let o = 20;
  for (let i = 0; i < n; i++) {
    const l = lens[i]!;
    b.writeInt32BE(l, o);
    o += 4;
    if (l > 0) o += encodeText(b, values[i]!, o, l);
  }
  return b;
}

/** `ROWS FROM (unnest($1::text[]), ...) AS v(a0, ...)` over `n` columns named `prefix`0... */
function unnestFrom(names: readonly string[], first = 1): string {
  return `ROWS FROM (${names.map((_, j) => `unnest($${first + j}::text[])`).join(', ')}) AS v(${names.join(', ')})`;
}

function keyMatch(k: KeyedRelation, names: readonly string[]): string {
  return k.key
    .map((c, j) => `t.${ident(k.rel.columns[c]!)} = v.${names[j]}::${k.castTypes[c]}${k.collations[c] ?? ''}`)
    .join(' AND ');
}

/** `DELETE FROM t USING unnest(keys) WHERE t.key = v.key`: every key names one existing row. */
export function deleteSql(k: KeyedRelation, keys: readonly (readonly string[])[]): BatchStatement {
  const names = k.key.map((_, j) => `k${j}`);
  return {
    op: 'DELETE',
    prepare: true,
    text: `DELETE FROM ${qname(k.rel.target)} AS t USING ${unnestFrom(names)} WHERE ${keyMatch(k, names)}`,
    values: k.key.map((_, j) => textArrayBinary(keys.map((key) => key[j]!))),
    expect: keys.length,
  };
}

/** `UPDATE t SET c = v.c::type ... FROM unnest(...) WHERE t.key = v.key`, for rows that send the same columns. */
export function updateSql(k: KeyedRelation, set: readonly number[], rows: readonly (readonly TupleValue[])[]): BatchStatement {
  const keyNames = k.key.map((_, j) => `k${j}`);
  const setNames = set.map((_, j) => `s${j}`);
  const sets = set.map((c, j) => `${ident(k.rel.columns[c]!)} = v.${setNames[j]}::${k.castTypes[c]}`);
  const cols = [...k.key, ...set];
  return {
    op: 'UPDATE',
    prepare: true,
    text: `UPDATE ${qname(k.rel.target)} AS t SET ${sets.join(', ')} FROM ${unnestFrom([...keyNames, ...setNames])} WHERE ${keyMatch(k, keyNames)}`,
    values: cols.map((c) => textArrayBinary(rows.map((r) => r[c] as string | null))),
    expect: rows.length,
  };
}

/** `INSERT INTO t (...) OVERRIDING SYSTEM VALUE SELECT v.c::type ... FROM unnest(...)`. */
export function insertSql(k: Pick<KeyedRelation, 'rel' | 'castTypes'>, rows: readonly (readonly TupleValue[])[]): BatchStatement {
  const names = k.rel.columns.map((_, j) => `c${j}`);
  return {
    op: 'INSERT',
    prepare: true,
    text:
      `INSERT INTO ${qname(k.rel.target)} (${k.rel.columns.map(ident).join(', ')}) OVERRIDING SYSTEM VALUE ` +
      `SELECT ${names.map((n, j) => `v.${n}::${k.castTypes[j]}`).join(', ')} FROM ${unnestFrom(names)}`,
    values: k.rel.columns.map((_, j) => textArrayBinary(rows.map((r) => r[j] as string | null))),
    expect: rows.length,
  };
}

/**
 * `COPY t (...) FROM STDIN` of the rows, in text format: what `insertSql` writes, for less work on both
 * sides. The target parses each value with its column's input function, as the casts do; COPY writes
 * identity columns' given values (like OVERRIDING SYSTEM VALUE), routes rows into partitions, and under
 * session_replication_role = replica fires no trigger, as INSERT does not. Rows stream out in chunks
 * (copyChunks), so no statement-sized buffer is built; large values included.
 */
export function copyInsertSql(k: Pick<KeyedRelation, 'rel'>, rows: readonly (readonly TupleValue[])[]): BatchStatement {
  return { op: 'INSERT', prepare: false, text: `COPY ${qname(k.rel.target)} (${k.rel.columns.map(ident).join(', ')}) FROM STDIN`, values: [], expect: rows.length, copyRows: rows };
}

const COPY_SPECIAL_ALL = /[\\\t\n\r]/g;
const COPY_ESCAPES: Record<string, string> = { '\\': '\\\\', '\t': '\\t', '\n': '\\n', '\r': '\\r' };

/** One value in COPY's text format: NULL as \N; backslash, tab, newline and CR escaped. */
export function copyField(v: TupleValue): string {
  if (v === null) return '\\N';
  if (typeof v !== 'string') throw new Error('an unchanged TOASTed value cannot be inserted');
  // Four indexOf scans: several times faster than one test of a character-class regex.
  if (v.indexOf('\\') < 0 && v.indexOf('\t') < 0 && v.indexOf('\n') < 0 && v.indexOf('\r') < 0) return v;
  return v.replace(COPY_SPECIAL_ALL, (c) => COPY_ESCAPES[c]!);
}

/**
 * The rows as COPY text-format data, written straight into Buffers of `chunkBytes` (a value that does
 * not fit gets a Buffer of its own size): no intermediate strings.
 */
export function* copyChunks(rows: readonly (readonly TupleValue[])[], chunkBytes = 64 * 1024): Generator<Buffer, void, undefined> {
  let buf = Buffer.allocUnsafe(chunkBytes);
  let o = 0;
  const room = (n: number): Buffer | undefined => {
    if (o + n <= buf.length) return undefined;
    const full = o > 0 ? buf.subarray(0, o) : undefined;
    buf = Buffer.allocUnsafe(Math.max(chunkBytes, n));
    o = 0;
    return full;
  };
  for (const r of rows) {
    for (let j = 0; j < r.length; j++) {
      const f = copyField(r[j]!);
      // At most 3 bytes of UTF-8 per UTF-16 unit; plus the tab before it and the row's newline.
      const full = room(f.length * 3 + 2);
      if (full) yield full;
      if (j > 0) buf[o++] = 0x09;
      o += encodeText(buf, f, o);
    }
    const full = room(1);
    if (full) yield full;
    buf[o++] = 0x0a;
  }
  if (o > 0) yield buf.subarray(0, o);
}

/** One row with a large value: plain untyped parameters, no array literal copy of the value. */
export function directUpdateSql(k: KeyedRelation, set: readonly number[], row: readonly TupleValue[]): BatchStatement {
  const values: (string | null)[] = [];
  const p = (v: TupleValue | undefined) => {
    values.push(v as string | null);
    return `$${values.length}`;
  };
  const sets = set.map((c) => `${ident(k.rel.columns[c]!)} = ${p(row[c])}`);
  const where = k.key.map((c) => `${ident(k.rel.columns[c]!)} = ${p(row[c])}`);
  return { op: 'UPDATE', prepare: false, text: `UPDATE ${qname(k.rel.target)} SET ${sets.join(', ')} WHERE ${where.join(' AND ')}`, values, expect: 1 };
}

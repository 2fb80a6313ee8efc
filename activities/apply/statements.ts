/**
 * Pure SQL generation for the WAL apply: one decoded pgoutput change in, one `{ text, values }` out.
 * No I/O, so every statement is unit-tested on its exact text (test/unit/apply-statements.test.ts).
 *
 * Values stay in PostgreSQL's text form end to end and travel as untyped parameters: the target infers
 * each parameter's type from the column it is assigned to or compared with and runs that type's input
 * function, exactly as COPY does. A `$1::text` would be wrong for an int column; a cast to the column's
 * formatted type would be wrong for `bit`/`character` without a length (they mean length 1).
 */
import { ident, qname } from '../sql';
import type { QualifiedName } from '../spec';

/**
 * pgoutput's 'u' column kind: the value is an unchanged TOASTed datum the publisher did not send. It is
 * not NULL: an UPDATE must leave such a column as it is.
 */
export const UNCHANGED_TOAST: unique symbol = Symbol.for('pg-dts.unchanged-toast');

/** A column value as decoded: PostgreSQL text form, NULL, or "unchanged TOAST, not sent". */
export type TupleValue = string | null | typeof UNCHANGED_TOAST;
/** Positional: index i is `ApplyRelation.columns[i]`, as pgoutput sends them. */
export type Tuple = readonly TupleValue[];

export type ReplicaIdentity = 'default' | 'nothing' | 'full' | 'index';

/** What statement generation needs to know about one mapped relation. */
export interface ApplyRelation {
  /** The target table. */
  target: QualifiedName;
  /** The published columns, in pgoutput's order (generated columns are not published). */
  columns: readonly string[];
  /** The source replica identity's columns (pgoutput's key flag). Ignored for FULL. */
  keyColumns: readonly string[];
  replicaIdentity: ReplicaIdentity;
  /**
   * For REPLICA IDENTITY FULL only: the target's primary key columns, when it has one. Each is in the
   * old tuple, and a primary key matches exactly one row, so it replaces the all-column scan.
   */
  targetPrimaryKey?: readonly string[];
  /** The target is a partitioned table: ctid alone does not name a row, (tableoid, ctid) does. */
  partitioned?: boolean;
  /**
   * Target columns that are GENERATED ALWAYS AS IDENTITY. UPDATE cannot SET them ("can only be updated
   * to DEFAULT"): an unchanged one is left out, a changed one moves the row (DELETE + INSERT).
   */
  identityAlways?: readonly string[];
  /** format_type() of each of `columns` on the target: only needed to move a row. */
  columnTypes?: readonly string[];
}

export interface SqlStatement {
  text: string;
  values: (string | null)[];
}

export interface UpdateChange {
  /** pgoutput 'K': the old replica identity, sent when it changed (non-key columns are NULL). */
  oldKey?: Tuple | null;
  /** pgoutput 'O': the whole old row, sent for REPLICA IDENTITY FULL. */
  old?: Tuple | null;
  new: Tuple;
}

export interface DeleteChange {
  oldKey?: Tuple | null;
  old?: Tuple | null;
}

/** A statement could not be built from the change: the message never carries row values. */
export class StatementError extends Error {
  override name = 'StatementError';
}

const COLLATE_C = `COLLATE ${ident('C')}`;

class Params {
  readonly values: (string | null)[] = [];
  add(v: string | null): string {
    this.values.push(v);
    return `$${this.values.length}`;
  }
}

function display(q: QualifiedName): string {
  return `${q.schema}.${q.name}`;
}

function checkWidth(rel: ApplyRelation, tuple: Tuple, what: string): void {
  if (tuple.length !== rel.columns.length) {
    throw new StatementError(
      `${what} for ${display(rel.target)} has ${tuple.length} columns, the relation has ${rel.columns.length}`,
    );
  }
}

function sent(rel: ApplyRelation, v: TupleValue | undefined, column: string, what: string): string | null {
  if (v === UNCHANGED_TOAST || v === undefined) {
    throw new StatementError(`${what} on ${display(rel.target)}: column ${column} was not sent (unchanged TOAST value)`);
  }
  return v;
}

/**
 * `INSERT ... OVERRIDING SYSTEM VALUE VALUES (...), (...)`: several rows of one relation in one
 * statement, in order. OVERRIDING SYSTEM VALUE makes GENERATED ALWAYS identity columns take the source's
 * value (it is accepted, and does nothing, on tables without one).
 */
export function insertStatement(rel: ApplyRelation, rows: readonly Tuple[]): SqlStatement {
  if (rows.length === 0) throw new StatementError(`INSERT on ${display(rel.target)} without rows`);
  const p = new Params();
  const tuples = rows.map((row) => {
    checkWidth(rel, row, 'INSERT');
    return `(${row.map((v, i) => p.add(sent(rel, v, rel.columns[i]!, 'INSERT'))).join(', ')})`;
  });
  const cols = rel.columns.map(ident).join(', ');
  return {
    text: `INSERT INTO ${qname(rel.target)} (${cols}) OVERRIDING SYSTEM VALUE VALUES ${tuples.join(', ')}`,
    values: p.values,
  };
}

/**
 * The WHERE clause that names the one row an UPDATE or DELETE affects.
 * - Key identity (primary key or REPLICA IDENTITY USING INDEX): the key columns, from the old key when
 *   pgoutput sent one (the key changed), else from the new tuple.
 * - FULL with a target primary key: that key, from the old row.
 * - FULL otherwise: the first row whose every column equals the old row, by ctid, so that one of several
 *   identical rows is affected and not all of them. Columns compare by their text form (exact, and it
 *   works for types without an equality operator such as json, point or xml).
 */
function rowLocator(rel: ApplyRelation, p: Params, op: string, oldKey: Tuple | null | undefined, old: Tuple | null | undefined, fallback?: Tuple): string {
  if (rel.replicaIdentity === 'full') {
    if (!old) throw new StatementError(`${op} on ${display(rel.target)} (REPLICA IDENTITY FULL) without the old row`);
    checkWidth(rel, old, op);
    const pk = rel.targetPrimaryKey ?? [];
    if (pk.length > 0) {
      return pk
        .map((k) => {
          const i = rel.columns.indexOf(k);
          if (i < 0) throw new StatementError(`${op} on ${display(rel.target)}: primary key column ${k} is not published`);
          return `${ident(k)} = ${p.add(sent(rel, old[i], k, op))}`;
        })
        .join(' AND ');
    }
    const match = rel.columns
      .map((c, i) => `${ident(c)}::text ${COLLATE_C} IS NOT DISTINCT FROM ${p.add(sent(rel, old[i], c, op))}::text`)
      .join(' AND ');
    const t = qname(rel.target);
    return rel.partitioned
      ? `(tableoid, ctid) = (SELECT tableoid, ctid FROM ${t} WHERE ${match} LIMIT 1)`
      : `ctid = (SELECT ctid FROM ${t} WHERE ${match} LIMIT 1)`;
  }
  if (rel.keyColumns.length === 0) {
    throw new StatementError(`${op} on ${display(rel.target)}: the source table has no replica identity to find the row by`);
  }
  const from = old ?? oldKey ?? fallback;
  if (!from) throw new StatementError(`${op} on ${display(rel.target)} without the old key`);
  checkWidth(rel, from, op);
  return rel.keyColumns
    .map((k) => {
      const i = rel.columns.indexOf(k);
      if (i < 0) throw new StatementError(`${op} on ${display(rel.target)}: key column ${k} is not published`);
      const v = sent(rel, from[i], k, op);
      if (v === null) throw new StatementError(`${op} on ${display(rel.target)}: key column ${k} is NULL`);
      return `${ident(k)} = ${p.add(v)}`;
    })
    .join(' AND ');
}

export interface UpdatePlan extends SqlStatement {
  /**
   * Run when the UPDATE matched no row: its WHERE also required an identity column to keep a value the
   * publisher did not say was its old one, so "no row" means that value changed: move the row instead.
   */
  fallback?: SqlStatement;
}

/** The old value of column i when pgoutput told it (or it is a key column that did not change). */
function knownOld(rel: ApplyRelation, change: UpdateChange, i: number): TupleValue | undefined {
  const v =
    rel.replicaIdentity === 'full'
      ? change.old?.[i]
      : rel.keyColumns.includes(rel.columns[i]!)
        ? (change.old ?? change.oldKey ?? change.new)[i]
        : change.old?.[i];
  return v === UNCHANGED_TOAST ? undefined : v;
}

/**
 * `UPDATE t SET <sent columns> WHERE <row>`. Unchanged TOAST columns are not in the SET list, so they
 * keep their value. Returns null when nothing at all was sent to set (no statement needed).
 */
export function updateStatement(rel: ApplyRelation, change: UpdateChange): UpdatePlan | null {
  checkWidth(rel, change.new, 'UPDATE');
  const identity = new Set(rel.identityAlways ?? []);
  const guards: number[] = [];
  const setIdx: number[] = [];
  for (let i = 0; i < change.new.length; i++) {
    const v = change.new[i];
    if (v === UNCHANGED_TOAST) continue;
    if (identity.has(rel.columns[i]!)) {
      const old = knownOld(rel, change, i);
      if (old === undefined) guards.push(i);
      else if (old !== v) return moveStatement(rel, change);
      continue;
    }
    setIdx.push(i);
  }
  if (setIdx.length === 0) return guards.length ? moveStatement(rel, change) : null;
  const p = new Params();
  const sets = setIdx.map((i) => `${ident(rel.columns[i]!)} = ${p.add(change.new[i] as string | null)}`);
  let where = rowLocator(rel, p, 'UPDATE', change.oldKey, change.old, change.new);
  for (const i of guards) where += ` AND ${ident(rel.columns[i]!)} IS NOT DISTINCT FROM ${p.add(change.new[i] as string | null)}`;
  const plan: UpdatePlan = { text: `UPDATE ${qname(rel.target)} SET ${sets.join(', ')} WHERE ${where}`, values: p.values };
  if (guards.length) plan.fallback = moveStatement(rel, change);
  return plan;
}

/**
 * An UPDATE that changes a GENERATED ALWAYS identity column, as one statement that deletes the row and
 * inserts its new version: `WITH m AS (DELETE ... RETURNING *) INSERT ... OVERRIDING SYSTEM VALUE
 * SELECT ... FROM m`. Unchanged TOAST columns come from the deleted row. Values in a SELECT list have no
 * column to take their type from, so they are cast to the target column's type (with its typmod, so
 * `bit(3)` or `character(5)` keep their length).
 */
export function moveStatement(rel: ApplyRelation, change: UpdateChange): SqlStatement {
  checkWidth(rel, change.new, 'UPDATE');
  const types = rel.columnTypes;
  if (!types || types.length !== rel.columns.length) {
    throw new StatementError(`UPDATE on ${display(rel.target)} changes an identity column but the column types are unknown`);
  }
  const p = new Params();
  const t = qname(rel.target);
  const where = rowLocator(rel, p, 'UPDATE', change.oldKey, change.old, change.new);
  const select = change.new.map((v, i) => (v === UNCHANGED_TOAST ? `m.${ident(rel.columns[i]!)}` : `${p.add(v)}::${types[i]}`));
  return {
    text:
      `WITH m AS (DELETE FROM ${t} WHERE ${where} RETURNING *) ` +
      `INSERT INTO ${t} (${rel.columns.map(ident).join(', ')}) OVERRIDING SYSTEM VALUE SELECT ${select.join(', ')} FROM m`,
    values: p.values,
  };
}

/** `DELETE FROM t WHERE <row>`. */
export function deleteStatement(rel: ApplyRelation, change: DeleteChange): SqlStatement {
  const p = new Params();
  const where = rowLocator(rel, p, 'DELETE', change.oldKey, change.old);
  return { text: `DELETE FROM ${qname(rel.target)} WHERE ${where}`, values: p.values };
}

export interface TruncateTarget {
  target: QualifiedName;
  partitioned?: boolean;
}

/**
 * `TRUNCATE ONLY a, ONLY b`: ONLY binds to one name, so it is repeated (`ONLY a, b` would truncate b's
 * inheritance children). Partitioned tables cannot be truncated ONLY; their partitions go with them,
 * as on the source. Never CASCADE: the source listed every table it truncated.
 */
export function truncateStatement(rels: readonly TruncateTarget[], opts: { restartIdentity?: boolean } = {}): SqlStatement {
  if (rels.length === 0) throw new StatementError('TRUNCATE without tables');
  const names = rels.map((r) => (r.partitioned ? qname(r.target) : `ONLY ${qname(r.target)}`));
  return { text: `TRUNCATE ${names.join(', ')}${opts.restartIdentity ? ' RESTART IDENTITY' : ''}`, values: [] };
}

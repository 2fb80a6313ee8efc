/**
 * Optional, after cutover: the views, materialized views, functions, procedures, aggregates and
 * triggers of the migrated schemas, recreated on the target under the name mapping.
 *
 * Every definition is PostgreSQL's own text (pg_get_viewdef, pg_get_functiondef, pg_get_triggerdef,
 * pg_get_indexdef), printed with search_path = '' so that every relation, function and type outside
 * pg_catalog in it is schema-qualified. Renaming works on that printed text token by token (a small
 * lexer that knows strings, quoted identifiers, dollar quotes and comments): a qualified name is
 * replaced only where PostgreSQL prints a relation (a FROM/JOIN item, an INSERT/UPDATE/DELETE
 * target, a trigger's ON table), a function (a name followed by `(`) or a type (after `::`, or in a
 * function's signature), and only when it is exactly a migrated table's (or view's, function's,
 * type's) source name. Nothing is matched inside string literals (function bodies: below).
 *
 * A relation printed without an alias has its own name as reference name, and column references
 * use it (`customers.id`). When the mapping renames the relation, the old name is kept as an explicit
 * alias (`app.customers_v2 customers`), so every column reference stays valid without touching it.
 *
 * Names on the target follow the rest of pg-dts:
 *   view, materialized view -> like a table: schema through schemaMapping, name + tableSuffix
 *   function, procedure, aggregate -> like a type: schema through schemaMapping, same name
 *   trigger -> same name, on the target table (or view)
 *   index of a materialized view -> name + suffix (like a table's)
 *
 * Function bodies written as strings (PL/pgSQL, and SQL functions written with AS '...') are not
 * parsed by PostgreSQL at creation and have no qualified print: they are lexed with the same lexer
 * and renamed where a relation stands (rewriteFunction):
 *   - FROM / JOIN items and comma-separated FROM lists, UPDATE, INSERT INTO, DELETE FROM (and its
 *     USING), TABLE x, TRUNCATE [TABLE] x, LOCK TABLE x; PL/pgSQL `t%ROWTYPE` and `t.col%TYPE`;
 *     `schema.table.column` references of a renamed table;
 *   - a qualified name when it is exactly a renamed relation's source name; a bare name is looked up
 *     the way the source resolves it: through the function's own `SET search_path` if it has one,
 *     else in the function's own schema (pg-dts cannot know a caller's search_path; functions living
 *     beside their tables, as in pg_dump output and pagila, is the common case). The first schema on
 *     that path with a relation of that name decides, migrated or not (the catalog lists them).
 *   - the new name is written qualified (`FROM app.rental_m rental`), so the function works whatever
 *     the caller's search_path on the target. Exception: a function with its own search_path, which
 *     the header rewrite maps, keeps a bare name bare (`FROM rental_m rental`) when the mapped path
 *     leads to the target table: the body stays as relative as its author wrote it.
 *   - when the name changes and the item has no alias, the old name is added as alias (INSERT with
 *     AS), like views, so `rental.rental_id` keeps working.
 * Not followed, and left as written: string literals and comments (never touched), column names,
 * PL/pgSQL variables, CTEs and tables the body creates (shadowing names), names in other positions
 * (DDL, COPY, ANALYZE, ...), function calls by bare name (they follow the caller's search_path), SQL
 * built at run time (EXECUTE, format()), and bodies in other languages (plpython, C). The result's
 * `rewritten` says what each body now names; its notices name the renamed relations a body still
 * seems to name where it was not rewritten (schema.table outside a relation position, a bare name
 * after LOCK/ANALYZE/ON..., a literal that is exactly a table's name such as TG_TABLE_NAME = 'rental',
 * the tables named in the literals of a function that uses EXECUTE, or any mention in a body of
 * another language). SQL-standard bodies (BEGIN ATOMIC / RETURN) are parsed by PostgreSQL, printed
 * qualified, and renamed like views. A `SET search_path` of a function follows schemaMapping.
 *
 * Each object is created in its own transaction, in dependency order (pg_depend, through pg_rewrite
 * for views). An object whose creation fails, or that needs something the target does not have (a
 * table that is not migrated, a function or type of another schema), is skipped with the reason, and
 * so is everything that depends on it; the others go on. Idempotent: an object that already exists on
 * the target with the same definition counts as created (a re-run, a retried activity); one that
 * exists with a different definition is left alone and reported. Materialized views are created WITH
 * NO DATA and refreshed at the end (unless the source's was never populated either), as their owner.
 *
 * Owners and grants (owners.ts) are set in each object's creating transaction, so a SECURITY DEFINER
 * function is never visible owned by the migration role; it is created only when its owner on the
 * target is a role that is not a superuser. The schemas, tables, sequences and types CREATING_TABLES
 * made get theirs first: the views' and matviews' owners need their rights on the tables.
 */
import type { Client } from 'pg';
import { FENCE_SCHEMA } from './cutover';
import { connect } from './db';
import { MAX_IDENTIFIER_BYTES, quoteIdentLikePg, rewriteExprTypes, rewriteIndexDefinition, targetObjectName, type TypeRename } from './ddl';
import { classify } from './errors';
import {
  accessStatements,
  aclJson,
  missingRolesNotice,
  notMemberNotice,
  oursOnTarget,
  ownerColumns,
  readSourceAccess,
  readTargetRoles,
  type AclEntry,
  type OwnedObject,
  type SourceAccess,
  type TargetRoles,
} from './owners';
import { serverVersionNum } from './pg-version';
import { ident, literal, qname } from './sql';
import { displayName, mapTableName, type ConnectionSpec, type OwnersSpec, type QualifiedName } from './spec';

// ---------------------------------------------------------------------------------------------------
// The activity's contract
// ---------------------------------------------------------------------------------------------------

export interface SchemaObjectsInput {
  source: ConnectionSpec;
  target: ConnectionSpec;
  /** The migrated schemas: their views, functions and aggregates are recreated. */
  schemas: string[];
  /** The migrated tables (roots; partitions are found and mapped here). Their triggers are recreated. */
  tables: Array<{ source: QualifiedName; target: QualifiedName }>;
  schemaMapping: Record<string, string>;
  tableSuffix: string;
  /** spec.owners (owners.ts); absent: carried to the roles of the same name that exist on the target. */
  owners?: OwnersSpec;
  /** The mark of what CREATING_TABLES created: only those schemas, tables, sequences and types get owners and grants. */
  migrationId?: string;
  /** false: only the owners and grants of the migrated tables (spec.owners without spec.objects). */
  objects?: boolean;
}

export interface SchemaObjectsResult {
  /** `kind source-name` (`-> target-name` when the mapping renames it), in creation order. */
  created: string[];
  skipped: Array<{ object: string; reason: string }>;
  /** Things a DBA should check, e.g. function bodies that still name the source tables. */
  notices: string[];
  /** Function bodies written as strings that were rewritten through the mapping, and what now names what. */
  rewritten: string[];
}

export interface SchemaObjectsHooks {
  heartbeat?(details: { done: number; total: number }): void;
  signal?: AbortSignal;
}

// ---------------------------------------------------------------------------------------------------
// Lexer
// ---------------------------------------------------------------------------------------------------

export type SqlTokenKind = 'space' | 'comment' | 'word' | 'quoted' | 'string' | 'dollar' | 'param' | 'number' | 'op' | 'punct';

export interface SqlToken {
  kind: SqlTokenKind;
  text: string;
}

const isSpace = (c: string) => c === ' ' || c === '\t' || c === '\n' || c === '\r' || c === '\f' || c === '\v';
const isIdentStart = (c: string) => /[A-Za-z_\u0080-\uffff]/.test(c);
const isIdentChar = (c: string) => /[A-Za-z0-9_$\u0080-\uffff]/.test(c);
const OP_CHARS = '+-*/<>=~!@#%^&|`?';
const DOLLAR_TAG = /\$(?:[A-Za-z_\u0080-\uffff][A-Za-z0-9_\u0080-\uffff]*)?\$/y;
const NUMBER = /(?:0[xXoObB][0-9A-Fa-f_]+|[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9][0-9_]*)(?:[eE][+-]?[0-9]+)?/y;

/** End (exclusive) of a quoted run starting at `start` (the opening quote); `''`/`""` doubles the quote. */
function scanQuoted(sql: string, start: number, quote: string, backslashEscapes: boolean): number {
  for (let j = start + 1; j < sql.length; j++) {
    const ch = sql[j];
    if (backslashEscapes && ch === '\\') {
      j++;
      continue;
    }
    if (ch === quote) {
      if (sql[j + 1] === quote) {
        j++;
        continue;
      }
      return j + 1;
    }
  }
  return sql.length;
}

/**
 * Splits SQL text into tokens; concatenating their texts gives the input back exactly. Enough of
 * PostgreSQL's lexical rules for text PostgreSQL printed: string constants ('', E'', B'', X'', N''),
 * dollar quotes, quoted identifiers, comments, words, numbers, operators and punctuation.
 */
export function lexSql(sql: string): SqlToken[] {
  const out: SqlToken[] = [];
  let i = 0;
  const n = sql.length;
  const push = (kind: SqlTokenKind, end: number) => {
    out.push({ kind, text: sql.slice(i, end) });
    i = end;
  };
  while (i < n) {
    const c = sql[i]!;
    const next = sql[i + 1] ?? '';
    if (isSpace(c)) {
      let j = i + 1;
      while (j < n && isSpace(sql[j]!)) j++;
      push('space', j);
    } else if (c === '-' && next === '-') {
      const j = sql.indexOf('\n', i);
      push('comment', j < 0 ? n : j);
    } else if (c === '/' && next === '*') {
      let depth = 1;
      let j = i + 2;
      while (j < n && depth > 0) {
        if (sql[j] === '/' && sql[j + 1] === '*') {
          depth++;
          j += 2;
        } else if (sql[j] === '*' && sql[j + 1] === '/') {
          depth--;
          j += 2;
        } else j++;
      }
      push('comment', j);
    } else if (c === "'") {
      push('string', scanQuoted(sql, i, "'", false));
    } else if ((c === 'E' || c === 'e') && next === "'") {
      push('string', scanQuoted(sql, i + 1, "'", true));
    } else if (/[BbXxNn]/.test(c) && next === "'") {
      push('string', scanQuoted(sql, i + 1, "'", false));
    } else if (c === '"') {
      push('quoted', scanQuoted(sql, i, '"', false));
    } else if (c === '$') {
      if (/[0-9]/.test(next)) {
        let j = i + 1;
        while (j < n && /[0-9]/.test(sql[j]!)) j++;
        push('param', j);
      } else {
        DOLLAR_TAG.lastIndex = i;
        const m = DOLLAR_TAG.exec(sql);
        if (m) {
          const close = sql.indexOf(m[0], i + m[0].length);
          push('dollar', close < 0 ? n : close + m[0].length);
        } else push('punct', i + 1);
      }
    } else if (isIdentStart(c)) {
      let j = i + 1;
      while (j < n && isIdentChar(sql[j]!)) j++;
      push('word', j);
    } else if (/[0-9]/.test(c) || (c === '.' && /[0-9]/.test(next))) {
      NUMBER.lastIndex = i;
      const m = NUMBER.exec(sql);
      push('number', i + Math.max(1, m?.[0].length ?? 1));
    } else if (c === ':' && next === ':') {
      push('op', i + 2);
    } else if (OP_CHARS.includes(c)) {
      let j = i + 1;
      while (j < n && OP_CHARS.includes(sql[j]!) && !(sql[j] === '-' && sql[j + 1] === '-') && !(sql[j] === '/' && sql[j + 1] === '*')) j++;
      push('op', j);
    } else {
      push('punct', i + 1);
    }
  }
  return out;
}

const isIdentToken = (t: SqlToken | undefined): t is SqlToken & { kind: 'word' | 'quoted' } => t !== undefined && (t.kind === 'word' || t.kind === 'quoted');
const isPunct = (t: SqlToken | undefined, p: string) => t !== undefined && t.kind === 'punct' && t.text === p;
const asciiLower = (s: string) => s.replace(/[A-Z]/g, (c) => c.toLowerCase());

/** The name an identifier token stands for: quoted as written, bare folded to lower case (ASCII only, like the server). */
export function identValue(t: SqlToken): string {
  return t.kind === 'quoted' ? t.text.slice(1, -1).replace(/""/g, '"') : asciiLower(t.text);
}

/** A dotted name starting at token r: its parts and the index after it. */
function readName(tokens: readonly SqlToken[], r: number, to: number): { parts: string[]; end: number } {
  const parts = [identValue(tokens[r]!)];
  let end = r + 1;
  while (end + 1 < to && isPunct(tokens[end], '.') && isIdentToken(tokens[end + 1])) {
    parts.push(identValue(tokens[end + 1]!));
    end += 2;
  }
  return { parts, end };
}

function nextSignificant(tokens: readonly SqlToken[], r: number, to: number): SqlToken | undefined {
  for (let j = r; j < to; j++) {
    const t = tokens[j]!;
    if (t.kind !== 'space' && t.kind !== 'comment') return t;
  }
  return undefined;
}

/**
 * Two definitions are the same when they have the same tokens, identifiers compared by the name they
 * stand for (`app.v` equals `"app"."v"`), whitespace, comments and trailing semicolons ignored.
 */
export function sameDefinition(a: string, b: string): boolean {
  const norm = (s: string) => {
    const out = lexSql(s)
      .filter((t) => t.kind !== 'space' && t.kind !== 'comment')
      .map((t) => (t.kind === 'word' || t.kind === 'quoted' ? `\u0001${identValue(t)}` : t.text));
    while (out[out.length - 1] === ';') out.pop();
    return out;
  };
  const x = norm(a);
  const y = norm(b);
  return x.length === y.length && x.every((t, i) => t === y[i]);
}

// ---------------------------------------------------------------------------------------------------
// Renaming printed definitions
// ---------------------------------------------------------------------------------------------------

export const nameKey = (q: QualifiedName): string => `${q.schema}\u0000${q.name}`;

/** Source name -> target name, keyed by nameKey. */
export interface ObjectRenames {
  /** Migrated tables and their partitions, and the views recreated here (identity renames included). */
  relations: ReadonlyMap<string, QualifiedName>;
  /** Functions, procedures and aggregates recreated here. */
  functions: ReadonlyMap<string, QualifiedName>;
  /** Types by printed name: user types of the migrated schemas, and the row types of renamed relations. */
  types: ReadonlyMap<string, QualifiedName>;
  schemaMapping: Readonly<Record<string, string>>;
}

interface Edit {
  start: number;
  end: number;
  text: string;
}

function applyEdits(tokens: readonly SqlToken[], edits: Edit[]): string {
  edits.sort((x, y) => x.start - y.start || x.end - y.end);
  let out = '';
  let r = 0;
  for (const e of edits) {
    for (; r < e.start; r++) out += tokens[r]!.text;
    out += e.text;
    r = Math.max(r, e.end);
  }
  for (; r < tokens.length; r++) out += tokens[r]!.text;
  return out;
}

const lookup = (map: ReadonlyMap<string, QualifiedName>, parts: string[]): QualifiedName | undefined =>
  parts.length === 2 ? map.get(nameKey({ schema: parts[0]!, name: parts[1]! })) : undefined;

/** What a relation at this position is: its kind decides how a kept alias is written (`plain`: none, TABLE x). */
type ItemKind = 'from' | 'insert' | 'dml' | 'trigger' | 'plain';

interface Frame {
  clause: string;
  expect: ItemKind | undefined;
  /** The parentheses of a function call (string bodies): FROM in them is EXTRACT(x FROM y), not a relation, until a SELECT. */
  call?: boolean;
}

/** Keywords that end a FROM list (or never start a relation item). */
const CLAUSE_KEYWORDS = new Set([
  'SELECT', 'WHERE', 'GROUP', 'HAVING', 'WINDOW', 'ORDER', 'LIMIT', 'OFFSET', 'FETCH', 'UNION', 'INTERSECT', 'EXCEPT',
  'FOR', 'RETURNING', 'SET', 'VALUES', 'WITH', 'DO', 'WHEN', 'OF', 'RETURN', 'BEGIN', 'ATOMIC', 'INSERT', 'MERGE',
]);
/** Keywords that may stand between FROM/JOIN and the relation, or between two items. */
const JOIN_WORDS = new Set(['ONLY', 'LATERAL', 'NATURAL', 'CROSS', 'INNER', 'LEFT', 'RIGHT', 'FULL', 'OUTER']);

/**
 * Does the token after a relation start an alias? PostgreSQL prints keywords in upper case and an
 * alias through quote_ident (bare only when lower-case and not a reserved word), without AS.
 */
function startsAlias(t: SqlToken | undefined): boolean {
  if (!t) return false;
  if (t.kind === 'quoted') return true;
  if (t.kind !== 'word') return false;
  if (t.text.toUpperCase() === 'AS') return true;
  if (/[A-Z]/.test(t.text)) return false;
  return quoteIdentLikePg(t.text) === t.text;
}

/** Words that may follow a relation in hand-written SQL or PL/pgSQL without being its alias (any case). */
const NOT_ALIAS = new Set([
  ...CLAUSE_KEYWORDS, ...JOIN_WORDS, 'JOIN', 'ON', 'USING', 'INTO', 'LOOP', 'THEN', 'ELSE', 'ELSIF', 'END', 'DEFAULT',
  'OVERRIDING', 'TABLESAMPLE', 'AND', 'OR', 'NOT', 'IS', 'IN', 'STRICT', 'CONCURRENTLY', 'NOWAIT', 'SKIP', 'CASCADE', 'RESTRICT',
  'RESTART', 'CONTINUE', 'IDENTITY', 'MODE',
]);

/** The same question for a string body: written by hand, so keywords and aliases come in any case. */
function startsAliasInBody(t: SqlToken | undefined): boolean {
  if (!t) return false;
  if (t.kind === 'quoted') return true;
  if (t.kind !== 'word') return false;
  const w = t.text.toUpperCase();
  if (w === 'AS') return true;
  if (NOT_ALIAS.has(w)) return false;
  const lower = asciiLower(t.text);
  return quoteIdentLikePg(lower) === lower;
}

/** Words after which a bare name is a relation in statements string bodies are not rewritten in. */
const UTILITY_BEFORE_RELATION = new Set(['TABLE', 'LOCK', 'COPY', 'ANALYZE', 'ANALYSE', 'VACUUM', 'VIEW', 'CLUSTER', 'REINDEX', 'ON', 'REFERENCES', 'INHERITS']);

/** Words before TABLE that make it DDL (CREATE TEMP TABLE x, DROP TABLE x), not a reference to be renamed. */
const TABLE_DDL = new Set(['CREATE', 'TEMP', 'TEMPORARY', 'UNLOGGED', 'GLOBAL', 'LOCAL', 'DROP', 'ALTER', 'FOREIGN', 'PARTITION', 'OF']);

/**
 * How a string body's names are resolved on the source and written for the target (see
 * rewriteFunction): the schemas a bare name is looked up in, and the names that are not tables there.
 */
export interface BodyScope {
  renames: ObjectRenames;
  /** Where a bare name is looked up, in order: the function's own SET search_path, else its schema. */
  path: string[];
  /** The function sets its own search_path (the header rewrite maps it along with the schemas). */
  ownPath: boolean;
  /** Source relations known to exist (nameKey), renamed or not: a bare name stops at the first schema that has it. */
  existing: ReadonlySet<string>;
  /** Bare names that do not mean a table in this body: CTEs and tables it creates. */
  shadowed: ReadonlySet<string>;
  /** PL/pgSQL variables: `v.field%TYPE` is the variable's, and a variable is not reported as a table. */
  variables: ReadonlySet<string>;
}

/** What a string body's rewrite did, by source name (`schema.name`). */
interface BodyScan {
  scope: BodyScope;
  /** source -> target of every relation reference rewritten. */
  rewritten: Map<string, string>;
  /** Renamed relations the body seems to name where it was not rewritten. */
  notFollowed: Set<string>;
}

/** A renamed relation the body refers to, and the text to write for it. */
interface BodyRelation {
  source: QualifiedName;
  target: QualifiedName;
  text: string;
}

const isIdentity = (source: QualifiedName, target: QualifiedName) => source.schema === target.schema && source.name === target.name;

/** The renamed relations whose source name is `name` (any schema). */
function renamedNamed(renames: ObjectRenames, name: string): QualifiedName[] {
  const out: QualifiedName[] = [];
  for (const [k, target] of renames.relations) {
    const [schema, n] = k.split('\u0000') as [string, string];
    if (n === name && !isIdentity({ schema, name: n }, target)) out.push({ schema, name: n });
  }
  return out;
}

/**
 * The relation a name in a string body means, when the mapping renames it; `kept` when it means a
 * relation that needs no change (not renamed, a CTE or variable, or reached through the mapped
 * search_path); undefined when it is no relation pg-dts knows of. A qualified name is
 * looked up as it is. A bare name is looked up through the scope's path: the first schema that has
 * a relation of that name decides (so a table that is not migrated shadows a migrated one behind
 * it). It is written qualified, except in a function with its own search_path when the mapped path
 * still leads to it (its target schema is the mapped schema, and no earlier schema of the path has
 * a relation of the target name): then only the name changes, and the body stays as relative as
 * its author wrote it.
 */
function resolveBodyRelation(parts: string[], scope: BodyScope): BodyRelation | 'kept' | undefined {
  const { renames } = scope;
  const mapSchema = (s: string) => renames.schemaMapping[s] ?? s;
  if (parts.length === 2) {
    const source = { schema: parts[0]!, name: parts[1]! };
    const target = renames.relations.get(nameKey(source));
    if (!target) return scope.existing.has(nameKey(source)) ? 'kept' : undefined;
    return isIdentity(source, target) ? 'kept' : { source, target, text: qname(target) };
  }
  if (parts.length !== 1) return undefined;
  if (scope.shadowed.has(parts[0]!)) return 'kept';
  const name = parts[0]!;
  for (let i = 0; i < scope.path.length; i++) {
    const source = { schema: scope.path[i]!, name };
    const target = renames.relations.get(nameKey(source));
    if (!target) {
      if (scope.existing.has(nameKey(source))) return 'kept';
      continue;
    }
    if (isIdentity(source, target)) return 'kept';
    const earlier = scope.path.slice(0, i);
    const shadowedOnTarget = earlier.some(
      (s) => scope.existing.has(nameKey({ schema: s, name: target.name })) || [...renames.relations.values()].some((t) => t.schema === mapSchema(s) && t.name === target.name),
    );
    if (scope.ownPath && target.schema === mapSchema(source.schema) && !shadowedOnTarget) {
      return target.name === name ? 'kept' : { source, target, text: quoteIdentLikePg(target.name) };
    }
    return { source, target, text: qname(target) };
  }
  return undefined;
}

/**
 * Renames relations, functions and types in a query as ruleutils prints it (a view's definition, an
 * SQL-standard function body, a trigger's WHEN and EXECUTE parts): see the file comment. In trigger
 * mode the relation is the one after the first top-level ON (and a constraint trigger's FROM); it
 * gets no alias (a trigger's expressions name OLD and NEW, never the table).
 *
 * With `body`, the tokens are a string body (SQL or PL/pgSQL as written by hand): relations are
 * found by resolveBodyRelation (bare names too), TABLE, TRUNCATE, %ROWTYPE and %TYPE are relation
 * positions as well, `schema.table.column` references follow their table, FROM inside a function
 * call's parentheses is not a FROM clause, and what looks like a renamed relation elsewhere is
 * recorded as not followed.
 */
function rewriteQueryTokens(
  tokens: readonly SqlToken[],
  from: number,
  to: number,
  renames: ObjectRenames,
  edits: Edit[],
  mode: 'query' | 'trigger',
  body?: BodyScan,
): { triggerTable?: QualifiedName } {
  const frames: Frame[] = [{ clause: '', expect: undefined }];
  let prev: SqlToken | undefined;
  let triggerOnSeen = false;
  let triggerTable: QualifiedName | undefined;
  let pendingCall = false;
  const prevWord = () => (prev?.kind === 'word' ? prev.text.toUpperCase() : '');

  const keyword = (kw: string, top: Frame, atTop: boolean): boolean => {
    switch (kw) {
      case 'FROM':
        if (mode === 'trigger') {
          if (atTop) top.expect = 'trigger';
          return true;
        }
        if (prevWord() === 'DISTINCT') return true; // IS [NOT] DISTINCT FROM
        if (top.call) return true; // EXTRACT(year FROM x), substring(s FROM 2), trim(BOTH FROM s)
        top.clause = 'FROM';
        top.expect = 'from';
        return true;
      case 'JOIN':
        top.clause = 'FROM';
        top.expect = 'from';
        return true;
      case 'ON':
        if (mode === 'trigger' && atTop && !triggerOnSeen) {
          triggerOnSeen = true;
          top.expect = 'trigger';
          return true;
        }
        top.expect = undefined;
        return true;
      case 'USING':
        if (top.clause === 'FROM' || top.clause === 'DML') {
          top.clause = 'FROM';
          top.expect = 'from';
        }
        return true;
      case 'INTO':
        if (prevWord() === 'INSERT' || prevWord() === 'MERGE') {
          top.clause = 'DML';
          top.expect = prevWord() === 'INSERT' ? 'insert' : 'dml';
        }
        return true;
      case 'UPDATE':
        if (mode === 'query' && !['FOR', 'KEY', 'DO', 'OR', 'THEN'].includes(prevWord())) {
          top.clause = 'DML';
          top.expect = 'dml';
        } else top.expect = undefined;
        return true;
      case 'DELETE':
        top.clause = 'DML';
        top.expect = undefined;
        return true;
      case 'TABLE':
        if (!body) return false;
        top.call = false;
        top.expect = TABLE_DDL.has(prevWord()) ? undefined : 'plain';
        if (prevWord() !== 'TRUNCATE' && prevWord() !== 'LOCK') top.clause = 'TABLE';
        return true;
      case 'TRUNCATE':
        if (!body) return false;
        top.clause = 'TRUNCATE';
        top.expect = 'plain';
        return true;
      default:
        if (JOIN_WORDS.has(kw)) return true;
        if (CLAUSE_KEYWORDS.has(kw)) {
          top.clause = kw;
          top.expect = undefined;
          if (kw === 'SELECT' || kw === 'VALUES' || kw === 'WITH') top.call = false;
          return true;
        }
        return false;
    }
  };

  /** A name in a relation position: renamed when it is a migrated table or a recreated view. */
  const relation = (parts: string[]): BodyRelation | 'kept' | undefined => {
    if (body) return resolveBodyRelation(parts, body.scope);
    const target = lookup(renames.relations, parts);
    return target ? { source: { schema: parts[0]!, name: parts[1]! }, target, text: qname(target) } : undefined;
  };
  const rewritten = (rel: BodyRelation) => body?.rewritten.set(displayName(rel.source), displayName(rel.target));
  /**
   * A name that looks like a renamed relation where it was not rewritten: `schema.table` anywhere, a
   * bare name in a relation position, or after a word that names a relation in statements not
   * rewritten (LOCK rental, ANALYZE rental, CREATE INDEX ... ON rental). Bare names elsewhere are
   * columns and variables far more often than tables: not reported.
   */
  const mention = (parts: string[], relationPosition: boolean) => {
    if (!body) return;
    if (parts.length >= 2) {
      const source = { schema: parts[0]!, name: parts[1]! };
      const target = renames.relations.get(nameKey(source));
      if (target && !isIdentity(source, target)) body.notFollowed.add(displayName(source));
    } else if (parts.length === 1 && !body.scope.shadowed.has(parts[0]!) && !body.scope.variables.has(parts[0]!) && (relationPosition || UTILITY_BEFORE_RELATION.has(prevWord()))) {
      for (const q of renamedNamed(renames, parts[0]!)) body.notFollowed.add(displayName(q));
    }
  };

  for (let r = from; r < to; ) {
    const t = tokens[r]!;
    if (t.kind === 'space' || t.kind === 'comment') {
      r++;
      continue;
    }
    const top = frames[frames.length - 1]!;
    if (t.kind === 'punct') {
      if (t.text === '(') {
        // A parenthesised FROM item (a join or a subquery) continues the FROM list inside.
        frames.push({ clause: top.expect ? 'FROM' : '', expect: top.expect, ...(pendingCall ? { call: true } : {}) });
        top.expect = undefined;
      } else if (t.text === ')') {
        if (frames.length > 1) frames.pop();
      } else if (t.text === ',') {
        if (top.clause === 'FROM') top.expect = 'from';
        else if (top.clause === 'TRUNCATE') top.expect = 'plain';
      } else if (t.text === ';') {
        frames.length = 1;
        frames[0] = { clause: '', expect: undefined };
      }
      pendingCall = false;
      prev = t;
      r++;
      continue;
    }
    pendingCall = false;
    if (isIdentToken(t)) {
      const name = readName(tokens, r, to);
      if (name.parts.length === 1 && t.kind === 'word' && keyword(t.text.toUpperCase(), top, frames.length === 1)) {
        prev = t;
        r = name.end;
        continue;
      }
      const next = nextSignificant(tokens, name.end, to);
      const replace = (text: string, end = name.end) => edits.push({ start: r, end, text });
      if (isPunct(next, '(') && top.expect !== 'insert') {
        // A call; but INSERT INTO t (columns) is the relation with its column list.
        const target = lookup(renames.functions, name.parts);
        if (target) replace(qname(target));
        top.expect = undefined;
        pendingCall = body !== undefined;
      } else if (prev?.kind === 'op' && prev.text === '::') {
        const target = lookup(renames.types, name.parts);
        if (target) replace(qname(target));
      } else if (top.expect) {
        const kind = top.expect;
        top.expect = undefined;
        const rel = relation(name.parts);
        if (rel === 'kept') {
          // nothing to change
        } else if (rel) {
          replace(rel.text);
          rewritten(rel);
          if (kind === 'trigger') triggerTable ??= rel.source;
          else if (kind !== 'plain' && rel.target.name !== rel.source.name && !(body ? startsAliasInBody(next) : startsAlias(next))) {
            // The reference name was the relation's own name: keep it as an alias (INSERT needs AS).
            const alias = body ? quoteIdentLikePg(rel.source.name) : ident(rel.source.name);
            edits.push({ start: name.end, end: name.end, text: `${kind === 'insert' ? ' AS ' : ' '}${alias}` });
          }
        } else mention(name.parts, true);
        if (body && startsAliasInBody(next)) {
          // Skip the alias (and AS): it is a name of this query, not a table.
          let a = tokens.indexOf(next!, name.end);
          if (next!.kind === 'word' && next!.text.toUpperCase() === 'AS') {
            const n2 = nextSignificant(tokens, a + 1, to);
            a = isIdentToken(n2) ? tokens.indexOf(n2, a + 1) : a;
          }
          prev = tokens[a];
          r = a + 1;
          continue;
        }
      } else if (body) {
        const pct = nextSignificant(tokens, name.end, to);
        const pctAt = pct ? tokens.indexOf(pct, name.end) : -1;
        const what = pct?.kind === 'op' && pct.text === '%' ? nextSignificant(tokens, pctAt + 1, to) : undefined;
        const attr = what?.kind === 'word' ? what.text.toUpperCase() : '';
        if (attr === 'ROWTYPE' || (attr === 'TYPE' && name.parts.length >= 2)) {
          // PL/pgSQL: table%ROWTYPE, table.column%TYPE (where a variable of that name wins, as in PL/pgSQL).
          const relParts = attr === 'ROWTYPE' ? name.parts : name.parts.slice(0, -1);
          const rel = attr === 'TYPE' && relParts.length === 1 && body.scope.variables.has(relParts[0]!) ? 'kept' : relation(relParts);
          if (rel === undefined) mention(relParts, true);
          else if (rel !== 'kept') {
            replace(rel.text, attr === 'ROWTYPE' ? name.end : name.end - 2);
            rewritten(rel);
          }
        } else if (name.parts.length === 3 && !isPunct(next, '(')) {
          // schema.table.column: the table keeps its old name as alias when renamed, else it is just moved.
          const rel = resolveBodyRelation(name.parts.slice(0, 2), body.scope);
          if (rel && rel !== 'kept') {
            replace(rel.target.name !== rel.source.name ? quoteIdentLikePg(rel.source.name) : qname(rel.target), name.end - 2);
            rewritten(rel);
          }
        } else mention(name.parts, false);
      }
      prev = tokens[name.end - 1];
      r = name.end;
      continue;
    }
    prev = t;
    r++;
  }
  return triggerTable ? { triggerTable } : {};
}

/** A view's or materialized view's definition (pg_get_viewdef) with relations, functions and types renamed. */
export function rewriteQueryText(sql: string, renames: ObjectRenames): string {
  const tokens = lexSql(sql);
  const edits: Edit[] = [];
  rewriteQueryTokens(tokens, 0, tokens.length, renames, edits, 'query');
  return applyEdits(tokens, edits);
}

/**
 * Names in a function signature or header: a qualified name followed by `(` is a function (the
 * function's own name, a call in a DEFAULT), any other qualified name is a type (arguments, RETURNS,
 * RETURNS TABLE columns, casts). A `SET search_path TO 'a', 'b'` follows schemaMapping.
 */
function rewriteHeaderTokens(tokens: readonly SqlToken[], from: number, to: number, renames: ObjectRenames, edits: Edit[]): void {
  let searchPath = false;
  for (let r = from; r < to; ) {
    const t = tokens[r]!;
    if (isIdentToken(t)) {
      const name = readName(tokens, r, to);
      const next = nextSignificant(tokens, name.end, to);
      const target = lookup(isPunct(next, '(') ? renames.functions : renames.types, name.parts);
      if (target) edits.push({ start: r, end: name.end, text: qname(target) });
      if (name.parts.length === 1 && t.kind === 'word') {
        const w = t.text.toUpperCase();
        if (w === 'SEARCH_PATH' && tokens.slice(from, r).reverse().find((x) => x.kind !== 'space')?.text.toUpperCase() === 'SET') searchPath = true;
        else if (w !== 'TO') searchPath = false;
      }
      r = name.end;
      continue;
    }
    if (searchPath && t.kind === 'string' && t.text.startsWith("'")) {
      // pg_get_functiondef prints each element of a list setting as its own literal.
      const schema = t.text.slice(1, -1).replace(/''/g, "'");
      const mapped = renames.schemaMapping[schema];
      if (mapped !== undefined) edits.push({ start: r, end: r + 1, text: literal(mapped).trim() });
    } else if (searchPath && t.kind !== 'space' && !isPunct(t, ',') && !(t.kind === 'op' && t.text === '=')) {
      searchPath = false;
    }
    r++;
  }
}

/** Renames the names in a function signature as regprocedure prints it: `public.f(integer,public.mood)`. */
export function rewriteSignature(signature: string, renames: ObjectRenames): string {
  const tokens = lexSql(signature);
  const edits: Edit[] = [];
  rewriteHeaderTokens(tokens, 0, tokens.length, renames, edits);
  return applyEdits(tokens, edits);
}

/** Where a pg_get_functiondef body starts: the top-level AS (a string body), BEGIN ATOMIC or RETURN (SQL-standard). */
function functionBodyStart(tokens: readonly SqlToken[]): { index: number; sqlStandard: boolean } {
  let depth = 0;
  for (let r = 0; r < tokens.length; r++) {
    const t = tokens[r]!;
    if (isPunct(t, '(')) depth++;
    else if (isPunct(t, ')')) depth--;
    else if (depth === 0 && t.kind === 'word') {
      const w = t.text.toUpperCase();
      if (w === 'AS') return { index: r, sqlStandard: false };
      if (w === 'RETURN') return { index: r, sqlStandard: true };
      if (w === 'BEGIN' && nextSignificant(tokens, r + 1, tokens.length)?.text.toUpperCase() === 'ATOMIC') return { index: r, sqlStandard: true };
    }
  }
  return { index: tokens.length, sqlStandard: false };
}

/** What the header of a pg_get_functiondef statement says about how its body finds tables. */
export interface FunctionHeader {
  /** The function's own schema. */
  schema?: string;
  /** LANGUAGE, as a name (`plpgsql`, `sql`). */
  language?: string;
  /** The schemas of its `SET search_path`, in order, as the source has them (`$user` left in). */
  searchPath?: string[];
}

/** Reads schema, language and search_path from a function definition's header (before the body). */
function readFunctionHeader(tokens: readonly SqlToken[], to: number): FunctionHeader {
  const out: FunctionHeader = {};
  const sig = tokens.slice(0, to).filter((t) => t.kind !== 'space' && t.kind !== 'comment');
  for (let i = 0; i < sig.length; i++) {
    const t = sig[i]!;
    const w = t.kind === 'word' ? t.text.toUpperCase() : '';
    if ((w === 'FUNCTION' || w === 'PROCEDURE') && out.schema === undefined && isIdentToken(sig[i + 1])) {
      const name = readName(sig, i + 1, sig.length);
      if (name.parts.length === 2) out.schema = name.parts[0]!;
    } else if (w === 'LANGUAGE' && isIdentToken(sig[i + 1])) {
      out.language = identValue(sig[i + 1]!);
    } else if (w === 'SEARCH_PATH' && sig[i - 1]?.text.toUpperCase() === 'SET') {
      // pg_get_functiondef prints each element as its own literal: SET search_path TO 'shop', 'public'.
      const path: string[] = [];
      let j = i + 1;
      if (sig[j]?.text.toUpperCase() === 'TO' || sig[j]?.text === '=') j++;
      for (; j < sig.length && sig[j]!.kind === 'string'; j += 2) {
        path.push(sig[j]!.text.slice(1, -1).replace(/''/g, "'"));
        if (!isPunct(sig[j + 1], ',')) break;
      }
      out.searchPath = path.filter((s) => s !== '');
    }
  }
  return out;
}

/** The search_path schemas of a function definition (pg_get_functiondef), or undefined when it sets none. */
export function functionSearchPath(definition: string): string[] | undefined {
  const tokens = lexSql(definition);
  return readFunctionHeader(tokens, functionBodyStart(tokens).index).searchPath;
}

/**
 * Bare names that do not mean a table in a string body: CTE names (`WITH x AS (`) and tables the body
 * creates (`CREATE TEMP TABLE x`); and in PL/pgSQL the variables of DECLARE sections and FOR loops.
 */
function shadowedNames(tokens: readonly SqlToken[], plpgsql: boolean): { shadowed: Set<string>; variables: Set<string> } {
  const sig = tokens.filter((t) => t.kind !== 'space' && t.kind !== 'comment');
  const out = new Set<string>();
  const variables = new Set<string>();
  const up = (t: SqlToken | undefined) => (t?.kind === 'word' ? t.text.toUpperCase() : '');
  let declaring = false;
  for (let i = 0; i < sig.length; i++) {
    const t = sig[i]!;
    const w = up(t);
    const before = up(sig[i - 1]);
    if (isIdentToken(t)) {
      // CTE: after WITH / RECURSIVE / a comma, a name, maybe a column list, then AS ( or AS [NOT] MATERIALIZED.
      if (before === 'WITH' || before === 'RECURSIVE' || isPunct(sig[i - 1], ',')) {
        let j = i + 1;
        if (isPunct(sig[j], '(')) {
          let depth = 0;
          for (; j < sig.length; j++) {
            if (isPunct(sig[j], '(')) depth++;
            else if (isPunct(sig[j], ')') && --depth === 0) break;
          }
          j++;
        }
        if (up(sig[j]) === 'AS' && (isPunct(sig[j + 1], '(') || ['MATERIALIZED', 'NOT'].includes(up(sig[j + 1])))) out.add(identValue(t));
      }
      if (before === 'TABLE' && ['CREATE', 'TEMP', 'TEMPORARY', 'UNLOGGED'].includes(up(sig[i - 2]))) out.add(identValue(t));
      if (before === 'EXISTS' && up(sig[i - 2]) === 'NOT' && up(sig[i - 3]) === 'IF' && up(sig[i - 4]) === 'TABLE') out.add(identValue(t));
    }
    if (!plpgsql) continue;
    if (w === 'DECLARE') {
      declaring = true;
      if (isIdentToken(sig[i + 1])) variables.add(identValue(sig[i + 1]!));
    } else if (w === 'BEGIN') {
      declaring = false;
    } else if (declaring && isPunct(t, ';') && isIdentToken(sig[i + 1]) && up(sig[i + 1]) !== 'BEGIN') {
      variables.add(identValue(sig[i + 1]!));
    } else if ((w === 'FOR' || w === 'FOREACH') && isIdentToken(sig[i + 1]) && (up(sig[i + 2]) === 'IN' || up(sig[i + 2]) === 'SLICE')) {
      variables.add(identValue(sig[i + 1]!));
    }
  }
  return { shadowed: out, variables };
}

/** The text inside a string or dollar-quoted token. */
function quotedContent(t: SqlToken): string {
  if (t.kind === 'dollar') return t.text.slice(t.text.indexOf('$', 1) + 1, t.text.lastIndexOf('$', t.text.length - 2));
  const q = t.text.indexOf("'");
  return t.text.slice(q + 1, -1).replace(/''/g, "'");
}

/** A dollar quote for a function body, chosen the way pg_get_functiondef chooses it (so a re-read prints the same). */
export function dollarQuote(body: string): string {
  let tag = '$function';
  while (body.includes(tag)) tag += 'x';
  return `${tag}$${body}${tag}$`;
}

/** What rewriteFunction did to a function definition. */
export interface FunctionRewrite {
  text: string;
  /** `schema.table -> schema.table_v2` for each relation the string body now names by its target name. */
  rewritten: string[];
  /** Renamed relations the string body seems to name where it could not be rewritten (sorted). */
  notFollowed: string[];
  /** Renamed relations named in the text of SQL the body builds and runs (EXECUTE): never rewritten. */
  dynamic: string[];
  /** The body is a string in a language pg-dts does not read (C, plpython, ...), and names renamed relations. */
  unreadLanguage?: string;
}

const READ_LANGUAGES = new Set(['sql', 'plpgsql']);

/**
 * A pg_get_functiondef statement (CREATE OR REPLACE FUNCTION|PROCEDURE ...) for the target: names in
 * the header renamed (rewriteSignature), an SQL-standard body renamed like a view, and a string body
 * in SQL or PL/pgSQL rewritten where it names a renamed relation in a relation position (see the file
 * comment). `existing`: the source relations (nameKey) of the schemas bare names are looked up in,
 * renamed or not; without it only the renamed ones are known.
 */
export function rewriteFunction(definition: string, renames: ObjectRenames, existing: ReadonlySet<string> = new Set()): FunctionRewrite {
  const tokens = lexSql(definition);
  const edits: Edit[] = [];
  const body = functionBodyStart(tokens);
  rewriteHeaderTokens(tokens, 0, body.index, renames, edits);
  const out: FunctionRewrite = { text: '', rewritten: [], notFollowed: [], dynamic: [] };
  if (body.sqlStandard) {
    rewriteQueryTokens(tokens, body.index, tokens.length, renames, edits, 'query');
    out.text = applyEdits(tokens, edits);
    return out;
  }
  const header = readFunctionHeader(tokens, body.index);
  const language = header.language ?? '';
  // The body: the first string after the top-level AS (a C function's AS 'file', 'symbol' has two: not read).
  let at = -1;
  for (let r = body.index + 1; r < tokens.length; r++) {
    const t = tokens[r]!;
    if (t.kind === 'space' || t.kind === 'comment') continue;
    if (t.kind === 'dollar' || (t.kind === 'string' && t.text.startsWith("'"))) at = r;
    break;
  }
  const scan: BodyScan = {
    scope: {
      renames,
      path: header.searchPath ? header.searchPath.filter((s) => s !== '$user' && s !== 'pg_catalog' && s !== 'pg_temp') : header.schema ? [header.schema] : [],
      ownPath: header.searchPath !== undefined,
      existing,
      shadowed: new Set(),
      variables: new Set(),
    },
    rewritten: new Map(),
    notFollowed: new Set(),
  };
  if (at >= 0) {
    const bodyToken = tokens[at]!;
    const source = quotedContent(bodyToken);
    const inner = lexSql(source);
    const plpgsql = language === 'plpgsql';
    scan.scope = { ...scan.scope, ...shadowedNames(inner, plpgsql) };
    const innerEdits: Edit[] = [];
    const dynamic = new Set<string>();
    const executes = plpgsql && inner.some((t) => t.kind === 'word' && t.text.toUpperCase() === 'EXECUTE');
    for (const t of inner) {
      if (t.kind !== 'string' && t.kind !== 'dollar') continue;
      const text = quotedContent(t);
      // A literal that is exactly a renamed relation's name ('rental'::regclass, TG_TABLE_NAME = 'rental').
      const whole = lexSql(text.trim());
      if (whole.length > 0 && isIdentToken(whole[0]) && readName(whole, 0, whole.length).end === whole.length) {
        const parts = readName(whole, 0, whole.length).parts;
        const rel = resolveBodyRelation(parts, scan.scope);
        if (rel && rel !== 'kept') scan.notFollowed.add(displayName(rel.source));
        else if (rel === undefined && parts.length === 1) for (const q of renamedNamed(renames, parts[0]!)) scan.notFollowed.add(displayName(q));
      }
      if (executes) {
        const sub: BodyScan = { scope: scan.scope, rewritten: new Map(), notFollowed: new Set() };
        rewriteQueryTokens(whole, 0, whole.length, renames, [], 'query', sub);
        for (const k of [...sub.rewritten.keys(), ...sub.notFollowed]) dynamic.add(k);
      }
    }
    if (READ_LANGUAGES.has(language)) {
      rewriteQueryTokens(inner, 0, inner.length, renames, innerEdits, 'query', scan);
      if (innerEdits.length) {
        const next = applyEdits(inner, innerEdits);
        const quoted = bodyToken.kind === 'dollar' ? dollarQuote(next) : `'${next.replace(/'/g, "''")}'`;
        edits.push({ start: at, end: at + 1, text: quoted });
      }
    } else if (language !== 'c' && language !== 'internal') {
      // Not a language we read: only say what it seems to name, words in its strings included (a hint, not a parse).
      const named = new Set<string>();
      const words = (ts: readonly SqlToken[], depth: number) => {
        for (let r = 0; r < ts.length; ) {
          const t = ts[r]!;
          if (depth === 0 && (t.kind === 'string' || t.kind === 'dollar' || t.kind === 'quoted')) words(lexSql(t.kind === 'quoted' ? t.text.slice(1, -1) : quotedContent(t)), 1);
          if (t.kind !== 'word') {
            r++;
            continue;
          }
          const name = readName(ts, r, ts.length);
          const rel = resolveBodyRelation(name.parts.slice(0, 2), scan.scope);
          if (rel && rel !== 'kept') named.add(displayName(rel.source));
          else if (rel === undefined && name.parts.length === 1) for (const x of renamedNamed(renames, name.parts[0]!)) named.add(displayName(x));
          r = name.end;
        }
      };
      words(inner, 0);
      if (named.size) {
        out.unreadLanguage = language || 'unknown';
        for (const k of named) scan.notFollowed.add(k);
      }
    }
    out.dynamic = [...dynamic].sort();
  }
  out.text = applyEdits(tokens, edits);
  out.rewritten = [...scan.rewritten].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)).map(([s, t]) => `${s} -> ${t}`);
  out.notFollowed = [...scan.notFollowed].sort();
  return out;
}

/** rewriteFunction's text. */
export function rewriteFunctionDefinition(definition: string, renames: ObjectRenames, existing?: ReadonlySet<string>): string {
  return rewriteFunction(definition, renames, existing).text;
}

/** A pg_get_triggerdef statement with its table (and a constraint trigger's FROM table), function and types renamed. */
export function rewriteTriggerDefinition(definition: string, renames: ObjectRenames): { text: string; table?: QualifiedName } {
  const tokens = lexSql(definition);
  const edits: Edit[] = [];
  const r = rewriteQueryTokens(tokens, 0, tokens.length, renames, edits, 'trigger');
  return r.triggerTable ? { text: applyEdits(tokens, edits), table: r.triggerTable } : { text: applyEdits(tokens, edits) };
}

// ---------------------------------------------------------------------------------------------------
// DDL
// ---------------------------------------------------------------------------------------------------

/** `WITH (a=1, b=x)` from pg_class.reloptions (`key=value` strings). */
export function withOptions(options: readonly string[]): string {
  if (options.length === 0) return '';
  const parts = options.map((o) => {
    const eq = o.indexOf('=');
    const k = eq < 0 ? o : o.slice(0, eq);
    const v = eq < 0 ? undefined : o.slice(eq + 1);
    if (!/^[a-z_][a-z0-9_.]*$/.test(k)) throw new Error(`unexpected storage option ${JSON.stringify(o)}`);
    return v === undefined ? k : `${k}=${/^[A-Za-z0-9_.+-]+$/.test(v) ? v : literal(v).trim()}`;
  });
  return ` WITH (${parts.join(', ')})`;
}

const withoutTrailingSemicolon = (sql: string) => sql.replace(/;\s*$/, '');

export interface CatalogView {
  oid: number;
  schema: string;
  name: string;
  kind: 'v' | 'm';
  /** pg_get_viewdef (search_path = ''). */
  definition: string;
  /** pg_class.reloptions: check_option, security_barrier, security_invoker; storage options of a matview. */
  options: string[];
  /** A materialized view holds data on the source (relispopulated). */
  populated: boolean;
  /** A materialized view's table access method, when it is not heap. */
  accessMethod: string | null;
  /** A materialized view's indexes (pg_get_indexdef). */
  indexes: Array<{ name: string; definition: string }>;
  /** As CatalogFunction's. */
  owner?: { name: string; superuser: boolean; acl: AclEntry[] | null };
}

/** CREATE VIEW / CREATE MATERIALIZED VIEW ... WITH NO DATA (plus the matview's indexes) on the target. */
export function viewDdl(view: CatalogView, target: QualifiedName, renames: ObjectRenames, spec: { tableSuffix: string }): { statements: string[]; query: string } {
  const query = withoutTrailingSemicolon(rewriteQueryText(view.definition, renames));
  if (view.kind === 'v') return { statements: [`CREATE VIEW ${qname(target)}${withOptions(view.options)} AS\n${query}`], query };
  const using = view.accessMethod && view.accessMethod !== 'heap' ? ` USING ${ident(view.accessMethod)}` : '';
  const statements = [`CREATE MATERIALIZED VIEW ${qname(target)}${using}${withOptions(view.options)} AS\n${query}\nWITH NO DATA`];
  const typeRenames: TypeRename[] = [...renames.types.entries()].map(([k, t]) => {
    const [schema, name] = k.split('\u0000') as [string, string];
    return { source: { schema, name }, target: t };
  });
  for (const idx of view.indexes) {
    const def = rewriteIndexDefinition(
      idx.definition,
      { source: idx.name, target: targetObjectName(idx.name, spec) },
      { source: { schema: view.schema, name: view.name }, target },
    );
    statements.push(rewriteExprTypes(def, typeRenames).replace(/^CREATE (UNIQUE )?INDEX /, 'CREATE $1INDEX IF NOT EXISTS '));
  }
  return { statements, query };
}

export interface CatalogAggregate {
  /** n normal, o ordered-set, h hypothetical-set. */
  kind: string;
  /** pg_get_function_arguments (search_path = ''); '' for an aggregate of no arguments (`*`). */
  args: string;
  transfn: QualifiedName;
  finalfn?: QualifiedName;
  combinefn?: QualifiedName;
  serialfn?: QualifiedName;
  deserialfn?: QualifiedName;
  mtransfn?: QualifiedName;
  minvtransfn?: QualifiedName;
  mfinalfn?: QualifiedName;
  finalExtra: boolean;
  mfinalExtra: boolean;
  finalModify: string;
  mfinalModify: string;
  sortop?: QualifiedName;
  /** format_type of the state type. */
  stype: string;
  sspace: number;
  mstype?: string;
  msspace: number;
  initcond: string | null;
  minitcond: string | null;
  /** pg_proc.proparallel. */
  parallel: string;
}

const MODIFY: Record<string, string> = { r: 'READ_ONLY', s: 'SHAREABLE', w: 'READ_WRITE' };
const PARALLEL: Record<string, string> = { s: 'SAFE', r: 'RESTRICTED', u: 'UNSAFE' };

/** CREATE OR REPLACE AGGREGATE, built from pg_aggregate (pg_get_functiondef does not print aggregates). */
export function aggregateDdl(agg: CatalogAggregate, target: QualifiedName, renames: ObjectRenames): string {
  const fn = (q: QualifiedName) => qname(renames.functions.get(nameKey(q)) ?? q);
  const type = (t: string) => rewriteSignature(t, renames);
  const opts: string[] = [`SFUNC = ${fn(agg.transfn)}`, `STYPE = ${type(agg.stype)}`];
  if (agg.sspace > 0) opts.push(`SSPACE = ${agg.sspace}`);
  if (agg.finalfn) {
    opts.push(`FINALFUNC = ${fn(agg.finalfn)}`);
    if (agg.finalExtra) opts.push('FINALFUNC_EXTRA');
  }
  if (MODIFY[agg.finalModify]) opts.push(`FINALFUNC_MODIFY = ${MODIFY[agg.finalModify]}`);
  if (agg.combinefn) opts.push(`COMBINEFUNC = ${fn(agg.combinefn)}`);
  if (agg.serialfn) opts.push(`SERIALFUNC = ${fn(agg.serialfn)}`);
  if (agg.deserialfn) opts.push(`DESERIALFUNC = ${fn(agg.deserialfn)}`);
  if (agg.initcond !== null) opts.push(`INITCOND = ${literal(agg.initcond).trim()}`);
  if (agg.mtransfn) {
    opts.push(`MSFUNC = ${fn(agg.mtransfn)}`);
    if (agg.minvtransfn) opts.push(`MINVFUNC = ${fn(agg.minvtransfn)}`);
    if (agg.mstype) opts.push(`MSTYPE = ${type(agg.mstype)}`);
    if (agg.msspace > 0) opts.push(`MSSPACE = ${agg.msspace}`);
    if (agg.mfinalfn) {
      opts.push(`MFINALFUNC = ${fn(agg.mfinalfn)}`);
      if (agg.mfinalExtra) opts.push('MFINALFUNC_EXTRA');
    }
    if (MODIFY[agg.mfinalModify]) opts.push(`MFINALFUNC_MODIFY = ${MODIFY[agg.mfinalModify]}`);
    if (agg.minitcond !== null) opts.push(`MINITCOND = ${literal(agg.minitcond).trim()}`);
  }
  if (agg.sortop) opts.push(`SORTOP = OPERATOR(${ident(agg.sortop.schema)}.${agg.sortop.name})`);
  if (PARALLEL[agg.parallel]) opts.push(`PARALLEL = ${PARALLEL[agg.parallel]}`);
  if (agg.kind === 'h') opts.push('HYPOTHETICAL');
  const args = agg.args.trim() === '' ? '*' : type(agg.args);
  return `CREATE OR REPLACE AGGREGATE ${qname(target)}(${args}) (\n  ${opts.join(',\n  ')}\n)`;
}

const TRIGGER_ENABLE: Record<string, string> = { D: 'DISABLE TRIGGER', R: 'ENABLE REPLICA TRIGGER', A: 'ENABLE ALWAYS TRIGGER' };

// ---------------------------------------------------------------------------------------------------
// Planning (pure): what to create, in which order, needing what
// ---------------------------------------------------------------------------------------------------

export interface CatalogFunction {
  oid: number;
  schema: string;
  name: string;
  /** pg_proc.prokind: f function, p procedure, a aggregate, w window function. */
  kind: string;
  /** oid::regprocedure (search_path = ''): `public.f(integer,public.mood)`. */
  signature: string;
  /** pg_get_functiondef; null for aggregates. */
  definition: string | null;
  aggregate?: CatalogAggregate;
  /** pg_proc.prosecdef (absent: read before it was). */
  securityDefiner?: boolean;
  /** Owner on the source, whether a superuser, and the ACL (null: default); absent in catalogs read before owners were carried. */
  owner?: { name: string; superuser: boolean; acl: AclEntry[] | null };
}

export interface CatalogTrigger {
  oid: number;
  name: string;
  relid: number;
  table: QualifiedName;
  /** pg_get_triggerdef (search_path = ''). */
  definition: string;
  /** pg_trigger.tgenabled: O (origin and local), D disabled, R replica, A always. */
  enabled: string;
}

export interface CatalogRelation {
  oid: number;
  schema: string;
  name: string;
  relkind: string;
}

export interface CatalogProc {
  oid: number;
  schema: string;
  name: string;
  signature: string;
}

export interface CatalogType {
  oid: number;
  schema: string;
  name: string;
  /** pg_type.typrelid: the relation whose row type this is (0 for other types). */
  relid: number;
  /** The type belongs to an extension: it keeps its schema. */
  extension: boolean;
}

export type DependencyKind = 'class' | 'proc' | 'type';

export interface ObjectCatalog {
  /** Migrated tables and their partitions, with their source oids. */
  migrated: Array<{ oid: number; source: QualifiedName; target: QualifiedName }>;
  functions: CatalogFunction[];
  views: CatalogView[];
  triggers: CatalogTrigger[];
  /** Every type of the migrated schemas (array types left out: they print as `elem[]`). */
  schemaTypes: CatalogType[];
  /** Normal dependencies (pg_depend deptype 'n') of functions (`f`), views (`v`) and triggers (`t`). */
  dependencies: Array<{ object: string; kind: DependencyKind; oid: number }>;
  /** The objects those dependencies point at (types: arrays resolved to their element type). */
  relations: CatalogRelation[];
  procs: CatalogProc[];
  types: Array<CatalogType & { refOid: number }>;
  /**
   * Every relation of the schemas function bodies look bare names up in (the migrated schemas and
   * those of the functions' search_path), renamed or not: a bare name is the first one on the path.
   */
  pathRelations?: QualifiedName[];
}

export interface Requirement {
  kind: 'relation' | 'function' | 'type';
  /** Text for to_regclass / to_regprocedure / to_regtype on the target. */
  lookup: string;
  /** Why the object is skipped when it is missing. */
  reason: string;
}

export type ExistingCheck =
  | { kind: 'function'; signature: string; aggregate: boolean }
  | { kind: 'relation'; name: QualifiedName; relkind: 'v' | 'm' }
  | { kind: 'trigger'; table: QualifiedName; name: string };

export interface PlannedObject {
  /** `f:<oid>`, `v:<oid>`, `t:<oid>`. */
  key: string;
  kind: 'function' | 'procedure' | 'aggregate' | 'view' | 'materialized view' | 'trigger';
  /** `view public.film_list` (source names). */
  label: string;
  /** For the created list: `view public.film_list -> app.film_list_m`. */
  createdLabel: string;
  /** Run in one transaction on the target. */
  statements: string[];
  /** Run (idempotent) also when the object is already there: a matview's indexes. */
  ensure: string[];
  existing: ExistingCheck;
  /** Compared with what the target prints for an object already there. */
  compareText: string;
  dependsOn: string[];
  requires: Requirement[];
  /** A materialized view to refresh once everything is created. */
  refresh?: string;
  /** A reason known before touching the target. */
  problem?: string;
  notices?: string[];
  /** What of a string body was rewritten through the mapping (SchemaObjectsResult.rewritten). */
  rewritten?: string;
  /** Its source owner and grants, carried in the creating transaction (owners.ts). */
  access?: SourceAccess;
  /** SECURITY DEFINER: created only when it ends owned by a role that is not a superuser. */
  securityDefiner?: boolean;
}

const SECURITY_DEFINER_UNOWNED =
  'SECURITY DEFINER: it would be owned by the migration role (usually a superuser), and its callers would run it with those rights; create it on the target yourself, owned by the role that should hold those rights, with its grants';

const RELKIND_WORDS: Record<string, string> = {
  r: 'table',
  p: 'partitioned table',
  v: 'view',
  m: 'materialized view',
  f: 'foreign table',
  S: 'sequence',
  c: 'composite type',
};

/** The renames for a catalog under a mapping (pure). */
export function objectRenames(catalog: ObjectCatalog, mapping: { schemaMapping: Record<string, string>; tableSuffix: string }): ObjectRenames {
  const mapSchema = (s: string) => mapping.schemaMapping[s] ?? s;
  const relations = new Map<string, QualifiedName>();
  for (const m of catalog.migrated) relations.set(nameKey(m.source), m.target);
  for (const v of catalog.views) relations.set(nameKey(v), mapTableName({ schema: v.schema, name: v.name }, mapping));
  const functions = new Map<string, QualifiedName>();
  for (const f of catalog.functions) functions.set(nameKey(f), { schema: mapSchema(f.schema), name: f.name });
  const types = new Map<string, QualifiedName>();
  // User types of the migrated schemas move with their schema and keep their name (types-ddl.ts);
  // an extension's stay where the extension is. Tables' and views' row types are in `relations`.
  const relkind = new Map(catalog.relations.map((r) => [r.oid, r.relkind]));
  for (const t of catalog.schemaTypes) {
    if (t.extension || (t.relid !== 0 && relkind.get(t.relid) !== 'c')) continue;
    types.set(nameKey(t), { schema: mapSchema(t.schema), name: t.name });
  }
  // A relation's row type has the relation's name and schema.
  for (const [k, target] of relations) types.set(k, target);
  return { relations, functions, types, schemaMapping: mapping.schemaMapping };
}

/**
 * Everything to create, in order: functions, procedures, aggregates, views and materialized views
 * sorted by their dependencies, then triggers. Pure.
 */
export function planSchemaObjects(catalog: ObjectCatalog, mapping: { schemaMapping: Record<string, string>; tableSuffix: string }): PlannedObject[] {
  const renames = objectRenames(catalog, mapping);
  const mapSchema = (s: string) => mapping.schemaMapping[s] ?? s;
  const existing = new Set((catalog.pathRelations ?? []).map(nameKey));
  const migratedOids = new Set(catalog.migrated.map((m) => m.oid));
  const migratedTarget = new Map(catalog.migrated.map((m) => [m.oid, m.target]));
  const viewKeys = new Map(catalog.views.map((v) => [v.oid, `v:${v.oid}`]));
  const funcKeys = new Map(catalog.functions.map((f) => [f.oid, `f:${f.oid}`]));
  const relByOid = new Map(catalog.relations.map((r) => [r.oid, r]));
  const procByOid = new Map(catalog.procs.map((p) => [p.oid, p]));
  const typeByRef = new Map(catalog.types.map((t) => [t.refOid, t]));
  const depsOf = new Map<string, ObjectCatalog['dependencies']>();
  for (const d of catalog.dependencies) depsOf.set(d.object, [...(depsOf.get(d.object) ?? []), d]);

  /** dependsOn and requirements of one object from its pg_depend rows. */
  const needs = (key: string, selfOid: number) => {
    const dependsOn = new Set<string>();
    const requires = new Map<string, Requirement>();
    const onRelation = (oid: number) => {
      if (oid === selfOid || migratedOids.has(oid)) return;
      const v = viewKeys.get(oid);
      if (v) {
        if (v !== key) dependsOn.add(v);
        return;
      }
      const rel = relByOid.get(oid);
      if (!rel || rel.schema === 'pg_catalog' || rel.schema === 'information_schema') return;
      const what = `${RELKIND_WORDS[rel.relkind] ?? 'relation'} ${displayName(rel)}`;
      requires.set(`relation:${oid}`, {
        kind: 'relation',
        lookup: qname(rel),
        reason: `uses ${what}, which is not migrated and does not exist on the target`,
      });
    };
    for (const d of depsOf.get(key) ?? []) {
      if (d.kind === 'class') onRelation(d.oid);
      else if (d.kind === 'proc') {
        if (d.oid === selfOid) continue;
        const f = funcKeys.get(d.oid);
        if (f) {
          dependsOn.add(f);
          continue;
        }
        const p = procByOid.get(d.oid);
        if (!p || p.schema === 'pg_catalog') continue;
        requires.set(`proc:${d.oid}`, { kind: 'function', lookup: p.signature, reason: `calls function ${p.signature}, which does not exist on the target` });
      } else {
        const t = typeByRef.get(d.oid);
        if (!t || t.schema === 'pg_catalog') continue;
        if (t.relid !== 0 && (migratedOids.has(t.relid) || viewKeys.has(t.relid) || relByOid.get(t.relid)?.relkind !== 'c')) {
          onRelation(t.relid);
          continue;
        }
        const target = renames.types.get(nameKey(t)) ?? { schema: t.schema, name: t.name };
        requires.set(`type:${t.oid}`, {
          kind: 'type',
          lookup: qname(target),
          reason: `uses type ${displayName(target)}, which does not exist on the target (pg-dts creates the types the migrated tables' columns use)`,
        });
      }
    }
    return { dependsOn: [...dependsOn], requires: [...requires.values()] };
  };

  const objects: PlannedObject[] = [];
  /** `kind what` (what: the signature for a function), with `-> target` when the mapping renames it. */
  const named = (kind: string, what: string, source: QualifiedName, target: QualifiedName) => {
    const label = `${kind} ${what}`;
    return { label, createdLabel: source.schema === target.schema && source.name === target.name ? label : `${label} -> ${displayName(target)}` };
  };

  for (const f of catalog.functions) {
    const key = `f:${f.oid}`;
    const target = { schema: mapSchema(f.schema), name: f.name };
    const kind: PlannedObject['kind'] = f.kind === 'p' ? 'procedure' : f.kind === 'a' ? 'aggregate' : 'function';
    const n = needs(key, f.oid);
    let statement: string;
    let problem: string | undefined;
    let rewrite: FunctionRewrite | undefined;
    if (f.kind === 'a') {
      statement = f.aggregate ? aggregateDdl(f.aggregate, target, renames) : '';
      if (!f.aggregate) problem = 'its pg_aggregate row could not be read';
    } else {
      rewrite = rewriteFunction(f.definition ?? '', renames, existing);
      statement = rewrite.text;
    }
    // Without its owner known it would stay the migration role's (usually a superuser), and its callers
    // would run it with those rights.
    if (f.securityDefiner && !f.owner) problem = SECURITY_DEFINER_UNOWNED;
    const schemaStmt = `CREATE SCHEMA IF NOT EXISTS ${ident(target.schema)}`;
    const o: PlannedObject = {
      key,
      kind,
      ...named(kind, f.signature, f, target),
      statements: [schemaStmt, statement],
      ensure: [],
      existing: { kind: 'function', signature: rewriteSignature(f.signature, renames), aggregate: f.kind === 'a' },
      compareText: statement,
      dependsOn: n.dependsOn,
      requires: n.requires,
    };
    if (problem) o.problem = problem;
    if (f.owner) o.access = { alter: 'ROUTINE', grant: 'ROUTINE', name: o.existing.kind === 'function' ? o.existing.signature : '', owner: f.owner.name, ownerSuper: f.owner.superuser, acl: f.owner.acl };
    if (f.securityDefiner) o.securityDefiner = true;
    if (rewrite) {
      if (rewrite.rewritten.length) o.rewritten = `${o.label}: its body now names ${rewrite.rewritten.join(', ')}`;
      const notices: string[] = [];
      if (rewrite.notFollowed.length) {
        const why = rewrite.unreadLanguage
          ? `its body is in ${rewrite.unreadLanguage}, which pg-dts does not rewrite`
          : 'pg-dts renames only table names in FROM/JOIN/UPDATE/INSERT INTO/DELETE FROM/TABLE/TRUNCATE positions and in %ROWTYPE/%TYPE';
        notices.push(
          `${o.label}: its body names ${rewrite.notFollowed.join(', ')}, which the mapping renames, where it was not rewritten (${why}); ` +
            `check that it still reaches the right tables on the target`,
        );
      }
      if (rewrite.dynamic.length) {
        notices.push(
          `${o.label}: it builds SQL at run time (EXECUTE) naming ${rewrite.dynamic.join(', ')}, which the mapping renames; ` +
            `SQL built at run time is not rewritten: change it on the target`,
        );
      }
      if (notices.length) o.notices = notices;
    }
    objects.push(o);
  }

  for (const v of catalog.views) {
    const key = `v:${v.oid}`;
    const source = { schema: v.schema, name: v.name };
    const target = mapTableName(source, mapping);
    const kind: PlannedObject['kind'] = v.kind === 'm' ? 'materialized view' : 'view';
    const n = needs(key, v.oid);
    const o: PlannedObject = {
      key,
      kind,
      ...named(kind, displayName(source), source, target),
      statements: [],
      ensure: [],
      existing: { kind: 'relation', name: target, relkind: v.kind },
      compareText: '',
      dependsOn: n.dependsOn,
      requires: n.requires,
    };
    if (Buffer.byteLength(target.name, 'utf8') > MAX_IDENTIFIER_BYTES) {
      o.problem = `its target name ${JSON.stringify(target.name)} is longer than ${MAX_IDENTIFIER_BYTES} bytes; use a shorter tableSuffix`;
    } else {
      try {
        const ddl = viewDdl(v, target, renames, mapping);
        o.statements = [`CREATE SCHEMA IF NOT EXISTS ${ident(target.schema)}`, ...ddl.statements];
        o.ensure = ddl.statements.slice(1);
        o.compareText = ddl.query;
        if (v.kind === 'm' && v.populated) o.refresh = `REFRESH MATERIALIZED VIEW ${qname(target)}`;
        if (v.owner) {
          const alter = v.kind === 'm' ? 'MATERIALIZED VIEW' : 'VIEW';
          o.access = { alter, grant: 'TABLE', name: qname(target), owner: v.owner.name, ownerSuper: v.owner.superuser, acl: v.owner.acl };
        }
      } catch (err) {
        o.problem = err instanceof Error ? err.message : String(err);
      }
    }
    objects.push(o);
  }

  const ordered = orderByDependencies(objects);

  for (const t of catalog.triggers) {
    const key = `t:${t.oid}`;
    const tableTarget = migratedTarget.get(t.relid) ?? renames.relations.get(nameKey(t.table)) ?? t.table;
    const n = needs(key, t.oid);
    const view = viewKeys.get(t.relid);
    if (view) n.dependsOn.push(view);
    const rewritten = rewriteTriggerDefinition(t.definition, renames);
    const label = `trigger ${t.name} on ${displayName(t.table)}`;
    const o: PlannedObject = {
      key,
      kind: 'trigger',
      label,
      createdLabel: displayName(tableTarget) === displayName(t.table) ? label : `${label} -> ${displayName(tableTarget)}`,
      statements: [rewritten.text],
      ensure: [],
      existing: { kind: 'trigger', table: tableTarget, name: t.name },
      compareText: rewritten.text,
      dependsOn: n.dependsOn,
      requires: n.requires,
    };
    if (!rewritten.table || rewritten.table.schema !== t.table.schema || rewritten.table.name !== t.table.name) {
      o.problem = `cannot find its table in the definition ${t.definition}`;
    }
    const enable = TRIGGER_ENABLE[t.enabled];
    if (enable) o.statements.push(`ALTER TABLE ${qname(tableTarget)} ${enable} ${ident(t.name)}`);
    ordered.push(o);
  }
  return ordered;
}

/**
 * Kahn's algorithm over dependsOn; among the objects ready at each step, functions before views and
 * then by label, so the order is stable. Objects in a cycle (PostgreSQL prevents them; a catalog
 * read across concurrent DDL might not) come last and will be skipped by their dependencies.
 */
export function orderByDependencies(objects: PlannedObject[]): PlannedObject[] {
  const byKey = new Map(objects.map((o) => [o.key, o]));
  const pending = new Map(objects.map((o) => [o.key, new Set(o.dependsOn.filter((d) => byKey.has(d) && d !== o.key))]));
  const rank = (o: PlannedObject) => (o.kind === 'view' || o.kind === 'materialized view' ? 1 : o.kind === 'trigger' ? 2 : 0);
  const out: PlannedObject[] = [];
  while (pending.size > 0) {
    const ready = [...pending.entries()].filter(([, deps]) => deps.size === 0).map(([k]) => byKey.get(k)!);
    if (ready.length === 0) {
      for (const k of pending.keys()) out.push(byKey.get(k)!);
      break;
    }
    ready.sort((a, b) => rank(a) - rank(b) || (a.label < b.label ? -1 : a.label > b.label ? 1 : 0));
    const next = ready[0]!;
    out.push(next);
    pending.delete(next.key);
    for (const deps of pending.values()) deps.delete(next.key);
  }
  return out;
}

// ---------------------------------------------------------------------------------------------------
// Catalog reading (source)
// ---------------------------------------------------------------------------------------------------

const EXTENSION_MEMBER = (classid: string, objid: string) =>
  `EXISTS (SELECT 1 FROM pg_depend e WHERE e.classid = '${classid}'::regclass AND e.objid = ${objid} AND e.deptype = 'e')`;

interface AggregateRow {
  oid: number;
  aggkind: string;
  args: string;
  transfn: number;
  finalfn: number;
  combinefn: number;
  serialfn: number;
  deserialfn: number;
  mtransfn: number;
  minvtransfn: number;
  mfinalfn: number;
  aggfinalextra: boolean;
  aggmfinalextra: boolean;
  aggfinalmodify: string;
  aggmfinalmodify: string;
  sortop: number;
  stype: string;
  aggtransspace: number;
  mstype: string | null;
  aggmtransspace: number;
  agginitval: string | null;
  aggminitval: string | null;
  proparallel: string;
}

/** pg_aggregate rows for these aggregates, by oid. Expects search_path = ''. */
export async function readAggregates(client: Client, oids: number[]): Promise<Map<number, CatalogAggregate>> {
  const out = new Map<number, CatalogAggregate>();
  if (oids.length === 0) return out;
  const rows = (
    await client.query<AggregateRow>(
      `SELECT a.aggfnoid::oid AS oid, a.aggkind::text AS aggkind, pg_get_function_arguments(a.aggfnoid) AS args,
              a.aggtransfn::oid AS transfn, a.aggfinalfn::oid AS finalfn, a.aggcombinefn::oid AS combinefn,
              a.aggserialfn::oid AS serialfn, a.aggdeserialfn::oid AS deserialfn, a.aggmtransfn::oid AS mtransfn,
              a.aggminvtransfn::oid AS minvtransfn, a.aggmfinalfn::oid AS mfinalfn, a.aggfinalextra, a.aggmfinalextra,
              a.aggfinalmodify::text AS aggfinalmodify, a.aggmfinalmodify::text AS aggmfinalmodify, a.aggsortop::oid AS sortop,
              format_type(a.aggtranstype, NULL) AS stype, a.aggtransspace,
              CASE WHEN a.aggmtranstype <> 0 THEN format_type(a.aggmtranstype, NULL) END AS mstype, a.aggmtransspace,
              a.agginitval, a.aggminitval, p.proparallel::text AS proparallel
         FROM pg_aggregate a JOIN pg_proc p ON p.oid = a.aggfnoid
        WHERE a.aggfnoid = ANY($1::oid[])`,
      [oids],
    )
  ).rows;
  const fnOids = [...new Set(rows.flatMap((r) => [r.transfn, r.finalfn, r.combinefn, r.serialfn, r.deserialfn, r.mtransfn, r.minvtransfn, r.mfinalfn].map(Number)))].filter((x) => x !== 0);
  const fns = new Map(
    (
      await client.query<{ oid: number; schema: string; name: string }>(
        `SELECT p.oid, n.nspname::text AS schema, p.proname::text AS name FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace WHERE p.oid = ANY($1::oid[])`,
        [fnOids],
      )
    ).rows.map((r) => [Number(r.oid), { schema: r.schema, name: r.name }]),
  );
  const opOids = rows.map((r) => Number(r.sortop)).filter((x) => x !== 0);
  const ops = new Map(
    (
      await client.query<{ oid: number; schema: string; name: string }>(
        `SELECT o.oid, n.nspname::text AS schema, o.oprname::text AS name FROM pg_operator o JOIN pg_namespace n ON n.oid = o.oprnamespace WHERE o.oid = ANY($1::oid[])`,
        [opOids],
      )
    ).rows.map((r) => [Number(r.oid), { schema: r.schema, name: r.name }]),
  );
  const fn = (oid: number) => (Number(oid) === 0 ? undefined : fns.get(Number(oid)));
  for (const r of rows) {
    const transfn = fn(r.transfn);
    if (!transfn) continue;
    const agg: CatalogAggregate = {
      kind: r.aggkind,
      args: r.args,
      transfn,
      finalExtra: r.aggfinalextra,
      mfinalExtra: r.aggmfinalextra,
      finalModify: r.aggfinalmodify,
      mfinalModify: r.aggmfinalmodify,
      stype: r.stype,
      sspace: Number(r.aggtransspace),
      msspace: Number(r.aggmtransspace),
      initcond: r.agginitval,
      minitcond: r.aggminitval,
      parallel: r.proparallel,
    };
    const opt = { finalfn: r.finalfn, combinefn: r.combinefn, serialfn: r.serialfn, deserialfn: r.deserialfn, mtransfn: r.mtransfn, minvtransfn: r.minvtransfn, mfinalfn: r.mfinalfn };
    for (const [k, v] of Object.entries(opt)) {
      const q = fn(v);
      if (q) (agg as unknown as Record<string, QualifiedName>)[k] = q;
    }
    if (r.mstype !== null) agg.mstype = r.mstype;
    const op = Number(r.sortop) === 0 ? undefined : ops.get(Number(r.sortop));
    if (op) agg.sortop = op;
    out.set(Number(r.oid), agg);
  }
  return out;
}

/**
 * Reads everything planSchemaObjects needs, in one read-only snapshot with search_path = '' (so the
 * printed definitions are qualified). The client must not be inside a transaction.
 */
export async function readObjectCatalog(
  client: Client,
  input: Pick<SchemaObjectsInput, 'schemas' | 'tables' | 'schemaMapping' | 'tableSuffix'>,
): Promise<ObjectCatalog> {
  await client.query('BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY');
  try {
    await client.query(`SET LOCAL search_path = ''`);
    const catalog = await readCatalogQueries(client, input);
    await client.query('COMMIT');
    return catalog;
  } catch (err) {
    await client.query('ROLLBACK').catch(() => undefined);
    throw err;
  }
}

interface OwnerRow {
  owner: string;
  owner_super: boolean;
  acl: AclEntry[] | null;
}
const ownerOf = (r: OwnerRow) => ({ name: r.owner, superuser: r.owner_super, acl: r.acl });

async function readCatalogQueries(client: Client, input: Pick<SchemaObjectsInput, 'schemas' | 'tables' | 'schemaMapping' | 'tableSuffix'>): Promise<ObjectCatalog> {
  const schemas = input.schemas;
  const roots = (
    await client.query<{ oid: number; schema: string; name: string }>(
      `SELECT c.oid, n.nspname::text AS schema, c.relname::text AS name
         FROM unnest($1::text[], $2::text[]) AS w(schema, name)
         JOIN pg_namespace n ON n.nspname = w.schema
         JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = w.name`,
      [input.tables.map((t) => t.source.schema), input.tables.map((t) => t.source.name)],
    )
  ).rows;
  const migrated: ObjectCatalog['migrated'] = [];
  for (const r of roots) {
    const t = input.tables.find((x) => x.source.schema === r.schema && x.source.name === r.name);
    if (t) migrated.push({ oid: Number(r.oid), source: t.source, target: t.target });
  }
  const parts = (
    await client.query<{ oid: number; schema: string; name: string }>(
      `SELECT t.relid::oid AS oid, n.nspname::text AS schema, c.relname::text AS name
         FROM unnest($1::oid[]) AS w(root)
         CROSS JOIN LATERAL pg_partition_tree(w.root) AS t
         JOIN pg_class c ON c.oid = t.relid
         JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE t.level > 0`,
      [migrated.map((m) => m.oid)],
    )
  ).rows;
  for (const p of parts) {
    const source = { schema: p.schema, name: p.name };
    migrated.push({ oid: Number(p.oid), source, target: mapTableName(source, input) });
  }

  const fnRows = (
    await client.query<{ oid: number; schema: string; name: string; prokind: string; signature: string; definition: string | null; security_definer: boolean } & OwnerRow>(
      `SELECT p.oid, n.nspname::text AS schema, p.proname::text AS name, p.prokind::text AS prokind,
              p.oid::regprocedure::text AS signature, p.prosecdef AS security_definer, ${ownerColumns('p.proowner')}, ${aclJson('p.proacl')} AS acl,
              CASE WHEN p.prokind <> 'a' THEN pg_get_functiondef(p.oid) END AS definition
         FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
        WHERE n.nspname = ANY($1::text[]) AND NOT ${EXTENSION_MEMBER('pg_proc', 'p.oid')}
        ORDER BY n.nspname, p.proname, p.oid`,
      [schemas],
    )
  ).rows;
  const aggregates = await readAggregates(
    client,
    fnRows.filter((f) => f.prokind === 'a').map((f) => Number(f.oid)),
  );
  const functions: CatalogFunction[] = fnRows.map((f) => {
    const out: CatalogFunction = { oid: Number(f.oid), schema: f.schema, name: f.name, kind: f.prokind, signature: f.signature, definition: f.definition, owner: ownerOf(f) };
    if (f.security_definer) out.securityDefiner = true;
    const agg = aggregates.get(Number(f.oid));
    if (agg) out.aggregate = agg;
    return out;
  });

  const viewRows = (
    await client.query<{ oid: number; schema: string; name: string; relkind: string; definition: string; options: string[] | null; populated: boolean; am: string | null } & OwnerRow>(
      `SELECT c.oid, n.nspname::text AS schema, c.relname::text AS name, c.relkind::text AS relkind, ${ownerColumns('c.relowner')}, ${aclJson('c.relacl')} AS acl,
              pg_get_viewdef(c.oid) AS definition, c.reloptions AS options, c.relispopulated AS populated, am.amname::text AS am
         FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
         LEFT JOIN pg_am am ON am.oid = c.relam
        WHERE c.relkind IN ('v', 'm') AND n.nspname = ANY($1::text[]) AND NOT ${EXTENSION_MEMBER('pg_class', 'c.oid')}
        ORDER BY n.nspname, c.relname`,
      [schemas],
    )
  ).rows;
  const mvIndexes = (
    await client.query<{ relid: number; name: string; definition: string }>(
      `SELECT i.indrelid AS relid, ic.relname::text AS name, pg_get_indexdef(i.indexrelid) AS definition
         FROM pg_index i JOIN pg_class ic ON ic.oid = i.indexrelid
        WHERE i.indrelid = ANY($1::oid[])
        ORDER BY 1, 2`,
      [viewRows.filter((v) => v.relkind === 'm').map((v) => Number(v.oid))],
    )
  ).rows;
  const views: CatalogView[] = viewRows.map((v) => ({
    oid: Number(v.oid),
    schema: v.schema,
    name: v.name,
    kind: v.relkind === 'm' ? 'm' : 'v',
    definition: v.definition,
    options: v.options ?? [],
    populated: v.populated,
    accessMethod: v.am,
    indexes: mvIndexes.filter((i) => Number(i.relid) === Number(v.oid)).map((i) => ({ name: i.name, definition: i.definition })),
    owner: ownerOf(v),
  }));

  const triggerRels = [...migrated.map((m) => m.oid), ...views.map((v) => v.oid)];
  // A partition's copy of its parent's trigger: tgparentid from 13 on; 12 marks the copies internal.
  const parentless = (await serverVersionNum(client)) >= 130000 ? ' AND t.tgparentid = 0' : '';
  const triggers = (
    await client.query<{ oid: number; name: string; relid: number; schema: string; table: string; definition: string; enabled: string }>(
      `SELECT t.oid, t.tgname::text AS name, t.tgrelid AS relid, n.nspname::text AS schema, c.relname::text AS table,
              pg_get_triggerdef(t.oid) AS definition, t.tgenabled::text AS enabled
         FROM pg_trigger t
         JOIN pg_class c ON c.oid = t.tgrelid
         JOIN pg_namespace n ON n.oid = c.relnamespace
         JOIN pg_proc p ON p.oid = t.tgfoid
         JOIN pg_namespace fn ON fn.oid = p.pronamespace
        WHERE t.tgrelid = ANY($1::oid[]) AND NOT t.tgisinternal${parentless} AND fn.nspname <> $2
        ORDER BY n.nspname, c.relname, t.tgname`,
      [triggerRels, FENCE_SCHEMA],
    )
  ).rows.map((t) => ({ oid: Number(t.oid), name: t.name, relid: Number(t.relid), table: { schema: t.schema, name: t.table }, definition: t.definition, enabled: t.enabled }));

  const deps = (
    await client.query<{ object: string; kind: DependencyKind; oid: number }>(
      `WITH d AS (
         SELECT 'f:' || d.objid AS object, d.refclassid, d.refobjid FROM pg_depend d
          WHERE d.classid = 'pg_proc'::regclass AND d.objid = ANY($1::oid[]) AND d.deptype = 'n'
         UNION ALL
         SELECT 'v:' || r.ev_class, d.refclassid, d.refobjid FROM pg_rewrite r
           JOIN pg_depend d ON d.classid = 'pg_rewrite'::regclass AND d.objid = r.oid
          WHERE r.ev_class = ANY($2::oid[]) AND d.deptype = 'n'
         UNION ALL
         SELECT 't:' || d.objid, d.refclassid, d.refobjid FROM pg_depend d
          WHERE d.classid = 'pg_trigger'::regclass AND d.objid = ANY($3::oid[]) AND d.deptype = 'n'
       )
       SELECT DISTINCT object,
              CASE refclassid WHEN 'pg_class'::regclass THEN 'class' WHEN 'pg_proc'::regclass THEN 'proc' ELSE 'type' END AS kind,
              refobjid AS oid
         FROM d
        WHERE refclassid IN ('pg_class'::regclass, 'pg_proc'::regclass, 'pg_type'::regclass)
        ORDER BY 1, 2, 3`,
      [functions.map((f) => f.oid), views.map((v) => v.oid), triggers.map((t) => t.oid)],
    )
  ).rows.map((d) => ({ object: d.object, kind: d.kind, oid: Number(d.oid) }));

  const typeRow = `t.oid, n.nspname::text AS schema, t.typname::text AS name, t.typrelid AS relid, ${EXTENSION_MEMBER('pg_type', 't.oid')} AS extension`;
  const refTypes = (
    await client.query<CatalogType & { refOid: number }>(
      `SELECT x.oid AS "refOid", ${typeRow}
         FROM pg_type x
         JOIN pg_type t ON t.oid = CASE WHEN x.typcategory = 'A' AND x.typelem <> 0 THEN x.typelem ELSE x.oid END
         JOIN pg_namespace n ON n.oid = t.typnamespace
        WHERE x.oid = ANY($1::oid[])`,
      [deps.filter((d) => d.kind === 'type').map((d) => d.oid)],
    )
  ).rows.map((t) => ({ ...t, oid: Number(t.oid), relid: Number(t.relid), refOid: Number(t.refOid) }));
  const schemaTypes = (
    await client.query<CatalogType>(
      `SELECT ${typeRow}
         FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
        WHERE n.nspname = ANY($1::text[]) AND NOT (t.typcategory = 'A' AND t.typelem <> 0)`,
      [schemas],
    )
  ).rows.map((t) => ({ ...t, oid: Number(t.oid), relid: Number(t.relid) }));

  const relOids = [
    ...new Set([
      ...deps.filter((d) => d.kind === 'class').map((d) => d.oid),
      ...refTypes.map((t) => t.relid),
      ...schemaTypes.map((t) => t.relid),
    ]),
  ].filter((x) => x !== 0);
  const relations = (
    await client.query<CatalogRelation>(
      `SELECT c.oid, n.nspname::text AS schema, c.relname::text AS name, c.relkind::text AS relkind
         FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = ANY($1::oid[])`,
      [relOids],
    )
  ).rows.map((r) => ({ ...r, oid: Number(r.oid) }));
  const procs = (
    await client.query<CatalogProc>(
      `SELECT p.oid, n.nspname::text AS schema, p.proname::text AS name, p.oid::regprocedure::text AS signature
         FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace WHERE p.oid = ANY($1::oid[])`,
      [deps.filter((d) => d.kind === 'proc').map((d) => d.oid)],
    )
  ).rows.map((p) => ({ ...p, oid: Number(p.oid) }));

  // Where string bodies look bare names up: every relation there, so a table that is not migrated
  // shadows a migrated one later on the path, as it does on the source.
  const pathSchemas = [...new Set([...schemas, ...functions.flatMap((f) => (f.definition ? functionSearchPath(f.definition) ?? [] : []))])];
  const pathRelations = (
    await client.query<QualifiedName>(
      `SELECT n.nspname::text AS schema, c.relname::text AS name
         FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = ANY($1::text[]) AND c.relkind IN ('r', 'p', 'v', 'm', 'f')`,
      [pathSchemas],
    )
  ).rows.map((r) => ({ schema: r.schema, name: r.name }));

  return { migrated, functions, views, triggers, schemaTypes, dependencies: deps, relations, procs, types: refTypes, pathRelations };
}

// ---------------------------------------------------------------------------------------------------
// Creating on the target
// ---------------------------------------------------------------------------------------------------

/** Errors a retry may cure (connection, lock, deadlock, shutdown, resources): they fail the activity instead of skipping an object. */
function transient(err: unknown): boolean {
  const code = (err as { code?: unknown })?.code;
  if (typeof code !== 'string' || !/^[0-9A-Z]{5}$/.test(code)) return true; // no SQLSTATE: the connection itself
  return /^(08|40|53|57|58)/.test(code) || code === '55P03' || code === '55006';
}

function errorText(err: unknown): string {
  const e = err as { message?: unknown; code?: unknown };
  const msg = typeof e?.message === 'string' ? e.message : String(err);
  return typeof e?.code === 'string' ? `${msg} (SQLSTATE ${e.code})` : msg;
}

type Existing = 'absent' | 'same' | { different: string };

async function existingState(c: Client, o: PlannedObject): Promise<Existing> {
  const ex = o.existing;
  if (ex.kind === 'function') {
    const r = await c.query<{ oid: number; prokind: string }>(`SELECT p.oid, p.prokind::text AS prokind FROM pg_proc p WHERE p.oid = to_regprocedure($1)`, [ex.signature]);
    const row = r.rows[0];
    if (!row) return 'absent';
    if ((row.prokind === 'a') !== ex.aggregate) return { different: `a ${row.prokind === 'a' ? 'aggregate' : 'function'} with that signature already exists on the target` };
    let current: string;
    if (ex.aggregate) {
      const agg = (await readAggregates(c, [Number(row.oid)])).get(Number(row.oid));
      if (!agg) return { different: 'an aggregate with that signature already exists on the target' };
      const name = await c.query<{ schema: string; name: string }>(
        `SELECT n.nspname::text AS schema, p.proname::text AS name FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace WHERE p.oid = $1`,
        [row.oid],
      );
      const identity: ObjectRenames = { relations: new Map(), functions: new Map(), types: new Map(), schemaMapping: {} };
      current = aggregateDdl(agg, name.rows[0]!, identity);
    } else {
      current = (await c.query<{ d: string }>(`SELECT pg_get_functiondef($1::oid) AS d`, [row.oid])).rows[0]!.d;
    }
    return sameDefinition(current, o.compareText) ? 'same' : { different: 'a different function with that name and arguments already exists on the target' };
  }
  if (ex.kind === 'relation') {
    const r = await c.query<{ relkind: string; def: string | null }>(
      `SELECT c.relkind::text AS relkind, CASE WHEN c.relkind IN ('v', 'm') THEN pg_get_viewdef(c.oid) END AS def FROM pg_class c WHERE c.oid = to_regclass($1)`,
      [qname(ex.name)],
    );
    const row = r.rows[0];
    if (!row) return 'absent';
    if (row.relkind !== ex.relkind) return { different: `a ${RELKIND_WORDS[row.relkind] ?? 'relation'} named ${displayName(ex.name)} already exists on the target` };
    return row.def !== null && sameDefinition(row.def, o.compareText) ? 'same' : { different: `${displayName(ex.name)} already exists on the target with a different definition` };
  }
  const r = await c.query<{ def: string }>(`SELECT pg_get_triggerdef(t.oid) AS def FROM pg_trigger t WHERE t.tgrelid = to_regclass($1) AND t.tgname = $2`, [
    qname(ex.table),
    ex.name,
  ]);
  const row = r.rows[0];
  if (!row) return 'absent';
  return sameDefinition(row.def, o.compareText) ? 'same' : { different: `a different trigger ${ex.name} already exists on ${displayName(ex.table)}` };
}

async function inTransaction(c: Client, statements: string[]): Promise<void> {
  await c.query('BEGIN');
  try {
    for (const s of statements) await c.query(s);
    await c.query('COMMIT');
  } catch (err) {
    await c.query('ROLLBACK').catch(() => undefined);
    throw err;
  }
}

/** Which of the requirements exist on the target (by `kind:lookup`). */
async function availableOnTarget(c: Client, reqs: Requirement[]): Promise<Set<string>> {
  const ok = new Set<string>();
  const fn = { relation: 'to_regclass', function: 'to_regprocedure', type: 'to_regtype' } as const;
  for (const kind of ['relation', 'function', 'type'] as const) {
    const names = [...new Set(reqs.filter((r) => r.kind === kind).map((r) => r.lookup))];
    if (names.length === 0) continue;
    const r = await c.query<{ x: string }>(`SELECT x FROM unnest($1::text[]) AS x WHERE ${fn[kind]}(x) IS NOT NULL`, [names]);
    for (const row of r.rows) ok.add(`${kind}:${row.x}`);
  }
  return ok;
}

/** How objects get their owners: spec.owners and the target's roles (absent: the migration role keeps them). */
export interface OwnersContext {
  owners: OwnersSpec | undefined;
  roles: TargetRoles;
  /** Source roles that could not be carried (filled in). */
  missing: Set<string>;
  /** Target owners the migration role is not a member of (filled in). */
  notMember: Set<string>;
}

/**
 * Owners and grants of objects CREATING_TABLES made (ours by their mark), one transaction each. A
 * failure (a non-superuser migration role that is not a member of the owner role) leaves that object
 * as it was and says so.
 */
async function carryAccess(c: Client, objects: readonly OwnedObject[], ctx: OwnersContext, notices: string[]): Promise<void> {
  for (const o of objects) {
    const plan = accessStatements(o.access, ctx.owners, ctx.roles);
    for (const m of plan.missing) ctx.missing.add(m);
    if (plan.notMember) ctx.notMember.add(plan.notMember);
    if (plan.statements.length === 0) continue;
    try {
      await inTransaction(c, plan.statements);
    } catch (err) {
      if (transient(err)) throw err;
      notices.push(`the owner and grants of ${o.label} were not carried: ${errorText(err)}`);
    }
  }
}

/**
 * A materialized view is refreshed as its owner on the target (REFRESH runs its query, and the
 * functions it calls, with the owner's rights): never as a superuser unless its source owner was one.
 */
async function refreshAsOwner(c: Client, o: PlannedObject): Promise<string | undefined> {
  const r = await c.query<{ owner: string; superuser: boolean }>(
    `SELECT r.rolname::text AS owner, r.rolsuper AS superuser FROM pg_class c JOIN pg_roles r ON r.oid = c.relowner WHERE c.oid = to_regclass($1)`,
    [o.existing.kind === 'relation' ? qname(o.existing.name) : ''],
  );
  const owner = r.rows[0];
  if (!owner) return 'it was not found on the target to refresh';
  if (owner.superuser && !o.access?.ownerSuper) {
    return `not refreshed: its owner on the target, ${JSON.stringify(owner.owner)}, is a superuser and its source owner${o.access ? ` ${JSON.stringify(o.access.owner)}` : ''} is not (its owner was not carried), and refreshing runs its query with the owner's rights; give it an owner and refresh it`;
  }
  await inTransaction(c, [`SET LOCAL ROLE ${ident(owner.owner)}`, o.refresh!]);
  return undefined;
}

/** Creates the planned objects on the target (see the file comment), with their owners and grants when `access` is given. */
export async function createPlannedObjects(c: Client, plan: PlannedObject[], hooks: SchemaObjectsHooks = {}, access?: OwnersContext): Promise<SchemaObjectsResult> {
  const result: SchemaObjectsResult = { created: [], skipped: [], notices: [], rewritten: [] };
  // Like pg_dump: names in the definitions are qualified; function bodies are not checked at creation
  // (they may name tables through a search_path, and plpgsql is checked when it runs anyway).
  await c.query(`SET search_path = ''`);
  await c.query('SET check_function_bodies = off');
  // The application may be writing to the target already: queue briefly behind it, then retry later.
  await c.query(`SET lock_timeout = '30s'`);
  const available = await availableOnTarget(c, plan.flatMap((o) => o.requires));
  const state = new Map<string, 'created' | 'kept' | 'skipped'>();
  const label = new Map(plan.map((o) => [o.key, o.label]));
  const skip = (o: PlannedObject, reason: string) => {
    state.set(o.key, 'skipped');
    result.skipped.push({ object: o.label, reason });
  };
  let present = 0;
  let done = 0;
  for (const o of plan) {
    if (hooks.signal?.aborted) throw new Error('cancelled while creating views, functions and triggers');
    hooks.heartbeat?.({ done: done++, total: plan.length });
    if (o.notices) result.notices.push(...o.notices);
    const blocked = o.dependsOn.filter((d) => state.get(d) === 'skipped');
    if (o.problem) {
      skip(o, o.problem);
      continue;
    }
    if (blocked.length) {
      skip(o, `depends on ${blocked.map((b) => label.get(b) ?? b).join(', ')}, which was not created`);
      continue;
    }
    const missing = o.requires.filter((r) => !available.has(`${r.kind}:${r.lookup}`));
    if (missing.length) {
      skip(o, missing.map((m) => m.reason).join('; '));
      continue;
    }
    try {
      const ex = await existingState(c, o);
      if (ex === 'same') {
        if (o.ensure.length) await inTransaction(c, o.ensure);
        present++;
        state.set(o.key, 'created');
        result.created.push(o.createdLabel);
        if (o.rewritten) result.rewritten.push(o.rewritten);
      } else if (ex !== 'absent') {
        // Someone else's object: never replaced. Whatever depends on it will use it as it is.
        state.set(o.key, 'kept');
        result.skipped.push({ object: o.label, reason: `${ex.different}; left as it is` });
      } else {
        const a = access && o.access ? accessStatements(o.access, access.owners, access.roles) : undefined;
        for (const m of a?.missing ?? []) access?.missing.add(m);
        if (a?.notMember) access?.notMember.add(a.notMember);
        if (o.securityDefiner) {
          // Its callers run it with its owner's rights: the owner must be the source's (mapped), and no superuser.
          const why =
            a?.owner === undefined
              ? `${SECURITY_DEFINER_UNOWNED}${
                  !access
                    ? ' (spec.owners is false)'
                    : a?.notMember
                    ? ` (the migration role is not a member of ${JSON.stringify(a.notMember)}, which should own it)`
                    : o.access
                      ? ` (its owner on the source, ${JSON.stringify(o.access.owner)}, has no role on the target)`
                      : ''
                }`
              : access?.roles.roles.get(a.owner)
                ? `SECURITY DEFINER: its owner on the target would be ${JSON.stringify(a.owner)}, a superuser, and its callers would run it with those rights; create it yourself, owned by a role that is not a superuser`
                : undefined;
          if (why) {
            skip(o, why);
            continue;
          }
        }
        try {
          await inTransaction(c, [...o.statements, ...(a?.statements ?? [])]);
        } catch (err) {
          // Without its owner a SECURITY DEFINER function is not created at all (above); another object is, and the failure is said.
          if (transient(err) || !a?.statements.length || o.securityDefiner) throw err;
          await inTransaction(c, o.statements);
          result.notices.push(`the owner and grants of ${o.label} were not carried: ${errorText(err)}`);
        }
        state.set(o.key, 'created');
        result.created.push(o.createdLabel);
        if (o.rewritten) result.rewritten.push(o.rewritten);
      }
    } catch (err) {
      if (transient(err)) throw err;
      skip(o, `creating it failed: ${errorText(err)}`);
    }
  }
  for (const o of plan) {
    if (!o.refresh || state.get(o.key) !== 'created') continue;
    if (hooks.signal?.aborted) throw new Error('cancelled while refreshing materialized views');
    hooks.heartbeat?.({ done, total: plan.length });
    try {
      const notRefreshed = await refreshAsOwner(c, o);
      if (notRefreshed) {
        result.notices.push(`${o.label}: ${notRefreshed}`);
        continue;
      }
    } catch (err) {
      if (transient(err)) throw err;
      result.created = result.created.filter((x) => x !== o.createdLabel);
      skip(o, `created, but REFRESH MATERIALIZED VIEW failed: ${errorText(err)}`);
    }
  }
  if (present) result.notices.push(`${present} of these objects were already on the target with the same definition (a re-run)`);
  return result;
}

/**
 * The activity: reads the source's objects, plans them under the mapping and creates them on the
 * target. Call after cutover, once the apply has stopped (see the file comment).
 */
export async function migrateSchemaObjects(input: SchemaObjectsInput, hooks: SchemaObjectsHooks = {}): Promise<SchemaObjectsResult> {
  let source: Client | undefined;
  let target: Client | undefined;
  try {
    source = await connect(input.source, { applicationName: 'pg-dts objects' });
    const withObjects = input.objects !== false;
    const catalog = withObjects ? await readObjectCatalog(source, input) : undefined;
    const carried = input.owners !== false && input.migrationId ? await readSourceAccess(source, input) : [];
    await source.end().catch(() => undefined);
    source = undefined;
    const plan = catalog ? planSchemaObjects(catalog, input) : [];
    target = await connect(input.target, { applicationName: 'pg-dts objects' });
    const ctx: OwnersContext | undefined = input.owners === false ? undefined : { owners: input.owners, roles: await readTargetRoles(target), missing: new Set(), notMember: new Set() };
    const notices: string[] = [];
    // Tables, schemas, sequences and types first: views and functions owned by those roles, and the
    // refresh as the matview's owner, need the owner's rights on the tables.
    if (ctx && input.migrationId) {
      await target.query(`SET lock_timeout = '30s'`);
      await carryAccess(target, await oursOnTarget(target, carried, input.migrationId), ctx, notices);
    }
    const result = await createPlannedObjects(target, plan, hooks, ctx);
    const missing = ctx && missingRolesNotice(ctx.missing, ctx.roles.current, input.owners !== undefined);
    const notMember = ctx && notMemberNotice(ctx.notMember, ctx.roles);
    result.notices.push(...notices, ...[missing, notMember].filter((n): n is string => n !== undefined));
    return result;
  } catch (err) {
    throw classify(err, 'create views, functions and triggers');
  } finally {
    await source?.end().catch(() => undefined);
    await target?.end().catch(() => undefined);
  }
}

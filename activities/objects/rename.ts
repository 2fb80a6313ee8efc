/**
 * Renaming printed definitions (views, SQL-standard function bodies, triggers, signatures) through
 * the mapping; string function bodies reuse rewriteQueryTokens in body mode (function-body.ts).
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
 */
import { quoteIdentLikePg } from '../ddl';
import { displayName, type QualifiedName } from '../spec';
import { fromNameKey, mapSchema as mapSchemaName, nameKey } from '../naming';
import { ident, literal, qname } from '../sql';
import { applyEdits, asciiLower, isIdentToken, isPunct, lexSql, nextSignificant, readName, type Edit, type SqlToken } from './lexer';

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
export interface BodyScan {
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
export function renamedNamed(renames: ObjectRenames, name: string): QualifiedName[] {
  const out: QualifiedName[] = [];
  for (const [k, target] of renames.relations) {
    const source = fromNameKey(k);
    if (source.name === name && !isIdentity(source, target)) out.push(source);
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
export function resolveBodyRelation(parts: string[], scope: BodyScope): BodyRelation | 'kept' | undefined {
  const { renames } = scope;
  const mapSchema = (s: string) => mapSchemaName(s, renames);
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
export function rewriteQueryTokens(
  tokens: readonly SqlToken[],
  from: number,
  to: number,
  renames: ObjectRenames,
  edits: Edit[],
  mode: 'query' | 'trigger',
  body?: BodyScan,
): { triggerTable?: QualifiedName } {
  const scan = new QueryScan(tokens, to, renames, edits, mode, body);
  for (let r = from; r < to; ) r = scan.step(r);
  return scan.triggerTable ? { triggerTable: scan.triggerTable } : {};
}

/** A name as readName returns it. */
type Name = { parts: string[]; end: number };

/** rewriteQueryTokens as it walks the tokens: the open parentheses (frames), the token before, a trigger's table. */
class QueryScan {
  private readonly frames: Frame[] = [{ clause: '', expect: undefined }];
  private prev: SqlToken | undefined;
  private triggerOnSeen = false;
  private pendingCall = false;
  triggerTable: QualifiedName | undefined;

  constructor(
    private readonly tokens: readonly SqlToken[],
    private readonly to: number,
    private readonly renames: ObjectRenames,
    private readonly edits: Edit[],
    private readonly mode: 'query' | 'trigger',
    private readonly body: BodyScan | undefined,
  ) {}

  /** Handles the token at r; returns the index of the next one. */
  step(r: number): number {
    const t = this.tokens[r]!;
    if (t.kind === 'space' || t.kind === 'comment') return r + 1;
    const top = this.frames[this.frames.length - 1]!;
    if (t.kind === 'punct') {
      this.punct(t, top);
      this.pendingCall = false;
      this.prev = t;
      return r + 1;
    }
    this.pendingCall = false;
    if (isIdentToken(t)) return this.name(r, t, top);
    this.prev = t;
    return r + 1;
  }

  private prevWord(): string {
    return this.prev?.kind === 'word' ? this.prev.text.toUpperCase() : '';
  }

  private punct(t: SqlToken, top: Frame): void {
    if (t.text === '(') {
      // A parenthesised FROM item (a join or a subquery) continues the FROM list inside.
      this.frames.push({ clause: top.expect ? 'FROM' : '', expect: top.expect, ...(this.pendingCall ? { call: true } : {}) });
      top.expect = undefined;
    } else if (t.text === ')') {
      if (this.frames.length > 1) this.frames.pop();
    } else if (t.text === ',') {
      if (top.clause === 'FROM') top.expect = 'from';
      else if (top.clause === 'TRUNCATE') top.expect = 'plain';
    } else if (t.text === ';') {
      this.frames.length = 1;
      this.frames[0] = { clause: '', expect: undefined };
    }
  }

  /** A name (a keyword, a call, a type, a relation); returns the index after it (and after an alias it skipped). */
  private name(r: number, t: SqlToken, top: Frame): number {
    const { tokens, to } = this;
    const name = readName(tokens, r, to);
    if (name.parts.length === 1 && t.kind === 'word' && this.keyword(t.text.toUpperCase(), top, this.frames.length === 1)) {
      this.prev = t;
      return name.end;
    }
    const next = nextSignificant(tokens, name.end, to);
    const replace = (text: string, end = name.end) => this.edits.push({ start: r, end, text });
    if (isPunct(next, '(') && top.expect !== 'insert') {
      // A call; but INSERT INTO t (columns) is the relation with its column list.
      const target = lookup(this.renames.functions, name.parts);
      if (target) replace(qname(target));
      top.expect = undefined;
      this.pendingCall = this.body !== undefined;
    } else if (this.prev?.kind === 'op' && this.prev.text === '::') {
      const target = lookup(this.renames.types, name.parts);
      if (target) replace(qname(target));
    } else if (top.expect) {
      const skipped = this.relationItem(name, next, top, replace);
      if (skipped !== undefined) return skipped;
    } else if (this.body) {
      this.bodyName(name, next, this.body, replace);
    }
    this.prev = tokens[name.end - 1];
    return name.end;
  }

  /** A name where a relation stands (after FROM, JOIN, INSERT INTO, ...); returns the index after its alias when it skipped one. */
  private relationItem(name: Name, next: SqlToken | undefined, top: Frame, replace: (text: string, end?: number) => void): number | undefined {
    const { tokens, to } = this;
    const kind = top.expect;
    top.expect = undefined;
    const rel = this.relation(name.parts);
    if (rel === 'kept') {
      // nothing to change
    } else if (rel) {
      replace(rel.text);
      this.rewritten(rel);
      if (kind === 'trigger') this.triggerTable ??= rel.source;
      else if (kind !== 'plain' && rel.target.name !== rel.source.name && !(this.body ? startsAliasInBody(next) : startsAlias(next))) {
        // The reference name was the relation's own name: keep it as an alias (INSERT needs AS).
        const alias = this.body ? quoteIdentLikePg(rel.source.name) : ident(rel.source.name);
        this.edits.push({ start: name.end, end: name.end, text: `${kind === 'insert' ? ' AS ' : ' '}${alias}` });
      }
    } else this.mention(name.parts, true);
    if (this.body && startsAliasInBody(next)) {
      // Skip the alias (and AS): it is a name of this query, not a table.
      let a = tokens.indexOf(next!, name.end);
      if (next!.kind === 'word' && next!.text.toUpperCase() === 'AS') {
        const n2 = nextSignificant(tokens, a + 1, to);
        a = isIdentToken(n2) ? tokens.indexOf(n2, a + 1) : a;
      }
      this.prev = tokens[a];
      return a + 1;
    }
    return undefined;
  }

  /** A string body's name elsewhere: `t%ROWTYPE`, `t.col%TYPE`, `schema.table.column`, or a mention. */
  private bodyName(name: Name, next: SqlToken | undefined, body: BodyScan, replace: (text: string, end?: number) => void): void {
    const { tokens, to } = this;
    const pct = nextSignificant(tokens, name.end, to);
    const pctAt = pct ? tokens.indexOf(pct, name.end) : -1;
    const what = pct?.kind === 'op' && pct.text === '%' ? nextSignificant(tokens, pctAt + 1, to) : undefined;
    const attr = what?.kind === 'word' ? what.text.toUpperCase() : '';
    if (attr === 'ROWTYPE' || (attr === 'TYPE' && name.parts.length >= 2)) {
      // PL/pgSQL: table%ROWTYPE, table.column%TYPE (where a variable of that name wins, as in PL/pgSQL).
      const relParts = attr === 'ROWTYPE' ? name.parts : name.parts.slice(0, -1);
      const rel = attr === 'TYPE' && relParts.length === 1 && body.scope.variables.has(relParts[0]!) ? 'kept' : this.relation(relParts);
      if (rel === undefined) this.mention(relParts, true);
      else if (rel !== 'kept') {
        replace(rel.text, attr === 'ROWTYPE' ? name.end : name.end - 2);
        this.rewritten(rel);
      }
    } else if (name.parts.length === 3 && !isPunct(next, '(')) {
      // schema.table.column: the table keeps its old name as alias when renamed, else it is just moved.
      const rel = resolveBodyRelation(name.parts.slice(0, 2), body.scope);
      if (rel && rel !== 'kept') {
        replace(rel.target.name !== rel.source.name ? quoteIdentLikePg(rel.source.name) : qname(rel.target), name.end - 2);
        this.rewritten(rel);
      }
    } else this.mention(name.parts, false);
  }

  /** A keyword moves the clause and what the next name is expected to be; false: the word is a name here. */
  private keyword(kw: string, top: Frame, atTop: boolean): boolean {
    switch (kw) {
      case 'FROM':
        if (this.mode === 'trigger') {
          if (atTop) top.expect = 'trigger';
          return true;
        }
        if (this.prevWord() === 'DISTINCT') return true; // IS [NOT] DISTINCT FROM
        if (top.call) return true; // EXTRACT(year FROM x), substring(s FROM 2), trim(BOTH FROM s)
        top.clause = 'FROM';
        top.expect = 'from';
        return true;
      case 'JOIN':
        top.clause = 'FROM';
        top.expect = 'from';
        return true;
      case 'ON':
        if (this.mode === 'trigger' && atTop && !this.triggerOnSeen) {
          this.triggerOnSeen = true;
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
        if (this.prevWord() === 'INSERT' || this.prevWord() === 'MERGE') {
          top.clause = 'DML';
          top.expect = this.prevWord() === 'INSERT' ? 'insert' : 'dml';
        }
        return true;
      case 'UPDATE':
        if (this.mode === 'query' && !['FOR', 'KEY', 'DO', 'OR', 'THEN'].includes(this.prevWord())) {
          top.clause = 'DML';
          top.expect = 'dml';
        } else top.expect = undefined;
        return true;
      case 'DELETE':
        top.clause = 'DML';
        top.expect = undefined;
        return true;
      case 'TABLE':
        if (!this.body) return false;
        top.call = false;
        top.expect = TABLE_DDL.has(this.prevWord()) ? undefined : 'plain';
        if (this.prevWord() !== 'TRUNCATE' && this.prevWord() !== 'LOCK') top.clause = 'TABLE';
        return true;
      case 'TRUNCATE':
        if (!this.body) return false;
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
  }

  /** A name in a relation position: renamed when it is a migrated table or a recreated view. */
  private relation(parts: string[]): BodyRelation | 'kept' | undefined {
    if (this.body) return resolveBodyRelation(parts, this.body.scope);
    const target = lookup(this.renames.relations, parts);
    return target ? { source: { schema: parts[0]!, name: parts[1]! }, target, text: qname(target) } : undefined;
  }

  private rewritten(rel: BodyRelation): void {
    this.body?.rewritten.set(displayName(rel.source), displayName(rel.target));
  }

  /**
   * A name that looks like a renamed relation where it was not rewritten: `schema.table` anywhere, a
   * bare name in a relation position, or after a word that names a relation in statements not
   * rewritten (LOCK rental, ANALYZE rental, CREATE INDEX ... ON rental). Bare names elsewhere are
   * columns and variables far more often than tables: not reported.
   */
  private mention(parts: string[], relationPosition: boolean): void {
    if (!this.body) return;
    if (parts.length >= 2) {
      const source = { schema: parts[0]!, name: parts[1]! };
      const target = this.renames.relations.get(nameKey(source));
      if (target && !isIdentity(source, target)) this.body.notFollowed.add(displayName(source));
    } else if (parts.length === 1 && !this.body.scope.shadowed.has(parts[0]!) && !this.body.scope.variables.has(parts[0]!) && (relationPosition || UTILITY_BEFORE_RELATION.has(this.prevWord()))) {
      for (const q of renamedNamed(this.renames, parts[0]!)) this.body.notFollowed.add(displayName(q));
    }
  }
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
export function rewriteHeaderTokens(tokens: readonly SqlToken[], from: number, to: number, renames: ObjectRenames, edits: Edit[]): void {
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

/** A pg_get_triggerdef statement with its table (and a constraint trigger's FROM table), function and types renamed. */
export function rewriteTriggerDefinition(definition: string, renames: ObjectRenames): { text: string; table?: QualifiedName } {
  const tokens = lexSql(definition);
  const edits: Edit[] = [];
  const r = rewriteQueryTokens(tokens, 0, tokens.length, renames, edits, 'trigger');
  return r.triggerTable ? { text: applyEdits(tokens, edits), table: r.triggerTable } : { text: applyEdits(tokens, edits) };
}

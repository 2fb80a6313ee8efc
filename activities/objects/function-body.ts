/**
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
 */
import { displayName } from '../spec';
import { applyEdits, identValue, isIdentToken, isPunct, lexSql, nextSignificant, readName, type Edit, type SqlToken } from './lexer';
import { renamedNamed, resolveBodyRelation, rewriteHeaderTokens, rewriteQueryTokens, type BodyScan, type BodyScope, type ObjectRenames } from './rename';

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
      const named = namedInUnreadBody(inner, scan.scope);
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

/**
 * The renamed relations a body in a language pg-dts does not read seems to name, words in its strings
 * included (a hint, not a parse).
 */
function namedInUnreadBody(inner: readonly SqlToken[], scope: BodyScope): Set<string> {
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
      const rel = resolveBodyRelation(name.parts.slice(0, 2), scope);
      if (rel && rel !== 'kept') named.add(displayName(rel.source));
      else if (rel === undefined && name.parts.length === 1) for (const x of renamedNamed(scope.renames, name.parts[0]!)) named.add(displayName(x));
      r = name.end;
    }
  };
  words(inner, 0);
  return named;
}

/** rewriteFunction's text. */
export function rewriteFunctionDefinition(definition: string, renames: ObjectRenames, existing?: ReadonlySet<string>): string {
  return rewriteFunction(definition, renames, existing).text;
}

/**
 * The lexer the objects' renaming works on: PostgreSQL's printed definitions (and hand-written
 * function bodies) split into tokens that concatenate back to the input exactly, so a rename is a
 * list of token-range edits and everything else stays as PostgreSQL printed it.
 */
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

export const isIdentToken = (t: SqlToken | undefined): t is SqlToken & { kind: 'word' | 'quoted' } => t !== undefined && (t.kind === 'word' || t.kind === 'quoted');
export const isPunct = (t: SqlToken | undefined, p: string) => t !== undefined && t.kind === 'punct' && t.text === p;
export const asciiLower = (s: string) => s.replace(/[A-Z]/g, (c) => c.toLowerCase());

/** The name an identifier token stands for: quoted as written, bare folded to lower case (ASCII only, like the server). */
export function identValue(t: SqlToken): string {
  return t.kind === 'quoted' ? t.text.slice(1, -1).replace(/""/g, '"') : asciiLower(t.text);
}

/** A dotted name starting at token r: its parts and the index after it. */
export function readName(tokens: readonly SqlToken[], r: number, to: number): { parts: string[]; end: number } {
  const parts = [identValue(tokens[r]!)];
  let end = r + 1;
  while (end + 1 < to && isPunct(tokens[end], '.') && isIdentToken(tokens[end + 1])) {
    parts.push(identValue(tokens[end + 1]!));
    end += 2;
  }
  return { parts, end };
}

export function nextSignificant(tokens: readonly SqlToken[], r: number, to: number): SqlToken | undefined {
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

/** Tokens [start, end) replaced by text (start = end: an insertion). */
export interface Edit {
  start: number;
  end: number;
  text: string;
}

/** The tokens with the edits applied, the rest exactly as it was. */
export function applyEdits(tokens: readonly SqlToken[], edits: Edit[]): string {
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

/**
 * Issue 21's shape, kept: production code (activities/, client/, connection/, worker/, workflows/) has
 * no file over 800 lines, no function over 80 lines, no import loop between its modules (type-only
 * imports included: a loop of types still ties two modules' meaning together), and no upward import:
 * the worker and what it shares with the clients (connection/) import nothing from client/.
 */
import fs from 'node:fs';
import path from 'node:path';
import { execFileSync } from 'node:child_process';
import ts from 'typescript';
import { describe, expect, it } from 'vitest';

const root = path.join(__dirname, '../..');
const files = execFileSync('git', ['ls-files', 'activities', 'client', 'connection', 'worker', 'workflows'], { cwd: root, encoding: 'utf8' })
  .split('\n')
  .filter((f) => f.endsWith('.ts') && !f.endsWith('.d.ts'));
const sources = new Map(files.map((f) => [f, ts.createSourceFile(f, fs.readFileSync(path.join(root, f), 'utf8'), ts.ScriptTarget.Latest, true)]));

describe('the layout of production code', () => {
  it('finds the files (the check is not vacuous)', () => {
    expect(files.length).toBeGreaterThan(100);
  });

  it('has no file over 800 lines', () => {
    const long = [...sources].map(([f, s]) => [f, s.getLineAndCharacterOfPosition(s.getEnd()).line] as const).filter(([, n]) => n > 800);
    expect(long).toEqual([]);
  });

  it('has no function over 80 lines', () => {
    const long: string[] = [];
    for (const [f, s] of sources) {
      const visit = (n: ts.Node): void => {
        if (ts.isFunctionDeclaration(n) || ts.isMethodDeclaration(n) || ts.isArrowFunction(n) || ts.isFunctionExpression(n)) {
          const a = s.getLineAndCharacterOfPosition(n.getStart()).line;
          const lines = s.getLineAndCharacterOfPosition(n.getEnd()).line - a + 1;
          if (lines > 80) long.push(`${f}:${a + 1} (${lines} lines)`);
        }
        ts.forEachChild(n, visit);
      };
      visit(s);
    }
    expect(long).toEqual([]);
  });

  /** Module -> the production modules it imports (or re-exports from). */
  const importGraph = () => {
    const graph = new Map<string, string[]>();
    for (const [f, s] of sources) {
      const deps: string[] = [];
      for (const st of s.statements) {
        const spec = (ts.isImportDeclaration(st) || ts.isExportDeclaration(st)) && st.moduleSpecifier && ts.isStringLiteral(st.moduleSpecifier) ? st.moduleSpecifier.text : undefined;
        if (!spec?.startsWith('.')) continue;
        const base = path.normalize(path.join(path.dirname(f), spec));
        const target = [`${base}.ts`, path.join(base, 'index.ts')].find((c) => sources.has(c));
        if (target) deps.push(target);
      }
      graph.set(f, deps);
    }
    return graph;
  };

  it('has no upward import: worker/, connection/, activities/ and workflows/ import nothing from client/', () => {
    const upward = [...importGraph()].flatMap(([f, deps]) => (/^(worker|connection|activities|workflows)\//.test(f) ? deps.filter((d) => d.startsWith('client/')).map((d) => `${f} → ${d}`) : []));
    expect(upward).toEqual([]);
    // connection/ sits below the worker too.
    const below = [...importGraph()].flatMap(([f, deps]) => (f.startsWith('connection/') ? deps.filter((d) => d.startsWith('worker/')).map((d) => `${f} → ${d}`) : []));
    expect(below).toEqual([]);
  });

  it('has no import loop', () => {
    const graph = importGraph();
    // Depth-first, colouring: a grey module reached again closes a loop.
    const colour = new Map<string, 'grey' | 'black'>();
    const loops: string[] = [];
    const visit = (f: string, trail: string[]): void => {
      colour.set(f, 'grey');
      for (const d of graph.get(f) ?? []) {
        if (colour.get(d) === 'grey') loops.push([...trail.slice(trail.indexOf(d)), f, d].join(' → '));
        else if (!colour.has(d)) visit(d, [...trail, f]);
      }
      colour.set(f, 'black');
    };
    for (const f of graph.keys()) if (!colour.has(f)) visit(f, []);
    expect(loops).toEqual([]);
  });
});

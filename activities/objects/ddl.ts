/**
 * The DDL that recreates a view, materialized view (with its indexes) or aggregate on the target,
 * built from the source's catalog rows through the renames (pure).
 */
import { rewriteExprTypes, rewriteIndexDefinition, type TypeRename } from '../ddl';
import { fromNameKey, nameKey, targetObjectName } from '../naming';
import type { AclEntry } from '../owners';
import type { QualifiedName } from '../spec';
import { ident, literal, qname } from '../sql';
import { rewriteQueryText, rewriteSignature, type ObjectRenames } from './rename';
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
  const typeRenames: TypeRename[] = [...renames.types.entries()].map(([k, t]) => ({ source: fromNameKey(k), target: t }));
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

export const TRIGGER_ENABLE: Record<string, string> = { D: 'DISABLE TRIGGER', R: 'ENABLE REPLICA TRIGGER', A: 'ENABLE ALWAYS TRIGGER' };

/**
 * Planning (pure): what to create, in which order, needing what. The catalog read from the source
 * (catalog.ts) in, the PlannedObjects create.ts runs out.
 *
 * Names on the target follow the rest of pg-dts:
 *   view, materialized view -> like a table: schema through schemaMapping, name + tableSuffix
 *   function, procedure, aggregate -> like a type: schema through schemaMapping, same name
 *   trigger -> same name, on the target table (or view)
 *   index of a materialized view -> name + suffix (like a table's)
 */
import type { AclEntry, SourceAccess } from '../owners';
import { displayName, type QualifiedName } from '../spec';
import { mapTableName, mapTypeName, MAX_IDENTIFIER_BYTES, nameKey } from '../naming';
import { ident, qname } from '../sql';
import { aggregateDdl, TRIGGER_ENABLE, viewDdl, type CatalogAggregate, type CatalogView } from './ddl';
import { rewriteFunction, type FunctionRewrite } from './function-body';
import { rewriteSignature, rewriteTriggerDefinition, type ObjectRenames } from './rename';

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

export const SECURITY_DEFINER_UNOWNED =
  'SECURITY DEFINER: it would be owned by the migration role (usually a superuser), and its callers would run it with those rights; create it on the target yourself, owned by the role that should hold those rights, with its grants';

export const RELKIND_WORDS: Record<string, string> = {
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
  const relations = new Map<string, QualifiedName>();
  for (const m of catalog.migrated) relations.set(nameKey(m.source), m.target);
  for (const v of catalog.views) relations.set(nameKey(v), mapTableName({ schema: v.schema, name: v.name }, mapping));
  const functions = new Map<string, QualifiedName>();
  for (const f of catalog.functions) functions.set(nameKey(f), mapTypeName(f, mapping));
  const types = new Map<string, QualifiedName>();
  // User types of the migrated schemas move with their schema and keep their name (types-ddl.ts);
  // an extension's stay where the extension is. Tables' and views' row types are in `relations`.
  const relkind = new Map(catalog.relations.map((r) => [r.oid, r.relkind]));
  for (const t of catalog.schemaTypes) {
    if (t.extension || (t.relid !== 0 && relkind.get(t.relid) !== 'c')) continue;
    types.set(nameKey(t), mapTypeName(t, mapping));
  }
  // A relation's row type has the relation's name and schema.
  for (const [k, target] of relations) types.set(k, target);
  return { relations, functions, types, schemaMapping: mapping.schemaMapping };
}

type Mapping = { schemaMapping: Record<string, string>; tableSuffix: string };

/** What planning one object needs from the whole catalog. */
interface PlanContext {
  mapping: Mapping;
  renames: ObjectRenames;
  /** Source relations on the paths function bodies look bare names up in (nameKey). */
  existing: ReadonlySet<string>;
  viewKeys: ReadonlyMap<number, string>;
  migratedTarget: ReadonlyMap<number, QualifiedName>;
  /** dependsOn and requirements of one object from its pg_depend rows. */
  needs(key: string, selfOid: number): { dependsOn: string[]; requires: Requirement[] };
}

/**
 * Everything to create, in order: functions, procedures, aggregates, views and materialized views
 * sorted by their dependencies, then triggers. Pure.
 */
export function planSchemaObjects(catalog: ObjectCatalog, mapping: Mapping): PlannedObject[] {
  const renames = objectRenames(catalog, mapping);
  const viewKeys = new Map(catalog.views.map((v) => [v.oid, `v:${v.oid}`]));
  const ctx: PlanContext = {
    mapping,
    renames,
    existing: new Set((catalog.pathRelations ?? []).map(nameKey)),
    viewKeys,
    migratedTarget: new Map(catalog.migrated.map((m) => [m.oid, m.target])),
    needs: dependencyReader(catalog, renames, viewKeys),
  };
  const ordered = orderByDependencies([...catalog.functions.map((f) => planFunction(ctx, f)), ...catalog.views.map((v) => planView(ctx, v))]);
  for (const t of catalog.triggers) ordered.push(planTrigger(ctx, t));
  return ordered;
}

/** PlanContext.needs for a catalog: what an object depends on among those planned, and what it requires on the target. */
function dependencyReader(catalog: ObjectCatalog, renames: ObjectRenames, viewKeys: ReadonlyMap<number, string>): PlanContext['needs'] {
  const migratedOids = new Set(catalog.migrated.map((m) => m.oid));
  const funcKeys = new Map(catalog.functions.map((f) => [f.oid, `f:${f.oid}`]));
  const relByOid = new Map(catalog.relations.map((r) => [r.oid, r]));
  const procByOid = new Map(catalog.procs.map((p) => [p.oid, p]));
  const typeByRef = new Map(catalog.types.map((t) => [t.refOid, t]));
  const depsOf = new Map<string, ObjectCatalog['dependencies']>();
  for (const d of catalog.dependencies) depsOf.set(d.object, [...(depsOf.get(d.object) ?? []), d]);

  return (key: string, selfOid: number) => {
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
}

/** `kind what` (what: the signature for a function), with `-> target` when the mapping renames it. */
const named = (kind: string, what: string, source: QualifiedName, target: QualifiedName) => {
  const label = `${kind} ${what}`;
  return { label, createdLabel: source.schema === target.schema && source.name === target.name ? label : `${label} -> ${displayName(target)}` };
};

function planFunction(ctx: PlanContext, f: CatalogFunction): PlannedObject {
  const { renames } = ctx;
  const key = `f:${f.oid}`;
  const target = mapTypeName(f, ctx.mapping);
  const kind: PlannedObject['kind'] = f.kind === 'p' ? 'procedure' : f.kind === 'a' ? 'aggregate' : 'function';
  const n = ctx.needs(key, f.oid);
  let statement: string;
  let problem: string | undefined;
  let rewrite: FunctionRewrite | undefined;
  if (f.kind === 'a') {
    statement = f.aggregate ? aggregateDdl(f.aggregate, target, renames) : '';
    if (!f.aggregate) problem = 'its pg_aggregate row could not be read';
  } else {
    rewrite = rewriteFunction(f.definition ?? '', renames, ctx.existing);
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
    const notices = rewriteNotices(o.label, rewrite);
    if (notices.length) o.notices = notices;
  }
  return o;
}

/** What a DBA should check after a string body's rewrite: names it was not rewritten at, SQL built at run time. */
function rewriteNotices(label: string, rewrite: FunctionRewrite): string[] {
  const notices: string[] = [];
  if (rewrite.notFollowed.length) {
    const why = rewrite.unreadLanguage
      ? `its body is in ${rewrite.unreadLanguage}, which pg-dts does not rewrite`
      : 'pg-dts renames only table names in FROM/JOIN/UPDATE/INSERT INTO/DELETE FROM/TABLE/TRUNCATE positions and in %ROWTYPE/%TYPE';
    notices.push(
      `${label}: its body names ${rewrite.notFollowed.join(', ')}, which the mapping renames, where it was not rewritten (${why}); ` +
        `check that it still reaches the right tables on the target`,
    );
  }
  if (rewrite.dynamic.length) {
    notices.push(
      `${label}: it builds SQL at run time (EXECUTE) naming ${rewrite.dynamic.join(', ')}, which the mapping renames; ` +
        `SQL built at run time is not rewritten: change it on the target`,
    );
  }
  return notices;
}

function planView(ctx: PlanContext, v: CatalogView): PlannedObject {
  const { mapping, renames } = ctx;
  const key = `v:${v.oid}`;
  const source = { schema: v.schema, name: v.name };
  const target = mapTableName(source, mapping);
  const kind: PlannedObject['kind'] = v.kind === 'm' ? 'materialized view' : 'view';
  const n = ctx.needs(key, v.oid);
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
  return o;
}

function planTrigger(ctx: PlanContext, t: CatalogTrigger): PlannedObject {
  const { renames } = ctx;
  const key = `t:${t.oid}`;
  const tableTarget = ctx.migratedTarget.get(t.relid) ?? renames.relations.get(nameKey(t.table)) ?? t.table;
  const n = ctx.needs(key, t.oid);
  const view = ctx.viewKeys.get(t.relid);
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
  return o;
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

/**
 * Catalog reading (source): everything planSchemaObjects needs, in one read-only snapshot with
 * search_path = '' so that every printed definition is schema-qualified.
 */
import type { Client } from 'pg';
import { FENCE_SCHEMA } from '../stop-writes';
import { aclJson, ownerColumns, type AclEntry } from '../owners';
import { serverVersionNum } from '../pg-version';
import type { QualifiedName } from '../spec';
import { mapTableName } from '../naming';
import type { SchemaObjectsInput } from './contract';
import type { CatalogAggregate, CatalogView } from './ddl';
import { functionSearchPath } from './function-body';
import type { CatalogFunction, CatalogProc, CatalogRelation, CatalogTrigger, CatalogType, DependencyKind, ObjectCatalog } from './plan';
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

type CatalogInput = Pick<SchemaObjectsInput, 'schemas' | 'tables' | 'schemaMapping' | 'tableSuffix'>;

async function readCatalogQueries(client: Client, input: CatalogInput): Promise<ObjectCatalog> {
  const migrated = await readMigrated(client, input);
  const functions = await readFunctions(client, input.schemas);
  const views = await readViews(client, input.schemas);
  const triggers = await readTriggers(client, [...migrated.map((m) => m.oid), ...views.map((v) => v.oid)]);
  const deps = await readDependencies(client, functions, views, triggers);
  const { refTypes, schemaTypes } = await readTypes(client, deps, input.schemas);
  const { relations, procs } = await readReferenced(client, deps, [...refTypes, ...schemaTypes]);
  const pathRelations = await readPathRelations(client, input.schemas, functions);
  return { migrated, functions, views, triggers, schemaTypes, dependencies: deps, relations, procs, types: refTypes, pathRelations };
}

/** The migrated tables (by their source names) and their partitions, which the mapping names like tables. */
async function readMigrated(client: Client, input: CatalogInput): Promise<ObjectCatalog['migrated']> {
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
  return migrated;
}

async function readFunctions(client: Client, schemas: string[]): Promise<CatalogFunction[]> {
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
  return fnRows.map((f) => {
    const out: CatalogFunction = { oid: Number(f.oid), schema: f.schema, name: f.name, kind: f.prokind, signature: f.signature, definition: f.definition, owner: ownerOf(f) };
    if (f.security_definer) out.securityDefiner = true;
    const agg = aggregates.get(Number(f.oid));
    if (agg) out.aggregate = agg;
    return out;
  });
}

async function readViews(client: Client, schemas: string[]): Promise<CatalogView[]> {
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
  return viewRows.map((v) => ({
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
}

/** The triggers of these relations (migrated tables, their partitions, recreated views), except the fence's. */
async function readTriggers(client: Client, triggerRels: number[]): Promise<CatalogTrigger[]> {
  // A partition's copy of its parent's trigger: tgparentid from 13 on; 12 marks the copies internal.
  const parentless = (await serverVersionNum(client)) >= 130000 ? ' AND t.tgparentid = 0' : '';
  return (
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
}

async function readDependencies(client: Client, functions: CatalogFunction[], views: CatalogView[], triggers: CatalogTrigger[]): Promise<ObjectCatalog['dependencies']> {
  return (
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
}

/** The types the dependencies point at, and every type of the migrated schemas. */
async function readTypes(client: Client, deps: ObjectCatalog['dependencies'], schemas: string[]): Promise<{ refTypes: ObjectCatalog['types']; schemaTypes: CatalogType[] }> {
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
  return { refTypes, schemaTypes };
}

/** The relations and functions the dependencies and the types point at. */
async function readReferenced(client: Client, deps: ObjectCatalog['dependencies'], types: CatalogType[]): Promise<{ relations: CatalogRelation[]; procs: CatalogProc[] }> {
  const relOids = [
    ...new Set([
      ...deps.filter((d) => d.kind === 'class').map((d) => d.oid),
      ...types.map((t) => t.relid),
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
  return { relations, procs };
}

async function readPathRelations(client: Client, schemas: string[], functions: CatalogFunction[]): Promise<QualifiedName[]> {
  // Where string bodies look bare names up: every relation there, so a table that is not migrated
  // shadows a migrated one later on the path, as it does on the source.
  const pathSchemas = [...new Set([...schemas, ...functions.flatMap((f) => (f.definition ? functionSearchPath(f.definition) ?? [] : []))])];
  return (
    await client.query<QualifiedName>(
      `SELECT n.nspname::text AS schema, c.relname::text AS name
         FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = ANY($1::text[]) AND c.relkind IN ('r', 'p', 'v', 'm', 'f')`,
      [pathSchemas],
    )
  ).rows.map((r) => ({ schema: r.schema, name: r.name }));
}

/**
 * Reads the user-defined types the migrated tables need from the source catalog: the column types,
 * and everything they are built from (array elements, domain base types, composite attributes, range
 * subtypes, a multirange's range), transitively. Built-in types (pg_catalog, information_schema) end
 * the walk; so do extension types, which the extension brings. Expects search_path = '' (types print
 * schema-qualified) and runs inside the caller's transaction.
 */
import type pg from 'pg';
import { displayName, type QualifiedName } from './spec';
import type { SourceDomainType, SourceRangeType, SourceType } from './types-ddl';

export interface SourceTypes {
  /** Dependencies before the types that use them. */
  types: SourceType[];
  /** For each table oid given, the indexes into `types` it needs (transitively), ascending. */
  perTable: number[][];
  warnings: string[];
}

interface TypeRow {
  oid: number;
  schema: string;
  name: string;
  typtype: string;
  is_array: boolean;
  elem: number;
  basetype: number;
  relid: number;
  relkind: string | null;
  rel_schema: string | null;
  rel_name: string | null;
  extension: string | null;
  range_subtype: number | null;
  multirange_of: number | null;
}

const BUILTIN_SCHEMAS = new Set(['pg_catalog', 'information_schema']);

/** A node of the type graph: a type to create, or an alias (array, multirange) that only leads to one. */
interface Node {
  row: TypeRow;
  deps: number[];
  /** Has its own SourceType (not an array, a multirange or a built-in). */
  creates: boolean;
}

export async function readSourceTypes(client: pg.Client, tableOids: number[], version: number): Promise<SourceTypes> {
  const columnTypes = await client.query<{ relid: number; typid: number }>(
    `SELECT DISTINCT a.attrelid AS relid, a.atttypid AS typid FROM pg_attribute a
      WHERE a.attrelid = ANY($1::oid[]) AND a.attnum > 0 AND NOT a.attisdropped`,
    [tableOids],
  );
  const nodes = new Map<number, Node>();
  let frontier = [...new Set(columnTypes.rows.map((r) => Number(r.typid)))];
  while (frontier.length) {
    const rows = await queryTypes(client, frontier, version);
    frontier = [];
    for (const row of rows) {
      const oid = Number(row.oid);
      if (nodes.has(oid)) continue;
      const node: Node = { row, deps: [], creates: false };
      nodes.set(oid, node);
      if (BUILTIN_SCHEMAS.has(row.schema)) continue;
      if (row.is_array) node.deps.push(Number(row.elem));
      else if (row.extension !== null) node.creates = true;
      else if (row.typtype === 'm') {
        if (row.multirange_of !== null) node.deps.push(Number(row.multirange_of));
      } else {
        node.creates = true;
        if (row.typtype === 'd') node.deps.push(Number(row.basetype));
        if (row.typtype === 'r' && row.range_subtype !== null) node.deps.push(Number(row.range_subtype));
      }
      if (row.typtype === 'c' && row.relkind === 'c' && !row.is_array && row.extension === null) {
        const attrs = await client.query<{ typid: number }>(
          `SELECT atttypid AS typid FROM pg_attribute WHERE attrelid = $1 AND attnum > 0 AND NOT attisdropped ORDER BY attnum`,
          [row.relid],
        );
        node.deps.push(...attrs.rows.map((a) => Number(a.typid)));
      }
      for (const d of node.deps) if (!nodes.has(d)) frontier.push(d);
    }
    frontier = [...new Set(frontier)];
  }

  // Dependency order: depth first, dependencies before dependents, in order of discovery.
  const order: number[] = [];
  const state = new Map<number, 'visiting' | 'done'>();
  const visit = (oid: number, path: number[]) => {
    const st = state.get(oid);
    if (st === 'done') return;
    if (st === 'visiting') throw new Error(`user-defined types depend on each other in a cycle: ${path.map((o) => displayName(nodeName(nodes, o))).join(' -> ')}`);
    state.set(oid, 'visiting');
    for (const d of nodes.get(oid)?.deps ?? []) visit(d, [...path, d]);
    state.set(oid, 'done');
    if (nodes.get(oid)?.creates) order.push(oid);
  };
  for (const oid of nodes.keys()) visit(oid, [oid]);

  const warnings: string[] = [];
  const details = await readDetails(client, order.map((o) => nodes.get(o)!.row), warnings, version);
  const index = new Map(order.map((oid, i) => [oid, i]));

  const closure = (start: number[]): number[] => {
    const seen = new Set<number>();
    const out = new Set<number>();
    const stack = [...start];
    while (stack.length) {
      const oid = stack.pop()!;
      if (seen.has(oid)) continue;
      seen.add(oid);
      const i = index.get(oid);
      if (i !== undefined) out.add(i);
      stack.push(...(nodes.get(oid)?.deps ?? []));
    }
    return [...out].sort((a, b) => a - b);
  };
  const perTable = tableOids.map((t) => closure(columnTypes.rows.filter((r) => Number(r.relid) === t).map((r) => Number(r.typid))));
  return { types: details, perTable, warnings };
}

function nodeName(nodes: Map<number, Node>, oid: number): QualifiedName {
  const r = nodes.get(oid)?.row;
  return r ? { schema: r.schema, name: r.name } : { schema: '?', name: String(oid) };
}

async function queryTypes(client: pg.Client, oids: number[], version: number): Promise<TypeRow[]> {
  // Multiranges exist from PostgreSQL 14.
  const multirangeOf = version >= 140000 ? `(SELECT m.rngtypid FROM pg_range m WHERE m.rngmultitypid = t.oid)` : 'NULL::oid';
  const r = await client.query<TypeRow>(
    `SELECT t.oid, n.nspname::text AS schema, t.typname::text AS name, t.typtype::text AS typtype,
            (t.typcategory = 'A' AND t.typelem <> 0 AND t.typlen = -1) AS is_array,
            t.typelem AS elem, t.typbasetype AS basetype, t.typrelid AS relid,
            rc.relkind::text AS relkind, rn.nspname::text AS rel_schema, rc.relname::text AS rel_name,
            (SELECT e.extname::text FROM pg_depend d JOIN pg_extension e ON e.oid = d.refobjid
              WHERE d.classid = 'pg_type'::regclass AND d.objid = t.oid AND d.refclassid = 'pg_extension'::regclass AND d.deptype = 'e'
              LIMIT 1) AS extension,
            rg.rngsubtype AS range_subtype, ${multirangeOf} AS multirange_of
       FROM pg_type t
       JOIN pg_namespace n ON n.oid = t.typnamespace
       LEFT JOIN pg_class rc ON rc.oid = t.typrelid
       LEFT JOIN pg_namespace rn ON rn.oid = rc.relnamespace
       LEFT JOIN pg_range rg ON rg.rngtypid = t.oid
      WHERE t.oid = ANY($1::oid[])`,
    [oids],
  );
  return r.rows;
}

const qn = (s: string | null, n: string | null): QualifiedName | undefined => (s !== null && n !== null ? { schema: s, name: n } : undefined);

async function readDetails(client: pg.Client, rows: TypeRow[], warnings: string[], version: number): Promise<SourceType[]> {
  const oids = rows.map((r) => Number(r.oid));
  if (oids.length === 0) return [];
  // One client runs one query at a time: sequential awaits.
  const details: TypeDetails = {
    enums: await queryEnumLabels(client, oids),
    domains: await queryDomains(client, oids),
    attributes: await queryCompositeAttributes(client, oids),
    ranges: await queryRanges(client, oids, version),
  };
  return rows.map((row) => sourceType(row, details, warnings));
}

interface DomainRow {
  oid: number;
  base: string;
  notnull: boolean;
  def: string | null;
  coll_schema: string | null;
  coll_name: string | null;
  checks: Array<{ name: string; definition: string }>;
}

interface AttributeRow {
  oid: number;
  name: string;
  type: string;
  coll_schema: string | null;
  coll_name: string | null;
}

interface RangeRow {
  oid: number;
  subtype: string;
  opc_schema: string;
  opc_name: string;
  opc_default: boolean;
  coll_schema: string | null;
  coll_name: string | null;
  canon_schema: string | null;
  canon_name: string | null;
  diff_schema: string | null;
  diff_name: string | null;
  mr_schema: string | null;
  mr_name: string | null;
}

/** What each kind of type needs besides its pg_type row, by type oid. */
interface TypeDetails {
  enums: Map<number, string[]>;
  domains: Map<number, DomainRow>;
  attributes: Map<number, AttributeRow[]>;
  ranges: Map<number, RangeRow>;
}

async function queryEnumLabels(client: pg.Client, oids: number[]): Promise<Map<number, string[]>> {
  const r = await client.query<{ oid: number; labels: string[] }>(
    `SELECT enumtypid AS oid, array_agg(enumlabel::text ORDER BY enumsortorder) AS labels FROM pg_enum WHERE enumtypid = ANY($1::oid[]) GROUP BY enumtypid`,
    [oids],
  );
  return new Map(r.rows.map((x) => [Number(x.oid), x.labels]));
}

async function queryDomains(client: pg.Client, oids: number[]): Promise<Map<number, DomainRow>> {
  const r = await client.query<DomainRow>(
    `SELECT t.oid, format_type(t.typbasetype, t.typtypmod) AS base, t.typnotnull AS notnull,
            pg_get_expr(t.typdefaultbin, 0) AS def, cn.nspname::text AS coll_schema, co.collname::text AS coll_name,
            coalesce((SELECT json_agg(json_build_object('name', c.conname::text, 'definition', pg_get_constraintdef(c.oid)) ORDER BY c.conname)
                        FROM pg_constraint c WHERE c.contypid = t.oid AND c.contype = 'c'), '[]') AS checks
       FROM pg_type t
       JOIN pg_type b ON b.oid = t.typbasetype
       LEFT JOIN pg_collation co ON co.oid = t.typcollation AND t.typcollation <> b.typcollation
       LEFT JOIN pg_namespace cn ON cn.oid = co.collnamespace
      WHERE t.oid = ANY($1::oid[]) AND t.typtype = 'd'`,
    [oids],
  );
  return new Map(r.rows.map((x) => [Number(x.oid), x]));
}

async function queryCompositeAttributes(client: pg.Client, oids: number[]): Promise<Map<number, AttributeRow[]>> {
  const attrs = new Map<number, AttributeRow[]>();
  const r = await client.query<AttributeRow>(
    `SELECT t.oid, a.attname::text AS name, format_type(a.atttypid, a.atttypmod) AS type, cn.nspname::text AS coll_schema, co.collname::text AS coll_name
       FROM pg_type t
       JOIN pg_class k ON k.oid = t.typrelid AND k.relkind = 'c'
       JOIN pg_attribute a ON a.attrelid = k.oid AND a.attnum > 0 AND NOT a.attisdropped
       JOIN pg_type at ON at.oid = a.atttypid
       LEFT JOIN pg_collation co ON co.oid = a.attcollation AND a.attcollation <> at.typcollation
       LEFT JOIN pg_namespace cn ON cn.oid = co.collnamespace
      WHERE t.oid = ANY($1::oid[])
      ORDER BY t.oid, a.attnum`,
    [oids],
  );
  for (const x of r.rows) {
    const list = attrs.get(Number(x.oid)) ?? [];
    list.push(x);
    attrs.set(Number(x.oid), list);
  }
  return attrs;
}

async function queryRanges(client: pg.Client, oids: number[], version: number): Promise<Map<number, RangeRow>> {
  const r = await client.query<RangeRow>(
    `SELECT r.rngtypid AS oid, format_type(r.rngsubtype, NULL) AS subtype,
            opn.nspname::text AS opc_schema, opc.opcname::text AS opc_name, opc.opcdefault AS opc_default,
            cn.nspname::text AS coll_schema, co.collname::text AS coll_name,
            pcn.nspname::text AS canon_schema, pc.proname::text AS canon_name,
            pdn.nspname::text AS diff_schema, pd.proname::text AS diff_name,
            mn.nspname::text AS mr_schema, m.typname::text AS mr_name
       FROM pg_range r
       JOIN pg_type st ON st.oid = r.rngsubtype
       JOIN pg_opclass opc ON opc.oid = r.rngsubopc
       JOIN pg_namespace opn ON opn.oid = opc.opcnamespace
       LEFT JOIN pg_collation co ON co.oid = r.rngcollation AND r.rngcollation <> st.typcollation
       LEFT JOIN pg_namespace cn ON cn.oid = co.collnamespace
       LEFT JOIN pg_proc pc ON pc.oid = r.rngcanonical
       LEFT JOIN pg_namespace pcn ON pcn.oid = pc.pronamespace
       LEFT JOIN pg_proc pd ON pd.oid = r.rngsubdiff
       LEFT JOIN pg_namespace pdn ON pdn.oid = pd.pronamespace
       LEFT JOIN pg_type m ON m.oid = ${version >= 140000 ? 'r.rngmultitypid' : 'NULL::oid'}
       LEFT JOIN pg_namespace mn ON mn.oid = m.typnamespace
      WHERE r.rngtypid = ANY($1::oid[])`,
    [oids],
  );
  return new Map(r.rows.map((x) => [Number(x.oid), x]));
}

/** One type as the target's DDL takes it, or why it cannot be migrated. */
function sourceType(row: TypeRow, details: TypeDetails, warnings: string[]): SourceType {
  const oid = Number(row.oid);
  const name: QualifiedName = { schema: row.schema, name: row.name };
  if (row.extension !== null) return { kind: 'extension', name, extension: row.extension };
  switch (row.typtype) {
    case 'e':
      return { kind: 'enum', name, labels: details.enums.get(oid) ?? [] };
    case 'd':
      return domainType(name, details.domains.get(oid));
    case 'c': {
      if (row.relkind !== 'c') {
        const rel = qn(row.rel_schema, row.rel_name);
        return { kind: 'unsupported', name, reason: `it is the row type of ${rel ? displayName(rel) : 'a relation'}, used as a column type` };
      }
      return {
        kind: 'composite',
        name,
        attributes: (details.attributes.get(oid) ?? []).map((a) => {
          const coll = qn(a.coll_schema, a.coll_name);
          return coll ? { name: a.name, type: a.type, collation: coll } : { name: a.name, type: a.type };
        }),
      };
    }
    case 'r':
      return rangeType(name, details.ranges.get(oid), warnings);
    case 'b':
      return { kind: 'unsupported', name, reason: 'it is a base type defined outside any extension (its input/output functions are not migrated)' };
    default:
      return { kind: 'unsupported', name, reason: `its kind (typtype ${row.typtype}) is not supported` };
  }
}

function domainType(name: QualifiedName, d: DomainRow | undefined): SourceDomainType {
  if (!d) throw new Error(`domain ${displayName(name)} vanished while reading the catalog`);
  const t: SourceDomainType = { kind: 'domain', name, baseType: d.base, notNull: d.notnull, checks: d.checks };
  const coll = qn(d.coll_schema, d.coll_name);
  if (coll) t.collation = coll;
  if (d.def !== null) t.default = d.def;
  return t;
}

/** A range type; unsupported when it needs user code or an operator class pg-dts does not migrate. */
function rangeType(name: QualifiedName, r: RangeRow | undefined, warnings: string[]): SourceType {
  if (!r) throw new Error(`range type ${displayName(name)} vanished while reading the catalog`);
  const canonical = qn(r.canon_schema, r.canon_name);
  if (canonical && canonical.schema !== 'pg_catalog') {
    return { kind: 'unsupported', name, reason: `its canonical function ${displayName(canonical)} is user code, and pg-dts does not migrate functions` };
  }
  if (!r.opc_default && r.opc_schema !== 'pg_catalog') {
    return { kind: 'unsupported', name, reason: `its subtype operator class ${r.opc_schema}.${r.opc_name} is not migrated` };
  }
  const t: SourceRangeType = { kind: 'range', name, subtype: r.subtype };
  const mr = qn(r.mr_schema, r.mr_name);
  if (mr) t.multirange = mr;
  if (!r.opc_default) t.subtypeOpclass = { schema: r.opc_schema, name: r.opc_name };
  const coll = qn(r.coll_schema, r.coll_name);
  if (coll) t.collation = coll;
  if (canonical) t.canonical = canonical;
  const diff = qn(r.diff_schema, r.diff_name);
  if (diff && diff.schema === 'pg_catalog') t.subtypeDiff = diff;
  else if (diff) {
    warnings.push(
      `range type ${displayName(name)} is created on the target without its subtype_diff function ${displayName(diff)} (pg-dts does not migrate functions): ` +
        'values are identical; only GiST index performance on it may differ',
    );
  }
  return t;
}

/** An extension whose objects a table's indexes, constraints or defaults use (not through a column type). */
export interface ExtensionUse {
  extension: string;
  /** The extension's schema on the source: the printed SQL names its objects there. */
  schema: string;
  /** pg_describe_object of what is used, e.g. `operator class public.gist_int4_ops for access method gist`. */
  objects: string[];
}

/**
 * For each table oid (with its partitions), the extensions owning an object that one of its indexes
 * (operator classes, functions in expressions), constraints (exclusion operators, functions in CHECK)
 * or column defaults and generated expressions depend on: btree_gist for `EXCLUDE USING gist (room
 * WITH =, ...)`, pg_trgm for a gin_trgm_ops index, uuid-ossp for `DEFAULT uuid_generate_v4()`. The
 * target needs them before the table or its indexes can be created. Expects search_path = ''.
 */
export async function readExtensionUses(client: pg.Client, tableOids: number[]): Promise<ExtensionUse[][]> {
  if (tableOids.length === 0) return [];
  const r = await client.query<{ root: number; extension: string; schema: string; objects: string[] }>(
    `WITH rels AS (
       SELECT w.root, w.root AS relid FROM unnest($1::oid[]) AS w(root)
       UNION SELECT w.root, t.relid FROM unnest($1::oid[]) AS w(root) CROSS JOIN LATERAL pg_partition_tree(w.root) AS t
     ), deps AS (
       SELECT rels.root, d.refclassid, d.refobjid FROM rels
         JOIN pg_index i ON i.indrelid = rels.relid
         JOIN pg_depend d ON d.classid = 'pg_class'::regclass AND d.objid = i.indexrelid
       UNION
       SELECT rels.root, d.refclassid, d.refobjid FROM rels
         JOIN pg_constraint c ON c.conrelid = rels.relid
         JOIN pg_depend d ON d.classid = 'pg_constraint'::regclass AND d.objid = c.oid
       UNION
       SELECT rels.root, d.refclassid, d.refobjid FROM rels
         JOIN pg_attrdef a ON a.adrelid = rels.relid
         JOIN pg_depend d ON d.classid = 'pg_attrdef'::regclass AND d.objid = a.oid
     )
     SELECT deps.root, e.extname::text AS extension, en.nspname::text AS schema,
            array_agg(DISTINCT pg_describe_object(deps.refclassid, deps.refobjid, 0) ORDER BY pg_describe_object(deps.refclassid, deps.refobjid, 0)) AS objects
       FROM deps
       JOIN pg_depend x ON x.classid = deps.refclassid AND x.objid = deps.refobjid AND x.refclassid = 'pg_extension'::regclass AND x.deptype = 'e'
       JOIN pg_extension e ON e.oid = x.refobjid
       JOIN pg_namespace en ON en.oid = e.extnamespace
      GROUP BY 1, 2, 3
      ORDER BY 1, 2`,
    [tableOids],
  );
  return tableOids.map((oid) => r.rows.filter((x) => Number(x.root) === oid).map(({ extension, schema, objects }) => ({ extension, schema, objects })));
}

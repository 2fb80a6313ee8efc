/**
 * Reads the source catalog for the tables to migrate and turns it into TableDefs (DDL from
 * activities/ddl.ts, user-defined types from activities/types-ddl.ts). Every piece of SQL text comes
 * from PostgreSQL itself (format_type, pg_get_expr, pg_get_constraintdef, pg_get_indexdef,
 * pg_get_partkeydef), printed with search_path = '' so that every type, function, sequence and table
 * name in it is schema-qualified and means the same thing on the target.
 *
 * All tables (and the partitions of partitioned ones) are read with one set of queries
 * (oid = ANY($1)), inside one read-only transaction.
 */
import type pg from 'pg';
import { readExtensionUses, readSourceTypes, type ExtensionUse, type SourceTypes } from './catalog-types';
import {
  buildTableDef,
  ensureExtensionDdl,
  type FkAction,
  type FkMatch,
  type SourceColumn,
  type SourceConstraintIndex,
  type SourceForeignKey,
  type SourcePartition,
  type SourceSequence,
  type SourceTable,
} from './ddl';
import { preconditionFailed } from './errors';
import type { TableDef } from './model';
import { displayName, type NormalizedSpec, type QualifiedName } from './spec';
import { nameKey } from './naming';
import { createTypesDdl, typeRenames } from './types-ddl';

interface RelRow {
  oid: number;
  schema: string;
  name: string;
  relkind: string;
  relispartition: boolean;
  relreplident: string;
  reltuples: number;
  partkey: string | null;
  /** For a partition: its root, printed qualified. */
  root: string | null;
}

interface PartitionRow {
  oid: number;
  root: number;
  schema: string;
  name: string;
  relkind: string;
  relpersistence: string;
  relreplident: string;
  reltuples: number;
  bound: string;
  partkey: string | null;
  parent_schema: string;
  parent_name: string;
}

/**
 * Reads every table in `tables` (in that order) from the source and builds its TableDef; the
 * user-defined types they need are created by the preLoad of the first table that needs each one.
 * Throws a non-retryable failure if a table is missing, is not a table, or is a partition (partitions
 * are migrated with their partitioned table).
 *
 * Runs its own transaction (BEGIN .. COMMIT) so that `SET LOCAL search_path = ''` ends with it: the
 * client must not be inside a transaction already.
 */
export async function readTableDefs(
  client: pg.Client,
  tables: Array<{ source: QualifiedName; target: QualifiedName }>,
  spec: Pick<NormalizedSpec, 'schemaMapping' | 'tableSuffix'> & Partial<Pick<NormalizedSpec, 'schemas' | 'tables'>>,
): Promise<TableDef[]> {
  if (tables.length === 0) return [];
  let sources: SourceTable[];
  let types: SourceTypes;
  let extensionUses: ExtensionUse[][];
  await client.query('BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY');
  try {
    await client.query(`SET LOCAL search_path = ''`);
    const cat = await readSourceCatalog(client, tables.map((t) => t.source));
    sources = cat.tables;
    // Whole schemas migrated: their sequences that no column owns go too, with the first table of their
    // schema (created before it, set to the source's value at cutover like the others).
    if (spec.schemas?.length && !spec.tables) await addFreeSequences(client, spec.schemas, sources);
    types = await readSourceTypes(client, cat.oids, cat.version);
    extensionUses = await readExtensionUses(client, cat.oids);
    await client.query('COMMIT');
  } catch (err) {
    await client.query('ROLLBACK').catch(() => undefined);
    throw err;
  }
  const renames = typeRenames(types.types, spec);
  const defs = tables.map((t, i) => buildTableDef(sources[i]!, t.target, spec, tables, renames));
  // Each type once, ahead of the first table that needs it; preLoad runs table after table in one
  // transaction, so later tables find it there.
  const created = new Set<number>();
  const extensions = new Set<string>();
  defs.forEach((def, i) => {
    const fresh = (types.perTable[i] ?? []).filter((x) => !created.has(x));
    for (const x of fresh) created.add(x);
    if (fresh.length) def.preLoad.unshift(...createTypesDdl(fresh.map((x) => types.types[x]!), spec, renames));
    for (const x of fresh) {
      const t = types.types[x]!;
      if (t.kind === 'extension') extensions.add(t.extension);
    }
    // Extensions the table's indexes, constraints or defaults need (not through a column type): first.
    const uses = (extensionUses[i] ?? []).filter((u) => !extensions.has(u.extension));
    for (const u of uses) extensions.add(u.extension);
    if (uses.length) def.preLoad.unshift(...uses.map((u) => ensureExtensionDdl(u.extension, u.schema, u.objects)));
  });
  if (types.warnings.length) defs[0]!.warnings = [...(defs[0]!.warnings ?? []), ...types.warnings];
  return defs;
}

/**
 * Sequences of `schemas` that no column owns (neither serial nor identity) and no migrated table
 * already uses: attached to the first table of their schema (else the first table), which creates them.
 */
async function addFreeSequences(client: pg.Client, schemas: string[], tables: SourceTable[]): Promise<void> {
  if (tables.length === 0) return;
  const r = await client.query<{ oid: string }>(
    `SELECT s.oid::text AS oid
       FROM pg_class s JOIN pg_namespace n ON n.oid = s.relnamespace
      WHERE s.relkind = 'S' AND n.nspname = ANY($1::text[])
        AND NOT EXISTS (SELECT 1 FROM pg_depend d
                         WHERE d.classid = 'pg_class'::regclass AND d.objid = s.oid
                           AND ((d.refclassid = 'pg_class'::regclass AND d.deptype IN ('a', 'i'))
                                -- an extension's own sequence: CREATE EXTENSION makes it on the target
                                OR (d.refclassid = 'pg_extension'::regclass AND d.deptype = 'e')))
      ORDER BY n.nspname, s.relname`,
    [schemas],
  );
  const used = new Set(tables.flatMap((t) => t.sequences.map((q) => nameKey(q.name))));
  const found = await querySequences(client, r.rows.map((x) => Number(x.oid)));
  found.sort((a, b) => (a.schema === b.schema ? (a.name < b.name ? -1 : 1) : a.schema < b.schema ? -1 : 1));
  for (const p of found) {
    const name = { schema: p.schema, name: p.name };
    if (used.has(nameKey(name))) continue;
    const owner = tables.find((t) => t.source.schema === p.schema) ?? tables[0]!;
    owner.sequences.push(sequenceOf(p));
  }
}

async function readSourceCatalog(client: pg.Client, names: QualifiedName[]): Promise<{ tables: SourceTable[]; oids: number[]; version: number }> {
  const version = Number((await client.query<{ v: string }>(`SELECT current_setting('server_version_num') AS v`)).rows[0]!.v);
  const ordered = await readRelations(client, names);
  const oids = ordered.map((r) => Number(r.oid));
  const partitions = await readPartitions(client, ordered);
  const rows = await readCatalogRows(client, oids, partitions, version);
  const tables = ordered.map((rel) => sourceTable(rel, partitions.filter((p) => Number(p.root) === Number(rel.oid)), rows));
  return { tables, oids, version };
}

/**
 * Every table named, in that order. Final (a FinalError): no retry makes these tables
 * appear or change kind.
 */
async function readRelations(client: pg.Client, names: QualifiedName[]): Promise<RelRow[]> {
  const rels = await client.query<RelRow>(
    `SELECT c.oid, n.nspname AS schema, c.relname AS name, c.relkind, c.relispartition, c.relreplident,
            c.reltuples::float8 AS reltuples,
            CASE WHEN c.relkind = 'p' THEN pg_get_partkeydef(c.oid) END AS partkey,
            CASE WHEN c.relispartition THEN pg_partition_root(c.oid)::regclass::text END AS root
       FROM unnest($1::text[], $2::text[]) AS w(schema, name)
       JOIN pg_namespace n ON n.nspname = w.schema
       JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = w.name`,
    [names.map((n) => n.schema), names.map((n) => n.name)],
  );
  const relByName = new Map(rels.rows.map((r) => [nameKey(r), r]));
  return names.map((n) => {
    const r = relByName.get(nameKey(n));
    if (!r) throw preconditionFailed(`table ${displayName(n)} does not exist on the source`);
    if (r.relispartition) {
      throw preconditionFailed(
        `${displayName(n)} is a partition of ${r.root ?? 'a partitioned table'}: partitions are migrated with their partitioned table; migrate ${r.root ?? 'the root'} instead`,
      );
    }
    if (r.relkind !== 'r' && r.relkind !== 'p') throw preconditionFailed(`${displayName(n)} is not a table (relkind ${r.relkind}): only tables can be migrated`);
    return r;
  });
}

/** The partitions of the partitioned tables; refused when their rows or changes are not the source's WAL's. */
async function readPartitions(client: pg.Client, ordered: RelRow[]): Promise<PartitionRow[]> {
  const roots = ordered.filter((r) => r.relkind === 'p').map((r) => Number(r.oid));
  const partitions = roots.length ? await queryPartitions(client, roots) : [];
  for (const p of partitions) {
    const where = `partition ${p.schema}.${p.name} of ${displayName(nameOfOid(ordered, Number(p.root)))}`;
    if (p.relkind === 'f') {
      throw preconditionFailed(`${where} is a foreign table: its rows are not on the source server and its changes are not in its WAL; detach it or leave its table out`);
    }
    if (p.relpersistence !== 'p') {
      throw preconditionFailed(
        `${where} is ${p.relpersistence === 'u' ? 'unlogged' : 'temporary'}: its changes are not written to the WAL and cannot be replicated; ALTER TABLE ... SET LOGGED or leave its table out`,
      );
    }
  }
  return partitions;
}

/** Columns, sequences, constraints and indexes of every table and partition, read once for all. */
interface CatalogRows {
  columns: ColumnRow[];
  defaultSeqs: DefaultSeqRow[];
  ownedSeqs: OwnedSeqRow[];
  constraints: ConstraintRow[];
  indexes: IndexRow[];
  seqByOid: Map<number, SequenceRow>;
}

async function readCatalogRows(client: pg.Client, oids: number[], partitions: PartitionRow[], version: number): Promise<CatalogRows> {
  const allOids = [...oids, ...partitions.map((p) => Number(p.oid))];
  // One client runs one query at a time: sequential awaits, not Promise.all.
  const columns = await queryColumns(client, allOids);
  const defaultSeqs = await queryDefaultSequences(client, allOids);
  const ownedSeqs = await queryOwnedSequences(client, oids);
  const constraints = await queryConstraints(client, allOids, version);
  const indexes = await queryIndexes(client, allOids);
  const seqOids = [...new Set([...defaultSeqs.map((d) => d.seqoid), ...ownedSeqs.map((o) => o.seqoid)].map(Number))];
  const seqParams = await querySequences(client, seqOids);
  return { columns, defaultSeqs, ownedSeqs, constraints, indexes, seqByOid: new Map(seqParams.map((s) => [Number(s.oid), s])) };
}

/** What building one table collects on the way: the sequences it uses and its warnings. */
interface TableBuild {
  rows: CatalogRows;
  relid: number;
  source: QualifiedName;
  sequences: Map<number, SourceSequence>;
  warnings: string[];
}

function sourceTable(rel: RelRow, parts: PartitionRow[], rows: CatalogRows): SourceTable {
  const relid = Number(rel.oid);
  const source: QualifiedName = { schema: rel.schema, name: rel.name };
  const b: TableBuild = { rows, relid, source, sequences: new Map(), warnings: [] };
  // Sequences: owned by a column of this table (serial 'a', identity 'i'), or named in a default of
  // the table or of one of its partitions.
  for (const o of rows.ownedSeqs.filter((o) => Number(o.relid) === relid)) {
    const s = sequenceFor(b, Number(o.seqoid));
    s.ownedByColumn = o.attname;
    s.identity = o.deptype === 'i';
  }
  const own = tableObjects(b, relid, source, false);
  const table: SourceTable = {
    source,
    columns: columnsOf(b, relid, source),
    replicaIdentity: replicaIdentity(rel.relreplident),
    indexes: own.indexes,
    constraints: own.constraints,
    foreignKeys: own.foreignKeys,
    sequences: [],
    estimatedRows: Math.max(0, Math.round(rel.reltuples)),
  };
  if (own.primaryKey) table.primaryKey = own.primaryKey;
  if (own.replicaIdentityIndex) table.replicaIdentityIndex = { name: own.replicaIdentityIndex.name, columns: own.replicaIdentityIndex.columns };
  if (rel.relkind === 'p') {
    if (rel.partkey === null) throw new Error(`partitioned table ${displayName(source)} has no partition key`);
    table.partitionKey = rel.partkey;
    table.partitions = parts.map((p) => sourcePartition(b, p));
    // A partitioned table holds no rows itself: its size is its leaves'.
    table.estimatedRows = parts.filter((p) => p.relkind === 'r').reduce((n, p) => n + Math.max(0, Math.round(p.reltuples)), 0);
  }
  table.sequences = [...b.sequences.values()];
  if (b.warnings.length) table.warnings = b.warnings;
  return table;
}

function sourcePartition(b: TableBuild, p: PartitionRow): SourcePartition {
  const name = { schema: p.schema, name: p.name };
  const o = tableObjects(b, Number(p.oid), name, true);
  const part: SourcePartition = {
    name,
    parent: { schema: p.parent_schema, name: p.parent_name },
    bound: p.bound,
    columns: columnsOf(b, Number(p.oid), name),
    replicaIdentity: replicaIdentity(p.relreplident),
    indexes: o.indexes,
    constraints: o.constraints,
    foreignKeys: o.foreignKeys,
  };
  if (p.partkey !== null) part.partitionKey = p.partkey;
  if (o.primaryKey) part.primaryKey = o.primaryKey;
  if (o.replicaIdentityIndex) part.replicaIdentityIndex = o.replicaIdentityIndex;
  return part;
}

/** A sequence's parameters as the target's DDL takes them (not owned by a column until told so). */
function sequenceOf(p: SequenceRow): SourceSequence {
  return { name: { schema: p.schema, name: p.name }, type: p.type, start: p.start, increment: p.increment, min: p.min, max: p.max, cache: p.cache, cycle: p.cycle, identity: false };
}

/** The table's entry for the sequence `oid`, made on first use. */
function sequenceFor(b: TableBuild, oid: number): SourceSequence {
  let s = b.sequences.get(oid);
  if (!s) {
    const p = b.rows.seqByOid.get(oid);
    if (!p) throw new Error(`sequence ${oid} used by ${displayName(b.source)} vanished while reading the catalog`);
    s = sequenceOf(p);
    b.sequences.set(oid, s);
  }
  return s;
}

/** The columns of the table or partition `oid`, with the sequences their defaults name. */
function columnsOf(b: TableBuild, oid: number, what: QualifiedName): SourceColumn[] {
  const defaultSeqsByAttnum = new Map<number, QualifiedName[]>();
  for (const d of b.rows.defaultSeqs.filter((d) => Number(d.relid) === oid)) {
    const s = sequenceFor(b, Number(d.seqoid));
    const list = defaultSeqsByAttnum.get(d.attnum) ?? [];
    if (!list.some((q) => q.schema === s.name.schema && q.name === s.name.name)) list.push(s.name);
    defaultSeqsByAttnum.set(d.attnum, list);
  }
  return b.rows.columns
    .filter((c) => Number(c.relid) === oid)
    .map((c) => {
      const col: SourceColumn = { name: c.attname, type: c.type, notNull: c.attnotnull };
      if (c.expr !== null && c.attgenerated === 's') col.generated = c.expr;
      else if (c.expr !== null) {
        col.default = c.expr;
        const seqs = defaultSeqsByAttnum.get(c.attnum);
        if (seqs) col.defaultSequences = seqs;
      }
      if (c.attidentity === 'a') col.identity = 'always';
      if (c.attidentity === 'd') col.identity = 'by-default';
      if (c.coll_schema !== null && c.coll_name !== null) col.collation = { schema: c.coll_schema, name: c.coll_name };
      if (c.lo_ref && oid === b.relid) {
        b.warnings.push(
          `column ${c.attname} of ${displayName(what)} has type ${c.type}: if it holds large object references, the large objects themselves are not migrated (only the numbers are copied)`,
        );
      }
      return col;
    });
}

type TableObjects = Pick<SourceTable, 'primaryKey' | 'indexes' | 'constraints' | 'foreignKeys'> & {
  replicaIdentityIndex?: { name: string; columns: string[]; inherited: boolean };
};

/** Keys, constraints and indexes of the table or partition `oid`, without those it gets from elsewhere. */
function tableObjects(b: TableBuild, oid: number, what: QualifiedName, partition: boolean): TableObjects {
  const out: TableObjects = { indexes: [], constraints: [], foreignKeys: [] };
  // conparentid <> 0 (a partition's copy of its parent's key or foreign key, or the per-partition
  // clones of a foreign key to a partitioned table) are left out in the query.
  for (const c of b.rows.constraints.filter((c) => Number(c.relid) === oid)) {
    if (partition && c.inherited) continue; // a CHECK the partition has from its parent
    addConstraint(out, c, what);
  }
  for (const i of b.rows.indexes.filter((i) => Number(i.relid) === oid)) {
    if (i.indisreplident) out.replicaIdentityIndex = { name: i.name, columns: i.key_cols, inherited: i.inherited };
    if (i.backs_constraint) continue; // created with its constraint
    if (partition && i.inherited) continue; // created by the parent's index, which cascades
    if (!i.indisvalid) {
      b.warnings.push(`index ${i.name} of ${displayName(what)} is invalid on the source (a failed CREATE INDEX CONCURRENTLY?) and is not created`);
      continue;
    }
    out.indexes.push({ name: i.name, definition: i.def });
  }
  return out;
}

function addConstraint(out: TableObjects, c: ConstraintRow, what: QualifiedName): void {
  switch (c.contype) {
    case 'p':
      out.primaryKey = { name: c.conname, columns: c.cols, definition: c.def, ...keyIndex(c) };
      break;
    case 'u':
      out.constraints.push({ name: c.conname, kind: 'unique', definition: c.def, ...keyIndex(c) });
      break;
    case 'c':
      out.constraints.push({ name: c.conname, kind: 'check', definition: c.def });
      break;
    case 'x':
      out.constraints.push({ name: c.conname, kind: 'exclusion', definition: c.def });
      break;
    case 'f':
      out.foreignKeys.push(foreignKeyOf(c, what));
      break;
  }
}

function foreignKeyOf(c: ConstraintRow, what: QualifiedName): SourceForeignKey {
  if (c.ref_schema === null || c.ref_name === null) throw new Error(`foreign key ${c.conname} of ${displayName(what)} has no referenced table`);
  const fk: SourceForeignKey = {
    name: c.conname,
    columns: c.cols,
    referencedTable: { schema: c.ref_schema, name: c.ref_name },
    referencedColumns: c.ref_cols,
    onUpdate: c.confupdtype as FkAction,
    onDelete: c.confdeltype as FkAction,
    match: c.confmatchtype as FkMatch,
    deferrable: c.condeferrable,
    deferred: c.condeferred,
    validated: c.convalidated,
  };
  if (c.del_set_cols && c.del_set_cols.length) fk.deleteSetColumns = c.del_set_cols;
  return fk;
}

function nameOfOid(rels: RelRow[], oid: number): QualifiedName {
  const r = rels.find((x) => Number(x.oid) === oid);
  return r ? { schema: r.schema, name: r.name } : { schema: '?', name: String(oid) };
}

/** Every partition below each root, at any depth, parents before children. */
async function queryPartitions(client: pg.Client, roots: number[]): Promise<PartitionRow[]> {
  const r = await client.query<PartitionRow>(
    `SELECT t.relid::oid AS oid, w.root, n.nspname::text AS schema, c.relname::text AS name, c.relkind::text AS relkind,
            c.relpersistence::text AS relpersistence, c.relreplident::text AS relreplident, c.reltuples::float8 AS reltuples,
            pg_get_expr(c.relpartbound, c.oid) AS bound,
            CASE WHEN c.relkind = 'p' THEN pg_get_partkeydef(c.oid) END AS partkey,
            pn.nspname::text AS parent_schema, pc.relname::text AS parent_name
       FROM unnest($1::oid[]) AS w(root)
       CROSS JOIN LATERAL pg_partition_tree(w.root) AS t
       JOIN pg_class c ON c.oid = t.relid
       JOIN pg_namespace n ON n.oid = c.relnamespace
       JOIN pg_class pc ON pc.oid = t.parentrelid
       JOIN pg_namespace pn ON pn.oid = pc.relnamespace
      WHERE t.level > 0
      ORDER BY w.root, t.level, n.nspname, c.relname`,
    [roots],
  );
  return r.rows;
}

function replicaIdentity(code: string): SourceTable['replicaIdentity'] {
  switch (code) {
    case 'd':
      return 'default';
    case 'i':
      return 'index';
    case 'f':
      return 'full';
    case 'n':
      return 'nothing';
    default:
      throw new Error(`unknown relreplident ${JSON.stringify(code)}`);
  }
}

interface ColumnRow {
  relid: number;
  attnum: number;
  attname: string;
  type: string;
  attnotnull: boolean;
  attidentity: string;
  attgenerated: string;
  /** Default or generation expression. */
  expr: string | null;
  coll_schema: string | null;
  coll_name: string | null;
  /** oid or the lo extension's domain: may hold large object references. */
  lo_ref: boolean;
}

async function queryColumns(client: pg.Client, oids: number[]): Promise<ColumnRow[]> {
  const r = await client.query<ColumnRow>(
    `SELECT a.attrelid AS relid, a.attnum::int AS attnum, a.attname::text AS attname,
            format_type(a.atttypid, a.atttypmod) AS type, a.attnotnull,
            a.attidentity::text AS attidentity, a.attgenerated::text AS attgenerated,
            pg_get_expr(d.adbin, d.adrelid) AS expr,
            cn.nspname::text AS coll_schema, co.collname::text AS coll_name,
            (t.oid = 'pg_catalog.oid'::regtype OR (t.typname = 'lo' AND t.typtype = 'd')) AS lo_ref
       FROM pg_attribute a
       JOIN pg_type t ON t.oid = a.atttypid
       LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
       LEFT JOIN pg_collation co ON co.oid = a.attcollation AND a.attcollation <> t.typcollation
       LEFT JOIN pg_namespace cn ON cn.oid = co.collnamespace
      WHERE a.attrelid = ANY($1::oid[]) AND a.attnum > 0 AND NOT a.attisdropped
      ORDER BY a.attrelid, a.attnum`,
    [oids],
  );
  return r.rows;
}

interface DefaultSeqRow {
  relid: number;
  attnum: number;
  seqoid: number;
}

/** Sequences a column default depends on: pg_depend from its pg_attrdef row to a pg_class of relkind 'S'. */
async function queryDefaultSequences(client: pg.Client, oids: number[]): Promise<DefaultSeqRow[]> {
  const r = await client.query<DefaultSeqRow>(
    `SELECT DISTINCT d.adrelid AS relid, d.adnum::int AS attnum, s.oid AS seqoid
       FROM pg_attrdef d
       JOIN pg_depend dep ON dep.classid = 'pg_attrdef'::regclass AND dep.objid = d.oid AND dep.refclassid = 'pg_class'::regclass
       JOIN pg_class s ON s.oid = dep.refobjid AND s.relkind = 'S'
      WHERE d.adrelid = ANY($1::oid[])
      ORDER BY 1, 2, 3`,
    [oids],
  );
  return r.rows;
}

interface OwnedSeqRow {
  relid: number;
  attname: string;
  deptype: string;
  seqoid: number;
}

/** Sequences owned by a column: 'a' (serial, ALTER SEQUENCE .. OWNED BY) or 'i' (identity). */
async function queryOwnedSequences(client: pg.Client, oids: number[]): Promise<OwnedSeqRow[]> {
  const r = await client.query<OwnedSeqRow>(
    `SELECT dep.refobjid AS relid, a.attname::text AS attname, dep.deptype::text AS deptype, s.oid AS seqoid
       FROM pg_depend dep
       JOIN pg_class s ON s.oid = dep.objid AND s.relkind = 'S'
       JOIN pg_attribute a ON a.attrelid = dep.refobjid AND a.attnum = dep.refobjsubid
      WHERE dep.classid = 'pg_class'::regclass AND dep.refclassid = 'pg_class'::regclass
        AND dep.refobjid = ANY($1::oid[]) AND dep.deptype IN ('a', 'i')
      ORDER BY 1, a.attnum, 4`,
    [oids],
  );
  return r.rows;
}

interface SequenceRow {
  oid: number;
  schema: string;
  name: string;
  type: string;
  start: string;
  increment: string;
  min: string;
  max: string;
  cache: string;
  cycle: boolean;
}

async function querySequences(client: pg.Client, oids: number[]): Promise<SequenceRow[]> {
  if (oids.length === 0) return [];
  const r = await client.query<SequenceRow>(
    `SELECT s.oid, n.nspname::text AS schema, s.relname::text AS name, format_type(q.seqtypid, NULL) AS type,
            q.seqstart::text AS start, q.seqincrement::text AS increment, q.seqmin::text AS min,
            q.seqmax::text AS max, q.seqcache::text AS cache, q.seqcycle AS cycle
       FROM pg_class s
       JOIN pg_namespace n ON n.oid = s.relnamespace
       JOIN pg_sequence q ON q.seqrelid = s.oid
      WHERE s.oid = ANY($1::oid[])`,
    [oids],
  );
  return r.rows;
}

interface ConstraintRow {
  relid: number;
  conname: string;
  contype: string;
  def: string;
  cols: string[];
  ref_schema: string | null;
  ref_name: string | null;
  ref_cols: string[];
  confupdtype: string;
  confdeltype: string;
  confmatchtype: string;
  condeferrable: boolean;
  condeferred: boolean;
  convalidated: boolean;
  del_set_cols: string[] | null;
  /** Inherited from a parent (coninhcount > 0): for a partition, its parent's CHECK. */
  inherited: boolean;
  /** A primary key's or unique constraint's index: name and pg_get_indexdef. */
  index_name: string | null;
  index_def: string | null;
}

/** The index behind a primary key or unique constraint, when the catalog names it. */
function keyIndex(c: ConstraintRow): { index?: SourceConstraintIndex } {
  if (c.index_name === null || c.index_def === null) return {};
  return { index: { name: c.index_name, definition: c.index_def, deferrable: c.condeferrable, deferred: c.condeferred } };
}

/** Column names of an attnum array, in array order (key order). */
const attnames = (arr: string, rel: string) =>
  `ARRAY(SELECT a.attname::text FROM unnest(${arr}) WITH ORDINALITY AS k(attnum, ord)
           JOIN pg_attribute a ON a.attrelid = ${rel} AND a.attnum = k.attnum ORDER BY k.ord)`;

async function queryConstraints(client: pg.Client, oids: number[], version: number): Promise<ConstraintRow[]> {
  // confdelsetcols (ON DELETE SET NULL (cols)) exists from PostgreSQL 15.
  const delSetCols = version >= 150000 ? `CASE WHEN c.confdelsetcols IS NOT NULL THEN ${attnames('c.confdelsetcols', 'c.conrelid')} END` : 'NULL::text[]';
  const r = await client.query<ConstraintRow>(
    `SELECT c.conrelid AS relid, c.conname::text AS conname, c.contype::text AS contype,
            pg_get_constraintdef(c.oid) AS def,
            ${attnames('c.conkey', 'c.conrelid')} AS cols,
            rn.nspname::text AS ref_schema, rc.relname::text AS ref_name,
            ${attnames('c.confkey', 'c.confrelid')} AS ref_cols,
            c.confupdtype::text AS confupdtype, c.confdeltype::text AS confdeltype, c.confmatchtype::text AS confmatchtype,
            c.condeferrable, c.condeferred, c.convalidated,
            ${delSetCols} AS del_set_cols, c.coninhcount > 0 AS inherited,
            ci.relname::text AS index_name, CASE WHEN ci.oid IS NOT NULL THEN pg_get_indexdef(ci.oid) END AS index_def
       FROM pg_constraint c
       LEFT JOIN pg_class ci ON ci.oid = c.conindid AND c.contype IN ('p', 'u')
       LEFT JOIN pg_class rc ON rc.oid = c.confrelid
       LEFT JOIN pg_namespace rn ON rn.oid = rc.relnamespace
      WHERE c.conrelid = ANY($1::oid[]) AND c.contype IN ('p', 'u', 'c', 'x', 'f') AND c.conparentid = 0
      ORDER BY c.conrelid, c.conname`,
    [oids],
  );
  return r.rows;
}

interface IndexRow {
  relid: number;
  name: string;
  def: string;
  indisreplident: boolean;
  indisvalid: boolean;
  backs_constraint: boolean;
  key_cols: string[];
  /** A partition's index attached to an index of its parent. */
  inherited: boolean;
}

async function queryIndexes(client: pg.Client, oids: number[]): Promise<IndexRow[]> {
  const r = await client.query<IndexRow>(
    `SELECT i.indrelid AS relid, ic.relname::text AS name, pg_get_indexdef(i.indexrelid) AS def,
            i.indisreplident, i.indisvalid AND i.indisready AS indisvalid,
            EXISTS (SELECT 1 FROM pg_constraint c
                     WHERE c.conrelid = i.indrelid AND c.conindid = i.indexrelid AND c.contype IN ('p', 'u', 'x')) AS backs_constraint,
            ARRAY(SELECT a.attname::text FROM unnest(i.indkey::int2[]) WITH ORDINALITY AS k(attnum, ord)
                    JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
                   WHERE k.ord <= i.indnkeyatts ORDER BY k.ord) AS key_cols,
            ic.relispartition AS inherited
       FROM pg_index i
       JOIN pg_class ic ON ic.oid = i.indexrelid
      WHERE i.indrelid = ANY($1::oid[])
      ORDER BY i.indrelid, ic.relname`,
    [oids],
  );
  return r.rows;
}

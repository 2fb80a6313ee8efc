/**
 * Reads the source catalog for the tables to migrate and turns it into TableDefs (DDL from
 * activities/ddl.ts). Every piece of SQL text comes from PostgreSQL itself (format_type, pg_get_expr,
 * pg_get_constraintdef, pg_get_indexdef), printed with search_path = '' so that every type, function,
 * sequence and table name in it is schema-qualified and means the same thing on the target.
 *
 * All tables are read with one set of queries (oid = ANY($1)), inside one read-only transaction.
 */
import type pg from 'pg';
import { buildTableDef, type FkAction, type FkMatch, type SourceColumn, type SourceForeignKey, type SourceSequence, type SourceTable } from './ddl';
import { preconditionFailed } from './errors';
import type { TableDef } from './model';
import { displayName, type NormalizedSpec, type QualifiedName } from './spec';

interface RelRow {
  oid: number;
  schema: string;
  name: string;
  relkind: string;
  relispartition: boolean;
  relreplident: string;
  reltuples: number;
}

/**
 * Reads every table in `tables` (in that order) from the source. Throws a non-retryable failure if one
 * is missing, is not a plain table, or is partitioned / a partition (not supported yet).
 *
 * Runs its own transaction (BEGIN .. COMMIT) so that `SET LOCAL search_path = ''` ends with it: the
 * client must not be inside a transaction already.
 */
export async function readTableDefs(
  client: pg.Client,
  tables: Array<{ source: QualifiedName; target: QualifiedName }>,
  spec: Pick<NormalizedSpec, 'schemaMapping' | 'tableSuffix'>,
): Promise<TableDef[]> {
  if (tables.length === 0) return [];
  await client.query('BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY');
  try {
    await client.query(`SET LOCAL search_path = ''`);
    const sources = await readSourceTables(client, tables.map((t) => t.source));
    await client.query('COMMIT');
    return tables.map((t, i) => buildTableDef(sources[i]!, t.target, spec, tables));
  } catch (err) {
    await client.query('ROLLBACK').catch(() => undefined);
    throw err;
  }
}

/** The raw catalog facts for each table, in the order given. Expects search_path = ''. */
export async function readSourceTables(client: pg.Client, names: QualifiedName[]): Promise<SourceTable[]> {
  const version = Number((await client.query<{ v: string }>(`SELECT current_setting('server_version_num') AS v`)).rows[0]!.v);

  const rels = await client.query<RelRow>(
    `SELECT c.oid, n.nspname AS schema, c.relname AS name, c.relkind, c.relispartition, c.relreplident,
            c.reltuples::float8 AS reltuples
       FROM unnest($1::text[], $2::text[]) AS w(schema, name)
       JOIN pg_namespace n ON n.nspname = w.schema
       JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = w.name`,
    [names.map((n) => n.schema), names.map((n) => n.name)],
  );
  const relByName = new Map(rels.rows.map((r) => [key(r), r]));
  const ordered: RelRow[] = names.map((n) => {
    const r = relByName.get(key(n));
    // Non-retryable (ApplicationFailure): no retry makes these tables appear or change kind.
    if (!r) throw preconditionFailed(`table ${displayName(n)} does not exist on the source`);
    if (r.relkind === 'p' || r.relispartition) {
      throw preconditionFailed(
        `partitioned tables are not supported yet: ${displayName(n)} is ${r.relkind === 'p' ? 'partitioned' : 'a partition'}; leave it out of "tables"/"schemas"`,
      );
    }
    if (r.relkind !== 'r') throw preconditionFailed(`${displayName(n)} is not a table (relkind ${r.relkind}): only tables can be migrated`);
    return r;
  });
  const oids = ordered.map((r) => Number(r.oid));

  // One client runs one query at a time: sequential awaits, not Promise.all.
  const columns = await queryColumns(client, oids);
  const defaultSeqs = await queryDefaultSequences(client, oids);
  const ownedSeqs = await queryOwnedSequences(client, oids);
  const constraints = await queryConstraints(client, oids, version);
  const indexes = await queryIndexes(client, oids);
  const seqOids = [...new Set([...defaultSeqs.map((d) => d.seqoid), ...ownedSeqs.map((o) => o.seqoid)].map(Number))];
  const seqParams = await querySequences(client, seqOids);
  const seqByOid = new Map(seqParams.map((s) => [Number(s.oid), s]));

  return ordered.map((rel) => {
    const relid = Number(rel.oid);
    const source: QualifiedName = { schema: rel.schema, name: rel.name };
    const warnings: string[] = [];

    // Sequences: owned by a column of this table (serial 'a', identity 'i'), or named in a default.
    const sequences = new Map<number, SourceSequence>();
    const seqFor = (oid: number): SourceSequence => {
      let s = sequences.get(oid);
      if (!s) {
        const p = seqByOid.get(oid);
        if (!p) throw new Error(`sequence ${oid} used by ${displayName(source)} vanished while reading the catalog`);
        s = {
          name: { schema: p.schema, name: p.name },
          type: p.type,
          start: p.start,
          increment: p.increment,
          min: p.min,
          max: p.max,
          cache: p.cache,
          cycle: p.cycle,
          identity: false,
        };
        sequences.set(oid, s);
      }
      return s;
    };
    for (const o of ownedSeqs.filter((o) => Number(o.relid) === relid)) {
      const s = seqFor(Number(o.seqoid));
      s.ownedByColumn = o.attname;
      s.identity = o.deptype === 'i';
    }
    const defaultSeqsByAttnum = new Map<number, QualifiedName[]>();
    for (const d of defaultSeqs.filter((d) => Number(d.relid) === relid)) {
      const s = seqFor(Number(d.seqoid));
      const list = defaultSeqsByAttnum.get(d.attnum) ?? [];
      if (!list.some((q) => q.schema === s.name.schema && q.name === s.name.name)) list.push(s.name);
      defaultSeqsByAttnum.set(d.attnum, list);
    }

    const table: SourceTable = {
      source,
      columns: columns
        .filter((c) => Number(c.relid) === relid)
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
          return col;
        }),
      replicaIdentity: replicaIdentity(rel.relreplident),
      indexes: [],
      constraints: [],
      foreignKeys: [],
      sequences: [...sequences.values()],
      estimatedRows: Math.max(0, Math.round(rel.reltuples)),
    };

    for (const c of constraints.filter((c) => Number(c.relid) === relid)) {
      switch (c.contype) {
        case 'p':
          table.primaryKey = { name: c.conname, columns: c.cols, definition: c.def };
          break;
        case 'u':
          table.constraints.push({ name: c.conname, kind: 'unique', definition: c.def });
          break;
        case 'c':
          table.constraints.push({ name: c.conname, kind: 'check', definition: c.def });
          break;
        case 'x':
          table.constraints.push({ name: c.conname, kind: 'exclusion', definition: c.def });
          break;
        case 'f': {
          if (c.ref_schema === null || c.ref_name === null) throw new Error(`foreign key ${c.conname} of ${displayName(source)} has no referenced table`);
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
          table.foreignKeys.push(fk);
          break;
        }
      }
    }

    for (const i of indexes.filter((i) => Number(i.relid) === relid)) {
      if (i.indisreplident) table.replicaIdentityIndex = { name: i.name, columns: i.key_cols };
      if (i.backs_constraint) continue; // created with its constraint (PK before the load, others after)
      if (!i.indisvalid) {
        warnings.push(`index ${i.name} of ${displayName(source)} is invalid on the source (a failed CREATE INDEX CONCURRENTLY?) and is not created`);
        continue;
      }
      table.indexes.push({ name: i.name, definition: i.def });
    }
    if (warnings.length) table.warnings = warnings;
    return table;
  });
}

function key(q: { schema: string; name: string }): string {
  return `${q.schema}\u0000${q.name}`;
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
}

async function queryColumns(client: pg.Client, oids: number[]): Promise<ColumnRow[]> {
  const r = await client.query<ColumnRow>(
    `SELECT a.attrelid AS relid, a.attnum::int AS attnum, a.attname::text AS attname,
            format_type(a.atttypid, a.atttypmod) AS type, a.attnotnull,
            a.attidentity::text AS attidentity, a.attgenerated::text AS attgenerated,
            pg_get_expr(d.adbin, d.adrelid) AS expr,
            cn.nspname::text AS coll_schema, co.collname::text AS coll_name
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
            ${delSetCols} AS del_set_cols
       FROM pg_constraint c
       LEFT JOIN pg_class rc ON rc.oid = c.confrelid
       LEFT JOIN pg_namespace rn ON rn.oid = rc.relnamespace
      WHERE c.conrelid = ANY($1::oid[]) AND c.contype IN ('p', 'u', 'c', 'x', 'f')
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
}

async function queryIndexes(client: pg.Client, oids: number[]): Promise<IndexRow[]> {
  const r = await client.query<IndexRow>(
    `SELECT i.indrelid AS relid, ic.relname::text AS name, pg_get_indexdef(i.indexrelid) AS def,
            i.indisreplident, i.indisvalid AND i.indisready AS indisvalid,
            EXISTS (SELECT 1 FROM pg_constraint c
                     WHERE c.conrelid = i.indrelid AND c.conindid = i.indexrelid AND c.contype IN ('p', 'u', 'x')) AS backs_constraint,
            ARRAY(SELECT a.attname::text FROM unnest(i.indkey::int2[]) WITH ORDINALITY AS k(attnum, ord)
                    JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
                   WHERE k.ord <= i.indnkeyatts ORDER BY k.ord) AS key_cols
       FROM pg_index i
       JOIN pg_class ic ON ic.oid = i.indexrelid
      WHERE i.indrelid = ANY($1::oid[])
      ORDER BY i.indrelid, ic.relname`,
    [oids],
  );
  return r.rows;
}

/**
 * Pure DDL generation (no I/O): turns what activities/catalog.ts read from the source catalog into the
 * statements that recreate a table on the target under its mapped name. Expressions, types and
 * constraint bodies are PostgreSQL's own text (format_type, pg_get_expr, pg_get_constraintdef,
 * pg_get_indexdef, read with search_path = '' so they are schema-qualified); this module only places
 * them, renames what the mapping renames, and quotes every identifier it writes itself through
 * activities/sql.ts.
 * Names on the target follow activities/naming.ts (the table's is given by the caller).
 */
import type { ColumnDef, PostLoadStep, SequenceRef, TableDef } from './model';
import { columnList, ident, literal, qname } from './sql';
import { displayName, SpecError, type QualifiedName } from './spec';
import { mapSequenceName, mapTableName, MAX_IDENTIFIER_BYTES, nameKey, targetObjectName, type NameMapping } from './naming';

/** A postLoad statement with its description (TableDef keeps them apart: postLoad, postLoadSteps). */
export type PostLoadStatement = PostLoadStep & { sql: string };

// ---------------------------------------------------------------------------------------------------
// What the catalog reader hands over (source names, PostgreSQL's printed SQL text).
// ---------------------------------------------------------------------------------------------------

export interface SourceSequence {
  name: QualifiedName;
  /** format_type(seqtypid): smallint, integer or bigint. */
  type: string;
  /** pg_sequence parameters as decimal text (they are int8). */
  start: string;
  increment: string;
  min: string;
  max: string;
  cache: string;
  cycle: boolean;
  /** Column of *this* table that owns the sequence (serial: pg_depend 'a'; identity: 'i'). */
  ownedByColumn?: string;
  /** An identity column's internal sequence: created by CREATE TABLE, not by CREATE SEQUENCE. */
  identity: boolean;
}

export interface SourceColumn {
  name: string;
  /** format_type(atttypid, atttypmod). */
  type: string;
  notNull: boolean;
  /** pg_get_expr(adbin, adrelid) of a plain default, as the source prints it. */
  default?: string;
  /** Sequences the default refers to (pg_depend from its pg_attrdef row): their references get renamed. */
  defaultSequences?: QualifiedName[];
  /** Expression of a GENERATED ALWAYS AS (...) STORED column. */
  generated?: string;
  identity?: 'always' | 'by-default';
  /** Set only when the column's collation differs from its type's. */
  collation?: QualifiedName;
}

export interface SourceIndex {
  name: string;
  /** pg_get_indexdef(indexrelid). */
  definition: string;
}

export interface SourceConstraint {
  name: string;
  kind: 'unique' | 'check' | 'exclusion';
  /** pg_get_constraintdef(oid): the body after the constraint name, without any table name. */
  definition: string;
  /** A unique constraint's index (absent: the constraint is created with its index in one statement). */
  index?: SourceConstraintIndex;
}

/**
 * The unique index behind a primary key or unique constraint. With it, the target builds the index
 * like any other (CREATE UNIQUE INDEX takes a SHARE lock, so it runs alongside the table's other index
 * builds), then attaches it: ADD CONSTRAINT .. USING INDEX only updates the catalog.
 */
export interface SourceConstraintIndex {
  name: string;
  /** pg_get_indexdef(conindid): WITH (...), INCLUDE, NULLS NOT DISTINCT and tablespace are in it. */
  definition: string;
  deferrable: boolean;
  deferred: boolean;
}

export interface SourcePrimaryKey {
  name: string;
  columns: string[];
  /** pg_get_constraintdef, e.g. `PRIMARY KEY (a, b) INCLUDE (c)`. */
  definition: string;
  index?: SourceConstraintIndex;
}

/** pg_constraint codes: confupdtype / confdeltype and confmatchtype. */
export type FkAction = 'a' | 'r' | 'c' | 'n' | 'd';
export type FkMatch = 'f' | 'p' | 's';

export interface SourceForeignKey {
  name: string;
  columns: string[];
  referencedTable: QualifiedName;
  referencedColumns: string[];
  onUpdate: FkAction;
  onDelete: FkAction;
  /** PostgreSQL 15+: ON DELETE SET NULL (cols) / SET DEFAULT (cols) (pg_constraint.confdelsetcols). */
  deleteSetColumns?: string[];
  match: FkMatch;
  deferrable: boolean;
  deferred: boolean;
  /** false for a constraint added NOT VALID and never validated. */
  validated: boolean;
}

export interface SourceTable {
  source: QualifiedName;
  /** attnum order, without dropped columns. */
  columns: SourceColumn[];
  primaryKey?: SourcePrimaryKey;
  replicaIdentity: 'default' | 'index' | 'full' | 'nothing';
  /** The index named by REPLICA IDENTITY USING INDEX (a secondary index, a unique constraint's or the PK's). */
  replicaIdentityIndex?: { name: string; columns: string[] };
  /** Indexes that do not back a constraint. */
  indexes: SourceIndex[];
  constraints: SourceConstraint[];
  foreignKeys: SourceForeignKey[];
  /** Every sequence the table uses: owned by one of its columns, or named in a column default. */
  sequences: SourceSequence[];
  estimatedRows: number;
  /** Notes from the reader (e.g. skipped invalid indexes), carried into TableDef.warnings. */
  warnings?: string[];
  /** pg_get_partkeydef (e.g. `RANGE (payment_date)`): set for a partitioned table. */
  partitionKey?: string;
  /**
   * Every partition below a partitioned table, at any depth, each after its parent. A partition's
   * columns, indexes and constraints are the ones it has of its own: what it inherits from its parent
   * (columns, the primary key, indexes and constraints created on the parent) is left out.
   */
  partitions?: SourcePartition[];
}

export interface SourcePartition {
  name: QualifiedName;
  /** The partitioned table it is attached to: the root or a partition above it. */
  parent: QualifiedName;
  /** pg_get_expr(relpartbound): `FOR VALUES FROM (..) TO (..)`, `FOR VALUES IN (..)`, `FOR VALUES WITH (..)` or `DEFAULT`. */
  bound: string;
  /** pg_get_partkeydef when this partition is partitioned itself. */
  partitionKey?: string;
  /** All its columns (compared with the parent's: a partition may have a default or NOT NULL of its own). */
  columns: SourceColumn[];
  /** A primary key of its own (not inherited from the parent). */
  primaryKey?: SourcePrimaryKey;
  replicaIdentity: 'default' | 'index' | 'full' | 'nothing';
  replicaIdentityIndex?: { name: string; columns: string[]; inherited: boolean };
  /** Its own indexes (not attached to an index of the parent). */
  indexes: SourceIndex[];
  /** Its own constraints (not inherited). */
  constraints: SourceConstraint[];
  foreignKeys: SourceForeignKey[];
}

/** A user-defined type the mapping moves to another schema (the name stays). */
export interface TypeRename {
  source: QualifiedName;
  target: QualifiedName;
}

// ---------------------------------------------------------------------------------------------------
// Names
// ---------------------------------------------------------------------------------------------------

/**
 * Keywords that quote_ident() quotes (every category but "unreserved"), from PostgreSQL 15's
 * pg_get_keywords(). Later versions add a few (e.g. system_user in 16); text printed by those servers
 * is still matched because matchers also accept the always-quoted spelling (printedNameForms).
 */
const QUOTED_KEYWORDS = new Set(
  (
    'all analyse analyze and any array as asc asymmetric authorization between bigint binary bit boolean both case ' +
    'cast char character check coalesce collate collation column concurrently constraint create cross current_catalog ' +
    'current_date current_role current_schema current_time current_timestamp current_user dec decimal default ' +
    'deferrable desc distinct do else end except exists extract false fetch float for foreign freeze from full grant ' +
    'greatest group grouping having ilike in initially inner inout int integer intersect interval into is isnull join ' +
    'lateral leading least left like limit localtime localtimestamp national natural nchar none normalize not notnull ' +
    'null nullif numeric offset on only or order out outer overlaps overlay placing position precision primary real ' +
    'references returning right row select session_user setof similar smallint some substring symmetric table ' +
    'tablesample then time timestamp to trailing treat trim true union unique user using values varchar variadic ' +
    'verbose when where window with xmlattributes xmlconcat xmlelement xmlexists xmlforest xmlnamespaces xmlparse ' +
    'xmlpi xmlroot xmlserialize xmltable'
  ).split(' '),
);

/**
 * The spelling PostgreSQL's quote_ident()/quote_identifier() gives a name (with quote_all_identifiers
 * off): bare when it is only lower-case ASCII letters, digits and underscores, does not start with a
 * digit and is not a keyword that needs quoting; otherwise double-quoted with "" for ". This is how
 * pg_get_indexdef and regclass constants print names, so we need it to find those names in their text.
 * Our own SQL never uses it: we always quote (ident/qname).
 */
export function quoteIdentLikePg(name: string): string {
  const safe = /^[a-z_][a-z0-9_]*$/.test(name) && !QUOTED_KEYWORDS.has(name);
  return safe ? name : ident(name);
}

/** Every way a PostgreSQL server may have printed `name`: its quote_ident form, and always-quoted. */
function printedNameForms(name: string): string[] {
  return unique([quoteIdentLikePg(name), ident(name)]);
}

/** Every way a server may have printed `schema.name` (quote_qualified_identifier). */
function printedQualifiedForms(q: QualifiedName): string[] {
  const out: string[] = [];
  for (const s of printedNameForms(q.schema)) for (const n of printedNameForms(q.name)) out.push(`${s}.${n}`);
  return unique(out);
}

function unique(xs: string[]): string[] {
  return [...new Set(xs)];
}

// ---------------------------------------------------------------------------------------------------
// Rewriting PostgreSQL's printed text
// ---------------------------------------------------------------------------------------------------

/** How ruleutils prints a string constant: '...' with ' doubled (and \ doubled if standard_conforming_strings is off). */
function printedLiteralForms(s: string): string[] {
  const q = s.replace(/'/g, "''");
  return unique([`'${q}'`, `'${q.replace(/\\/g, '\\\\')}'`]);
}

/**
 * Renames sequence references in a default expression. The catalog tells us which sequences the
 * default depends on; a dependency on a sequence only arises from a regclass constant, which
 * pg_get_expr prints as '<quote_ident schema>.<quote_ident name>'::regclass (search_path = ''), e.g.
 * nextval('public.users_id_seq'::regclass). Exactly those references are replaced by the target's.
 */
export function rewriteSequenceReferences(expr: string, renames: Array<{ source: QualifiedName; target: QualifiedName }>): string {
  if (renames.length === 0) return expr;
  // needle (as printed on the source) -> replacement; one pass, so a replacement is never rewritten again.
  const needles = new Map<string, { replacement: string; source: QualifiedName }>();
  for (const { source, target } of renames) {
    const replacement = `${literal(qname(target)).trim()}::regclass`;
    for (const printed of printedQualifiedForms(source)) {
      for (const lit of printedLiteralForms(printed)) needles.set(`${lit}::regclass`, { replacement, source });
    }
  }
  const alternatives = [...needles.keys()].sort((a, b) => b.length - a.length).map(escapeRegExp);
  const matched = new Set<string>();
  const out = expr.replace(new RegExp(alternatives.join('|'), 'g'), (m) => {
    const hit = needles.get(m)!;
    matched.add(displayName(hit.source));
    return hit.replacement;
  });
  for (const { source } of renames) {
    if (!matched.has(displayName(source))) {
      throw new Error(`cannot find the reference to sequence ${displayName(source)} in the default expression ${expr}`);
    }
  }
  return out;
}

function escapeRegExp(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

const changedRenames = (renames: readonly TypeRename[]) => renames.filter((r) => !sameName(r.source, r.target));

/**
 * A column or attribute type as format_type printed it (search_path = '': user types qualified,
 * arrays with a single `[]` whatever their dimensions), with a renamed type replaced by its target
 * name. Built-in types and types that keep their schema are returned unchanged.
 */
export function rewriteTypeText(typeText: string, renames: readonly TypeRename[]): string {
  const m = /^([\s\S]*?)((?:\[\])*)$/.exec(typeText);
  const base = m?.[1] ?? typeText;
  const dims = m?.[2] ?? '';
  for (const r of changedRenames(renames)) {
    if (printedQualifiedForms(r.source).includes(base)) return `${qname(r.target)}${dims}`;
  }
  return typeText;
}

/**
 * Casts to a renamed type in text printed by pg_get_expr / pg_get_constraintdef / pg_get_indexdef /
 * pg_get_partkeydef (`'G'::public.mpaa_rating`, `ROW(1, 2)::public.pair`, `'{}'::public.mood[]`):
 * ruleutils prints every cast as `::type`, schema-qualified for types outside pg_catalog. A string
 * literal that spells `::schema.type` exactly would be rewritten too; accepted.
 */
export function rewriteExprTypes(expr: string, renames: readonly TypeRename[]): string {
  const changed = changedRenames(renames);
  if (changed.length === 0 || !expr.includes('::')) return expr;
  const needles = new Map<string, string>();
  for (const r of changed) for (const p of printedQualifiedForms(r.source)) needles.set(`::${p}`, `::${qname(r.target)}`);
  const alternatives = [...needles.keys()].sort((a, b) => b.length - a.length).map(escapeRegExp);
  // Not followed by more of a name: ::public.mood must not match ::public.mood2 or ::public."mood""x".
  const re = new RegExp(`(?:${alternatives.join('|')})(?![A-Za-z0-9_$"\\u0080-\\uFFFF])`, 'g');
  return expr.replace(re, (m) => needles.get(m)!);
}

/**
 * Rewrites pg_get_indexdef output for the target: `CREATE [UNIQUE] INDEX <name> ON [ONLY] <schema>.<table>
 * USING ...` gets the target index name and table; everything from USING on is kept verbatim.
 * pg_get_indexdef prints ONLY for an index of a partitioned table (pg_dump creates it on the parent
 * alone, then attaches each partition's); `dropOnly` removes it so the index cascades to the partitions.
 */
export function rewriteIndexDefinition(
  definition: string,
  index: { source: string; target: string },
  table: { source: QualifiedName; target: QualifiedName },
  opts: { dropOnly?: boolean } = {},
): string {
  const head = /^CREATE (UNIQUE )?INDEX /.exec(definition);
  if (head) {
    const rest = definition.slice(head[0].length);
    for (const name of printedNameForms(index.source)) {
      if (!rest.startsWith(`${name} ON `)) continue;
      let afterOn = rest.slice(name.length + ' ON '.length);
      const only = afterOn.startsWith('ONLY ') ? 'ONLY ' : '';
      afterOn = afterOn.slice(only.length);
      for (const tbl of printedQualifiedForms(table.source)) {
        if (afterOn.startsWith(`${tbl} USING `)) {
          const tail = afterOn.slice(tbl.length + 1); // keeps "USING ..."
          return `CREATE ${head[1] ?? ''}INDEX ${ident(index.target)} ON ${opts.dropOnly ? '' : only}${qname(table.target)} ${tail}`;
        }
      }
    }
  }
  throw new Error(`cannot rewrite index ${index.source} of ${displayName(table.source)}: unexpected definition ${definition}`);
}

// ---------------------------------------------------------------------------------------------------
// Statements
// ---------------------------------------------------------------------------------------------------

const INTEGER_TEXT = /^-?[0-9]+$/;

function int8(value: string, what: string): string {
  if (!INTEGER_TEXT.test(value)) throw new Error(`sequence parameter ${what} is not an integer: ${JSON.stringify(value)}`);
  return value;
}

/** START WITH .. INCREMENT BY .. MINVALUE .. MAXVALUE .. CACHE .. [NO] CYCLE, all explicit. */
export function sequenceOptions(seq: SourceSequence): string {
  return [
    `START WITH ${int8(seq.start, 'start')}`,
    `INCREMENT BY ${int8(seq.increment, 'increment')}`,
    `MINVALUE ${int8(seq.min, 'minvalue')}`,
    `MAXVALUE ${int8(seq.max, 'maxvalue')}`,
    `CACHE ${int8(seq.cache, 'cache')}`,
    seq.cycle ? 'CYCLE' : 'NO CYCLE',
  ].join(' ');
}

const SEQUENCE_TYPES = new Set(['smallint', 'integer', 'bigint']);

/**
 * IF NOT EXISTS: two migrated tables may use the same sequence and both create it. The sequence's
 * current value is not set here: the cutover brings every target sequence up to the source's.
 */
export function createSequenceDdl(seq: SourceSequence, spec: NameMapping): string {
  if (!SEQUENCE_TYPES.has(seq.type)) throw new Error(`sequence ${displayName(seq.name)} has unexpected type ${seq.type}`);
  return `CREATE SEQUENCE IF NOT EXISTS ${qname(mapSequenceName(seq.name, spec))} AS ${seq.type} ${sequenceOptions(seq)}`;
}

/** One column of CREATE TABLE; `col` is already mapped (default rewritten, collation quoted). */
export function columnDefinition(col: ColumnDef, identitySequence?: { target: QualifiedName; options: string }): string {
  const parts = [ident(col.name), col.type];
  if (col.collation) parts.push(`COLLATE ${col.collation}`);
  if (col.generated !== undefined) parts.push(`GENERATED ALWAYS AS (${col.generated}) STORED`);
  if (col.identity) {
    const kind = col.identity === 'always' ? 'ALWAYS' : 'BY DEFAULT';
    const opts = identitySequence ? ` (SEQUENCE NAME ${qname(identitySequence.target)} ${identitySequence.options})` : '';
    parts.push(`GENERATED ${kind} AS IDENTITY${opts}`);
  }
  if (col.default !== undefined) parts.push(`DEFAULT ${col.default}`);
  if (col.notNull) parts.push('NOT NULL');
  return parts.join(' ');
}

/** The source column as the target will have it: sequence and type references renamed, collation quoted. */
export function mapColumn(col: SourceColumn, spec: NameMapping, types: readonly TypeRename[] = []): ColumnDef {
  const out: ColumnDef = { name: col.name, type: rewriteTypeText(col.type, types), notNull: col.notNull };
  if (col.default !== undefined) out.default = mapDefault(col, spec, types);
  if (col.generated !== undefined) out.generated = rewriteExprTypes(col.generated, types);
  if (col.identity) out.identity = col.identity;
  if (col.collation) out.collation = qname(col.collation);
  return out;
}

function mapDefault(col: SourceColumn, spec: NameMapping, types: readonly TypeRename[]): string {
  const renames = (col.defaultSequences ?? []).map((s) => ({ source: s, target: mapSequenceName(s, spec) }));
  return rewriteExprTypes(rewriteSequenceReferences(col.default!, renames), types);
}

/**
 * CREATE TABLE with every column (NOT NULL included; keys, indexes and other constraints come after
 * the load); `PARTITION BY` for a partitioned table (its partitions are created by partitionDdl).
 */
export function createTableDdl(table: SourceTable, target: QualifiedName, spec: NameMapping, types: readonly TypeRename[] = []): string {
  const lines = table.columns.map((c) => {
    const seq = c.identity ? table.sequences.find((s) => s.identity && s.ownedByColumn === c.name) : undefined;
    const identitySequence = seq ? { target: mapSequenceName(seq.name, spec), options: sequenceOptions(seq) } : undefined;
    return columnDefinition(mapColumn(c, spec, types), identitySequence);
  });
  const partitionBy = table.partitionKey !== undefined ? ` PARTITION BY ${rewriteExprTypes(table.partitionKey, types)}` : '';
  return `CREATE TABLE ${qname(target)} (\n  ${lines.join(',\n  ')}\n)${partitionBy}`;
}

/**
 * `CREATE TABLE <partition> PARTITION OF <parent> <bound> [PARTITION BY ...]`, then what the partition
 * has of its own: column defaults and NOT NULLs that differ from its parent's (PARTITION OF copies the
 * parent's), and its replica identity when FULL or NOTHING. Its own primary key comes after the load.
 */
export function partitionDdl(
  part: SourcePartition,
  target: QualifiedName,
  parent: { target: QualifiedName; columns: readonly SourceColumn[] },
  spec: NameMapping,
  types: readonly TypeRename[] = [],
): string[] {
  const partitionBy = part.partitionKey !== undefined ? ` PARTITION BY ${rewriteExprTypes(part.partitionKey, types)}` : '';
  const out = [`CREATE TABLE ${qname(target)} PARTITION OF ${qname(parent.target)} ${part.bound}${partitionBy}`];
  for (const col of part.columns) {
    const up = parent.columns.find((c) => c.name === col.name);
    if (!up || col.generated !== undefined || col.identity) continue;
    const alter = `ALTER TABLE ${qname(target)} ALTER COLUMN ${ident(col.name)}`;
    if (col.default !== up.default) out.push(col.default === undefined ? `${alter} DROP DEFAULT` : `${alter} SET DEFAULT ${mapDefault(col, spec, types)}`);
    if (col.notNull && !up.notNull) out.push(`${alter} SET NOT NULL`);
  }
  if (part.replicaIdentity === 'full') out.push(`ALTER TABLE ${qname(target)} REPLICA IDENTITY FULL`);
  if (part.replicaIdentity === 'nothing') out.push(`ALTER TABLE ${qname(target)} REPLICA IDENTITY NOTHING`);
  return out;
}

/** The index on the target table; on a partitioned table it cascades to every partition (no ONLY). */
export function createIndexDdl(index: SourceIndex, table: { source: QualifiedName; target: QualifiedName }, spec: NameMapping, types: readonly TypeRename[] = []): string {
  return rewriteExprTypes(
    rewriteIndexDefinition(index.definition, { source: index.name, target: targetObjectName(index.name, spec) }, table, { dropOnly: true }),
    types,
  );
}

export function addConstraintDdl(
  con: SourceConstraint | SourcePrimaryKey,
  target: QualifiedName,
  spec: NameMapping,
  types: readonly TypeRename[] = [],
): string {
  return `ALTER TABLE ${qname(target)} ADD CONSTRAINT ${ident(targetObjectName(con.name, spec))} ${rewriteExprTypes(con.definition, types)}`;
}

/** What ADD CONSTRAINT .. USING INDEX accepts: a plain unique b-tree index (no expression, no WHERE). */
const ATTACHABLE_INDEX = /^CREATE UNIQUE INDEX .* USING btree \(/;

/**
 * A primary key or unique constraint of a plain (not partitioned) table, as pgcopydb builds it: the
 * index under the constraint's target name (kind 'index', parallel with the table's other index
 * builds), then `ADD CONSTRAINT <name> PRIMARY KEY | UNIQUE USING INDEX <name>` (kind 'constraint', a
 * catalog update; the index keeps its name, which is the constraint's). Without the index's
 * definition, or for an index USING INDEX would refuse, one ADD CONSTRAINT statement does both.
 * Partitioned tables cannot attach an index this way (0A000): their keys use addConstraintDdl.
 */
export function keyConstraintSteps(
  con: SourceConstraint | SourcePrimaryKey,
  kind: 'primary-key' | 'unique',
  table: { source: QualifiedName; target: QualifiedName },
  spec: NameMapping,
  types: readonly TypeRename[] = [],
): PostLoadStatement[] {
  const ix = con.index;
  if (!ix || !ATTACHABLE_INDEX.test(ix.definition)) {
    return [{ kind: 'constraint', sql: addConstraintDdl(con, table.target, spec, types) }];
  }
  const name = targetObjectName(con.name, spec);
  const build = rewriteExprTypes(rewriteIndexDefinition(ix.definition, { source: ix.name, target: name }, table), types);
  const deferral = ix.deferrable ? (ix.deferred ? ' DEFERRABLE INITIALLY DEFERRED' : ' DEFERRABLE') : '';
  const attach = `ALTER TABLE ${qname(table.target)} ADD CONSTRAINT ${ident(name)} ${kind === 'primary-key' ? 'PRIMARY KEY' : 'UNIQUE'} USING INDEX ${ident(name)}${deferral}`;
  return [
    { kind: 'index', sql: build },
    { kind: 'constraint', sql: attach, usingIndex: true },
  ];
}

/**
 * Makes sure `extension` is installed on the target in `schema` (its schema on the source, which the
 * printed index, constraint and default text names) before a table that uses `objects` of it in an
 * index, constraint or default: installs it when the target offers it, else refuses with a message
 * naming what needs it (before the copy, not hours later when the index is built).
 */
export function ensureExtensionDdl(extension: string, schema: string, objects: readonly string[]): string {
  const used = `the migrated tables' indexes, constraints or defaults use ${objects.join(', ')} of extension ${extension}`;
  const refuse = (message: string) => `RAISE EXCEPTION USING ERRCODE = 'feature_not_supported', MESSAGE = ${message};`;
  const body = [
    `  SELECT n.nspname INTO installed FROM pg_catalog.pg_extension e JOIN pg_catalog.pg_namespace n ON n.oid = e.extnamespace WHERE e.extname = ${literal(extension)};`,
    '  IF installed IS NULL THEN',
    `    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_available_extensions WHERE name = ${literal(extension)}) THEN`,
    `      ${refuse(literal(`${used}, which is not available on the target: install the package that provides it (for contrib extensions, postgresql-contrib) on the target server`))}`,
    '    END IF;',
    `    EXECUTE ${literal(`CREATE EXTENSION IF NOT EXISTS ${ident(extension)} WITH SCHEMA ${ident(schema)} CASCADE`)};`,
    `  ELSIF installed <> ${literal(schema)} THEN`,
    `    ${refuse(`${literal(`${used}, which the target has installed in schema `)} || installed || ${literal(`, not ${schema} as on the source: move it there (ALTER EXTENSION ${extension} SET SCHEMA ${schema}) before migrating`)}`)}`,
    '  END IF;',
  ].join('\n');
  let tag = '$pgdts$';
  for (let i = 1; body.includes(tag); i++) tag = `$pgdts${i}$`;
  return `DO ${tag}\nDECLARE installed text;\nBEGIN\n${body}\nEND\n${tag}`;
}

const FK_ACTIONS: Record<FkAction, string> = { a: 'NO ACTION', r: 'RESTRICT', c: 'CASCADE', n: 'SET NULL', d: 'SET DEFAULT' };

/**
 * ALTER TABLE .. ADD CONSTRAINT .. FOREIGN KEY, built from pg_constraint's fields (not from
 * pg_get_constraintdef) because the referenced table's name must go through the mapping. `referenced`
 * is the referenced table's target when it is migrated too, else its source name unchanged.
 */
export function addForeignKeyDdl(fk: SourceForeignKey, target: QualifiedName, referenced: QualifiedName, spec: NameMapping): string {
  const parts = [
    `ALTER TABLE ${qname(target)} ADD CONSTRAINT ${ident(targetObjectName(fk.name, spec))}`,
    `FOREIGN KEY (${columnList(fk.columns)}) REFERENCES ${qname(referenced)} (${columnList(fk.referencedColumns)})`,
  ];
  if (fk.match === 'f') parts.push('MATCH FULL');
  else if (fk.match === 'p') parts.push('MATCH PARTIAL');
  parts.push(`ON UPDATE ${FK_ACTIONS[fk.onUpdate]}`);
  const setCols = fk.deleteSetColumns?.length && (fk.onDelete === 'n' || fk.onDelete === 'd') ? ` (${columnList(fk.deleteSetColumns)})` : '';
  parts.push(`ON DELETE ${FK_ACTIONS[fk.onDelete]}${setCols}`);
  if (fk.deferrable) parts.push(fk.deferred ? 'DEFERRABLE INITIALLY DEFERRED' : 'DEFERRABLE');
  if (!fk.validated) parts.push('NOT VALID');
  return parts.join(' ');
}

/**
 * A foreign key added NOT VALID (a catalog change: it is enforced for new rows from then on, without
 * checking the existing ones), then validated by this statement, which reads the rows under a lock
 * that lets writes go on (SHARE UPDATE EXCLUSIVE), unlike ADD FOREIGN KEY's SHARE ROW EXCLUSIVE.
 */
export function validateConstraintDdl(table: QualifiedName, constraint: string): string {
  return `ALTER TABLE ${qname(table)} VALIDATE CONSTRAINT ${ident(constraint)}`;
}

function sameName(a: QualifiedName, b: QualifiedName): boolean {
  return a.schema === b.schema && a.name === b.name;
}

/**
 * Everything the later phases need to know about one table, with its DDL:
 *   preLoad : CREATE SCHEMA IF NOT EXISTS, CREATE SEQUENCE IF NOT EXISTS (non-identity), CREATE TABLE
 *             [PARTITION BY] without any key, every partition (PARTITION OF, parents first),
 *             ALTER SEQUENCE .. OWNED BY, REPLICA IDENTITY FULL/NOTHING;
 *   postLoad: a plain table: the indexes of its primary key and unique constraints and its other
 *             indexes (kind 'index': they may be built at the same time), then attaching the key
 *             indexes (USING INDEX), check/exclusion constraints and REPLICA IDENTITY USING INDEX;
 *             a partitioned table (whose steps run in this order): the primary key (it cascades to the
 *             partitions, with names generated as before the load), partitions' own primary keys and
 *             indexes, the table's indexes (which cascade), its constraints, the partitions';
 *             then foreign keys (also listed in `foreignKeys`, the tail of postLoad).
 * `migrated` lists every table of the migration, so foreign keys between them follow the mapping.
 * `types` renames user-defined types whose schema the mapping changes (types-ddl.ts creates them).
 */
export function buildTableDef(
  table: SourceTable,
  target: QualifiedName,
  spec: NameMapping,
  migrated: ReadonlyArray<{ source: QualifiedName; target: QualifiedName }>,
  types: readonly TypeRename[] = [],
): TableDef {
  assertNameFits(target, table.source);
  const warnings = [...(table.warnings ?? [])];
  const columns = table.columns.map((c) => mapColumn(c, spec, types));
  const sequences: SequenceRef[] = table.sequences.map((s) => {
    const ref: SequenceRef = { source: s.name, target: mapSequenceName(s.name, spec), identity: s.identity };
    if (s.ownedByColumn !== undefined) ref.ownedByColumn = s.ownedByColumn;
    return ref;
  });
  const partitions: MappedPartition[] = (table.partitions ?? []).map((p) => ({ part: p, target: mapTableName(p.name, spec) }));
  for (const p of partitions) assertNameFits(p.target, p.part.name);
  const preLoad = preLoadDdl(table, target, partitions, sequences, spec, types);
  // In this order: the replica identity's index is built by the steps before it; warnings keep their order.
  const steps = [...keyAndIndexSteps(table, target, partitions, spec, types), ...replicaIdentitySteps(table, target, partitions, spec, warnings)];
  const fks = foreignKeySteps(table, target, partitions, migrated, spec, warnings);
  steps.push(...fks.steps);
  const keyColumns = table.primaryKey?.columns ?? (table.replicaIdentity === 'index' ? table.replicaIdentityIndex?.columns : undefined) ?? [];
  const def: TableDef = {
    source: table.source,
    target,
    columns,
    copyColumns: columns.filter((c) => c.generated === undefined).map((c) => c.name),
    keyColumns: [...keyColumns],
    replicaIdentity: table.replicaIdentity,
    preLoad,
    postLoad: steps.map((st) => st.sql),
    postLoadSteps: steps.map(({ sql: _, ...step }) => step),
    sequences,
    estimatedRows: Math.max(0, table.estimatedRows),
  };
  if (table.partitionKey !== undefined) {
    def.partitioned = true;
    def.partitions = partitions.map((p) => ({ source: p.part.name, target: p.target }));
  }
  if (fks.sql.length) def.foreignKeys = fks.sql;
  if (warnings.length) def.warnings = warnings;
  return def;
}

/** A partition with its name on the target. */
type MappedPartition = { part: SourcePartition; target: QualifiedName };

/** A table's name the server would cut is refused: a spec problem (suffix too long for this name), final at the activity boundary. */
function assertNameFits(t: QualifiedName, of: QualifiedName): void {
  if (Buffer.byteLength(t.name, 'utf8') > MAX_IDENTIFIER_BYTES) {
    throw new SpecError(`target table name ${JSON.stringify(t.name)} for ${displayName(of)} is longer than ${MAX_IDENTIFIER_BYTES} bytes; use a shorter tableSuffix`);
  }
}

/** Before the load: schemas, sequences, the bare table and its partitions, sequence ownership, replica identity. */
function preLoadDdl(table: SourceTable, target: QualifiedName, partitions: MappedPartition[], sequences: SequenceRef[], spec: NameMapping, types: readonly TypeRename[]): string[] {
  const preLoad: string[] = [];
  const schemas = unique([target.schema, ...partitions.map((p) => p.target.schema), ...sequences.map((s) => s.target.schema)]);
  for (const schema of schemas) preLoad.push(`CREATE SCHEMA IF NOT EXISTS ${ident(schema)}`);
  for (const s of table.sequences) if (!s.identity) preLoad.push(createSequenceDdl(s, spec));
  preLoad.push(createTableDdl(table, target, spec, types));
  const parents = new Map<string, { target: QualifiedName; columns: readonly SourceColumn[] }>([[nameKey(table.source), { target, columns: table.columns }]]);
  for (const { part, target: pt } of partitions) {
    const parent = parents.get(nameKey(part.parent));
    if (!parent) throw new Error(`partition ${displayName(part.name)} comes before its parent ${displayName(part.parent)}`);
    preLoad.push(...partitionDdl(part, pt, parent, spec, types));
    parents.set(nameKey(part.name), { target: pt, columns: part.columns });
  }
  for (const s of table.sequences) {
    if (!s.identity && s.ownedByColumn !== undefined) {
      preLoad.push(`ALTER SEQUENCE ${qname(mapSequenceName(s.name, spec))} OWNED BY ${qname(target)}.${ident(s.ownedByColumn)}`);
    }
  }
  if (table.replicaIdentity === 'full') preLoad.push(`ALTER TABLE ${qname(target)} REPLICA IDENTITY FULL`);
  if (table.replicaIdentity === 'nothing') preLoad.push(`ALTER TABLE ${qname(target)} REPLICA IDENTITY NOTHING`);
  return preLoad;
}

/** After the load: keys, constraints and indexes, in the order each kind of table needs. */
function keyAndIndexSteps(table: SourceTable, target: QualifiedName, partitions: MappedPartition[], spec: NameMapping, types: readonly TypeRename[]): PostLoadStatement[] {
  const pair = { source: table.source, target };
  const steps: PostLoadStatement[] = [];
  const index = (sql: string) => steps.push({ kind: 'index', sql });
  const constraint = (sql: string) => steps.push({ kind: 'constraint', sql });
  if (partitions.length === 0 && table.partitionKey === undefined) {
    const builds: PostLoadStatement[] = [];
    const attaches: PostLoadStatement[] = [];
    const key = (con: SourceConstraint | SourcePrimaryKey, kind: 'primary-key' | 'unique') => {
      for (const st of keyConstraintSteps(con, kind, pair, spec, types)) (st.kind === 'index' ? builds : attaches).push(st);
    };
    if (table.primaryKey) key(table.primaryKey, 'primary-key');
    for (const con of table.constraints) {
      if (con.kind === 'unique') key(con, 'unique');
      else attaches.push({ kind: 'constraint', sql: addConstraintDdl(con, target, spec, types) });
    }
    for (const idx of table.indexes) builds.push({ kind: 'index', sql: createIndexDdl(idx, pair, spec, types) });
    return [...builds, ...attaches];
  }
  // The key first, as when it was created with the table: the partitions' key indexes get the names
  // PostgreSQL generates, and none of a partition's own unique constraints is adopted in their place.
  if (table.primaryKey) constraint(addConstraintDdl(table.primaryKey, target, spec, types));
  for (const { part, target: pt } of partitions) if (part.primaryKey) constraint(addConstraintDdl(part.primaryKey, pt, spec, types));
  // Partitions' own indexes next: an index created on the parent afterwards adopts a matching one
  // instead of building a second, and its generated names cannot take theirs.
  for (const { part, target: pt } of partitions) {
    for (const idx of part.indexes) index(createIndexDdl(idx, { source: part.name, target: pt }, spec, types));
  }
  for (const idx of table.indexes) index(createIndexDdl(idx, pair, spec, types));
  for (const con of table.constraints) constraint(addConstraintDdl(con, target, spec, types));
  for (const { part, target: pt } of partitions) for (const con of part.constraints) constraint(addConstraintDdl(con, pt, spec, types));
  return steps;
}

/** REPLICA IDENTITY USING INDEX, once the index exists (a secondary index, or a key's built just before). */
function replicaIdentitySteps(table: SourceTable, target: QualifiedName, partitions: MappedPartition[], spec: NameMapping, warnings: string[]): PostLoadStatement[] {
  const steps: PostLoadStatement[] = [];
  const constraint = (sql: string) => steps.push({ kind: 'constraint', sql });
  if (table.replicaIdentity === 'index') {
    if (!table.replicaIdentityIndex) throw new Error(`${displayName(table.source)} has REPLICA IDENTITY USING INDEX but no index is marked as such`);
    constraint(`ALTER TABLE ${qname(target)} REPLICA IDENTITY USING INDEX ${ident(targetObjectName(table.replicaIdentityIndex.name, spec))}`);
  }
  for (const { part, target: pt } of partitions) {
    if (part.replicaIdentity !== 'index') continue;
    const ri = part.replicaIdentityIndex;
    if (ri && !ri.inherited) {
      constraint(`ALTER TABLE ${qname(pt)} REPLICA IDENTITY USING INDEX ${ident(targetObjectName(ri.name, spec))}`);
    } else {
      warnings.push(
        `partition ${displayName(part.name)} has REPLICA IDENTITY USING INDEX ${ri?.name ?? '?'}, an index inherited from its parent whose name differs on the target: ` +
          `its replica identity is left at the default there (the migration itself does not need it)`,
      );
    }
  }
  return steps;
}

/** The foreign keys of the table and its partitions, onto the migrated tables they reference. */
function foreignKeySteps(
  table: SourceTable,
  target: QualifiedName,
  partitions: MappedPartition[],
  migrated: ReadonlyArray<{ source: QualifiedName; target: QualifiedName }>,
  spec: NameMapping,
  warnings: string[],
): { steps: PostLoadStatement[]; sql: string[] } {
  const steps: PostLoadStatement[] = [];
  const sqls: string[] = [];
  const addFks = (fks: readonly SourceForeignKey[], owner: QualifiedName, ownerTarget: QualifiedName, partitioned: boolean) => {
    for (const fk of fks) {
      const ref = migrated.find((m) => sameName(m.source, fk.referencedTable));
      if (!ref) {
        warnings.push(
          `foreign key ${fk.name} of ${displayName(owner)} references ${displayName(fk.referencedTable)}, which is not migrated: ` +
            `it is created referencing ${displayName(fk.referencedTable)} on the target, which must exist there`,
        );
      }
      const references = ref ? ref.target : fk.referencedTable;
      const sql = addForeignKeyDdl(fk, ownerTarget, references, spec);
      sqls.push(sql);
      // Before PostgreSQL 18 a partitioned table takes no NOT VALID foreign key: it is added validated.
      const validate = fk.validated && !partitioned ? validateConstraintDdl(ownerTarget, targetObjectName(fk.name, spec)) : undefined;
      steps.push({ kind: 'foreign-key', sql, references: { ...references }, ...(validate ? { validate } : {}) });
    }
  };
  addFks(table.foreignKeys, table.source, target, table.partitionKey !== undefined);
  for (const { part, target: pt } of partitions) addFks(part.foreignKeys, part.name, pt, part.partitionKey !== undefined);
  return { steps, sql: sqls };
}

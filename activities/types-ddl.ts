/**
 * Pure DDL for the user-defined types migrated tables need (no I/O): enums, domains, composite types,
 * range types (with their multirange) and extension types, created on the target before the tables.
 *
 * Types live in a schema: the schema goes through schemaMapping like a table's, the name keeps no
 * suffix (a type is not a copy of data; two migrations into one database share it). Extension types
 * are the exception: the extension is installed in the schema it has on the source (targetTypeName).
 * Every statement is idempotent so that a same-database migration, a re-run, or a type the DBA created
 * beforehand does not fail: a type that already exists on the target under its mapped name is used as
 * it is (not compared).
 *
 * Each type becomes one `DO` block that creates it only when `to_regtype()` does not find it. What
 * cannot be recreated from the catalog (a base type written in C outside an extension, a range whose
 * canonical function is user code, a table's row type) becomes a block that refuses with SQLSTATE
 * 0A000 (feature_not_supported, final at the activity boundary) unless the type is already there.
 */
import { rewriteExprTypes, rewriteTypeText, type TypeRename } from './ddl';
import { mapTypeName, type NameMapping } from './naming';
import { ident, literal, qname } from './sql';
import { displayName, type QualifiedName } from './spec';

export interface SourceEnumType {
  kind: 'enum';
  name: QualifiedName;
  /** In enumsortorder. */
  labels: string[];
}

export interface SourceDomainType {
  kind: 'domain';
  name: QualifiedName;
  /** format_type(typbasetype, typtypmod). */
  baseType: string;
  /** Only when it differs from the base type's. */
  collation?: QualifiedName;
  /** pg_get_expr(typdefaultbin, 0). */
  default?: string;
  notNull: boolean;
  /** pg_get_constraintdef: `CHECK (...)`, possibly followed by NOT VALID. */
  checks: Array<{ name: string; definition: string }>;
}

export interface SourceCompositeType {
  kind: 'composite';
  name: QualifiedName;
  /** attnum order, dropped attributes left out. */
  attributes: Array<{ name: string; type: string; collation?: QualifiedName }>;
}

export interface SourceRangeType {
  kind: 'range';
  name: QualifiedName;
  /** format_type of the subtype. */
  subtype: string;
  /** Only when it is not the subtype's default btree operator class. */
  subtypeOpclass?: QualifiedName;
  /** Only when it differs from the subtype's. */
  collation?: QualifiedName;
  /** Built-in (pg_catalog) functions only; user functions make the type unsupported (canonical) or are left out (subtype_diff). */
  canonical?: QualifiedName;
  subtypeDiff?: QualifiedName;
  /** The source's multirange type (PostgreSQL 14+); none before 14, and the target then names its own. */
  multirange?: QualifiedName;
}

export interface SourceExtensionType {
  kind: 'extension';
  name: QualifiedName;
  /** pg_extension.extname of the extension the type belongs to. */
  extension: string;
}

/** A type the target must already have: pg-dts cannot recreate it. `reason` says why. */
export interface SourceUnsupportedType {
  kind: 'unsupported';
  name: QualifiedName;
  reason: string;
}

export type SourceType = SourceEnumType | SourceDomainType | SourceCompositeType | SourceRangeType | SourceExtensionType | SourceUnsupportedType;

/**
 * Where a type lands, by kind: an extension's types stay in the extension's schema. An extension is
 * the database's, not the migrated schema's: its operators, functions, casts and operator classes
 * live in that schema and the source's expressions and index definitions name them there
 * (`public.gin_hstore_ops`), so moving it with schemaMapping would break them.
 */
export function targetTypeName(t: SourceType, spec: Pick<NameMapping, 'schemaMapping'>): QualifiedName {
  return t.kind === 'extension' ? t.name : mapTypeName(t.name, spec);
}

/** Every type name (and multirange name) that the mapping moves to another schema. */
export function typeRenames(types: readonly SourceType[], spec: Pick<NameMapping, 'schemaMapping'>): TypeRename[] {
  const out: TypeRename[] = [];
  const add = (q: QualifiedName) => {
    const target = mapTypeName(q, spec);
    if (target.schema !== q.schema) out.push({ source: q, target });
  };
  for (const t of types) {
    if (t.kind === 'extension') continue;
    add(t.name);
    if (t.kind === 'range' && t.multirange) add(t.multirange);
  }
  return out;
}

/** A dollar-quote tag that does not occur in `body`. */
function dollarTag(body: string): string {
  for (let i = 0; ; i++) {
    const tag = i === 0 ? '$pgdts$' : `$pgdts${i}$`;
    if (!body.includes(tag)) return tag;
  }
}

function doBlock(declare: string, body: string): string {
  const tag = dollarTag(body + declare);
  return `DO ${tag}\n${declare ? `DECLARE ${declare}\n` : ''}BEGIN\n${body}\nEND\n${tag}`;
}

const refuse = (message: string) => `RAISE EXCEPTION USING ERRCODE = 'feature_not_supported', MESSAGE = ${literal(message)};`;

/** `IF to_regtype(<type>) IS NULL THEN <then> END IF;` */
function ifMissing(target: QualifiedName, then: string[]): string {
  return `  IF pg_catalog.to_regtype(${literal(qname(target))}) IS NULL THEN\n${then.map((s) => `    ${s}`).join('\n')}\n  END IF;`;
}

const exec = (stmt: string) => `EXECUTE ${literal(stmt)};`;

/** Quoted, qualified name of a pg_catalog function or operator class, as CREATE TYPE takes it. */
const catalogName = (q: QualifiedName) => qname(q);

/** The statements that create one type under its mapped name (before any `DO` guard). */
export function typeCreationStatements(t: Exclude<SourceType, SourceExtensionType | SourceUnsupportedType>, spec: NameMapping, renames: readonly TypeRename[]): string[] {
  const target = qname(mapTypeName(t.name, spec));
  const typ = (text: string) => rewriteTypeText(text, renames);
  switch (t.kind) {
    case 'enum':
      return [`CREATE TYPE ${target} AS ENUM (${t.labels.map((l) => literal(l).trim()).join(', ')})`];
    case 'domain': {
      const parts = [`CREATE DOMAIN ${target} AS ${typ(t.baseType)}`];
      if (t.collation) parts.push(`COLLATE ${qname(t.collation)}`);
      if (t.default !== undefined) parts.push(`DEFAULT ${rewriteExprTypes(t.default, renames)}`);
      if (t.notNull) parts.push('NOT NULL');
      return [
        parts.join(' '),
        ...t.checks.map((c) => `ALTER DOMAIN ${target} ADD CONSTRAINT ${ident(c.name)} ${rewriteExprTypes(c.definition, renames)}`),
      ];
    }
    case 'composite': {
      const attrs = t.attributes.map((a) => `${ident(a.name)} ${typ(a.type)}${a.collation ? ` COLLATE ${qname(a.collation)}` : ''}`);
      return [`CREATE TYPE ${target} AS (${attrs.join(', ')})`];
    }
    case 'range': {
      const opts = [`SUBTYPE = ${typ(t.subtype)}`];
      if (t.subtypeOpclass) opts.push(`SUBTYPE_OPCLASS = ${catalogName(t.subtypeOpclass)}`);
      if (t.collation) opts.push(`COLLATION = ${qname(t.collation)}`);
      if (t.canonical) opts.push(`CANONICAL = ${catalogName(t.canonical)}`);
      if (t.subtypeDiff) opts.push(`SUBTYPE_DIFF = ${catalogName(t.subtypeDiff)}`);
      if (t.multirange) opts.push(`MULTIRANGE_TYPE_NAME = ${qname(mapTypeName(t.multirange, spec))}`);
      return [`CREATE TYPE ${target} AS RANGE (${opts.join(', ')})`];
    }
  }
}

/**
 * The guarded statement for one type: created when missing; refused (0A000) when missing and not
 * recreatable. Extension types get no statement of their own (see extensionStatement).
 */
export function createTypeDdl(t: SourceType, spec: NameMapping, renames: readonly TypeRename[]): string | undefined {
  const target = mapTypeName(t.name, spec);
  if (t.kind === 'extension') return undefined;
  if (t.kind === 'unsupported') {
    return doBlock(
      '',
      ifMissing(target, [
        refuse(
          `type ${displayName(t.name)} cannot be migrated (${t.reason}); create it on the target as ${displayName(target)} before starting the migration`,
        ),
      ]),
    );
  }
  return doBlock('', ifMissing(target, typeCreationStatements(t, spec, renames).map(exec)));
}

/**
 * Makes sure `extension` is installed on the target in `schema` (the schema it has on the source):
 * installs it when the target offers it, refuses naming it when it does not, and refuses when it is
 * installed in another schema (the column types and expressions name the schema).
 */
export function extensionStatement(extension: string, schema: string, types: readonly QualifiedName[]): string {
  const used = types.map(displayName).join(', ');
  return doBlock(
    'installed text;',
    [
      `  SELECT n.nspname INTO installed FROM pg_catalog.pg_extension e JOIN pg_catalog.pg_namespace n ON n.oid = e.extnamespace WHERE e.extname = ${literal(extension)};`,
      '  IF installed IS NULL THEN',
      `    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_available_extensions WHERE name = ${literal(extension)}) THEN`,
      `      ${refuse(
        `the migrated tables use type(s) ${used} of extension ${extension}, which is not available on the target: install the package that provides it (for contrib extensions, postgresql-contrib) on the target server`,
      )}`,
      '    END IF;',
      `    ${exec(`CREATE EXTENSION IF NOT EXISTS ${ident(extension)} WITH SCHEMA ${ident(schema)} CASCADE`)}`,
      `  ELSIF installed <> ${literal(schema)} THEN`,
      `    RAISE EXCEPTION USING ERRCODE = 'feature_not_supported', MESSAGE = ${literal(
        `the migrated tables use type(s) ${used} of extension ${extension}, which the target has installed in schema `,
      )} || installed || ${literal(`, not ${schema} as on the source: move it there (ALTER EXTENSION ${extension} SET SCHEMA ${schema}) before migrating`)};`,
      '  END IF;',
    ].join('\n'),
  );
}

/**
 * Every statement that creates `types` (already in dependency order) on the target: CREATE SCHEMA for
 * their schemas, one extension check per extension (before its first type), one guarded block per type.
 */
export function createTypesDdl(types: readonly SourceType[], spec: NameMapping, renames: readonly TypeRename[]): string[] {
  const out: string[] = [];
  const schemas = new Set<string>();
  for (const t of types) {
    const s = targetTypeName(t, spec).schema;
    if (!schemas.has(s)) {
      schemas.add(s);
      out.push(`CREATE SCHEMA IF NOT EXISTS ${ident(s)}`);
    }
  }
  const extensions = new Set<string>();
  for (const t of types) {
    if (t.kind === 'extension') {
      if (extensions.has(t.extension)) continue;
      extensions.add(t.extension);
      const members = types.filter((x): x is SourceExtensionType => x.kind === 'extension' && x.extension === t.extension).map((x) => x.name);
      out.push(extensionStatement(t.extension, t.name.schema, members));
      continue;
    }
    out.push(createTypeDdl(t, spec, renames)!);
  }
  return out;
}

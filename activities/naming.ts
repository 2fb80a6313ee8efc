/**
 * How everything the migration creates is named on the target: the one place of the rule, so that
 * the tables, their sequences, indexes and constraints, the views and functions recreated with them,
 * and every check of those names agree.
 *
 *   table, partition, view, materialized view -> schema through schemaMapping, name + tableSuffix
 *   sequence                                  -> schema through schemaMapping, name + tableSuffix (clipped)
 *   index, constraint (PK, unique, check, exclusion, FK) -> name + tableSuffix (clipped), in its table's schema
 *   type, function, procedure, aggregate      -> schema through schemaMapping, the same name
 *
 * A suffix makes a migration into the same database collide with nothing. PostgreSQL cuts names at
 * 63 bytes: a table's name that would be cut is refused (a check of the spec), while an index's,
 * constraint's or sequence's name is shortened before its suffix, which therefore survives.
 *
 * Also the key of a qualified name in maps and sets (`nameKey`): schema and name joined by NUL,
 * which no PostgreSQL identifier contains, so that "a.b"."c" and "a"."b.c" stay apart.
 */
/** A schema-qualified name (spec.ts re-exports it: the spec imports the naming rules, not the other way). */
export interface QualifiedName {
  schema: string;
  name: string;
}

/** PostgreSQL's identifier limit (NAMEDATALEN - 1): a longer name is cut, silently. */
export const MAX_IDENTIFIER_BYTES = 63;
export const identifierTooLong = (s: string): boolean => Buffer.byteLength(s, 'utf8') > MAX_IDENTIFIER_BYTES;

/** The spec's renaming settings (NormalizedSpec's fields of the same names). */
export interface NameMapping {
  schemaMapping: Record<string, string>;
  tableSuffix: string;
}

/** A source schema's name on the target. */
export function mapSchema(schema: string, spec: Pick<NameMapping, 'schemaMapping'>): string {
  return spec.schemaMapping[schema] ?? schema;
}

/** Where a source table (or view) lands: schema through schemaMapping, name with the suffix appended. */
export function mapTableName(src: QualifiedName, spec: NameMapping): QualifiedName {
  return { schema: mapSchema(src.schema, spec), name: src.name + spec.tableSuffix };
}

/** Where a type or function lands: schema through schemaMapping, the same name (no suffix). */
export function mapTypeName(q: QualifiedName, spec: Pick<NameMapping, 'schemaMapping'>): QualifiedName {
  return { schema: mapSchema(q.schema, spec), name: q.name };
}

/** Cuts a string to at most `maxBytes` UTF-8 bytes without splitting a character. */
function clipUtf8(s: string, maxBytes: number): string {
  let out = '';
  let bytes = 0;
  for (const ch of s) {
    const b = Buffer.byteLength(ch, 'utf8');
    if (bytes + b > maxBytes) break;
    out += ch;
    bytes += b;
  }
  return out;
}

/**
 * Target name of an index, constraint or sequence: name + suffix. If that exceeds the
 * 63-byte identifier limit the *name* is shortened so the suffix survives: the server would otherwise
 * cut the suffix off, and in a same-database migration the result would collide with the source object.
 */
export function targetObjectName(name: string, spec: Pick<NameMapping, 'tableSuffix'>): string {
  const full = name + spec.tableSuffix;
  if (Buffer.byteLength(full, 'utf8') <= MAX_IDENTIFIER_BYTES) return full;
  return clipUtf8(name, MAX_IDENTIFIER_BYTES - Buffer.byteLength(spec.tableSuffix, 'utf8')) + spec.tableSuffix;
}

/** Target of a sequence: schema through schemaMapping, name + suffix (clipped like an index's). */
export function mapSequenceName(seq: QualifiedName, spec: NameMapping): QualifiedName {
  return { schema: mapSchema(seq.schema, spec), name: targetObjectName(seq.name, spec) };
}

/** The key of a qualified name in maps and sets (in workflows/names.ts: the workflow bundle uses it too). */
export { nameKey } from '../workflows/names';

/** The qualified name a `nameKey` was made of. */
export function fromNameKey(key: string): QualifiedName {
  const [schema, name] = key.split('\u0000') as [string, string];
  return { schema, name };
}

/**
 * Identifier and literal quoting: the one place where names become SQL. Uses pg's own escaping so
 * every identifier is quoted exactly as PostgreSQL expects, whatever its case, spaces or quotes.
 */
import { escapeIdentifier, escapeLiteral } from 'pg';
import type { QualifiedName } from './spec';

export const ident = (name: string): string => escapeIdentifier(name);
export const literal = (value: string): string => escapeLiteral(value);
export const qname = (q: QualifiedName): string => `${ident(q.schema)}.${ident(q.name)}`;
export const columnList = (cols: readonly string[]): string => cols.map(ident).join(', ');

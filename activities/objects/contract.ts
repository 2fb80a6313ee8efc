/**
 * The contract of FINALIZING's migrateSchemaObjects activity (index.ts): what it is given and what it reports.
 */
import type { ConnectionSpec, OwnersSpec, QualifiedName } from '../spec';

export interface SchemaObjectsInput {
  source: ConnectionSpec;
  target: ConnectionSpec;
  /** The migrated schemas: their views, functions and aggregates are recreated. */
  schemas: string[];
  /** The migrated tables (roots; partitions are found and mapped here). Their triggers are recreated. */
  tables: Array<{ source: QualifiedName; target: QualifiedName }>;
  schemaMapping: Record<string, string>;
  tableSuffix: string;
  /** spec.owners (owners.ts); absent: carried to the roles of the same name that exist on the target. */
  owners?: OwnersSpec;
  /** The mark of what CREATING_TABLES created: only those schemas, tables, sequences and types get owners and grants. */
  migrationId?: string;
  /** false: only the owners and grants of the migrated tables (spec.owners without spec.objects). */
  objects?: boolean;
}

export interface SchemaObjectsResult {
  /** `kind source-name` (`-> target-name` when the mapping renames it), in creation order. */
  created: string[];
  skipped: Array<{ object: string; reason: string }>;
  /** Things a DBA should check, e.g. function bodies that still name the source tables. */
  notices: string[];
  /** Function bodies written as strings that were rewritten through the mapping, and what now names what. */
  rewritten: string[];
}

export interface SchemaObjectsHooks {
  heartbeat?(details: { done: number; total: number }): void;
  signal?: AbortSignal;
}

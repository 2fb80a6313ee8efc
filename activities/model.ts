/**
 * What the activities learn about a source table and pass between phases (serialisable: it travels
 * through workflow history, so it holds names and SQL text, never secrets).
 */
import type { QualifiedName } from './spec';

export interface ColumnDef {
  name: string;
  /** format_type(atttypid, atttypmod), read with search_path = '' so user types come schema-qualified. */
  type: string;
  notNull: boolean;
  /** Default expression for the target (already rewritten when it refers to a mapped sequence). */
  default?: string;
  /** GENERATED ALWAYS AS (expr) STORED: recomputed on the target, never copied. */
  generated?: string;
  identity?: 'always' | 'by-default';
  /** Quoted, qualified collation when it differs from the type's default. */
  collation?: string;
}

export interface SequenceRef {
  source: QualifiedName;
  target: QualifiedName;
  /** The column whose identity or owned sequence this is, if any. */
  ownedByColumn?: string;
  identity: boolean;
}

export interface TableDef {
  source: QualifiedName;
  target: QualifiedName;
  columns: ColumnDef[];
  /** Non-generated columns in attnum order: what COPY and the apply write. */
  copyColumns: string[];
  /** Primary key columns, else the replica identity index's columns; empty when neither exists. */
  keyColumns: string[];
  replicaIdentity: 'default' | 'index' | 'full' | 'nothing';
  /** Statements run before the load: sequences, the table and its primary key. */
  preLoad: string[];
  /** Statements run after the load: secondary indexes, unique/check/exclusion/foreign-key constraints. */
  postLoad: string[];
  sequences: SequenceRef[];
  /** Estimated rows (pg_class.reltuples), for progress display only. */
  estimatedRows: number;
  /**
   * The foreign-key statements, which are also the last entries of postLoad. An FK may need a unique
   * constraint that another table's postLoad creates: run every table's postLoad minus these first,
   * then these.
   */
  foreignKeys?: string[];
  /** Things a DBA should know, e.g. a foreign key to a table that is not migrated. */
  warnings?: string[];
  /**
   * A partitioned table: created with PARTITION BY and every partition (in preLoad), copied and
   * replicated through this root (the publication publishes via the root). TRUNCATE ONLY does not
   * apply to it; its partitions are emptied with it.
   */
  partitioned?: boolean;
  /** Its partitions at every level (parents before children), source and target names. */
  partitions?: Array<{ source: QualifiedName; target: QualifiedName }>;
}

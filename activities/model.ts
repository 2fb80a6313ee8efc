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

/** What a parallel runner needs to know about one postLoad statement (postLoadSteps[i] describes postLoad[i]). */
export interface PostLoadStep {
  /**
   * index: CREATE [UNIQUE] INDEX (the index of a primary key or unique constraint too, attached by a
   *        later constraint step); constraint: an ALTER TABLE on this table (ADD CONSTRAINT, REPLICA
   *        IDENTITY); foreign-key: ALTER TABLE .. ADD CONSTRAINT .. FOREIGN KEY.
   */
  kind: 'index' | 'constraint' | 'foreign-key';
  /**
   * ADD CONSTRAINT .. USING INDEX: on a retry, "index is already associated with a constraint"
   * (SQLSTATE 55000) means an earlier attempt already did it.
   */
  usingIndex?: boolean;
  /** A foreign key's referenced table: its target when migrated, else its name unchanged. */
  references?: QualifiedName;
  /**
   * A foreign key that may be added NOT VALID and validated after (FinishTargetTablesInput.notValidFirst):
   * the VALIDATE CONSTRAINT statement. Absent for a key the source has not validated, or on a
   * partitioned table (NOT VALID is refused there before PostgreSQL 18).
   */
  validate?: string;
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
  /**
   * Statements run before the load: types, schemas, sequences, the table and its partitions. No index
   * or key: the load is much faster into a bare table (a retried copy truncates first or keys its
   * ranges in pgdts.copy_progress, so it needs no key on the target).
   */
  preLoad: string[];
  /**
   * Statements run after the load, in an order that works when run one by one: the primary key,
   * secondary indexes, unique/check/exclusion constraints, the replica identity, then foreign keys.
   * `postLoadSteps` says what a parallel runner needs to know about each statement.
   */
  postLoad: string[];
  /**
   * One entry per postLoad statement, same order, saying what it is (the SQL is not repeated: this
   * travels through workflow history). Absent in TableDefs from before it existed: postLoad then runs
   * in order. Index builds of one table may run at the same time (CREATE INDEX takes a SHARE lock);
   * its constraint steps follow them one at a time; foreign keys come last, after the keys of both
   * tables exist. A partitioned table's steps run in order (see `partitioned`).
   */
  postLoadSteps?: PostLoadStep[];
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

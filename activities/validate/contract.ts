/**
 * VALIDATING's shared vocabulary: the input of every check (strict, live, proof, repair), its progress
 * and hooks, and the per-table result with its mismatches. Types only, besides the defaults, so every
 * module of the folder can import it without a loop.
 */
import type { RepairReport } from '../../workflows/contract';
import type { ConnectionSpec, QualifiedName } from '../spec';
import type { RowHash } from './sql';

export type MismatchKind = 'missing-on-target' | 'extra-on-target' | 'different';
export type Outcome = 'match' | 'mismatch' | 'not-run';

export interface Mismatch {
  /** The checksum chunk the row belongs to (key range, or md5 bucket for tables without a key). */
  chunk?: string;
  /** Key column -> its value in text form. Tables without a key: { "md5(row)": <md5 of the row text> }. */
  key: Record<string, string | null>;
  kind: MismatchKind;
  /** For `different`: the columns whose text differs (names only). */
  columns?: string[];
  /** Which level found it. */
  foundBy: 'sample' | 'checksum';
}

export interface ValidateTableSpec {
  source: QualifiedName;
  target: QualifiedName;
  /** TableDef.keyColumns: primary key, else replica identity index; empty for a table without a key. */
  keyColumns: string[];
  /** TableDef.copyColumns: the compared columns, in source order (generated columns are left out). */
  copyColumns: string[];
}

export interface ValidateTablesInput {
  source: ConnectionSpec;
  target: ConnectionSpec;
  tables: ValidateTableSpec[];
  /** Rows sampled per table and compared column by column (default 1000; 0: not run). */
  sampleSize?: number;
  /** Full content checksum (default true). */
  checksum?: boolean;
  /** Tables checked at once, each on one connection per side (default 4). */
  parallelism?: number;
  /** Differing rows listed per table (default 100). */
  maxMismatches?: number;
  /** Rows per checksum chunk (default 100,000). */
  chunkRows?: number;
  /** Row hash for chunk checksums: 'auto' (default) uses hashtext when both servers agree on a probe, else md5. */
  rowHash?: 'auto' | RowHash;
  /** A differing range at most this big is compared row by row (default 1,000). */
  leafRows?: number;
  /** Pieces a differing range is split into (default 16). */
  fanout?: number;
  /**
   * The content proof run during SYNCING_WAL under this slot (proof.ts): its verified chunks
   * whose tuples are unchanged on both sides are proven; only the others are compared here.
   */
  proofSlot?: string;
}

export interface ValidateProgress {
  table: string;
  step: 'count' | 'sample' | 'checksum' | 'done' | 'repair';
  chunksDone?: number;
  chunks?: number;
  tablesDone: number;
  tables: number;
}

/** Not serialisable, so kept out of the input: the activity wrapper passes heartbeat and cancellation. */
export interface ValidateHooks {
  onProgress?: (p: ValidateProgress) => void;
  signal?: AbortSignal;
}

export interface TableValidationResult {
  source: string;
  target: string;
  sourceRows: number;
  targetRows: number;
  countsMatch: boolean;
  sample: Outcome;
  sampledRows: number;
  checksum: Outcome;
  /** Checksum chunks compared, and the labels of those that differ. */
  chunks: number;
  mismatchedChunks: string[];
  rowHash?: RowHash;
  /** Differing rows by key, at most maxMismatches. */
  mismatches: Mismatch[];
  /** More rows differ than are listed. */
  mismatchesTruncated: boolean;
  /** The table could not be compared (missing on a side, a column missing). */
  error?: string;
  /**
   * The checksum's coverage: chunks proven before the cutover (verified during SYNCING_WAL, unchanged
   * on both sides since) and compared here; rows covered (every row of the source when it ran).
   */
  /** readAtCutover: chunks whose tuple fingerprints were read at cutover (the rest had no write since proven). */
  proof?: { chunks: number; verifiedBeforeCutover: number; reverifiedAtCutover: number; rows: number; readAtCutover?: number; keysReadAtCutover?: number };
  /** validation.repair / `dts verify --repair`: what was rewritten on the target (the verdicts above are then the ones after it). */
  repair?: RepairReport;
  /** Counts match, and neither the sample nor the checksum found a difference. */
  ok: boolean;
  durationMs: number;
}

export const VALIDATE_DEFAULTS = {
  sampleSize: 1000,
  parallelism: 4,
  maxMismatches: 100,
  chunkRows: 100_000,
  leafRows: 1000,
  fanout: 16,
} as const;

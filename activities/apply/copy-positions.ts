/**
 * What the initial copy already holds, per target table (SYNCING_WAL), so the apply neither writes a
 * change twice nor fails on a row the copy could not see:
 * - a table copied in a later snapshot than the slot's (a copy resumed after its snapshot was lost):
 *   transactions whose commit record starts before that snapshot's position are in its rows and are
 *   left out (`inCopy`; PostgreSQL's tablesync applies the same rule);
 * - a table whose copy read it truncated (or rewritten) after the snapshot: until its TRUNCATE in the
 *   stream, or the position the copy read it at, its UPDATEs and DELETEs may find no row (`lenient`).
 * Positions come from pgdts.copy_progress (readCopyPositions, readRewrittenCopies in copy.ts); a second
 * writer's position past the slot's (pgdts.apply_writer_progress, progress.ts) counts as a later copy.
 */
import { qname } from '../sql';
import type { MappedRelation } from './relations';

export class CopyPositions {
  /**
   * Target tables copied in a later snapshot than the slot's -> that snapshot's position: their rows
   * hold every transaction whose commit starts before it.
   */
  private readonly copiedFrom = new Map<string, bigint>();
  /** The highest of those positions: past it (transactions arrive in commit order) the map is dropped. */
  private copiedMax = 0n;
  /** Changes to tables copied in a later snapshot, left out because their rows already held them. */
  skippedBeforeCopy = 0;
  /** Target tables whose copy read them truncated after the snapshot -> a position past that TRUNCATE; see `lenient`. */
  private readonly rewritten = new Map<string, bigint>();

  /** Tables copied in a later snapshot (a resumed copy) and where it starts; see `inCopy`. */
  copiedSince(positions: ReadonlyMap<string, bigint>, committed: bigint): void {
    for (const [k, lsn] of positions) {
      if (lsn <= committed) continue;
      this.copiedFrom.set(k, lsn);
      if (lsn > this.copiedMax) this.copiedMax = lsn;
    }
  }

  /** Tables whose copy read them truncated (or rewritten) after the snapshot, and a position past that; see `lenient`. */
  rewrittenBefore(positions: ReadonlyMap<string, bigint>, committed: bigint): void {
    for (const [k, lsn] of positions) if (lsn > committed) this.rewritten.set(k, lsn);
  }

  /**
   * The transaction whose commit record starts at `txnFinal` is already in the table's copied rows: its
   * commit starts before the position of the snapshot they were read in (the slot that exported it
   * would not have sent it).
   */
  inCopy(m: MappedRelation, txnFinal: bigint): boolean {
    if (this.copiedFrom.size === 0) return false;
    if (txnFinal >= this.copiedMax) {
      this.copiedFrom.clear();
      return false;
    }
    const from = this.copiedFrom.get(qname(m.rel.target));
    if (from === undefined || txnFinal >= from) return false;
    this.skippedBeforeCopy++;
    return true;
  }

  /**
   * The table's copy read it emptied by a TRUNCATE committed after the snapshot (TRUNCATE is not
   * MVCC-safe), and this change comes before that TRUNCATE: an UPDATE or DELETE may find no row, as
   * the row was in the snapshot but not in the copy. Letting it through is safe: the TRUNCATE, still
   * to come, empties the table on both sides. Ends at the table's TRUNCATE, or at the position the copy
   * read it at (a rewrite that is no TRUNCATE, VACUUM FULL's new file: none comes).
   */
  lenient(m: MappedRelation, txnFinal: bigint): boolean {
    if (this.rewritten.size === 0) return false;
    const k = qname(m.rel.target);
    const until = this.rewritten.get(k);
    if (until === undefined) return false;
    if (txnFinal < until) return true;
    this.rewritten.delete(k);
    return false;
  }

  /** The tables were truncated as on the source: what follows is checked again. */
  truncated(ms: readonly MappedRelation[]): void {
    for (const m of ms) this.rewritten.delete(qname(m.rel.target));
  }
}

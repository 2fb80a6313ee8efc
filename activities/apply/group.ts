/**
 * One group of the apply (SYNCING_WAL): the complete source transactions that go into one target
 * transaction, and what of them is not written yet (folded set-based changes, batched INSERTs, the
 * changes kept for a replay). No I/O: the writer (writer.ts) writes a group, the engine (engine.ts)
 * decides when it is committed. While a group is written the engine folds what arrives into the next
 * Group; the commit makes that one the open group with one assignment.
 */
import { KeyedChanges } from './batch';
import type { ChangeMessage, TruncateMessage } from './pgoutput';
import type { MappedRelation } from './relations';
import type { Tuple } from './statements';

/** Consecutive INSERTs into one table written in order (change-by-change path). */
export interface InsertBatch {
  oid: number;
  mapped: MappedRelation;
  rows: Tuple[];
  params: number;
  bytes: number;
}

/**
 * One decoded change with the mapping it was decoded under (kept for a replay of the group). `lenient`:
 * an UPDATE or DELETE may find no row (CopyPositions.lenient); such changes are written one at a time.
 */
export type Change = { msg: ChangeMessage; mapped: MappedRelation; lenient?: boolean } | { msg: TruncateMessage; mapped: MappedRelation[] };

/** A change the set-based path may write. */
export type KeyedChange = { msg: ChangeMessage; mapped: MappedRelation };

export const MAX_BATCH_PARAMS = 30_000;
export const MAX_BATCH_BYTES = 1024 * 1024;
/** Rows of one INSERT batch written as COPY, at most (also at most MAX_BATCH_BYTES of values). */
export const MAX_COPY_ROWS = 10_000;
/**
 * Folded (set-based) changes held before they are written, whatever the group. Twice what a default
 * group holds (ApplyOptions.maxGroupChanges, MAX_GROUP_BYTES), as RETAIN_MAX_* are: a group of
 * transactions smaller than a group is written at its end, while the next group folds (engine.ts
 * `foldAhead`), not in a write of its own in its middle that nothing overlaps. These bounds act on a
 * source transaction larger than a group.
 */
export const MAX_PENDING_KEYED = 20_000;
export const MAX_PENDING_BYTES = 4 * 1024 * 1024;
/** A group is committed at its next source commit once its values reach this size. */
export const MAX_GROUP_BYTES = 2 * 1024 * 1024;
/**
 * The changes of the open target transaction are kept (up to these bounds) so that a set-based
 * write that fails can be rolled back and replayed change by change in source order. Past them (one
 * source transaction bigger than that), the rest of that target transaction goes change by change,
 * except for tables where the order of rows cannot matter (KeyedRelation.orderFree).
 */
const RETAIN_MAX_CHANGES = 20_000;
const RETAIN_MAX_BYTES = 4 * 1024 * 1024;

function tupleBytes(t: Tuple | null | undefined): number {
  let n = 0;
  if (t) for (const v of t) if (typeof v === 'string') n += v.length;
  return n;
}

function changeBytes(msg: ChangeMessage | TruncateMessage): number {
  switch (msg.tag) {
    case 'insert':
      return tupleBytes(msg.new);
    case 'update':
      return tupleBytes(msg.new) + tupleBytes(msg.old) + tupleBytes(msg.key);
    case 'delete':
      return tupleBytes(msg.old) + tupleBytes(msg.key);
    default:
      return 0;
  }
}

export class Group {
  /** Set-based pending changes per relation OID, and how many were folded since the last write. */
  keyed = new Map<number, KeyedChanges>();
  pendingKeyed = 0;
  /** Change-by-change path: consecutive INSERTs per relation OID. */
  batches = new Map<number, InsertBatch>();
  /** Changes of the open target transaction, for a replay; undefined once too many to keep. */
  retained: Change[] | undefined = [];
  retainedBytes = 0;
  /** The rest of the open target transaction is applied change by change. */
  strict = false;
  /** Complete source transactions in the group, their changes and value bytes. */
  txns = 0;
  changes = 0;
  bytes = 0;
  /** When the group's first transaction began (Date.now()). */
  start = 0;
  /** The fence token of a transaction in the group: the group ends there. */
  fence: string | undefined;

  /** Counts a change into the group (and keeps it for a replay). */
  account(c: Change): void {
    const bytes = changeBytes(c.msg);
    this.changes += c.msg.tag === 'truncate' ? c.msg.relationOids.length : 1;
    this.bytes += bytes;
    if (this.retained) {
      this.retained.push(c);
      this.retainedBytes += bytes;
    }
  }

  /** The change goes to a table written set-based just now (past a replay or the retention bound, only order-free ones). */
  setBased(c: Change): c is KeyedChange {
    if (c.msg.tag === 'truncate' || c.msg.spooled !== undefined || ('lenient' in c && c.lenient)) return false;
    const keyed = (c.mapped as MappedRelation).keyed;
    return keyed !== undefined && (!this.strict || keyed.orderFree);
  }

  foldable(c: Change): boolean {
    return this.setBased(c) && !this.batches.has((c.msg as ChangeMessage).relationOid);
  }

  /** Folds the change into its table's pending net changes; false when it cannot be (nothing changed). */
  fold(c: Change): boolean {
    if (!this.foldable(c)) return false;
    const msg = c.msg as ChangeMessage;
    const mapped = c.mapped as MappedRelation;
    let kc = this.keyed.get(msg.relationOid);
    if (!kc) this.keyed.set(msg.relationOid, (kc = new KeyedChanges(mapped.keyed!)));
    const folded =
      msg.tag === 'insert'
        ? kc.insert(msg.new)
        : msg.tag === 'update'
          ? kc.update({ oldKey: msg.key, old: msg.old, new: msg.new })
          : kc.delete({ oldKey: msg.key, old: msg.old });
    if (folded) this.pendingKeyed++;
    return folded;
  }

  /** Enough folded to be written now. */
  keyedFull(): boolean {
    return this.pendingKeyed >= MAX_PENDING_KEYED || this.keyedBytes() >= MAX_PENDING_BYTES;
  }

  foldDue(): boolean {
    return this.keyedFull() || this.retentionDue();
  }

  retentionDue(): boolean {
    return this.retained !== undefined && (this.retained.length >= RETAIN_MAX_CHANGES || this.retainedBytes >= RETAIN_MAX_BYTES);
  }

  keyedBytes(): number {
    let n = 0;
    for (const kc of this.keyed.values()) n += kc.bytes;
    return n;
  }

  addInsert(oid: number, m: MappedRelation, row: Tuple): InsertBatch {
    let b = this.batches.get(oid);
    if (!b) this.batches.set(oid, (b = { oid, mapped: m, rows: [], params: 0, bytes: 0 }));
    b.rows.push(row);
    b.params += row.length;
    for (const v of row) if (typeof v === 'string') b.bytes += v.length;
    return b;
  }

  /** Past the retention bound or after a replay: nothing more is kept, the rest goes change by change. */
  stopRetaining(): void {
    this.retained = undefined;
    this.retainedBytes = 0;
    this.strict = true;
  }

  /** Drops what is not written yet (rolled back, or the apply stops). */
  dropPending(): void {
    this.keyed.clear();
    this.pendingKeyed = 0;
    this.batches.clear();
  }
}

/**
 * The batch is to be written now. One COPY (`copy`) takes up to MAX_COPY_ROWS rows: no parameters to
 * count, and a write in the middle of a group is one the next group's folding cannot overlap.
 */
export function batchFull(b: InsertBatch, maxRows: number, copy: boolean): boolean {
  if (b.bytes >= MAX_BATCH_BYTES) return true;
  return copy ? b.rows.length >= MAX_COPY_ROWS : b.rows.length >= maxRows || b.params + b.mapped.rel.columns.length > MAX_BATCH_PARAMS;
}

/**
 * A run's first group is committed at this age (at its next source commit), the next ones at twice
 * the age before, up to maxGroupMs: the target starts writing a backlog this soon after a resume,
 * instead of idling while a first full-size group fills (bench:e2e, 20,000 transactions: the first
 * commit came 171 ms after the first data).
 */
export const FIRST_GROUP_MS = 10;

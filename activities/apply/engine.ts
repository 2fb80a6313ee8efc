/**
 * The WAL apply engine (SYNCING_WAL): takes the pgoutput stream of an existing logical replication
 * slot (source.ts) and applies each source transaction to the mapped target tables (writer.ts),
 * exactly once and in commit order. This file holds the intake (the socket callback, the queue and
 * its backpressure), the commit policy of groups (group.ts) and the apply's start and stop.
 *
 * Exactly once: consecutive source transactions are applied as one target transaction (a group) that
 * also writes the last one's commit end LSN into pgdts.apply_progress (progress.ts). A group is
 * committed when nothing more waits in the stream (after groupIdleMs), at maxGroupChanges /
 * MAX_GROUP_BYTES / maxGroupMs (a run's first groups younger: FIRST_GROUP_MS, doubling), at the transaction carrying a fence message (whose token goes into the
 * same progress row: the group ends there), and on a clean stop; only whole source transactions are
 * ever committed. On start the engine reads that position, asks the slot to start there and skips
 * anything at or before it. The slot is confirmed only up to what is durably committed on the target,
 * so after any crash (apply, target, source, network) nothing is lost or applied twice.
 *
 * Overlap: while a group is written and committed (its statements waiting on the target), what arrives
 * is already folded into the next group (`foldAhead`, `next`), up to the first message that needs I/O;
 * nothing of the next group reaches the target before the group before it is committed.
 *
 * Memory: what the engine holds is bounded in bytes (MAX_QUEUED_*, group.ts's MAX_PENDING_* and
 * RETAIN_MAX_*, one batch); a source transaction larger than GC_EVERY_TXN_BYTES also gets a full GC
 * each time that much more of it arrived (gc.ts).
 *
 * Durability without an fsync per transaction: the apply session runs with synchronous_commit = off.
 * A lost async commit would be harmless if the slot had not been confirmed past it, so the confirmed
 * position only advances after a synchronous commit (one every progress interval, and for the fence),
 * which flushes the target's WAL and with it every earlier async commit.
 */
import type { Client } from 'pg';
import { FENCE_MESSAGE_PREFIX } from '../stop-writes';
import { sleep } from '../sleep';
import { CopyPositions } from './copy-positions';
import { ApplyError, safeDbMessage, sqlState } from './errors';
import { GC_EVERY_TXN_BYTES, LargeTxnGc } from './gc';
import { FIRST_GROUP_MS, Group, MAX_GROUP_BYTES, type Change } from './group';
import { bigIntToLsn } from './lsn';
import type { ApplyOptions, ApplyResult } from './options';
import type { ChangeMessage, PgoutputMessage } from './pgoutput';
import { ApplyPosition, progressUpsert } from './progress';
import { Relations, type LeafRoute, type MappedRelation } from './relations';
import { LARGE_CHANGE, LARGE_VALUE, ReplicationSource } from './source';
import { Spool } from './spool';
import { applyStats, type ApplyStats } from './stats';
import { Writer } from './writer';

/** Messages received and waiting for the target, at most (then the stream waits). */
const MAX_QUEUED = 10_000;
const MAX_QUEUED_BYTES = 2 * 1024 * 1024;
/** Queued messages handled into the next group per turn of the event loop while a group is written. */
const FOLD_AHEAD_SLICE = 256;
/** Progress reports this long after the stream has started, before the regular interval takes over. */
const EARLY_REPORTS_MS = [50, 250, 750];

export class ApplyEngine {
  private readonly interval: number;
  private readonly maxBatchRows: number;
  private readonly maxGroupChanges: number;
  private readonly maxGroupMs: number;
  /** The age at which the open group is committed: FIRST_GROUP_MS for a run's first group, doubling up to maxGroupMs. */
  private groupMs: number;
  private readonly groupIdleMs: number;
  private readonly stats: ApplyStats;
  private readonly relations: Relations;
  private readonly source: ReplicationSource;
  private readonly writer: Writer;
  /** Large values of large changes, on disk until their group commits. */
  private readonly spool: Spool;
  /** Highest spool sequence number of a change handled so far (applied in the open group, or skipped). */
  private spoolSeen = 0;

  private readonly pos: ApplyPosition;
  private readonly gc: LargeTxnGc;
  /** End LSN of the last source transaction applied in the open group (committed when none). */
  private lastEnd: bigint;

  private inSourceTxn = false;
  /** Where the current source transaction's commit record starts (pgoutput BEGIN's final LSN). */
  private txnFinal = 0n;
  /** What the initial copy already holds per table (a later snapshot, a TRUNCATE it read). */
  private readonly copies = new CopyPositions();
  private txnChanges = 0;
  private skipping = false;
  private txnFence: string | undefined;

  /** The open group: complete source transactions applied in the open target transaction. */
  private group = new Group();
  private commitTimer: NodeJS.Timeout | undefined;
  /**
   * While a group is being written and committed: the group after it, into which the socket callback
   * folds what arrives meanwhile (made the open group for each such message), so the engine's CPU work
   * and the target's overlap. It stops taking messages at the first one that needs I/O (that one and
   * all later ones wait in the queue) or leaves work behind (`nextFollowUps`, run right after the commit).
   */
  private next: Group | undefined;
  private nextFollowUps: (() => Promise<void>)[] = [];
  private nextBlocked = false;
  /** handleSync is running on `next` (made the open group for the call). */
  private overlapping = false;
  /** A group's write or COMMIT failed: the open group can never be committed (doStop must not retry it). */
  private groupLost = false;
  /** Messages handled into the next group while a group was written. */
  private foldedAhead = 0;

  /** Messages waiting for `drain` (entries before qHead are done), and their size. */
  private queue: ({ msg: PgoutputMessage; size: number } | undefined)[] = [];
  private qHead = 0;
  private queuedBytes = 0;
  private draining = false;
  private paused = false;
  /** Tasks in `serial` not finished yet: while any, messages wait in the queue. */
  private pendingWork = 0;
  /** Data messages whose handling has started / finished (the source counts those received). */
  private begun = 0;
  private handled = 0;
  private lastSyncAt = Date.now();
  /** Work handleSync left for after the message, inside `drain` (see `after`). */
  private followUp: (() => Promise<void>) | undefined;

  private chain: Promise<unknown> = Promise.resolve();
  private stopping = false;
  private failure: Error | undefined;
  private stopPromise: Promise<void> | undefined;
  private timer: NodeJS.Timeout | undefined;
  private statusTimer: NodeJS.Timeout | undefined;
  private readonly earlyTimers: NodeJS.Timeout[] = [];
  private ticking = false;
  private settle!: { resolve: (r: ApplyResult) => void; reject: (e: Error) => void };
  private readonly onAbort = (): void => void this.stop();

  constructor(
    private readonly opts: ApplyOptions,
    private readonly target: Client,
    monitor: Client | undefined,
    applied: bigint,
    fenceToken: string | undefined,
    private readonly statusEveryMs: number,
    calledAt = Date.now(),
  ) {
    this.stats = applyStats(calledAt, target);
    this.interval = Math.max(50, opts.progressIntervalMs ?? 2000);
    this.maxBatchRows = Math.max(1, opts.maxBatchRows ?? 1000);
    this.maxGroupChanges = Math.max(1, opts.maxGroupChanges ?? 10_000);
    this.maxGroupMs = Math.max(0, opts.maxGroupMs ?? 100);
    this.groupMs = Math.min(this.maxGroupMs, Math.max(0, opts.firstGroupMs ?? FIRST_GROUP_MS));
    this.groupIdleMs = Math.max(0, opts.groupIdleMs ?? 5);
    this.gc = new LargeTxnGc(opts.gcEveryTxnBytes ?? GC_EVERY_TXN_BYTES);
    this.relations = new Relations(opts.tables, opts.publication, opts.setBased !== false);
    this.pos = new ApplyPosition(applied, fenceToken);
    this.lastEnd = applied;
    this.spool = new Spool(opts.spoolDir);
    this.writer = new Writer(target, this.spool, this.stats, { ...opts, maxBatchRows: this.maxBatchRows });
    this.source = new ReplicationSource(
      {
        source: opts.source,
        slot: opts.slot,
        publication: opts.publication,
        spool: this.spool,
        largeChangeBytes: opts.largeChangeBytes ?? LARGE_CHANGE,
        largeValueBytes: opts.largeValueBytes ?? LARGE_VALUE,
      },
      { data: (lsn, msg, size) => this.onData(lsn, msg, size), keepalive: (walEnd, reply) => this.onHeartbeat(walEnd, reply) },
      { stopping: () => this.stopping, fail: (e) => this.fail(e), started: () => this.onStarted() },
      monitor,
    );
  }

  run(): Promise<ApplyResult> {
    const done = new Promise<ApplyResult>((resolve, reject) => {
      this.settle = { resolve, reject };
    });
    this.target.on('error', (e: Error) => this.fail(new ApplyError(`lost the target connection: ${safeDbMessage(e)}`)));
    this.source.listen();
    this.timer = setInterval(() => void this.tick(), this.interval);
    // Standby status on its own clock, well inside wal_sender_timeout whatever the progress interval:
    // while a long statement keeps the stream paused, keepalive requests are not even read.
    this.statusTimer = setInterval(() => {
      if (!this.stopping) this.ack();
    }, this.statusEveryMs);
    this.opts.signal.addEventListener('abort', this.onAbort);
    if (this.opts.signal.aborted) void this.stop();
    else {
      this.relations.prefetch(this.target);
      this.source.subscribe(this.pos.committed, Date.now() + (this.opts.slotWaitMs ?? 30_000));
    }
    return done;
  }

  private onStarted(): void {
    this.ack();
    // The first reports come early, not a whole progress interval in: an automatic cutover waits
    // for a report from this run of the apply, and a slot already caught up should say so at once.
    for (const ms of EARLY_REPORTS_MS) if (ms < this.interval) this.earlyTimers.push(setTimeout(() => void this.tick(), ms));
  }

  /** Sources before 13 publish leaf partitions: each is written through its root's target table. */
  routeLeaves(routes: readonly LeafRoute[]): void {
    this.relations.routeLeaves(routes);
  }

  /** Everything that touches the target runs here, one at a time, in arrival order. */
  private serial<T>(fn: () => Promise<T>): Promise<T> {
    const p = this.chain.then(fn);
    this.chain = p.catch(() => undefined);
    return p;
  }

  /**
   * One message, straight from the socket callback. Most need no I/O (a change folded into the pending
   * set-based batch, BEGIN, a COMMIT that keeps the group open): when nothing waits or runs they are
   * handled right here. The rest wait in `queue` for `drain`, which runs in `serial`; the socket is
   * paused while the queue is over MAX_QUEUED_*.
   */
  private onData(lsn: number, msg: PgoutputMessage, size: number): void {
    this.stats.data();
    if (this.stopping) {
      this.handled++;
      return;
    }
    // Data LSNs only grow: kept as a number, converted when reported.
    this.pos.receivedData = lsn;
    if (this.gc.note(msg.tag === 'begin', size)) this.stats.gc();
    const next = this.nextBlocked ? undefined : this.next;
    if ((this.pendingWork === 0 || next) && this.qHead === this.queue.length) {
      this.begun++;
      let done: boolean;
      try {
        done = next ? this.handleAhead(next, msg) : this.handleSync(msg);
      } catch (err) {
        this.handled++;
        this.fail(err);
        return;
      }
      if (next && done) this.foldedAhead++;
      if (done) {
        this.handled++;
        return;
      }
      this.begun--;
    }
    this.queue.push({ msg, size });
    this.queuedBytes += size;
    if (!this.paused && (this.queue.length - this.qHead >= MAX_QUEUED || this.queuedBytes >= MAX_QUEUED_BYTES)) this.pauseStream(true);
    if (!this.draining) {
      this.draining = true;
      this.enqueue(() => this.drain());
    }
  }

  /** Handles the queued messages in order (inside `serial`), until the queue is empty. */
  private async drain(): Promise<void> {
    try {
      while (this.qHead < this.queue.length) {
        const item = this.queue[this.qHead]!;
        this.queue[this.qHead++] = undefined;
        try {
          if (!this.stopping) {
            this.begun++;
            if (!this.handleSync(item.msg)) await this.handle(item.msg);
            else if (this.followUp) {
              // Work handleSync left for after the message: here, before the next message.
              const f = this.followUp;
              this.followUp = undefined;
              await f();
            }
          }
        } catch (err) {
          this.fail(err);
        } finally {
          this.handled++;
          this.queuedBytes -= item.size;
        }
        this.resumeIfDrained();
      }
    } finally {
      this.queue = [];
      this.qHead = 0;
      this.queuedBytes = 0;
      this.draining = false;
      if (this.paused) this.pauseStream(false);
    }
  }

  private resumeIfDrained(): void {
    if (this.paused && this.queue.length - this.qHead <= MAX_QUEUED / 2 && this.queuedBytes <= MAX_QUEUED_BYTES / 2) this.pauseStream(false);
  }

  /** Backpressure: the walsender waits (its socket buffer full) while we catch up. */
  private pauseStream(pause: boolean): void {
    this.paused = pause;
    this.stats.paused(pause);
    this.source.pause(pause);
  }

  /**
   * Work a message handled in handleSync still needs, in order: from the socket callback (nothing
   * queued or running) a task of its own, which every later message waits behind; inside `drain`,
   * right after the message, before the next one. (Queued behind the running drain instead, it would
   * run after later messages, a COMMIT among them: a group committed without the change.)
   */
  private after(fn: () => Promise<void>): void {
    if (this.overlapping) {
      this.nextFollowUps.push(fn);
      this.nextBlocked = true;
    } else if (this.draining) this.followUp = fn;
    else this.enqueue(fn);
  }

  /** Runs `fn` after everything before it in `serial`; a failure stops the apply. */
  private enqueue(fn: () => Promise<void>): void {
    this.pendingWork++;
    this.serial(fn)
      .catch((err: unknown) => this.fail(err))
      .finally(() => this.pendingWork--)
      .catch(() => undefined);
  }

  /**
   * Handles a message without I/O when it can (true), or leaves it untouched for `handle` (false).
   * Same effects as `handle`, in the same order.
   */
  private handleSync(msg: PgoutputMessage): boolean {
    switch (msg.tag) {
      case 'begin':
        if (this.inSourceTxn) return false;
        if (msg.finalLsn >= this.lastEnd && this.group.txns > 0 && this.groupAged()) return false;
        this.begin(msg.finalLsn);
        return true;
      case 'commit':
        if (!this.inSourceTxn) return false;
        if (this.skipping ? msg.endLsn > this.lastEnd : this.commitDue()) return false;
        if (!this.skipping) this.pos.sourceCommit(msg.commitTime);
        this.endSourceTxn(msg.endLsn);
        this.awaitMore();
        return true;
      case 'type':
      case 'origin':
      case 'message':
        this.noteMessage(msg);
        return true;
      case 'insert':
      case 'update':
      case 'delete':
        return this.changeSync(msg);
      default:
        return false;
    }
  }

  /** handleSync of a row change: folded, or added to its table's INSERT batch, or left for `handle`. */
  private changeSync(msg: ChangeMessage): boolean {
    if (this.noteFenceMarker(msg)) return true;
    if (msg.spooled !== undefined) return false;
    const m = this.changeTarget(msg.relationOid, msg.tag.toUpperCase());
    if (!m) return true;
    const c = this.changeOf(msg, m);
    const g = this.group;
    if (g.foldable(c)) {
      this.account(c);
      if (!g.fold(c)) this.after(() => this.writer.change(this.group, c));
      else if (g.foldDue()) this.after(() => this.writer.afterFold(this.group));
      return true;
    }
    if (msg.tag === 'insert' && !g.setBased(c)) {
      // An INSERT written in order (a table without a key, or a strict transaction): added to its
      // table's batch, written when the batch is full or anything else touches the table.
      this.account(c);
      const b = g.addInsert(msg.relationOid, m, msg.new);
      if (this.writer.batchFull(b) || g.retentionDue()) this.after(() => this.writer.afterInsert(this.group, msg.relationOid));
      return true;
    }
    return false;
  }

  /** Nothing received waits to be handled (the current message aside) and no group is open. */
  private idle(): boolean {
    return !this.inSourceTxn && !this.writer.inTxn && this.group.txns === 0 && this.source.parsed === this.handled;
  }

  private onHeartbeat(lsn: number, shouldRespond: boolean): void {
    try {
      const walEnd = BigInt(lsn);
      this.pos.keepalive(walEnd);
      if (this.stopping) return;
      // Everything before this keepalive has been received; if all of it is applied and no transaction
      // is open, no transaction ending before walEnd is still to come: the source is idle up to there.
      if (this.idle()) this.pos.idleUpTo(walEnd);
      if (shouldRespond) this.ack();
    } catch (err) {
      this.fail(err);
    }
  }

  private async handle(msg: PgoutputMessage): Promise<void> {
    if (this.stopping) return;
    switch (msg.tag) {
      case 'invalid':
        throw new ApplyError(`cannot decode the replication stream: ${msg.error.message}`, { permanent: true });
      case 'begin':
        if (this.inSourceTxn) throw new ApplyError('replication stream: BEGIN inside a transaction');
        // An old group waiting for more (a non-transactional message came in between): commit it first.
        if (msg.finalLsn >= this.lastEnd && this.group.txns > 0 && this.groupAged()) await this.commitGroup(false);
        this.begin(msg.finalLsn);
        return;
      case 'commit':
        if (!this.skipping) this.pos.sourceCommit(msg.commitTime);
        return this.commit(msg.endLsn);
      case 'relation':
        return this.onRelation(msg);
      case 'type':
      case 'origin':
      case 'message':
        this.noteMessage(msg);
        return;
      case 'insert':
      case 'update':
      case 'delete': {
        if (this.noteFenceMarker(msg)) return;
        if (msg.spooled !== undefined && msg.spooled > this.spoolSeen) this.spoolSeen = msg.spooled;
        const m = this.changeTarget(msg.relationOid, msg.tag.toUpperCase());
        if (!m) return;
        const c = this.changeOf(msg, m);
        this.account(c);
        return this.writer.change(this.group, c);
      }
      case 'truncate': {
        if (!this.inSourceTxn) throw new ApplyError('replication stream: TRUNCATE outside a transaction');
        if (this.skipping) return;
        const oids = msg.relationOids.filter((oid) => {
          const st = this.relations.get(oid);
          return !st?.fenceMarker && !(st?.mapped && this.copies.inCopy(st.mapped, this.txnFinal));
        });
        if (!oids.length) return;
        if (this.relations.hasLeaves) this.relations.checkLeafTruncate(oids);
        const c: Change = { msg: { ...msg, relationOids: oids }, mapped: oids.map((oid) => this.relations.mappedOrThrow(oid, 'TRUNCATE')) };
        // Emptied as on the source: what follows is checked again.
        this.copies.truncated(c.mapped);
        this.account(c);
        return this.writer.change(this.group, c);
      }
    }
  }

  /** A table (re)described: what is pending for it was decoded under its previous description. */
  private async onRelation(msg: Extract<PgoutputMessage, { tag: 'relation' }>): Promise<void> {
    await this.writer.flushPending(this.group);
    try {
      return await this.relations.describe(msg, this.target);
    } catch (err) {
      // Stopping for good (DDL on the source): the whole source transactions grouped before this
      // one are still applied, as they would be one target transaction each.
      if (err instanceof ApplyError && err.permanent && this.inSourceTxn && !this.skipping && this.txnChanges === 0 && this.group.txns > 0) {
        this.inSourceTxn = false;
        await this.commitGroup(true).catch(() => undefined);
      }
      throw err;
    }
  }

  private begin(finalLsn: bigint): void {
    this.inSourceTxn = true;
    this.txnFinal = finalLsn;
    // A commit record that starts before the applied position ends at or before it: done already.
    this.skipping = finalLsn < this.lastEnd;
    this.txnFence = undefined;
    this.txnChanges = 0;
    if (!this.skipping && this.group.txns === 0) this.group.start = Date.now();
  }

  private noteMessage(msg: Extract<PgoutputMessage, { tag: 'type' | 'origin' | 'message' }>): void {
    if (msg.tag === 'type') {
      this.relations.noteType(msg);
    } else if (msg.tag === 'message') {
      if (msg.transactional && msg.prefix === FENCE_MESSAGE_PREFIX && this.inSourceTxn && !this.skipping) {
        this.txnFence = msg.content.toString('utf8');
      }
    }
  }

  /**
   * A change to our fence marker table (sources before 14) is the fence marker itself, handled like
   * the logical message newer sources send: true when `msg` was one (nothing to write).
   */
  private noteFenceMarker(msg: ChangeMessage): boolean {
    if (!this.relations.get(msg.relationOid)?.fenceMarker) return false;
    if (msg.tag === 'insert' && this.inSourceTxn && !this.skipping && typeof msg.new[0] === 'string') this.txnFence = msg.new[0];
    return true;
  }

  /**
   * The mapped relation a change goes to, or undefined when its transaction is being skipped or its
   * table's rows were copied in a snapshot that already holds it.
   */
  private changeTarget(oid: number, op: string): MappedRelation | undefined {
    if (!this.inSourceTxn) throw new ApplyError(`replication stream: ${op} outside a transaction`);
    if (this.skipping) return undefined;
    const m = this.relations.mappedOrThrow(oid, op);
    return this.copies.inCopy(m, this.txnFinal) ? undefined : m;
  }

  /** Every change of a lenient table (CopyPositions.lenient) goes in order, one at a time. */
  private changeOf(msg: ChangeMessage, m: MappedRelation): Change {
    // An INSERT folded ahead of the UPDATE of its row would let that UPDATE find nothing.
    return this.copies.lenient(m, this.txnFinal) ? { msg, mapped: m, lenient: true } : { msg, mapped: m };
  }

  /** Tables copied in a later snapshot (a resumed copy) and where it starts; see CopyPositions.inCopy. */
  copiedSince(positions: ReadonlyMap<string, bigint>): void {
    this.copies.copiedSince(positions, this.pos.committed);
  }

  /** Tables whose copy read them truncated (or rewritten) after the snapshot; see CopyPositions.lenient. */
  rewrittenBefore(positions: ReadonlyMap<string, bigint>): void {
    this.copies.rewrittenBefore(positions, this.pos.committed);
  }

  /** Counts a change into the open group (and keeps it for a replay). */
  private account(c: Change): void {
    this.txnChanges++;
    this.group.account(c);
  }

  /** The open group is old enough to be committed. */
  private groupAged(): boolean {
    return Date.now() - this.group.start >= this.groupMs;
  }

  /** The open group is to be committed at this source commit. */
  private commitDue(): boolean {
    return (
      this.txnFence !== undefined ||
      this.group.fence !== undefined ||
      this.group.changes >= this.maxGroupChanges ||
      this.group.bytes >= MAX_GROUP_BYTES ||
      this.groupAged()
    );
  }

  private async commit(endLsn: bigint): Promise<void> {
    if (!this.inSourceTxn) throw new ApplyError('replication stream: COMMIT outside a transaction');
    if (this.skipping && endLsn > this.lastEnd) {
      throw new ApplyError(`replication stream: transaction ending at ${bigIntToLsn(endLsn)} was skipped but is not applied yet`);
    }
    const due = !this.skipping && this.commitDue();
    this.endSourceTxn(endLsn);
    if (due) return this.commitGroup(false, true);
    this.awaitMore();
  }

  /** The source transaction is complete: part of the open group (or skipped). */
  private endSourceTxn(endLsn: bigint): void {
    this.inSourceTxn = false;
    if (this.skipping) {
      this.skipping = false;
      return;
    }
    this.lastEnd = endLsn;
    this.group.txns++;
    if (this.txnFence !== undefined) this.group.fence = this.txnFence;
    this.txnFence = undefined;
  }

  /**
   * The group stays open. More of the stream is already here: its next commit decides. Otherwise the
   * stream is drained for now: give the next chunk a moment to arrive before committing.
   */
  private awaitMore(): void {
    if (this.group.txns === 0 || this.source.parsed > this.begun) return;
    this.armCommitTimer();
  }

  private armCommitTimer(): void {
    if (this.commitTimer) return;
    this.commitTimer = setTimeout(() => {
      this.commitTimer = undefined;
      if (this.stopping) return;
      this.enqueue(async () => {
        if (this.stopping || this.inSourceTxn || this.group.txns === 0) return;
        if (this.source.parsed > this.begun && !this.groupAged()) return; // more came: its commit decides
        await this.commitGroup(false, true);
      });
    }, this.groupIdleMs);
  }

  /**
   * Commits the open group: its pending changes, then the progress row (last source commit end LSN,
   * and the fence token when the group ends with the fence's transaction) in the same transaction.
   * Only between source transactions.
   */
  private async commitGroup(forceSync: boolean, overlap = false): Promise<void> {
    clearTimeout(this.commitTimer);
    this.commitTimer = undefined;
    // A group whose COMMIT failed is never committed again (a commit queued behind the failing one).
    if (this.inSourceTxn || this.group.txns === 0 || this.groupLost) return;
    // Captured now: transactions received while this group is written go into the next one.
    const endLsn = this.lastEnd;
    const next = new Group();
    overlap &&= this.opts.foldAhead !== false;
    if (overlap) this.next = next;
    this.nextBlocked = false;
    this.nextFollowUps = [];
    try {
      const writing = this.writeGroup(this.group, forceSync, endLsn);
      if (overlap) void this.foldAhead(next);
      await writing;
    } catch (err) {
      // This group can never be committed now: a clean stop (doStop) must not try it again. (A failed
      // COMMIT ends the target transaction: a retry would commit the progress row alone.)
      this.groupLost = true;
      throw err;
    } finally {
      this.next = undefined;
    }
    // The next group (what arrived meanwhile) becomes the open one; the committed one is dropped.
    this.group = next;
    this.groupMs = Math.min(this.maxGroupMs, this.groupMs * 2);
    const followUps = this.nextFollowUps;
    this.nextFollowUps = [];
    for (const f of followUps) await f();
  }

  /**
   * While the open group is written (its statements waiting on the target): handles the queued
   * messages into the next group, in order, FOLD_AHEAD_SLICE at a time between the target's replies,
   * until the queue is empty (what arrives later is handled in onData), a message needs I/O or leaves
   * work behind, or the group is committed.
   */
  private async foldAhead(next: Group): Promise<void> {
    while (this.next === next && !this.nextBlocked && !this.stopping && this.qHead < this.queue.length) {
      for (let n = 0; n < FOLD_AHEAD_SLICE && this.qHead < this.queue.length && !this.nextBlocked; n++) {
        const item = this.queue[this.qHead]!;
        this.begun++;
        let done: boolean;
        try {
          done = this.handleAhead(next, item.msg);
        } catch (err) {
          done = true;
          this.nextBlocked = true;
          this.fail(err);
        }
        if (!done) {
          this.begun--;
          this.nextBlocked = true;
          break;
        }
        this.foldedAhead++;
        this.queue[this.qHead++] = undefined;
        this.handled++;
        this.queuedBytes -= item.size;
      }
      this.resumeIfDrained();
      await new Promise<void>((resolve) => setImmediate(resolve));
    }
  }

  /** handleSync on the next group, made the open group for the call. */
  private handleAhead(next: Group, msg: PgoutputMessage): boolean {
    const open = this.group;
    this.group = next;
    this.overlapping = true;
    try {
      return this.handleSync(msg);
    } finally {
      this.overlapping = false;
      this.group = open;
    }
  }

  /** Writes group `g`'s pending changes and commits it with its progress row. */
  private async writeGroup(g: Group, forceSync: boolean, endLsn: bigint): Promise<void> {
    await this.writer.flushPending(g);
    const fence = g.fence;
    const sync = forceSync || fence !== undefined || Date.now() - this.lastSyncAt >= this.interval;
    await this.writer.commit(endLsn, sync, progressUpsert(this.opts.slot, endLsn, fence));
    this.pos.groupCommitted(endLsn, g.txns, g.changes);
    if (this.spoolSeen > 0) this.spool.release(this.spoolSeen);
    if (sync) {
      this.lastSyncAt = Date.now();
      this.pos.durable = endLsn;
      this.ack();
    }
    if (fence !== undefined) {
      this.pos.fenceToken = fence;
      this.emitProgress();
    }
  }

  /**
   * Makes everything committed durable with one synchronous commit (which flushes the target's WAL and
   * every async commit before it) and records an idle keepalive position. Only between transactions.
   */
  private async flushDurable(): Promise<void> {
    if (this.writer.inTxn || this.inSourceTxn || this.group.txns > 0) return;
    const to = this.pos.durableCandidate();
    if (to <= this.pos.durable) return;
    await this.writer.commitDurable(progressUpsert(this.opts.slot, to, undefined));
    this.pos.flushedTo(to);
    this.lastSyncAt = Date.now();
    this.ack();
  }

  /** Confirms the durable position to the slot (also our standby status update / keepalive answer). */
  private ack(): void {
    this.source.acknowledge(this.pos.durable);
  }

  private async tick(): Promise<void> {
    if (this.stopping || this.ticking) return;
    this.ticking = true;
    try {
      if (!this.inSourceTxn && this.group.txns > 0 && this.groupAged()) {
        // A group left open (only non-transactional messages came after it): commit it, unless by then
        // it was (the open group seen here may be the one in flight).
        this.enqueue(async () => {
          if (!this.stopping && !this.inSourceTxn && this.group.txns > 0 && this.groupAged()) await this.commitGroup(false, true);
        });
      } else if (!this.writer.inTxn && !this.inSourceTxn && this.group.txns === 0 && this.pos.durableCandidate() > this.pos.durable) {
        this.enqueue(() => this.flushDurable());
      }
      await this.refreshSourceLsn();
      if (!this.stopping) this.emitProgress();
    } finally {
      this.ticking = false;
    }
  }

  async refreshSourceLsn(): Promise<void> {
    const l = await this.source.currentLsn();
    if (l !== undefined) this.pos.sourceLsn = l;
  }

  private emitProgress(): void {
    try {
      this.opts.onProgress?.(this.pos.report());
    } catch {
      // A progress consumer's bug must not stop the apply.
    }
  }

  private fail(err: unknown): void {
    if (this.stopping) return;
    this.failure = err instanceof ApplyError ? err : new ApplyError(safeDbMessage(err), { code: sqlState(err) });
    void this.stop();
  }

  private stop(): Promise<void> {
    this.stopPromise ??= this.doStop();
    return this.stopPromise;
  }

  private async doStop(): Promise<void> {
    this.stopping = true;
    if (this.timer) clearInterval(this.timer);
    if (this.statusTimer) clearInterval(this.statusTimer);
    for (const t of this.earlyTimers) clearTimeout(t);
    this.opts.signal.removeEventListener('abort', this.onAbort);
    // Wait for the statement in flight, roll back a partial transaction, make what is committed
    // durable and confirm it. A target that does not answer is cut off by the caller closing it.
    this.pendingWork++; // nothing is handled synchronously any more
    const finish = this.serial(() => this.finishTarget());
    await Promise.race([finish.catch(() => undefined), sleep(15_000)]);
    await this.source.waitConfirmed(this.pos.durable);
    await this.source.destroy();
    await Promise.race([this.source.ended, sleep(5_000)]);
    try {
      this.spool.close();
    } catch {
      // a leftover directory is removed by the next apply on this machine
    }
    await this.source.waitReleased();
    const result = this.pos.result({
      largeChanges: this.source.largeChanges,
      skippedBeforeCopy: this.copies.skippedBeforeCopy,
      missingBeforeTruncate: this.writer.missingBeforeTruncate,
      foldedAhead: this.foldedAhead,
    });
    this.stats.report(this.foldedAhead);
    if (this.failure) this.settle.reject(this.failure);
    else this.settle.resolve(result);
  }

  /** The target's side of a stop (in `serial`, after the statement in flight). */
  private async finishTarget(): Promise<void> {
    if (this.commitTimer) clearTimeout(this.commitTimer);
    this.commitTimer = undefined;
    // A clean stop commits the complete source transactions of the open group; a partial one is
    // rolled back (it is streamed again on restart).
    if (!this.failure && !this.groupLost && !this.inSourceTxn && this.group.txns > 0) await this.commitGroup(true).catch(() => undefined);
    this.group.dropPending();
    this.group.txns = 0;
    await this.writer.rollback();
    this.inSourceTxn = false;
    this.skipping = false;
    await this.flushDurable().catch(() => undefined);
    this.ack();
  }

  closeMonitor(): Promise<void> {
    return this.source.closeMonitor();
  }
}

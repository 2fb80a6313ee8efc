/**
 * The WAL apply engine (SYNCING_WAL): streams pgoutput from an existing logical replication slot and
 * applies each source transaction to the mapped target tables, exactly once and in commit order.
 *
 * Exactly once: consecutive source transactions are applied as one target transaction (a group) that
 * also writes the last one's commit end LSN into pgdts.apply_progress. A group is committed when nothing
 * more waits in the stream (after groupIdleMs), at maxGroupChanges / MAX_GROUP_BYTES / maxGroupMs, at
 * the transaction carrying a fence message (whose token goes into the same progress row: the group ends
 * there), and on a clean stop; only whole source transactions are ever committed. On start the engine
 * reads that position, asks the slot to start there and skips anything at or before it. The slot is
 * confirmed only up to what is durably committed on the target, so after any crash (apply, target,
 * source, network) nothing is lost or applied twice.
 *
 * Round trips: changes to a keyed table are folded into their net effect per key (batch.ts) and written
 * as a few prepared set-based statements per group; other tables get multi-row INSERTs and one statement
 * per UPDATE/DELETE. If a set-based write fails (a unique index that sees rows in another order than
 * the source did, or any other error), the group is rolled back and replayed change by change in source
 * order, which either succeeds or reports the failing change precisely. Batched inserts (set-based, or
 * consecutive inserts of a table written in order) go as COPY FROM STDIN, rows written straight into
 * 64 KiB Buffers.
 *
 * Overlap: while a group is written and committed (its statements waiting on the target), what arrives
 * is already folded into the next group (`foldAhead`, `next`), up to the first message that needs I/O;
 * nothing of the next group reaches the target before the group before it is committed.
 *
 * Memory: what the engine holds is bounded in bytes (MAX_QUEUED_*, MAX_PENDING_*, RETAIN_MAX_*, one
 * batch); a source transaction larger than GC_EVERY_TXN_BYTES also gets a full GC each time that much
 * more of it arrived, or V8 lets its garbage (the transaction's whole size, passing through) grow the
 * heap by ~100 MB before collecting it.
 *
 * Durability without an fsync per transaction: the apply session runs with synchronous_commit = off.
 * A lost async commit would be harmless if the slot had not been confirmed past it, so the confirmed
 * position only advances after a synchronous commit (one every progress interval, and for the fence),
 * which flushes the target's WAL and with it every earlier async commit.
 *
 * pg-logical-replication 2.5.0 traps handled here (DESIGN.md §4):
 * - acknowledge.auto false AND timeoutSeconds 0, or it confirms what was merely received;
 * - keepalives are answered by us, always with the durable position;
 * - without flowControl it never waits for its 'data' handlers and memory is unbounded; with it, it
 *   pays a queue entry and several promises per message and pauses the socket while any handler runs.
 *   We leave it off and do the same ourselves, cheaper: messages that need no I/O are handled in the
 *   socket callback, the rest wait in our queue, and the socket is paused while that queue is over
 *   MAX_QUEUED_* (so decoding on the source and writing to the target overlap, within bounds);
 * - its own parser turns values into JS objects with pg's global type parsers (timestamptz -> Date
 *   loses microseconds) and folds unchanged-TOAST into undefined: we plug in our own pgoutput parser
 *   (`parsePgoutput`) that keeps every value as PostgreSQL text and marks unchanged TOAST explicitly;
 * - per message, pg's parser made a message object and the library an LSN string, and both copied:
 *   our plugin reads the socket itself (ReplicationFramer, spool.ts) and parses each XLogData message
 *   in place; the library only starts the stream and sends our standby status updates;
 * - its `acknowledge(lsn)` sends lsn + 1, so we pass the durable position minus one;
 * - a handler that throws does not stop its queue: ours never throw, they record the failure and stop;
 * - it does not escape the slot or publication names: we build START_REPLICATION ourselves.
 */
import { Readable } from 'node:stream';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { finished, pipeline } from 'node:stream/promises';
import type { Client } from 'pg';
import { from as copyFrom } from 'pg-copy-streams';
import { LogicalReplicationService } from 'pg-logical-replication';
import { connect, describeConnection, pinnedSpec } from '../db';
import { FENCE_MESSAGE_PREFIX, fenceMarkerTable } from '../cutover';
import { readCopyPositions, readRewrittenCopies } from '../copy';
import { hasPublishViaRoot, serverVersionNum } from '../pg-version';
import { ident, qname } from '../sql';
import { displayName, type QualifiedName } from '../spec';
import { Spool, copyRow, inlineParams, isSpooled, type SpooledValue } from './spool';
import { KeyedChanges, copyChunks, copyInsertSql, hasBig, insertSql, keyedRelation, type BatchStatement, type KeyedRelation } from './batch';
import {
  deleteStatement,
  insertStatement,
  truncateStatement,
  updateStatement,
  type ApplyRelation,
  type SqlStatement,
  type Tuple,
} from './statements';
import { ApplyError, connectionLevel, safeDbMessage, sqlState } from './errors';
import { bigIntToLsn, lsnToBigInt, maxBig } from './lsn';
import type { ChangeMessage, PgoutputMessage, TruncateMessage } from './pgoutput';
import { ensureApplyProgressTable, progressUpsert, readApplyProgress } from './progress';
import { readLeafRoutes, type LeafRoute, type MappedRelation, type RelationState } from './relations';
import { LARGE_CHANGE, LARGE_VALUE, TextPgoutputPlugin, readSlot, replicationConfig, sleep, waitSlotFree } from './source';
import { applyApplicationName, keyOf, prepareTargetSession, readTargetTables, type TargetTable } from './target';
import type { ApplyOptions, ApplyProgress, ApplyResult } from './options';

interface InsertBatch {
  oid: number;
  mapped: MappedRelation;
  rows: Tuple[];
  params: number;
  bytes: number;
}

/**
 * One decoded change with the mapping it was decoded under (kept for a replay of the group). `lenient`:
 * an UPDATE or DELETE may find no row (ApplyEngine.lenient); such changes are written one at a time.
 */
type Change = { msg: ChangeMessage; mapped: MappedRelation; lenient?: boolean } | { msg: TruncateMessage; mapped: MappedRelation[] };

/** One group's state (ApplyEngine fields of the same names): what `ApplyEngine.next` holds. */
interface GroupState {
  keyed: Map<number, KeyedChanges>;
  pendingKeyed: number;
  batches: Map<number, InsertBatch>;
  retained: Change[] | undefined;
  retainedBytes: number;
  strictTxn: boolean;
  groupTxns: number;
  groupChanges: number;
  groupBytes: number;
  groupStart: number;
  groupFence: string | undefined;
}

function freshGroup(): GroupState {
  return {
    keyed: new Map(),
    pendingKeyed: 0,
    batches: new Map(),
    retained: [],
    retainedBytes: 0,
    strictTxn: false,
    groupTxns: 0,
    groupChanges: 0,
    groupBytes: 0,
    groupStart: 0,
    groupFence: undefined,
  };
}

const MAX_BATCH_PARAMS = 30_000;
const MAX_BATCH_BYTES = 1024 * 1024;
/** A value this long gets a statement of its own with plain parameters (no array literal copy). */
const BIG_VALUE = 256 * 1024;
/** Folded (set-based) changes held before they are written, whatever the group. */
const MAX_PENDING_KEYED = 5_000;
const MAX_PENDING_BYTES = 2 * 1024 * 1024;
/** A group is committed at its next source commit once its values reach this size. */
const MAX_GROUP_BYTES = 2 * 1024 * 1024;
/**
 * The changes of the open target transaction are kept (up to these bounds) so that a set-based
 * write that fails can be rolled back and replayed change by change in source order. Past them (one
 * source transaction bigger than that), the rest of that target transaction goes change by change,
 * except for tables where the order of rows cannot matter (KeyedRelation.orderFree).
 */
const RETAIN_MAX_CHANGES = 10_000;
const RETAIN_MAX_BYTES = 4 * 1024 * 1024;
/** Messages received and waiting for the target, at most (then the stream waits). */
const MAX_QUEUED = 10_000;
const MAX_QUEUED_BYTES = 2 * 1024 * 1024;
/** Queued messages handled into the next group per turn of the event loop while a group is written. */
const FOLD_AHEAD_SLICE = 256;
/**
 * Inside one source transaction, a full GC each time this many more bytes of it arrived (only
 * transactions larger than that ever trigger one). Why: a huge transaction passes its whole size
 * through the worker as short-lived objects and Buffers (a 1 GiB one, ~2 GB), and V8 starts a full
 * collection only after the heap has grown by a fraction of itself, so RSS climbed ~200 MB over a
 * 1 GiB transaction while what the engine holds stays bounded (MAX_QUEUED_*, MAX_PENDING_*,
 * RETAIN_MAX_*). Measured on a 1 GiB transaction: peak RSS 393-402 MB without, 283 MB with one every
 * 32 MiB (~2.5 s more worker CPU). Every 16 MiB since session 6: in the worker right after a live load
 * 32 MiB peaked at 302 MB; in-process (bench/apply-memory.ts) 16 MiB grew RSS by 71 MB instead of
 * 93 MB for 2.2 s more CPU, the apply's time unchanged (29.5 vs 28.9 s: this process is not its limit).
 */
const GC_EVERY_TXN_BYTES = 16 * 1024 * 1024;

/** V8's full collection, when it can be had (the flag is set at run time; null: refused). */
let fullGc: (() => void) | null | undefined;
function collectGarbage(): void {
  if (fullGc === undefined) {
    try {
      setFlagsFromString('--expose-gc');
      fullGc = runInNewContext('gc') as () => void;
    } catch {
      fullGc = null;
    }
  }
  fullGc?.();
}

/** Prepared statements per session at most; past it, statements are sent unnamed. */
const MAX_PREPARED = 2_000;
/** First OID of user objects: below it, types are built in and have the same OID on every server. */
const FIRST_NORMAL_OBJECT_ID = 16384;
/** pg_type OID of "char" (the one-byte internal type). */
const CHAR_OID = 18;



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

/** Progress reports this long after the stream has started, before the regular interval takes over. */
const EARLY_REPORTS_MS = [50, 250, 750];

class ApplyEngine {
  private readonly interval: number;
  private readonly maxBatchRows: number;
  private readonly maxGroupChanges: number;
  private readonly maxGroupMs: number;
  private readonly groupIdleMs: number;
  private readonly tableMap = new Map<string, QualifiedName>();
  private readonly fenceMarkerKey: string;
  /** Leaf partition (sources before 13) -> its root's key and leaf count (routeLeaves). */
  private readonly leafRoots = new Map<string, { root: string; leaves: number }>();
  private readonly relations = new Map<number, RelationState>();
  /** pgoutput Type messages: source OID of a user-defined type -> its name (a domain's: its base type's). */
  private readonly sourceTypes = new Map<number, QualifiedName>();
  private readonly plugin: TextPgoutputPlugin;
  private readonly service: LogicalReplicationService;
  /** Large values of large changes, on disk until their group commits. */
  private readonly spool: Spool;
  /** Highest spool sequence number of a change handled so far (applied in the open group, or skipped). */
  private spoolSeen = 0;

  /** Last source commit end LSN committed on the target. */
  private committed: bigint;
  /** Known flushed on the target: the only position ever confirmed to the slot. */
  private durable: bigint;
  /** committed, or an idle keepalive's position: what lag is measured from. */
  private processed: bigint;
  /** A keepalive position seen while nothing was pending: safe to record as applied. */
  private idleCandidate = 0n;
  private received = 0n;
  /** LSN of the last data message, folded into `received` when reported. */
  private receivedData: number | undefined;
  /** Bytes of the current source transaction received since its BEGIN or the last forced GC. */
  private txnBytesSinceGc = 0;
  private sourceLsn = 0n;
  private fenceToken: string | undefined;
  /** End LSN of the last source transaction applied in the open group (committed when none). */
  private lastEnd: bigint;

  private inSourceTxn = false;
  /** Where the current source transaction's commit record starts (pgoutput BEGIN's final LSN). */
  private txnFinal = 0n;
  /**
   * Target tables copied in a later snapshot than the slot's (a copy resumed after its snapshot was
   * lost) -> that snapshot's position: their rows hold every transaction whose commit starts before it.
   */
  private readonly copiedFrom = new Map<string, bigint>();
  /** The highest of those positions: past it (transactions arrive in commit order) the map is dropped. */
  private copiedMax = 0n;
  /** Changes to tables copied in a later snapshot, left out because their rows already held them. */
  private beforeCopySkipped = 0;
  /** Target tables whose copy read them truncated after the snapshot -> a position past that TRUNCATE; see `lenient`. */
  private readonly rewritten = new Map<string, bigint>();
  private missingBeforeTruncate = 0;
  private txnChanges = 0;
  private skipping = false;
  /** A target transaction is open (BEGIN sent). */
  private inTxn = false;
  private txnFence: string | undefined;

  // The open group: complete source transactions applied in the open target transaction.
  private groupTxns = 0;
  private groupChanges = 0;
  private groupBytes = 0;
  private groupStart = 0;
  /** Target tables read ahead by run() (undefined if that failed), each used by its first relation message. */
  private prefetched: Promise<Map<string, TargetTable> | undefined> | undefined;
  private groupFence: string | undefined;
  private commitTimer: NodeJS.Timeout | undefined;
  /** Changes of the open target transaction, for a replay; undefined once too many to keep. */
  private retained: Change[] | undefined = [];
  private retainedBytes = 0;
  /** The rest of the open target transaction is applied change by change. */
  private strictTxn = false;
  /** Set-based pending changes per relation OID, and how many were folded since the last write. */
  private keyed = new Map<number, KeyedChanges>();
  private pendingKeyed = 0;
  /** Change-by-change path: consecutive INSERTs per relation OID. */
  private batches = new Map<number, InsertBatch>();
  /**
   * While a group is being written and committed: the group after it, into which the socket callback
   * folds what arrives meanwhile (swapped in for each such message), so the engine's CPU work and the
   * target's overlap. It stops taking messages at the first one that needs I/O (that one and all later
   * ones wait in the queue) or leaves work behind (`nextFollowUps`, run right after the commit).
   */
  private next: GroupState | undefined;
  private nextFollowUps: (() => Promise<void>)[] = [];
  private nextBlocked = false;
  /** handleSync is running on `next` (swapped in). */
  private overlapping = false;
  /** A group's write or COMMIT failed: the open group can never be committed (doStop must not retry it). */
  private groupLost = false;
  /** Messages handled into the next group while a group was written. */
  private foldedAhead = 0;
  private readonly prepared = new Map<string, string>();
  /** PGDTS_APPLY_STATS=1: where the time went, printed at the end (benchmarks). */
  private readonly stats = process.env.PGDTS_APPLY_STATS ? { groups: 0, statements: 0, dbMs: 0, commitMs: 0, start: Date.now(), setupMs: 0, firstData: 0, firstCommit: 0, replays: 0, gcs: 0, targetBusyMs: 0, pausedMs: 0, pausedAt: 0, elu: performance.eventLoopUtilization(), by: {} as Record<string, { n: number; ms: number; rows: number }> } : undefined;

  /** Messages waiting for `drain` (entries before qHead are done), and their size. */
  private queue: ({ msg: PgoutputMessage; size: number } | undefined)[] = [];
  private qHead = 0;
  private queuedBytes = 0;
  private draining = false;
  private paused = false;
  /** Tasks in `serial` not finished yet: while any, messages wait in the queue. */
  private pendingWork = 0;
  /** Data messages whose handling has started / finished (the plugin counts those received). */
  private begun = 0;
  private handled = 0;
  private transactions = 0;
  private changes = 0;
  private lastSyncAt = Date.now();

  private chain: Promise<unknown> = Promise.resolve();
  private stopping = false;
  private failure: Error | undefined;
  private stopPromise: Promise<void> | undefined;
  private subscribeDone: Promise<void> = Promise.resolve();
  private started = false;
  private replicationDown = false;
  private timer: NodeJS.Timeout | undefined;
  private statusTimer: NodeJS.Timeout | undefined;
  private readonly earlyTimers: NodeJS.Timeout[] = [];
  private ticking = false;
  private settle!: { resolve: (r: ApplyResult) => void; reject: (e: Error) => void };
  private readonly onAbort = (): void => void this.stop();

  constructor(
    private readonly opts: ApplyOptions,
    private readonly target: Client,
    private monitor: Client | undefined,
    applied: bigint,
    fenceToken: string | undefined,
    private readonly statusEveryMs: number,
    calledAt = Date.now(),
  ) {
    if (this.stats) {
      this.stats.setupMs = this.stats.start - calledAt;
      // Time with a statement sent and not yet answered (as seen from here).
      const st = this.stats;
      const query = target.query.bind(target) as (...a: unknown[]) => unknown;
      let out = 0;
      let since = 0;
      const done = (): void => {
        if (--out === 0) st.targetBusyMs += performance.now() - since;
      };
      (target as unknown as { query: (...a: unknown[]) => unknown }).query = (...a: unknown[]) => {
        if (out++ === 0) since = performance.now();
        const r = query(...a);
        if (r instanceof Promise) r.then(done, done);
        else finished(r as NodeJS.WritableStream).then(done, done);
        return r;
      };
    }
    this.interval = Math.max(50, opts.progressIntervalMs ?? 2000);
    this.maxBatchRows = Math.max(1, opts.maxBatchRows ?? 1000);
    this.maxGroupChanges = Math.max(1, opts.maxGroupChanges ?? 10_000);
    this.maxGroupMs = Math.max(0, opts.maxGroupMs ?? 100);
    this.groupIdleMs = Math.max(0, opts.groupIdleMs ?? 5);
    for (const t of opts.tables) this.tableMap.set(keyOf(t.source), t.target);
    this.fenceMarkerKey = keyOf(fenceMarkerTable(opts.publication));
    this.committed = applied;
    this.durable = applied;
    this.processed = applied;
    this.lastEnd = applied;
    this.fenceToken = fenceToken;
    this.spool = new Spool(opts.spoolDir);
    this.plugin = new TextPgoutputPlugin(
      {
        publication: opts.publication,
        spool: this.spool,
        largeChangeBytes: opts.largeChangeBytes ?? LARGE_CHANGE,
        largeValueBytes: opts.largeValueBytes ?? LARGE_VALUE,
      },
      { data: (lsn, msg, size) => this.onData(lsn, msg, size), keepalive: (walEnd, reply) => this.onHeartbeat(walEnd, reply) },
    );
    this.service = new LogicalReplicationService(replicationConfig(opts.source, opts.slot), {
      acknowledge: { auto: false, timeoutSeconds: 0 },
      flowControl: { enabled: false },
    });
  }

  run(): Promise<ApplyResult> {
    const done = new Promise<ApplyResult>((resolve, reject) => {
      this.settle = { resolve, reject };
    });
    this.target.on('error', (e: Error) => this.fail(new ApplyError(`lost the target connection: ${safeDbMessage(e)}`)));
    this.service.on('error', (e: Error) => {
      this.replicationDown = true;
      this.fail(new ApplyError(`replication connection to the source failed: ${safeDbMessage(e)}`));
    });
    this.service.on('start', () => {
      this.started = true;
      this.ack();
      // The first reports come early, not a whole progress interval in: an automatic cutover waits
      // for a report from this run of the apply, and a slot already caught up should say so at once.
      for (const ms of EARLY_REPORTS_MS) if (ms < this.interval) this.earlyTimers.push(setTimeout(() => void this.tick(), ms));
    });
    this.timer = setInterval(() => void this.tick(), this.interval);
    // Standby status on its own clock, well inside wal_sender_timeout whatever the progress interval:
    // while a long statement keeps the stream paused, keepalive requests are not even read.
    this.statusTimer = setInterval(() => {
      if (!this.stopping) this.ack();
    }, this.statusEveryMs);
    this.opts.signal.addEventListener('abort', this.onAbort);
    if (this.opts.signal.aborted) void this.stop();
    else {
      // The target tables' descriptions, read once for all while the stream starts (instead of one
      // catalog query per table as its first change arrives); a failure here is met again per table.
      this.prefetched = readTargetTables(this.target, [...this.tableMap.values()]).catch(() => undefined);
      this.subscribe(Date.now() + (this.opts.slotWaitMs ?? 30_000));
    }
    return done;
  }

  private subscribe(deadline: number): void {
    const p = this.service.subscribe(this.plugin, this.opts.slot, bigIntToLsn(this.committed));
    this.subscribeDone = p.then(
      () => {
        this.replicationDown = true;
        if (!this.stopping) this.fail(new ApplyError('the source ended the replication stream'));
      },
      (e: unknown) => {
        this.replicationDown = true;
        if (this.stopping) return;
        // The previous walsender may still hold the slot for a moment after its client went away.
        if (sqlState(e) === '55006' && !this.started && Date.now() < deadline) {
          this.replicationDown = false;
          setTimeout(() => {
            if (!this.stopping) this.subscribe(deadline);
          }, 250);
          return;
        }
        this.fail(new ApplyError(`replication from slot ${this.opts.slot} failed: ${safeDbMessage(e)}`, { code: sqlState(e) }));
      },
    );
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
    if (this.stats && !this.stats.firstData) this.stats.firstData = Date.now();
    if (this.stopping) {
      this.handled++;
      return;
    }
    // Data LSNs only grow: kept as a number, converted when reported.
    this.receivedData = lsn;
    if (msg.tag === 'begin') this.txnBytesSinceGc = 0;
    else if ((this.txnBytesSinceGc += size) >= (this.opts.gcEveryTxnBytes ?? GC_EVERY_TXN_BYTES) && this.opts.gcEveryTxnBytes !== 0) {
      this.txnBytesSinceGc = 0;
      collectGarbage();
      if (this.stats) this.stats.gcs++;
    }
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
        if (this.paused && this.queue.length - this.qHead <= MAX_QUEUED / 2 && this.queuedBytes <= MAX_QUEUED_BYTES / 2) this.pauseStream(false);
      }
    } finally {
      this.queue = [];
      this.qHead = 0;
      this.queuedBytes = 0;
      this.draining = false;
      if (this.paused) this.pauseStream(false);
    }
  }

  /** Backpressure: the walsender waits (its socket buffer full) while we catch up. */
  private pauseStream(pause: boolean): void {
    this.paused = pause;
    if (this.stats) {
      if (pause) this.stats.pausedAt = performance.now();
      else if (this.stats.pausedAt) {
        this.stats.pausedMs += performance.now() - this.stats.pausedAt;
        this.stats.pausedAt = 0;
      }
    }
    const stream = (this.service as unknown as { _connection?: { stream?: { pause?: () => void; resume?: () => void } } })._connection?.stream;
    if (pause) stream?.pause?.();
    else stream?.resume?.();
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
  private followUp: (() => Promise<void>) | undefined;

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
        if (msg.finalLsn >= this.lastEnd && this.groupTxns > 0 && this.groupAged()) return false;
        this.begin(msg.finalLsn);
        return true;
      case 'commit':
        if (!this.inSourceTxn) return false;
        if (this.skipping ? msg.endLsn > this.lastEnd : this.commitDue()) return false;
        if (!this.skipping) this.lastCommitTimeMs = Number(msg.commitTime / 1000n) + 946_684_800_000;
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
      case 'delete': {
        if (this.noteFenceMarker(msg)) return true;
        if (msg.spooled !== undefined) return false;
        const m = this.changeTarget(msg.relationOid, msg.tag.toUpperCase());
        if (!m) return true;
        const c = this.changeOf(msg, m);
        if (this.foldable(c)) {
          this.account(c);
          if (!this.fold(c)) this.after(() => this.change(c));
          else if (this.foldDue()) this.after(() => this.afterFold());
          return true;
        }
        if (msg.tag === 'insert' && !this.setBased(c)) {
          // An INSERT written in order (a table without a key, or a strict transaction): added to its
          // table's batch, written when the batch is full or anything else touches the table.
          this.account(c);
          const b = this.addInsert(msg.relationOid, m, msg.new);
          if (this.isBatchFull(b) || this.retentionDue()) this.after(() => this.afterInsert(msg.relationOid));
          return true;
        }
        return false;
      }
      default:
        return false;
    }
  }

  /** Nothing received waits to be handled (the current message aside) and no group is open. */
  private idle(): boolean {
    return !this.inSourceTxn && !this.inTxn && this.groupTxns === 0 && this.plugin.parsed === this.handled;
  }

  private onHeartbeat(lsn: number, shouldRespond: boolean): void {
    try {
      const walEnd = BigInt(lsn);
      if (walEnd > this.received) this.received = walEnd;
      if (this.stopping) return;
      // Everything before this keepalive has been received; if all of it is applied and no transaction
      // is open, no transaction ending before walEnd is still to come: the source is idle up to there.
      if (this.idle()) {
        if (walEnd > this.processed) this.processed = walEnd;
        if (walEnd > this.idleCandidate) this.idleCandidate = walEnd;
      }
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
        if (msg.finalLsn >= this.lastEnd && this.groupTxns > 0 && this.groupAged()) await this.commitGroup(false);
        this.begin(msg.finalLsn);
        return;
      case 'commit':
        // pgoutput timestamps are microseconds since 2000-01-01 UTC.
        if (!this.skipping) this.lastCommitTimeMs = Number(msg.commitTime / 1000n) + 946_684_800_000;
        return this.commit(msg.endLsn);
      case 'relation':
        // A table (re)described: what is pending for it was decoded under its previous description.
        await this.flushPending();
        try {
          return await this.onRelation(msg);
        } catch (err) {
          // Stopping for good (DDL on the source): the whole source transactions grouped before this
          // one are still applied, as they would be one target transaction each.
          if (err instanceof ApplyError && err.permanent && this.inSourceTxn && !this.skipping && this.txnChanges === 0 && this.groupTxns > 0) {
            this.inSourceTxn = false;
            await this.commitGroup(true).catch(() => undefined);
          }
          throw err;
        }
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
        return this.change(c);
      }
      case 'truncate': {
        if (!this.inSourceTxn) throw new ApplyError('replication stream: TRUNCATE outside a transaction');
        if (this.skipping) return;
        const oids = msg.relationOids.filter((oid) => {
          const st = this.relations.get(oid);
          return !st?.fenceMarker && !(st?.mapped && this.copiedFrom.size && this.inCopy(st.mapped));
        });
        if (!oids.length) return;
        if (this.leafRoots.size) this.checkLeafTruncate(oids);
        const c: Change = { msg: { ...msg, relationOids: oids }, mapped: oids.map((oid) => this.mappedOrThrow(oid, 'TRUNCATE')) };
        // Emptied as on the source: what follows is checked again.
        for (const m of c.mapped) this.rewritten.delete(qname(m.rel.target));
        this.account(c);
        return this.change(c);
      }
    }
  }

  private begin(finalLsn: bigint): void {
    this.inSourceTxn = true;
    this.txnFinal = finalLsn;
    // A commit record that starts before the applied position ends at or before it: done already.
    this.skipping = finalLsn < this.lastEnd;
    this.txnFence = undefined;
    this.txnChanges = 0;
    if (!this.skipping && this.groupTxns === 0) this.groupStart = Date.now();
  }

  private noteMessage(msg: Extract<PgoutputMessage, { tag: 'type' | 'origin' | 'message' }>): void {
    if (msg.tag === 'type') {
      // Sent before a relation that uses a non-built-in type: its name, to compare with the target's.
      this.sourceTypes.set(msg.typeOid, { schema: msg.schema, name: msg.name });
    } else if (msg.tag === 'message') {
      if (msg.transactional && msg.prefix === FENCE_MESSAGE_PREFIX && this.inSourceTxn && !this.skipping) {
        this.txnFence = msg.content.toString('utf8');
      }
    }
  }

  /** Sources before 13 publish leaf partitions: each is written through its root's target table. */
  routeLeaves(routes: readonly LeafRoute[]): void {
    for (const r of routes) {
      this.tableMap.set(keyOf(r.source), r.target);
      this.leafRoots.set(keyOf(r.source), { root: keyOf(r.root), leaves: r.leaves });
    }
  }

  /**
   * TRUNCATE of a whole partitioned table reaches us as one TRUNCATE of all its leaves, and truncates
   * the root's target. One of a single leaf would empty every partition on the target: refused.
   */
  private checkLeafTruncate(oids: readonly number[]): void {
    const seen = new Map<string, { leaves: number; count: number; names: string[] }>();
    for (const oid of oids) {
      const source = this.relations.get(oid)?.source;
      const leaf = source && this.leafRoots.get(keyOf(source));
      if (!source || !leaf) continue;
      const e = seen.get(leaf.root) ?? { leaves: leaf.leaves, count: 0, names: [] };
      e.count++;
      e.names.push(displayName(source));
      seen.set(leaf.root, e);
    }
    for (const e of seen.values()) {
      if (e.count < e.leaves) {
        throw new ApplyError(
          `TRUNCATE of partition(s) ${e.names.join(', ')} alone on the source: a PostgreSQL 12 source publishes partitions one by one and pg-dts writes them through their ` +
            'partitioned table on the target, so it cannot empty a single partition there; restart the migration (or truncate the same partition on the target and migrate offline)',
          { table: e.names.join(', '), operation: 'TRUNCATE', permanent: true },
        );
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
    const m = this.mappedOrThrow(oid, op);
    return this.copiedFrom.size && this.inCopy(m) ? undefined : m;
  }

  /** Tables copied in a later snapshot (a resumed copy) and where it starts; see `inCopy`. */
  copiedSince(positions: ReadonlyMap<string, bigint>): void {
    for (const [k, lsn] of positions) {
      if (lsn <= this.committed) continue;
      this.copiedFrom.set(k, lsn);
      if (lsn > this.copiedMax) this.copiedMax = lsn;
    }
  }

  /**
   * The current transaction is already in the table's copied rows: its commit starts before the
   * position of the snapshot they were read in (the slot that exported it would not have sent it).
   */
  private inCopy(m: MappedRelation): boolean {
    if (this.txnFinal >= this.copiedMax) {
      this.copiedFrom.clear();
      return false;
    }
    const from = this.copiedFrom.get(qname(m.rel.target));
    if (from === undefined || this.txnFinal >= from) return false;
    this.beforeCopySkipped++;
    return true;
  }

  /** Tables whose copy read them truncated (or rewritten) after the snapshot, and a position past that; see `lenient`. */
  rewrittenBefore(positions: ReadonlyMap<string, bigint>): void {
    for (const [k, lsn] of positions) if (lsn > this.committed) this.rewritten.set(k, lsn);
  }

  /**
   * The table's copy read it emptied by a TRUNCATE committed after the snapshot (TRUNCATE is not
   * MVCC-safe), and this change comes before that TRUNCATE: an UPDATE or DELETE may find no row, as
   * the row was in the snapshot but not in the copy. Letting it through is safe: the TRUNCATE, still
   * to come, empties the table on both sides. Ends at the table's TRUNCATE, or at the position the copy
   * read it at (a rewrite that is no TRUNCATE, VACUUM FULL's new file: none comes).
   */
  private lenient(m: MappedRelation): boolean {
    const k = qname(m.rel.target);
    const until = this.rewritten.get(k);
    if (until === undefined) return false;
    if (this.txnFinal < until) return true;
    this.rewritten.delete(k);
    return false;
  }

  private changeOf(msg: ChangeMessage, m: MappedRelation): Change {
    // Every change of a lenient table goes in order, one at a time (an INSERT folded ahead of the
    // UPDATE of its row would let that UPDATE find nothing).
    return this.rewritten.size && this.lenient(m) ? { msg, mapped: m, lenient: true } : { msg, mapped: m };
  }

  private mappedOrThrow(oid: number, op: string): MappedRelation {
    const st = this.relations.get(oid);
    if (!st) throw new ApplyError(`replication stream: ${op} for relation OID ${oid} before its description`);
    if (!st.mapped) {
      throw new ApplyError(
        `${op} on source table ${displayName(st.source)}, which is not one of the migrated tables (is it in publication ${this.opts.publication}?)`,
        { table: displayName(st.source), operation: op, permanent: true },
      );
    }
    return st.mapped;
  }

  private build<T>(m: MappedRelation, op: string, fn: () => T): T {
    try {
      return fn();
    } catch (err) {
      throw new ApplyError(`${op} on ${m.display}: ${(err as Error).message}`, { table: m.display, operation: op, permanent: true });
    }
  }

  private async ensureTxn(): Promise<void> {
    if (this.inTxn) return;
    await this.target.query('BEGIN');
    this.inTxn = true;
  }

  /** Counts a change into the open group (and keeps it for a replay). */
  private account(c: Change): void {
    this.txnChanges++;
    const bytes = changeBytes(c.msg);
    this.groupChanges += c.msg.tag === 'truncate' ? c.msg.relationOids.length : 1;
    this.groupBytes += bytes;
    if (this.retained) {
      this.retained.push(c);
      this.retainedBytes += bytes;
    }
  }

  /** The change goes to a table written set-based just now (past a replay or the retention bound, only order-free ones). */
  private setBased(c: Change): c is { msg: ChangeMessage; mapped: MappedRelation } {
    if (c.msg.tag === 'truncate' || c.msg.spooled !== undefined || ('lenient' in c && c.lenient)) return false;
    const keyed = (c.mapped as MappedRelation).keyed;
    return keyed !== undefined && (!this.strictTxn || keyed.orderFree);
  }

  private foldable(c: Change): boolean {
    return this.setBased(c) && !this.batches.has((c.msg as ChangeMessage).relationOid);
  }

  /** Folds the change into its table's pending net changes; false when it cannot be (nothing changed). */
  private fold(c: Change): boolean {
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

  private foldDue(): boolean {
    return (
      this.pendingKeyed >= MAX_PENDING_KEYED ||
      this.keyedBytes() >= MAX_PENDING_BYTES ||
      this.retentionDue()
    );
  }

  private retentionDue(): boolean {
    return this.retained !== undefined && (this.retained.length >= RETAIN_MAX_CHANGES || this.retainedBytes >= RETAIN_MAX_BYTES);
  }

  /** After an INSERT added to its table's batch (handleSync): the batch written if full, retention checked. */
  private async afterInsert(oid: number): Promise<void> {
    const b = this.batches.get(oid);
    if (b && this.isBatchFull(b)) await this.flushBatch(oid);
    await this.checkRetention();
  }

  private async afterFold(): Promise<void> {
    if (this.pendingKeyed >= MAX_PENDING_KEYED || this.keyedBytes() >= MAX_PENDING_BYTES) {
      if (await this.flushKeyed()) return;
    }
    await this.checkRetention();
  }

  /**
   * One (counted) change of the open group. Keyed tables fold it into their pending net changes
   * (written in a few statements later); other tables, and changes that cannot be folded, go one at a
   * time in order.
   */
  private async change(c: Change): Promise<void> {
    if (c.msg.tag === 'truncate') {
      if (await this.flushKeyed()) return; // replayed, this change included
    } else if (c.msg.spooled !== undefined) {
      if (await this.flushKeyed(c.msg.relationOid)) return; // replayed, this change included
    } else if (this.setBased(c)) {
      const oid = c.msg.relationOid;
      if (this.batches.has(oid)) await this.flushBatch(oid); // keep this table's order
      if (this.fold(c)) return this.afterFold();
      // Cannot be folded (the target is expected to refuse it, or a value is missing): what is
      // pending for this table first, then this change on its own.
      if (await this.flushKeyed(oid)) return;
      await this.applyOne(c);
      await this.flushBatch(oid);
      return this.checkRetention();
    }
    await this.applyOne(c);
    await this.checkRetention();
  }

  private keyedBytes(): number {
    let n = 0;
    for (const kc of this.keyed.values()) n += kc.bytes;
    return n;
  }

  private async checkRetention(): Promise<void> {
    if (!this.retentionDue()) return;
    // Too much to keep for a replay: write what is pending while a replay is still possible, then go on
    // change by change until this target transaction commits.
    if (await this.flushKeyed()) return;
    this.retained = undefined;
    this.retainedBytes = 0;
    this.strictTxn = true;
  }

  /**
   * Writes the pending set-based changes (of one relation, or all). Returns true when that failed and
   * the group was rolled back and replayed change by change instead (the replay includes every change
   * received so far); throws when neither worked.
   */
  private async flushKeyed(only?: number): Promise<boolean> {
    if (this.pendingKeyed === 0) return false;
    const limits = { maxRows: this.maxBatchRows, maxBytes: MAX_BATCH_BYTES, bigValue: BIG_VALUE, copy: this.opts.copyInserts !== false };
    try {
      for (const [oid, kc] of this.keyed) {
        if (only !== undefined && oid !== only) continue;
        if (kc.size === 0) continue;
        for (const stmt of kc.drain(limits)) await this.execBatch(kc.k, stmt);
      }
    } catch (err) {
      return this.replay(err);
    }
    let n = 0;
    for (const kc of this.keyed.values()) n += kc.size;
    this.pendingKeyed = n;
    return false;
  }

  private statementName(text: string): string | undefined {
    let name = this.prepared.get(text);
    if (name === undefined && this.prepared.size < MAX_PREPARED) {
      name = `pgdts_apply_${this.prepared.size + 1}`;
      this.prepared.set(text, name);
    }
    return name;
  }

  private async execBatch(k: KeyedRelation, stmt: BatchStatement): Promise<void> {
    const display = displayName(k.rel.target);
    let n: number | null;
    try {
      await this.ensureTxn();
      const t0 = performance.now();
      n = await this.runBatch(stmt);
      if (this.stats) {
        this.stats.statements++;
        this.stats.dbMs += performance.now() - t0;
        const key = `${stmt.op} ${display} ${stmt.prepare}`;
        const e = (this.stats.by[key] ??= { n: 0, ms: 0, rows: 0 });
        e.n++;
        e.ms += performance.now() - t0;
        e.rows += stmt.expect;
      }
    } catch (err) {
      const into = stmt.op === 'INSERT' ? 'into' : 'on';
      throw new ApplyError(`${stmt.op} ${into} ${display} failed: ${safeDbMessage(err)}`, { table: display, operation: stmt.op, code: sqlState(err) });
    }
    if (n !== stmt.expect) {
      throw new ApplyError(`${stmt.op} on ${display} affected ${n ?? 0} rows instead of ${stmt.expect}`, { table: display, operation: stmt.op, permanent: true });
    }
  }

  /** Runs a set-based statement (or COPY) in the open transaction; the rows it wrote. */
  private async runBatch(stmt: BatchStatement): Promise<number | null> {
    if (stmt.copyRows) {
      const copy = this.target.query(copyFrom(stmt.text));
      await pipeline(Readable.from(copyChunks(stmt.copyRows)), copy);
      return copy.rowCount;
    }
    const name = stmt.prepare ? this.statementName(stmt.text) : undefined;
    return (await this.target.query(name ? { name, text: stmt.text, values: stmt.values } : { text: stmt.text, values: stmt.values })).rowCount;
  }

  /**
   * A set-based write failed: roll back the open target transaction and apply every change it held
   * again, one at a time in source order (which reports the failing change precisely if it fails again).
   */
  private async replay(err: unknown): Promise<true> {
    const code = err instanceof ApplyError ? err.code : sqlState(err);
    const changes = this.retained;
    const mismatch = err instanceof ApplyError && err.permanent;
    if (!changes || (!mismatch && connectionLevel(code))) throw err;
    if (this.stats) this.stats.replays++;
    try {
      this.opts.onReplay?.({ table: err instanceof ApplyError ? err.table : undefined, code, changes: changes.length });
    } catch {
      // diagnostics only
    }
    this.retained = undefined;
    this.retainedBytes = 0;
    this.strictTxn = true;
    this.keyed.clear();
    this.pendingKeyed = 0;
    this.batches.clear();
    if (this.inTxn) {
      this.inTxn = false;
      await this.target.query('ROLLBACK');
    }
    for (const c of changes) await this.applyOne(c);
    return true;
  }

  /** One change as its own statement (INSERTs batched per table), in source order. */
  private async applyOne(c: Change): Promise<void> {
    await this.ensureTxn();
    if (c.msg.tag === 'truncate') {
      await this.flushBatches();
      const ms = c.mapped as MappedRelation[];
      const stmt = truncateStatement(
        ms.map((m) => ({ target: m.rel.target, partitioned: m.rel.partitioned })),
        { restartIdentity: c.msg.restartIdentity },
      );
      try {
        await this.target.query(stmt);
      } catch (err) {
        const names = ms.map((m) => m.display).join(', ');
        throw new ApplyError(`TRUNCATE of ${names} failed: ${safeDbMessage(err)}`, { table: names, operation: 'TRUNCATE', code: sqlState(err) });
      }
      return;
    }
    const m = c.mapped as MappedRelation;
    const msg = c.msg;
    const lenient = 'lenient' in c && c.lenient === true;
    if (msg.spooled !== undefined) {
      await this.flushBatch(msg.relationOid);
      return this.applySpooled(m, msg, lenient);
    }
    if (msg.tag === 'insert') {
      const b = this.addInsert(msg.relationOid, m, msg.new);
      if (this.isBatchFull(b)) await this.flushBatch(msg.relationOid);
      return;
    }
    await this.flushBatch(msg.relationOid);
    if (msg.tag === 'update') {
      const plan = this.build(m, 'UPDATE', () => updateStatement(m.rel, { oldKey: msg.key, old: msg.old, new: msg.new }));
      if (plan) await this.execOne(m, 'UPDATE', plan, plan.fallback, lenient);
    } else {
      const stmt = this.build(m, 'DELETE', () => deleteStatement(m.rel, { oldKey: msg.key, old: msg.old }));
      await this.execOne(m, 'DELETE', stmt, undefined, lenient);
    }
  }

  /**
   * A change with spooled values (spool.ts): its values go from their files through COPY into a one-row
   * temporary table with the target columns' types, and the change's statement reads them from there,
   * so no value is ever held whole in this process.
   */
  private async applySpooled(m: MappedRelation, msg: ChangeMessage, lenient: boolean): Promise<void> {
    const op = msg.tag.toUpperCase();
    const stmts: SqlStatement[] = [];
    if (msg.tag === 'insert') stmts.push(this.build(m, op, () => insertStatement(m.rel, [msg.new])));
    else if (msg.tag === 'update') {
      const plan = this.build(m, op, () => updateStatement(m.rel, { oldKey: msg.key, old: msg.old, new: msg.new }));
      if (!plan) return;
      stmts.push(plan);
      if (plan.fallback) stmts.push(plan.fallback);
    } else stmts.push(this.build(m, op, () => deleteStatement(m.rel, { oldKey: msg.key, old: msg.old })));
    const spooled = new Map<string, { v: SpooledValue; expr: string }>();
    for (const st of stmts) {
      for (const v of st.values) {
        if (v === null || !isSpooled(v) || spooled.has(v)) continue;
        const sv = this.spool.get(v);
        if (!sv) throw new ApplyError(`${op} on ${m.display}: a spooled value is missing`, { table: m.display, operation: op });
        spooled.set(v, { v: sv, expr: `(SELECT v${spooled.size + 1} FROM pg_temp.pgdts_spooled)` });
      }
    }
    const inline = (v: string | null) => (v === null ? undefined : spooled.get(v)?.expr);
    const [first, fallback] = stmts.map((st) => inlineParams(st.text, st.values, inline));
    const cols = [...spooled.values()].map(({ v }, i) => `${ident(m.rel.columns[v.column]!)} AS v${i + 1}`);
    try {
      await this.ensureTxn();
      await this.target.query(
        // Dropped below, or rolled back with the transaction on any failure.
        `CREATE TEMP TABLE pgdts_spooled AS SELECT ${cols.join(', ')} FROM ${qname(m.rel.target)} WITH NO DATA`,
      );
      await pipeline(Readable.from(copyRow([...spooled.values()].map((s) => s.v))), this.target.query(copyFrom('COPY pg_temp.pgdts_spooled FROM STDIN')));
    } catch (err) {
      throw new ApplyError(`${op} on ${m.display} failed writing a large value: ${safeDbMessage(err)}`, { table: m.display, operation: op, code: sqlState(err) });
    }
    if (msg.tag === 'insert') {
      try {
        await this.target.query(first!);
      } catch (err) {
        throw new ApplyError(`INSERT into ${m.display} failed: ${safeDbMessage(err)}`, { table: m.display, operation: op, code: sqlState(err) });
      }
    } else await this.execOne(m, op, first!, fallback, lenient);
    await this.target.query('DROP TABLE pg_temp.pgdts_spooled');
  }

  /** Runs a statement that must affect exactly one row (`fallback` when the first affects none; `lenient`: or none). */
  private async execOne(m: MappedRelation, op: string, stmt: SqlStatement, fallback?: SqlStatement, lenient = false): Promise<void> {
    let n: number | null;
    try {
      n = (await this.target.query(stmt)).rowCount;
      if (n === 0 && fallback) n = (await this.target.query(fallback)).rowCount;
    } catch (err) {
      throw new ApplyError(`${op} on ${m.display} failed: ${safeDbMessage(err)}`, { table: m.display, operation: op, code: sqlState(err) });
    }
    if (n === 0 && lenient) {
      this.missingBeforeTruncate++;
      return;
    }
    if (n !== 1) {
      throw new ApplyError(
        `${op} on ${m.display} affected ${n ?? 0} rows instead of 1: the target no longer matches the source (was it written to outside the migration?)`,
        { table: m.display, operation: op, permanent: true },
      );
    }
  }

  private addInsert(oid: number, m: MappedRelation, row: Tuple): InsertBatch {
    let b = this.batches.get(oid);
    if (!b) this.batches.set(oid, (b = { oid, mapped: m, rows: [], params: 0, bytes: 0 }));
    b.rows.push(row);
    b.params += row.length;
    for (const v of row) if (typeof v === 'string') b.bytes += v.length;
    return b;
  }

  private isBatchFull(b: InsertBatch): boolean {
    return b.rows.length >= this.maxBatchRows || b.params + b.mapped.rel.columns.length > MAX_BATCH_PARAMS || b.bytes >= MAX_BATCH_BYTES;
  }

  /** Consecutive INSERTs into one table go as one statement; any other change to it writes them first. */
  private async flushBatch(oid: number): Promise<void> {
    const b = this.batches.get(oid);
    if (!b) return;
    this.batches.delete(oid);
    const castTypes = b.mapped.castTypes;
    // One prepared INSERT ... SELECT FROM unnest() whatever the number of rows; plain parameters when a
    // value is large (no array literal copy of it).
    // Or one COPY, large values included.
    const copy = castTypes && this.opts.setBased !== false && this.opts.copyInserts !== false;
    const stmt = copy
      ? copyInsertSql(b.mapped, b.rows)
      : castTypes && this.opts.setBased !== false && !b.rows.some((r) => hasBig(r, BIG_VALUE))
        ? insertSql({ rel: b.mapped.rel, castTypes }, b.rows)
        : undefined;
    const plain = stmt ? undefined : this.build(b.mapped, 'INSERT', () => insertStatement(b.mapped.rel, b.rows));
    try {
      await this.ensureTxn();
      const t0 = performance.now();
      if (stmt) await this.runBatch(stmt);
      else await this.target.query(plain!);
      if (this.stats) {
        this.stats.statements++;
        this.stats.dbMs += performance.now() - t0;
        const e = (this.stats.by[`strict INSERT ${b.mapped.display}`] ??= { n: 0, ms: 0, rows: 0 });
        e.n++;
        e.ms += performance.now() - t0;
        e.rows += b.rows.length;
      }
    } catch (err) {
      throw new ApplyError(`INSERT into ${b.mapped.display} failed: ${safeDbMessage(err)}`, { table: b.mapped.display, operation: 'INSERT', code: sqlState(err) });
    }
  }

  private async flushBatches(): Promise<void> {
    for (const oid of [...this.batches.keys()]) await this.flushBatch(oid);
  }

  /** Everything pending written into the open target transaction. */
  private async flushPending(): Promise<void> {
    await this.flushKeyed();
    await this.flushBatches();
  }

  /** The open group is old enough to be committed. */
  private groupAged(): boolean {
    return Date.now() - this.groupStart >= this.maxGroupMs;
  }

  /** The open group is to be committed at this source commit. */
  private commitDue(): boolean {
    return (
      this.txnFence !== undefined ||
      this.groupFence !== undefined ||
      this.groupChanges >= this.maxGroupChanges ||
      this.groupBytes >= MAX_GROUP_BYTES ||
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
    this.groupTxns++;
    if (this.txnFence !== undefined) this.groupFence = this.txnFence;
    this.txnFence = undefined;
  }

  /**
   * The group stays open. More of the stream is already here: its next commit decides. Otherwise the
   * stream is drained for now: give the next chunk a moment to arrive before committing.
   */
  private awaitMore(): void {
    if (this.groupTxns === 0 || this.plugin.parsed > this.begun) return;
    this.armCommitTimer();
  }

  private armCommitTimer(): void {
    if (this.commitTimer) return;
    this.commitTimer = setTimeout(() => {
      this.commitTimer = undefined;
      if (this.stopping) return;
      this.enqueue(async () => {
        if (this.stopping || this.inSourceTxn || this.groupTxns === 0) return;
        if (this.plugin.parsed > this.begun && !this.groupAged()) return; // more came: its commit decides
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
    if (this.commitTimer) {
      clearTimeout(this.commitTimer);
      this.commitTimer = undefined;
    }
    if (this.inSourceTxn || this.groupTxns === 0) return;
    // Captured now: transactions received while this group is written go into the next one.
    const endLsn = this.lastEnd;
    const next = freshGroup();
    overlap &&= this.opts.foldAhead !== false;
    if (overlap) this.next = next;
    this.nextBlocked = false;
    this.nextFollowUps = [];
    try {
      const writing = this.writeGroup(forceSync, endLsn);
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
    // The next group (what arrived meanwhile) becomes the open one; the committed one's state is dropped.
    this.swapGroup(next);
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
  private async foldAhead(next: GroupState): Promise<void> {
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
      if (this.paused && this.queue.length - this.qHead <= MAX_QUEUED / 2 && this.queuedBytes <= MAX_QUEUED_BYTES / 2) this.pauseStream(false);
      await new Promise<void>((resolve) => setImmediate(resolve));
    }
  }

  /** handleSync on the next group: swapped in for the call. */
  private handleAhead(next: GroupState, msg: PgoutputMessage): boolean {
    this.swapGroup(next);
    this.overlapping = true;
    try {
      return this.handleSync(msg);
    } finally {
      this.overlapping = false;
      this.swapGroup(next);
    }
  }

  /** Exchanges the open group's state with `o`'s. */
  private swapGroup(o: GroupState): void {
    const keyed = this.keyed;
    this.keyed = o.keyed;
    o.keyed = keyed;
    const pendingKeyed = this.pendingKeyed;
    this.pendingKeyed = o.pendingKeyed;
    o.pendingKeyed = pendingKeyed;
    const batches = this.batches;
    this.batches = o.batches;
    o.batches = batches;
    const retained = this.retained;
    this.retained = o.retained;
    o.retained = retained;
    const retainedBytes = this.retainedBytes;
    this.retainedBytes = o.retainedBytes;
    o.retainedBytes = retainedBytes;
    const strictTxn = this.strictTxn;
    this.strictTxn = o.strictTxn;
    o.strictTxn = strictTxn;
    const groupTxns = this.groupTxns;
    this.groupTxns = o.groupTxns;
    o.groupTxns = groupTxns;
    const groupChanges = this.groupChanges;
    this.groupChanges = o.groupChanges;
    o.groupChanges = groupChanges;
    const groupBytes = this.groupBytes;
    this.groupBytes = o.groupBytes;
    o.groupBytes = groupBytes;
    const groupStart = this.groupStart;
    this.groupStart = o.groupStart;
    o.groupStart = groupStart;
    const groupFence = this.groupFence;
    this.groupFence = o.groupFence;
    o.groupFence = groupFence;
  }

  /** Writes the open group's pending changes and commits it with its progress row. */
  private async writeGroup(forceSync: boolean, endLsn: bigint): Promise<void> {
    await this.flushPending();
    const fence = this.groupFence;
    const sync = forceSync || fence !== undefined || Date.now() - this.lastSyncAt >= this.interval;
    const sql = `${this.inTxn ? '' : 'BEGIN; '}${sync ? 'SET LOCAL synchronous_commit = on; ' : ''}${progressUpsert(this.opts.slot, endLsn, fence)}; COMMIT`;
    try {
      this.inTxn = true;
      const t0 = performance.now();
      await this.target.query(sql);
      if (this.stats) {
        this.stats.firstCommit ||= Date.now();
        this.stats.groups++;
        this.stats.commitMs += performance.now() - t0;
      }
    } catch (err) {
      throw new ApplyError(`committing the transactions ending at ${bigIntToLsn(endLsn)} on the target failed: ${safeDbMessage(err)}`, { operation: 'COMMIT', code: sqlState(err) });
    }
    this.inTxn = false;
    this.committed = endLsn;
    if (endLsn > this.processed) this.processed = endLsn;
    if (this.spoolSeen > 0) this.spool.release(this.spoolSeen);
    this.transactions += this.groupTxns;
    this.changes += this.groupChanges;
    if (sync) {
      this.lastSyncAt = Date.now();
      this.durable = endLsn;
      this.ack();
    }
    if (fence !== undefined) {
      this.fenceToken = fence;
      this.emitProgress();
    }
  }

  private async onRelation(msg: Extract<PgoutputMessage, { tag: 'relation' }>): Promise<void> {
    const source = { schema: msg.schema, name: msg.name };
    const target = this.tableMap.get(keyOf(source));
    if (!target) {
      this.relations.set(msg.relationOid, keyOf(source) === this.fenceMarkerKey ? { source, fenceMarker: true } : { source });
      return;
    }
    const display = displayName(target);
    const ahead = await this.prefetched;
    let row = ahead?.get(keyOf(target));
    if (row) ahead!.delete(keyOf(target)); // used once: a table described again is read again
    else row = (await readTargetTables(this.target, [target])).get(keyOf(target));
    if (!row) throw new ApplyError(`target table ${display} (for source ${displayName(source)}) does not exist`, { table: display, permanent: true });
    const targetCols = new Map(row.columns.filter((c) => !c.generated).map((c) => [c.name, c]));
    const onlySource = msg.columns.filter((c) => !targetCols.has(c.name)).map((c) => c.name);
    const sourceNames = new Set(msg.columns.map((c) => c.name));
    const onlyTarget = [...targetCols.keys()].filter((n) => !sourceNames.has(n));
    const typeDiffers = msg.columns
      .filter((c) => {
        const t = targetCols.get(c.name);
        if (!t) return false;
        // Built-in types have the same OID everywhere; user types (enums, domains, extension types)
        // differ by server and are compared by name (a type may live in a mapped schema). pgoutput's
        // Type message names a domain's base type (getBaseType), so the target's base type is compared.
        const sourceBuiltIn = c.typeOid < FIRST_NORMAL_OBJECT_ID;
        if (sourceBuiltIn !== t.typid < FIRST_NORMAL_OBJECT_ID) return true;
        if (sourceBuiltIn) return c.typeOid !== t.typid || c.typeMod !== t.typmod;
        const named = this.sourceTypes.get(c.typeOid);
        return named !== undefined && named.name !== t.typname;
      })
      .map((c) => c.name);
    if (onlySource.length || onlyTarget.length || typeDiffers.length) {
      const parts = [
        onlySource.length ? `only on the source: ${onlySource.join(', ')}` : '',
        onlyTarget.length ? `only on the target: ${onlyTarget.join(', ')}` : '',
        typeDiffers.length ? `different type: ${typeDiffers.join(', ')}` : '',
      ].filter(Boolean);
      // Final: no retry brings the two back together. pg-dts does not replicate DDL.
      throw new ApplyError(
        `DDL on the source during the migration: source table ${displayName(source)} no longer matches target table ${display} (${parts.join('; ')}); ` +
          `pg-dts does not replicate schema changes, so the apply stops here: restart the migration once the source schema is settled`,
        { table: displayName(source), operation: 'RELATION', permanent: true },
      );
    }
    const rel: ApplyRelation = {
      target,
      columns: msg.columns.map((c) => c.name),
      keyColumns: msg.columns.filter((c) => (c.flags & 1) !== 0).map((c) => c.name),
      replicaIdentity: msg.replicaIdentity,
      targetPrimaryKey: row.pk ?? undefined,
      partitioned: row.relkind === 'p',
      identityAlways: msg.columns.filter((c) => targetCols.get(c.name)?.identity === 'a').map((c) => c.name),
      // Written by PostgreSQL's format_type, which quotes what needs quoting: safe to splice as a type.
      columnTypes: msg.columns.map((c) => targetCols.get(c.name)!.type),
    };
    // A cast from text to "char" keeps the first byte of the text, not what charin reads ("\351" is
    // one byte): tables with a "char" column take the per-row statements, whose parameters go through
    // the type's input function.
    const hasChar = msg.columns.some((c) => targetCols.get(c.name)!.typid === CHAR_OID);
    const keyed =
      this.opts.setBased === false || hasChar
        ? undefined
        : keyedRelation(
            rel,
            msg.columns.map((c) => targetCols.get(c.name)!.cast),
            msg.columns.map((c) => {
              const coll = targetCols.get(c.name)!.coll;
              return coll ? ` COLLATE ${coll}` : '';
            }),
            row.uniques,
          );
    const castTypes = hasChar ? undefined : msg.columns.map((c) => targetCols.get(c.name)!.cast);
    this.relations.set(msg.relationOid, { source, mapped: keyed ? { rel, display, keyed, castTypes } : { rel, display, castTypes } });
  }

  /**
   * Makes everything committed durable with one synchronous commit (which flushes the target's WAL and
   * every async commit before it) and records an idle keepalive position. Only between transactions.
   */
  private async flushDurable(): Promise<void> {
    if (this.inTxn || this.inSourceTxn || this.groupTxns > 0) return;
    const to = maxBig(this.committed, this.idleCandidate);
    if (to <= this.durable) return;
    try {
      await this.target.query(`BEGIN; SET LOCAL synchronous_commit = on; ${progressUpsert(this.opts.slot, to, undefined)}; COMMIT`);
    } catch (err) {
      await this.target.query('ROLLBACK').catch(() => undefined);
      throw new ApplyError(`recording the applied position on the target failed: ${safeDbMessage(err)}`, { operation: 'COMMIT', code: sqlState(err) });
    }
    this.committed = maxBig(this.committed, to);
    this.processed = maxBig(this.processed, to);
    this.durable = to;
    this.lastSyncAt = Date.now();
    this.ack();
  }

  /** Confirms the durable position to the slot (also our standby status update / keepalive answer). */
  private ack(): void {
    if (this.durable <= 0n) return;
    // pg-logical-replication 2.5.0 sends lsn + 1. The commit end LSN is already "last byte + 1"; one
    // byte more would make the server skip a transaction whose commit record starts exactly there.
    this.service.acknowledge(bigIntToLsn(this.durable - 1n)).catch(() => undefined);
  }

  private async tick(): Promise<void> {
    if (this.stopping || this.ticking) return;
    this.ticking = true;
    try {
      if (!this.inSourceTxn && this.groupTxns > 0 && this.groupAged()) {
        // A group left open (only non-transactional messages came after it): commit it.
        this.enqueue(() => this.commitGroup(false, true));
      } else if (!this.inTxn && !this.inSourceTxn && this.groupTxns === 0 && maxBig(this.committed, this.idleCandidate) > this.durable) {
        this.enqueue(() => this.flushDurable());
      }
      await this.refreshSourceLsn();
      if (!this.stopping) this.emitProgress();
    } finally {
      this.ticking = false;
    }
  }

  /** Commit time of the last source transaction seen, for the lag in seconds. */
  private lastCommitTimeMs: number | undefined;

  async refreshSourceLsn(): Promise<void> {
    try {
      this.monitor ??= await connect(this.opts.source, { applicationName: 'pg-dts apply monitor', statementTimeoutMs: 10_000 });
      const r = await this.monitor.query<{ lsn: string }>('SELECT pg_current_wal_lsn()::text AS lsn');
      const l = r.rows[0]?.lsn;
      if (l) this.sourceLsn = lsnToBigInt(l);
    } catch {
      // Lag is informative only: reconnect at the next tick. Replication itself reports real failures.
      const m = this.monitor;
      this.monitor = undefined;
      await m?.end().catch(() => undefined);
    }
  }

  private receivedLsn(): bigint {
    if (this.receivedData !== undefined) {
      const l = BigInt(this.receivedData);
      this.receivedData = undefined;
      if (l > this.received) this.received = l;
    }
    return this.received;
  }

  private progress(): ApplyProgress {
    const lag = this.sourceLsn > this.processed ? this.sourceLsn - this.processed : 0n;
    const p: ApplyProgress = {
      appliedLsn: bigIntToLsn(this.committed),
      confirmedLsn: bigIntToLsn(this.durable),
      receivedLsn: bigIntToLsn(this.receivedLsn()),
      sourceLsn: bigIntToLsn(this.sourceLsn),
      lagBytes: Number(lag),
      lagSeconds: lag === 0n || this.lastCommitTimeMs === undefined ? 0 : Math.max(0, (Date.now() - this.lastCommitTimeMs) / 1000),
      transactions: this.transactions,
      changes: this.changes,
    };
    if (this.fenceToken !== undefined) p.fenceToken = this.fenceToken;
    return p;
  }

  private emitProgress(): void {
    try {
      this.opts.onProgress?.(this.progress());
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
    const finish = this.serial(async () => {
      if (this.commitTimer) clearTimeout(this.commitTimer);
      this.commitTimer = undefined;
      // A clean stop commits the complete source transactions of the open group; a partial one is
      // rolled back (it is streamed again on restart).
      if (!this.failure && !this.groupLost && !this.inSourceTxn && this.groupTxns > 0) await this.commitGroup(true).catch(() => undefined);
      this.keyed.clear();
      this.pendingKeyed = 0;
      this.batches.clear();
      this.groupTxns = 0;
      if (this.inTxn) {
        this.inTxn = false;
        await this.target.query('ROLLBACK').catch(() => undefined);
      }
      this.inSourceTxn = false;
      this.skipping = false;
      await this.flushDurable().catch(() => undefined);
      this.ack();
    });
    await Promise.race([finish.catch(() => undefined), sleep(15_000)]);
    await this.waitConfirmed();
    await this.service.destroy().catch(() => undefined);
    await Promise.race([this.subscribeDone, sleep(5_000)]);
    try {
      this.spool.close();
    } catch {
      // a leftover directory is removed by the next apply on this machine
    }
    await this.waitSlotReleased();
    const result: ApplyResult = {
      appliedLsn: bigIntToLsn(this.committed),
      confirmedLsn: bigIntToLsn(this.durable),
      transactions: this.transactions,
      changes: this.changes,
      largeChanges: this.plugin.largeChanges,
      skippedBeforeCopy: this.beforeCopySkipped,
      missingBeforeTruncate: this.missingBeforeTruncate,
      foldedAhead: this.foldedAhead,
    };
    if (this.fenceToken !== undefined) result.fenceToken = this.fenceToken;
    // eslint-disable-next-line no-console
    if (this.stats) console.error(`apply stats: ${JSON.stringify({ ...this.stats, runMs: Date.now() - this.stats.start, firstDataMs: this.stats.firstData - this.stats.start, firstCommitMs: this.stats.firstCommit - this.stats.start, foldedAhead: this.foldedAhead, elu: performance.eventLoopUtilization(this.stats.elu).utilization, by: undefined })} ${JSON.stringify(this.stats.by)}`);
    if (this.failure) this.settle.reject(this.failure);
    else this.settle.resolve(result);
  }

  /**
   * The last confirmation is only a message on the socket; closing it at once can lose it. Waiting
   * (briefly) until the slot shows it keeps the slot from retaining WAL that is already applied.
   */
  private async waitConfirmed(): Promise<void> {
    if (!this.started || this.replicationDown || this.durable <= 0n) return;
    const deadline = Date.now() + 2_000;
    let lastAck = 0;
    while (Date.now() < deadline && !this.replicationDown) {
      if (Date.now() - lastAck >= 250) {
        this.ack();
        lastAck = Date.now();
      }
      try {
        this.monitor ??= await connect(this.opts.source, { applicationName: 'pg-dts apply monitor', statementTimeoutMs: 10_000 });
        const r = await this.monitor.query<{ lsn: string | null }>(
          'SELECT confirmed_flush_lsn::text AS lsn FROM pg_replication_slots WHERE slot_name = $1',
          [this.opts.slot],
        );
        const l = r.rows[0]?.lsn;
        if (!l || lsnToBigInt(l) >= this.durable) return;
      } catch {
        return;
      }
      await sleep(25);
    }
  }

  /** So that a restarted apply can take the slot at once: our walsender must be gone. */
  private async waitSlotReleased(): Promise<void> {
    const deadline = Date.now() + 10_000;
    while (Date.now() < deadline) {
      try {
        this.monitor ??= await connect(this.opts.source, { applicationName: 'pg-dts apply monitor', statementTimeoutMs: 10_000 });
        const r = await this.monitor.query<{ active: boolean }>('SELECT active FROM pg_replication_slots WHERE slot_name = $1', [this.opts.slot]);
        if (!r.rows[0]?.active) return;
      } catch {
        return;
      }
      await sleep(50);
    }
  }

  closeMonitor(): Promise<void> {
    const m = this.monitor;
    this.monitor = undefined;
    return m ? m.end().catch(() => undefined) : Promise.resolve();
  }
}


/**
 * Streams the slot into the target until `opts.signal` aborts (resolves with the last applied position)
 * or something fails (rejects with an ApplyError naming the table and operation, never row values).
 */
export async function runApply(opts: ApplyOptions): Promise<ApplyResult> {
  const calledAt = Date.now();
  let target: Client;
  try {
    target = await connect(opts.target, { applicationName: applyApplicationName(opts.slot) });
  } catch (err) {
    throw new ApplyError(`cannot connect to the target ${describeConnection(opts.target)}: ${safeDbMessage(err)}`, { code: sqlState(err) });
  }
  let monitor: Client | undefined;
  let engine: ApplyEngine | undefined;
  try {
    await prepareTargetSession(target, opts.replicaRole ?? true, opts.tables);
    await ensureApplyProgressTable(target);
    try {
      monitor = await connect(opts.source, { applicationName: 'pg-dts apply monitor', statementTimeoutMs: 10_000 });
    } catch (err) {
      throw new ApplyError(`cannot connect to the source ${describeConnection(opts.source)}: ${safeDbMessage(err)}`, { code: sqlState(err) });
    }
    const slot = await readSlot(monitor, opts.slot);
    const pub = await monitor.query('SELECT 1 FROM pg_publication WHERE pubname = $1', [opts.publication]);
    if (!pub.rowCount) throw new ApplyError(`publication ${opts.publication} does not exist on the source`, { permanent: true });
    const confirmed = slot.confirmed ? lsnToBigInt(slot.confirmed) : 0n;

    let progress = await readApplyProgress(target, opts.slot);
    if (!progress) {
      // First run: the slot's confirmed position is where the initial copy's snapshot ends.
      await target.query(
        `INSERT INTO pgdts.apply_progress (slot_name, applied_lsn) VALUES ($1, $2::pg_lsn) ON CONFLICT (slot_name) DO NOTHING`,
        [opts.slot, bigIntToLsn(confirmed)],
      );
      progress = await readApplyProgress(target, opts.slot);
    }
    const applied = lsnToBigInt(progress!.appliedLsn);
    if (applied < confirmed) {
      throw new ApplyError(
        `the target has applied slot ${opts.slot} up to ${bigIntToLsn(applied)} but the slot was already confirmed up to ${bigIntToLsn(confirmed)}: ` +
          'changes in between can no longer be streamed (was the target restored from an older backup?); the migration must restart its copy',
        { permanent: true },
      );
    }
    if (!opts.signal.aborted) await waitSlotFree(monitor, opts.slot, opts.slotWaitMs ?? 30_000, opts.signal);

    const timeout = await monitor.query<{ ms: number }>(`SELECT setting::int AS ms FROM pg_settings WHERE name = 'wal_sender_timeout'`);
    const timeoutMs = timeout.rows[0]?.ms ?? 60_000;
    const statusEveryMs = timeoutMs > 0 ? Math.max(100, Math.min(5_000, Math.floor(timeoutMs / 4))) : 5_000;

    const leafRoutes = hasPublishViaRoot(await serverVersionNum(monitor)) ? [] : await readLeafRoutes(monitor, opts.tables);
    // The replication stream connects once, without libpq's sslmode fallbacks: as the monitor did.
    engine = new ApplyEngine({ ...opts, source: pinnedSpec(monitor, opts.source) }, target, monitor, applied, progress!.fenceToken, statusEveryMs, calledAt);
    engine.routeLeaves(leafRoutes);
    const copied = await readCopyPositions(target, opts.tables.map((t) => t.target));
    engine.copiedSince(new Map([...copied].map(([t, lsn]) => [t, lsnToBigInt(lsn)])));
    const rewritten = await readRewrittenCopies(target, opts.tables.map((t) => t.target));
    engine.rewrittenBefore(new Map([...rewritten].map(([t, lsn]) => [t, lsnToBigInt(lsn)])));
    monitor = undefined; // the engine owns it now
    await engine.refreshSourceLsn();
    return await engine.run();
  } finally {
    await engine?.closeMonitor();
    await monitor?.end().catch(() => undefined);
    await target.end().catch(() => undefined);
  }
}

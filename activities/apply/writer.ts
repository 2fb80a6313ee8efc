/**
 * The apply's writes (SYNCING_WAL): owns the target session's transaction and writes a group's
 * changes into it. Changes to a keyed table are folded into their net effect per key (group.ts,
 * batch.ts) and written as a few prepared set-based statements; other tables get batched INSERTs and
 * one statement per UPDATE/DELETE. If a set-based write fails (a unique index that sees rows in
 * another order than the source did, or any other error), the transaction is rolled back and the
 * group's changes are replayed one by one in source order, which either succeeds or reports the
 * failing change precisely. Batched inserts (set-based, or consecutive inserts of a table written in
 * order) go as COPY FROM STDIN, rows written straight into 64 KiB Buffers.
 */
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { Client } from 'pg';
import { from as copyFrom } from 'pg-copy-streams';
import { ident, qname } from '../sql';
import { displayName, type QualifiedName } from '../spec';
import { copyChunks, copyInsertSql, hasBig, insertSql, type BatchStatement, type KeyedRelation } from './batch';
import { ApplyError, connectionLevel, safeDbMessage, sqlState } from './errors';
import { MAX_BATCH_BYTES, batchFull, type Change, type Group, type InsertBatch } from './group';
import { bigIntToLsn } from './lsn';
import { writerProgressUpsert } from './progress';
import type { ApplyOptions, SecondWriter } from './options';
import type { ChangeMessage } from './pgoutput';
import type { MappedRelation } from './relations';
import { copyRow, inlineParams, isSpooled, type Spool, type SpooledValue } from './spool';
import type { ApplyStats } from './stats';
import { deleteStatement, insertStatement, truncateStatement, updateStatement, type SqlStatement } from './statements';

/** A value this long gets a statement of its own with plain parameters (no array literal copy). */
const BIG_VALUE = 256 * 1024;
/** Prepared statements per session at most; past it, statements are sent unnamed. */
const MAX_PREPARED = 2_000;

export type WriterOptions = Pick<ApplyOptions, 'setBased' | 'copyInserts' | 'onReplay' | 'secondWriter'> & { maxBatchRows: number };

/** One target session the writer writes through: its open transaction and its prepared statements. */
class Session {
  /** A target transaction is open (BEGIN sent). */
  inTxn = false;
  private readonly prepared = new Map<string, string>();

  constructor(readonly client: Client) {}

  async begin(): Promise<void> {
    if (this.inTxn) return;
    await this.client.query('BEGIN');
    this.inTxn = true;
  }

  statementName(text: string): string | undefined {
    let name = this.prepared.get(text);
    if (name === undefined && this.prepared.size < MAX_PREPARED) {
      name = `pgdts_apply_${this.prepared.size + 1}`;
      this.prepared.set(text, name);
    }
    return name;
  }
}

/**
 * The second writer's part of a flush: the statements of the table it owns, run on its session while
 * the first session writes the other tables. `done` never rejects; `error` holds what failed.
 */
interface SecondFlush {
  done: Promise<void>;
  error?: unknown;
}

/**
 * Statements sent on one session before the one ahead of them has answered: pg queues each and sends
 * it the moment the one before it completes, so the target does not wait while the next statement's
 * values are built or this process is busy with the stream. At most two are out at once (the running
 * one and the next), so at most two statements' values are held.
 */
class InFlight {
  private last: Promise<void> | undefined;

  /** `sent` (already given to pg) is next; waits for the one before it, whose error it throws. */
  async add(sent: Promise<void>): Promise<void> {
    const before = this.last;
    sent.catch(() => undefined); // thrown by the next add or by `done`
    this.last = sent;
    if (before) await before;
  }

  /** Waits for the last one sent; throws its error. */
  async done(): Promise<void> {
    const last = this.last;
    this.last = undefined;
    if (last) await last;
  }

  /** Waits until nothing sent is left running, quietly (a failure is being handled already). */
  async settle(): Promise<void> {
    await this.done().catch(() => undefined);
  }
}

export class Writer {
  /** A COMMIT failed since the last rollback. */
  private commitFailed = false;
  /** UPDATEs and DELETEs of lenient changes that found no row (ApplyResult.missingBeforeTruncate). */
  missingBeforeTruncate = 0;
  private readonly main: Session;
  /** The session that owns one table (ApplyOptions.secondWriter), committed before `main`. */
  private readonly second: { session: Session; table: string; slot: string } | undefined;

  constructor(
    target: Client,
    private readonly spool: Spool,
    private readonly stats: ApplyStats,
    private readonly opts: WriterOptions,
  ) {
    this.main = new Session(target);
    const w = opts.secondWriter;
    if (w) this.second = { session: new Session(w.client), table: qname(w.table), slot: w.slot };
  }

  /** A target transaction is open on either session. */
  get inTxn(): boolean {
    return this.main.inTxn || this.second?.session.inTxn === true;
  }

  /** The session that writes `m`'s table: the second writer's for the table it owns, else the first. */
  private sessionFor(m: { rel: { target: QualifiedName } }): Session {
    return this.second !== undefined && qname(m.rel.target) === this.second.table ? this.second.session : this.main;
  }

  /**
   * One (counted) change of the open group `g`. Keyed tables fold it into their pending net changes
   * (written in a few statements later); other tables, and changes that cannot be folded, go one at a
   * time in order.
   */
  async change(g: Group, c: Change): Promise<void> {
    if (c.msg.tag === 'truncate') {
      if (await this.flushKeyed(g)) return; // replayed, this change included
    } else if (c.msg.spooled !== undefined) {
      if (await this.flushKeyed(g, c.msg.relationOid)) return; // replayed, this change included
    } else if (g.setBased(c)) {
      const oid = c.msg.relationOid;
      if (g.batches.has(oid)) await this.flushBatch(g, oid); // keep this table's order
      if (g.fold(c)) return this.afterFold(g);
      // Cannot be folded (the target is expected to refuse it, or a value is missing): what is
      // pending for this table first, then this change on its own.
      if (await this.flushKeyed(g, oid)) return;
      await this.applyOne(g, c);
      await this.flushBatch(g, oid);
      return this.checkRetention(g);
    }
    await this.applyOne(g, c);
    await this.checkRetention(g);
  }

  /** After an INSERT added to its table's batch (handleSync): the batch written if full, retention checked. */
  async afterInsert(g: Group, oid: number): Promise<void> {
    const b = g.batches.get(oid);
    if (b && this.batchFull(b)) await this.flushBatch(g, oid);
    await this.checkRetention(g);
  }

  async afterFold(g: Group): Promise<void> {
    if (g.keyedFull()) {
      if (await this.flushKeyed(g)) return;
    }
    await this.checkRetention(g);
  }

  private async checkRetention(g: Group): Promise<void> {
    if (!g.retentionDue()) return;
    // Too much to keep for a replay: write what is pending while a replay is still possible, then go on
    // change by change until this target transaction commits.
    if (await this.flushKeyed(g)) return;
    g.stopRetaining();
  }

  /** Everything pending written into the open target transaction. */
  async flushPending(g: Group): Promise<void> {
    await this.flushKeyed(g, undefined, true);
    await this.flushBatches(g);
  }

  /**
   * Commits the open transaction (BEGIN first when none is open) with `progressRow` (the progress
   * upsert), synchronously when `sync`.
   */
  async commit(endLsn: bigint, sync: boolean, progressRow: string): Promise<void> {
    // After a failed COMMIT the transaction that held the group is gone (or aborted): the progress row
    // sent now would be committed alone, recording as applied what is not. Only a rollback clears it.
    if (this.commitFailed) throw new ApplyError(`the transactions ending at ${bigIntToLsn(endLsn)} cannot be committed: an earlier COMMIT of them failed`);
    const local = sync ? 'SET LOCAL synchronous_commit = on; ' : '';
    // The second writer first, with its own position: when the first session's row says a group is
    // in, the second's part of it is in too (its commit record comes first in the target's WAL, so a
    // crash of the target keeps that order, and the first session's synchronous commit flushes both).
    // Committed alone (the first session failing next), its part is left out by the next run (run.ts,
    // readWriterProgress).
    const second = this.second;
    if (second?.session.inTxn) await this.commitOn(second.session, endLsn, `${writerProgressUpsert(second.slot, second.table, endLsn)}; COMMIT`);
    await this.commitOn(this.main, endLsn, `${this.main.inTxn ? '' : 'BEGIN; '}${local}${progressRow}; COMMIT`);
  }

  private async commitOn(session: Session, endLsn: bigint, sql: string): Promise<void> {
    try {
      session.inTxn = true;
      const t0 = performance.now();
      await session.client.query(sql);
      this.stats.committed(t0);
    } catch (err) {
      this.commitFailed = true;
      throw new ApplyError(`committing the transactions ending at ${bigIntToLsn(endLsn)} on the target failed: ${safeDbMessage(err)}`, { operation: 'COMMIT', code: sqlState(err) });
    }
    session.inTxn = false;
  }

  /** `progressRow` alone, committed synchronously (only between transactions). */
  async commitDurable(progressRow: string): Promise<void> {
    try {
      await this.main.client.query(`BEGIN; SET LOCAL synchronous_commit = on; ${progressRow}; COMMIT`);
    } catch (err) {
      await this.main.client.query('ROLLBACK').catch(() => undefined);
      throw new ApplyError(`recording the applied position on the target failed: ${safeDbMessage(err)}`, { operation: 'COMMIT', code: sqlState(err) });
    }
  }

  /** Rolls back an open transaction, quietly (the apply is stopping). */
  async rollback(): Promise<void> {
    this.commitFailed = false;
    for (const s of this.sessions()) {
      if (!s.inTxn) continue;
      s.inTxn = false;
      await s.client.query('ROLLBACK').catch(() => undefined);
    }
  }

  private sessions(): Session[] {
    return this.second ? [this.second.session, this.main] : [this.main];
  }

  /**
   * Writes the pending set-based changes (of one relation, or all). Returns true when that failed and
   * the group was rolled back and replayed change by change instead (the replay includes every change
   * received so far); throws when neither worked. With a second writer its table's statements run on
   * its session meanwhile (and, `withBatches`, the first session's INSERT batches too).
   */
  private async flushKeyed(g: Group, only?: number, withBatches = false): Promise<boolean> {
    if (g.pendingKeyed === 0) return false;
    const limits = { maxRows: this.opts.maxBatchRows, maxBytes: MAX_BATCH_BYTES, bigValue: BIG_VALUE, copy: this.opts.copyInserts !== false };
    let second: SecondFlush | undefined;
    const sent = new InFlight();
    let batches: Promise<void> | undefined;
    let batchErr: unknown;
    try {
      for (const [oid, kc] of g.keyed) {
        if (only !== undefined && oid !== only) continue;
        if (kc.size === 0) continue;
        const session = this.sessionFor(kc.k);
        // The second writer's table: its statements go on its session without waiting for them.
        if (session !== this.main) second = this.onSecond(kc.drain(limits), kc.k, second);
        else {
          for (const stmt of kc.drain(limits)) {
            await session.begin(); // before the first: no second BEGIN behind it
            await sent.add(this.execBatch(kc.k, stmt, session));
          }
        }
      }
      if (withBatches) {
        // Right behind them (and beside the second writer's), the first session's own INSERT batches.
        // A failure of theirs is no reason to replay (as when they run after this): it is thrown
        // once the set-based statements are in.
        batches = this.flushBatches(g, this.main).catch((err: unknown) => {
          batchErr = err ?? new Error('INSERT failed');
        });
      }
      await sent.done();
      await second?.done;
      if (second?.error !== undefined) throw second.error;
      await batches;
    } catch (err) {
      // Settled before a replay rolls the sessions back: what was sent behind the failure too.
      await sent.settle();
      await batches;
      await second?.done;
      return this.replay(g, err);
    }
    if (batchErr !== undefined) throw batchErr;
    let n = 0;
    for (const kc of g.keyed.values()) n += kc.size;
    g.pendingKeyed = n;
    return false;
  }

  /**
   * `stmts` run on the second writer's session after `before`, not awaited: flushKeyed awaits `done`
   * before it returns, so nothing folds into the table meanwhile and `drain` can build one statement
   * at a time.
   */
  private onSecond(stmts: Iterable<BatchStatement>, k: KeyedRelation, before: SecondFlush | undefined): SecondFlush {
    const session = this.second!.session;
    const flush: SecondFlush = { done: Promise.resolve() };
    flush.done = (async () => {
      await before?.done;
      if (before?.error !== undefined) throw before.error;
      for (const stmt of stmts) await this.execBatch(k, stmt, session);
    })().catch((err: unknown) => {
      flush.error = err ?? new Error('the second writer failed');
    });
    return flush;
  }

  private async execBatch(k: KeyedRelation, stmt: BatchStatement, session: Session): Promise<void> {
    const display = displayName(k.rel.target);
    let n: number | null;
    try {
      await session.begin();
      const t0 = performance.now();
      n = await this.runBatch(stmt, session);
      this.stats.statement(t0, stmt.expect, stmt.op, display, stmt.prepare);
    } catch (err) {
      const into = stmt.op === 'INSERT' ? 'into' : 'on';
      throw new ApplyError(`${stmt.op} ${into} ${display} failed: ${safeDbMessage(err)}`, { table: display, operation: stmt.op, code: sqlState(err) });
    }
    if (n !== stmt.expect) {
      throw new ApplyError(`${stmt.op} on ${display} affected ${n ?? 0} rows instead of ${stmt.expect}`, { table: display, operation: stmt.op, permanent: true });
    }
  }

  /** Runs a set-based statement (or COPY) in the open transaction; the rows it wrote. */
  private async runBatch(stmt: BatchStatement, session: Session): Promise<number | null> {
    if (stmt.copyRows) {
      const copy = session.client.query(copyFrom(stmt.text));
      await pipeline(Readable.from(copyChunks(stmt.copyRows)), copy);
      return copy.rowCount;
    }
    const name = stmt.prepare ? session.statementName(stmt.text) : undefined;
    return (await session.client.query(name ? { name, text: stmt.text, values: stmt.values } : { text: stmt.text, values: stmt.values })).rowCount;
  }

  /**
   * A set-based write failed: roll back the open target transaction and apply every change it held
   * again, one at a time in source order (which reports the failing change precisely if it fails again).
   */
  private async replay(g: Group, err: unknown): Promise<true> {
    const code = err instanceof ApplyError ? err.code : sqlState(err);
    const changes = g.retained;
    const mismatch = err instanceof ApplyError && err.permanent;
    if (!changes || (!mismatch && connectionLevel(code))) throw err;
    this.stats.replay();
    try {
      this.opts.onReplay?.({ table: err instanceof ApplyError ? err.table : undefined, code, changes: changes.length });
    } catch {
      // diagnostics only
    }
    g.stopRetaining();
    g.dropPending();
    for (const s of this.sessions()) {
      if (!s.inTxn) continue;
      s.inTxn = false;
      await s.client.query('ROLLBACK');
    }
    for (const c of changes) await this.applyOne(g, c);
    return true;
  }

  /** One change as its own statement (INSERTs batched per table), in source order. */
  private async applyOne(g: Group, c: Change): Promise<void> {
    if (c.msg.tag === 'truncate') {
      await this.flushBatches(g);
      // Each session truncates its own tables (the second writer's has no foreign key: run.ts).
      const ms = c.mapped as MappedRelation[];
      for (const s of this.sessions()) {
        const mine = ms.filter((m) => this.sessionFor(m) === s);
        if (mine.length) await this.truncate(mine, c.msg.restartIdentity, s);
      }
      return;
    }
    const m = c.mapped as MappedRelation;
    const session = this.sessionFor(m);
    await session.begin();
    const msg = c.msg;
    const lenient = 'lenient' in c && c.lenient === true;
    if (msg.spooled !== undefined) {
      await this.flushBatch(g, msg.relationOid);
      return this.applySpooled(m, msg, lenient, session.client);
    }
    if (msg.tag === 'insert') {
      const b = g.addInsert(msg.relationOid, m, msg.new);
      if (this.batchFull(b)) await this.flushBatch(g, msg.relationOid);
      return;
    }
    await this.flushBatch(g, msg.relationOid);
    if (msg.tag === 'update') {
      const plan = build(m, 'UPDATE', () => updateStatement(m.rel, { oldKey: msg.key, old: msg.old, new: msg.new }));
      if (plan) await this.execOne(session.client, m, 'UPDATE', plan, plan.fallback, lenient);
    } else {
      const stmt = build(m, 'DELETE', () => deleteStatement(m.rel, { oldKey: msg.key, old: msg.old }));
      await this.execOne(session.client, m, 'DELETE', stmt, undefined, lenient);
    }
  }

  private async truncate(ms: MappedRelation[], restartIdentity: boolean, session: Session): Promise<void> {
    const stmt = truncateStatement(
      ms.map((m) => ({ target: m.rel.target, partitioned: m.rel.partitioned })),
      { restartIdentity },
    );
    try {
      await session.begin();
      await session.client.query(stmt);
    } catch (err) {
      const names = ms.map((m) => m.display).join(', ');
      throw new ApplyError(`TRUNCATE of ${names} failed: ${safeDbMessage(err)}`, { table: names, operation: 'TRUNCATE', code: sqlState(err) });
    }
  }

  /**
   * A change with spooled values (spool.ts): its values go from their files through COPY into a one-row
   * temporary table with the target columns' types, and the change's statement reads them from there,
   * so no value is ever held whole in this process.
   */
  private async applySpooled(m: MappedRelation, msg: ChangeMessage, lenient: boolean, target: Client): Promise<void> {
    const op = msg.tag.toUpperCase();
    const stmts = spooledStatements(m, msg, op);
    if (!stmts) return;
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
      await target.query(
        // Dropped below, or rolled back with the transaction on any failure.
        `CREATE TEMP TABLE pgdts_spooled AS SELECT ${cols.join(', ')} FROM ${qname(m.rel.target)} WITH NO DATA`,
      );
      await pipeline(Readable.from(copyRow([...spooled.values()].map((s) => s.v))), target.query(copyFrom('COPY pg_temp.pgdts_spooled FROM STDIN')));
    } catch (err) {
      throw new ApplyError(`${op} on ${m.display} failed writing a large value: ${safeDbMessage(err)}`, { table: m.display, operation: op, code: sqlState(err) });
    }
    if (msg.tag === 'insert') {
      try {
        await target.query(first!);
      } catch (err) {
        throw new ApplyError(`INSERT into ${m.display} failed: ${safeDbMessage(err)}`, { table: m.display, operation: op, code: sqlState(err) });
      }
    } else await this.execOne(target, m, op, first!, fallback, lenient);
    await target.query('DROP TABLE pg_temp.pgdts_spooled');
  }

  /** Runs a statement that must affect exactly one row (`fallback` when the first affects none; `lenient`: or none). */
  private async execOne(target: Client, m: MappedRelation, op: string, stmt: SqlStatement, fallback?: SqlStatement, lenient = false): Promise<void> {
    let n: number | null;
    try {
      n = (await target.query(stmt)).rowCount;
      if (n === 0 && fallback) n = (await target.query(fallback)).rowCount;
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

  /** The batch is written as one COPY (else as INSERT statements). */
  private copies(b: InsertBatch): boolean {
    return b.mapped.castTypes !== undefined && this.opts.setBased !== false && this.opts.copyInserts !== false;
  }

  /** The batch is to be written now (group.ts batchFull). */
  batchFull(b: InsertBatch): boolean {
    return batchFull(b, this.opts.maxBatchRows, this.copies(b));
  }

  /** Consecutive INSERTs into one table go as one statement; any other change to it writes them first. */
  async flushBatch(g: Group, oid: number): Promise<void> {
    const b = g.batches.get(oid);
    if (!b) return;
    g.batches.delete(oid);
    const castTypes = b.mapped.castTypes;
    // One prepared INSERT ... SELECT FROM unnest() whatever the number of rows; plain parameters when a
    // value is large (no array literal copy of it).
    // Or one COPY, large values included.
    const stmt = this.copies(b)
      ? copyInsertSql(b.mapped, b.rows)
      : castTypes && this.opts.setBased !== false && !b.rows.some((r) => hasBig(r, BIG_VALUE))
        ? insertSql({ rel: b.mapped.rel, castTypes }, b.rows)
        : undefined;
    const plain = stmt ? undefined : build(b.mapped, 'INSERT', () => insertStatement(b.mapped.rel, b.rows));
    const session = this.sessionFor(b.mapped);
    try {
      await session.begin();
      const t0 = performance.now();
      if (stmt) await this.runBatch(stmt, session);
      else await session.client.query(plain!);
      this.stats.statement(t0, b.rows.length, 'INSERT', b.mapped.display);
    } catch (err) {
      throw new ApplyError(`INSERT into ${b.mapped.display} failed: ${safeDbMessage(err)}`, { table: b.mapped.display, operation: 'INSERT', code: sqlState(err) });
    }
  }

  /** Every table's INSERT batch (`only`: of the tables that session writes). */
  private async flushBatches(g: Group, only?: Session): Promise<void> {
    for (const [oid, b] of [...g.batches]) if (only === undefined || this.sessionFor(b.mapped) === only) await this.flushBatch(g, oid);
  }
}

/** A statement builder's refusal as the change's ApplyError (final: the same change fails again). */
function build<T>(m: MappedRelation, op: string, fn: () => T): T {
  try {
    return fn();
  } catch (err) {
    throw new ApplyError(`${op} on ${m.display}: ${(err as Error).message}`, { table: m.display, operation: op, permanent: true });
  }
}

/** The statement (and an UPDATE's fallback) of a spooled change; undefined when an UPDATE changes nothing. */
function spooledStatements(m: MappedRelation, msg: ChangeMessage, op: string): SqlStatement[] | undefined {
  if (msg.tag === 'insert') return [build(m, op, () => insertStatement(m.rel, [msg.new]))];
  if (msg.tag === 'delete') return [build(m, op, () => deleteStatement(m.rel, { oldKey: msg.key, old: msg.old }))];
  const plan = build(m, op, () => updateStatement(m.rel, { oldKey: msg.key, old: msg.old, new: msg.new }));
  if (!plan) return undefined;
  return plan.fallback ? [plan, plan.fallback] : [plan];
}

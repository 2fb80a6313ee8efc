/**
 * `runApply` (SYNCING_WAL, the `applyChanges` activity): connects to both servers, checks the slot,
 * the publication and the position the target has applied (pgdts.apply_progress), then runs the apply
 * engine (engine.ts) until the signal aborts it or something fails.
 */
import { Client } from 'pg';
import { connect, describeConnection, pinnedSpec, settled } from '../db';
import { readCopyPositions, readRewrittenCopies } from '../copy';
import { hasPublishViaRoot, serverVersionNum } from '../pg-version';
import { ApplyEngine } from './engine';
import { ApplyError, safeDbMessage, sqlState } from './errors';
import { bigIntToLsn, lsnToBigInt } from './lsn';
import type { ConnectionSpec } from '../spec';
import { applyWriters, type ApplyOptions, type ApplyProgress, type ApplyResult, type SecondWriter } from './options';
import { DELETE_WRITER_PROGRESS_SQL, ensureApplyProgressTable, readApplyProgress, readWriterProgress } from './progress';
import { readLeafRoutes } from './relations';
import { readSlot, waitSlotFree } from './source';
import { watchStopRequests } from './stop-request';
import { applyApplicationName, prepareTargetSession, secondWriterTable } from './target';

/** runApply's options: the tables may still be on their way (read from the plan while it connects). */
export type RunApplyOptions = Omit<ApplyOptions, 'tables'> & { tables: ApplyOptions['tables'] | Promise<ApplyOptions['tables']> };

/**
 * Streams the slot into the target until `opts.signal` aborts (resolves with the last applied position)
 * or something fails (rejects with an ApplyError naming the table and operation, never row values).
 * The two servers are connected to and read at once, and the tables awaited beside them: a resume's
 * cold start waits for the slowest of them, not for their sum.
 */
export async function runApply(opts: RunApplyOptions): Promise<ApplyResult> {
  const calledAt = Date.now();
  // Decided before any connection is made (an invalid value fails here, with nothing to close).
  const writers = applyWriters();
  const [target, monitor, tables, second] = await settled(
    [
      connectTo('target', opts.target, { applicationName: applyApplicationName(opts.slot) }),
      connectTo('source', opts.source, { applicationName: 'pg-dts apply monitor', statementTimeoutMs: 10_000 }),
      Promise.resolve(opts.tables),
      (writers === 2 ? connectTo('target', opts.target, { applicationName: applyApplicationName(opts.slot, 2) }) : Promise.resolve(undefined)) as Promise<Client | undefined>,
    ] as const,
    async (v) => v instanceof Client && v.end(),
  );
  let engine: ApplyEngine | undefined;
  let owned: Client | undefined = monitor;
  let detach: () => void = () => undefined;
  try {
    const slotRead = readSlot(monitor, opts.slot);
    const [onTarget, onSource, secondWriter] = await settled([
      readTargetSide(target, { ...opts, tables }, slotRead),
      slotRead.then(() => readSourceSide(monitor, { ...opts, tables })),
      second ? prepareSecondWriter(second, { ...opts, tables }) : Promise.resolve(undefined),
    ]);
    const slot = await slotRead;
    const { leafRoutes, timeoutMs } = onSource;
    const confirmed = slot.confirmed ? lsnToBigInt(slot.confirmed) : 0n;
    let progress = onTarget.progress;
    if (!progress) {
      // First run: the slot's confirmed position is where the initial copy's snapshot ends.
      await target.query(
        `INSERT INTO pgdts.apply_progress (slot_name, applied_lsn) VALUES ($1, $2::pg_lsn) ON CONFLICT (slot_name) DO NOTHING`,
        [opts.slot, bigIntToLsn(confirmed)],
      );
      // A second writer's rows of an earlier migration under this slot name (a cleanup that failed
      // half-way) would leave changes out: this migration has written nothing yet.
      await target.query(DELETE_WRITER_PROGRESS_SQL, [opts.slot]);
      onTarget.written.clear();
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
    const statusEveryMs = timeoutMs > 0 ? Math.max(100, Math.min(5_000, Math.floor(timeoutMs / 4))) : 5_000;

    // Stopped by the caller's signal, or by the cutover's request once past its fence (stop-request.ts).
    const stopper = new AbortController();
    const relay = () => stopper.abort();
    opts.signal.addEventListener('abort', relay, { once: true });
    detach = () => opts.signal.removeEventListener('abort', relay);
    if (opts.signal.aborted) stopper.abort();
    const stopRequests = watchStopRequests(target, opts.slot, relay);
    const stored = progress!.fenceToken;
    const onProgress = (p: ApplyProgress) => {
      // A fence committed by this run (the stored one is reported until the next).
      if (p.fenceToken !== undefined && p.fenceToken !== stored) stopRequests.fenceCommitted(p.fenceToken);
      opts.onProgress?.(p);
    };
    // The replication stream connects once, without libpq's sslmode fallbacks: as the monitor did.
    if (secondWriter) await target.query(SECOND_WRITER_LOCK_TIMEOUT);
    engine = new ApplyEngine({ ...opts, tables, secondWriter, signal: stopper.signal, onProgress, source: pinnedSpec(monitor, opts.source) }, target, monitor, applied, progress!.fenceToken, statusEveryMs, calledAt);
    engine.routeLeaves(leafRoutes);
    engine.copiedSince(alreadyIn(onTarget));
    engine.rewrittenBefore(new Map([...onTarget.rewritten].map(([t, lsn]) => [t, lsnToBigInt(lsn)])));
    owned = undefined; // the engine owns it now
    await engine.refreshSourceLsn();
    return await engine.run();
  } finally {
    detach();
    await engine?.closeMonitor();
    await owned?.end().catch(() => undefined);
    await target.end().catch(() => undefined);
    await second?.end().catch(() => undefined);
  }
}

/** The second writer's session prepared like the first, and its table; undefined (the session closed) when none qualifies. */
async function prepareSecondWriter(c: Client, opts: ApplyOptions): Promise<SecondWriter | undefined> {
  const table = await secondWriterTable(c, opts.tables);
  if (!table) {
    await c.end().catch(() => undefined);
    return undefined;
  }
  await prepareTargetSession(c, opts.replicaRole ?? true, opts.tables);
  await c.query(SECOND_WRITER_LOCK_TIMEOUT);
  return { client: c, table, slot: opts.slot };
}

/**
 * With two sessions, a lock wait of one can pass through another server session into the other's
 * locks (a reader holding the first session's table and waiting for the second's, which commits only
 * after the first): our process is in that cycle, so PostgreSQL's deadlock check never sees it. Both
 * sessions wait at most this long for a lock; then the apply fails and its retry starts again,
 * exactly once (pgdts.apply_writer_progress).
 */
const SECOND_WRITER_LOCK_TIMEOUT = `SET lock_timeout = '60s'`;

/**
 * Per target table, the position before which a source transaction's changes are in it already: its
 * copy's (a later snapshot), or a second writer's that committed ahead of the first session.
 */
function alreadyIn(onTarget: { copied: ReadonlyMap<string, string>; written: ReadonlyMap<string, bigint> }): Map<string, bigint> {
  const positions = new Map([...onTarget.copied].map(([t, lsn]) => [t, lsnToBigInt(lsn)]));
  for (const [t, lsn] of onTarget.written) if (lsn > (positions.get(t) ?? 0n)) positions.set(t, lsn);
  return positions;
}

/** A session on one side, or an ApplyError naming that side. */
function connectTo(side: 'source' | 'target', spec: ConnectionSpec, opts: Parameters<typeof connect>[1]): Promise<Client> {
  return connect(spec, opts).catch((err: unknown) => {
    throw new ApplyError(`cannot connect to the ${side} ${describeConnection(spec)}: ${safeDbMessage(err)}`, { code: sqlState(err) });
  });
}

/**
 * The target's part of the start: its session prepared, the position it has applied, the copies'
 * positions. The position is read after the slot (`slotRead`): an apply of an earlier attempt may
 * still run, and it commits on the target before it confirms the slot, so a position read after the
 * slot's is never behind it (else the check below would take a live apply for a lost target).
 */
async function readTargetSide(target: Client, opts: ApplyOptions, slotRead: Promise<unknown>) {
  await prepareTargetSession(target, opts.replicaRole ?? true, opts.tables);
  await ensureApplyProgressTable(target);
  await slotRead;
  const progress = await readApplyProgress(target, opts.slot);
  const copied = await readCopyPositions(target, opts.tables.map((t) => t.target));
  const rewritten = await readRewrittenCopies(target, opts.tables.map((t) => t.target));
  const written = await readWriterProgress(target, opts.slot);
  return { progress, copied, rewritten, written };
}

/** The source's part after the slot: the publication, the walsender's timeout, the partitions' routes. */
async function readSourceSide(monitor: Client, opts: ApplyOptions) {
  const pub = await monitor.query('SELECT 1 FROM pg_publication WHERE pubname = $1', [opts.publication]);
  if (!pub.rowCount) throw new ApplyError(`publication ${opts.publication} does not exist on the source`, { permanent: true });
  const timeout = await monitor.query<{ ms: number }>(`SELECT setting::int AS ms FROM pg_settings WHERE name = 'wal_sender_timeout'`);
  const leafRoutes = hasPublishViaRoot(await serverVersionNum(monitor)) ? [] : await readLeafRoutes(monitor, opts.tables);
  return { leafRoutes, timeoutMs: timeout.rows[0]?.ms ?? 60_000 };
}

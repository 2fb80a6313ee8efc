/**
 * `runApply` (SYNCING_WAL, the `applyChanges` activity): connects to both servers, checks the slot,
 * the publication and the position the target has applied (pgdts.apply_progress), then runs the apply
 * engine (engine.ts) until the signal aborts it or something fails.
 */
import type { Client } from 'pg';
import { connect, describeConnection, pinnedSpec } from '../db';
import { readCopyPositions, readRewrittenCopies } from '../copy';
import { hasPublishViaRoot, serverVersionNum } from '../pg-version';
import { ApplyEngine } from './engine';
import { ApplyError, safeDbMessage, sqlState } from './errors';
import { bigIntToLsn, lsnToBigInt } from './lsn';
import type { ApplyOptions, ApplyProgress, ApplyResult } from './options';
import { ensureApplyProgressTable, readApplyProgress } from './progress';
import { readLeafRoutes } from './relations';
import { readSlot, waitSlotFree } from './source';
import { watchStopRequests } from './stop-request';
import { applyApplicationName, prepareTargetSession } from './target';

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
  let detach: () => void = () => undefined;
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
    engine = new ApplyEngine({ ...opts, signal: stopper.signal, onProgress, source: pinnedSpec(monitor, opts.source) }, target, monitor, applied, progress!.fenceToken, statusEveryMs, calledAt);
    engine.routeLeaves(leafRoutes);
    const copied = await readCopyPositions(target, opts.tables.map((t) => t.target));
    engine.copiedSince(new Map([...copied].map(([t, lsn]) => [t, lsnToBigInt(lsn)])));
    const rewritten = await readRewrittenCopies(target, opts.tables.map((t) => t.target));
    engine.rewrittenBefore(new Map([...rewritten].map(([t, lsn]) => [t, lsnToBigInt(lsn)])));
    monitor = undefined; // the engine owns it now
    await engine.refreshSourceLsn();
    return await engine.run();
  } finally {
    detach();
    await engine?.closeMonitor();
    await monitor?.end().catch(() => undefined);
    await target.end().catch(() => undefined);
  }
}

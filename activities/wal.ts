/**
 * The WAL budget (spec.wal): a replication slot keeps every WAL segment from its restart_lsn on, so a
 * long copy, a paused or stuck apply, or a terminated run makes the source's disk fill. The watcher
 * reads the slot every few seconds from the moment it is created until FINALIZING drops it, reports
 * what it retains, warns past warnRetainedBytes, and ends the migration cleanly past maxRetainedBytes
 * or when the server has invalidated the slot (`max_slot_wal_keep_size`: wal_status 'lost'), since
 * no retry can bring that WAL back.
 */
import { finalFailure, type FinalError } from './errors';
import { ErrorType } from '../workflows/error-types';
import { withClient } from './db';
import type { ConnectionSpec } from './spec';

export interface SlotWal {
  exists: boolean;
  retainedBytes: number;
  /** pg_replication_slots.wal_status: reserved, extended, unreserved, lost. */
  walStatus: string | null;
}

export interface WalBudget {
  warnRetainedBytes?: number;
  maxRetainedBytes?: number;
}

export type WalVerdict = 'ok' | 'warn' | 'over' | 'lost';

/** Pure: what the slot's state means under the budget. */
export function walVerdict(w: SlotWal, budget: WalBudget): WalVerdict {
  if (!w.exists) return 'ok';
  if (w.walStatus === 'lost') return 'lost';
  if (budget.maxRetainedBytes !== undefined && w.retainedBytes > budget.maxRetainedBytes) return 'over';
  if (budget.warnRetainedBytes !== undefined && w.retainedBytes > budget.warnRetainedBytes) return 'warn';
  return 'ok';
}

/** Whether a new reading is worth a signal (each one is a history event): a verdict change, ±25 %, or 5 minutes. */
export function walReportDue(prev: { verdict: WalVerdict; retainedBytes: number; at: number } | undefined, verdict: WalVerdict, retainedBytes: number, now: number): boolean {
  if (!prev) return true;
  if (verdict !== prev.verdict) return true;
  if (now - prev.at >= 300_000) return true;
  const base = Math.max(prev.retainedBytes, 1024 * 1024);
  return Math.abs(retainedBytes - prev.retainedBytes) > base / 4;
}

export async function readSlotWal(source: ConnectionSpec, slot: string): Promise<SlotWal> {
  return withClient(
    source,
    async (c) => {
      const r = await c.query<{ retained: string | null; wal_status: string | null }>(
        // wal_status exists from PostgreSQL 13: read through to_jsonb so a 12 source gives NULL.
        `SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)::bigint::text AS retained, to_jsonb(s) ->> 'wal_status' AS wal_status
           FROM pg_replication_slots s WHERE slot_name = $1`,
        [slot],
      );
      const row = r.rows[0];
      if (!row) return { exists: false, retainedBytes: 0, walStatus: null };
      return { exists: true, retainedBytes: Number(row.retained ?? 0), walStatus: row.wal_status };
    },
    { applicationName: 'pg-dts wal watch' },
  );
}

export function walFailure(slot: string, w: SlotWal, budget: WalBudget, verdict: 'over' | 'lost'): FinalError {
  if (verdict === 'lost') {
    return finalFailure(
      ErrorType.SlotInvalidated,
      `replication slot ${slot} was invalidated by the source (wal_status = lost): it retained more WAL than max_slot_wal_keep_size allows and ` +
        'the changes it still had to stream are gone; the migration cannot continue from it. Start the migration again (raise max_slot_wal_keep_size or keep the apply running)',
    );
  }
  return finalFailure(
    ErrorType.WalBudgetExceeded,
    `replication slot ${slot} retains ${w.retainedBytes} bytes of WAL, over wal.maxRetainedBytes (${budget.maxRetainedBytes}): ` +
      'stopped before the source disk fills; the slot is dropped and source writes released. Start again with a larger budget or a faster apply',
  );
}

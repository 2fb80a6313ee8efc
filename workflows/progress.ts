/**
 * MIGRATING_DATA's progress as the status and the Temporal UI show it: rows per table from the copy
 * reports, rate and ETA, the current-details text. Pure (the caller passes the time), unit-tested.
 */
import type { CopyLockWait, MigrationProgress, TableStatus } from './contract';

/** Progress of the current copy round (a new snapshot starts a new round). */
/** A copy unit's last live report: the table it is on, rows and bytes so far, a lock it waits for. */
export interface LiveReport {
  table: string;
  rows: number;
  bytes: number;
  waiting?: CopyLockWait;
}

export interface CopyRound {
  snapshot: string | undefined;
  /** Units in flight -> their table. */
  running: Map<string, string>;
  /** Units in flight -> their last report. */
  live: Map<string, LiveReport>;
  /** Tables -> what their finished units copied. */
  doneRows: Map<string, { rows: number; bytes: number }>;
  /** Tables -> the report the rate was last measured from. */
  rate: Map<string, { at: number; rows: number }>;
  /** Every unit of the round has landed: the snapshot is no longer needed (per-table post-load). */
  landed: boolean;
  /** A copy child's round: the tables the live reports showed as copying -> their unit. */
  copyingIn?: Map<string, string>;
  /**
   * A copy child's round: live reports of units the child has not yet said are in flight (the
   * activity's signal can overtake the child's report) -> the report, and how many of the child's
   * reports have not listed the unit since. Shown once a report lists the unit; dropped at the
   * second that does not (the unit ended before the child reported it).
   */
  early?: Map<string, { report: LiveReport; missed: number }>;
}

export const newCopyRound = (snapshot?: string): CopyRound => ({ snapshot, running: new Map(), live: new Map(), doneRows: new Map(), rate: new Map(), landed: false });

export interface TableCopyProgress {
  rows: number;
  bytes: number;
  /** A new rate (and ETA) when a second or more has passed since the last measure. */
  speed?: { rowsPerSecond: number; etaSeconds: number | undefined };
  /** The rate's new reference point, when it moves. */
  mark?: { at: number; rows: number };
}

/** Rows of a table = its finished units' + its running units' last reports; rate and ETA from them. */
export function tableCopyProgress(round: Pick<CopyRound, 'doneRows' | 'live' | 'rate'>, table: string, rowsTotal: number | undefined, now: number): TableCopyProgress {
  let rows = round.doneRows.get(table)?.rows ?? 0;
  let bytes = round.doneRows.get(table)?.bytes ?? 0;
  for (const l of round.live.values()) {
    if (l.table !== table) continue;
    rows += l.rows;
    bytes += l.bytes;
  }
  const prev = round.rate.get(table);
  if (prev && now - prev.at >= 1000 && rows >= prev.rows) {
    const perSec = ((rows - prev.rows) * 1000) / (now - prev.at);
    const etaSeconds = perSec > 0 && (rowsTotal ?? 0) > rows ? Math.round((rowsTotal! - rows) / perSec) : undefined;
    return { rows, bytes, speed: { rowsPerSecond: Math.round(perSec), etaSeconds }, mark: { at: now, rows } };
  }
  if (!prev || rows < prev.rows) return { rows, bytes, mark: { at: now, rows } };
  return { rows, bytes };
}

/** Puts a table's progress into its status (and the rate's reference point into the round). */
export function refreshCopyProgress(round: CopyRound, ts: TableStatus, now: number): void {
  const p = tableCopyProgress(round, ts.source, ts.rowsTotal, now);
  ts.rowsCopied = p.rows;
  ts.bytesCopied = p.bytes;
  if (p.speed) {
    ts.rowsPerSecond = p.speed.rowsPerSecond;
    ts.etaSeconds = p.speed.etaSeconds;
  }
  if (p.mark) round.rate.set(ts.source, p.mark);
}

/**
 * By reference: the copy's rate over the round so far and the ETA from the bytes left (none before
 * a second has passed, nor without a total).
 */
export function copyRate(bytesCopied: number, bytesTotal: number | undefined, seconds: number): { bytesPerSecond: number; etaSeconds: number | undefined } | undefined {
  if (seconds < 1) return undefined;
  const bytesPerSecond = Math.round(bytesCopied / seconds);
  return { bytesPerSecond, etaSeconds: bytesTotal !== undefined && bytesPerSecond > 0 ? Math.max(0, Math.round((bytesTotal - bytesCopied) / bytesPerSecond)) : undefined };
}

/** By reference: the numbers, and each batch in flight with the table it is on. */
export function batchDetails(progress: MigrationProgress, live: CopyRound['live']): string {
  const lines = [...live.entries()].map(([unit, l]) => `- ${l.table}: ${l.rows} rows (${unit})`);
  return `**MIGRATING_DATA**\n\n${progress.tablesCopied}/${progress.tablesTotal} tables copied, ${progress.rowsCopied} rows\n${lines.join('\n')}`;
}

/** The Temporal UI's current details while copying: tables done, and each copy in flight. */
export function copyDetails(tables: readonly TableStatus[]): string {
  const done = tables.filter((t) => t.state === 'copied').length;
  const lines = tables
    .filter((t) => t.state === 'copying')
    .map((t) => {
      const pct = t.rowsTotal ? ` (${Math.min(100, Math.floor((100 * t.rowsCopied) / t.rowsTotal))}%)` : '';
      const rate = t.rowsPerSecond !== undefined ? `, ${t.rowsPerSecond} rows/s` : '';
      const eta = t.etaSeconds !== undefined ? `, about ${t.etaSeconds} s left` : '';
      const ranges = t.ranges ? `, ranges ${t.ranges.done}/${t.ranges.total}` : '';
      return `- ${t.source}: ${t.rowsCopied}${t.rowsTotal ? `/${t.rowsTotal}` : ''} rows${pct}${rate}${eta}${ranges}`;
    });
  const indexing = tables.filter((t) => t.state === 'indexing').map((t) => `- ${t.source}: copied, building indexes`);
  return `**MIGRATING_DATA**\n\n${done}/${tables.length} tables copied\n${[...lines, ...indexing].join('\n')}`;
}

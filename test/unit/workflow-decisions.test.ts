/**
 * The workflow's decisions as pure functions (workflows/state.ts, workflows/progress.ts): when the
 * cutover is due, how many sessions an index build borrows, copy progress, rate and ETA.
 */
import { describe, expect, it } from 'vitest';
import { cutoverDue, extraBuildSessions, fenceReady, lagSmall, proofReady } from '../../workflows/state';
import { copyDetails, copyRate, newCopyRound, refreshCopyProgress, tableCopyProgress } from '../../workflows/progress';
import type { TableStatus } from '../../workflows/contract';

describe('cutover decisions', () => {
  const fresh = { updatedAt: '2026-12-05T10:00:02Z', lagBytes: 100 };
  const since = '2026-12-05T10:00:00Z';
  const auto = { mode: 'auto' as const, requested: false, retryWait: false, replication: fresh, since, maxLagBytes: 1000 };

  it('auto: due once a report from this apply shows the lag under the bound', () => {
    expect(cutoverDue(auto)).toBe(true);
    expect(cutoverDue({ ...auto, replication: { ...fresh, lagBytes: 1001 } })).toBe(false);
    // The report from before this apply started (a pause, an abandoned attempt) does not count.
    expect(cutoverDue({ ...auto, since: fresh.updatedAt })).toBe(false);
    expect(cutoverDue({ ...auto, replication: undefined })).toBe(false);
  });

  it('auto: not due while the wait after an abandoned attempt runs, whatever the lag', () => {
    expect(cutoverDue({ ...auto, retryWait: true })).toBe(false);
  });

  it('manual: due when asked, not before, lag or no lag', () => {
    expect(cutoverDue({ ...auto, mode: 'manual' })).toBe(false);
    expect(cutoverDue({ ...auto, mode: 'manual', requested: true, replication: undefined })).toBe(true);
    expect(cutoverDue({ ...auto, mode: 'manual', requested: true, retryWait: true })).toBe(true);
  });

  it('lagSmall is the auto half of it', () => {
    expect(lagSmall(fresh, since, 100)).toBe(true);
    expect(lagSmall(fresh, since, 99)).toBe(false);
  });

  it('the content proof holds the cutover until its first full pass, unless off or ended', () => {
    expect(proofReady({ used: true, ended: false, passesComplete: 0 })).toBe(false);
    expect(proofReady({ used: true, ended: false, passesComplete: undefined })).toBe(false);
    expect(proofReady({ used: true, ended: false, passesComplete: 1 })).toBe(true);
    expect(proofReady({ used: true, ended: true, passesComplete: 0 })).toBe(true);
    expect(proofReady({ used: false, ended: false, passesComplete: 0 })).toBe(true);
  });

  it('auto waits for the fence installation to settle; manual goes when asked', () => {
    expect(fenceReady({ installing: true, settled: false, mode: 'auto', requested: true })).toBe(false);
    expect(fenceReady({ installing: true, settled: true, mode: 'auto', requested: false })).toBe(true);
    expect(fenceReady({ installing: false, settled: false, mode: 'auto', requested: false })).toBe(true);
    expect(fenceReady({ installing: true, settled: false, mode: 'manual', requested: false })).toBe(false);
    expect(fenceReady({ installing: true, settled: false, mode: 'manual', requested: true })).toBe(true);
  });
});

describe('index builds borrow spare sessions', () => {
  const index = { kind: 'index' };
  it('one more session per index beyond the first, at most the spare ones', () => {
    expect(extraBuildSessions({ postLoadSteps: [index, index, index, { kind: 'constraint' }] }, 5)).toBe(2);
    expect(extraBuildSessions({ postLoadSteps: [index, index, index] }, 1)).toBe(1);
    expect(extraBuildSessions({ postLoadSteps: [index, index, index] }, 0)).toBe(0);
  });
  it('a table with one index or none, or a partitioned one, builds on its own session', () => {
    expect(extraBuildSessions({ postLoadSteps: [index] }, 4)).toBe(0);
    expect(extraBuildSessions({}, 4)).toBe(0);
    expect(extraBuildSessions({ partitioned: true, postLoadSteps: [index, index, index] }, 4)).toBe(0);
  });
});

describe('copy progress, rate and ETA', () => {
  const table = 'public.t';
  it('adds the finished units and the running units of the table, not of others', () => {
    const round = newCopyRound('snap');
    round.doneRows.set(table, { rows: 100, bytes: 1000 });
    round.live.set('u1', { table, rows: 20, bytes: 200 });
    round.live.set('u2', { table: 'public.other', rows: 999, bytes: 999 });
    const p = tableCopyProgress(round, table, 1000, 10_000);
    expect(p).toEqual({ rows: 120, bytes: 1200, mark: { at: 10_000, rows: 120 } });
  });

  it('measures the rate after a second or more, with the ETA from the rows left', () => {
    const round = newCopyRound('snap');
    round.rate.set(table, { at: 10_000, rows: 100 });
    round.live.set('u1', { table, rows: 300, bytes: 0 });
    // 200 rows in 2 s: 100 rows/s, 700 rows left.
    expect(tableCopyProgress(round, table, 1000, 12_000)).toEqual({ rows: 300, bytes: 0, speed: { rowsPerSecond: 100, etaSeconds: 7 }, mark: { at: 12_000, rows: 300 } });
    // Under a second: no new measure, the reference point stays.
    expect(tableCopyProgress(round, table, 1000, 10_500)).toEqual({ rows: 300, bytes: 0 });
    // No total known, or past it: no ETA.
    expect(tableCopyProgress(round, table, undefined, 12_000).speed).toEqual({ rowsPerSecond: 100, etaSeconds: undefined });
    expect(tableCopyProgress(round, table, 200, 12_000).speed?.etaSeconds).toBeUndefined();
  });

  it('a unit redone (fewer rows than measured) restarts the measure', () => {
    const round = newCopyRound('snap');
    round.rate.set(table, { at: 10_000, rows: 500 });
    round.live.set('u1', { table, rows: 50, bytes: 0 });
    expect(tableCopyProgress(round, table, 1000, 12_000)).toEqual({ rows: 50, bytes: 0, mark: { at: 12_000, rows: 50 } });
  });

  it('refreshCopyProgress writes it into the status and keeps the last rate when there is no new one', () => {
    const round = newCopyRound('snap');
    const ts: TableStatus = { source: table, target: 'public.t_r', state: 'copying', rowsCopied: 0, rowsTotal: 1000, rowsPerSecond: 42, etaSeconds: 9 };
    round.live.set('u1', { table, rows: 10, bytes: 80 });
    refreshCopyProgress(round, ts, 10_000);
    expect(ts).toMatchObject({ rowsCopied: 10, bytesCopied: 80, rowsPerSecond: 42, etaSeconds: 9 });
    expect(round.rate.get(table)).toEqual({ at: 10_000, rows: 10 });
    round.live.set('u1', { table, rows: 510, bytes: 4080 });
    refreshCopyProgress(round, ts, 11_000);
    expect(ts).toMatchObject({ rowsCopied: 510, rowsPerSecond: 500, etaSeconds: 1 });
  });

  it('copyDetails lists tables in flight with percent, rate, ETA and ranges, then those building indexes', () => {
    const tables: TableStatus[] = [
      { source: 'public.a', target: 'public.a_r', state: 'copied', rowsCopied: 5 },
      { source: 'public.b', target: 'public.b_r', state: 'copying', rowsCopied: 50, rowsTotal: 200, rowsPerSecond: 10, etaSeconds: 15, ranges: { done: 1, total: 4 } },
      { source: 'public.c', target: 'public.c_r', state: 'indexing', rowsCopied: 7 },
    ];
    expect(copyDetails(tables)).toBe(
      '**MIGRATING_DATA**\n\n1/3 tables copied\n- public.b: 50/200 rows (25%), 10 rows/s, about 15 s left, ranges 1/4\n- public.c: copied, building indexes',
    );
  });

  it('by reference: bytes per second over the round, the ETA from the bytes left', () => {
    expect(copyRate(1000, 5000, 0.5)).toBeUndefined();
    expect(copyRate(1000, 5000, 2)).toEqual({ bytesPerSecond: 500, etaSeconds: 8 });
    expect(copyRate(1000, undefined, 2)).toEqual({ bytesPerSecond: 500, etaSeconds: undefined });
    expect(copyRate(0, 5000, 2)).toEqual({ bytesPerSecond: 0, etaSeconds: undefined });
    // The estimate was low: never a negative ETA.
    expect(copyRate(6000, 5000, 2)).toEqual({ bytesPerSecond: 3000, etaSeconds: 0 });
  });
});

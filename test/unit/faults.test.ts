import { describe, expect, it } from 'vitest';
import { cutoverRetryDelayMs } from '../../workflows/state';
import { existingDeadline, fenceFunctionBody } from '../../activities/stop-writes';
import { normalizeSpec } from '../../activities/spec';

describe('bounded write stop', () => {
  it('waits at least one write-stop bound before the next attempt, doubling, at most 10 minutes', () => {
    expect(cutoverRetryDelayMs(1, 30)).toBe(30_000);
    expect(cutoverRetryDelayMs(2, 30)).toBe(60_000);
    expect(cutoverRetryDelayMs(3, 30)).toBe(120_000);
    expect(cutoverRetryDelayMs(10, 30)).toBe(600_000);
    expect(cutoverRetryDelayMs(1000, 5)).toBe(600_000);
  });

  it('the fence function rejects writes only until its deadline', () => {
    const body = fenceFunctionBody('m1', '2026-12-05 04:00:30.123+00');
    expect(body).toContain(`IF clock_timestamp() < '2026-12-05 04:00:30.123+00'::timestamptz THEN`);
    expect(body).toContain(`USING ERRCODE = 'read_only_sql_transaction'`);
    expect(body).toContain('RETURN NULL');
    // Unbounded (keep-source-read-only after the cutover): no way out but a release.
    expect(fenceFunctionBody('m1')).not.toContain('clock_timestamp');
    // A retried fence keeps the deadline the first try committed.
    expect(existingDeadline(body)).toBe('2026-12-05 04:00:30.123+00');
    expect(existingDeadline(fenceFunctionBody('m1'))).toBeUndefined();
    expect(existingDeadline('BEGIN RETURN NULL; END')).toBeUndefined();
  });

  it('spec: maxWriteStopSeconds defaults to 30, the WAL budget is checked', () => {
    const base = { source: 'postgres://a@h/d', target: 'postgres://a@h/e' };
    expect(normalizeSpec(base).cutover.maxWriteStopSeconds).toBe(30);
    expect(normalizeSpec({ ...base, cutover: { maxWriteStopSeconds: 12 } }).cutover.maxWriteStopSeconds).toBe(12);
    expect(() => normalizeSpec({ ...base, cutover: { maxWriteStopSeconds: 1 } })).toThrow(/cutover.maxWriteStopSeconds/);
    expect(normalizeSpec({ ...base, wal: { warnRetainedBytes: 10, maxRetainedBytes: 20 } }).wal).toEqual({ warnRetainedBytes: 10, maxRetainedBytes: 20 });
    expect(() => normalizeSpec({ ...base, wal: { warnRetainedBytes: 30, maxRetainedBytes: 20 } })).toThrow(/warnRetainedBytes must not exceed maxRetainedBytes/);
  });
});

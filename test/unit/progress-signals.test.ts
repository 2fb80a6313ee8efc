import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import type { Context } from '@temporalio/activity';
import { CopyProgressReporter, IndexProgressReporter, LONG_RUN_REPORTS, MAX_LONG_RUN_REPORTS, nextReportAfter } from '../../activities/progress-signals';

/** A client that counts the signals it is asked to send (the reporters' only use of Temporal). */
function countingClient() {
  const sent: string[] = [];
  const client = { workflow: { getHandle: () => ({ signal: async (def: { name: string }) => void sent.push(def.name) }) } };
  return { sent, ctx: { client } as unknown as Context };
}

const HOUR = 3_600_000;

describe('progress signals stay bounded over a long run (every signal is a history event)', () => {
  beforeEach(() => void vi.useFakeTimers());
  afterEach(() => void vi.useRealTimers());

  it('the wait grows with the run past an hour', () => {
    expect(nextReportAfter(30_000, 10 * 60_000)).toBe(30_000);
    expect(nextReportAfter(30_000, 10 * HOUR)).toBe((10 * HOUR) / LONG_RUN_REPORTS);
  });

  /** A copy whose rows move every 5 s for `hours`: the signals its worker sends. */
  async function copySignals(hours: number): Promise<number> {
    const { sent, ctx } = countingClient();
    const reporter = new CopyProgressReporter();
    const steps = (hours * HOUR) / 5000;
    for (let i = 0; i < steps; i++) {
      reporter.update(ctx, 'wf', 'run', { table: 't', unit: 't', rows: i, bytes: i });
      await vi.advanceTimersByTimeAsync(5000);
    }
    reporter.done('wf', 'run', 't');
    return sent.length;
  }

  it('a ten-hour copy: about 120 + 120·ln(10) signals, not one every 30 s (1,200)', async () => {
    const n = await copySignals(10);
    expect(n).toBeGreaterThan(350);
    expect(n).toBeLessThan(450);
  });

  it('a month-long copy: under the cap', async () => {
    const n = await copySignals(24 * 30);
    expect(n).toBeGreaterThan(800);
    expect(n).toBeLessThanOrEqual(MAX_LONG_RUN_REPORTS);
  }, 60_000);

  it('an index build of a day: a few hundred signals, and the last, empty report still goes', async () => {
    const { sent, ctx } = countingClient();
    const reporter = new IndexProgressReporter(ctx, 'wf', 'run', 'b');
    for (let i = 0; i < (24 * HOUR) / 5000; i++) {
      reporter.update([{ table: 't', index: 'i', phase: 'building index', percent: i % 100, seconds: i * 5 }]);
      await vi.advanceTimersByTimeAsync(5000);
    }
    const during = sent.length;
    expect(during).toBeGreaterThan(400);
    expect(during).toBeLessThan(600);
    await reporter.close();
    expect(sent.length).toBe(during + 1);
  }, 60_000);
});

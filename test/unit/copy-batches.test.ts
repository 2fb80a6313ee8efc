import { describe, expect, it } from 'vitest';
import { assignBatches } from '../../activities/plan-store';

const MB = 1024 ** 2;

describe('assignBatches', () => {
  it('groups small tables up to the table and byte limits, biggest first, in plan positions', () => {
    const plans = [1, 5, 2, 3, 4].map((n) => ({ bytes: n * MB }));
    expect(assignBatches(plans, { maxTables: 2, maxBytes: 64 * MB })).toEqual([
      { batch: 0, ord: 1 },
      { batch: 0, ord: 4 },
      { batch: 1, ord: 3 },
      { batch: 1, ord: 2 },
      { batch: 2, ord: 0 },
    ]);
    const nine = Array.from({ length: 5 }, () => ({ bytes: 9 * MB }));
    expect(assignBatches(nine, { maxTables: 100, maxBytes: 40 * MB }).map((u) => u.batch)).toEqual([0, 0, 0, 0, 1]);
  });

  it('gives a table of a quarter of the bytes, and each page range, a batch of its own', () => {
    const plans = [
      { bytes: MB },
      { bytes: 500 * MB, ranges: [{ id: '1/2', pageFrom: 0, pageTo: 10 }, { id: '2/2', pageFrom: 10 }] },
      { bytes: 16 * MB },
      { bytes: 2 * MB },
    ];
    expect(assignBatches(plans, { maxTables: 100, maxBytes: 64 * MB })).toEqual([
      { batch: 0, ord: 1, range: { id: '1/2', pageFrom: 0, pageTo: 10 } },
      { batch: 1, ord: 1, range: { id: '2/2', pageFrom: 10 } },
      { batch: 2, ord: 2 },
      { batch: 3, ord: 3 },
      { batch: 3, ord: 0 },
    ]);
  });

  it('makes thousands of tiny tables a few dozen batches', () => {
    const units = assignBatches(Array.from({ length: 10_000 }, () => ({ bytes: 16_384 })), { maxTables: 100, maxBytes: 64 * MB });
    expect(new Set(units.map((u) => u.batch)).size).toBe(100);
    expect(assignBatches([], { maxTables: 100, maxBytes: MB })).toEqual([]);
  });
});

import { describe, expect, it } from 'vitest';
import { assignBatches } from '../../activities/plan-store';
import { MAX_BATCHES, batchLimits } from '../../activities/copy-batch';
import { capRanges, MAX_TOTAL_RANGES, splitPages } from '../../activities/copy-plan';
import { applyCopyState, type CopyStateReport } from '../../workflows/copy-state';
import { newCopyRound } from '../../workflows/progress';
import type { TableStatus } from '../../workflows/contract';

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

  it('bounds the batch count whatever the table count and sizes: batches grow instead', () => {
    for (const [n, bytes] of [
      [100_000, 16_384],
      [10_000, 20 * MB],
      [5_000, 200 * MB],
    ] as const) {
      const plans = Array.from({ length: n }, (_, i) => ({ bytes: bytes * (1 + (i % 7)) }));
      const units = assignBatches(plans, batchLimits(plans, { maxTables: 100, maxBytes: 64 * MB }));
      const batches = new Set(units.map((u) => u.batch)).size;
      expect({ n, bytes, bounded: batches <= 3 * MAX_BATCHES }).toEqual({ n, bytes, bounded: true });
      expect(units).toHaveLength(n);
    }
    // Below the bound, the limits asked for stand.
    expect(batchLimits([{ bytes: MB }], { maxTables: 100, maxBytes: 64 * MB })).toEqual({ maxTables: 100, maxBytes: 64 * MB });
  });

  it('bounds the page ranges in all whatever the number of large tables; a few large ones keep theirs', () => {
    // Two 100 GB tables at parallelism 4: 32 ranges each, as asked.
    expect(capRanges([32, 32, 0, 0], MAX_TOTAL_RANGES)).toEqual([32, 32, 0, 0]);
    // One range asked for (splitAboveBytes under rangeBytes), nothing capped: kept as asked.
    expect(capRanges([1, 0], MAX_TOTAL_RANGES)).toEqual([1, 0]);
    // Twenty of them: scaled down in proportion.
    const twenty = capRanges(Array.from({ length: 20 }, () => 32), MAX_TOTAL_RANGES);
    expect(twenty).toEqual(Array.from({ length: 20 }, () => 12));
    // Two thousand 10 GB tables (every one over splitAboveBytes): copied whole, in bounded batches.
    const GB = 1024 ** 3;
    const counts = capRanges(Array.from({ length: 2_000 }, () => 32), MAX_TOTAL_RANGES);
    expect(counts.every((n) => n === 0)).toBe(true);
    const mixed = [...Array.from({ length: 3 }, () => 32), ...Array.from({ length: 500 }, () => 8), ...Array.from({ length: 5_000 }, () => 0)];
    const capped = capRanges(mixed, MAX_TOTAL_RANGES);
    expect(capped.reduce((a, b) => a + b, 0)).toBeLessThanOrEqual(MAX_TOTAL_RANGES);
    expect(capped.slice(0, 3).every((n) => n > 1)).toBe(true);
    // The batches of such a plan: ranges plus whole-table batches, bounded.
    const plans = capped.map((n, i) => (n > 0 ? { bytes: 100 * GB, ranges: splitPages(1_000_000, n) } : { bytes: (i % 2 ? 10 : 1) * GB }));
    const units = assignBatches(plans, batchLimits(plans, { maxTables: 100, maxBytes: 64 * MB }));
    expect(new Set(units.map((u) => u.batch)).size).toBeLessThanOrEqual(MAX_TOTAL_RANGES + 3 * MAX_BATCHES);
  });
});

describe('applyCopyState (the migration reading its copy child)', () => {
  const table = (source: string, state: TableStatus['state'], rowsCopied = 0): TableStatus => ({ source, target: source, state, rowsCopied });
  const report = (over: Partial<CopyStateReport>): CopyStateReport => ({ snapshot: 's1', progress: { tablesTotal: 3, tablesCopied: 0, rowsCopied: 0, bytesCopied: 0 }, tables: [], notices: [], copyMs: [], running: [], landed: false, ...over });
  const migration = () => {
    const round = newCopyRound('s1');
    round.copyingIn = new Map();
    return { tables: [table('a', 'pending'), table('b', 'pending'), table('c', 'pending')], notices: [] as string[], progress: { tablesTotal: 3, tablesCopied: 0, rowsCopied: 0, bytesCopied: 0 }, copyMs: new Map<string, number>(), round };
  };

  it('takes the counters, the changed tables, notices and copy times; a landed round releases the snapshot', () => {
    const m = migration();
    applyCopyState(m, report({ progress: { tablesTotal: 3, tablesCopied: 2, rowsCopied: 40, bytesCopied: 800, batchesDone: 1 }, tables: [[1, table('b', 'indexing', 20)]], notices: ['skipped x'], copyMs: [['b', 12]], running: ['batch 1'] }));
    expect(m.progress).toMatchObject({ tablesCopied: 2, rowsCopied: 40, batchesDone: 1 });
    expect(m.tables.map((t) => t.state)).toEqual(['pending', 'indexing', 'pending']);
    expect(m.notices).toEqual(['skipped x']);
    expect(m.copyMs.get('b')).toBe(12);
    expect([...m.round.running.keys()]).toEqual(['batch 1']);
    expect(m.round.landed).toBe(false);
    applyCopyState(m, report({ landed: true }));
    expect(m.round.landed).toBe(true);
  });

  it("ignores a report of another round's snapshot", () => {
    const m = migration();
    applyCopyState(m, report({ snapshot: 's0', landed: true, progress: { tablesTotal: 3, tablesCopied: 3, rowsCopied: 1, bytesCopied: 1 } }));
    expect(m.round.landed).toBe(false);
    expect(m.progress.tablesCopied).toBe(0);
  });

  it('shows a table copying in a unit that ended without landing (a pause) as pending again, not one whose unit still runs', () => {
    const m = migration();
    Object.assign(m.tables[0]!, { state: 'copying', rowsCopied: 500, bytesCopied: 9000 });
    Object.assign(m.tables[2]!, { state: 'copying', rowsCopied: 7 });
    m.round.copyingIn!.set('a', 'batch 0').set('c', 'batch 2');
    m.round.running.set('batch 0', 'batch 0').set('batch 2', 'batch 2');
    m.round.live.set('batch 0', { table: 'a', rows: 500, bytes: 9000 }).set('batch 2', { table: 'c', rows: 7, bytes: 70 });
    applyCopyState(m, report({ running: ['batch 2'] }));
    expect(m.tables[0]).toMatchObject({ state: 'pending', rowsCopied: 0, bytesCopied: undefined });
    expect(m.tables[2]).toMatchObject({ state: 'copying', rowsCopied: 7 });
    expect([...m.round.live.keys()]).toEqual(['batch 2']);
  });

  it("shows a unit's live report that came before the child said it runs once a report lists it; drops it at the second report that does not", () => {
    const m = migration();
    m.round.early = new Map();
    m.round.early.set('batch 0', { report: { table: 'a', rows: 300, bytes: 3000 }, missed: 0 }).set('batch 1', { report: { table: 'b', rows: 5, bytes: 50 }, missed: 0 });
    applyCopyState(m, report({ running: ['batch 0'] }));
    expect(m.tables[0]).toMatchObject({ state: 'copying', rowsCopied: 300, bytesCopied: 3000 });
    expect(m.round.live.get('batch 0')).toEqual({ table: 'a', rows: 300, bytes: 3000 });
    expect(m.tables[1]!.state).toBe('pending');
    expect([...m.round.early.keys()]).toEqual(['batch 1']); // the child's report may have been sent before it started
    applyCopyState(m, report({ running: ['batch 0'] }));
    expect([...m.round.early.keys()]).toEqual([]); // ended before the child reported it
    expect(m.tables[1]!.state).toBe('pending');
  });
});

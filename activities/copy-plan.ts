/**
 * MIGRATING_DATA's copy plan: each table's size and, for the large ones, the page ranges it is copied
 * in (activities/copy.ts copies them; copy-batch.ts groups the rest into batches).
 */
import { connect } from './db';
import { during } from './errors';
import { qname } from './sql';
import { DEFAULT_SPLIT_ABOVE_BYTES, type ConnectionSpec, type QualifiedName } from './spec';
import type { CopyRange } from './copy';

export interface PlanCopiesInput {
  source: ConnectionSpec;
  tables: QualifiedName[];
  /** Tables larger than this are copied in ranges (default DEFAULT_SPLIT_ABOVE_BYTES, 4 GiB). */
  splitAboveBytes?: number;
  /** Aim for ranges of about this size (default 256 MiB). */
  rangeBytes?: number;
  /** A split table gets a multiple of this many ranges (the copy parallelism), so that all copiers help. */
  minRanges?: number;
  /** At most this many ranges per table (default 32). */
  maxRanges?: number;
  /** At most this many ranges in all (default MAX_TOTAL_RANGES). */
  maxTotalRanges?: number;
}

/**
 * Page ranges in all, whatever the number of large tables: each range is a copy activity of its own
 * (a few history events), and the copy's run does not continue as new. Many large tables need no
 * ranges to keep the copiers busy; a few very large ones keep theirs.
 */
export const MAX_TOTAL_RANGES = 256;

/**
 * Ranges per table (0: copied whole) scaled down in proportion when they add up to more than `cap`;
 * a table left with one range or none is then copied whole. The sum is at most `cap`. Pure.
 */
export function capRanges(wanted: readonly number[], cap: number): number[] {
  const total = wanted.reduce((n, w) => n + w, 0);
  if (total <= cap) return [...wanted];
  return wanted.map((w) => Math.floor((w * cap) / total)).map((n) => (n > 1 ? n : 0));
}

export interface CopyPlan {
  /**
   * Size of the table with its TOAST data (its partitions' for a partitioned one): the biggest are
   * copied first, and it decides the split. A table of wide values is mostly TOAST: by its heap alone
   * it would look small.
   */
  bytes: number;
  /**
   * Page ranges covering the whole heap (the last one open-ended, so pages added since the plan are
   * read too; rows in them are invisible to the snapshot anyway), or absent: one whole-table copy.
   */
  ranges?: CopyRange[];
}

/**
 * How to copy each table, in the order given. Plain tables only are split: a partitioned table has
 * no pages of its own (its copy reads its partitions through the root).
 */
export async function planCopies(input: PlanCopiesInput): Promise<CopyPlan[]> {
  const splitAbove = input.splitAboveBytes ?? DEFAULT_SPLIT_ABOVE_BYTES;
  const rangeBytes = Math.max(8192, input.rangeBytes ?? 256 * 1024 ** 2);
  const maxRanges = Math.max(1, input.maxRanges ?? 32);
  const minRanges = Math.min(maxRanges, Math.max(1, input.minRanges ?? 1));
  const c = await connect(input.source, { applicationName: 'pg-dts copy plan' });
  try {
    const r = await c.query<{ relkind: string; bytes: string; heap: string; block: number }>(
      `SELECT k.relkind::text,
              (CASE WHEN k.relkind = 'p'
                    THEN (SELECT coalesce(sum(pg_table_size(t.relid)), 0) FROM pg_partition_tree(k.oid) t WHERE t.isleaf)
                    ELSE pg_table_size(k.oid) END)::text AS bytes,
              pg_relation_size(k.oid)::text AS heap,
              current_setting('block_size')::int AS block
         FROM unnest($1::text[]) WITH ORDINALITY AS u(name, ord)
         JOIN pg_class k ON k.oid = u.name::regclass
        ORDER BY u.ord`,
      [input.tables.map(qname)],
    );
    if (r.rows.length !== input.tables.length) throw new Error(`planned ${r.rows.length} of ${input.tables.length} tables`);
    const wanted = r.rows.map((row) => {
      const bytes = Number(row.bytes);
      if (row.relkind !== 'r' || bytes <= splitAbove) return 0;
      // A multiple of the parallelism, so that the last round of ranges keeps every copier busy.
      const n = Math.max(minRanges, Math.ceil(bytes / rangeBytes));
      return Math.min(maxRanges, Math.ceil(n / minRanges) * minRanges);
    });
    const counts = capRanges(wanted, input.maxTotalRanges ?? MAX_TOTAL_RANGES);
    return r.rows.map((row, i) => {
      const bytes = Number(row.bytes);
      if (counts[i]! === 0) return { bytes };
      // Ranges of heap pages: a row's TOAST data goes with it, so equal pages carry about equal bytes.
      return { bytes, ranges: splitPages(Math.max(1, Math.ceil(Number(row.heap) / row.block)), counts[i]!) };
    });
  } catch (err) {
    throw during(err, 'plan the table copies');
  } finally {
    await c.end().catch(() => undefined);
  }
}

/** `n` contiguous page ranges over `pages` pages; the last is open-ended. Pure. */
export function splitPages(pages: number, n: number): CopyRange[] {
  const per = Math.max(1, Math.ceil(pages / Math.max(1, Math.min(n, pages))));
  const count = Math.max(1, Math.ceil(pages / per));
  const ranges: CopyRange[] = [];
  for (let i = 0; i < count; i++) {
    const id = `${i + 1}/${count}`;
    ranges.push(i === count - 1 ? { id, pageFrom: i * per } : { id, pageFrom: i * per, pageTo: (i + 1) * per });
  }
  return ranges;
}

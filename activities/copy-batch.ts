/**
 * MIGRATING_DATA at scale: the copy units (whole tables, page ranges of large ones) are planned once
 * into batches stored with the plan on the target (plan-store.ts), and one activity copies one batch.
 * A schema of thousands of tiny tables is then a few dozen activities instead of thousands, and the
 * workflow's history grows with the batches, not with the tables.
 */
import { copyTable, copyWholeTables, type CopyHooks, type CopyProgress } from './copy';
import { planCopies, type CopyPlan } from './copy-plan';
import { assignBatches, readBatch, readDefs, storeCopyPlan, type PlanRef } from './plan-store';
import type { ConnectionSpec, QualifiedName } from './spec';

/** Small tables share a batch up to this many of them... */
export const BATCH_MAX_TABLES = 100;
/** ...or this many bytes together. */
export const BATCH_MAX_BYTES = 64 * 1024 ** 2;
/**
 * Batches of whole tables aimed at, at most: the limits above grow for a database with more (each
 * batch is two activities in the workflow's history). Page ranges of very large tables come on top.
 */
export const MAX_BATCHES = 250;

export interface PlanCopyBatchesInput {
  source: ConnectionSpec;
  plan: PlanRef;
  splitAboveBytes?: number;
  rangeBytes?: number;
  minRanges?: number;
  maxBatchTables?: number;
  maxBatchBytes?: number;
}

export interface CopyBatchesPlan {
  batches: number;
  /** Tables copied in page ranges (plan order) and how many ranges each: their post-load waits for the last. */
  ranged: Array<{ ord: number; ranges: number }>;
  bytes: number;
}

export async function planCopyBatches(input: PlanCopyBatchesInput): Promise<CopyBatchesPlan> {
  const defs = await readDefs(input.plan);
  const plans = await planCopies({
    source: input.source,
    tables: defs.map((d) => d.source),
    splitAboveBytes: input.splitAboveBytes,
    rangeBytes: input.rangeBytes,
    minRanges: input.minRanges,
  });
  const units = assignBatches(plans, batchLimits(plans, { maxTables: input.maxBatchTables ?? BATCH_MAX_TABLES, maxBytes: input.maxBatchBytes ?? BATCH_MAX_BYTES }));
  await storeCopyPlan(input.plan, plans, units);
  return {
    batches: units.reduce((n, u) => Math.max(n, u.batch + 1), 0),
    ranged: plans.flatMap((p, ord) => (p.ranges ? [{ ord, ranges: p.ranges.length }] : [])),
    bytes: plans.reduce((n, p) => n + p.bytes, 0),
  };
}

/**
 * The batch limits for these tables: the given ones, grown so that whole tables make about
 * MAX_BATCHES batches at most (each batch is a few history events; bigger batches instead of more).
 * A table of a quarter of maxBytes is alone: at most MAX_BATCHES of those. Pure.
 */
export function batchLimits(plans: readonly CopyPlan[], wanted: { maxTables: number; maxBytes: number }): { maxTables: number; maxBytes: number } {
  const whole = plans.filter((p) => !p.ranges);
  const bytes = whole.reduce((n, p) => n + p.bytes, 0);
  return {
    maxTables: Math.max(wanted.maxTables, Math.ceil(whole.length / MAX_BATCHES)),
    maxBytes: Math.max(wanted.maxBytes, Math.ceil((4 * bytes) / MAX_BATCHES)),
  };
}

export interface CopyBatchInput {
  source: ConnectionSpec;
  target: ConnectionSpec;
  plan: PlanRef;
  batch: number;
  snapshot?: string;
  /** The snapshot's position (its slot's consistent point): whole tables are recorded with it, ranged ones' rounds carry it. */
  snapshotLsn?: string;
  /** Earlier rounds' snapshots whose whole-table copies stand (copyWholeTables). */
  keep?: string[];
  /** Tables of plan order below this are the workflow's page of tables: their own results come back. */
  track?: number;
  /** The migration whose mark the target tables must carry before they are emptied (activities/marks.ts). */
  migrationId?: string;
  /** spec.copy.maxLockWaitSeconds: read by the activity's lock watch (activities/lock-wait.ts). */
  maxLockWaitSeconds?: number;
  /** A copy child's migration: the batch's progress reports go there (workflows/copy-child.ts). */
  reportTo?: { workflowId: string; runId: string };
}

export interface CopyBatchResult extends CopyProgress {
  durationMs: number;
  /** Units copied (whole tables and ranges). */
  units: number;
  /** The page ranges this batch copied, by table (the workflow counts them down). */
  ranges: number[];
  /** Results of the tracked tables among them (bounded by the batch size). */
  tables: Array<{ ord: number; rows: number; bytes: number; durationMs: number }>;
  /** Whole tables found committed in a kept snapshot (not copied again), and those copied a second time. */
  kept?: number;
  recopied?: number;
}

/** Copies the batch's whole tables on one pair of sessions, then its page ranges (one at a time), all inside the snapshot. */
export async function copyBatch(
  input: CopyBatchInput,
  hooks: CopyHooks & {
    /** The unit (table or range) the batch moves to: `table` its source as displayed, `names` both sides. */
    unit?: (u: { table: string; names: { source: QualifiedName; target: QualifiedName }; ord: number; at: CopyProgress }) => void;
    /** A whole table, or one page range of a large one, has landed (one log line each). */
    copied?: (u: { table: string; range?: string; rows: number; bytes: number; durationMs: number }) => void;
  },
): Promise<CopyBatchResult> {
  const started = Date.now();
  const units = await readBatch(input.plan, input.batch);
  const out: CopyBatchResult = { rows: 0, bytes: 0, durationMs: 0, units: 0, ranges: [], tables: [], ...(input.snapshotLsn !== undefined ? { kept: 0, recopied: 0 } : {}) };
  const track = input.track ?? 0;
  const note = (ord: number, r: CopyProgress & { durationMs: number }, range: boolean) => {
    out.rows += r.rows;
    out.bytes += r.bytes;
    out.units++;
    if (range) out.ranges.push(ord);
    if (ord < track) out.tables.push({ ord, rows: r.rows, bytes: r.bytes, durationMs: r.durationMs });
  };
  const whole = units.filter((u) => !u.range);
  if (whole[0]) {
    hooks.unit?.({ table: `${whole[0].def.source.schema}.${whole[0].def.source.name}`, names: whole[0].def, ord: whole[0].ord, at: { rows: out.rows, bytes: out.bytes } });
    const before = { ...out };
    await copyWholeTables(
      {
        source: input.source,
        target: input.target,
        snapshot: input.snapshot,
        snapshotLsn: input.snapshotLsn,
        keep: input.keep,
        migrationId: input.migrationId,
        tables: whole.map((u) => ({ source: u.def.source, target: u.def.target, copyColumns: u.def.copyColumns })),
      },
      {
        heartbeat: (p) => hooks.heartbeat({ rows: before.rows + p.rows, bytes: before.bytes + p.bytes }),
        signal: hooks.signal,
        tableDone: (i, r) => {
          const u = whole[i]!;
          note(u.ord, r, false);
          if (r.kept) out.kept = (out.kept ?? 0) + 1;
          if (r.recopied) out.recopied = (out.recopied ?? 0) + 1;
          hooks.copied?.({ table: `${u.def.source.schema}.${u.def.source.name}`, rows: r.rows, bytes: r.bytes, durationMs: r.durationMs });
          const next = whole[i + 1];
          if (next) hooks.unit?.({ table: `${next.def.source.schema}.${next.def.source.name}`, names: next.def, ord: next.ord, at: { rows: out.rows, bytes: out.bytes } });
        },
      },
    );
  }
  for (const u of units.filter((x) => x.range)) {
    hooks.unit?.({ table: `${u.def.source.schema}.${u.def.source.name}`, names: u.def, ord: u.ord, at: { rows: out.rows, bytes: out.bytes } });
    const base = { rows: out.rows, bytes: out.bytes };
    const r = await copyTable(
      {
        source: input.source,
        target: input.target,
        table: { source: u.def.source, target: u.def.target, copyColumns: u.def.copyColumns },
        snapshot: input.snapshot,
        range: u.range,
        migrationId: input.migrationId,
      },
      { heartbeat: (p) => hooks.heartbeat({ rows: base.rows + p.rows, bytes: base.bytes + p.bytes }), signal: hooks.signal },
    );
    note(u.ord, r, true);
    hooks.copied?.({ table: `${u.def.source.schema}.${u.def.source.name}`, range: u.range!.id, rows: r.rows, bytes: r.bytes, durationMs: r.durationMs });
  }
  out.durationMs = Date.now() - started;
  return out;
}

/** The definitions of the tables a batch copied whole (a ranged table is finished after its last range). */
export async function batchDefs(plan: PlanRef, batch: number) {
  return (await readBatch(plan, batch)).filter((u) => !u.range).map((u) => u.def);
}

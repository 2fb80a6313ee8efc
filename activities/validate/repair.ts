/**
 * VALIDATING, repair (validation.repair, `dts verify --repair`): the rows the chunked checksum names as
 * missing on the target, extra on it or different are rewritten on the target from the source, then
 * every repaired chunk is compared again.
 *
 * Invariants:
 *  - bounded: the comparison narrows each differing chunk down to at most `maxRows` + 1 rows; more rows
 *    in all (or a range too big to list, or a table that could not be compared) and nothing is written;
 *  - all or nothing: every table's repair is one target transaction, read from one source snapshot
 *    (during a migration the source is fenced, so that snapshot is the source at the fence);
 *  - written as the apply writes: the apply's session rules (session_replication_role = replica, or, for
 *    a target role that may not set it, nothing that would fire on the tables: activities/apply),
 *    the copied columns only (generated columns are computed by the target), identity columns taking the
 *    source's values (COPY does what INSERT's OVERRIDING SYSTEM VALUE does);
 *  - only tables pg-dts created are written: every target relation (partitions too) must carry the
 *    migration's mark (activities/marks.ts), or any pg-dts migration's mark for `dts verify --repair`.
 *
 * Keyed tables: the rows with the differing keys are deleted on the target and copied again from the
 * source (a missing row is only copied, an extra one only deleted). Tables without a key are one chunk,
 * which is replaced whole: its rows count against the limit.
 */
import { pipeline } from 'node:stream/promises';
import type { Client } from 'pg';
import type { RepairReport } from '../../workflows/contract';
import { prepareTargetSession } from '../apply/target';
import { CopyInFramed, CopyOut } from '../copy-out';
import { connect, describeConnection, sendCancelRequest } from '../db';
import { during } from '../errors';
import { markText } from '../marks';
import { displayName, type ConnectionSpec } from '../spec';
import { formatKey, keyId, keyRecord, keyValues, ROW_MD5_KEY } from './compare';
import type { MismatchKind, TableValidationResult, ValidateHooks, ValidateTablesInput } from './contract';
import { openSides } from './shared';
import { compareTables, type RepairNeed } from './strict';
import { throwIfAborted, TableSide } from './engine';
import { BEGIN_READ, copyInSql, copyOutAllSql, copyOutByKeysSql, deleteAllSql, deleteByKeysSql, unmarkedRelationsSql, type KeyRange } from './sql';
import { dropConnection } from '../pg-internals';

export { DEFAULT_REPAIR_MAX_ROWS } from '../spec';
/** Keys and chunks listed per table in a repair report (counts cover them all). */
export const REPAIR_LIST_CAP = 100;
/** Keys per DELETE and per COPY of a keyed repair. */
const KEYS_PER_STATEMENT = 1000;

export interface RepairSettings {
  /** The most rows one repair may rewrite, over every table. */
  maxRows: number;
  /** Only target tables with this migration's mark are written; undefined: any pg-dts migration's mark. */
  migrationId?: string;
  /** What the limit is called in messages (`validation.repairMaxRows`, `--repair-max-rows`). */
  limitName?: string;
  /**
   * false: write as the apply does for a target role that may not set session_replication_role
   * (MigrationPlan.applyReplicaRole): nothing may fire on the tables. Default: replica mode.
   */
  replicaRole?: boolean;
}

export interface RepairOutcome {
  /** Tables and rows repaired. */
  tables: number;
  rows: number;
  /** Why nothing was repaired although rows differ. */
  refused?: string;
}

/** What the repair of one table will do: its need, the keys (deduplicated) and the rows it counts. */
interface RepairJob {
  need: RepairNeed;
  result: TableValidationResult;
  keyed: boolean;
  keys: string[];
  kinds: Map<string, MismatchKind>;
  rows: number;
}

/**
 * Compares (strict.ts compareTables), then repairs what differs within `repair.maxRows`, then
 * compares the repaired chunks again. The results' verdicts are the ones after the repair; each
 * repaired table carries its RepairReport.
 */
export async function validateAndRepair(
  input: ValidateTablesInput,
  repair: RepairSettings,
  hooks: ValidateHooks = {},
): Promise<{ results: TableValidationResult[]; repair: RepairOutcome }> {
  const maxRows = Math.max(0, Math.floor(repair.maxRows));
  const needs: RepairNeed[] = [];
  const results = await compareTables(input, hooks, { cap: maxRows + 1, needs });
  const outcome: RepairOutcome = { tables: 0, rows: 0 };
  if (results.every((r) => r.ok)) return { results, repair: outcome };

  const plan = planRepair(input, results, needs, maxRows, repair.limitName ?? 'the repair limit');
  if (typeof plan === 'string') return { results, repair: { ...outcome, refused: plan } };
  try {
    const unmarked = await unmarkedTargets(input.target, plan.map((j) => input.tables[j.need.index]!.target), repair.migrationId);
    if (unmarked.length) {
      const whose = repair.migrationId ? `migration ${repair.migrationId}` : 'a pg-dts migration';
      return {
        results,
        repair: { ...outcome, refused: `nothing was repaired: pg-dts writes only into tables it created, and ${unmarked.join(', ')} ${unmarked.length === 1 ? 'does' : 'do'} not carry the mark of ${whose}` },
      };
    }
    const written = await rewriteOnTarget(input, plan, repair.replicaRole ?? true, hooks);
    await recheck(input, plan, written, hooks);
  } catch (err) {
    throw during(err, 'repair');
  }
  return { results, repair: { tables: plan.length, rows: plan.reduce((n, j) => n + j.rows, 0) } };
}

/** The jobs, or why nothing may be repaired (every reason at once). */
function planRepair(input: ValidateTablesInput, results: TableValidationResult[], needs: RepairNeed[], maxRows: number, limitName: string): RepairJob[] | string {
  const byIndex = new Map(needs.map((n) => [n.index, n]));
  const jobs: RepairJob[] = [];
  const problems: string[] = [];
  results.forEach((result, i) => {
    if (result.ok) return;
    const t = input.tables[i]!;
    const where = `${result.source} -> ${result.target}`;
    const need = byIndex.get(i);
    if (result.error) return void problems.push(`${where}: ${result.error}`);
    if (!need) return void problems.push(`${where}: the checksum named no row to repair (the sample or the row counts differ)`);
    const keyed = t.keyColumns.length > 0;
    if (keyed && need.truncated) return void problems.push(`${where}: more than ${maxRows} rows differ (${limitName})`);
    const kinds = new Map<string, MismatchKind>();
    for (const f of need.found) kinds.set(f.id, kinds.has(f.id) && kinds.get(f.id) !== f.kind ? 'different' : f.kind);
    const keys = [...kinds.keys()];
    // A table without a key is one chunk, replaced whole: every row of it on either side is rewritten.
    const rows = keyed ? keys.length : Math.max(result.sourceRows, result.targetRows);
    jobs.push({ need, result, keyed, keys, kinds, rows });
  });
  const total = jobs.reduce((n, j) => n + j.rows, 0);
  if (total > maxRows) {
    const parts = jobs.map((j) => `${j.result.source}: ${j.rows}${j.keyed ? '' : ' (no key: its whole chunk)'}`);
    const listed = parts.length > 20 ? [...parts.slice(0, 20), `${parts.length - 20} more tables`] : parts;
    problems.push(`${total} rows would be rewritten (${listed.join(', ')}), more than ${limitName} (${maxRows})`);
  }
  if (problems.length) return `nothing was repaired:\n${problems.map((p) => `  - ${p}`).join('\n')}`;
  return jobs;
}

async function unmarkedTargets(target: ConnectionSpec, tables: ValidateTablesInput['tables'][number]['target'][], migrationId: string | undefined): Promise<string[]> {
  const c = await open(target, 'target');
  try {
    const q = unmarkedRelationsSql(tables, migrationId === undefined ? undefined : markText(migrationId));
    return (await c.query<{ rel: string }>(q.text, q.values)).rows.map((r) => r.rel);
  } finally {
    await c.end().catch(() => undefined);
  }
}

/** Rows deleted and written per job. */
interface Written {
  deleted: number;
  inserted: number;
}

/**
 * One source snapshot, one target transaction for every table. A failure or cancel drops both
 * connections: the target's transaction is rolled back whole.
 */
async function rewriteOnTarget(input: ValidateTablesInput, jobs: RepairJob[], replicaRole: boolean, hooks: ValidateHooks): Promise<Written[]> {
  const src = await open(input.source, 'source');
  let dst: Client | undefined;
  const drop = () => {
    for (const c of [src, dst]) {
      if (c) void sendCancelRequest(c);
      dropConnection(c);
    }
  };
  hooks.signal?.addEventListener('abort', drop, { once: true });
  let clean = false;
  try {
    dst = await open(input.target, 'target');
    await prepareTargetSession(
      dst,
      replicaRole,
      jobs.map((j) => input.tables[j.need.index]!),
    ).catch((err: unknown) => {
      // Its message speaks of the apply; a `dts verify --repair` user needs to know why it matters here.
      const e = err as Error & { code?: string };
      throw Object.assign(new Error(`the repair writes under the apply's session rules: ${e.message}`), e.code ? { code: e.code } : {});
    });
    await src.query(BEGIN_READ);
    await dst.query('BEGIN');
    // The apply commits asynchronously (it keeps its position with its rows); a repair is reported done.
    await dst.query(`SET LOCAL synchronous_commit = on`);
    await dst.query(`SET LOCAL search_path = ''`);
    const out: Written[] = [];
    for (const job of jobs) {
      throwIfAborted(hooks.signal);
      const t = input.tables[job.need.index]!;
      hooks.onProgress?.({ table: displayName(t.source), step: 'repair', tablesDone: out.length, tables: jobs.length });
      const spec = (table: typeof t.source) => ({ table, columns: t.copyColumns, keyColumns: t.keyColumns });
      const s = await TableSide.open(src, 'source', spec(t.source), 'md5', false);
      const d = await TableSide.open(dst, 'target', spec(t.target), 'md5', false);
      const w: Written = { deleted: 0, inserted: 0 };
      if (!job.keyed) {
        w.deleted = (await dst.query(deleteAllSql(d.shape).text)).rowCount ?? 0;
        w.inserted = await copyRows(src, dst, copyOutAllSql(s.shape), copyInSql(d.shape));
      } else {
        const batches: Array<Array<Array<string | null>>> = [];
        for (let i = 0; i < job.keys.length; i += KEYS_PER_STATEMENT) batches.push(job.keys.slice(i, i + KEYS_PER_STATEMENT).map(keyValues));
        // Every delete before the first copy: a row copied back must not meet the old version of another
        // (a unique column whose values two differing rows swapped).
        for (const keys of batches) {
          throwIfAborted(hooks.signal);
          const del = deleteByKeysSql(d.shape, keys);
          w.deleted += (await dst.query(del.text, del.values)).rowCount ?? 0;
        }
        for (const keys of batches) {
          throwIfAborted(hooks.signal);
          w.inserted += await copyRows(src, dst, copyOutByKeysSql(s.shape, keys), copyInSql(d.shape));
        }
      }
      out.push(w);
    }
    await dst.query('COMMIT');
    await src.query('COMMIT');
    clean = true;
    return out;
  } finally {
    hooks.signal?.removeEventListener('abort', drop);
    if (!clean) drop();
    await Promise.all([src.end().catch(() => undefined), dst?.end().catch(() => undefined)]);
  }
}

/** Source rows through text COPY into the target (the sessions' pinned text settings make it exact). */
async function copyRows(src: Client, dst: Client, out: string, into: string): Promise<number> {
  const reader = src.query(new CopyOut(out, {}, true));
  const writer = dst.query(new CopyInFramed(into));
  await pipeline(reader, writer);
  if (reader.rowCount !== writer.rowCount) throw new Error(`repair: the source sent ${reader.rowCount} rows, the target loaded ${writer.rowCount}`);
  return writer.rowCount ?? 0;
}

/** Each repaired chunk compared again (new snapshots on both sides); the results updated to the verdicts after the repair. */
async function recheck(input: ValidateTablesInput, jobs: RepairJob[], written: Written[], hooks: ValidateHooks): Promise<void> {
  const src = await open(input.source, 'source');
  try {
    const dst = await open(input.target, 'target');
    try {
      for (let j = 0; j < jobs.length; j++) {
        throwIfAborted(hooks.signal);
        const job = jobs[j]!;
        const w = written[j]!;
        const t = input.tables[job.need.index]!;
        for (const c of [src, dst]) await c.query(BEGIN_READ);
        const [s, d] = await openSides(src, dst, t, job.result.rowHash ?? 'md5', false);
        const ranges: KeyRange[] = job.need.chunks.length ? job.need.chunks.map((c) => c.range) : [{}];
        const labels = job.need.chunks.length ? job.need.chunks.map((c) => c.label) : ['whole table'];
        const [a, b] = await Promise.all([s.summaries(ranges), d.summaries(ranges)]);
        await Promise.all([src.query('COMMIT'), dst.query('COMMIT')]);
        const chunks = labels.map((chunk, i) => {
          const source = a.get(String(i))!;
          const target = b.get(String(i))!;
          return { chunk, source, target, match: source === target };
        });
        applyRepair(job, t.keyColumns, w, chunks);
      }
    } finally {
      await dst.end().catch(() => undefined);
    }
  } finally {
    await src.end().catch(() => undefined);
  }
}

/** The table's result after its repair: its report, counts, and verdicts. */
function applyRepair(job: RepairJob, keyColumns: readonly string[], w: Written, chunks: RepairReport['chunks']): void {
  const r = job.result;
  const count = (k: MismatchKind) => [...job.kinds.values()].filter((v) => v === k).length;
  const record = (id: string) => (job.keyed ? keyRecord(keyColumns, id) : { [ROW_MD5_KEY]: id });
  const report: RepairReport = {
    rows: job.rows,
    missing: count('missing-on-target'),
    extra: count('extra-on-target'),
    different: count('different'),
    deleted: w.deleted,
    inserted: w.inserted,
    keys: job.keys.slice(0, REPAIR_LIST_CAP).map((id) => ({ key: record(id), kind: job.kinds.get(id)! })),
    keysTruncated: job.keys.length > REPAIR_LIST_CAP,
    chunks: chunks.slice(0, REPAIR_LIST_CAP),
  };
  if (!job.keyed) report.wholeChunk = true;
  if (chunks.length > REPAIR_LIST_CAP) report.chunksTruncated = true;
  r.repair = report;
  r.targetRows += w.inserted - w.deleted;
  r.countsMatch = r.sourceRows === r.targetRows;
  const equal = chunks.every((c) => c.match);
  r.checksum = equal ? 'match' : 'mismatch';
  r.mismatchedChunks = chunks.filter((c) => !c.match).map((c) => c.chunk);
  // The sample's findings are rows the checksum found too: repaired with them.
  const repaired = new Set(job.keys);
  const idOf = (key: Record<string, string | null>) => (job.keyed ? keyId(keyColumns.map((k) => key[k] ?? null)) : (key[ROW_MD5_KEY] ?? ''));
  if (r.sample === 'mismatch' && equal && r.mismatches.filter((m) => m.foundBy === 'sample').every((m) => repaired.has(idOf(m.key)))) r.sample = 'match';
  r.ok = !r.error && r.countsMatch && r.sample !== 'mismatch' && r.checksum !== 'mismatch';
}

async function open(spec: ConnectionSpec, side: 'source' | 'target'): Promise<Client> {
  try {
    return await connect(spec, { applicationName: 'pg-dts repair' });
  } catch (err) {
    const e = err as { code?: string; message?: string };
    const wrapped = new Error(`cannot connect to the ${side} (${describeConnection(spec)}): ${e.message ?? String(err)}`) as Error & { code?: string };
    if (e.code) wrapped.code = e.code;
    throw wrapped;
  }
}

/**
 * One line per repaired table, for notices and `dts verify`: `public.users -> app.users: 3 rows
 * repaired (1 missing, 1 extra, 1 different); 2 chunks equal again`; with `keys`, the first keys below.
 */
export function formatRepair(results: readonly TableValidationResult[], keys = 0): string[] {
  return results
    .filter((r) => r.repair)
    .flatMap((r) => {
      const p = r.repair!;
      const what = p.wholeChunk
        ? `its whole chunk replaced (${p.deleted} rows deleted, ${p.inserted} copied)`
        : `${p.rows} row${p.rows === 1 ? '' : 's'} repaired (${p.missing} missing, ${p.extra} extra, ${p.different} different)`;
      const after = p.chunks.every((c) => c.match) ? `${p.chunks.length} chunk${p.chunks.length === 1 ? '' : 's'} equal again` : `chunk(s) still differ: ${p.chunks.filter((c) => !c.match).map((c) => c.chunk).join(', ')}`;
      const listed = p.keys.slice(0, keys).map((k) => `  ${formatKey(k.key)}: ${k.kind}`);
      const more = (p.wholeChunk ? p.missing + p.extra + p.different : p.rows) - listed.length;
      if (listed.length && more > 0) listed.push(`  … and ${more} more`);
      return [`${r.source} -> ${r.target}: ${what}; ${after}`, ...listed];
    });
}

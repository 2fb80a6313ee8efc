/**
 * `dts verify`: a standalone comparison of two databases, usable without any migration. Lists the
 * tables the way a migration would (preflight's listSourceTables, the same name mapping), reads their
 * keys and columns from the source catalog (catalog.ts), then runs the three validation levels and
 * prints one line per table and the differing keys. Exit code 0: identical; 1: a difference, or the
 * comparison failed; 2: bad usage.
 */
import type { Client } from 'pg';
import type { Command } from 'commander';
import { readTableDefs } from '../activities/catalog';
import { connect, describeConnection } from '../activities/db';
import { scrub } from '../activities/errors';
import type { TableDef } from '../activities/model';
import { listSourceTables, type TablePlan } from '../activities/preflight';
import { displayName, normalizeSpec, SpecError, type NormalizedSpec } from '../activities/spec';
import {
  DEFAULT_REPAIR_MAX_ROWS,
  formatMismatch,
  formatRepair,
  validateAndRepair,
  validateTables,
  VALIDATE_DEFAULTS,
  type RepairOutcome,
  type TableValidationResult,
} from '../activities/validate';

export interface VerifyOptions {
  source: string;
  target: string;
  schemas?: string;
  tables?: string;
  suffix?: string;
  schemaMapping?: string;
  sample?: string;
  checksum?: boolean;
  parallelism?: string;
  chunkRows?: string;
  maxMismatches?: string;
  repair?: boolean;
  repairMaxRows?: string;
  json?: boolean;
}

export function registerVerify(program: Command, io?: { out(line: string): void; err(line: string): void }): void {
  program
    .command('verify')
    .description('compare two databases table by table: exact row counts, sampled rows, chunked content checksums')
    .requiredOption('--source <url>', 'source database URI (leave the password out: PGPASSWORD / ~/.pgpass)')
    .requiredOption('--target <url>', 'target database URI')
    .option('--schemas <list>', 'comma-separated source schemas (default: public)')
    .option('--tables <list>', 'comma-separated tables, schema.table (unqualified: the first schema)')
    .option('--suffix <suffix>', 'target tables are named <source name><suffix>')
    .option('--schema-mapping <pairs>', 'source=target schema pairs, comma-separated (e.g. public=app)')
    .option('--sample <n>', 'rows sampled and compared column by column per table (0: none)', String(VALIDATE_DEFAULTS.sampleSize))
    .option('--no-checksum', 'skip the full content checksum (counts and sample only)')
    .option('--parallelism <n>', 'tables compared at once', String(VALIDATE_DEFAULTS.parallelism))
    .option('--chunk-rows <n>', 'rows per checksum chunk', String(VALIDATE_DEFAULTS.chunkRows))
    .option('--max-mismatches <n>', 'differing rows listed per table', String(VALIDATE_DEFAULTS.maxMismatches))
    .option('--repair', 'rewrite the differing rows on the target from the source (only tables a pg-dts migration created), then compare their chunks again')
    .option('--repair-max-rows <n>', 'with --repair: the most rows rewritten in all; more differ and nothing is written', String(DEFAULT_REPAIR_MAX_ROWS))
    .option('--json', 'print the results as JSON')
    .action(async (opts: VerifyOptions) => {
      process.exitCode = io ? await runVerify(opts, io.out, io.err) : await runVerify(opts);
    });
}

class UsageError extends Error {}

/** Runs the comparison; returns the exit code (0 identical, 1 different or failed, 2 bad usage). */
export async function runVerify(opts: VerifyOptions, out: (line: string) => void = (l) => console.log(l), err: (line: string) => void = (l) => console.error(l)): Promise<number> {
  let spec: NormalizedSpec;
  let numbers: { sample: number; parallelism: number; chunkRows: number; maxMismatches: number; repairMaxRows: number };
  try {
    spec = specFrom(opts);
    numbers = {
      sample: integer('--sample', opts.sample, 0),
      parallelism: integer('--parallelism', opts.parallelism, 1),
      chunkRows: integer('--chunk-rows', opts.chunkRows, 1),
      maxMismatches: integer('--max-mismatches', opts.maxMismatches, 1),
      repairMaxRows: integer('--repair-max-rows', opts.repairMaxRows ?? String(DEFAULT_REPAIR_MAX_ROWS), 1),
    };
    if (opts.repair && opts.checksum === false) throw new UsageError('--repair needs the checksum (it names the rows to repair): drop --no-checksum');
  } catch (e) {
    if (e instanceof UsageError || e instanceof SpecError) {
      err(`dts verify: ${e.message}`);
      return 2;
    }
    throw e;
  }

  const started = Date.now();
  let results: TableValidationResult[];
  let repair: RepairOutcome | undefined;
  try {
    const { defs, skipped } = await sourceTables(spec, err);
    for (const s of skipped) err(`dts verify: not compared: ${s}`);
    const input = {
      source: spec.source,
      target: spec.target,
      tables: defs.map((d) => ({ source: d.source, target: d.target, keyColumns: d.keyColumns, copyColumns: d.copyColumns })),
      sampleSize: numbers.sample,
      checksum: opts.checksum !== false,
      parallelism: numbers.parallelism,
      chunkRows: numbers.chunkRows,
      maxMismatches: numbers.maxMismatches,
    };
    if (opts.repair) ({ results, repair } = await validateAndRepair(input, { maxRows: numbers.repairMaxRows, limitName: '--repair-max-rows' }));
    else results = await validateTables(input);
  } catch (e) {
    err(`dts verify: ${scrub(e instanceof Error ? e.message : String(e))}`);
    return 1;
  }

  if (opts.json) out(JSON.stringify(repair ? { results, repair } : results, null, 2));
  else {
    for (const line of formatVerifyResults(results, Date.now() - started)) out(line);
    if (repair && (repair.tables || repair.refused)) out('');
    for (const line of formatRepair(results, 20)) out(line.startsWith(' ') ? line : `repaired: ${line}`);
    if (repair?.refused) out(`repair: ${repair.refused}`);
  }
  return results.every((r) => r.ok) ? 0 : 1;
}

function specFrom(opts: VerifyOptions): NormalizedSpec {
  const raw: Record<string, unknown> = { source: opts.source, target: opts.target };
  if (opts.schemas !== undefined) raw.schemas = splitList(opts.schemas);
  if (opts.tables !== undefined) raw.tables = splitList(opts.tables);
  if (opts.suffix !== undefined) raw.tableSuffix = opts.suffix;
  if (opts.schemaMapping !== undefined) {
    const map: Record<string, string> = {};
    for (const pair of splitList(opts.schemaMapping)) {
      const i = pair.indexOf('=');
      if (i <= 0 || i === pair.length - 1) throw new UsageError(`--schema-mapping: expected source=target, got ${JSON.stringify(pair)}`);
      map[pair.slice(0, i)] = pair.slice(i + 1);
    }
    raw.schemaMapping = map;
  }
  return normalizeSpec(raw);
}

/** Splits on commas outside double quotes (a quoted table name may contain one); trims; drops empties. */
export function splitList(s: string): string[] {
  const out: string[] = [];
  let cur = '';
  let quoted = false;
  for (const ch of s) {
    if (ch === '"') quoted = !quoted;
    if (ch === ',' && !quoted) {
      out.push(cur.trim());
      cur = '';
    } else cur += ch;
  }
  out.push(cur.trim());
  return out.filter((x) => x.length > 0);
}

function integer(flag: string, value: string | undefined, min: number): number {
  const n = Number(value);
  if (value === undefined || !/^\d+$/.test(value.trim()) || !Number.isSafeInteger(n) || n < min) {
    throw new UsageError(`${flag} must be a whole number${min > 0 ? ` of at least ${min}` : ''}, got ${JSON.stringify(value)}`);
  }
  return n;
}

/**
 * The tables to compare and their keys/columns, read from the source catalog. Tables the catalog
 * reader refuses (partitioned tables, for now) are returned as `skipped`, with the reason.
 */
async function sourceTables(spec: NormalizedSpec, notice: (line: string) => void): Promise<{ defs: TableDef[]; skipped: string[] }> {
  let client: Client;
  try {
    client = await connect(spec.source, { applicationName: 'pg-dts verify' });
  } catch (e) {
    throw new Error(`cannot connect to the source (${describeConnection(spec.source)}): ${(e as Error).message}`);
  }
  try {
    const { tables, notices } = await listSourceTables(client, spec);
    for (const n of notices) notice(`dts verify: ${n}`);
    try {
      return { defs: await readTableDefs(client, tables, spec), skipped: [] };
    } catch {
      // One table the reader refuses fails the whole batch: read them one by one to learn which.
      const defs: TableDef[] = [];
      const skipped: string[] = [];
      for (const t of tables as TablePlan[]) {
        try {
          defs.push(...(await readTableDefs(client, [t], spec)));
        } catch (e) {
          skipped.push(`${displayName(t.source)}: ${(e as Error).message}`);
        }
      }
      return { defs, skipped };
    }
  } finally {
    await client.end().catch(() => undefined);
  }
}

/** One line per table, then the differing keys of each table that differs, then a summary. */
export function formatVerifyResults(results: readonly TableValidationResult[], durationMs?: number): string[] {
  const rows: string[][] = [['source', 'target', 'source rows', 'target rows', 'counts', 'sample', 'checksum', 'result']];
  for (const r of results) {
    rows.push([
      r.source,
      r.target,
      r.error ? '-' : String(r.sourceRows),
      r.error ? '-' : String(r.targetRows),
      r.error ? '-' : r.countsMatch ? 'equal' : 'DIFFER',
      r.sample === 'not-run' ? 'not run' : r.sample === 'match' ? `${r.sampledRows} equal` : 'DIFFER',
      r.checksum === 'not-run' ? 'not run' : r.checksum === 'match' ? `${r.chunks} chunk${r.chunks === 1 ? '' : 's'} equal` : 'DIFFER',
      r.error ? 'ERROR' : r.ok ? 'identical' : 'DIFFERENT',
    ]);
  }
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
  const numeric = new Set([2, 3]);
  const lines = rows.map((r) => r.map((c, i) => (numeric.has(i) ? c.padStart(widths[i]!) : c.padEnd(widths[i]!))).join('  ').trimEnd());
  for (const r of results.filter((x) => !x.ok)) {
    lines.push('');
    if (r.error) {
      lines.push(`${r.source} -> ${r.target}: ${r.error}`);
      continue;
    }
    const head = [`${r.source} -> ${r.target}:`];
    if (!r.countsMatch) head.push(`${r.sourceRows} rows on the source, ${r.targetRows} on the target;`);
    if (r.mismatchedChunks.length) head.push(`${r.mismatchedChunks.length} of ${r.chunks} checksum chunks differ;`);
    head.push(`${r.mismatches.length}${r.mismatchesTruncated ? '+' : ''} differing row${r.mismatches.length === 1 ? '' : 's'} listed`);
    lines.push(head.join(' '));
    for (const m of r.mismatches) lines.push(`  ${formatMismatch(m)}`);
    if (r.mismatchesTruncated) lines.push('  … more rows differ (raise --max-mismatches to list them)');
  }
  const bad = results.filter((r) => !r.ok).length;
  lines.push('');
  lines.push(
    `${results.length} table${results.length === 1 ? '' : 's'} compared: ${results.length - bad} identical, ${bad} different` +
      (durationMs === undefined ? '' : ` (${(durationMs / 1000).toFixed(1)} s)`),
  );
  return lines;
}

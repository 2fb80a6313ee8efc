/**
 * `dts assess` and POST /api/v1/assess: every precondition of INIT at once, read-only on both servers,
 * plus what preflight does not refuse but an operator plans around: sizes, an estimate of the copy
 * time and of the WAL the slot will retain meanwhile, long transactions the slot creation would wait
 * for. The same checks as preflight (checkAll), collected instead of refusing at the first.
 */
import type { Client } from 'pg';
import { describeConnection } from './db';
import { isFailureOf, scrub } from './errors';
import { ErrorType } from '../workflows/error-types';
import { nameKey } from './naming';
import { checkAll, open, type PreflightContext } from './preflight';
import { migrationSpecSchema, normalizeSpec, SpecError, type NormalizedSpec } from './spec';

export interface AssessOptions extends PreflightContext {
  /** How long the source's WAL rate is sampled (default 5 s; 0: not sampled). */
  walSampleSeconds?: number;
  /** Copy throughput assumed per session, bytes/s (default COPY_BYTES_PER_SECOND). */
  copyBytesPerSecond?: number;
}

export interface Assessment {
  /** True when nothing would stop the migration (warnings aside). */
  ok: boolean;
  problems: string[];
  warnings: string[];
  source?: string;
  target?: string;
  mode?: 'online' | 'offline';
  tables?: {
    count: number;
    /** Heap and TOAST: what the copy moves. */
    dataBytes: number;
    indexBytes: number;
    estimatedRows: number;
    largest: Array<{ table: string; dataBytes: number; estimatedRows: number }>;
  };
  estimate?: {
    copyBytesPerSecond: number;
    sessions: number;
    /** Data only: index builds and validation come on top. */
    copySeconds: number;
    /** Measured over walSampleSeconds; absent when not sampled. */
    walBytesPerSecond?: number;
    walSampleSeconds?: number;
    /** WAL written on the source while the copy runs: what the slot retains by the time the apply starts. */
    retainedWalBytes?: number;
  };
}

/**
 * Throughput of one copy session, from BENCHMARKS.md (pgbench_accounts, 2.56 GB in 45 s on 2 shared
 * cores: ~57 MB/s); rounded down, as servers under production load are busier.
 */
export const COPY_BYTES_PER_SECOND = 50 * 1024 * 1024;

/** Transactions older than this when the slot is created make CREATE_REPLICATION_SLOT wait for them. */
const LONG_TRANSACTION_SECONDS = 60;

type Path = ReadonlyArray<PropertyKey>;

/** Removes what `path` names from a parsed JSON value (array elements marked, removed afterwards). */
function dropAt(root: unknown, path: Path, holes: Set<unknown[]>): void {
  let parent = root as Record<PropertyKey, unknown>;
  for (const key of path.slice(0, -1)) {
    const next = parent?.[key];
    if (next === null || typeof next !== 'object') return;
    parent = next as Record<PropertyKey, unknown>;
  }
  const last = path[path.length - 1]!;
  if (Array.isArray(parent) && typeof last === 'number') {
    parent[last] = holes;
    holes.add(parent);
  } else delete parent[last];
}

/**
 * The spec's problems, each on its own, and the spec with the faulty parts left out, so the
 * databases are still assessed. Undefined spec when a connection or the table list is at fault:
 * what would be checked then is not what the user asked for.
 */
export function lenientSpec(raw: unknown): { spec?: NormalizedSpec; problems: string[] } {
  if (raw === null || typeof raw !== 'object' || Array.isArray(raw)) {
    return { problems: ['spec: expected a JSON object with at least "source" and "target"'] };
  }
  const problems: string[] = [];
  const input = structuredClone(raw) as Record<string, unknown>;
  let checkable = true;
  for (let round = 0; round < 5; round++) {
    const parsed = migrationSpecSchema.safeParse(input);
    if (parsed.success) break;
    const holes = new Set<unknown[]>();
    for (const issue of parsed.error.issues) {
      const field = issue.path.length ? issue.path.join('.') : '(spec)';
      problems.push(`spec: ${field}: ${issue.message}`);
      const top = issue.path[0];
      if (top === undefined || top === 'source' || top === 'target' || top === 'tables') checkable = false;
      // An array left empty by the removals is dropped whole (its default applies) in the next round.
      if (issue.path.length) dropAt(input, issue.path, holes);
    }
    for (const arr of holes) {
      const kept = arr.filter((v) => v !== holes);
      arr.splice(0, arr.length, ...kept);
      if (kept.length === 0) for (const [k, v] of Object.entries(input)) if (v === arr) delete input[k];
    }
  }
  if (!checkable) return { problems };
  for (let round = 0; round < 5; round++) {
    try {
      return { spec: normalizeSpec(input), problems };
    } catch (err) {
      if (!(err instanceof SpecError)) throw err;
      const message = err.message.replace(/^invalid migration spec: /, '');
      if (!problems.includes(`spec: ${message}`)) problems.push(`spec: ${message}`);
      const field = /^([A-Za-z]+):/.exec(message)?.[1];
      // The checks that remain meaningful without the field: a mapping or suffix changes only names.
      if (field !== 'schemaMapping' && field !== 'schemas') return { problems };
      delete input[field];
    }
  }
  return { problems };
}

async function tableSizes(src: Client, tables: Array<{ source: { schema: string; name: string }; estimatedRows: number }>): Promise<NonNullable<Assessment['tables']>> {
  const res = await src.query<{ schema: string; name: string; data: string; idx: string }>(
    `SELECT u.s AS schema, u.r AS name,
            coalesce(sum(pg_table_size(p.relid)), 0)::text AS data, coalesce(sum(pg_indexes_size(p.relid)), 0)::text AS idx
       FROM unnest($1::text[], $2::text[]) AS u(s, r)
       JOIN pg_namespace n ON n.nspname = u.s JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = u.r
       CROSS JOIN LATERAL (SELECT c.oid AS relid UNION SELECT relid FROM pg_partition_tree(c.oid)) p
      GROUP BY u.s, u.r`,
    [tables.map((t) => t.source.schema), tables.map((t) => t.source.name)],
  );
  const rows = new Map(tables.map((t) => [nameKey(t.source), t.estimatedRows]));
  const sized = res.rows.map((r) => ({ table: `${r.schema}.${r.name}`, dataBytes: Number(r.data), indexBytes: Number(r.idx), estimatedRows: rows.get(nameKey(r)) ?? 0 }));
  sized.sort((a, b) => b.dataBytes - a.dataBytes);
  return {
    count: tables.length,
    dataBytes: sized.reduce((n, t) => n + t.dataBytes, 0),
    indexBytes: sized.reduce((n, t) => n + t.indexBytes, 0),
    estimatedRows: tables.reduce((n, t) => n + t.estimatedRows, 0),
    largest: sized.slice(0, 5).map(({ table, dataBytes, estimatedRows }) => ({ table, dataBytes, estimatedRows })),
  };
}

/**
 * Copy time: the sessions share the bytes, but one table copied whole runs on one session (up to
 * copy.splitAboveBytes), so the largest such table bounds it from below.
 */
export function copySeconds(sizes: NonNullable<Assessment['tables']>, spec: NormalizedSpec, perSession: number): number {
  const sessions = Math.max(1, Math.min(spec.parallelism, sizes.count));
  const split = spec.copy?.splitAboveBytes ?? Number.POSITIVE_INFINITY;
  const largestWhole = sizes.largest.find((t) => t.dataBytes <= split)?.dataBytes ?? 0;
  return Math.max(sizes.dataBytes / (perSession * sessions), largestWhole / perSession);
}

/** Bytes of WAL the source writes per second, from two positions `seconds` apart (read-only). */
async function walRate(src: Client, seconds: number): Promise<number> {
  const lsn = async () => (await src.query<{ lsn: string }>('SELECT pg_current_wal_lsn()::text AS lsn')).rows[0]!.lsn;
  const first = await lsn();
  const started = Date.now();
  await new Promise((r) => setTimeout(r, seconds * 1000));
  const second = await lsn();
  const diff = await src.query<{ d: string }>('SELECT pg_wal_lsn_diff($1::pg_lsn, $2::pg_lsn)::text AS d', [second, first]);
  return Number(diff.rows[0]!.d) / ((Date.now() - started) / 1000);
}

async function sourceWarnings(src: Client, retained: number | undefined, spec: NormalizedSpec): Promise<string[]> {
  const warnings: string[] = [];
  const keep = await src.query<{ keep: string | null }>(`SELECT (SELECT setting FROM pg_settings WHERE name = 'max_slot_wal_keep_size') AS keep`);
  const long = await src.query<{ pid: number; age: number; state: string | null }>(
    `SELECT pid, extract(epoch FROM now() - xact_start)::float8 AS age, state FROM pg_stat_activity
      WHERE (backend_xid IS NOT NULL OR backend_xmin IS NOT NULL) AND pid <> pg_backend_pid() AND xact_start < now() - make_interval(secs => $1)
      ORDER BY xact_start`,
    [LONG_TRANSACTION_SECONDS],
  );
  const keepMb = keep.rows[0]?.keep;
  if (spec.mode === 'online' && retained !== undefined && keepMb && Number(keepMb) >= 0 && retained > Number(keepMb) * 1024 * 1024) {
    warnings.push(
      `the slot would retain ~${formatBytes(retained)} of WAL during the copy, over the source's max_slot_wal_keep_size (${formatBytes(Number(keepMb) * 1024 * 1024)}): the source would invalidate the slot and the migration would fail; raise it, or copy when the source writes less`,
    );
  }
  const budget = spec.wal?.maxRetainedBytes;
  if (spec.mode === 'online' && retained !== undefined && budget !== undefined && retained > budget) {
    warnings.push(`the slot would retain ~${formatBytes(retained)} of WAL during the copy, over wal.maxRetainedBytes (${formatBytes(budget)}): the migration would stop there`);
  }
  if (spec.mode === 'online' && long.rows.length) {
    warnings.push(
      `transaction(s) open on the source for over ${LONG_TRANSACTION_SECONDS} s: ${long.rows
        .slice(0, 10)
        .map((x) => `pid ${x.pid} (${Math.round(x.age)} s${x.state ? `, ${x.state}` : ''})`)
        .join(', ')}; creating the replication slot waits until every transaction older than it has ended`,
    );
  }
  return warnings;
}

export function formatBytes(n: number): string {
  const units = ['bytes', 'kB', 'MB', 'GB', 'TB'];
  let v = n;
  let u = 0;
  while (v >= 1024 && u < units.length - 1) {
    v /= 1024;
    u++;
  }
  return u === 0 ? `${Math.round(v)} bytes` : `${v.toFixed(v < 10 ? 1 : 0)} ${units[u]}`;
}

export async function assess(raw: unknown, opts: AssessOptions = {}): Promise<Assessment> {
  const { spec, problems } = lenientSpec(raw);
  const warnings: string[] = [];
  const result = (extra: Partial<Assessment> = {}): Assessment => ({ ok: problems.length === 0, problems, warnings, ...extra });
  if (!spec) {
    warnings.push('the databases were not checked: the spec names what to connect to or which tables to migrate wrongly');
    return result();
  }
  const reach = (side: 'source' | 'target') =>
    open(spec[side], side).catch((err: unknown) => {
      problems.push(scrub((err as Error).message));
      return undefined;
    });
  const [src, dst] = await Promise.all([reach('source'), reach('target')]);
  try {
    const guard = async <T>(what: string, fallback: T, fn: () => Promise<T>): Promise<T> => {
      try {
        return await fn();
      } catch (err) {
        // A check that refuses by throwing (checkOwners) states a problem; anything else is a check that failed.
        if (isFailureOf(err, ErrorType.Precondition)) problems.push(err.message);
        else problems.push(`${what} could not be checked: ${scrub((err as Error).message)}`);
        return fallback;
      }
    };
    const checked = await checkAll(src, dst, spec, opts, { problem: (m) => void problems.push(m), guard });
    warnings.push(...checked.notices);
    const extra: Partial<Assessment> = { source: describeConnection(spec.source), target: describeConnection(spec.target), mode: spec.mode };
    if (src && checked.tables.length) {
      const sizes = await guard('table sizes', undefined, () => tableSizes(src, checked.tables));
      if (sizes) {
        extra.tables = sizes;
        const perSession = opts.copyBytesPerSecond ?? COPY_BYTES_PER_SECOND;
        const seconds = copySeconds(sizes, spec, perSession);
        const sample = opts.walSampleSeconds ?? 5;
        const rate = spec.mode === 'online' && sample > 0 ? await guard('the WAL rate', undefined, () => walRate(src, sample)) : undefined;
        extra.estimate = {
          copyBytesPerSecond: perSession,
          sessions: Math.max(1, Math.min(spec.parallelism, sizes.count)),
          copySeconds: Math.round(seconds),
          ...(rate !== undefined ? { walBytesPerSecond: Math.round(rate), walSampleSeconds: sample, retainedWalBytes: Math.round(rate * seconds) } : {}),
        };
        warnings.push(...(await guard('the source activity', [], () => sourceWarnings(src, extra.estimate?.retainedWalBytes, spec))));
      }
    }
    return result(extra);
  } finally {
    await Promise.all([src?.end().catch(() => undefined), dst?.end().catch(() => undefined)]);
  }
}

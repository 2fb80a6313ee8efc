/**
 * What the strict check (strict.ts), the live one (live.ts) and the proof (proof.ts) share: pairs of
 * connections over the tables, both sides of a table opened, the checksum options, the row hash both
 * servers agree on, and the mismatch list.
 */
import type { Client } from 'pg';
import { connect, describeConnection, sendCancelRequest, settled } from '../db';
import type { ConnectionSpec, QualifiedName } from '../spec';
import { keyRecord, reconcileAcrossChunks, ROW_MD5_KEY } from './compare';
import { VALIDATE_DEFAULTS, type Mismatch, type MismatchKind, type ValidateTableSpec, type ValidateTablesInput } from './contract';
import { columnsThatDiffer, ShapeError, TableSide, type ChecksumOptions, type DescribedColumn, type FoundRow, type SampleResult } from './engine';
import { describeTablesSql, HASH_PROBE_SQL, typedHashOf, type RowHash } from './sql';
import { dropConnection } from '../pg-internals';

export function checksumOptions(input: Pick<ValidateTablesInput, 'chunkRows' | 'leafRows' | 'fanout' | 'maxMismatches'>, signal?: AbortSignal): ChecksumOptions {
  const o: ChecksumOptions = {
    chunkRows: Math.max(1, Math.floor(input.chunkRows ?? VALIDATE_DEFAULTS.chunkRows)),
    leafRows: Math.max(1, Math.floor(input.leafRows ?? VALIDATE_DEFAULTS.leafRows)),
    fanout: Math.max(2, Math.floor(input.fanout ?? VALIDATE_DEFAULTS.fanout)),
    maxMismatches: Math.max(1, Math.floor(input.maxMismatches ?? VALIDATE_DEFAULTS.maxMismatches)),
  };
  if (signal) o.signal = signal;
  return o;
}

/**
 * The columns of many tables on one side, read DESCRIBE_BATCH tables at a time (one statement each,
 * not one per table: VALIDATING compares thousands of small tables inside the write stop). Batches
 * are read on the client of whoever needs one first, inside its transaction; the others wait for it.
 * A batch that fails is forgotten, and its tables are described one by one (undefined).
 */
export class Descriptions {
  private readonly batches = new Map<number, Promise<Map<number, DescribedColumn[]> | undefined>>();
  constructor(private readonly tables: readonly QualifiedName[]) {}

  async get(client: Client, index: number): Promise<DescribedColumn[] | undefined> {
    const b = Math.floor(index / DESCRIBE_BATCH);
    let batch = this.batches.get(b);
    if (!batch) {
      batch = this.read(client, b);
      this.batches.set(b, batch);
    }
    return (await batch)?.get(index);
  }

  /** One batch, inside the caller's transaction: a savepoint keeps a failure from aborting it. */
  private async read(client: Client, b: number): Promise<Map<number, DescribedColumn[]> | undefined> {
    const q = describeTablesSql(this.tables.slice(b * DESCRIBE_BATCH, (b + 1) * DESCRIBE_BATCH));
    await client.query('SAVEPOINT pgdts_describe');
    try {
      const r = await client.query<DescribedColumn & { idx: number }>(q.text, q.values);
      await client.query('RELEASE SAVEPOINT pgdts_describe');
      const out = new Map<number, DescribedColumn[]>();
      for (const { idx, ...row } of r.rows) out.set(b * DESCRIBE_BATCH + idx, [...(out.get(b * DESCRIBE_BATCH + idx) ?? []), row]);
      return out;
    } catch {
      await client.query('ROLLBACK TO SAVEPOINT pgdts_describe').catch(() => undefined);
      this.batches.delete(b);
      return undefined;
    }
  }
}
const DESCRIBE_BATCH = 200;

/** Both sides of a table; a ShapeError from either (table or column missing) wins over other errors. */
export async function openSides(
  src: Client,
  dst: Client,
  t: ValidateTableSpec,
  hash: RowHash,
  live: boolean,
  described?: { source?: readonly DescribedColumn[]; target?: readonly DescribedColumn[] },
): Promise<[TableSide, TableSide]> {
  const spec = (table: QualifiedName) => ({ table, columns: t.copyColumns, keyColumns: t.keyColumns });
  const [a, b] = await Promise.allSettled([
    TableSide.open(src, 'source', spec(t.source), hash, live, described?.source),
    TableSide.open(dst, 'target', spec(t.target), hash, live, described?.target),
  ]);
  if (a.status === 'rejected' && b.status === 'rejected' && b.reason instanceof ShapeError && !(a.reason instanceof ShapeError)) throw b.reason;
  if (a.status === 'rejected') throw a.reason;
  if (b.status === 'rejected') throw b.reason;
  if (a.value.encoding !== b.value.encoding) a.value.shape.utf8 = b.value.shape.utf8 = true;
  // Typed row hashes only when every compared column has one type on both sides that has one.
  const typed = t.copyColumns.map((c) => a.value.columnTypes.get(c));
  if (typed.length && typed.every((ty, i) => ty !== undefined && ty === b.value.columnTypes.get(t.copyColumns[i]!) && typedHashOf(ty))) {
    a.value.shape.typedHash = b.value.shape.typedHash = typed as string[];
  }
  return [a.value, b.value];
}

/** The connection pairs runPool opens for these tables. */
export function workersOf(input: Pick<ValidateTablesInput, 'tables' | 'parallelism'>): number {
  return Math.max(1, Math.min(input.parallelism ?? VALIDATE_DEFAULTS.parallelism, input.tables.length));
}

/** A pool worker's check of one table; `idle`: run once its queue is empty (the proof lends the pair to a table still being compared). */
export type PoolCheck<R> = ((t: ValidateTableSpec, index: number) => Promise<R>) & { idle?: () => Promise<void> };

/**
 * Opens `parallelism` pairs of connections (`pairs`: that many, more pairs than tables included) and
 * runs each table on one of them; results come back in the order of input.tables. `setup` runs once
 * per pair and returns the per-table function.
 */
export async function runPool<R>(
  input: Pick<ValidateTablesInput, 'source' | 'target' | 'tables' | 'parallelism' | 'rowHash'>,
  applicationName: string,
  setup: (src: Client, dst: Client, hash: RowHash) => Promise<PoolCheck<R>>,
  signal?: AbortSignal,
  pairs = workersOf(input),
): Promise<R[]> {
  const results: R[] = new Array<R>(input.tables.length);
  if (input.tables.length === 0) return results;
  const queue = input.tables.map((t, i) => ({ t, i }));
  const workers = Math.max(1, pairs);
  let hash: RowHash | undefined = input.rowHash === 'auto' || input.rowHash === undefined ? undefined : input.rowHash;
  let failed = false;
  const worker = async () => {
    // Both at once; when either fails the other is closed, then the failure (the source's first) thrown.
    const [src, dst] = await settled<[Client, Client]>([open(input.source, 'source', applicationName), open(input.target, 'target', applicationName)], (c) => (c as Client).end());
    try {
      // Cancelled: cancel what each backend runs (a backend waiting for a lock does not notice its
      // client is gone, and would keep its transaction's locks until granted: cleanup's DDL on our
      // tables queued behind them), then cut both connections, which releases this comparison's
      // snapshot and locks (the fence cannot be dropped under them).
      const cut = () => {
        for (const c of [src, dst]) {
          void sendCancelRequest(c);
          dropConnection(c);
        }
      };
      signal?.addEventListener('abort', cut, { once: true });
      hash ??= await probeRowHash(src, dst);
      const check = await setup(src, dst, hash);
      for (let job = queue.shift(); job && !failed; job = queue.shift()) results[job.i] = await check(job.t, job.i);
      if (!failed) await check.idle?.();
    } finally {
      await Promise.all([dst.end().catch(() => undefined), src.end().catch(() => undefined)]);
    }
  };
  // The first failure stops the other workers after their current table; all have closed their
  // connections before it is rethrown.
  const outcomes = await Promise.allSettled(
    Array.from({ length: workers }, () =>
      worker().catch((err: unknown) => {
        failed = true;
        throw err;
      }),
    ),
  );
  const failure = outcomes.find((s): s is PromiseRejectedResult => s.status === 'rejected');
  if (failure) throw failure.reason;
  return results;
}

async function open(spec: ConnectionSpec, side: 'source' | 'target', applicationName: string): Promise<Client> {
  try {
    return await connect(spec, { applicationName });
  } catch (err) {
    const e = err as { code?: string; message?: string };
    const wrapped = new Error(`cannot connect to the ${side} (${describeConnection(spec)}): ${e.message ?? String(err)}`) as Error & { code?: string };
    if (e.code) wrapped.code = e.code;
    throw wrapped;
  }
}

/** hashtext when both servers compute the same values for it (same byte order), else md5. */
export async function probeRowHash(src: Client, dst: Client): Promise<RowHash> {
  try {
    const [a, b] = await Promise.all([src.query<{ a: string; b: string; c: string }>(HASH_PROBE_SQL), dst.query<{ a: string; b: string; c: string }>(HASH_PROBE_SQL)]);
    const x = a.rows[0]!;
    const y = b.rows[0]!;
    return x.a === y.a && x.b === y.b && x.c === y.c ? 'hashtext' : 'md5';
  } catch {
    return 'md5';
  }
}

/**
 * The mismatch list: checksum findings (with their chunk), then sample findings not already in it;
 * keys as records; for `different` rows, the names of the columns that differ.
 */
export async function assembleMismatches(
  s: TableSide,
  d: TableSide,
  t: ValidateTableSpec,
  found: FoundRow[],
  sampled: SampleResult['found'],
  max: number,
): Promise<{ mismatches: Mismatch[]; truncated: boolean }> {
  const keyed = t.keyColumns.length > 0;
  const record = (id: string): Record<string, string | null> => (keyed ? keyRecord(t.keyColumns, id) : { [ROW_MD5_KEY]: id });
  type Item = { id: string; kind: MismatchKind; chunk?: string; columns?: string[]; foundBy: Mismatch['foundBy'] };
  const items: Item[] = reconcileAcrossChunks(found).map((f) => ({ id: f.id, kind: f.kind, chunk: f.chunk, foundBy: 'checksum' as const }));
  const byId = new Map(items.map((m) => [m.id, m]));
  for (const f of sampled) {
    const have = byId.get(f.id);
    if (have) {
      if (f.columns && have.kind === 'different') have.columns = f.columns;
      continue;
    }
    const item: Item = { id: f.id, kind: f.kind, foundBy: 'sample' };
    if (f.columns) item.columns = f.columns;
    items.push(item);
    byId.set(f.id, item);
  }
  const listed = items.slice(0, max);
  if (keyed) {
    const need = listed.filter((m) => m.kind === 'different' && !m.columns).map((m) => m.id);
    if (need.length) {
      const cols = await columnsThatDiffer(s, d, need);
      for (const m of listed) {
        const c = cols.get(m.id);
        if (c && c.length && !m.columns) m.columns = c;
      }
    }
  }
  const mismatches = listed.map((m) => {
    const out: Mismatch = { key: record(m.id), kind: m.kind, foundBy: m.foundBy };
    if (m.chunk) out.chunk = m.chunk;
    if (m.columns) out.columns = m.columns;
    return out;
  });
  return { mismatches, truncated: items.length > max };
}

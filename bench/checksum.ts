/**
 * Validation cost on one big table: `npx tsx bench/checksum.ts [rows]` (default 1,000,000).
 *
 * Starts two throwaway clusters, builds the same table on both (mixed types, about 200 bytes a row,
 * generated deterministically so both sides hold identical rows), then times, in the same run:
 *   - a plain count(*) (the floor: one scan without looking at values),
 *   - validateTables at each level: counts + sample, the full checksum with hashtextextended and with
 *     md5 row hashes,
 *   - the default proof: one live pass, then the cutover's check with nothing / one chunk changed since,
 *   - the checksum again after one row of the target was changed (chunks bisected down to that row).
 * Throughput is per side (both sides run at once): rows / elapsed, and table bytes (heap + TOAST) / elapsed.
 */
import { cpus, loadavg } from 'node:os';
import { startCluster, type PgCluster } from '../test/harness/pg-cluster';
import { proveLive, validateTables, type TableValidationResult, type ValidateTablesInput } from '../activities/validate';

const ROWS = Math.max(1, Math.floor(Number(process.argv[2] ?? 1_000_000)));
const TABLE = { schema: 'public', name: 'bench_checksum' };
const COLUMNS = ['id', 'account', 'title', 'created_at', 'amount', 'ratio', 'doc', 'tags', 'blob'];

const DDL = `
CREATE TABLE public.bench_checksum (
  id bigint PRIMARY KEY,
  account int NOT NULL,
  title text NOT NULL,
  created_at timestamptz NOT NULL,
  amount numeric(14,4),
  ratio float8,
  doc jsonb,
  tags text[],
  blob bytea
);
INSERT INTO public.bench_checksum
SELECT g, g % 9973, 'title ' || md5(g::text),
       timestamptz '2024-01-01 00:00:00+00' + g * interval '1.000001 second',
       g / 7.0, CASE WHEN g % 1000 = 0 THEN 'NaN'::float8 ELSE g / 3.0 END,
       jsonb_build_object('id', g, 'kind', g % 17, 'name', md5((g + 1)::text)),
       ARRAY['t' || (g % 5), 't' || (g % 11)],
       decode(md5((g * 2)::text), 'hex')
  FROM generate_series(1, ${ROWS}) g;
`;

const t0 = performance.now();
const say = (msg: string) => console.log(`[${((performance.now() - t0) / 1000).toFixed(1).padStart(6)}s] ${msg}`);
const fmt = (n: number) => Math.round(n).toLocaleString('en-US');

async function timed<T>(fn: () => Promise<T>): Promise<{ ms: number; value: T }> {
  const start = performance.now();
  const value = await fn();
  return { ms: performance.now() - start, value };
}

async function countStar(c: PgCluster): Promise<number> {
  const cl = await c.client();
  try {
    await cl.query('SELECT count(*) FROM public.bench_checksum'); // warm the cache like the checks below
    return (await timed(() => cl.query('SELECT count(*) FROM public.bench_checksum'))).ms;
  } finally {
    await cl.end();
  }
}

async function main(): Promise<void> {
  say(`${cpus().length} × ${cpus()[0]?.model ?? 'CPU'}, load ${loadavg().map((l) => l.toFixed(2)).join(' ')}; ${fmt(ROWS)} rows`);
  const settings = { shared_buffers: "'512MB'", max_wal_size: "'8GB'", checkpoint_timeout: "'30min'" };
  const [source, target] = await Promise.all([startCluster({ name: 'bench-ck-src', settings }), startCluster({ name: 'bench-ck-tgt', settings })]);
  try {
    say('building the table on both clusters');
    await Promise.all([source.query(DDL), target.query(DDL)]);
    await Promise.all([source.query('VACUUM ANALYZE public.bench_checksum'), target.query('VACUUM ANALYZE public.bench_checksum')]);
    const [size] = await source.query<{ b: string }>(`SELECT pg_table_size('public.bench_checksum')::text AS b`);
    const bytes = Number(size!.b);
    const mb = bytes / 1024 / 1024;
    say(`table: ${fmt(ROWS)} rows, ${mb.toFixed(1)} MB (heap + TOAST) per side`);

    const base: ValidateTablesInput = {
      source: source.uri(),
      target: target.uri(),
      tables: [{ source: TABLE, target: TABLE, keyColumns: ['id'], copyColumns: COLUMNS }],
    };
    const rows: Array<[string, number, string]> = [];
    const add = (label: string, ms: number, r?: TableValidationResult) => {
      rows.push([label, ms, r ? `${r.ok ? 'equal' : 'DIFFERENT'}${r.chunks ? `, ${r.chunks} chunks` : ''}${r.mismatches.length ? `, ${r.mismatches.length} row(s): ${JSON.stringify(r.mismatches.map((m) => [m.key, m.kind, m.columns]))}` : ''}` : '']);
      say(`${label}: ${(ms / 1000).toFixed(2)} s`);
    };

    const [cs, ct] = await Promise.all([countStar(source), countStar(target)]);
    add('count(*) source', cs);
    add('count(*) target', ct);
    const run = async (label: string, extra: Partial<ValidateTablesInput>) => {
      const { ms, value } = await timed(() => validateTables({ ...base, ...extra }));
      add(label, ms, value[0]);
      return value[0]!;
    };
    await run('counts only (validateTables, no sample, no checksum)', { sampleSize: 0, checksum: false });
    await run('counts + sample of 1,000 rows', { sampleSize: 1000, checksum: false });
    const h = await run('counts + checksum, hashtextextended', { sampleSize: 0, rowHash: 'hashtext' });
    const m = await run('counts + checksum, md5', { sampleSize: 0, rowHash: 'md5' });
    if (!h.ok || !m.ok) throw new Error('identical tables did not validate as equal');

    // The default proof: one live pass (outside the write stop), then what VALIDATING does at cutover.
    const slot = 'bench_proof';
    const pass = await timed(() => proveLive({ ...base, slot, maxPasses: 1 }, { waitForTarget: async () => true }));
    add(`live proof, one pass (SYNCING_WAL, no write stop): ${pass.value.progress.chunksVerified}/${pass.value.progress.chunks} chunks`, pass.ms);
    const a = await run('cutover with the proof, nothing changed since the pass', { sampleSize: 0, proofSlot: slot });
    if (!a.ok || a.proof?.reverifiedAtCutover !== 0) throw new Error(`expected nothing to re-check: ${JSON.stringify(a.proof)}`);
    // The same change on both sides, as the apply would make it: that one chunk is re-checked.
    for (const c of [source, target]) await c.query(`UPDATE public.bench_checksum SET ratio = ratio + 1 WHERE id = 12345`);
    const b = await run('cutover with the proof, one chunk changed since the pass', { sampleSize: 0, proofSlot: slot });
    if (!b.ok || b.proof?.reverifiedAtCutover !== 1) throw new Error(`expected one chunk to re-check: ${JSON.stringify(b.proof)}`);

    // Not a multiple of 1000: those rows hold NaN, which adding to does not change.
    const victim = Math.min(ROWS, Math.floor(ROWS * 0.61) + 7);
    await target.query(`UPDATE public.bench_checksum SET ratio = ratio + 1e-9 WHERE id = ${victim}`);
    const d = await run('checksum after changing one target row (bisected to the row)', { sampleSize: 0 });
    if (d.ok || d.mismatches.length !== 1 || d.mismatches[0]!.key.id !== String(victim)) throw new Error(`the changed row was not found: ${JSON.stringify(d)}`);

    console.log('');
    const w = Math.max(...rows.map((r) => r[0].length));
    console.log(`${'step'.padEnd(w)}  ${'seconds'.padStart(8)}  ${'rows/s'.padStart(12)}  ${'MB/s'.padStart(7)}  ${'vs count(*)'.padStart(11)}  result`);
    for (const [label, ms, note] of rows) {
      const s = ms / 1000;
      console.log(
        `${label.padEnd(w)}  ${s.toFixed(2).padStart(8)}  ${fmt(ROWS / s).padStart(12)}  ${(mb / s).toFixed(1).padStart(7)}  ${(ms / cs).toFixed(1).padStart(10)}×  ${note}`,
      );
    }
  } finally {
    await Promise.allSettled([source.destroy(), target.destroy()]);
  }
}

main().catch((err: unknown) => {
  console.error(err);
  process.exitCode = 1;
});

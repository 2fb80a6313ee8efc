/**
 * Where the apply engine's memory goes on one large source transaction (issue 7): a slot and a
 * publication on a throwaway source, one INSERT of `--mb` MB in a single transaction written while
 * nothing applies, then activities/apply/run.ts's runApply in this process, alone, until the target
 * has every row. Every `--sample-ms` it reads process.memoryUsage() and V8's heap spaces; it prints a
 * timeline (once a second) and the peak of each figure, with the time the apply took.
 *
 * Run it under the node flags to compare (the engine runs in this process, like in the worker):
 *   node --max-semi-space-size=4 --require tsx/cjs bench/apply-memory.ts --mb 1024
 *   npx tsx bench/apply-memory.ts --mb 1024 --row-bytes 1024
 */
import { Command } from 'commander';
import { getHeapSpaceStatistics, setFlagsFromString } from 'node:v8';
import { runApply } from '../activities/apply/run';
import { mb, num, say, sec, sleep, startBenchClusters, table } from './common';

const DB = 'bench';
const MB = 1024 * 1024;

interface Sample {
  t: number;
  rss: number;
  heapUsed: number;
  heapTotal: number;
  external: number;
  arrayBuffers: number;
  newSpace: number;
  oldSpace: number;
  largeObjects: number;
}

function sample(t0: number): Sample {
  const m = process.memoryUsage();
  const spaces = new Map(getHeapSpaceStatistics().map((s) => [s.space_name, s.space_size]));
  return {
    t: performance.now() - t0,
    rss: m.rss,
    heapUsed: m.heapUsed,
    heapTotal: m.heapTotal,
    external: m.external,
    arrayBuffers: m.arrayBuffers,
    newSpace: spaces.get('new_space') ?? 0,
    oldSpace: spaces.get('old_space') ?? 0,
    largeObjects: (spaces.get('large_object_space') ?? 0) + (spaces.get('new_large_object_space') ?? 0),
  };
}

async function main(): Promise<void> {
  const o = new Command()
    .option('--mb <n>', 'size of the one transaction', '1024')
    .option('--row-bytes <n>', 'payload bytes per row (text)', '1024')
    .option('--sample-ms <n>', 'sampling period', '50')
    .option('--v8-flags <flags>', 'V8 flags set at run time (v8.setFlagsFromString), the way worker/ can set them')
    .parse()
    .opts<{ mb: string; rowBytes: string; sampleMs: string; v8Flags?: string }>();
  if (o.v8Flags) setFlagsFromString(o.v8Flags);
  const rowBytes = Number(o.rowBytes);
  const rows = Math.round((Number(o.mb) * MB) / rowBytes);
  say(`node ${process.version} ${process.execArgv.join(' ')}${o.v8Flags ? ` + at run time ${o.v8Flags}` : ''}; one transaction of ${num(rows)} rows × ${rowBytes} bytes`);
  const { source, target, destroy } = await startBenchClusters();
  try {
    await source.createDatabase(DB);
    await target.createDatabase(DB);
    const ddl = 'CREATE TABLE big (id bigint PRIMARY KEY, payload text NOT NULL)';
    await source.query(ddl, [], DB);
    await target.query(ddl, [], DB);
    await source.query('CREATE PUBLICATION big_pub FOR TABLE big', [], DB);
    await source.query(`SELECT pg_create_logical_replication_slot('big_slot', 'pgoutput')`, [], DB);
    const reps = Math.ceil(rowBytes / 32);
    const ins = performance.now();
    await source.query(`INSERT INTO big SELECT g, left(repeat(md5(g::text), ${reps}), ${rowBytes}) FROM generate_series(1, ${rows}) g`, [], DB);
    say(`source: INSERT committed in ${sec(performance.now() - ins)}`);

    global.gc?.();
    await sleep(200);
    const t0 = performance.now();
    const cpu0 = process.cpuUsage();
    const before = sample(t0);
    const samples: Sample[] = [];
    const timer = setInterval(() => samples.push(sample(t0)), Number(o.sampleMs));
    const controller = new AbortController();
    const applying = runApply({
      source: source.uri(DB),
      target: target.uri(DB),
      slot: 'big_slot',
      publication: 'big_pub',
      tables: [{ source: { schema: 'public', name: 'big' }, target: { schema: 'public', name: 'big' } }],
      signal: controller.signal,
      // Engine settings to compare: PG_DTS_BENCH_APPLY_OPTIONS='{"gcEveryTxnBytes": 16777216}'.
      ...(JSON.parse(process.env.PG_DTS_BENCH_APPLY_OPTIONS ?? '{}') as object),
    });
    applying.catch(() => undefined);
    const count = async () => Number((await target.query<{ n: string }>('SELECT count(*)::text AS n FROM big', [], DB))[0]!.n);
    let done = false;
    while (!done) {
      await Promise.race([sleep(500), applying.then(() => undefined, () => undefined)]);
      done = (await count()) >= rows;
      if (!done && (await Promise.race([applying.then(() => true, () => true), sleep(0).then(() => false)]))) break;
    }
    const ms = performance.now() - t0;
    const cpu = process.cpuUsage(cpu0);
    clearInterval(timer);
    controller.abort();
    const result = await applying.catch((e: Error) => ({ error: e.message }));
    say(`apply: ${done ? 'all rows on the target' : 'STOPPED EARLY'} in ${sec(ms)} (${JSON.stringify(result)})`);

    const keys = ['rss', 'heapUsed', 'heapTotal', 'external', 'arrayBuffers', 'newSpace', 'oldSpace', 'largeObjects'] as const;
    const rowsOut: string[][] = [['t', ...keys]];
    let next = 0;
    for (const s of samples) {
      if (s.t < next) continue;
      next = s.t + 1000;
      rowsOut.push([sec(s.t), ...keys.map((k) => mb(s[k]))]);
    }
    console.log(table(rowsOut));
    const peak = (k: (typeof keys)[number]) => Math.max(...samples.map((s) => s[k]));
    console.log(
      table([
        ['', ...keys],
        ['before', ...keys.map((k) => mb(before[k]))],
        ['peak', ...keys.map((k) => mb(peak(k)))],
        ['growth', ...keys.map((k) => mb(peak(k) - before[k]))],
      ]),
    );
    console.log(
      `apply time ${sec(ms)}; ${(rows / (ms / 1000)).toFixed(0)} rows/s; this process's CPU ${((cpu.user + cpu.system) / 1e6).toFixed(1)} s; peak RSS growth ${mb(peak('rss') - before.rss)}`,
    );
  } finally {
    await destroy();
  }
}

main().catch((err: unknown) => {
  console.error(err instanceof Error ? err.stack ?? err.message : err);
  process.exit(1);
});

/**
 * The worker's CPU for the apply's own work, without the servers (issue 24): decoding pgoutput,
 * folding the changes into groups, and encoding the statements' values. A throwaway source runs
 * `--transactions` pgbench transactions into a pgoutput slot; the stream is read once with
 * pg_logical_slot_peek_binary_changes, then replayed in this process through parsePgoutput, Group
 * (account, fold, INSERT batches; a group ends at the first commit past 10,000 changes, as the engine's
 * default) and each group's statements (KeyedChanges.drain's text[] arrays, copyChunks' COPY rows).
 * Three stages, each alone: `parse`, `fold` (parse + fold), `write` (all three). Per stage it prints
 * the median over `--rounds` of CPU and garbage-collection time per 100,000 source transactions.
 *
 * For finding where the worker's time goes, not for claiming a target: no socket, no target, no
 * framing, no Temporal. What a user waits for is bench/e2e.ts's. Run it under the worker's node flags
 * to compare them (`node --max-semi-space-size=32 --require tsx/cjs bench/apply-cpu.ts`).
 *   npx tsx bench/apply-cpu.ts [--transactions 20000] [--rounds 7] [--passes 5]
 */
import { Command } from 'commander';
import { PerformanceObserver } from 'node:perf_hooks';
import { copyChunks, keyedRelation } from '../activities/apply/batch';
import { Group, type Change } from '../activities/apply/group';
import { parsePgoutput } from '../activities/apply/pgoutput';
import type { MappedRelation } from '../activities/apply/relations';
import type { ApplyRelation } from '../activities/apply/statements';
import { startCluster } from '../test/harness/pg-cluster';
import { BENCH_SETTINGS, medianOf, num, pgbenchInit, say, startPgbench, table } from './common';

const DB = 'bench';
const GROUP_CHANGES = 10_000;
const LIMITS = { maxRows: 1000, maxBytes: 1024 * 1024, bigValue: 256 * 1024, copy: true };
type Stage = 'parse' | 'fold' | 'write';

/** The recorded stream: every pgoutput message of the pgbench run, in order. */
async function record(transactions: number): Promise<Buffer[]> {
  const source = await startCluster({ name: 'bench-cpu-source', settings: BENCH_SETTINGS });
  try {
    await source.createDatabase(DB);
    await pgbenchInit(source, DB, 1);
    await source.query('CREATE PUBLICATION cpu_pub FOR ALL TABLES', [], DB);
    await source.query(`SELECT pg_create_logical_replication_slot('cpu_slot', 'pgoutput')`, [], DB);
    const clients = 2;
    const r = await startPgbench(source, DB, ['-c', String(clients), '-j', String(clients), '-t', String(Math.ceil(transactions / clients))]).done;
    if (r.code !== 0) throw new Error(`pgbench exited with ${r.code}: ${r.stderr.slice(-500)}`);
    const rows = await source.query<{ data: Buffer }>(
      `SELECT data FROM pg_logical_slot_peek_binary_changes('cpu_slot', NULL, NULL, 'proto_version', '1', 'publication_names', 'cpu_pub')`,
      [],
      DB,
    );
    return rows.map((x) => x.data);
  } finally {
    await source.destroy();
  }
}

/** A table as the engine maps it: keyed by its replica identity's columns when it has one. */
function mapped(m: Extract<ReturnType<typeof parsePgoutput>, { tag: 'relation' }>): MappedRelation {
  const key = m.replicaIdentity === 'full' ? [] : m.columns.filter((c) => (c.flags & 1) === 1).map((c) => c.name);
  const rel: ApplyRelation = { target: { schema: m.schema, name: m.name }, columns: m.columns.map((c) => c.name), keyColumns: key, replicaIdentity: m.replicaIdentity };
  const castTypes = m.columns.map(() => 'text');
  return { rel, display: m.name, castTypes, keyed: key.length ? keyedRelation(rel, castTypes, undefined, [{ cols: key, plain: true }]) : undefined };
}

/** One replay of the stream; returns the bytes produced (so that no stage is optimized away). */
function replay(stream: Buffer[], stage: Stage): number {
  const relations = new Map<number, MappedRelation>();
  let out = 0;
  const write = (g: Group): void => {
    if (stage !== 'write') return;
    for (const kc of g.keyed.values()) for (const s of kc.drain(LIMITS)) for (const v of s.values) out += v?.length ?? 0;
    for (const b of g.batches.values()) for (const c of copyChunks(b.rows)) out += c.length;
  };
  let g = new Group();
  for (const b of stream) {
    const m = parsePgoutput(b);
    if (m.tag === 'invalid') throw m.error;
    if (m.tag === 'relation') relations.set(m.relationOid, mapped(m));
    if (stage === 'parse') {
      out += m.tag.length;
      continue;
    }
    if (m.tag === 'insert' || m.tag === 'update' || m.tag === 'delete') {
      const c: Change = { msg: m, mapped: relations.get(m.relationOid)! };
      g.account(c);
      if (g.foldable(c)) {
        if (!g.fold(c)) throw new Error(`a ${m.tag} of ${c.mapped.display} could not be folded`);
      } else if (m.tag === 'insert') g.addInsert(m.relationOid, c.mapped, m.new);
      else throw new Error(`a ${m.tag} of ${c.mapped.display} is neither folded nor batched`);
    } else if (m.tag === 'commit') {
      g.txns++;
      if (g.changes >= GROUP_CHANGES) {
        write(g);
        g = new Group();
      }
    }
  }
  write(g);
  return out;
}

async function main(): Promise<void> {
  const o = new Command()
    .option('--transactions <n>', 'pgbench transactions recorded', '20000')
    .option('--rounds <n>', 'measured rounds per stage (the median is printed)', '7')
    .option('--passes <n>', 'replays of the stream per round', '5')
    .parse()
    .opts<{ transactions: string; rounds: string; passes: string }>();
  const transactions = Number(o.transactions);
  say(`recording ${num(transactions)} pgbench transactions (scale 1, 2 clients) into a pgoutput slot`);
  const stream = await record(transactions);
  say(`${num(stream.length)} messages, ${num(stream.reduce((n, b) => n + b.length, 0))} bytes`);
  let gcMs = 0;
  let gcs = 0;
  const obs = new PerformanceObserver((l) => {
    for (const e of l.getEntries()) {
      gcMs += e.duration;
      gcs++;
    }
  });
  obs.observe({ entryTypes: ['gc'] });
  const per100k = (x: number, passes: number): number => (x / passes / transactions) * 100_000;
  const rows: Array<Array<string | number>> = [['stage', 'CPU ms / 100k txns (median)', 'every round', 'GC ms / 100k (median)', 'GCs / 100k']];
  let sink = 0;
  const passes = Number(o.passes);
  for (const stage of ['parse', 'fold', 'write'] as Stage[]) {
    sink += replay(stream, stage); // warm-up
    const cpu: number[] = [];
    const gc: number[] = [];
    const count: number[] = [];
    for (let r = 0; r < Number(o.rounds); r++) {
      // GC entries arrive asynchronously: let the previous round's land before counting this one's.
      await new Promise((resolve) => setTimeout(resolve, 20));
      gcMs = 0;
      gcs = 0;
      const c0 = process.cpuUsage();
      for (let p = 0; p < passes; p++) sink += replay(stream, stage);
      const c = process.cpuUsage(c0);
      await new Promise((resolve) => setTimeout(resolve, 20));
      cpu.push(per100k((c.user + c.system) / 1000, passes));
      gc.push(per100k(gcMs, passes));
      count.push(per100k(gcs, passes));
    }
    rows.push([stage, num(medianOf(cpu)), cpu.map(num).join(', '), num(medianOf(gc)), num(medianOf(count))]);
  }
  obs.disconnect();
  console.log(table(rows));
  say(`(${num(sink)} bytes produced; node ${process.version}, flags: ${process.execArgv.join(' ') || 'none'})`);
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});

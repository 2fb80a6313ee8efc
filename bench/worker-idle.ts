/**
 * Idle worker memory under different settings: one Temporal dev server, then for each variant a worker
 * process (`worker/main.ts`, what `npm run worker` runs) started with that variant's environment and
 * node flags; after it polls and settles, its VmRSS (anonymous and file-backed parts) from /proc, then
 * it runs a few short workflows' worth of polling and is stopped.
 *
 *   npx tsx bench/worker-idle.ts [--settle 5] [--variant 'name=ENV=x,ENV2=y;--node-flag'] ...
 */
import { Command } from 'commander';
import { readFileSync } from 'node:fs';
import { randomUUID } from 'node:crypto';
import { startTemporal } from '../test/harness/temporal';
import { quietTemporalLogs } from '../worker/logging';
import { mb, say, sleep, table, WorkerProcess } from './common';

function status(pid: number): Record<string, number> {
  const s = readFileSync(`/proc/${pid}/status`, 'utf8');
  const out: Record<string, number> = {};
  for (const k of ['VmRSS', 'RssAnon', 'RssFile', 'RssShmem', 'VmHWM', 'Threads']) {
    const m = new RegExp(`^${k}:\\s+(\\d+)`, 'm').exec(s);
    out[k] = Number(m?.[1] ?? 0) * (k === 'Threads' ? 1 : 1024);
  }
  return out;
}

async function main(): Promise<void> {
  const o = new Command()
    .option('--settle <s>', 'seconds to wait after the worker polls', '5')
    .option('--repeat <n>', 'start each variant this many times', '1')
    .option('--variant <spec...>', "name=ENV=value,ENV=value;--node-flag --node-flag (repeatable)", [])
    .parse()
    .opts<{ settle: string; repeat: string; variant: string[] }>();
  quietTemporalLogs('ERROR');
  const variants = [{ name: 'default', env: {}, flags: [] as string[] }];
  for (const v of o.variant) {
    const [head, flags = ''] = v.split(';');
    const [name, ...envs] = head!.split('=');
    const envStr = envs.join('=');
    const env: Record<string, string> = {};
    for (const kv of envStr ? envStr.split(',') : []) {
      const i = kv.indexOf('=');
      env[kv.slice(0, i)] = kv.slice(i + 1);
    }
    variants.push({ name: name!, env, flags: flags.split(' ').filter(Boolean) });
  }
  const temporal = await startTemporal();
  const rows: Array<Array<string | number>> = [['variant', 'RSS', 'anon', 'file', 'threads']];
  try {
    for (let r = 0; r < Number(o.repeat); r++) {
      for (const v of variants) {
        const w = await WorkerProcess.start(temporal.address, `idle-${randomUUID().slice(0, 8)}`, { env: v.env, nodeFlags: v.flags });
        await sleep(Number(o.settle) * 1000);
        const s = status(w.pid);
        rows.push([v.name, mb(s.VmRSS!), mb(s.RssAnon!), mb(s.RssFile!), s.Threads!]);
        say(`${v.name}: ${mb(s.VmRSS!)}`);
        await w.stop();
      }
    }
  } finally {
    await temporal.teardown();
  }
  console.log(table(rows));
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});

/**
 * A worker in a process of its own (`worker/main.ts`, as `npm run worker` starts it), so that a test
 * can kill it with SIGKILL: in-flight activities, their connections and the workflow's cached state
 * die with it, as on a real crash.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import path from 'node:path';
import type { TestEnv } from './env';

export interface WorkerProcess {
  pid: number;
  /** SIGKILL, then waits for the process to be gone. */
  kill(): Promise<void>;
  output(): string;
}

const repoRoot = path.join(__dirname, '..', '..');

export async function startWorkerProcess(env: Pick<TestEnv, 'temporal' | 'taskQueue'>, timeoutMs = 180_000): Promise<WorkerProcess> {
  const child: ChildProcess = spawn(process.execPath, ['--require', 'tsx/cjs', path.join(repoRoot, 'worker', 'main.ts')], {
    cwd: repoRoot,
    env: {
      ...process.env,
      TEMPORAL_ADDRESS: env.temporal.address,
      TEMPORAL_NAMESPACE: 'default',
      TEMPORAL_TASK_QUEUE: env.taskQueue,
      PG_DTS_CODEC_KEY: '',
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  child.stdout!.on('data', (d: Buffer) => void (out += d.toString()));
  child.stderr!.on('data', (d: Buffer) => void (out += d.toString()));
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const deadline = Date.now() + timeoutMs;
  while (!out.includes('polling task queue')) {
    if (child.exitCode !== null) throw new Error(`worker process exited (${child.exitCode}):\n${out}`);
    if (Date.now() > deadline) {
      child.kill('SIGKILL');
      throw new Error(`worker process did not start in ${timeoutMs} ms:\n${out}`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  return {
    pid: child.pid!,
    async kill() {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
      await exited;
    },
    output: () => out,
  };
}

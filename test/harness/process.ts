/** A child process run to its end, its output collected: for tests that drive commands as a user does. */
import { spawn, type ChildProcess } from 'node:child_process';

export interface Ran {
  code: number | null;
  out: string;
  err: string;
}

export function runCommand(cmd: string, args: string[], opts: { cwd?: string; env?: NodeJS.ProcessEnv; timeoutMs?: number } = {}): Promise<Ran> {
  return new Promise((res, rej) => {
    const child = spawn(cmd, args, { cwd: opts.cwd, env: opts.env ?? process.env, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (err += d.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), opts.timeoutMs ?? 120_000);
    child.on('error', rej);
    child.on('close', (code) => {
      clearTimeout(timer);
      res({ code, out, err });
    });
  });
}

export interface WorkerProcess {
  child: ChildProcess;
  /** What the worker wrote so far to stdout, and to stdout and stderr together. */
  stdout(): string;
  output(): string;
}

/**
 * A worker started as a user starts it (`dts worker`, `node worker/main.ts`), once it says it polls
 * its task queue (on either stream); throws with its output when it does not within `timeoutMs`.
 */
export async function startWorkerProcess(cmd: string, args: string[], opts: { cwd: string; env: NodeJS.ProcessEnv; timeoutMs?: number }): Promise<WorkerProcess> {
  const child = spawn(cmd, args, { cwd: opts.cwd, env: opts.env, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let all = '';
  child.stdout!.on('data', (d: Buffer) => ((out += d.toString()), (all += d.toString())));
  child.stderr!.on('data', (d: Buffer) => (all += d.toString()));
  const deadline = Date.now() + (opts.timeoutMs ?? 150_000);
  while (!all.includes('pg-dts worker polling') && Date.now() < deadline && child.exitCode === null) await new Promise((r) => setTimeout(r, 200));
  if (!all.includes('pg-dts worker polling')) {
    child.kill('SIGKILL');
    throw new Error(`the worker did not start polling: ${all.slice(-2000)}`);
  }
  return { child, stdout: () => out, output: () => all };
}

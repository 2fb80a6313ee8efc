/**
 * The workflow bundle, prebuilt (`npm run build:bundle`, worker/build-bundle.ts) so that a worker does
 * not run webpack at start: bundling costs seconds and leaves about 100 MB of webpack's heap in the
 * worker for good.
 *
 * A prebuilt bundle must never run old workflow code. Next to it, a manifest records the SHA-256 of
 * every file webpack read to build it (our workflow sources and whatever they import, the SDK's
 * workflow runtime, the package.json files that steered module resolution) and the SDK's version. A
 * worker uses the bundle only when every one of those files still has the recorded hash: editing a
 * workflow, or anything it imports, or upgrading the SDK makes it stale. Type-only imports (the
 * activities' types) are erased before bundling and cannot change the bundle; webpack does not read
 * them and they are not in the manifest. A new file can only enter the bundle through an import in a
 * file that is already listed, which then has a new hash.
 *
 * Writes are atomic: the bundle file is named by its content hash and the manifest, which names it,
 * is renamed into place last. Bundles a manifest no longer names are removed once they are old enough
 * that no worker still starting can be about to read them.
 */
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readdirSync, readFileSync, renameSync, statSync, unlinkSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { bundleWorkflowCode, type BundleOptions, type WorkflowBundleWithSourceMap } from '@temporalio/worker';
import { FAILURE_CONVERTER_PATH } from '../connection/codec';

/** Running the compiled package (lib/worker/bundle.js) rather than the TypeScript sources. */
const compiled = __filename.endsWith('.js');
export const repoRoot = path.join(__dirname, compiled ? '../..' : '..');
export const workflowsPath = path.join(__dirname, '..', 'workflows', compiled ? 'index.js' : 'index.ts');
/** `dist/` is git-ignored. */
export const defaultBundleDir = path.join(repoRoot, 'dist', 'workflow-bundle');

const MANIFEST = 'manifest.json';
// 2: built with the failure converter (connection/failure-converter.js).
const FORMAT = 2;
/** Unreferenced bundles older than this are removed by the next build. */
const KEEP_OLD_BUNDLES_MS = 10 * 60_000;

export interface BundleManifest {
  format: number;
  /** @temporalio/worker's version: its bundler wrote the entry point and chose the webpack settings. */
  sdk: string;
  /** The workflows entry point, relative to the repository. */
  workflows: string;
  /** The bundle's file name (in the same folder). */
  bundle: string;
  builtAt: string;
  /** Every file webpack read, relative to the repository (node_modules included) -> SHA-256. */
  files: Record<string, string>;
}

const quietBundlerLogger = {
  trace: () => undefined,
  debug: () => undefined,
  info: () => undefined,
  log: () => undefined,
  warn: (m: string, meta?: unknown) => console.warn(m, meta ?? ''),
  error: (m: string, meta?: unknown) => console.error(m, meta ?? ''),
};

function sdkVersion(): string {
  const pkg = path.join(path.dirname(require.resolve('@temporalio/worker')), '..', 'package.json');
  return (JSON.parse(readFileSync(pkg, 'utf8')) as { version: string }).version;
}

const sha256 = (data: string | Buffer): string => createHash('sha256').update(data).digest('hex');

/**
 * Where a bundle is built from and kept. Tests use a copy of the workflows; everything else the
 * defaults: this repository, workflows/index.ts, dist/workflow-bundle/.
 */
export interface BundleLocation {
  /** Folder of the bundle and its manifest. */
  dir: string;
  /** Manifest paths are relative to it. */
  root: string;
  workflowsPath: string;
}

function location(loc: Partial<BundleLocation>): BundleLocation {
  return { dir: loc.dir ?? defaultBundleDir, root: loc.root ?? repoRoot, workflowsPath: loc.workflowsPath ?? workflowsPath };
}

const relTo = (root: string, file: string): string => path.relative(root, file).split(path.sep).join('/');

type WebpackConfig = Parameters<NonNullable<BundleOptions['webpackConfigHook']>>[0];
interface DoneStats {
  compilation: { fileDependencies: Iterable<string> };
}
interface HookedCompiler {
  hooks: { done: { tap(name: string, fn: (stats: DoneStats) => void): void } };
}

/**
 * Bundles the workflows in this process with webpack (seconds, and about 100 MB that stays): what
 * Worker.create would do given workflowsPath. `onFiles` receives every file webpack read.
 */
export async function bundleInProcess(onFiles?: (files: string[]) => void, workflows: string = workflowsPath): Promise<WorkflowBundleWithSourceMap> {
  const webpackConfigHook = (config: WebpackConfig): WebpackConfig => {
    if (!onFiles) return config;
    const collect = {
      apply(compiler: HookedCompiler) {
        compiler.hooks.done.tap('pg-dts-bundle-manifest', (stats) => onFiles([...stats.compilation.fileDependencies]));
      },
    };
    return { ...config, plugins: [...(config.plugins ?? []), collect as unknown as NonNullable<WebpackConfig['plugins']>[number]] };
  };
  return bundleWorkflowCode({ workflowsPath: workflows, logger: quietBundlerLogger, webpackConfigHook, failureConverterPath: FAILURE_CONVERTER_PATH });
}

/** Builds the bundle and its manifest. */
export async function buildWorkflowBundle(where: Partial<BundleLocation> = {}): Promise<{ codePath: string; manifest: BundleManifest; bytes: number }> {
  const { dir, root, workflowsPath: entry } = location(where);
  const rel = (f: string) => relTo(root, f);
  let code = '';
  let files: Record<string, string> = {};
  for (let attempt = 1; ; attempt++) {
    const started = Date.now();
    let read: string[] = [];
    code = (await bundleInProcess((f) => (read = f), entry)).code;
    // The generated entry point lives in webpack's memory file system only: it follows from the SDK version.
    const paths = read.filter((f) => existsSync(f) && statSync(f).isFile()).sort();
    // The manifest must hash what webpack read: a file saved during the build may differ from it.
    const touched = paths.filter((f) => statSync(f).mtimeMs >= started - 1000);
    if (touched.length === 0) {
      files = Object.fromEntries(paths.map((f) => [rel(f), sha256(readFileSync(f))]));
      break;
    }
    if (attempt >= 3) throw new Error(`sources keep changing while the workflow bundle is built: ${touched.map(rel).join(', ')}`);
  }
  if (!files[rel(entry)]) throw new Error(`bundle manifest: webpack did not report reading ${rel(entry)}`);
  const bundle = `workflow-bundle-${sha256(code).slice(0, 16)}.js`;
  const manifest: BundleManifest = { format: FORMAT, sdk: sdkVersion(), workflows: rel(entry), bundle, builtAt: new Date().toISOString(), files };
  mkdirSync(dir, { recursive: true });
  const codePath = path.join(dir, bundle);
  const unique = `${process.pid}-${Date.now()}`;
  writeFileSync(`${codePath}.${unique}.tmp`, code);
  renameSync(`${codePath}.${unique}.tmp`, codePath);
  writeFileSync(path.join(dir, `${MANIFEST}.${unique}.tmp`), JSON.stringify(manifest, null, 1));
  renameSync(path.join(dir, `${MANIFEST}.${unique}.tmp`), path.join(dir, MANIFEST));
  removeOldBundles(dir, bundle);
  return { codePath, manifest, bytes: Buffer.byteLength(code) };
}

function removeOldBundles(dir: string, keep: string): void {
  const now = Date.now();
  for (const f of readdirSync(dir)) {
    if (f === keep || f === MANIFEST || !/^(workflow-bundle-|manifest\.json\.).*(\.js|\.tmp)$/.test(f)) continue;
    try {
      if (now - statSync(path.join(dir, f)).mtimeMs > KEEP_OLD_BUNDLES_MS) unlinkSync(path.join(dir, f));
    } catch {
      // Removed by another build meanwhile.
    }
  }
}

export type PrebuiltBundle = { fresh: true; codePath: string; manifest: BundleManifest } | { fresh: false; reason: string };

/**
 * The prebuilt bundle in `dir` if it was built from exactly the files there are now, else why not.
 * Hashes every listed file (a few MB: milliseconds).
 */
export function prebuiltWorkflowBundle(where: Partial<BundleLocation> = {}): PrebuiltBundle {
  const { dir, root, workflowsPath: entry } = location(where);
  const rel = (f: string) => relTo(root, f);
  let manifest: BundleManifest;
  try {
    manifest = JSON.parse(readFileSync(path.join(dir, MANIFEST), 'utf8')) as BundleManifest;
  } catch {
    return { fresh: false, reason: `no prebuilt bundle in ${rel(dir)}` };
  }
  if (manifest.format !== FORMAT) return { fresh: false, reason: `bundle manifest format ${manifest.format}, expected ${FORMAT}` };
  const sdk = sdkVersion();
  if (manifest.sdk !== sdk) return { fresh: false, reason: `bundle built with @temporalio/worker ${manifest.sdk}, installed ${sdk}` };
  if (manifest.workflows !== rel(entry)) return { fresh: false, reason: `bundle built from ${manifest.workflows}` };
  const files = Object.entries(manifest.files ?? {});
  if (files.length === 0) return { fresh: false, reason: 'bundle manifest lists no files' };
  for (const [f, hash] of files) {
    let now: string;
    try {
      now = sha256(readFileSync(path.join(root, f)));
    } catch {
      return { fresh: false, reason: `${f} is gone since the bundle was built` };
    }
    if (now !== hash) return { fresh: false, reason: `${f} changed since the bundle was built` };
  }
  if (!/^workflow-bundle-[0-9a-f]+\.js$/.test(manifest.bundle)) return { fresh: false, reason: `bundle manifest names ${JSON.stringify(manifest.bundle)}` };
  const codePath = path.join(dir, manifest.bundle);
  if (!existsSync(codePath)) return { fresh: false, reason: `${rel(codePath)} is missing` };
  return { fresh: true, codePath, manifest };
}

/**
 * Builds the bundle (worker/build-bundle.ts) in a child process, so that webpack's memory leaves with
 * it. True when the child succeeded. From the sources it uses tsx's require hook whatever started this
 * process (tsx, node --import tsx, bin/dts.js); the compiled package runs the compiled script.
 */
export function buildInChildProcess(dir: string = defaultBundleDir, env: NodeJS.ProcessEnv = process.env): boolean {
  const args = compiled ? [path.join(__dirname, 'build-bundle.js'), dir] : ['--require', require.resolve('tsx/cjs'), path.join(__dirname, 'build-bundle.ts'), dir];
  const child = spawnSync(process.execPath, args, { stdio: 'inherit', env });
  return child.status === 0;
}

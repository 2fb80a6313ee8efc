/**
 * The prebuilt workflow bundle (worker/bundle.ts): built from a copy of workflows/ (so that other edits
 * in this checkout cannot disturb it), found fresh, found stale as soon as a source it was built from
 * changes, and runnable: it replays a recorded migration history. Then the child-process build that
 * `npm run worker` uses when the bundle is missing or stale.
 */
import { cpSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, unlinkSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Worker } from '@temporalio/worker';
import { historyFromJSON } from '@temporalio/common/lib/proto-utils';
import { buildInChildProcess, buildWorkflowBundle, prebuiltWorkflowBundle, repoRoot, type BundleLocation, type BundleManifest } from '../../worker/bundle';
import { HISTORY_DIR } from '../replay';

let root: string;
let loc: BundleLocation;
let built: { codePath: string; manifest: BundleManifest; bytes: number };

beforeAll(async () => {
  mkdirSync(path.join(repoRoot, '.tmp'), { recursive: true });
  // Inside the repository, so that @temporalio/workflow resolves from its node_modules.
  root = mkdtempSync(path.join(repoRoot, '.tmp', 'bundle-test-'));
  cpSync(path.join(repoRoot, 'workflows'), path.join(root, 'workflows'), { recursive: true });
  loc = { root, dir: path.join(root, 'dist'), workflowsPath: path.join(root, 'workflows', 'index.ts') };
  built = await buildWorkflowBundle(loc);
});

afterAll(() => {
  if (root) rmSync(root, { recursive: true, force: true });
});

const stale = (reason: RegExp) => ({ fresh: false, reason: expect.stringMatching(reason) });

describe('prebuilt workflow bundle', () => {
  it('lists every source webpack read, and is fresh while none changed', () => {
    const files = Object.keys(built.manifest.files);
    const sources = readdirSync(path.join(root, 'workflows'), { recursive: true, encoding: 'utf8' }).filter((f) => f.endsWith('.ts'));
    expect(sources).toContain(path.join('phases', 'sync-wal.ts'));
    for (const f of sources) expect(files).toContain(`workflows/${f.split(path.sep).join('/')}`);
    expect(files.some((f) => f.includes('node_modules/@temporalio/workflow/lib/'))).toBe(true);
    // Type-only imports of the activities are erased: they cannot change the bundle.
    expect(files.filter((f) => f.includes('activities/'))).toEqual([]);
    expect(built.manifest.workflows).toBe('workflows/index.ts');
    expect(built.bytes).toBeGreaterThan(100_000);
    expect(prebuiltWorkflowBundle(loc)).toEqual({ fresh: true, codePath: built.codePath, manifest: built.manifest });
  });

  it('is stale once a source changes or goes, or the bundle or manifest is not what it was', () => {
    const state = path.join(root, 'workflows', 'state.ts');
    const original = readFileSync(state, 'utf8');
    writeFileSync(state, `${original}\n// edited\n`);
    expect(prebuiltWorkflowBundle(loc)).toEqual(stale(/^workflows\/state\.ts changed since the bundle was built$/));
    unlinkSync(state);
    expect(prebuiltWorkflowBundle(loc)).toEqual(stale(/^workflows\/state\.ts is gone/));
    writeFileSync(state, original);
    expect(prebuiltWorkflowBundle(loc).fresh).toBe(true);

    const manifestPath = path.join(loc.dir, 'manifest.json');
    const manifest = readFileSync(manifestPath, 'utf8');
    writeFileSync(manifestPath, JSON.stringify({ ...built.manifest, sdk: '0.0.1' }));
    expect(prebuiltWorkflowBundle(loc)).toEqual(stale(/built with @temporalio\/worker 0\.0\.1/));
    writeFileSync(manifestPath, manifest);

    const code = readFileSync(built.codePath);
    unlinkSync(built.codePath);
    expect(prebuiltWorkflowBundle(loc)).toEqual(stale(/is missing$/));
    writeFileSync(built.codePath, code);
    expect(prebuiltWorkflowBundle({ ...loc, dir: path.join(root, 'nowhere') })).toEqual(stale(/^no prebuilt bundle/));
    expect(prebuiltWorkflowBundle(loc).fresh).toBe(true);
  });

  it('runs the workflow: a recorded history replays against it', async () => {
    const file = readdirSync(HISTORY_DIR).filter((f) => f.endsWith('.json')).sort()[0]!;
    const history = historyFromJSON(JSON.parse(readFileSync(path.join(HISTORY_DIR, file), 'utf8')));
    await Worker.runReplayHistory({ workflowBundle: { codePath: built.codePath } }, history, file);
  });

  it('builds in a child process (what npm run worker does when the bundle is missing or stale)', () => {
    const dir = path.join(root, 'child');
    expect(buildInChildProcess(dir)).toBe(true);
    const manifest = JSON.parse(readFileSync(path.join(dir, 'manifest.json'), 'utf8')) as BundleManifest;
    expect(manifest.workflows).toBe('workflows/index.ts');
    expect(Object.keys(manifest.files)).toContain('workflows/migration.ts');
    expect(existsSync(path.join(dir, manifest.bundle))).toBe(true);
  });
});

/**
 * Worker memory settings from the environment (worker/config.ts) and what createWorker makes of them
 * (worker/worker.ts), without a Temporal server.
 */
import { describe, expect, it } from 'vitest';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { DEFAULT_TUNING, MAIN_SEMI_SPACE_MB, mainSemiSpaceMb, workerTuning, youngGeneration } from '../../worker/config';
import { temporalWorkerOptions } from '../../worker/worker';
import { DefaultLogger, type WorkerOptions } from '@temporalio/worker';
import { compileWorkerOptions } from '@temporalio/worker/lib/worker-options';
import { noopMetricMeter } from '@temporalio/common';

describe('workerTuning', () => {
  it('defaults: workflows on the main thread, a small young generation for new isolates, no memory log', () => {
    expect(workerTuning({})).toEqual(DEFAULT_TUNING);
    expect(DEFAULT_TUNING).toMatchObject({ workflowThreadPoolSize: 1, semiSpaceMb: 4, maxConcurrentActivityTaskExecutions: 32, memoryLogMs: 0 });
  });

  it('reads every setting', () => {
    expect(
      workerTuning({
        PG_DTS_MAX_ACTIVITIES: '8',
        PG_DTS_MAX_CACHED_WORKFLOWS: '10',
        PG_DTS_WORKFLOW_THREADS: '2',
        PG_DTS_SEMI_SPACE_MB: '16',
        PG_DTS_MEMORY_LOG_MS: '1000',
        PG_DTS_HEAP_GROWING_PERCENT: '30',
        PG_DTS_APPLY_WRITERS: '2',
      }),
    ).toEqual({ maxConcurrentActivityTaskExecutions: 8, maxCachedWorkflows: 10, workflowThreadPoolSize: 2, semiSpaceMb: 16, heapGrowingPercent: 30, memoryLogMs: 1000, applyWriters: 2 });
    expect(workerTuning({ PG_DTS_SEMI_SPACE_MB: 'default' }).semiSpaceMb).toBeUndefined();
    expect(workerTuning({ PG_DTS_WORKFLOW_THREADS: '' }).workflowThreadPoolSize).toBe(DEFAULT_TUNING.workflowThreadPoolSize);
  });

  it('refuses what is not a whole number in range, naming the variable', () => {
    expect(() => workerTuning({ PG_DTS_MAX_ACTIVITIES: '0' })).toThrow(/PG_DTS_MAX_ACTIVITIES must be an integer ≥ 1/);
    expect(() => workerTuning({ PG_DTS_WORKFLOW_THREADS: '-1' })).toThrow(/PG_DTS_WORKFLOW_THREADS/);
    expect(() => workerTuning({ PG_DTS_SEMI_SPACE_MB: '1.5' })).toThrow(/PG_DTS_SEMI_SPACE_MB/);
    expect(() => workerTuning({ PG_DTS_MEMORY_LOG_MS: 'often' })).toThrow(/PG_DTS_MEMORY_LOG_MS/);
    expect(() => workerTuning({ PG_DTS_HEAP_GROWING_PERCENT: '0' })).toThrow(/PG_DTS_HEAP_GROWING_PERCENT/);
    expect(() => workerTuning({ PG_DTS_APPLY_WRITERS: '3' })).toThrow('PG_DTS_APPLY_WRITERS must be 1 or 2 (got "3")');
  });
});

describe("the main thread's young generation", () => {
  it('is read from the command line, else NODE_OPTIONS, in either spelling', () => {
    expect(mainSemiSpaceMb([], '')).toBeUndefined();
    expect(mainSemiSpaceMb(['--require', 'tsx/cjs'], '--max-old-space-size=512')).toBeUndefined();
    expect(mainSemiSpaceMb(['--max-semi-space-size=32'], '')).toBe(32);
    expect(mainSemiSpaceMb([], '--enable-source-maps --max-semi-space-size=64')).toBe(64);
    expect(mainSemiSpaceMb(['--max_semi_space_size', '16'], '--max-semi-space-size=64')).toBe(16);
    expect(mainSemiSpaceMb(['--max-semi-space-size=0'], '')).toBeUndefined();
    expect(youngGeneration(32)).toBe("main thread's young generation 32 MB semi-space");
    expect(youngGeneration(undefined)).toContain(`--max-semi-space-size=${MAIN_SEMI_SPACE_MB}`);
  });

  it('is the same in npm run worker, the Docker image and docker-compose.yml', () => {
    const root = path.join(__dirname, '..', '..');
    const read = (f: string) => readFileSync(path.join(root, f), 'utf8');
    const npmScript = (JSON.parse(read('package.json')) as { scripts: Record<string, string> }).scripts.worker!;
    const dockerCmd = /^CMD (\[.*\])$/m.exec(read('Dockerfile'))![1]!;
    const composeCmd = /exec node [^"]*lib\/worker\/main\.js/.exec(read('docker-compose.yml'))![0];
    expect(mainSemiSpaceMb(npmScript.split(' '), '')).toBe(MAIN_SEMI_SPACE_MB);
    expect(mainSemiSpaceMb(JSON.parse(dockerCmd) as string[], '')).toBe(MAIN_SEMI_SPACE_MB);
    expect(mainSemiSpaceMb(composeCmd.split(' '), '')).toBe(MAIN_SEMI_SPACE_MB);
  });
});

describe('temporalWorkerOptions', () => {
  it('0 workflow threads: in-thread workflows that keep the 5 s limit on an activation', () => {
    const o = temporalWorkerOptions({ ...DEFAULT_TUNING, workflowThreadPoolSize: 0 });
    expect(o).toMatchObject({ debugMode: true, isolateExecutionTimeout: '5s', maxCachedWorkflows: DEFAULT_TUNING.maxCachedWorkflows });
    expect(o).not.toHaveProperty('workflowThreadPoolSize');
  });

  it('n workflow threads: the SDK threads, not its debug mode', () => {
    const o = temporalWorkerOptions({ ...DEFAULT_TUNING, workflowThreadPoolSize: 2, maxConcurrentActivityTaskExecutions: 5 });
    expect(o).toMatchObject({ workflowThreadPoolSize: 2, maxConcurrentActivityTaskExecutions: 5 });
    expect(o).not.toHaveProperty('debugMode');
  });
});

describe('what the SDK compiles from them', () => {
  const compiled = (tuning: typeof DEFAULT_TUNING) =>
    compileWorkerOptions({ taskQueue: 'q', ...temporalWorkerOptions(tuning) } as WorkerOptions, new DefaultLogger('ERROR'), noopMetricMeter);

  it('in-thread workflows still time out after 5 s in one activation', () => {
    const c = compiled({ ...DEFAULT_TUNING, workflowThreadPoolSize: 0 });
    expect(c.debugMode).toBe(true);
    expect(c.isolateExecutionTimeoutMs).toBe(5000);
    expect(c.maxCachedWorkflows).toBe(DEFAULT_TUNING.maxCachedWorkflows);
  });

  it('threaded workflows: as many threads as asked, the same limit', () => {
    const c = compiled({ ...DEFAULT_TUNING, workflowThreadPoolSize: 1 });
    expect(c.debugMode).toBe(false);
    expect(c.workflowThreadPoolSize).toBe(1);
    expect(c.isolateExecutionTimeoutMs).toBe(5000);
  });
});

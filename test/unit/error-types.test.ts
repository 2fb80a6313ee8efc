import { describe, expect, it } from 'vitest';
import { ApplicationFailure } from '@temporalio/common';
import { during, finalFailure } from '../../activities/errors';
import { toFailure } from '../../activities/edge';
import { createActivities } from '../../activities';
import { MockActivityEnvironment } from '@temporalio/testing';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { SpecError } from '../../activities/spec';
import { ConnectionRefusedError } from '../../activities/connect-guard';
import { walFailure } from '../../activities/wal';
import { ErrorType, FINAL_ERROR_TYPES, WAL_FINAL_ERROR_TYPES } from '../../workflows/error-types';
import * as opts from '../../workflows/activities';

describe('one registry of final error types', () => {
  const classify = (err: unknown, where: string) => toFailure(during(err, where));

  it('every final failure the edge makes is of a type the retry policies hold final', () => {
    const made = [
      classify(new SpecError('invalid migration spec: source: required'), 'read the spec'),
      classify(new ConnectionRefusedError('host not allowed'), 'connect to the source'),
      classify(Object.assign(new Error('source and target disagree'), { permanent: true }), 'apply changes'),
      classify(Object.assign(new Error('permission denied for table t'), { code: '42501' }), 'copy t'),
    ];
    expect((made[3] as Error).message).toBe('copy t: permission denied for table t (SQLSTATE 42501)');
    // The apply's verdict names no SQLSTATE, final as it is.
    const verdict = classify(Object.assign(new Error('the apply must run as a role that may set session_replication_role'), { code: '42501', permanent: true }), 'apply changes');
    expect([(verdict as ApplicationFailure).type, (verdict as Error).message]).toEqual([ErrorType.Replication, 'apply changes: the apply must run as a role that may set session_replication_role']);
    for (const f of made) {
      expect(f).toBeInstanceOf(ApplicationFailure);
      expect((f as ApplicationFailure).nonRetryable).toBe(true);
      expect(FINAL_ERROR_TYPES).toContain((f as ApplicationFailure).type);
    }
    // A dropped connection stays retryable.
    expect(classify(Object.assign(new Error('connection terminated'), { code: '08006' }), 'copy t')).not.toBeInstanceOf(ApplicationFailure);
  });

  it('every retry policy of the workflow reads the registry', () => {
    const sets = Object.entries(opts).filter(([name]) => name.endsWith('Opts'));
    expect(sets.length).toBeGreaterThan(5);
    for (const [name, o] of sets) {
      const retry = (o as { retry?: { nonRetryableErrorTypes?: string[]; maximumAttempts?: number } } | undefined)?.retry;
      // The holder is never retried; a webhook refusal is final for the alert alone.
      if (!retry || retry.maximumAttempts === 1 || name === 'notifyOpts') continue;
      expect(retry.nonRetryableErrorTypes, name).toEqual(expect.arrayContaining(FINAL_ERROR_TYPES));
    }
    expect(opts.walOpts.retry?.nonRetryableErrorTypes).toEqual(WAL_FINAL_ERROR_TYPES);
    expect(opts.notifyOpts.retry?.nonRetryableErrorTypes).toEqual([ErrorType.NotifyRefused]);
  });

  it("the WAL watcher's verdicts are final for its policy", () => {
    const w = { exists: true, retainedBytes: 10, walStatus: 'lost' };
    for (const verdict of ['over', 'lost'] as const) expect(WAL_FINAL_ERROR_TYPES).toContain(walFailure('s', w, { maxRetainedBytes: 1 }, verdict).type);
    expect((toFailure(finalFailure(ErrorType.SlotWaitTimeout, 'waited')) as ApplicationFailure).nonRetryable).toBe(true);
  });
});

describe('Temporal failures are made at the activity edge only', () => {
  it('a step error keeps its step, its final verdict and nothing of its cause', () => {
    const pg = Object.assign(new Error('connection to postgres://u:secret@h/db lost'), { code: '08006' });
    const once = during(pg, 'copy t');
    const twice = during(once, 'copy the batch');
    expect(twice.message).toBe('copy the batch: copy t: connection to postgres://u:***@h/db lost');
    const carried = toFailure(twice) as Error;
    expect(carried).not.toBeInstanceOf(ApplicationFailure);
    expect(carried.message).toBe(twice.message);
    // The driver's own error (unscrubbed) is not carried into history as a cause.
    expect(carried.cause).toBeUndefined();
    // A final step error is not named again by an outer step.
    const denied = during(Object.assign(new Error('permission denied'), { code: '42501' }), 'copy t');
    expect(during(denied, 'copy the batch')).toBe(denied);
  });

  it("the registry's activities end with Temporal failures: a final one non-retryable, of its type", async () => {
    const acts = createActivities();
    // A malformed spec fails inside the domain code with a SpecError; the edge makes it final.
    const err = await new MockActivityEnvironment().run(acts.preflight, { source: 42 }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ApplicationFailure);
    expect((err as ApplicationFailure).type).toBe(ErrorType.Spec);
    expect((err as ApplicationFailure).nonRetryable).toBe(true);
  });

  it('no module of activities/ but the edge makes an ApplicationFailure', () => {
    const files: string[] = [];
    const walk = (dir: string) => {
      for (const f of readdirSync(dir)) {
        const p = join(dir, f);
        if (statSync(p).isDirectory()) walk(p);
        else if (p.endsWith('.ts')) files.push(p);
      }
    };
    walk(join(__dirname, '../../activities'));
    expect(files.length).toBeGreaterThan(40);
    const makers = files.filter((f) => /\bApplicationFailure\b/.test(readFileSync(f, 'utf8'))).map((f) => f.replace(/.*activities\//, ''));
    expect(makers).toEqual(['edge.ts']);
  });
});

import { describe, expect, it } from 'vitest';
import { ApplicationFailure } from '@temporalio/common';
import { classify, finalFailure } from '../../activities/errors';
import { SpecError } from '../../activities/spec';
import { ConnectionRefusedError } from '../../activities/connect-guard';
import { walFailure } from '../../activities/wal';
import { ErrorType, FINAL_ERROR_TYPES, WAL_FINAL_ERROR_TYPES } from '../../workflows/error-types';
import * as opts from '../../workflows/activities';

describe('one registry of final error types', () => {
  it('every final failure classify() makes is of a type the retry policies hold final', () => {
    const made = [
      classify(new SpecError('invalid migration spec: source: required'), 'read the spec'),
      classify(new ConnectionRefusedError('host not allowed'), 'connect to the source'),
      classify(Object.assign(new Error('source and target disagree'), { permanent: true }), 'apply changes'),
      classify(Object.assign(new Error('permission denied for table t'), { code: '42501' }), 'copy t'),
    ];
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
    expect(finalFailure(ErrorType.SlotWaitTimeout, 'waited').nonRetryable).toBe(true);
  });
});

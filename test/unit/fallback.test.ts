/**
 * afterCutover "reverse" (the fallback), its pure parts: spec, signal handling, the fence that lets
 * only the reverse apply through, the swapped views of the plan.
 */
import { describe, expect, it } from 'vitest';
import { fenceFunctionBody, existingDeadline } from '../../activities/stop-writes';
import { normalizeSpec } from '../../activities/spec';
import type { TableDef } from '../../activities/model';
import { reverseFenceTables, reverseNamePairs, reverseSequencesOf } from '../../workflows/plan-views';
import { migrationIdFor, reverseIdFor, slotNameFor } from '../../workflows/names';
import { applyFallbackSignal, applySignal } from '../../workflows/state';

const base = { source: 'postgres://u@h/db', target: 'postgres://u@h2/db' };

describe('afterCutover "reverse"', () => {
  it('is accepted online and refused offline before anything runs', () => {
    expect(normalizeSpec({ ...base, afterCutover: 'reverse' }).afterCutover).toBe('reverse');
    expect(() => normalizeSpec({ ...base, afterCutover: 'reverse', mode: 'offline' })).toThrow(/afterCutover: "reverse" .* needs mode "online"/);
  });

  it('commit and rollback are taken from FINALIZING on, once, and only with a fallback', () => {
    expect(applyFallbackSignal({ phase: 'FALLBACK_READY' }, 'reverse', 'rollback')).toEqual({ decision: 'rollback', lastControl: 'rollback requested in FALLBACK_READY' });
    expect(applyFallbackSignal({ phase: 'FINALIZING' }, 'reverse', 'commit').decision).toBe('commit');
    expect(applyFallbackSignal({ phase: 'SYNCING_WAL' }, 'reverse', 'commit')).toEqual({ lastControl: expect.stringMatching(/commit ignored in SYNCING_WAL/) as unknown });
    expect(applyFallbackSignal({ phase: 'FALLBACK_READY', fallback: { slot: 's', decision: 'commit' } }, 'reverse', 'rollback').decision).toBeUndefined();
    expect(applyFallbackSignal({ phase: 'FALLBACK_READY' }, 'restore-writes', 'rollback').lastControl).toMatch(/only a migration with afterCutover "reverse"/);
    expect(applyFallbackSignal({ phase: 'ROLLED_BACK' }, 'reverse', 'commit').lastControl).toMatch(/has ended \(ROLLED_BACK\)/);
  });

  it('pause is taken in FALLBACK_READY, refused in ROLLING_BACK and after ROLLED_BACK', () => {
    expect(applySignal({ phase: 'FALLBACK_READY', paused: false }, 'pause')).toMatchObject({ paused: true });
    expect(applySignal({ phase: 'ROLLING_BACK', paused: false }, 'pause')).not.toHaveProperty('paused');
    expect(applySignal({ phase: 'ROLLED_BACK', paused: false }, 'pause').lastControl).toMatch(/has ended/);
  });

  it("the source's fence lets replica-mode sessions through, has no deadline, and is not taken for a bounded one", () => {
    const body = fenceFunctionBody('m1', undefined, true);
    expect(body).toContain(`IF current_setting('session_replication_role') <> 'replica' THEN`);
    expect(body).toContain(`ERRCODE = 'read_only_sql_transaction'`);
    expect(body).not.toContain('clock_timestamp');
    expect(existingDeadline(body)).toBeUndefined();
    expect(fenceFunctionBody('m1')).not.toContain('session_replication_role');
  });

  it('the reverse names stay apart from the forward ones and valid as slot names', () => {
    const id = migrationIdFor('x'.repeat(200));
    const slot = slotNameFor(reverseIdFor(id));
    expect(slot).not.toBe(slotNameFor(id));
    expect(slot).toMatch(/^[a-z0-9_]{1,63}$/);
    expect(`pg_dts_fence_${reverseIdFor(id)}`.length).toBeLessThanOrEqual(63);
  });

  it('the plan read backwards: target tables and partitions fenced, pairs and sequences swapped', () => {
    const q = (schema: string, name: string) => ({ schema, name });
    const def = {
      source: q('public', 'p'),
      target: q('app', 'p_new'),
      partitions: [{ source: q('public', 'p1'), target: q('app', 'p1_new') }],
      sequences: [{ source: q('public', 's'), target: q('app', 's_new'), identity: false }],
    } as unknown as TableDef;
    expect(reverseFenceTables([def])).toEqual([q('app', 'p_new'), q('app', 'p1_new')]);
    expect(reverseNamePairs([def])).toEqual([{ source: q('app', 'p_new'), target: q('public', 'p') }]);
    expect(reverseSequencesOf([def])).toEqual([{ source: q('app', 's_new'), target: q('public', 's'), identity: false }]);
  });
});

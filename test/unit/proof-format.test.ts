/** The content proof's line in `dts status` and in the report. */
import { describe, expect, it } from 'vitest';
import { proofLine } from '../../client/format';

describe('proofLine', () => {
  it('shows progress while syncing, the verdict after VALIDATING, and says when the proof was off', () => {
    expect(proofLine(undefined)).toBeUndefined();
    expect(proofLine({ state: 'running', pass: 1, passesComplete: 0, tables: 3, chunks: 40, chunksVerified: 12, rowsCovered: 1_200_000 })).toBe(
      'content proof (running): 12/40 chunks verified, 1200000 rows covered, pass 1',
    );
    expect(proofLine({ state: 'validated', pass: 3, passesComplete: 2, tables: 3, chunks: 40, chunksVerified: 40, rowsCovered: 4_000_000, lastPassMs: 2500, reverifiedAtCutover: 3 })).toBe(
      'content proof (validated): 40/40 chunks verified, 4000000 rows covered, pass 3, last pass 2.5 s, 3 re-checked at cutover',
    );
    expect(proofLine({ enabled: true, chunks: 40, verifiedBeforeCutover: 37, reverifiedAtCutover: 3, rowsCovered: 4_000_000, livePasses: 2, liveMs: 61_000, validatingMs: 420 })).toBe(
      'content proof: 40 chunks, 4000000 rows: 37 proven before the cutover, 3 re-checked at it, 2 live passes in 61.0 s; VALIDATING took 420 ms',
    );
    expect(proofLine({ enabled: false, chunks: 0, verifiedBeforeCutover: 0, reverifiedAtCutover: 0, rowsCovered: 0 })).toMatch(/^content proof: off \(validation\.checksum = false\)/);
  });
});

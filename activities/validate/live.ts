/**
 * Live, advisory validation during SYNCING_WAL: the source is still written to and the apply is
 * streaming, so the two sides never hold still at the same moment. Instead of one snapshot per side,
 * every comparison (a batch of chunk checksums, a sub-range, the rows of a leaf range) is a sandwich:
 *
 *   1. read the source in a short snapshot, and the source WAL position L1 right after it;
 *   2. wait until the target's apply has committed the source up to L1 (pgdts.apply_progress, written in
 *      the same target transaction as the changes; an idle source gets one tiny logical message so the
 *      apply has something to commit past L1);
 *   3. read the target; whatever differs from step 1 is read again on the source (L2 >= the target's
 *      position, since the target only holds what the source committed).
 *
 * The target's state lies between the two source reads. A value equal to either source read is fine; a
 * value that differs while the source held still (read 1 = read 3) is a real difference; anything else
 * changed under us and is re-checked after a pause, up to `maxRounds` times, then reported as
 * unsettled (not as a mismatch). Differing or unsettled chunks are bisected exactly like the strict
 * check, so a hot chunk is narrowed to the rows that really differ.
 *
 * Nothing here takes a lock or writes to a table; the only write is that logical message, and only when
 * the source is idle.
 */
import { displayName } from '../spec';
import { during } from '../errors';
import {
  checksumKeyed,
  checksumKeyless,
  LivePairing,
  ShapeError,
  waitForApplyProgress,
  type WaitForTarget,
} from './engine';
import type { Mismatch, ValidateHooks, ValidateTablesInput } from './contract';
import { assembleMismatches, checksumOptions, openSides, runPool } from './shared';
import type { RowHash } from './sql';

export interface ValidateLiveInput extends Omit<ValidateTablesInput, 'sampleSize' | 'checksum'> {
  /**
   * The apply's replication slot: the target's applied source position is read from
   * pgdts.apply_progress for it. Required unless hooks.waitForTarget is given.
   */
  slot?: string;
  /** Source re-reads of a changing chunk or row before it is left unsettled (default 4). */
  maxRounds?: number;
  /** Pause before a re-read, doubled each round (default 250 ms). */
  recheckDelayMs?: number;
  /** Longest wait for the target to reach a source position (default 60 s); then: unsettled. */
  catchUpTimeoutMs?: number;
}

export interface LiveValidateHooks extends ValidateHooks {
  /** Replaces the apply_progress poll: resolve true once the target has applied the source up to `lsn`. */
  waitForTarget?: WaitForTarget;
}

export interface LiveTableValidation {
  source: string;
  target: string;
  /** unsettled: no confirmed difference, but some rows kept changing (or the target lagged) throughout. */
  checksum: 'match' | 'mismatch' | 'unsettled';
  chunks: number;
  mismatchedChunks: string[];
  unsettledRanges: string[];
  unsettledRows: number;
  /** Sums of the chunk counts as last read on each side: approximate while writes go on. */
  sourceRows: number;
  targetRows: number;
  rowHash?: RowHash;
  mismatches: Mismatch[];
  mismatchesTruncated: boolean;
  error?: string;
  durationMs: number;
}

export async function validateLive(input: ValidateLiveInput, hooks: LiveValidateHooks = {}): Promise<LiveTableValidation[]> {
  if (!hooks.waitForTarget && !input.slot) throw new Error('validateLive: give the apply slot (input.slot) or hooks.waitForTarget');
  const opts = checksumOptions(input, hooks.signal);
  let tablesDone = 0;
  try {
    return await runPool(input, 'pg-dts validate live', async (src, dst, hash) => {
      const waitForTarget = hooks.waitForTarget ?? waitForApplyProgress(dst, src, input.slot!, input.catchUpTimeoutMs ?? 60_000);
      return async (t) => {
        const started = Date.now();
        const name = displayName(t.source);
        const result: LiveTableValidation = {
          source: name,
          target: displayName(t.target),
          checksum: 'match',
          chunks: 0,
          mismatchedChunks: [],
          unsettledRanges: [],
          unsettledRows: 0,
          sourceRows: 0,
          targetRows: 0,
          rowHash: hash,
          mismatches: [],
          mismatchesTruncated: false,
          durationMs: 0,
        };
        const progress = (chunksDone: number, chunks: number) =>
          hooks.onProgress?.({ table: name, step: 'checksum', chunksDone, chunks, tablesDone, tables: input.tables.length });
        try {
          const [s, d] = await openSides(src, dst, t, hash, true);
          const pairingOpts = { waitForTarget, maxRounds: input.maxRounds ?? 4, recheckDelayMs: input.recheckDelayMs ?? 250, ...(hooks.signal ? { signal: hooks.signal } : {}) };
          const pairing = new LivePairing(s, d, pairingOpts);
          const chunkOpts = { ...opts, onChunk: progress };
          const c = t.keyColumns.length
            ? await checksumKeyed(s, d, pairing, (await s.snapshot(() => s.count())).value, chunkOpts)
            : await checksumKeyless(pairing, chunkOpts);
          Object.assign(result, {
            chunks: c.chunks,
            mismatchedChunks: c.mismatchedChunks,
            unsettledRanges: c.unsettledRanges.slice(0, 100),
            unsettledRows: c.unsettledRows,
            sourceRows: c.sourceRows,
            targetRows: c.targetRows,
          });
          const listed = await assembleMismatches(s, d, t, c.found, [], opts.maxMismatches);
          result.mismatches = listed.mismatches;
          result.mismatchesTruncated = c.truncated || listed.truncated;
          result.checksum = c.found.length ? 'mismatch' : c.unsettledRanges.length ? 'unsettled' : 'match';
        } catch (err) {
          if (!(err instanceof ShapeError)) throw err;
          result.error = err.message;
          result.checksum = 'mismatch';
        }
        result.durationMs = Date.now() - started;
        tablesDone++;
        hooks.onProgress?.({ table: name, step: 'done', tablesDone, tables: input.tables.length });
        return result;
      };
    });
  } catch (err) {
    throw during(err, 'live validation');
  }
}

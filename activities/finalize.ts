/**
 * FINALIZING: the cutover's point of no return on the source, where the fence is released (or kept
 * as keep-source-read-only) only if it held until then (the fence itself: stop-writes.ts).
 */
import { withClient } from './db';
import { during } from './errors';
import { dropFenceTriggers, fenceFunction, fenceFunctionBody, PASS_THROUGH, replaceFunction, type FenceInput } from './stop-writes';

export interface CommitCutoverResult {
  /** The fence held from the fence to this moment: no source write can be missing on the target. */
  held: boolean;
  /** Why not, when it did not hold. */
  reason?: string;
  liftedAt?: string;
  /** Released triggers that could not be dropped yet (removeFence retries them). */
  pending: number;
}

/** Our transaction must commit this long before the deadline, so no writer sees the old function after it. */
const COMMIT_MARGIN = '1 second';

/**
 * The cutover's point of no return, with the apply already stopped: in one source transaction,
 * checks that the bounded fence has not expired and then releases writes (restore-writes) or makes
 * the fence permanent (keep-source-read-only). An expired fence (or one removed by hand) is lifted
 * and reported as not held: writes after its deadline may be missing on the target, so the workflow
 * goes back to SYNCING_WAL. Idempotent.
 */
export async function commitCutover(input: FenceInput & { deadline: string; keepReadOnly: boolean; allowReplica?: boolean }): Promise<CommitCutoverResult> {
  try {
    const verdict = await withClient(
      input.source,
      async (c) => {
        await c.query('BEGIN');
        try {
          const fn = await c.query<{ ok: boolean; present: boolean }>(
            `SELECT to_regprocedure($1) IS NOT NULL AS present, clock_timestamp() < $2::timestamptz - interval '${COMMIT_MARGIN}' AS ok`,
            [`${fenceFunction(input.migrationId)}()`, input.deadline],
          );
          const { present, ok } = fn.rows[0]!;
          const held = present && ok;
          if (present) {
            const keep = held && input.keepReadOnly;
            await c.query(replaceFunction(input.migrationId, keep ? fenceFunctionBody(input.migrationId, undefined, input.allowReplica) : PASS_THROUGH));
          }
          await c.query('COMMIT');
          if (!present) return { held: false, reason: 'the fence was removed from the source before the cutover finished' };
          if (!held) return { held: false, reason: `the fence expired at ${input.deadline} (cutover.maxWriteStopSeconds) before the cutover finished` };
          // Our commit itself could have been slow: only a commit before the deadline proves it.
          const after = await c.query<{ ok: boolean }>(`SELECT clock_timestamp() < $1::timestamptz AS ok`, [input.deadline]);
          if (after.rows[0]!.ok) return { held: true };
          if (input.keepReadOnly) await c.query(replaceFunction(input.migrationId, PASS_THROUGH));
          return { held: false, reason: `the fence's deadline ${input.deadline} passed while the cutover committed` };
        } catch (err) {
          await c.query('ROLLBACK').catch(() => undefined);
          throw err;
        }
      },
      { applicationName: 'pg-dts fence' },
    );
    const liftedAt = new Date().toISOString();
    if (verdict.held && input.keepReadOnly) return { held: true, pending: 0 };
    const { pending } = await dropFenceTriggers(input);
    return { ...verdict, liftedAt, pending };
  } catch (err) {
    throw during(err, 'commit the cutover');
  }
}

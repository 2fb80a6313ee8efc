/**
 * Cleanup shared by FINALIZING, failure and cancellation. Every function is idempotent: it may run
 * twice (a retry after a worker restart) or on a migration that never got that far.
 */
import { withClient } from './db';
import { qname } from './sql';
import { APPLY_PROGRESS_SCHEMA, APPLY_PROGRESS_TABLE, DELETE_APPLY_PROGRESS_SQL } from './apply/stream';
import { ident } from './sql';
import type { ConnectionSpec, QualifiedName } from './spec';

/** Removes the apply's position for this slot from the target, and our schema once it is empty. */
export async function dropApplyProgress(target: ConnectionSpec, slot: string): Promise<void> {
  await withClient(target, async (c) => {
    const has = await c.query(`SELECT to_regclass($1) IS NOT NULL AS ok`, [APPLY_PROGRESS_TABLE]);
    if (!has.rows[0].ok) return;
    await c.query(DELETE_APPLY_PROGRESS_SQL, [slot]);
    const left = await c.query(`SELECT 1 FROM ${APPLY_PROGRESS_TABLE} LIMIT 1`);
    if (!left.rowCount) await c.query(`DROP SCHEMA ${ident(APPLY_PROGRESS_SCHEMA)} CASCADE`);
  });
}

/** Drops target tables this migration created (cancel without keepTarget). */
export async function dropTargetTables(target: ConnectionSpec, tables: QualifiedName[]): Promise<number> {
  return withClient(target, async (c) => {
    let n = 0;
    for (const t of tables) {
      const r = await c.query(`SELECT to_regclass($1) IS NOT NULL AS ok`, [qname(t)]);
      if (r.rows[0].ok) {
        await c.query(`DROP TABLE ${qname(t)} CASCADE`);
        n++;
      }
    }
    return n;
  });
}

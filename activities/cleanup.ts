/**
 * Cleanup shared by FINALIZING, failure and cancellation. Every function is idempotent: it may run
 * twice (a retry after a worker restart) or on a migration that never got that far.
 */
import { withClient } from './db';
import { ident, qname } from './sql';
import type { ConnectionSpec, QualifiedName } from './spec';

const PROGRESS_SCHEMA = 'pg_dts';

/** Removes the apply's position for this slot from the target, and our schema once it is empty. */
export async function dropApplyProgress(target: ConnectionSpec, slot: string): Promise<void> {
  await withClient(target, async (c) => {
    const has = await c.query(`SELECT to_regclass('pg_dts.apply_progress') IS NOT NULL AS ok`);
    if (!has.rows[0].ok) return;
    await c.query('DELETE FROM pg_dts.apply_progress WHERE slot_name = $1', [slot]);
    const left = await c.query('SELECT 1 FROM pg_dts.apply_progress LIMIT 1');
    if (!left.rowCount) await c.query(`DROP SCHEMA ${ident(PROGRESS_SCHEMA)} CASCADE`);
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

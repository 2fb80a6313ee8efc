/**
 * Cleanup shared by FINALIZING, failure and cancellation. Every function is idempotent: it may run
 * twice (a retry after a worker restart) or on a migration that never got that far.
 */
import { withClient } from './db';
import { qname } from './sql';
import { APPLY_PROGRESS_SCHEMA, APPLY_PROGRESS_TABLE, DELETE_APPLY_PROGRESS_SQL } from './apply/stream';
import { ident } from './sql';
import { tableMarks } from './marks';
import { displayName, type ConnectionSpec, type QualifiedName } from './spec';

/**
 * Removes the apply's position for this slot from the target; the last migration using the table
 * drops it, and our schema once nothing else is in it. Never CASCADE: the schema may hold other
 * migrations' state (copy progress, a fence when this server is also a source) or a user's tables.
 */
export async function dropApplyProgress(target: ConnectionSpec, slot: string): Promise<void> {
  await withClient(target, async (c) => {
    const has = await c.query(`SELECT to_regclass($1) IS NOT NULL AS ok`, [APPLY_PROGRESS_TABLE]);
    if (!has.rows[0].ok) return;
    await c.query(DELETE_APPLY_PROGRESS_SQL, [slot]);
    await c.query('BEGIN');
    try {
      // Never wait for the lock: another migration's apply writes this table in every transaction.
      const locked = await c.query(`LOCK TABLE ${APPLY_PROGRESS_TABLE} IN ACCESS EXCLUSIVE MODE NOWAIT`).then(
        () => true,
        () => false,
      );
      const left = locked ? await c.query(`SELECT 1 FROM ${APPLY_PROGRESS_TABLE} LIMIT 1`) : { rowCount: 1 };
      if (left.rowCount) return void (await c.query('ROLLBACK'));
      await c.query(`DROP TABLE ${APPLY_PROGRESS_TABLE}`);
      await c.query('SAVEPOINT schema_drop');
      await c.query(`DROP SCHEMA ${ident(APPLY_PROGRESS_SCHEMA)}`).catch(() => c.query('ROLLBACK TO SAVEPOINT schema_drop'));
      await c.query('COMMIT');
    } catch (err) {
      await c.query('ROLLBACK').catch(() => undefined);
      throw err;
    }
  });
}

export interface DropTargetResult {
  dropped: number;
  /** Tables left in place, each with the reason (not ours, or someone else's objects depend on it). */
  kept: string[];
}

/**
 * Drops the target tables this migration created (cancel without keepTargetOnCancel): only those
 * with its mark (activities/marks.ts; without `migrationId`, from runs before the marks, those that
 * exist), and never with CASCADE: a table that another object (a view, another table's foreign key)
 * depends on is kept and reported, with that object untouched.
 */
export async function dropTargetTables(target: ConnectionSpec, tables: QualifiedName[], migrationId?: string): Promise<DropTargetResult> {
  return withClient(target, async (c) => {
    const kept: string[] = [];
    let ours: QualifiedName[];
    if (migrationId) {
      const marks = await tableMarks(c, tables, migrationId);
      ours = marks.ours;
      kept.push(...marks.foreign.map((t) => `${displayName(t)}: not created by this migration`));
    } else {
      const r = await c.query<{ ok: boolean }>(`SELECT to_regclass(t) IS NOT NULL AS ok FROM unnest($1::text[]) AS t`, [tables.map(qname)]);
      ours = tables.filter((_, i) => r.rows[i]!.ok);
    }
    if (ours.length === 0) return { dropped: 0, kept };
    // One statement first: foreign keys between our own tables need no CASCADE then.
    try {
      await c.query(`DROP TABLE ${ours.map(qname).join(', ')}`);
      return { dropped: ours.length, kept };
    } catch (err) {
      if ((err as { code?: string }).code !== DEPENDENT_OBJECTS) throw err;
    }
    // Some are depended on from outside: drop the others, one by one until no more can go.
    let left = ours;
    let dropped = 0;
    const why = new Map<string, string>();
    for (let progress = true; progress && left.length; ) {
      progress = false;
      const next: QualifiedName[] = [];
      for (const t of left) {
        await c.query('BEGIN');
        try {
          await c.query(`DROP TABLE ${qname(t)}`);
          await c.query('COMMIT');
          dropped++;
          progress = true;
        } catch (err) {
          await c.query('ROLLBACK');
          const e = err as { code?: string; detail?: string };
          if (e.code !== DEPENDENT_OBJECTS) throw err;
          why.set(displayName(t), (e.detail ?? '').replace(/\n/g, '; '));
          next.push(t);
        }
      }
      left = next;
    }
    kept.push(...left.map((t) => `${displayName(t)}: kept, other objects depend on it (${why.get(displayName(t))})`));
    return { dropped, kept };
  });
}

/** SQLSTATE dependent_objects_still_exist: DROP without CASCADE refused. */
const DEPENDENT_OBJECTS = '2BP01';

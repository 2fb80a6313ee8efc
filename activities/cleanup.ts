/**
 * Cleanup shared by FINALIZING, failure and cancellation. Every function is idempotent: it may run
 * twice (a retry after a worker restart) or on a migration that never got that far.
 */
import { relationExists, withClient } from './db';
import { qname } from './sql';
import { APPLY_PROGRESS_SCHEMA, APPLY_PROGRESS_TABLE, DELETE_APPLY_PROGRESS_SQL, DELETE_WRITER_PROGRESS_SQL, WRITER_PROGRESS_TABLE } from './apply/progress';
import { ident } from './sql';
import { markedObjects, tableMarks } from './marks';
import type { Client } from 'pg';
import { displayName, type ConnectionSpec, type QualifiedName } from './spec';
import { CHUNK_WRITES_TABLE, KEYS_TABLE, deleteProofSql, forgetChunkWritesSql, PROOF_TABLE, WRITES_TABLE, writeMarkedTablesSql, writeMarkNames, writeMarkOffSql } from './validate/sql';

/**
 * Removes the apply's position for this slot from the target; the last migration using the table
 * drops it, and our schema once nothing else is in it. Never CASCADE: the schema may hold other
 * migrations' state (copy progress, a fence when this server is also a source) or a user's tables.
 */
export async function dropApplyProgress(target: ConnectionSpec, slot: string): Promise<void> {
  await withClient(target, async (c) => {
    // First, while the progress row still names this migration for `dts orphans` should it fail.
    await dropWriteMarks(c, slot);
    if (!(await relationExists(c, APPLY_PROGRESS_TABLE))) return;
    if (await relationExists(c, WRITER_PROGRESS_TABLE)) await c.query(DELETE_WRITER_PROGRESS_SQL, [slot]);
    await c.query(DELETE_APPLY_PROGRESS_SQL, [slot]);
    // The content proof's chunks of this migration (keyed by the same slot).
    const proof = deleteProofSql(slot);
    if (await relationExists(c, PROOF_TABLE)) await c.query(proof.text, proof.values);
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
      // The second writers' positions and the content proof's tables go with it once no migration has
      // rows in them: the proof's chunks, and the
      // write counts (no trigger of ours writes them then). A proof still writing (being cancelled)
      // keeps them; the next cleanup drops them.
      for (const table of [WRITER_PROGRESS_TABLE, PROOF_TABLE, WRITES_TABLE, CHUNK_WRITES_TABLE, KEYS_TABLE]) await dropIfEmptyAndFree(c, table);
      await c.query('SAVEPOINT schema_drop');
      // Never wait here: DROP SCHEMA locks what is still in it (to report it) before refusing, and a
      // comparison stuck on a user's lock holds a share lock on the proof's tables (control.test:
      // "VALIDATING: cancel ... while the comparison is stuck" hung on it). The next cleanup drops it.
      await c.query(`SET LOCAL lock_timeout = '1s'`);
      await c.query(`DROP SCHEMA ${ident(APPLY_PROGRESS_SCHEMA)}`).catch(() => c.query('ROLLBACK TO SAVEPOINT schema_drop'));
      await c.query('COMMIT');
    } catch (err) {
      await c.query('ROLLBACK').catch(() => undefined);
      throw err;
    }
  });
}

/** Inside a transaction: drops `table` if it exists, is empty and no one holds a lock on it. */
async function dropIfEmptyAndFree(c: Client, table: string): Promise<void> {
  if (!(await relationExists(c, table))) return;
  await c.query('SAVEPOINT drop_if_empty');
  const locked = await c.query(`LOCK TABLE ${table} IN ACCESS EXCLUSIVE MODE NOWAIT`).then(
    () => true,
    () => c.query('ROLLBACK TO SAVEPOINT drop_if_empty').then(() => false),
  );
  const left = locked ? await c.query(`SELECT 1 FROM ${table} LIMIT 1`) : { rowCount: 1 };
  if (!left.rowCount) await c.query(`DROP TABLE ${table}`);
}

/**
 * The content proof's write marks of this migration (validate/sql.ts): its trigger on each target
 * table, its function, its counts. The function first becomes a no-op (no table lock needed), so a
 * trigger left behind costs a writer one empty call and nothing else. Each DROP TRIGGER then waits at
 * most 500 ms for its lock (queued behind a long query, an ACCESS EXCLUSIVE request would stall the
 * application's writes to that table behind it; a cancel must not wait for someone's lock either): a
 * busy table keeps its no-op trigger, and the function with it, for `dts cleanup` (`dts orphans`
 * lists them as write-marks). Only triggers that call this migration's function are dropped.
 * Returns how many triggers are left.
 */
export async function dropWriteMarks(c: Client, slot: string): Promise<number> {
  let left = 0;
  const { fn } = writeMarkNames(slot);
  const has = await c.query<{ ok: boolean; counts: boolean }>(
    `SELECT to_regprocedure($1) IS NOT NULL AS ok, to_regclass($2) IS NOT NULL AS counts`,
    [`${fn}()`, WRITES_TABLE],
  );
  if (has.rows[0]!.ok) {
    await c.query(writeMarkOffSql(slot));
    const q = writeMarkedTablesSql(slot);
    const marked = await c.query<{ t: string }>(q.text, q.values);
    for (const { t } of marked.rows) {
      await c.query('BEGIN');
      try {
        await c.query(`SET LOCAL lock_timeout = '500ms'`);
        const { trigger, rows } = writeMarkNames(slot);
        for (const name of [trigger, rows.INSERT, rows.UPDATE, rows.DELETE]) await c.query(`DROP TRIGGER IF EXISTS ${ident(name)} ON ${t}`);
        await c.query('COMMIT');
      } catch (err) {
        await c.query('ROLLBACK').catch(() => undefined);
        if ((err as { code?: string }).code !== '55P03') throw err;
        left++;
      }
    }
    if (left === 0) await c.query(`DROP FUNCTION IF EXISTS ${fn}()`);
  }
  if (has.rows[0]!.counts) await c.query(`DELETE FROM ${WRITES_TABLE} WHERE slot_name = $1`, [slot]);
  for (const table of [CHUNK_WRITES_TABLE, KEYS_TABLE]) if (await relationExists(c, table)) await c.query(`DELETE FROM ${table} WHERE slot_name = $1`, [slot]);
  // With the counts gone, no stored chunk may vouch for a table by one (a later proof of this slot).
  if (await relationExists(c, PROOF_TABLE)) {
    const forget = forgetChunkWritesSql(slot);
    await c.query(forget.text, forget.values);
  }
  return left;
}

export interface DropTargetResult {
  dropped: number;
  /** Tables and other objects left in place, each with the reason (not ours, or someone else's objects depend on it). */
  kept: string[];
}

/**
 * Drops the target tables this migration created (cancel without keepTargetOnCancel): only those
 * with its mark (activities/marks.ts; without `migrationId`, from runs before the marks, those that
 * exist), then the schemas, types, sequences and extensions it marked; never with CASCADE: what
 * another object (a view, another table's foreign key, a column) depends on is kept and reported,
 * with that object untouched.
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
    let dropped = 0;
    if (ours.length) {
      // One statement first: foreign keys between our own tables need no CASCADE then.
      const all = await dropEach(c, [{ sql: `DROP TABLE ${ours.map(qname).join(', ')}`, label: ours.map(displayName).join(', ') }]);
      if (all.kept.length === 0) dropped = ours.length;
      else {
        // Some are depended on from outside: drop the others, one by one.
        const each = await dropEach(c, ours.map((t) => ({ sql: `DROP TABLE ${qname(t)}`, label: displayName(t) })));
        dropped = each.dropped;
        kept.push(...each.kept);
      }
    }
    // Then the schemas, types, sequences and extensions CREATING_TABLES added (none before the marks).
    if (migrationId) {
      const objects = await markedObjects(c, migrationId);
      const r = await dropEach(c, objects.map((o) => ({ sql: `DROP ${o.kind} ${o.name}`, label: `${o.kind.toLowerCase()} ${o.name}` })));
      kept.push(...r.kept);
    }
    return { dropped, kept };
  });
}

/**
 * Runs each DROP (never CASCADE) in its own transaction, again and again while any succeeds (one may
 * wait for another of ours); what another object still depends on is kept, with PostgreSQL's detail.
 */
async function dropEach(c: Client, drops: Array<{ sql: string; label: string }>): Promise<{ dropped: number; kept: string[] }> {
  let left = drops;
  let dropped = 0;
  const why = new Map<string, string>();
  for (let progress = true; progress && left.length; ) {
    progress = false;
    const next: typeof drops = [];
    for (const d of left) {
      await c.query('BEGIN');
      try {
        await c.query(d.sql);
        await c.query('COMMIT');
        dropped++;
        progress = true;
      } catch (err) {
        await c.query('ROLLBACK');
        const e = err as { code?: string; detail?: string };
        if (e.code !== DEPENDENT_OBJECTS) throw err;
        why.set(d.label, (e.detail ?? '').replace(/\n/g, '; '));
        next.push(d);
      }
    }
    left = next;
  }
  return { dropped, kept: left.map((d) => `${d.label}: kept, other objects depend on it (${why.get(d.label)})`) };
}

/** SQLSTATE dependent_objects_still_exist: DROP without CASCADE refused. */
const DEPENDENT_OBJECTS = '2BP01';

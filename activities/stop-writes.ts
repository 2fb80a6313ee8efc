/**
 * STOPPING_WRITES: the write fence on the source, the marker that tells the apply when it has passed
 * the fence, and the sequence sync (the fence's release at the point of no return: finalize.ts).
 *
 * The fence is a statement-level trigger on each migrated table that rejects INSERT, UPDATE, DELETE
 * and TRUNCATE. CREATE TRIGGER takes a SHARE ROW EXCLUSIVE lock, so it waits for every transaction
 * that is writing to the table and blocks new writers until it commits; after that no write to the
 * table can commit. It persists, so "keep-source-read-only" is the same fence left in place — and
 * cleanup must always lift it (the workflow does, in a non-cancellable scope).
 *
 * Bounded write stop (spec.cutover.maxWriteStopSeconds): the trigger function carries a deadline and
 * compares clock_timestamp() with it, so past the deadline writes go through again with no worker
 * alive. The cutover is then only valid if the fence still held when the apply stopped:
 * `commitCutover` checks the deadline and releases (or keeps) the fence in one source transaction, and
 * a fence that expired sends the migration back to SYNCING_WAL instead of completing on a target that
 * may lack writes made after the deadline.
 */
import { sleep } from './sleep';
import type { Client } from 'pg';
import { withClient } from './db';
import { during } from './errors';
import { ident, literal, qname } from './sql';
import type { ConnectionSpec, QualifiedName } from './spec';
import type { SequenceRef } from './model';
import { hasPgoutputMessages, serverVersionNum } from './pg-version';
import { slotNameFor } from '../workflows/names';

// PostgreSQL reserves schema names starting with pg_.
export const FENCE_SCHEMA = 'pgdts';
export const FENCE_MESSAGE_PREFIX = 'pg-dts-fence';

/**
 * Sources before PostgreSQL 14 cannot send logical messages through pgoutput: there the fence is marked
 * by a row inserted into this table of ours, which is in the migration's publication (and not fenced).
 * The apply treats that INSERT exactly like the message: its transaction ends a group, and the token
 * is committed with the applied position.
 */
export function fenceMarkerTable(publication: string): QualifiedName {
  return { schema: FENCE_SCHEMA, name: `${publication}_fence` };
}

export const FENCE_MARKER_DDL = (publication: string): string[] => [
  `CREATE SCHEMA IF NOT EXISTS ${ident(FENCE_SCHEMA)}`,
  `CREATE TABLE IF NOT EXISTS ${qname(fenceMarkerTable(publication))} (token text PRIMARY KEY, fenced_at timestamptz NOT NULL DEFAULT now())`,
];

export const fenceFunction = (migrationId: string) => `${ident(FENCE_SCHEMA)}.${ident(`fence_${migrationId}`)}`;
const fenceTrigger = (migrationId: string) => ident(`pg_dts_fence_${migrationId}`);

export interface FenceInput {
  source: ConnectionSpec;
  migrationId: string;
  tables: QualifiedName[];
}

export interface FenceResult {
  token: string;
  fenceLsn: string;
  fencedAt: string;
  /** The source's time past which the fence lets writes through by itself (bounded fences only). */
  deadline?: string;
}

/**
 * The fence trigger's body: rejects writes, until `deadline` when one is given. `allowReplica`: a
 * permanent fence that lets sessions in replica mode through (the fallback's reverse apply, which runs
 * with session_replication_role = replica; only a superuser or a role granted SET on that parameter
 * can, so the application stays fenced out).
 */
export function fenceFunctionBody(migrationId: string, deadline?: string, allowReplica = false): string {
  const reject = `RAISE EXCEPTION 'writes to %.% are stopped: pg-dts migration ${migrationId} is cutting over to the new server', TG_TABLE_SCHEMA, TG_TABLE_NAME
                 USING ERRCODE = 'read_only_sql_transaction';`;
  if (allowReplica) return `BEGIN\n  IF current_setting('session_replication_role') <> 'replica' THEN\n    ${reject}\n  END IF;\n  RETURN NULL;\nEND`;
  // clock_timestamp(), not now(): a transaction that began before the deadline must not be fenced after it.
  if (deadline === undefined) return `BEGIN\n  ${reject}\nEND`;
  return `BEGIN\n  IF clock_timestamp() < ${literal(deadline)}::timestamptz THEN\n    ${reject}\n  END IF;\n  RETURN NULL;\nEND`;
}

/** The deadline a fence function's body carries, if it is a bounded fence (not released, not permanent). */
export function existingDeadline(body: string | undefined): string | undefined {
  return body?.match(/IF clock_timestamp\(\) < '([^']+)'::timestamptz THEN/)?.[1];
}

export const PASS_THROUGH = 'BEGIN RETURN NULL; END';
export const replaceFunction = (migrationId: string, body: string) =>
  `CREATE OR REPLACE FUNCTION ${fenceFunction(migrationId)}() RETURNS trigger LANGUAGE plpgsql AS $fn$ ${body} $fn$`;

const createTrigger = (migrationId: string, t: QualifiedName) =>
  `CREATE TRIGGER ${fenceTrigger(migrationId)} BEFORE INSERT OR UPDATE OR DELETE OR TRUNCATE ON ${qname(t)}
     FOR EACH STATEMENT EXECUTE FUNCTION ${fenceFunction(migrationId)}()`;
// Fire also for sessions in replica mode (e.g. a logical replication subscriber writing here).
const enableAlways = (migrationId: string, t: QualifiedName) => `ALTER TABLE ${qname(t)} ENABLE ALWAYS TRIGGER ${fenceTrigger(migrationId)}`;

/** The tables that do not have our fence trigger, enabled ALWAYS (one query, whatever the count). */
async function tablesWithoutTrigger(c: Client, input: FenceInput): Promise<QualifiedName[]> {
  const r = await c.query<{ i: number }>(
    `SELECT t.i FROM unnest($1::text[], $2::text[]) WITH ORDINALITY AS t(s, n, i)
      WHERE NOT EXISTS (SELECT 1 FROM pg_trigger g JOIN pg_class k ON k.oid = g.tgrelid JOIN pg_namespace ns ON ns.oid = k.relnamespace
                         WHERE ns.nspname = t.s AND k.relname = t.n AND g.tgname = $3 AND g.tgenabled = 'A')`,
    [input.tables.map((t) => t.schema), input.tables.map((t) => t.name), `pg_dts_fence_${input.migrationId}`],
  );
  return r.rows.map((row) => input.tables[Number(row.i) - 1]!);
}

/**
 * One table per transaction: a transaction holding the lock of one table while it waits for another's
 * deadlocked with an application transaction writing both in the other order (seen in
 * resume-copy.test: the application got "deadlock detected"). Holding one lock at a time, the
 * installation cannot be part of a cycle.
 */
const INSTALL_BATCH = 1;

/**
 * SYNCING_WAL, before any cutover: puts the fence triggers in place with a pass-through function, so
 * that STOPPING_WRITES only replaces the function (O(1) in the table count) instead of creating one
 * trigger per table inside the write stop. Never replaces an existing function: a fence armed by a
 * cutover must stay armed. Each trigger is created in a transaction of its own with a short lock
 * timeout (CREATE TRIGGER waits for the table's writers and queues the application behind it); tables
 * that time out are tried again later. Idempotent.
 */
export async function installFence(
  input: FenceInput,
  opts: { heartbeat?: (details?: unknown) => void; signal?: AbortSignal } = {},
): Promise<{ installed: number; present: number }> {
  try {
    return await withClient(
      input.source,
      async (c) => {
        await c.query(`CREATE SCHEMA IF NOT EXISTS ${ident(FENCE_SCHEMA)}`);
        const fn = await c.query<{ ok: boolean }>(`SELECT to_regprocedure($1) IS NOT NULL AS ok`, [`${fenceFunction(input.migrationId)}()`]);
        if (!fn.rows[0]!.ok) {
          await c.query(`CREATE FUNCTION ${fenceFunction(input.migrationId)}() RETURNS trigger LANGUAGE plpgsql AS $fn$ ${PASS_THROUGH} $fn$`).catch((err: { code?: string }) => {
            // 42723: created meanwhile (by a cutover's fence); keep that one.
            if (err.code !== '42723') throw err;
          });
        }
        let todo = await tablesWithoutTrigger(c, input);
        const present = input.tables.length - todo.length;
        let installed = 0;
        for (let round = 0; todo.length > 0; round++) {
          const retry: QualifiedName[] = [];
          for (let i = 0; i < todo.length; i += INSTALL_BATCH) {
            if (opts.signal?.aborted) throw new Error('fence installation cancelled');
            const batch = todo.slice(i, i + INSTALL_BATCH);
            const done = await installBatch(c, input.migrationId, batch).catch(async (err: { code?: string }) => {
              if (err.code !== '55P03') throw err;
              // One busy table must not hold back the other 99: redo the batch one table at a time.
              let n = 0;
              for (const t of batch) {
                if ((await installBatch(c, input.migrationId, [t]).catch((e: { code?: string }) => (e.code === '55P03' ? -1 : Promise.reject(e)))) < 0) retry.push(t);
                else n++;
              }
              return n;
            });
            installed += done;
            opts.heartbeat?.({ installed, present, waiting: retry.length });
          }
          todo = retry;
          // Cut short by a cancel: STOPPING_WRITES waits for this activity to have stopped.
          if (todo.length) await sleep(Math.min(30_000, 1000 * 2 ** round), opts.signal);
        }
        return { installed, present };
      },
      { applicationName: 'pg-dts fence' },
    );
  } catch (err) {
    throw during(err, 'install the fence triggers');
  }
}

async function installBatch(c: Client, migrationId: string, tables: QualifiedName[]): Promise<number> {
  await c.query('BEGIN');
  try {
    // Under deadlock_timeout (1 s by default): the application queued behind us waits less than that.
    await c.query(`SET LOCAL lock_timeout = '500ms'`);
    for (const t of tables) {
      // A trigger of ours that is not enabled ALWAYS (changed by hand) is recreated as ours. Only then
      // DROP TRIGGER, whose ACCESS EXCLUSIVE lock would queue the application's reads too.
      const old = await c.query(`SELECT 1 FROM pg_trigger WHERE tgrelid = $1::regclass AND tgname = $2`, [qname(t), `pg_dts_fence_${migrationId}`]);
      if (old.rowCount) await c.query(`DROP TRIGGER ${fenceTrigger(migrationId)} ON ${qname(t)}`);
      await c.query(createTrigger(migrationId, t));
      await c.query(enableAlways(migrationId, t));
    }
    await c.query('COMMIT');
    return tables.length;
  } catch (err) {
    await c.query('ROLLBACK').catch(() => undefined);
    throw err;
  }
}

/** The write locks (of other sessions) held on these tables now, by transaction. */
async function writersOf(c: Client, tables: QualifiedName[]): Promise<string[]> {
  const r = await c.query<{ vxid: string }>(
    `SELECT DISTINCT l.virtualtransaction AS vxid
       FROM pg_locks l JOIN pg_class k ON k.oid = l.relation JOIN pg_namespace ns ON ns.oid = k.relnamespace
       JOIN unnest($1::text[], $2::text[]) AS t(s, n) ON t.s = ns.nspname AND t.n = k.relname
      WHERE l.locktype = 'relation' AND l.granted AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
        AND l.mode IN ('RowExclusiveLock', 'ShareRowExclusiveLock', 'ExclusiveLock', 'AccessExclusiveLock')
        AND l.pid IS DISTINCT FROM pg_backend_pid()`,
    [tables.map((t) => t.schema), tables.map((t) => t.name)],
  );
  return r.rows.map((row) => row.vxid);
}

/** Waits (polling pg_locks) until none of these transactions is open; false after `ms`. */
async function waitForTransactions(c: Client, vxids: string[], ms: number): Promise<boolean> {
  const until = Date.now() + ms;
  for (;;) {
    if (!vxids.length) return true;
    const r = await c.query(`SELECT 1 FROM pg_locks WHERE virtualtransaction = ANY($1::text[]) LIMIT 1`, [vxids]);
    if (!r.rowCount) return true;
    if (Date.now() >= until) return false;
    await new Promise((res) => setTimeout(res, 50));
  }
}

/** As long as today's lock_timeout: the arm waits for the same writers CREATE TRIGGER waited for. */
const ARM_WAIT_MS = 5000;

export async function fenceSource(input: FenceInput & { maxWriteStopSeconds?: number }): Promise<FenceResult> {
  try {
    let deadline: string | undefined;
    return await withClient(
      input.source,
      async (c) => {
        const armed = await armFence(c, input);
        if (armed) {
          deadline = armed.deadline;
          return await emitMarker(c, input.migrationId, deadline);
        }
        await c.query('BEGIN');
        try {
          // Fail fast instead of queueing behind a long transaction forever; the activity retries.
          await c.query(`SET LOCAL lock_timeout = '5s'`);
          await c.query(`CREATE SCHEMA IF NOT EXISTS ${ident(FENCE_SCHEMA)}`);
          // Counted from the start of this transaction: writers queue behind our locks from then on.
          // A retry (its worker lost after the fence committed) keeps the deadline the fence already
          // has: a new one would stretch the write stop past the bound (seen in the chaos test: 17.6 s
          // for a bound of 10 s).
          if (input.maxWriteStopSeconds !== undefined) {
            const existing = await c.query<{ src: string }>(`SELECT prosrc AS src FROM pg_proc WHERE oid = to_regprocedure($1)`, [`${fenceFunction(input.migrationId)}()`]);
            deadline = existingDeadline(existing.rows[0]?.src);
            if (deadline === undefined) {
              const r = await c.query<{ d: string }>(`SELECT (now() + make_interval(secs => $1))::text AS d`, [input.maxWriteStopSeconds]);
              deadline = r.rows[0]!.d;
            }
          }
          await c.query(replaceFunction(input.migrationId, fenceFunctionBody(input.migrationId, deadline)));
          for (const t of input.tables) {
            await c.query(`DROP TRIGGER IF EXISTS ${fenceTrigger(input.migrationId)} ON ${qname(t)}`);
            await c.query(createTrigger(input.migrationId, t));
            await c.query(enableAlways(input.migrationId, t));
          }
          await c.query('COMMIT');
        } catch (err) {
          await c.query('ROLLBACK').catch(() => undefined);
          throw err;
        }
        return await emitMarker(c, input.migrationId, deadline);
      },
      { applicationName: 'pg-dts fence' },
    );
  } catch (err) {
    throw during(err, 'fence the source');
  }
}

/**
 * The fence with its triggers already installed (`installFence`): only the function is replaced by the
 * rejecting body, in one short transaction. No table lock makes that wait for the writers in flight,
 * as CREATE TRIGGER's did, so it then waits for every transaction that held a write lock on a fenced
 * table when the arm committed: those may have written before it (or still run the pass-through body:
 * a transaction that already holds the table's lock does not take in the new function) and must commit
 * before the marker. Transactions that lock a table later see the armed function. Undefined when a
 * trigger is missing: the caller creates them as before.
 */
async function armFence(c: Client, input: FenceInput & { maxWriteStopSeconds?: number }): Promise<{ deadline?: string } | undefined> {
  const fn = await c.query<{ src: string }>(`SELECT prosrc AS src FROM pg_proc WHERE oid = to_regprocedure($1)`, [`${fenceFunction(input.migrationId)}()`]);
  if (!fn.rowCount || (await tablesWithoutTrigger(c, input)).length) return undefined;
  let deadline: string | undefined;
  await c.query('BEGIN');
  try {
    await c.query(`SET LOCAL lock_timeout = '5s'`);
    if (input.maxWriteStopSeconds !== undefined) {
      // As in the creating path: a retry keeps the deadline the armed fence already has.
      deadline = existingDeadline(fn.rows[0]!.src);
      if (deadline === undefined) {
        const r = await c.query<{ d: string }>(`SELECT (now() + make_interval(secs => $1))::text AS d`, [input.maxWriteStopSeconds]);
        deadline = r.rows[0]!.d;
      }
    }
    await c.query(replaceFunction(input.migrationId, fenceFunctionBody(input.migrationId, deadline)));
    await c.query('COMMIT');
  } catch (err) {
    await c.query('ROLLBACK').catch(() => undefined);
    throw err;
  }
  const writers = await writersOf(c, input.tables);
  if (!(await waitForTransactions(c, writers, ARM_WAIT_MS))) {
    // As a lock timeout of the creating path: writes go on, and the activity retries.
    await c.query(replaceFunction(input.migrationId, PASS_THROUGH));
    throw Object.assign(new Error(`canceling statement due to lock timeout: ${writers.length} transaction(s) writing to fenced tables did not end within ${ARM_WAIT_MS / 1000} s`), { code: '55P03' });
  }
  return deadline === undefined ? {} : { deadline };
}

/** Committed after the fence: when the apply sees this marker, it has seen every write before it. */
async function emitMarker(c: Client, migrationId: string, deadline: string | undefined): Promise<FenceResult> {
  const fencedAt = new Date().toISOString();
  const token = `${migrationId}:${Date.now()}`;
  // Flushed at its commit: a walsender sends only flushed WAL, and a source with synchronous_commit off
  // would leave the marker to the WAL writer (wal_writer_delay, 200 ms by default) inside the write stop.
  // `local`: the local flush only, never a wait for a synchronous standby the source's own setting skips.
  await c.query('SET synchronous_commit = local');
  if (hasPgoutputMessages(await serverVersionNum(c))) {
    const r = await c.query<{ lsn: string }>(`SELECT pg_logical_emit_message(true, $1, $2)::text AS lsn`, [FENCE_MESSAGE_PREFIX, token]);
    return { token, fenceLsn: r.rows[0]!.lsn, fencedAt, ...(deadline ? { deadline } : {}) };
  }
  await c.query(`INSERT INTO ${qname(fenceMarkerTable(slotNameFor(migrationId)))} (token) VALUES ($1)`, [token]);
  const r = await c.query<{ lsn: string }>(`SELECT pg_current_wal_lsn()::text AS lsn`);
  return { token, fenceLsn: r.rows[0]!.lsn, fencedAt, ...(deadline ? { deadline } : {}) };
}

/**
 * Releases source writes at once, then removes the fence's triggers.
 *
 * DROP TRIGGER needs an ACCESS EXCLUSIVE lock: it would wait for every open reader of the table and,
 * while waiting, block new readers too. So the release itself takes no table lock: the trigger
 * function is replaced by a pass-through (writes go through from the next statement on). The
 * triggers, now harmless, are then dropped with a short lock timeout; any that cannot be dropped
 * yet are reported in `pending` and `removeFence` retries them. Idempotent.
 */
export async function liftFence(input: FenceInput): Promise<{ lifted: number; liftedAt: string; pending: number }> {
  try {
    const liftedAt = await withClient(
      input.source,
      async (c) => {
        const fn = await c.query(`SELECT to_regprocedure($1) IS NOT NULL AS ok`, [`${fenceFunction(input.migrationId)}()`]);
        if (fn.rows[0].ok) {
          await c.query(replaceFunction(input.migrationId, PASS_THROUGH));
        }
        return new Date().toISOString();
      },
      { applicationName: 'pg-dts fence' },
    );
    const { dropped, pending } = await dropFenceTriggers(input);
    return { lifted: dropped, liftedAt, pending };
  } catch (err) {
    throw during(err, 'lift the fence');
  }
}

/**
 * The fallback's end by `commit`: the source's fence stops every write again, replica-mode sessions
 * included (the old server is abandoned; a write there would be lost). Idempotent; a fence already
 * gone stays gone.
 */
export async function hardenFence(input: { source: ConnectionSpec; migrationId: string }): Promise<{ fenced: boolean }> {
  try {
    return await withClient(
      input.source,
      async (c) => {
        const fn = await c.query<{ ok: boolean }>(`SELECT to_regprocedure($1) IS NOT NULL AS ok`, [`${fenceFunction(input.migrationId)}()`]);
        if (!fn.rows[0]!.ok) return { fenced: false };
        await c.query(replaceFunction(input.migrationId, fenceFunctionBody(input.migrationId)));
        return { fenced: true };
      },
      { applicationName: 'pg-dts fence' },
    );
  } catch (err) {
    throw during(err, 'keep the source fenced');
  }
}

/** Whether the bounded fence still stops writes: it exists and its deadline has not passed (source clock). */
export async function fenceHolds(input: { source: ConnectionSpec; migrationId: string; deadline: string }): Promise<boolean> {
  try {
    return await withClient(input.source, async (c) => {
      const r = await c.query<{ ok: boolean }>(`SELECT to_regprocedure($1) IS NOT NULL AND clock_timestamp() < $2::timestamptz AS ok`, [
        `${fenceFunction(input.migrationId)}()`,
        input.deadline,
      ]);
      return r.rows[0]!.ok;
    });
  } catch (err) {
    throw during(err, 'check the fence');
  }
}

/** Drops the (released) fence triggers, function and schema; retried by the workflow until done. */
export async function removeFence(input: FenceInput): Promise<{ dropped: number }> {
  try {
    const { dropped, pending } = await dropFenceTriggers(input);
    if (pending) throw new Error(`${pending} released fence trigger(s) still wait for readers of their tables; retrying`);
    return { dropped };
  } catch (err) {
    throw during(err, 'remove the fence triggers');
  }
}

export async function dropFenceTriggers(input: FenceInput): Promise<{ dropped: number; pending: number }> {
  return withClient(
    input.source,
    async (c) => {
      let dropped = 0;
      let pending = 0;
      // Short: waiting in the lock queue would block the application's readers behind us.
      await c.query(`SET lock_timeout = '1s'`);
      for (const t of input.tables) {
        const exists = await c.query(
          `SELECT 1 FROM pg_trigger g JOIN pg_class k ON k.oid = g.tgrelid JOIN pg_namespace n ON n.oid = k.relnamespace
            WHERE n.nspname = $1 AND k.relname = $2 AND g.tgname = $3`,
          [t.schema, t.name, `pg_dts_fence_${input.migrationId}`],
        );
        if (!exists.rowCount) continue;
        try {
          await c.query(`DROP TRIGGER IF EXISTS ${fenceTrigger(input.migrationId)} ON ${qname(t)}`);
          dropped++;
        } catch (err) {
          if ((err as { code?: string }).code !== '55P03') throw err;
          pending++;
        }
      }
      if (pending) return { dropped, pending };
      await c.query(`DROP FUNCTION IF EXISTS ${fenceFunction(input.migrationId)}()`);
      await dropFenceSchemaIfEmpty(c);
      return { dropped, pending };
    },
    { applicationName: 'pg-dts fence' },
  );
}

/**
 * Removes our schema only when nothing else of ours (another migration's fence function or marker
 * table) is in it.
 */
export async function dropFenceSchemaIfEmpty(c: Client): Promise<void> {
  const left = await c.query(
    `SELECT 1 FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = $1
     UNION ALL SELECT 1 FROM pg_class k JOIN pg_namespace n ON n.oid = k.relnamespace WHERE n.nspname = $1 LIMIT 1`,
    [FENCE_SCHEMA],
  );
  if (!left.rowCount) await c.query(`DROP SCHEMA IF EXISTS ${ident(FENCE_SCHEMA)}`);
}

export interface SequenceSyncInput {
  source: ConnectionSpec;
  target: ConnectionSpec;
  sequences: SequenceRef[];
}

export interface SequenceSyncResult {
  source: string;
  target: string;
  sourceValue: string;
  targetValue: string;
}

async function readSequence(c: Client, q: QualifiedName): Promise<{ last: bigint; called: boolean; inc: bigint }> {
  const r = await c.query<{ last_value: string; is_called: boolean; inc: string }>(
    `SELECT s.last_value::text, s.is_called, q.seqincrement::text AS inc
       FROM ${qname(q)} s, pg_sequence q WHERE q.seqrelid = ${literal(qname(q))}::regclass`,
  );
  const row = r.rows[0]!;
  return { last: BigInt(row.last_value), called: row.is_called, inc: BigInt(row.inc) };
}

/** The value nextval() would return next, for comparing two sequences in their direction. */
const nextOf = (s: { last: bigint; called: boolean; inc: bigint }) => (s.called ? s.last + s.inc : s.last);

/** Sets every target sequence to at least the source's position (never moves one backwards). */
export async function syncSequences(input: SequenceSyncInput): Promise<SequenceSyncResult[]> {
  const unique = new Map<string, SequenceRef>();
  for (const s of input.sequences) unique.set(qname(s.target), s);
  try {
    return await withClient(input.source, (src) =>
      withClient(input.target, async (dst) => {
        const out: SequenceSyncResult[] = [];
        for (const s of unique.values()) {
          const a = await readSequence(src, s.source);
          const b = await readSequence(dst, s.target);
          const ahead = a.inc > 0n ? nextOf(a) > nextOf(b) : nextOf(a) < nextOf(b);
          if (ahead) await dst.query(`SELECT setval(${literal(qname(s.target))}::regclass, ${a.last}, ${a.called})`);
          const after = await readSequence(dst, s.target);
          out.push({
            source: `${s.source.schema}.${s.source.name}`,
            target: `${s.target.schema}.${s.target.name}`,
            sourceValue: a.last.toString(),
            targetValue: after.last.toString(),
          });
        }
        return out;
      }),
    );
  } catch (err) {
    throw during(err, 'sync sequences');
  }
}

/**
 * MIGRATING_DATA: a copy that waits for a table lock — an ALTER TABLE or LOCK TABLE on the source
 * table, a long reader of the target table — says so in `status.copying` (which lock, held by which
 * backend, open for how long) instead of standing still without a word.
 *
 * The watch costs nothing while rows move: only a unit that has not moved for `everyMs` is looked up,
 * on a connection of its own per side, opened then and kept until the unit ends. Our copy sessions
 * are found by their application name and the relation they wait for, so the copy code is unchanged.
 */
import type { Client } from 'pg';
import type { CopyLockWait } from '../workflows/contract';
import { connect } from './db';
import { displayName, type ConnectionSpec, type QualifiedName } from './spec';
import { qname } from './sql';

/** Every copy session (whole tables, page ranges, batches) runs under this application name. */
export const COPY_APPLICATION = 'pg-dts copy';

const WAIT_SQL = `
SELECT l.mode, extract(epoch FROM now() - a.query_start)::int AS waited,
       b.pid AS blocker, b.state AS blocker_state, extract(epoch FROM now() - b.xact_start)::int AS blocker_age
  FROM pg_locks l
  JOIN pg_stat_activity a ON a.pid = l.pid
  LEFT JOIN LATERAL (SELECT (pg_blocking_pids(a.pid))[1] AS pid) first ON true
  LEFT JOIN pg_stat_activity b ON b.pid = first.pid
 WHERE NOT l.granted AND l.locktype = 'relation' AND l.relation = to_regclass($1) AND a.application_name = $2
 ORDER BY a.query_start
 LIMIT 1`;

/** The first of our copy sessions waiting for a lock on `table`, if one waits. */
export async function copyLockWait(c: Client, table: QualifiedName, side: CopyLockWait['side']): Promise<CopyLockWait | undefined> {
  const r = await c.query<{ mode: string; waited: number | null; blocker: number | null; blocker_state: string | null; blocker_age: number | null }>(WAIT_SQL, [qname(table), COPY_APPLICATION]);
  const row = r.rows[0];
  if (!row) return undefined;
  return {
    side,
    table: displayName(table),
    mode: row.mode,
    waitedSeconds: row.waited ?? 0,
    ...(row.blocker !== null ? { pid: row.blocker } : {}),
    ...(row.blocker_state ? { state: row.blocker_state } : {}),
    ...(row.blocker_age !== null ? { ageSeconds: row.blocker_age } : {}),
  };
}

/**
 * One copy unit's watch: `table()` when the unit moves to a table (a batch copies many), `progress()`
 * with its rows on every beat; `onChange` hears a wait begin, change blocker or end.
 */
export class CopyLockWatch {
  private readonly conns: Partial<Record<CopyLockWait['side'], Promise<Client>>> = {};
  private readonly timer: NodeJS.Timeout;
  private current?: { source: QualifiedName; target: QualifiedName };
  private rows = -1;
  private stillSince = Date.now();
  private busy = false;
  private closed = false;
  waiting?: CopyLockWait;

  /** `limit`: past `seconds` of one wait, `reached` is called once (spec.copy.maxLockWaitSeconds). */
  constructor(
    private readonly sides: Record<CopyLockWait['side'], ConnectionSpec>,
    private readonly onChange: (w: CopyLockWait | undefined) => void,
    private limit?: { seconds: number; reached(w: CopyLockWait): void },
    private readonly everyMs = 2000,
  ) {
    this.timer = setInterval(() => void this.check(), everyMs);
    this.timer.unref();
  }

  table(t: { source: QualifiedName; target: QualifiedName }): void {
    this.current = t;
    this.moved();
  }

  progress(rows: number): void {
    if (rows === this.rows) return;
    this.rows = rows;
    this.moved();
  }

  private moved(): void {
    this.stillSince = Date.now();
    if (this.waiting) this.set(undefined);
  }

  private set(w: CopyLockWait | undefined): void {
    const same = JSON.stringify({ ...w, waitedSeconds: 0, ageSeconds: 0 }) === JSON.stringify({ ...this.waiting, waitedSeconds: 0, ageSeconds: 0 });
    this.waiting = w;
    if (!same) this.onChange(w);
  }

  private client(side: CopyLockWait['side']): Promise<Client> {
    const c = (this.conns[side] ??= connect(this.sides[side], { applicationName: 'pg-dts lock watch' }));
    c.catch(() => {
      if (this.conns[side] === c) delete this.conns[side];
    });
    return c;
  }

  private async check(): Promise<void> {
    const t = this.current;
    if (!t || this.busy || this.closed || Date.now() - this.stillSince < this.everyMs) return;
    this.busy = true;
    try {
      const found =
        (await copyLockWait(await this.client('source'), t.source, 'source')) ?? (await copyLockWait(await this.client('target'), t.target, 'target'));
      if (!this.closed && t === this.current) {
        this.set(found);
        if (found && this.limit && found.waitedSeconds >= this.limit.seconds) {
          const { reached } = this.limit;
          this.limit = undefined;
          reached(found);
        }
      }
    } catch {
      // Advisory: a watch that cannot look says nothing, the copy goes on.
    } finally {
      this.busy = false;
    }
  }

  async close(): Promise<void> {
    this.closed = true;
    clearInterval(this.timer);
    await Promise.all(Object.values(this.conns).map(async (c) => (await c.catch(() => undefined))?.end().catch(() => undefined)));
  }
}

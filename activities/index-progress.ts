/**
 * MIGRATING_DATA: the index builds of the post-load work, as PostgreSQL reports them
 * (`pg_stat_progress_create_index`): which index of which table, its phase and how far it is. A build
 * of a large table takes minutes to hours; without this the status only said "indexing".
 *
 * Looked up only while a statement has run for `everyMs` (1 s), on a connection of its own opened then.
 */
import type { Client } from 'pg';
import type { IndexBuildProgress } from '../workflows/contract';
import { connect } from './db';
import { displayName, type ConnectionSpec, type QualifiedName } from './spec';

/** What a post-load session runs now, by its backend pid (kept by runJobs). */
export interface RunningStatement {
  table: QualifiedName;
  sql: string;
  since: number;
}

const PROGRESS_SQL = `
SELECT pid, phase,
       CASE WHEN blocks_total > 0 THEN round(100.0 * blocks_done / blocks_total)::int
            WHEN tuples_total > 0 THEN round(100.0 * tuples_done / tuples_total)::int END AS percent
  FROM pg_stat_progress_create_index WHERE pid = ANY($1::int[])`;

/** The index a CREATE INDEX or ADD CONSTRAINT … USING INDEX statement names, else the statement's start. */
export function indexOf(sql: string): string {
  const m = /CREATE\s+(?:UNIQUE\s+)?INDEX\s+(?:CONCURRENTLY\s+)?(?:IF\s+NOT\s+EXISTS\s+)?("(?:[^"]|"")+"|[\w$]+)/i.exec(sql) ?? /CONSTRAINT\s+("(?:[^"]|"")+"|[\w$]+)/i.exec(sql);
  if (m) return m[1]!.startsWith('"') ? m[1]!.slice(1, -1).replace(/""/g, '"') : m[1]!;
  return sql.length > 60 ? `${sql.slice(0, 60)}…` : sql;
}

export class IndexBuildWatch {
  private conn?: Promise<Client>;
  private readonly timer: NodeJS.Timeout;
  private busy = false;
  private closed = false;
  private last = '';

  constructor(
    private readonly target: ConnectionSpec,
    private readonly running: ReadonlyMap<number, RunningStatement>,
    private readonly onChange: (builds: IndexBuildProgress[]) => void,
    private readonly everyMs = 1000,
  ) {
    this.timer = setInterval(() => void this.check(), everyMs);
    this.timer.unref();
  }

  private async check(): Promise<void> {
    const now = Date.now();
    const long = [...this.running].filter(([, r]) => now - r.since >= this.everyMs);
    if (this.busy || this.closed) return;
    if (long.length === 0) return this.report([]);
    this.busy = true;
    try {
      const c = await (this.conn ??= connect(this.target, { applicationName: 'pg-dts index watch' }));
      const r = await c.query<{ pid: number; phase: string; percent: number | null }>(PROGRESS_SQL, [long.map(([pid]) => pid)]);
      const byPid = new Map(r.rows.map((x) => [x.pid, x]));
      const builds = long.flatMap(([pid, run]): IndexBuildProgress[] => {
        const p = byPid.get(pid);
        if (!p) return [];
        return [{ table: displayName(run.table), index: indexOf(run.sql), phase: p.phase, ...(p.percent !== null ? { percent: p.percent } : {}), seconds: Math.round((now - run.since) / 1000) }];
      });
      if (!this.closed) this.report(builds);
    } catch {
      // Advisory: a watch that cannot look says nothing; the builds go on.
      this.conn = undefined;
    } finally {
      this.busy = false;
    }
  }

  /** On a change of index, phase or percent (seconds alone are no news). */
  private report(builds: IndexBuildProgress[]): void {
    const key = JSON.stringify(builds.map((b) => [b.table, b.index, b.phase, b.percent]));
    if (key === this.last) return;
    this.last = key;
    this.onChange(builds);
  }

  async close(): Promise<void> {
    this.closed = true;
    clearInterval(this.timer);
    const c = await this.conn?.catch(() => undefined);
    await c?.end().catch(() => undefined);
  }
}

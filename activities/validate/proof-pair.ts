/**
 * One pair of connections (a source and a target session) of the content proof's pool (proof.ts), made
 * ready for a pass; pairs take tables, then help with the chunks of tables still being compared.
 */
import type { Client } from 'pg';
import { lsnToBigInt } from '../apply/lsn';
import { readApplyProgress } from '../apply/progress';
import { waitForApplyProgress, type WaitForTarget } from './engine';
import { CURRENT_LSN_SQL, type RowHash } from './sql';

/**
 * A pass starts once the apply is within this much WAL of where the source is when the pass begins.
 * Further behind (a backlog after a resume, or the one the copy left), every chunk would wait for the
 * apply to pass its source snapshot anyway, and the pass's reads and connections only took CPU from the
 * catch-up on a machine of few cores.
 */
const PASS_LAG_BYTES = 1024 * 1024;
/** The longest wait for that; then the pass starts anyway (and leaves the chunks the apply has not reached, as before). */
const PASS_CATCH_UP_MS = 10 * 60_000;

/** Waits, before a pass, until the apply has caught up with the source's current position (PASS_LAG_BYTES). */
async function catchUpBeforePass(source: { query(text: string): Promise<{ rows: unknown[] }> }, dst: Client, slot: string, wait: WaitForTarget, signal?: AbortSignal): Promise<void> {
  const [{ lsn }] = (await source.query(CURRENT_LSN_SQL)).rows as [{ lsn: string }];
  // No position recorded (an apply that has not committed yet, or none): the chunks' own waits cover it.
  const applied = await readApplyProgress(dst, slot);
  if (!applied || lsnToBigInt(lsn) - lsnToBigInt(applied.appliedLsn) <= BigInt(PASS_LAG_BYTES)) return;
  await wait(lsn, signal);
}

/** One pair of the pass's pool: its connections and the ways it waits for the apply. */
export interface Pair {
  id: number;
  src: Client;
  dst: Client;
  hash: RowHash;
  waits: { waitForTarget: WaitForTarget; waitHeld: WaitForTarget };
  /** The pair's source connection, one transaction at a time (see preparePair). */
  onSource: Serial;
}

/**
 * A pair made ready for a pass: no parallel workers, its source connection serialized, its waits for
 * the apply, and the wait for a catch-up before the pass (`caughtUpMs`: not the pass's time).
 */
export async function preparePair(
  src: Client,
  dst: Client,
  hash: RowHash,
  id: number,
  opts: { slot: string; catchUpTimeoutMs?: number | undefined; waitForTarget?: WaitForTarget | undefined; signal?: AbortSignal | undefined },
): Promise<{ pair: Pair; caughtUpMs: number }> {
  // A query per session and core: the pairs already read both servers at once, and each chunk's
  // parallel workers only added start-up and contention (748 MB on 2 cores: a chunk's read 67 ms
  // on the source and 76 ms on the target with them, 48 and 62 without). On a production source
  // the proof then takes at most one core per pair.
  await Promise.all([src, dst].map((c) => c.query('SET max_parallel_workers_per_gather = 0')));
  // The pair's source connection serves a read ahead while the current chunk waits (proof.ts
  // compareChunks): one transaction at a time on it, the apply's nudge included.
  const onSource = serial();
  const source = { query: (text: string) => onSource(() => src.query(text)) };
  const timeout = opts.catchUpTimeoutMs ?? 10_000;
  const waitForTarget = opts.waitForTarget ?? waitForApplyProgress(dst, source, opts.slot, timeout);
  // Inside a source snapshot held on that connection (busyChunkVerdict): no nudge through it,
  // which would wait for the snapshot's end (the apply's writes and keepalives move it).
  const noNudge = { query: async () => undefined };
  const waitHeld = opts.waitForTarget ?? waitForApplyProgress(dst, noNudge, opts.slot, timeout);
  const waitFrom = Date.now();
  await catchUpBeforePass(source, dst, opts.slot, opts.waitForTarget ?? waitForApplyProgress(dst, source, opts.slot, PASS_CATCH_UP_MS), opts.signal);
  return { pair: { id, src, dst, hash, waits: { waitForTarget, waitHeld }, onSource }, caughtUpMs: Date.now() - waitFrom };
}

/** Runs the functions given one after another, each once the one before has settled. */
export type Serial = <T>(fn: () => Promise<T>) => Promise<T>;
export function serial(): Serial {
  let tail: Promise<unknown> = Promise.resolve();
  return <T>(fn: () => Promise<T>) => {
    const result = tail.then(fn, fn);
    tail = result.catch(() => undefined);
    return result;
  };
}


/**
 * A copy stopped in the middle of its stream (cancelled, or its source session killed) must end at
 * once, leave nothing in the target, and leave no session behind; the next attempt copies the table
 * exactly. The stream passes the source's CopyData messages to the target as they are, cut wherever the
 * socket cut them: a stop inside a message must not leave the target waiting for the rest of it.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { copyTable } from '../../activities/copy';
import { fingerprint } from '../harness/compare';
import { startCluster, type PgCluster } from '../harness/pg-cluster';

let source: PgCluster;
let target: PgCluster;
const table = { source: { schema: 'public', name: 'big' }, target: { schema: 'public', name: 'big' }, copyColumns: ['id', 'v'] };

beforeAll(async () => {
  [source, target] = await Promise.all([startCluster({ name: 'abort-src' }), startCluster({ name: 'abort-tgt' })]);
  const ddl = `CREATE TABLE public.big (id int PRIMARY KEY, v text)`;
  await source.query(ddl);
  await target.query(ddl);
  // ~200 MB: seconds of streaming, so the stop lands mid-stream.
  await source.query(`INSERT INTO public.big SELECT g, repeat(md5(g::text), 6) FROM generate_series(1, 1000000) g`);
});

afterAll(async () => {
  await Promise.all([source?.destroy(), target?.destroy()]);
});

async function copySessions(c: PgCluster): Promise<number> {
  return Number((await c.query<{ n: string }>(`SELECT count(*)::text AS n FROM pg_stat_activity WHERE application_name = 'pg-dts copy'`))[0]!.n);
}

/** Waits until the target's COPY has received some rows' worth of bytes. */
async function untilStreaming(): Promise<void> {
  for (let i = 0; i < 200; i++) {
    const r = await target.query<{ n: string }>(`SELECT coalesce(max(bytes_processed), 0)::text AS n FROM pg_stat_progress_copy`);
    if (Number(r[0]!.n) > 20_000_000) return;
    await new Promise((res) => setTimeout(res, 50));
  }
  throw new Error('the copy never got going');
}

async function expectStoppedCleanly(run: Promise<unknown>, started: number): Promise<void> {
  const err = await run.then(
    () => undefined,
    (e: Error) => e,
  );
  expect(err, 'the copy fails').toBeInstanceOf(Error);
  expect(Date.now() - started, 'and at once, not after a timeout').toBeLessThan(10_000);
  for (let i = 0; (await copySessions(target)) > 0 || (await copySessions(source)) > 0; i++) {
    if (i > 50) expect({ target: await copySessions(target), source: await copySessions(source) }).toEqual({ target: 0, source: 0 });
    await new Promise((res) => setTimeout(res, 100));
  }
  expect((await target.query<{ n: string }>(`SELECT count(*)::text AS n FROM public.big`))[0]!.n).toBe('0');
}

describe('a copy stopped mid-stream', () => {
  it('ends at once when cancelled, leaving an empty target and no session; then copies exactly', async () => {
    const ac = new AbortController();
    const started = Date.now();
    const run = copyTable({ source: source.uri(), target: target.uri(), table }, { heartbeat: () => undefined, signal: ac.signal });
    await untilStreaming();
    ac.abort();
    await expectStoppedCleanly(run, started);
  });

  it('ends at once when cancelled while the target answers nothing (its session stopped), leaving an empty target', async () => {
    // A target that stops answering (a network black hole, a frozen host) must not hold a cancelled copy:
    // the CopyFail sent on cancel is never answered, so the copy must not wait for that answer.
    const ac = new AbortController();
    const run = copyTable({ source: source.uri(), target: target.uri(), table }, { heartbeat: () => undefined, signal: ac.signal });
    await untilStreaming();
    const pid = (await target.query<{ pid: number }>(`SELECT pid FROM pg_stat_activity WHERE application_name = 'pg-dts copy'`))[0]!.pid;
    process.kill(pid, 'SIGSTOP');
    let outcome: Error | string | undefined;
    let tookMs = 0;
    try {
      const abortedAt = Date.now();
      ac.abort();
      outcome = await Promise.race([
        run.then(
          () => 'finished',
          (e: Error) => e,
        ),
        new Promise<string>((res) => setTimeout(() => res('still waiting after 15 s'), 15_000)),
      ]);
      tookMs = Date.now() - abortedAt;
    } finally {
      process.kill(pid, 'SIGCONT');
    }
    expect(outcome, 'the cancelled copy fails').toBeInstanceOf(Error);
    expect(tookMs, 'at once').toBeLessThan(5_000);
    await expectStoppedCleanly(run, Date.now());
  });

  it('ends at once when its source session is killed; then copies exactly', async () => {
    const started = Date.now();
    const run = copyTable({ source: source.uri(), target: target.uri(), table }, { heartbeat: () => undefined, signal: new AbortController().signal });
    await untilStreaming();
    await source.query(`SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'pg-dts copy'`);
    await expectStoppedCleanly(run, started);

    const done = await copyTable({ source: source.uri(), target: target.uri(), table }, { heartbeat: () => undefined, signal: new AbortController().signal });
    expect(done.rows).toBe(1_000_000);
    expect(await fingerprint(target, 'postgres', 'public', 'big')).toEqual(await fingerprint(source, 'postgres', 'public', 'big'));
  });
});

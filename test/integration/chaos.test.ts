/**
 * The bounded chaos run (test/harness/chaos.ts) in CI: ten SIGKILLs of the worker (copy, sync,
 * cutover), a source restart and a target crash during the sync. `npm run chaos` runs a longer one.
 * PG_DTS_CHAOS_SEED replays a run's choices.
 */
import { expect, it } from 'vitest';
import { runChaos } from '../harness/chaos';

it('a migration under SIGKILLs of its worker, a source restart and a target crash ends COMPLETED, identical, nothing left', async () => {
  const seed = Number(process.env.PG_DTS_CHAOS_SEED ?? Math.floor(Math.random() * 2 ** 31));
  const bound = 10;
  const r = await runChaos({ seed, kills: 10, scale: 0.5, maxWriteStopSeconds: bound, log: (l) => console.log(l) });
  expect(r.report.phase).toBe('COMPLETED');
  expect(r.kills.length).toBeGreaterThanOrEqual(10);
  expect(new Set(r.kills.map((k) => k.phase.split(' ')[0])).size, JSON.stringify(r.kills)).toBeGreaterThanOrEqual(2);
  expect(r.differences).toEqual([]);
  expect(r.leftovers).toEqual({ slots: 0, pubs: 0, fences: 0 });
  for (const w of r.writeStops) expect(w, `write stop (seed ${seed})`).toBeLessThanOrEqual(bound * 1000 + 2000);
}, 600_000);

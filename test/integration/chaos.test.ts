/**
 * The bounded chaos run (test/harness/chaos.ts) in CI: ten SIGKILLs of the worker, each landing in
 * the phase the schedule names (INIT, CREATING_TABLES, the copy, SYNCING_WAL, STOPPING_WRITES,
 * VALIDATING), a source restart and a target crash during the sync. `npm run chaos` runs a longer one.
 * PG_DTS_CHAOS_SEED replays a run's choices.
 */
import { expect, it } from 'vitest';
import { runChaos } from '../harness/chaos';

it('a migration under SIGKILLs of its worker in every phase, a source restart and a target crash ends COMPLETED, identical, nothing left', async () => {
  const seed = Number(process.env.PG_DTS_CHAOS_SEED ?? Math.floor(Math.random() * 2 ** 31));
  const bound = 10;
  const r = await runChaos({ seed, kills: 10, scale: 0.5, maxWriteStopSeconds: bound, log: (l) => console.log(l) });
  expect(r.report.phase).toBe('COMPLETED');
  expect(r.kills.length).toBe(10);
  expect(r.killsByPhase, `seed ${seed}`).toBe('INIT ×1, CREATING_TABLES ×1, MIGRATING_DATA ×1, SYNCING_WAL ×5, STOPPING_WRITES ×1, VALIDATING ×1');
  // The kill in the copy lost the exported snapshot: the copy resumed in a new one.
  expect(r.report.copyResumes?.copyResumes, JSON.stringify(r.report.copyResumes)).toBeGreaterThanOrEqual(1);
  expect(r.differences).toEqual([]);
  expect(r.leftovers).toEqual({ slots: 0, pubs: 0, fences: 0 });
  for (const w of r.writeStops) expect(w, `write stop (seed ${seed})`).toBeLessThanOrEqual(bound * 1000 + 2000);
}, 600_000);

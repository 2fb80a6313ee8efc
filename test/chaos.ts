/**
 * `npm run chaos [-- --seed N --kills N --scale N --bound S]`: the long chaos run (test/harness/chaos.ts).
 * Prints the seed first; the same seed makes the same choices (timings still vary with the machine).
 */
import { runChaos } from './harness/chaos';

function arg(name: string, fallback: number): number {
  const i = process.argv.indexOf(`--${name}`);
  if (i < 0) return fallback;
  const v = Number(process.argv[i + 1]);
  if (!Number.isFinite(v)) throw new Error(`--${name} needs a number`);
  return v;
}

async function main(): Promise<void> {
  const seed = arg('seed', Math.floor(Math.random() * 2 ** 31));
  const bound = arg('bound', 15);
  const r = await runChaos({ seed, kills: arg('kills', 25), scale: arg('scale', 5), maxWriteStopSeconds: bound, log: (l) => console.log(l) });
  const tooLong = r.writeStops.filter((w) => w > bound * 1000 + 2000);
  const ok = r.report.phase === 'COMPLETED' && r.differences.length === 0 && Object.values(r.leftovers).every((n) => n === 0) && tooLong.length === 0;
  const stops = r.writeStops.map((w) => `${(w / 1000).toFixed(2)} s`).join(', ') || 'none ended';
  console.log(
    `${ok ? 'PASS' : 'FAIL'}: seed ${seed}, ${r.kills.length} kills (${r.killsByPhase}), write stops ${stops} (bound ${bound} s), ` +
      `fence to COMPLETED ${r.finalFenceToCompletedMs ?? '?'} ms, ${(r.durationMs / 1000).toFixed(0)} s`,
  );
  process.exit(ok ? 0 : 1);
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});

/**
 * Records workflow histories for the determinism check (test/integration/replay.test.ts).
 * Usage: npx tsx test/replay.ts record   — runs an online and an offline migration on throwaway
 * servers and writes their histories to test/fixtures/histories/. Re-record only on purpose: a
 * history that no longer replays means running migrations would break (use patched() instead).
 */
import { writeFileSync } from 'node:fs';
import { historyToJSON } from '@temporalio/common/lib/proto-utils';
import { join } from 'node:path';
import { startEnv } from './harness/env';
import { loadShopData, SHOP_SCHEMA, startWriter } from './harness/fixtures';

export const HISTORY_DIR = join(__dirname, 'fixtures', 'histories');

async function record(): Promise<void> {
  const env = await startEnv();
  try {
    for (const mode of ['online', 'offline'] as const) {
      const db = `rec_${mode}`;
      await env.source.createDatabase(db);
      await env.target.createDatabase(db);
      const c = await env.source.client(db);
      await c.query(SHOP_SCHEMA);
      await loadShopData(c, 0.05);
      await c.end();
      const writer = mode === 'online' ? startWriter(() => env.source.client(db), { pauseMs: 5 }) : undefined;
      const m = await env.startMigration(
        { source: env.source.uri(db), target: env.target.uri(db), schemas: ['public', 'Sales Dept'], tableSuffix: '_r', mode, cutover: { mode: 'manual' } },
        `history-${mode}`,
      );
      if (mode === 'online') {
        await m.waitForPhase('SYNCING_WAL');
        await m.signal('pause');
        await m.signal('resume');
        await new Promise((r) => setTimeout(r, 3000));
        await m.signal('cutover');
      }
      await m.result();
      await writer?.stop();
      const history = await env.temporal.client.workflow.getHandle(m.workflowId).fetchHistory();
      writeFileSync(join(HISTORY_DIR, `${mode}.json`), historyToJSON(history));
      console.log(`recorded ${mode}: ${history.events?.length} events`);
    }
  } finally {
    await env.stop();
  }
}

if (require.main === module && process.argv[2] === 'record') {
  record().catch((err) => {
    console.error(err);
    process.exit(1);
  });
}

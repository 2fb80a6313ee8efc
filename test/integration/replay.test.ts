/**
 * Determinism: recorded histories of real migrations must replay against today's workflow code.
 * A failure here means a change would break migrations already running: guard it with patched().
 */
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { Worker } from '@temporalio/worker';
import { historyFromJSON } from '@temporalio/common/lib/proto-utils';
import { workflowBundle } from '../../worker/worker';
import { HISTORY_DIR } from '../replay';
import { copyChildParent } from '../../workflows/names';

const files = readdirSync(HISTORY_DIR).filter((f) => f.endsWith('.json'));

describe('replay of recorded histories', () => {
  it('has recorded histories to replay', () => {
    expect(files.length).toBeGreaterThanOrEqual(2);
  });
  for (const file of files) {
    it(`replays ${file}`, async () => {
      const history = historyFromJSON(JSON.parse(readFileSync(join(HISTORY_DIR, file), 'utf8')));
      expect(history.events?.length).toBeGreaterThan(10);
      // A run that started a copy child named it after its own workflow id: replay under that id.
      const child = history.events?.find((e) => e.startChildWorkflowExecutionInitiatedEventAttributes)?.startChildWorkflowExecutionInitiatedEventAttributes?.workflowId;
      await Worker.runReplayHistory({ workflowBundle: await workflowBundle() }, history, child !== undefined && child !== null ? copyChildParent(child) : file);
    });
  }
});

/**
 * A real Temporal dev server for tests and the demo, from the local `temporal` CLI (or, when none is
 * found, the one @temporalio/testing downloads), with the search attributes the workflow uses.
 */
import { TestWorkflowEnvironment } from '@temporalio/testing';
import { MigrationPhaseKey } from '../../workflows/contract';
import { findTemporalCli } from '../../worker/temporal-cli';

export async function startTemporal(): Promise<TestWorkflowEnvironment> {
  const path = findTemporalCli();
  return TestWorkflowEnvironment.createLocal({
    server: {
      ...(path ? { executable: { type: 'existing-path' as const, path } } : {}),
      searchAttributes: [MigrationPhaseKey],
      extraArgs: ['--log-level', 'error'],
    },
  });
}

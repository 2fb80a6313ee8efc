/**
 * A real Temporal dev server for tests, the demo and the benchmarks, from the local `temporal` CLI —
 * installed into the project's cache when the machine has none (worker/temporal-cli.ts) — with the
 * search attributes the workflow uses. Never @temporalio/testing's own download, which needs a host
 * this project cannot rely on.
 */
import { TestWorkflowEnvironment } from '@temporalio/testing';
import { MigrationPhaseKey } from '../../workflows/contract';
import { ensureTemporalCli } from '../../worker/temporal-cli';

/** `dynamicConfig`: `key=value` settings of the server (the benchmarks' --temporal-config); none by default. */
export async function startTemporal(dynamicConfig: readonly string[] = []): Promise<TestWorkflowEnvironment> {
  const path = ensureTemporalCli();
  return TestWorkflowEnvironment.createLocal({
    server: {
      executable: { type: 'existing-path', path },
      searchAttributes: [MigrationPhaseKey],
      extraArgs: ['--log-level', 'error', ...dynamicConfig.flatMap((kv) => ['--dynamic-config-value', kv])],
    },
  });
}

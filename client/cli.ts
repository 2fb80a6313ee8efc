#!/usr/bin/env node
/**
 * `dts`: start and drive migrations. Reads TEMPORAL_ADDRESS, TEMPORAL_NAMESPACE and
 * TEMPORAL_TASK_QUEUE like the worker. Exit codes: 0 ok, 1 the operation failed, 2 bad usage/input.
 */
import { readFileSync } from 'node:fs';
import { randomUUID } from 'node:crypto';
import { Command, CommanderError } from 'commander';
import { Client, Connection, WorkflowNotFoundError } from '@temporalio/client';
import { normalizeSpec, SpecError } from '../activities/spec';
import { temporalSettings } from '../worker/config';
import { WORKFLOW_TYPE, type MigrationStatus } from '../workflows/contract';
import { formatStatus } from './format';

class UsageError extends Error {}

async function withClient<T>(fn: (client: Client, taskQueue: string) => Promise<T>): Promise<T> {
  const s = temporalSettings();
  const connection = await Connection.connect({ address: s.address }).catch((err: Error) => {
    throw new Error(`cannot reach Temporal at ${s.address}: ${err.message}`);
  });
  try {
    return await fn(new Client({ connection, namespace: s.namespace }), s.taskQueue);
  } finally {
    await connection.close();
  }
}

export function readSpecFile(path: string): unknown {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    throw new UsageError(`cannot read ${path}: ${(err as Error).message}`);
  }
  try {
    return JSON.parse(text);
  } catch (err) {
    throw new UsageError(`${path} is not valid JSON: ${(err as Error).message}`);
  }
}

export function buildProgram(): Command {
  const program = new Command('dts').description('PostgreSQL-to-PostgreSQL online migration on Temporal').exitOverride();

  program
    .command('start')
    .description('start a migration; prints the workflow id')
    .requiredOption('-c, --config <file>', 'MigrationSpec JSON file')
    .option('--id <workflowId>', 'workflow id (default: a new one)')
    .action(async (opts: { config: string; id?: string }) => {
      const spec = readSpecFile(opts.config);
      try {
        normalizeSpec(spec); // refuse a malformed spec here, before anything starts
      } catch (err) {
        if (err instanceof SpecError) throw new UsageError(err.message);
        throw err;
      }
      const workflowId = opts.id ?? `migration-${randomUUID()}`;
      await withClient(async (client, taskQueue) => {
        await client.workflow.start(WORKFLOW_TYPE, {
          taskQueue,
          workflowId,
          args: [spec],
          staticSummary: 'pg-dts migration',
        });
      });
      console.log(workflowId);
    });

  program
    .command('status <workflowId>')
    .description('show phase, tables and replication lag')
    .option('--json', 'print the raw status as JSON')
    .option('-w, --watch', 'refresh every 2 seconds until the migration ends')
    .action(async (workflowId: string, opts: { json?: boolean; watch?: boolean }) => {
      await withClient(async (client) => {
        const handle = client.workflow.getHandle(workflowId);
        for (;;) {
          const status = await handle.query<MigrationStatus>('status');
          if (opts.watch && process.stdout.isTTY) process.stdout.write('\x1b[2J\x1b[H');
          console.log(opts.json ? JSON.stringify(status, null, 2) : formatStatus(status));
          const done = ['COMPLETED', 'FAILED', 'CANCELLED'].includes(status.phase);
          if (!opts.watch || done) break;
          await new Promise((r) => setTimeout(r, 2000));
        }
      });
    });

  for (const name of ['pause', 'resume', 'cancel', 'cutover'] as const) {
    program
      .command(`${name} <workflowId>`)
      .description(`send the ${name} signal`)
      .action(async (workflowId: string) => {
        await withClient((client) => client.workflow.getHandle(workflowId).signal(name));
        console.log(`${name} sent to ${workflowId}`);
      });
  }

  program
    .command('list')
    .description('list migrations and their phases')
    .option('--phase <phase>', 'only migrations in this phase')
    .action(async (opts: { phase?: string }) => {
      await withClient(async (client) => {
        const query = `WorkflowType = '${WORKFLOW_TYPE}'${opts.phase ? ` AND MigrationPhase = '${opts.phase.replace(/'/g, '')}'` : ''}`;
        for await (const wf of client.workflow.list({ query })) {
          const phase = (wf.searchAttributes?.MigrationPhase as string[] | undefined)?.[0] ?? '?';
          console.log(`${wf.workflowId}\t${wf.status.name}\t${phase}\t${wf.startTime.toISOString()}`);
        }
      });
    });

  program
    .command('worker')
    .description('run a worker (same as npm run worker)')
    .action(async () => {
      const { runWorker } = await import('../worker/main');
      await runWorker();
    });

  program
    .command('demo')
    .description('run a complete live migration on throwaway local servers (same as npm run demo)')
    .action(async () => {
      const { runDemo } = await import('./demo');
      await runDemo();
    });

  return program;
}

export async function main(argv: string[]): Promise<number> {
  try {
    await buildProgram().parseAsync(argv);
    return 0;
  } catch (err) {
    if (err instanceof CommanderError) return err.exitCode === 0 ? 0 : 2;
    if (err instanceof UsageError) {
      console.error(`dts: ${err.message}`);
      return 2;
    }
    if (err instanceof WorkflowNotFoundError) {
      console.error(`dts: no such migration: ${err.workflowId}`);
      return 1;
    }
    console.error(`dts: ${err instanceof Error ? err.message : String(err)}`);
    return 1;
  }
}

if (require.main === module) {
  void main(process.argv).then((code) => process.exit(code));
}

/**
 * `dts cleanup <id>` and `dts orphans`: what a migration left on the servers (activities/leftovers.ts),
 * removed or listed from the command line, without a worker. A terminated workflow runs no cleanup of
 * its own; these are how its slot (which retains WAL), fence (which blocks writes) and publication go.
 */
import { WorkflowNotFoundError } from '@temporalio/client';
import { findOrphans, formatLeftover, migrationOf, removeMigrationLeftovers, runningMigrationIds, type Leftover } from '../activities/leftovers';
import { normalizeSpec, type ConnectionSpec } from '../activities/spec';
import type { TemporalContext } from './temporal';

export class CleanupRefused extends Error {}

export interface CleanupOptions {
  source?: string;
  target?: string;
}

/**
 * Removes what migration `id` left: `id` is its workflow id (source and target come from the
 * workflow's input), or, with --source, a migration id as `dts orphans` prints it. Refused while the
 * workflow runs: its own cleanup owns those objects then (cancel it instead).
 */
export async function runCleanup(ctx: TemporalContext, id: string, opts: CleanupOptions): Promise<{ migrationId: string; removed: Leftover[] }> {
  let migrationId: string;
  let source: ConnectionSpec | undefined = opts.source;
  let target: ConnectionSpec | undefined = opts.target;
  try {
    const d = await ctx.client.workflow.getHandle(id).describe();
    if (d.status.name === 'RUNNING') {
      throw new CleanupRefused(`migration ${id} is still running: cancel it (dts cancel ${id}), which cleans up by itself, or wait until it ends`);
    }
    const found = await migrationOf(ctx.client, id, d.runId);
    migrationId = found.migrationId;
    if (found.spec && (!source || !target)) {
      const spec = normalizeSpec(found.spec);
      source ??= spec.source;
      target ??= spec.target;
    }
  } catch (err) {
    if (!(err instanceof WorkflowNotFoundError)) throw err;
    if (!source) throw new CleanupRefused(`no migration workflow ${id}; to remove leftovers by migration id (as dts orphans prints it), give --source (and --target)`);
    if (!/^[a-z0-9_]{1,40}$/.test(id)) throw new CleanupRefused(`${id} is not a migration id (lower-case letters, digits and underscores)`);
    if ((await runningMigrationIds(ctx.client)).has(id)) throw new CleanupRefused(`migration ${id} is still running`);
    migrationId = id;
  }
  if (!source) throw new CleanupRefused(`cannot read the source of migration ${id} from its workflow; give --source (and --target)`);
  const removed = await removeMigrationLeftovers({ source, target, migrationId });
  return { migrationId, removed };
}

export async function runOrphans(ctx: TemporalContext, opts: { source: string; target?: string }): Promise<Leftover[]> {
  const running = await runningMigrationIds(ctx.client);
  return findOrphans(opts.source, opts.target, running);
}

export { formatLeftover };

/**
 * The workflow's first phases without Temporal, for tests of what comes after them: the source's
 * tables listed, created on the target (createTargetTables) and each copied whole (copyTable).
 */
import { copyTable } from '../../activities/copy';
import type { TableDef } from '../../activities/model';
import { listSourceTables } from '../../activities/preflight';
import { createTargetTables } from '../../activities/create-tables';
import type { NormalizedSpec } from '../../activities/spec';
import type { PgCluster } from './pg-cluster';

export async function createAndCopy(spec: NormalizedSpec, source: PgCluster, db: string): Promise<TableDef[]> {
  const c = await source.client(db);
  const { tables } = await listSourceTables(c, spec).finally(() => c.end());
  const defs = await createTargetTables({ spec, tables });
  const signal = new AbortController().signal;
  for (const d of defs) {
    await copyTable({ source: spec.source, target: spec.target, table: { source: d.source, target: d.target, copyColumns: d.copyColumns } }, { heartbeat: () => undefined, signal });
  }
  return defs;
}

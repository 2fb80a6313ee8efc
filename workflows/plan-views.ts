/**
 * What each phase's activity needs from the tables' definitions. Pure, shared by the workflow (runs
 * recorded before the plan was kept on the target pass these inline) and the activities (which read
 * the definitions by reference from the target's plan store and derive the same inputs).
 */
import type { TableDef } from '../activities/model';

/** Partitions too: a statement trigger on a partitioned table does not fire for writes made straight into a partition. */
export const fenceTables = (defs: readonly TableDef[]) => defs.flatMap((d) => [d.source, ...(d.partitions ?? []).map((p) => p.source)]);
export const namePairs = (defs: readonly TableDef[]) => defs.map((d) => ({ source: d.source, target: d.target }));
export const validationTables = (defs: readonly TableDef[]) =>
  defs.map((d) => ({ source: d.source, target: d.target, keyColumns: d.keyColumns, copyColumns: d.copyColumns }));
export const sequencesOf = (defs: readonly TableDef[]) => defs.flatMap((d) => d.sequences);
export const hasForeignKeys = (defs: readonly TableDef[]) =>
  defs.some((d) => (d.postLoadSteps ?? []).some((st) => st.kind === 'foreign-key') || (d.foreignKeys?.length ?? 0) > 0);
/** afterCutover "reverse": the same views with target and source swapped (the target's changes flow back). */
export const reverseFenceTables = (defs: readonly TableDef[]) => defs.flatMap((d) => [d.target, ...(d.partitions ?? []).map((p) => p.target)]);
export const reverseNamePairs = (defs: readonly TableDef[]) => defs.map((d) => ({ source: d.target, target: d.source }));
export const reverseSequencesOf = (defs: readonly TableDef[]) => defs.flatMap((d) => d.sequences.map((s) => ({ ...s, source: s.target, target: s.source })));
export const targetTables = (defs: readonly TableDef[]) => defs.map((d) => d.target);

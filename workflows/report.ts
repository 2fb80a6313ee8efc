/**
 * The migration's report (the workflow's result, and the `report` query) from the run's state:
 * per-table counts and verdicts, the content proof's totals, timings. Reads only.
 */
import type { MigrationReport, Phase, ProofReport, TableReport } from './contract';
import type { MigrationRun } from './run';

/** The proof's totals, from VALIDATING's per-table results. */
export function proofReport(run: MigrationRun): ProofReport {
  const { state, proof } = run;
  const r: ProofReport = { enabled: run.plan?.spec.validation.checksum ?? false, chunks: 0, verifiedBeforeCutover: 0, reverifiedAtCutover: 0, rowsCovered: 0 };
  for (const c of run.results.counts) {
    if (!c.proof) continue;
    r.chunks += c.proof.chunks;
    r.verifiedBeforeCutover += c.proof.verifiedBeforeCutover;
    r.reverifiedAtCutover += c.proof.reverifiedAtCutover;
    if (c.proof.readAtCutover !== undefined) r.readAtCutover = (r.readAtCutover ?? 0) + c.proof.readAtCutover;
    if (c.proof.keysReadAtCutover !== undefined) r.keysReadAtCutover = (r.keysReadAtCutover ?? 0) + c.proof.keysReadAtCutover;
    r.rowsCovered += c.proof.rows;
  }
  if (proof.used) {
    r.livePasses = state.proof?.passesComplete ?? 0;
    r.liveMs = proof.liveMs;
    // Ended before VALIDATING (a divergence, a cancel): what the live proof had verified by then.
    if (proof.validatingMs === undefined && state.proof) Object.assign(r, { chunks: state.proof.chunks, verifiedBeforeCutover: state.proof.chunksVerified, rowsCovered: state.proof.rowsCovered });
  }
  if (proof.validatingMs !== undefined) r.validatingMs = proof.validatingMs;
  return r;
}

export function report(run: MigrationRun, phase: Phase, error?: string): MigrationReport {
  const { state, progress, planRef, startedAt } = run;
  const { counts, sequences, repaired, objects } = run.results;
  // By reference the page of tables, plus every table validation failed (bounded by the activity).
  const listed = planRef ? [...state.tables, ...counts.filter((c) => (!c.ok || c.repair) && !state.tables.some((t) => t.source === c.source)).map((c) => ({ source: c.source, target: c.target, rowsCopied: 0 }))] : state.tables;
  const tables: TableReport[] = listed.map((t) => {
    const c = counts.find((x) => x.source === t.source);
    return {
      source: t.source,
      target: t.target,
      sourceRows: c?.sourceRows ?? -1,
      targetRows: c?.targetRows ?? t.rowsCopied,
      countsMatch: c?.countsMatch ?? false,
      copyDurationMs: run.copyMs.get(t.source),
      sample: c?.sample ?? 'not-run',
      checksum: c?.checksum ?? 'not-run',
      ...(c && c.mismatches.length ? { mismatches: c.mismatches, mismatchesTruncated: c.mismatchesTruncated } : {}),
      ...(c && c.mismatchedChunks.length ? { mismatchedChunks: c.mismatchedChunks } : {}),
      ...(c?.error ? { validationError: c.error } : {}),
      ...(c?.proof ? { proof: c.proof } : {}),
      ...(c?.repair ? { repair: c.repair } : {}),
    };
  });
  const finishedAt = Date.now();
  return {
    migrationId: run.migrationId,
    phase,
    mode: state.mode,
    tables,
    ...(planRef ? { tablesTotal: progress.tablesTotal } : {}),
    sequences,
    startedAt: new Date(startedAt).toISOString(),
    finishedAt: new Date(finishedAt).toISOString(),
    durationMs: finishedAt - startedAt,
    cutoverWindowMs: state.cutover?.windowMs,
    ...(progress.copyResumes ? { copyResumes: { copyResumes: progress.copyResumes, unitsKept: progress.unitsKept ?? 0, unitsCopiedTwice: progress.unitsCopiedTwice ?? 0 } } : {}),
    ...(run.plan && (run.proof.validatingMs !== undefined || run.proof.used) ? { proof: proofReport(run) } : {}),
    ...(repaired ? { repair: repaired } : {}),
    ...(objects ? { objects: { created: objects.created, skipped: objects.skipped, ...(objects.rewritten?.length ? { rewritten: objects.rewritten } : {}) } } : {}),
    ...(state.fallback ? { fallback: state.fallback } : {}),
    notices: state.notices,
    error,
  };
}

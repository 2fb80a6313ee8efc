/**
 * VALIDATING: row counts, sampled rows and checksums with the source fenced (with the content proof,
 * only the chunks changed since it verified them); validation.repair rewrites what differs first.
 * A difference fails the migration before the cutover.
 */
import * as wf from '@temporalio/workflow';
import { ApplicationFailure } from '@temporalio/common';
import { TABLES_PAGE } from '../contract';
import { validationTables } from '../plan-views';
import { call, fencedHeartbeat, validationOpts } from '../activities';
import { planOf, repairOn, setPhase, tableCount, tablesOr, type MigrationRun } from '../run';
import { proofReport } from '../report';
import { stopApply } from '../background';
import { ErrorType } from '../error-types';

export async function validate(run: MigrationRun): Promise<void> {
  const p = planOf(run);
  const { state, proof, results } = run;
  const v = p.spec.validation;
  const levels = ['row counts', v.sampleSize > 0 ? `${v.sampleSize} sampled rows` : '', v.checksum ? (proof.used ? 'checksums of the chunks changed since the proof' : 'checksums') : ''].filter(Boolean).join(', ');
  setPhase(run, 'VALIDATING', `comparing ${levels}`);
  if (!v.checksum && wf.patched('live-proof')) {
    state.proof = { state: 'off', pass: 0, passesComplete: 0, tables: tableCount(run), chunks: 0, chunksVerified: 0, rowsCovered: 0 };
    state.notices.push('content proof off (validation.checksum = false): only row counts and sampled rows were compared');
  }
  const validatingStarted = Date.now();
  const opts = run.cutover.bounded ? { ...validationOpts, heartbeatTimeout: fencedHeartbeat } : validationOpts;
  const repair = repairOn(run);
  const marks = run.marks ? { migrationId: run.marks } : {};
  // The apply has passed the fence (STOPPING_WRITES) and, the source fenced, has nothing left to do:
  // it stops while the comparison runs rather than after it, inside the write stop (FINALIZING's stop
  // then finds it stopped; an abandoned attempt starts it again in SYNCING_WAL).
  const applyStopped = run.apply.scope && wf.patched('apply-stops-with-validation') ? stopApply(run) : undefined;
  const validated = await call(opts, `compare ${levels}${repair ? ', repair what differs' : ''}`, 'validateMigration', {
    source: p.spec.source,
    target: p.spec.target,
    ...tablesOr(run, () => ({ tables: validationTables(run.defs) })),
    ...(run.planRef ? { track: TABLES_PAGE } : {}),
    sampleSize: v.sampleSize,
    checksum: v.checksum,
    chunkRows: v.chunkRows,
    parallelism: p.spec.parallelism,
    ...(proof.used ? { proofSlot: run.slot } : {}),
    // Whole schemas migrated: a table created in one since the start is reported.
    ...(p.spec.tables ? {} : { schemas: p.spec.schemas }),
    ...(repair ? { repair: { maxRows: v.repairMaxRows ?? 0, limitName: 'validation.repairMaxRows', ...marks, ...(p.applyReplicaRole === false ? { replicaRole: false } : {}) } } : {}),
    // The apply's stop, sooner than the cancellation's heartbeat brings it (activities/apply/stop-request.ts).
    ...(applyStopped && run.fence.token ? { stopApply: { slot: run.slot, token: run.fence.token } } : {}),
  });
  await applyStopped;
  if (validated.repair?.tables) {
    results.repaired = { tables: validated.repair.tables, rows: validated.repair.rows };
    state.notices.push(`validation.repair rewrote ${validated.repair.rows} row(s) of ${validated.repair.tables} table(s) on the target from the source; every repaired chunk compared again (the report lists them by table)`);
  }
  results.counts = validated.results;
  proof.validatingMs = Date.now() - validatingStarted;
  if (v.checksum) {
    const r = proofReport(run);
    state.proof = {
      ...(state.proof ?? { pass: 0, passesComplete: 0 }),
      state: 'validated',
      tables: tableCount(run),
      chunks: r.chunks,
      chunksVerified: r.chunks,
      rowsCovered: r.rowsCovered,
      reverifiedAtCutover: r.reverifiedAtCutover,
    };
  }
  state.validation = results.counts.map((c) => ({
    source: c.source,
    countsMatch: c.countsMatch,
    sample: c.sample,
    checksum: c.checksum,
    mismatches: c.mismatches.length,
    ...(c.error ? { error: c.error } : {}),
    ...(c.repair ? { repaired: c.repair.rows } : {}),
  }));
  for (const c of results.counts) {
    const ts = state.tables.find((t) => t.source === c.source);
    if (ts) ts.state = c.ok ? 'validated' : 'failed';
  }
  if (validated.failure) throw ApplicationFailure.nonRetryable(`validation failed:\n${validated.failure}`, ErrorType.Validation);
}

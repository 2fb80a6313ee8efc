/**
 * VALIDATING, and the checks that prepare it during SYNCING_WAL. What the rest of pg-dts uses:
 *
 *  - strict.ts validateTables: counts, sample, chunked checksum + bisection, source fenced or quiet;
 *  - live.ts validateLive: the advisory check during SYNCING_WAL, tolerating rows changing under it;
 *  - proof.ts proveLive: the content proof, chunks verified during SYNCING_WAL and re-checked at cutover
 *    only where they changed (proof-cutover.ts; its state on the target: proof-store.ts);
 *  - repair.ts validateAndRepair: validation.repair / `dts verify --repair`.
 *
 * Underneath: contract.ts (inputs, results), sql.ts (pure SQL), compare.ts (pure verdicts and report
 * text), engine.ts (reads, pairings, bisection), shared.ts (connections and mismatch lists). Imports go
 * one way, from the checks down to contract.ts and sql.ts.
 */
export { formatMismatch, formatValidationFailure } from './compare';
export { VALIDATE_DEFAULTS, type TableValidationResult, type ValidateHooks, type ValidateProgress, type ValidateTablesInput } from './contract';
export { validateLive, type LiveTableValidation, type ValidateLiveInput } from './live';
export { proveLive, type ProofProgress, type ProveLiveInput, type ProveLiveResult } from './proof';
export { DEFAULT_REPAIR_MAX_ROWS, formatRepair, validateAndRepair, type RepairOutcome, type RepairSettings } from './repair';
export { validateTables } from './strict';

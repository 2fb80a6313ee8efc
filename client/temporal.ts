/**
 * What the CLI and the REST API share: the Temporal connection (with the payload codec when
 * PG_DTS_CODEC_KEY is set), starting a migration with its UI metadata, and reading a migration's
 * state from Temporal alone (visibility, describe, the `status` query).
 */
import { randomUUID } from 'node:crypto';
import { CancelledFailure } from '@temporalio/common';
import {
  Client,
  Connection,
  WorkflowExecutionAlreadyStartedError,
  WorkflowFailedError,
  WorkflowNotFoundError,
  type WorkflowExecutionInfo,
  type WorkflowHandle,
} from '@temporalio/client';
import { clientConfig, describeConnection as hostPortDb } from '../activities/db';
import { normalizeSpec, type ConnectionSpec, type NormalizedSpec } from '../activities/spec';
import { PHASES, WORKFLOW_TYPE, type MigrationReport, type MigrationStatus, type StatusPage, type Phase } from '../workflows/contract';
import { CODEC_KEY_ENV, payloadKeyId } from '../connection/codec';
import type { TemporalContext } from '../connection/connect';

export { connectTemporal, TemporalUnavailableError, type TemporalContext } from '../connection/connect';

/** A request that cannot be served as given; `field` names the offending input when there is one. */
export class InputError extends Error {
  override name = 'InputError';
  constructor(
    message: string,
    readonly field?: string,
  ) {
    super(message);
  }
}

/** The request conflicts with the migration's state (already started, already ended, ...). */
export class ConflictError extends Error {
  override name = 'ConflictError';
}

// ── Secrets ──

/** True when a connection carries a password (object field, URI user:password@, or ?password=). */
export function hasPassword(c: ConnectionSpec): boolean {
  try {
    return Boolean(clientConfig(c).password);
  } catch {
    return typeof c === 'object' && Boolean(c.password);
  }
}

/** user@host:port/database — never the password. */
export function describeEndpoint(c: ConnectionSpec): string {
  const user = clientConfig(c).user;
  return `${user ? `${user}@` : ''}${hostPortDb(c)}`;
}

/**
 * Refuses a spec that carries a password when payloads would go to Temporal unencrypted: the
 * password would sit in plain text in workflow history.
 */
export function assertSecretsProtected(spec: NormalizedSpec, encrypted: boolean, fieldNames = { source: 'source', target: 'target' }): void {
  if (encrypted) return;
  for (const side of ['source', 'target'] as const) {
    if (hasPassword(spec[side])) {
      throw new InputError(
        `${fieldNames[side]} contains a password, and payload encryption is off: the password would be stored in plain text in ` +
          `workflow history. Set ${CODEC_KEY_ENV} (the same key for this client and every worker), or leave the password out ` +
          'and let the workers resolve it (PGPASSWORD, ~/.pgpass, PGPASSFILE)',
        `${fieldNames[side]}.password`,
      );
    }
  }
}

// ── Starting ──

/** What the Temporal UI shows for a migration (no password anywhere), and the memo the API lists. */
export function migrationMetadata(spec: NormalizedSpec): { staticSummary: string; staticDetails: string; memo: MigrationMemo } {
  const source = describeEndpoint(spec.source);
  const target = describeEndpoint(spec.target);
  const tables = spec.tables?.map((t) => `${t.schema}.${t.name}`);
  const what = tables ? `${tables.length} table${tables.length === 1 ? '' : 's'}` : `every table in ${spec.schemas.join(', ')}`;
  const details = [
    `**source** ${source}`,
    `**target** ${target}`,
    `**tables** ${tables ? tables.join(', ') : `every table in schema${spec.schemas.length > 1 ? 's' : ''} ${spec.schemas.join(', ')}`}`,
    spec.tableSuffix ? `**table suffix** ${spec.tableSuffix}` : '',
    Object.keys(spec.schemaMapping).length
      ? `**schema mapping** ${Object.entries(spec.schemaMapping)
          .map(([a, b]) => `${a} → ${b}`)
          .join(', ')}`
      : '',
    `**mode** ${spec.mode}, cutover ${spec.cutover.mode}, ${spec.parallelism} copies at a time`,
  ].filter(Boolean);
  return {
    staticSummary: `${source} → ${target}, ${what}`,
    staticDetails: details.join('\n\n'),
    memo: { source, target, tables: tables ?? null, schemas: spec.schemas },
  };
}

export interface MigrationMemo {
  source: string;
  target: string;
  tables: string[] | null;
  schemas: string[];
}

export interface StartOptions {
  taskQueue: string;
  workflowId?: string;
  /**
   * Create without starting: the workflow starts with a `pause` signal already delivered (signal
   * with start), so it holds before the preflight until `resume`: nothing connects to either database
   * until then (the spec itself is checked here, before the start).
   */
  paused?: boolean;
  /** True when the client encrypts payloads (else a password in the spec is refused). */
  encrypted: boolean;
  /** How the spec's fields are named for the caller (the REST body says source_db). */
  fieldNames?: { source: string; target: string };
}

/**
 * Validates the spec (SpecError on a malformed one), refuses an unprotected password (InputError),
 * and starts migrationWorkflow. Fails with ConflictError when the workflow id is taken.
 */
export async function startMigration(client: Client, spec: unknown, opts: StartOptions): Promise<{ workflowId: string; runId: string }> {
  const normalized = normalizeSpec(spec);
  assertSecretsProtected(normalized, opts.encrypted, opts.fieldNames);
  const workflowId = opts.workflowId ?? `migration-${randomUUID()}`;
  const meta = migrationMetadata(normalized);
  const common = {
    taskQueue: opts.taskQueue,
    workflowId,
    args: [spec] as [unknown],
    staticSummary: meta.staticSummary,
    staticDetails: meta.staticDetails,
    memo: { ...meta.memo },
    // An id names one migration (and its slot and publication): never reuse it.
    workflowIdReusePolicy: 'REJECT_DUPLICATE' as const,
  };
  try {
    if (opts.paused) {
      // Signal-with-start would signal an existing run instead of failing: look first.
      if (await exists(client, workflowId)) throw new ConflictError(`a migration with id ${workflowId} already exists`);
      const h = await client.workflow.signalWithStart(WORKFLOW_TYPE, { ...common, signal: 'pause', signalArgs: [] });
      return { workflowId, runId: h.signaledRunId };
    }
    const h = await client.workflow.start(WORKFLOW_TYPE, common);
    return { workflowId, runId: h.firstExecutionRunId };
  } catch (err) {
    if (err instanceof WorkflowExecutionAlreadyStartedError) throw new ConflictError(`a migration with id ${workflowId} already exists`);
    throw err;
  }
}

async function exists(client: Client, workflowId: string): Promise<boolean> {
  try {
    await client.workflow.getHandle(workflowId).describe();
    return true;
  } catch (err) {
    if (err instanceof WorkflowNotFoundError) return false;
    throw err;
  }
}

// ── Reading ──

/** What a migration is doing, in one word (the REST API's `state`). */
export type MigrationState = 'created' | 'running' | 'paused' | 'completed' | 'failed' | 'cancelled' | 'terminated' | 'timed_out';

export const TERMINAL_PHASES: readonly Phase[] = ['COMPLETED', 'ROLLED_BACK', 'FAILED', 'CANCELLED'];

/** Visibility query for migrations, optionally in one phase (validated: no injection). */
export function listQuery(phase?: string): string {
  // A run that continued as new is history of the same migration: list each migration once.
  let q = `WorkflowType = '${WORKFLOW_TYPE}' AND ExecutionStatus != 'ContinuedAsNew'`;
  if (phase !== undefined) {
    if (!(PHASES as readonly string[]).includes(phase)) throw new InputError(`unknown phase ${JSON.stringify(phase)}: one of ${PHASES.join(', ')}`, 'phase');
    q += ` AND MigrationPhase = '${phase}'`;
  }
  return q;
}

export function phaseOf(info: Pick<WorkflowExecutionInfo, 'searchAttributes'>): Phase | null {
  const v = (info.searchAttributes?.MigrationPhase as unknown[] | undefined)?.[0];
  return typeof v === 'string' && (PHASES as readonly string[]).includes(v) ? (v as Phase) : null;
}

/**
 * The state from Temporal's execution status, the phase, and (for a running migration) the status
 * query. A migration paused in INIT has changed nothing yet: it is "created" (start = resume).
 */
export function stateOf(temporalStatus: string, phase: Phase | null, status?: Pick<MigrationStatus, 'phase' | 'paused'>): MigrationState {
  switch (temporalStatus) {
    case 'RUNNING':
      if (status?.paused) return status.phase === 'INIT' ? 'created' : 'paused';
      return 'running';
    case 'COMPLETED':
      // Runs from before the cancel-ends-canceled patch: a cancel signal ended them normally.
      return phase === 'CANCELLED' ? 'cancelled' : phase === 'FAILED' ? 'failed' : 'completed';
    case 'FAILED':
      return 'failed';
    case 'CANCELLED':
      return 'cancelled';
    case 'TERMINATED':
      return 'terminated';
    case 'TIMED_OUT':
      return 'timed_out';
    default:
      return 'running';
  }
}

/** The `status` query with a deadline (a query waits for a worker; without one it would hang). */
export async function queryStatus(ctx: Pick<TemporalContext, 'connection'>, handle: WorkflowHandle, timeoutMs = 10_000, page?: StatusPage): Promise<MigrationStatus> {
  // Without a page, no argument: workers from before paging answer the same query.
  return ctx.connection.withDeadline(Date.now() + timeoutMs, () => (page ? handle.query<MigrationStatus, [StatusPage]>('status', page) : handle.query<MigrationStatus>('status')));
}

/** The report of a migration that has ended COMPLETED or cancelled (CANCELED; before, COMPLETED in phase CANCELLED). */
export async function resultOf(ctx: Pick<TemporalContext, 'connection'>, handle: WorkflowHandle, timeoutMs = 10_000): Promise<MigrationReport> {
  return ctx.connection.withDeadline(Date.now() + timeoutMs, () => reportOf(handle));
}

/**
 * The workflow's result, or for a cancelled one (Temporal's CANCELED carries no result) the report it
 * answers by query; a failure is thrown as it is.
 */
export async function reportOf(handle: WorkflowHandle): Promise<MigrationReport> {
  try {
    return (await handle.result()) as MigrationReport;
  } catch (err) {
    if (err instanceof WorkflowFailedError && err.cause instanceof CancelledFailure) {
      const report = await handle.query<MigrationReport | null>('report').catch(() => null);
      if (report) return report;
    }
    throw err;
  }
}

/**
 * Why a running migration does not answer: its latest workflow task failed and none has completed
 * since (the workflow is stuck, not failed). A worker whose PG_DTS_CODEC_KEY cannot decrypt the
 * migration's payloads is named with the key ids involved (the payloads', the worker's, this
 * client's), never the keys. Undefined when the last workflow task did not fail.
 */
export async function workflowTaskProblem(ctx: Pick<TemporalContext, 'connection' | 'settings' | 'codec'>, workflowId: string): Promise<string | undefined> {
  const svc = ctx.connection.workflowService;
  const execution = { workflowId };
  const recent = await svc.getWorkflowExecutionHistoryReverse({ namespace: ctx.settings.namespace, execution, maximumPageSize: 50 });
  const lastTask = recent.history?.events?.find((e) => e.workflowTaskFailedEventAttributes || e.workflowTaskCompletedEventAttributes);
  const failure = lastTask?.workflowTaskFailedEventAttributes?.failure;
  if (!failure) return undefined;
  const first = await svc.getWorkflowExecutionHistory({ namespace: ctx.settings.namespace, execution, maximumPageSize: 1 });
  const inputKey = payloadKeyId(first.history?.events?.[0]?.workflowExecutionStartedEventAttributes?.input?.payloads?.[0]);
  // The worker encodes its failure with its own key (connection/failure-converter.js): that names its key.
  const workerKey = payloadKeyId(failure.encodedAttributes);
  let message = failure.message ?? '';
  if (failure.encodedAttributes) {
    try {
      const [plain] = ctx.codec && workerKey ? await ctx.codec.decode([failure.encodedAttributes]) : [failure.encodedAttributes];
      if (!payloadKeyId(plain)) message = String((JSON.parse(Buffer.from(plain?.data ?? new Uint8Array()).toString('utf8')) as { message?: unknown }).message ?? message);
    } catch {
      // Encrypted with a key this client does not hold either: the key ids say enough.
    }
  }
  const ours = ctx.codec?.keyIds ?? [];
  const keyProblem =
    (workerKey !== undefined && !ours.includes(workerKey)) ||
    /PG_DTS_CODEC_KEY does not hold|failed authentication|binary\/encrypted|Unknown encoding/i.test(message);
  if (keyProblem) {
    const payloads = inputKey ? `its payloads are encrypted with key id ${inputKey}` : 'its input is not encrypted';
    const worker = workerKey ? `a worker holding key id ${workerKey} (its first key)` : `a worker without ${CODEC_KEY_ENV}`;
    const client = ours.length ? `this client holds key id${ours.length > 1 ? 's' : ''} ${ours.join(', ')}` : `this client has no ${CODEC_KEY_ENV}`;
    return (
      `migration ${workflowId} is stuck: ${worker} cannot process it (${payloads}; ${client}). ` +
      `Give every worker polling its task queue the key it was started with (${CODEC_KEY_ENV}, comma-separated to hold several)`
    );
  }
  return `migration ${workflowId} is stuck: its last workflow task failed: ${message.slice(0, 2000)}`;
}

/** The innermost message of a failure chain (WorkflowFailedError → MigrationFailed → ...). */
export function failureMessage(err: unknown): string {
  let e = err as { message?: string; cause?: unknown } | undefined;
  while (e && typeof e === 'object' && e.cause && typeof e.cause === 'object') e = e.cause as typeof e;
  return e?.message ?? String(err);
}

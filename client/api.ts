/**
 * `dts api`: the REST API (the seed service's routes), backed by Temporal alone — visibility for
 * lists, describe and the `status` query for reads, signals for actions; no database of its own.
 * Also serves the OpenAPI description and the codec endpoint the Temporal UI uses to show encrypted
 * payloads.
 *
 *   POST /api/v1/migrations                 create (paused before any change; see startMigration)
 *   GET  /api/v1/migrations?limit=&offset=  list (newest first), optional &phase=
 *   GET  /api/v1/migrations/{id}            one migration, its status and (once ended) report or error
 *   POST /api/v1/migrations/{id}/start|pause|resume|cancel|cutover|commit|rollback
 *   GET  /api/v1/migrations/{id}/status     the workflow's status query
 *   POST /api/v1/assess                     every precondition of a spec at once, read-only (dts assess)
 *   GET  /api/v1/health                     Temporal reachable and a worker polling the task queue
 *   GET  /api/v1/openapi.json
 *   POST /codec/encode, /codec/decode       Temporal codec server protocol (CORS for the UI)
 */
import Fastify, { type FastifyError, type FastifyInstance, type FastifyReply } from 'fastify';
import swagger from '@fastify/swagger';
import {
  hasZodFastifySchemaValidationErrors,
  jsonSchemaTransform,
  jsonSchemaTransformObject,
  serializerCompiler,
  validatorCompiler,
  type ZodTypeProvider,
} from 'fastify-type-provider-zod';
import { isGrpcServiceError, WorkflowNotFoundError, type WorkflowExecutionDescription, type WorkflowExecutionInfo } from '@temporalio/client';
import { temporal } from '@temporalio/proto';
import type { z } from 'zod';
import { SpecError, type MigrationSpecInput } from '../activities/spec';
import { assess } from '../activities/assess';
import { migrationIdOf } from '../workflows/names';
import { applySignal } from '../workflows/state';
import { WORKFLOW_TYPE, type MigrationReport, type MigrationStatus, type StatusPage } from '../workflows/contract';
import { apiTlsFromEnv, apiTokenFromEnv, assertListenAllowed, boundedText, isAuthenticated, registerAuth, type ApiTls } from './auth';
import { codecCorsOrigins, registerCodecRoutes } from './codec';
import {
  API_PREFIX,
  AssessBodySchema,
  AssessmentSchema,
  ControlResultSchema,
  CreateMigrationSchema,
  ErrorSchema,
  HealthSchema,
  IdParamsSchema,
  ListQuerySchema,
  StatusPageQuerySchema,
  MigrationDetailSchema,
  MigrationListSchema,
  MigrationSchema,
  MigrationStatusSchema,
  OPENAPI_INFO,
  type CreateMigrationBody,
} from './openapi';
import {
  ConflictError,
  connectTemporal,
  failureMessage,
  InputError,
  listQuery,
  phaseOf,
  queryStatus,
  resultOf,
  startMigration,
  stateOf,
  TemporalUnavailableError,
  workflowTaskProblem,
  type MigrationMemo,
  type MigrationState,
  type TemporalContext,
} from './temporal';

export interface ApiOptions {
  temporal: TemporalContext;
  /** Task queue new migrations go to (default: TEMPORAL_TASK_QUEUE). */
  taskQueue?: string;
  /** Browser origins allowed to call the codec endpoint (default: PG_DTS_CODEC_CORS_ORIGINS or the usual UI origins). */
  corsOrigins?: string[];
  /** Fastify's (pino) logger: request lines and errors, never request bodies. Default off. */
  logger?: boolean | { level?: string; stream?: { write(line: string): void } };
  /**
   * Bearer token every request must carry (client/auth.ts); default PG_DTS_API_TOKEN / PG_DTS_API_TOKEN_FILE.
   * null: none (loopback Host names only).
   */
  token?: string | null;
  /** HTTPS, and with a client CA mutual TLS (client/auth.ts apiTlsFromEnv); default none. */
  tls?: ApiTls;
  /** Deadline of a status query (a query waits for a worker). Default 10 s. */
  queryTimeoutMs?: number;
  /** Deadline of all Temporal calls of one request (at least the query's + 5 s). Default 20 s. */
  requestTimeoutMs?: number;
}

/** The REST body (seed field names) as a MigrationSpec. */
export function toMigrationSpec(b: CreateMigrationBody): MigrationSpecInput {
  const conn = (d: CreateMigrationBody['source_db']) => ({
    host: d.host,
    port: d.port ?? 5432,
    user: d.user,
    database: d.dbname,
    ...(d.password ? { password: d.password } : {}),
    ...(d.sslmode ? { sslmode: d.sslmode } : {}),
  });
  const spec: MigrationSpecInput = { source: conn(b.source_db), target: conn(b.target_db) };
  if (b.tables) spec.tables = b.tables;
  if (b.table_suffix !== undefined) spec.tableSuffix = b.table_suffix;
  if (b.schemas) spec.schemas = b.schemas;
  if (b.schema_mapping) spec.schemaMapping = b.schema_mapping;
  if (b.cutover !== undefined || b.max_lag_bytes !== undefined) {
    spec.cutover = { mode: b.cutover ?? 'auto', ...(b.max_lag_bytes !== undefined ? { maxLagBytes: b.max_lag_bytes } : {}) };
  }
  if (b.after_cutover) spec.afterCutover = b.after_cutover;
  if (b.mode) spec.mode = b.mode;
  if (b.parallelism !== undefined) spec.parallelism = b.parallelism;
  if (b.keep_target_on_cancel !== undefined) (spec as Record<string, unknown>).keepTargetOnCancel = b.keep_target_on_cancel;
  if (b.notify) {
    const { url, events, lag_bytes: lagBytes, retained_wal_bytes: retainedWalBytes } = b.notify;
    spec.notify = { url, ...(events ? { events } : {}), ...(lagBytes !== undefined ? { lagBytes } : {}), ...(retainedWalBytes !== undefined ? { retainedWalBytes } : {}) };
  }
  return spec;
}

const SPEC_TO_BODY: Array<[RegExp, string]> = [
  [/^source\.database\b/, 'source_db.dbname'],
  [/^target\.database\b/, 'target_db.dbname'],
  [/^source\b/, 'source_db'],
  [/^target\b/, 'target_db'],
  [/^tableSuffix\b/, 'table_suffix'],
  [/^schemaMapping\b/, 'schema_mapping'],
  [/^cutover\.maxLagBytes\b/, 'max_lag_bytes'],
  [/^cutover\b/, 'cutover'],
  [/^afterCutover\b/, 'after_cutover'],
  [/^keepTargetOnCancel\b/, 'keep_target_on_cancel'],
  [/^notify\.lagBytes\b/, 'notify.lag_bytes'],
  [/^notify\.retainedWalBytes\b/, 'notify.retained_wal_bytes'],
];

/** The body field a SpecError is about ("invalid migration spec: tableSuffix: ..." → table_suffix). */
export function fieldOfSpecError(message: string): string | undefined {
  if (/^table name /.test(message) || /^invalid migration spec: tables\b/.test(message)) return 'tables';
  const m = /^invalid migration spec: ([A-Za-z0-9_.]+):/.exec(message);
  if (!m) return undefined;
  const path = m[1]!;
  for (const [re, to] of SPEC_TO_BODY) if (re.test(path)) return path.replace(re, to);
  return path;
}

/** The status query's answer in the response's (open-ended) shape, with the state. */
const statusBody = (status: MigrationStatus, state: MigrationState) => ({ ...status, state }) as unknown as z.infer<typeof MigrationStatusSchema>;

const httpError = (reply: FastifyReply, code: number, error: string, field?: string) =>
  reply.code(code).send(field ? { error: boundedText(error), field: boundedText(field, 200) } : { error: boundedText(error) });

const TERMINAL_STATES: MigrationState[] = ['completed', 'failed', 'cancelled', 'terminated', 'timed_out'];

export async function buildApi(opts: ApiOptions): Promise<FastifyInstance> {
  const ctx = opts.temporal;
  const queryTimeoutMs = opts.queryTimeoutMs ?? 10_000;
  const token = opts.token === undefined ? apiTokenFromEnv() : (opts.token ?? undefined);
  const corsOrigins = opts.corsOrigins ?? codecCorsOrigins();
  const mutualTls = opts.tls?.requestCert === true;
  const app = await createApp(opts, { token, mutualTls, corsOrigins });
  const r: Routes = {
    api: typed(app),
    ctx,
    taskQueue: opts.taskQueue ?? ctx.settings.taskQueue,
    queryTimeoutMs,
    requestTimeoutMs: Math.max(opts.requestTimeoutMs ?? 20_000, queryTimeoutMs + 5000),
    token,
    mutualTls,
  };
  createRoute(r);
  listRoute(r);
  detailRoute(r);
  statusRoute(r);
  for (const [action, summary] of ACTIONS) actionRoute(r, action, summary);
  assessRoute(r);
  healthRoute(r);
  app.get(`${API_PREFIX}/openapi.json`, { schema: { hide: true } }, async () => app.swagger());
  await registerCodecRoutes(app, { codec: ctx.codec, corsOrigins, namespace: ctx.settings.namespace });
  return app;
}

const typed = (app: FastifyInstance) => app.withTypeProvider<ZodTypeProvider>();

/** What every route needs: the typed app, Temporal, and the request's limits. */
interface Routes {
  api: ReturnType<typeof typed>;
  ctx: TemporalContext;
  taskQueue: string;
  queryTimeoutMs: number;
  requestTimeoutMs: number;
  token: string | undefined;
  mutualTls: boolean;
}

/** The server with its authentication, OpenAPI description and errors as JSON; no routes yet. */
async function createApp(opts: ApiOptions, auth: { token: string | undefined; mutualTls: boolean; corsOrigins: string[] }): Promise<FastifyInstance> {
  // Fastify types an HTTPS instance apart; the routes are the same.
  const app = (opts.tls ? Fastify({ logger: opts.logger ?? false, https: opts.tls }) : Fastify({ logger: opts.logger ?? false })) as unknown as FastifyInstance;
  registerAuth(app, { token: auth.token, mutualTls: auth.mutualTls, allowedOrigins: auth.corsOrigins, publicPaths: [`${API_PREFIX}/health`, `${API_PREFIX}/openapi.json`] });
  app.setValidatorCompiler(validatorCompiler);
  app.setSerializerCompiler(serializerCompiler);
  await app.register(swagger, {
    openapi: {
      openapi: '3.1.0',
      info: OPENAPI_INFO,
      tags: [{ name: 'migrations' }, { name: 'service' }],
      components: { securitySchemes: { bearerAuth: { type: 'http', scheme: 'bearer', description: 'PG_DTS_API_TOKEN' } } },
      security: [{ bearerAuth: [] }],
    },
    transform: jsonSchemaTransform,
    transformObject: jsonSchemaTransformObject,
  });
  app.setErrorHandler((err: FastifyError, req, reply) => {
    if (hasZodFastifySchemaValidationErrors(err)) {
      const where = err.validationContext ?? 'body';
      const problems = err.validation.map((v) => {
        const keys = (v.params as { keys?: string[] }).keys;
        const path = v.instancePath.replace(/^\//, '').split('/').filter(Boolean);
        const field = [...path, ...(keys?.length ? [keys[0]!] : [])].join('.') || where;
        return { field, message: keys?.length ? `unknown field${keys.length > 1 ? 's' : ''} ${keys.join(', ')}` : v.message };
      });
      return httpError(reply, 400, problems.map((p) => `${p.field}: ${p.message}`).join('; '), problems[0]!.field);
    }
    if (typeof err.code === 'string' && err.code.startsWith('FST_ERR_CTP_')) {
      return httpError(reply, err.statusCode ?? 400, err.message, 'body');
    }
    return sendError(opts.temporal, reply, err, req.log);
  });
  return app;
}

/** A route's failure as its HTTP answer: 400 for bad input, 404, 409, 503 when Temporal is away, else 500. */
function sendError(ctx: TemporalContext, reply: FastifyReply, err: unknown, log: FastifyInstance['log']) {
  if (err instanceof WorkflowNotFoundError) return httpError(reply, 404, `no migration with id ${err.workflowId}`);
  if (err instanceof InputError) return httpError(reply, 400, err.message, err.field);
  if (err instanceof SpecError) {
    const field = fieldOfSpecError(err.message);
    const message = err.message.replace(/^invalid migration spec: /, '');
    return httpError(reply, 400, field && !message.startsWith(`${field}:`) ? `${field}: ${message}` : message, field);
  }
  if (err instanceof ConflictError) return httpError(reply, 409, err.message);
  if (err instanceof TemporalUnavailableError) return httpError(reply, 503, err.message);
  const grpc = grpcCode(err);
  if (grpc === 4) return httpError(reply, 503, `Temporal at ${ctx.settings.address} did not answer in time`);
  if (grpc === 14) return httpError(reply, 503, `cannot reach Temporal at ${ctx.settings.address}`);
  log.error({ err: { name: (err as Error)?.name, message: (err as Error)?.message } }, 'request failed');
  return httpError(reply, 500, `internal error: ${(err as Error)?.message ?? String(err)}`);
}

/** Every request's Temporal calls share one deadline: an unreachable server gives 503, not a hang. */
const inTime = <T>(r: Routes, fn: () => Promise<T>): Promise<T> => r.ctx.connection.withDeadline(Date.now() + r.requestTimeoutMs, fn);

/** The migration's execution; 404 for an id that is not a migration (another workflow type). */
async function describe(r: Routes, id: string): Promise<WorkflowExecutionDescription> {
  const d = await r.ctx.client.workflow.getHandle(id).describe();
  if (d.type !== WORKFLOW_TYPE) throw new WorkflowNotFoundError(`${id} is not a migration`, id, d.runId);
  return d;
}

/** The status query, or undefined when no worker answers in time. */
async function tryStatus(r: Routes, id: string, timeoutMs = r.queryTimeoutMs, page?: StatusPage): Promise<MigrationStatus | undefined> {
  try {
    return await queryStatus(r.ctx, r.ctx.client.workflow.getHandle(id), timeoutMs, page);
  } catch (err) {
    if (err instanceof WorkflowNotFoundError) throw err;
    return undefined;
  }
}

/** One migration as the API shows it, from Temporal's view of its execution and (if known) its status. */
function resource(info: WorkflowExecutionInfo | WorkflowExecutionDescription, status?: MigrationStatus) {
  const memo = (info.memo ?? {}) as Partial<MigrationMemo>;
  const phase = status?.phase ?? phaseOf(info);
  return {
    id: info.workflowId,
    runId: info.runId,
    state: stateOf(info.status.name, phase, status),
    phase,
    temporalStatus: info.status.name,
    source: memo.source ?? null,
    target: memo.target ?? null,
    tables: memo.tables ?? null,
    createdAt: info.startTime.toISOString(),
    closedAt: info.closeTime?.toISOString() ?? null,
    links: { self: `${API_PREFIX}/migrations/${encodeURIComponent(info.workflowId)}`, status: `${API_PREFIX}/migrations/${encodeURIComponent(info.workflowId)}/status` },
  };
}

const errors = { 400: ErrorSchema, 401: ErrorSchema, 403: ErrorSchema, 404: ErrorSchema, 409: ErrorSchema, 503: ErrorSchema };

/** POST /migrations: created paused; nothing changes on either server until /start. */
function createRoute(r: Routes): void {
  r.api.post(
    `${API_PREFIX}/migrations`,
    {
      schema: {
        tags: ['migrations'],
        summary: 'Create a migration (paused: nothing changes until /start)',
        body: CreateMigrationSchema,
        response: { 201: MigrationSchema, ...errors },
      },
    },
    (req, reply) =>
      inTime(r, async () => {
        const spec = toMigrationSpec(req.body);
        const { workflowId } = await startMigration(r.ctx.client, spec, {
          taskQueue: r.taskQueue,
          workflowId: req.body.id,
          paused: true,
          encrypted: r.ctx.codec !== undefined,
          fieldNames: { source: 'source_db', target: 'target_db' },
        });
        const d = await describe(r, workflowId);
        const res = resource(d);
        return reply
          .code(201)
          .header('location', res.links.self)
          .send({ ...res, state: 'created' as const });
      }),
  );
}

function listRoute(r: Routes): void {
  r.api.get(
    `${API_PREFIX}/migrations`,
    {
      schema: {
        tags: ['migrations'],
        summary: 'List migrations, newest first',
        querystring: ListQuerySchema,
        response: { 200: MigrationListSchema, ...errors },
      },
    },
    (req) =>
      inTime(r, async () => {
        const { client } = r.ctx;
        const { limit, offset, phase } = req.query;
        const query = listQuery(phase);
        const page: WorkflowExecutionInfo[] = [];
        let i = 0;
        for await (const wf of client.workflow.list({ query, pageSize: Math.min(1000, offset + limit) })) {
          if (i++ < offset) continue;
          page.push(wf);
          if (page.length >= limit) break;
        }
        const [{ count }, statuses] = await Promise.all([
          client.workflow.count(query),
          // Paused or merely created is only known to the workflow: ask the running ones.
          Promise.all(page.map((wf) => (wf.status.name === 'RUNNING' ? tryStatus(r, wf.workflowId, 3000).catch(() => undefined) : undefined))),
        ]);
        return { migrations: page.map((wf, k) => resource(wf, statuses[k])), total: count, limit, offset };
      }),
  );
}

function detailRoute(r: Routes): void {
  r.api.get(
    `${API_PREFIX}/migrations/:id`,
    {
      schema: {
        tags: ['migrations'],
        summary: 'One migration: state, status, and its report or error once it has ended',
        params: IdParamsSchema,
        response: { 200: MigrationDetailSchema, ...errors },
      },
    },
    (req) =>
      inTime(r, async () => {
        const { ctx } = r;
        const d = await describe(r, req.params.id);
        const status = await tryStatus(r, req.params.id);
        const base = resource(d, status);
        let report: MigrationReport | null = null;
        let error: string | null = status?.error ?? null;
        if (!status && d.status.name === 'RUNNING') error = (await workflowTaskProblem(ctx, req.params.id).catch(() => undefined)) ?? null;
        if (TERMINAL_STATES.includes(base.state)) {
          try {
            report = await resultOf(ctx, ctx.client.workflow.getHandle(req.params.id));
          } catch (err) {
            error ??= failureMessage(err);
          }
        }
        return { ...base, report: report as Record<string, unknown> | null, status: status ? statusBody(status, base.state) : null, error };
      }),
  );
}

function statusRoute(r: Routes): void {
  r.api.get(
    `${API_PREFIX}/migrations/:id/status`,
    {
      schema: {
        tags: ['migrations'],
        summary: 'The workflow\'s status query: phase, paused, totals, a page of per-table progress, replication lag',
        params: IdParamsSchema,
        querystring: StatusPageQuerySchema,
        response: { 200: MigrationStatusSchema, ...errors },
      },
    },
    (req, reply) =>
      inTime(r, async () => {
        const d = await describe(r, req.params.id);
        const { offset, limit } = req.query;
        const status = await tryStatus(r, req.params.id, r.queryTimeoutMs, offset !== undefined || limit !== undefined ? { offset, limit } : undefined);
        if (!status) {
          const problem = await workflowTaskProblem(r.ctx, req.params.id).catch(() => undefined);
          if (problem) return httpError(reply, 503, problem);
          return httpError(reply, 503, `no worker answered the status query within ${r.queryTimeoutMs / 1000} s: is a worker polling task queue ${d.taskQueue}?`);
        }
        return statusBody(status, stateOf(d.status.name, status.phase, status));
      }),
  );
}

type Action = 'start' | 'pause' | 'resume' | 'cancel' | 'cutover' | 'commit' | 'rollback';
const ACTIONS: Array<[Action, string]> = [
  ['start', 'Start a created migration'],
  ['pause', 'Pause (refused while source writes are stopped for the cutover)'],
  ['resume', 'Resume a paused migration'],
  ['cancel', 'Cancel: stop, clean up the source, drop the target tables created (unless keep_target_on_cancel)'],
  ['cutover', 'Cut over now (manual cutover mode)'],
  ['commit', 'afterCutover "reverse", in FALLBACK_READY: stay on the target (the reverse replication is dropped, the source stays fenced)'],
  ['rollback', 'afterCutover "reverse", in FALLBACK_READY: move back to the source with every write made on the target (the target is fenced)'],
];

/** POST /migrations/{id}/{action}: the action's signal, once the migration's state allows it. */
function actionRoute(r: Routes, action: Action, summary: string): void {
  r.api.post(
    `${API_PREFIX}/migrations/:id/${action}`,
    {
      schema: { tags: ['migrations'], summary, params: IdParamsSchema, response: { 202: ControlResultSchema, ...errors } },
    },
    (req, reply) =>
      inTime(r, async () => {
        const id = req.params.id;
        const d = await describe(r, id);
        if (d.status.name !== 'RUNNING') {
          throw new ConflictError(`migration ${id} has ended (${stateOf(d.status.name, phaseOf(d))}): nothing to ${action}`);
        }
        const status = await tryStatus(r, id);
        const { signal, message } = controlSignal(id, action, stateOf(d.status.name, status?.phase ?? phaseOf(d), status), status);
        await r.ctx.client.workflow.getHandle(id).signal(signal);
        return reply.code(202).send({ id, action, signal, message });
      }),
  );
}

/** Which signal an action sends and what it answers; a ConflictError when the state refuses it. */
function controlSignal(id: string, action: Action, state: MigrationState, status: MigrationStatus | undefined): { signal: string; message: string } {
  if (action === 'start') {
    if (!status) throw new TemporalUnavailableError(`no worker answered the status query: cannot tell whether ${id} has started`);
    if (state !== 'created') throw new ConflictError(`migration ${id} has already started (${state}, phase ${status.phase})`);
    return { signal: 'resume', message: 'started' };
  }
  let message = `${action} sent`;
  if (action === 'pause' || action === 'resume') {
    if (action === 'pause' && state === 'created') throw new ConflictError(`migration ${id} has not started yet: POST ${API_PREFIX}/migrations/${id}/start`);
    if (status) {
      const effect = applySignal(status, action);
      if (action === 'pause' && effect.paused !== true) throw new ConflictError(effect.lastControl ?? `pause refused in ${status.phase}`);
      message = effect.lastControl ?? message;
    }
  }
  return { signal: action, message };
}

function assessRoute(r: Routes): void {
  r.api.post(
    `${API_PREFIX}/assess`,
    {
      schema: {
        tags: ['migrations'],
        summary: "Check every precondition of a migration at once, read-only, from this server (its PG_DTS_ALLOWED_HOSTS applies); ok is false when any would refuse it",
        body: AssessBodySchema,
        response: { 200: AssessmentSchema, ...errors },
      },
    },
    async (req) => {
      const { wal_sample_seconds: walSampleSeconds, ...body } = req.body;
      const spec = toMigrationSpec(body);
      return assess(spec, { walSampleSeconds, ...(body.id ? { migrationId: migrationIdOf(spec, body.id) } : {}) });
    },
  );
}

function healthRoute(r: Routes): void {
  r.api.get(
    `${API_PREFIX}/health`,
    {
      schema: {
        tags: ['service'],
        summary: 'Temporal reachable and a worker polling the task queue (503 otherwise)',
        response: { 200: HealthSchema, 503: HealthSchema },
      },
    },
    (req, reply) =>
      inTime(r, async () => {
        const body = await health(r);
        const code = body.status === 'ok' ? 200 : 503;
        // Addresses, pollers and key ids are for those who may use the API; others learn up or down.
        if (!isAuthenticated(req, r.token, r.mutualTls)) return reply.code(code).send({ status: body.status });
        if (body.temporal.error) body.temporal.error = boundedText(body.temporal.error);
        return reply.code(code).send(body);
      }),
  );
}

/** Temporal reachable within 5 s, and workers polling the task queue for workflow and activity tasks. */
async function health(r: Routes) {
  const { ctx, taskQueue } = r;
  const body = {
    status: 'ok' as 'ok' | 'unavailable',
    temporal: { address: ctx.settings.address, namespace: ctx.settings.namespace, reachable: false } as {
      address: string;
      namespace: string;
      reachable: boolean;
      error?: string;
    },
    taskQueue,
    workers: { workflowPollers: 0, activityPollers: 0 },
    payloadEncryption: ctx.codec ? { enabled: true, keyId: ctx.codec.keyId } : { enabled: false },
  };
  try {
    await ctx.connection.withDeadline(Date.now() + 5000, async () => {
      const pollers = async (type: temporal.api.enums.v1.TaskQueueType) =>
        (
          await ctx.connection.workflowService.describeTaskQueue({
            namespace: ctx.settings.namespace,
            taskQueue: { name: taskQueue, kind: temporal.api.enums.v1.TaskQueueKind.TASK_QUEUE_KIND_NORMAL },
            taskQueueType: type,
          })
        ).pollers?.length ?? 0;
      const [w, a] = await Promise.all([
        pollers(temporal.api.enums.v1.TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW),
        pollers(temporal.api.enums.v1.TaskQueueType.TASK_QUEUE_TYPE_ACTIVITY),
      ]);
      body.temporal.reachable = true;
      body.workers = { workflowPollers: w, activityPollers: a };
    });
  } catch (err) {
    body.temporal.error = (err as Error).message;
  }
  if (!body.temporal.reachable || body.workers.workflowPollers === 0 || body.workers.activityPollers === 0) body.status = 'unavailable';
  return body;
}

function grpcCode(err: unknown): number | undefined {
  for (let e = err as { cause?: unknown } | undefined, n = 0; e && n < 5; e = e.cause as typeof e, n++) {
    if (isGrpcServiceError(e)) return e.code;
  }
  return undefined;
}

/** `dts api`: serve until SIGINT/SIGTERM. */
export async function runApi(opts: { port: number; host: string; logger?: boolean }): Promise<void> {
  const token = apiTokenFromEnv();
  const tls = apiTlsFromEnv();
  assertListenAllowed(opts.host, token, tls?.requestCert === true);
  const ctx = await connectTemporal({ lazy: true });
  const app = await buildApi({ temporal: ctx, logger: opts.logger ?? true, token: token ?? null, ...(tls ? { tls } : {}) });
  await app.listen({ port: opts.port, host: opts.host });
  const enc = ctx.codec ? `payload encryption on (key id ${ctx.codec.keyId})` : 'payload encryption off (PG_DTS_CODEC_KEY not set)';
  console.error(
    `pg-dts API on ${tls ? 'https' : 'http'}://${opts.host}:${opts.port}${API_PREFIX} (OpenAPI: ${API_PREFIX}/openapi.json), Temporal ${ctx.settings.address} ` +
      `namespace ${ctx.settings.namespace}, task queue ${ctx.settings.taskQueue}; ${enc}; ` +
      [tls?.requestCert ? 'mutual TLS' : tls ? 'HTTPS' : '', token ? 'requests need the bearer token' : tls?.requestCert ? '' : 'no API token: loopback requests only']
        .filter(Boolean)
        .join(', '),
  );
  await new Promise<void>((resolve) => {
    const stop = () => resolve();
    process.once('SIGINT', stop);
    process.once('SIGTERM', stop);
  });
  await app.close();
  await ctx.close();
}

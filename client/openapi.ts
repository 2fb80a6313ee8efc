/**
 * The REST API's request and response shapes (zod), from which Fastify validates requests and
 * @fastify/swagger builds the OpenAPI description served at /api/v1/openapi.json. The request body
 * is the seed service's: `source_db` / `target_db` with host, port, user, password, dbname, sslmode;
 * `tables`; `table_suffix` — plus optional fields for the rest of the MigrationSpec.
 */
import { z } from 'zod';
import { PHASES } from '../workflows/contract';
import { NOTIFY_EVENTS } from '../activities/spec';

export const API_PREFIX = '/api/v1';

export const OPENAPI_INFO = {
  title: 'pg-dts',
  version: '1.0.0',
  description: [
    'PostgreSQL-to-PostgreSQL online migrations run as Temporal workflows (`migrationWorkflow`).',
    'Every migration is a workflow execution: this API keeps no database of its own, it reads Temporal',
    '(visibility, describe, the `status` query) and acts through signals.',
    '',
    'A migration is *created* paused: its spec is checked, and nothing runs (not even the read-only',
    'preflight, which needs the databases) until `POST /migrations/{id}/start`.',
    '',
    'Passwords in `source_db`/`target_db` are accepted only when payload encryption is on',
    '(`PG_DTS_CODEC_KEY` set for the API and every worker); they never appear in responses. Without a',
    'key, leave them out and give the workers a pgpass file.',
    '',
    '**Authentication.** With `PG_DTS_API_TOKEN` (or `PG_DTS_API_TOKEN_FILE`) set, every request, the codec',
    'endpoint\'s included, carries `Authorization: Bearer <token>` (or the API runs mutual TLS:',
    '`PG_DTS_API_TLS_CLIENT_CA`, a client certificate then authenticates); anyone may GET `/health` (its `status`',
    'only) and this document. Without a token the API answers only requests whose Host is a loopback name,',
    'and `dts api` refuses to listen on another address. A POST whose `Origin` is neither this server nor',
    'one of `PG_DTS_CODEC_CORS_ORIGINS` is refused (403): no cross-site form posts, no DNS rebinding.',
    '',
    '**Where the workers connect.** `PG_DTS_ALLOWED_HOSTS` on the workers (comma-separated host names,',
    '`host:port`, IP addresses or CIDRs such as `10.0.0.0/8`, and unix-socket directories) limits the servers a',
    'migration may name; unset, any TCP host but link-local addresses (169.254.0.0/16, fe80::/10). Unix',
    'sockets and link-local addresses are refused unless listed. A server that asks for a clear-text',
    'password without TLS gets none. A connection that fails is reported as "cannot connect to host:port", with a fixed reason for a failed authentication or a missing database, never the server\'s own text.',
  ].join('\n'),
};

const identifier = z.string().min(1).max(63);

export const DbConnectionSchema = z
  .strictObject({
    host: z.string().min(1).describe('server host name or address'),
    port: z.coerce.number().int().min(1).max(65535).optional().describe('default 5432'),
    user: z.string().min(1),
    password: z.string().optional().describe('write-only; needs payload encryption (PG_DTS_CODEC_KEY)'),
    dbname: z.string().min(1),
    sslmode: z.enum(['disable', 'allow', 'prefer', 'require', 'verify-ca', 'verify-full']).optional(),
  })
  .meta({ id: 'DbConnection' });

export const CreateMigrationSchema = z
  .strictObject({
    source_db: DbConnectionSchema,
    target_db: DbConnectionSchema,
    tables: z
      .array(z.string().min(1))
      .min(1)
      .optional()
      .describe('only these tables ("schema.table", or unqualified for the first schema); default: every table in `schemas`'),
    table_suffix: z
      .string()
      .max(30)
      .regex(/^[A-Za-z0-9_]*$/, 'may only contain letters, digits and underscores')
      .optional()
      .describe('appended to every target table name: users -> users_migrated'),
    schemas: z.array(identifier).min(1).optional().describe('default ["public"]'),
    schema_mapping: z.record(identifier, identifier).optional().describe('source schema -> target schema'),
    cutover: z.enum(['auto', 'manual']).optional().describe('auto (default): cut over once the lag is small; manual: wait for POST /cutover'),
    max_lag_bytes: z.number().int().min(0).optional().describe('auto cutover threshold (default 1 MiB)'),
    after_cutover: z.enum(['restore-writes', 'keep-source-read-only', 'reverse']).optional(),
    mode: z.enum(['online', 'offline']).optional(),
    parallelism: z.number().int().min(1).max(64).optional(),
    keep_target_on_cancel: z.boolean().optional(),
    notify: z
      .strictObject({
        url: z.string().describe('http(s) URL, without user or password; must be allowed by PG_DTS_ALLOWED_HOSTS on the workers when that is set'),
        events: z.array(z.enum(NOTIFY_EVENTS)).min(1).optional().describe('default: every event (lag and retained-wal need their threshold)'),
        lag_bytes: z.number().int().min(0).optional(),
        retained_wal_bytes: z.number().int().min(0).optional(),
      })
      .optional()
      .describe('webhook: one JSON POST per event, without secrets'),
    id: z
      .string()
      .regex(/^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$/, 'letters, digits, ".", "_" and "-" (at most 100, starting with a letter or digit)')
      .optional()
      .describe('workflow id; default migration-<uuid>'),
  })
  .meta({ id: 'CreateMigration' });
export type CreateMigrationBody = z.infer<typeof CreateMigrationSchema>;

export const ErrorSchema = z
  .object({
    error: z.string(),
    field: z.string().optional().describe('the request field at fault, e.g. source_db.host'),
  })
  .meta({ id: 'Error' });

const StateSchema = z
  .enum(['created', 'running', 'paused', 'completed', 'failed', 'cancelled', 'terminated', 'timed_out'])
  .describe('created: paused before any change, waiting for /start');
const PhaseSchema = z.enum(PHASES);

export const TableStatusSchema = z.looseObject({
  source: z.string(),
  target: z.string(),
  state: z.string(),
  rowsCopied: z.number(),
  rowsTotal: z.number().optional(),
});

export const MigrationStatusSchema = z
  .looseObject({
    state: StateSchema,
    migrationId: z.string(),
    phase: PhaseSchema,
    paused: z.boolean(),
    mode: z.string(),
    tables: z.array(TableStatusSchema),
    replication: z.looseObject({ confirmedLsn: z.string(), lagBytes: z.number() }).optional(),
    cutover: z.looseObject({}).optional(),
    notices: z.array(z.string()),
    lastControl: z.string().optional(),
    error: z.string().optional(),
  })
  .describe('the workflow\'s `status` query, with the migration\'s state')
  .meta({ id: 'MigrationStatus' });

export const MigrationSchema = z
  .object({
    id: z.string().describe('the workflow id'),
    runId: z.string(),
    state: StateSchema,
    phase: PhaseSchema.nullable().describe('the MigrationPhase search attribute'),
    temporalStatus: z.string().describe('Temporal execution status: RUNNING, COMPLETED, FAILED, ...'),
    source: z.string().nullable().describe('user@host:port/dbname (never a password)'),
    target: z.string().nullable(),
    tables: z.array(z.string()).nullable().describe('requested tables; null: every table in the schemas'),
    createdAt: z.string(),
    closedAt: z.string().nullable(),
    links: z.object({ self: z.string(), status: z.string() }),
  })
  .meta({ id: 'Migration' });

export const MigrationDetailSchema = MigrationSchema.extend({
  status: MigrationStatusSchema.nullable().describe('the status query; null while no worker answers'),
  report: z.looseObject({}).nullable().describe('the workflow result, once it has ended normally'),
  error: z.string().nullable(),
}).meta({ id: 'MigrationDetail' });

export const MigrationListSchema = z
  .object({
    migrations: z.array(MigrationSchema),
    total: z.number().int(),
    limit: z.number().int(),
    offset: z.number().int(),
  })
  .meta({ id: 'MigrationList' });

export const ControlResultSchema = z
  .object({
    id: z.string(),
    action: z.enum(['start', 'pause', 'resume', 'cancel', 'cutover', 'commit', 'rollback']),
    signal: z.string().describe('the signal sent to the workflow'),
    message: z.string(),
  })
  .meta({ id: 'ControlResult' });

export const HealthSchema = z
  .object({
    status: z.enum(['ok', 'unavailable']),
    // The rest only for authenticated callers.
    temporal: z.object({ address: z.string(), namespace: z.string(), reachable: z.boolean(), error: z.string().optional() }).optional(),
    taskQueue: z.string().optional(),
    workers: z.object({ workflowPollers: z.number().int(), activityPollers: z.number().int() }).optional(),
    payloadEncryption: z.object({ enabled: z.boolean(), keyId: z.string().optional() }).optional(),
  })
  .describe('Without a valid token (when one is configured) only `status`')
  .meta({ id: 'Health' });

export const IdParamsSchema = z.object({ id: z.string().min(1).max(1000) });

/** A page of the status's tables (the workflow follows at most 200 one by one; totals are in `progress`). */
export const StatusPageQuerySchema = z.object({
  offset: z.coerce.number().int().min(0).max(1_000_000).optional(),
  limit: z.coerce.number().int().min(1).max(1_000).optional(),
});

export const ListQuerySchema = z.object({
  limit: z.coerce.number().int().min(1).max(100).default(20),
  offset: z.coerce.number().int().min(0).max(100_000).default(0),
  phase: PhaseSchema.optional().describe('only migrations in this phase (MigrationPhase search attribute)'),
});

export const AssessBodySchema = CreateMigrationSchema.extend({
  wal_sample_seconds: z.number().int().min(0).max(60).optional().describe("seconds over which the source's WAL rate is measured (default 5; 0: not measured)"),
}).meta({ id: 'AssessRequest' });

export const AssessmentSchema = z
  .object({
    ok: z.boolean().describe('true when nothing would stop the migration (warnings aside)'),
    problems: z.array(z.string()).describe('every precondition that would refuse the migration, each on its own'),
    warnings: z.array(z.string()).describe('what would not stop it but deserves a look: skipped tables, WAL retention, long transactions'),
    source: z.string().optional().describe('host:port/dbname (never a password)'),
    target: z.string().optional(),
    mode: z.enum(['online', 'offline']).optional(),
    tables: z
      .object({
        count: z.number().int(),
        dataBytes: z.number().describe('heap and TOAST: what the copy moves'),
        indexBytes: z.number(),
        estimatedRows: z.number(),
        largest: z.array(z.object({ table: z.string(), dataBytes: z.number(), estimatedRows: z.number() })),
      })
      .optional(),
    estimate: z
      .object({
        copyBytesPerSecond: z.number().describe('assumed per copy session'),
        sessions: z.number().int(),
        copySeconds: z.number().describe('the data only: index builds and validation come on top'),
        walBytesPerSecond: z.number().optional().describe('measured on the source over walSampleSeconds'),
        walSampleSeconds: z.number().optional(),
        retainedWalBytes: z.number().optional().describe('WAL the slot would retain by the end of the copy'),
      })
      .optional(),
  })
  .meta({ id: 'Assessment' });

/**
 * The MigrationSpec: the public input of `migrationWorkflow` (users, the REST API and outside tests
 * write these field names, so they only ever grow compatibly) and its validation. Pure: no I/O, so
 * it is shared by workflow-side types, activities, the CLI and unit tests. Where each table lands on
 * the target is activities/naming.ts.
 */
import { z } from 'zod';
import { DEFAULT_MAX_WRITE_STOP_SECONDS } from '../workflows/state';
import { identifierTooLong, MAX_IDENTIFIER_BYTES, nameKey, type QualifiedName } from './naming';

/** validation.repairMaxRows when not set: few enough rows to rewrite within the bounded write stop. */
export const DEFAULT_REPAIR_MAX_ROWS = 10_000;

/** PostgreSQL's identifier limit (NAMEDATALEN - 1), in bytes: longer names are silently truncated. */

/**
 * Schemas no migration may read from or write to: the system's own (pg_catalog holds pg_authid and
 * its password hashes; PostgreSQL reserves every pg_ name) and ours (pgdts holds migrations' state).
 */
export function reservedSchema(name: string): boolean {
  return name.startsWith('pg_') || name === 'information_schema' || name === 'pgdts';
}
const RESERVED_WHY = 'is a reserved schema (pg_*, information_schema, and pgdts, which holds pg-dts\'s own state)';

const identifier = z
  .string()
  .min(1, 'must not be empty')
  .refine((s) => !identifierTooLong(s), `is longer than ${MAX_IDENTIFIER_BYTES} bytes, the PostgreSQL identifier limit`)
  .refine((s) => !s.includes('\u0000'), 'must not contain NUL characters');
const schemaName = identifier.refine((s) => !reservedSchema(s), RESERVED_WHY);
/** A role that may own what the migration creates: PUBLIC is no role, pg_* are the server's predefined roles. */
const ownerRole = identifier.refine((s) => s.toLowerCase() !== 'public' && !s.startsWith('pg_'), 'is not a role that may own objects (public, pg_*)');

/** libpq's sslmode values, weakest first (activities/db.ts gives each libpq's meaning). */
export const SSL_MODES = ['disable', 'allow', 'prefer', 'require', 'verify-ca', 'verify-full'] as const;
export type SslMode = (typeof SSL_MODES)[number];

const connObject = z
  .object({
    host: z.string().min(1).optional(),
    port: z.coerce.number().int().min(1).max(65535).optional(),
    user: z.string().min(1).optional(),
    password: z.string().optional(),
    database: z.string().min(1).optional(),
    sslmode: z.enum(SSL_MODES).optional(),
    /** Paths on the worker: the CA that signs the server's certificate ("system": the OS's roots), our client certificate and key. */
    sslrootcert: z.string().min(1).optional(),
    sslcert: z.string().min(1).optional(),
    sslkey: z.string().min(1).optional(),
  })
  .strict();

/** URI query parameters pg-dts honours; any other would be silently ignored, so it is refused. */
const URI_PARAMS = new Set(['host', 'port', 'user', 'password', 'dbname', 'sslmode', 'sslrootcert', 'sslcert', 'sslkey', 'application_name', 'connect_timeout']);

/** What is wrong with a connection URI, checked before anything connects; undefined when nothing. */
export function uriProblem(uri: string): string | undefined {
  let u: URL;
  try {
    u = new URL(uri);
  } catch {
    return 'is not a valid URI (host, or a port from 1 to 65535, and percent-encoded special characters)';
  }
  if (!/^postgres(ql)?:$/.test(u.protocol)) return 'must be a postgres:// or postgresql:// URI';
  if (u.port !== '' && Number(u.port) < 1) return `has port ${u.port}; a port is 1 to 65535`;
  for (const [k, v] of u.searchParams) {
    if (k === 'ssl') return 'has ssl=...: libpq has no such parameter; use sslmode=require, verify-ca or verify-full';
    if (!URI_PARAMS.has(k)) return `has the parameter ${JSON.stringify(k)}, which pg-dts does not support (supported: ${[...URI_PARAMS].join(', ')})`;
    if (k === 'sslmode' && !(SSL_MODES as readonly string[]).includes(v)) return `has sslmode=${v}; expected one of ${SSL_MODES.join(', ')}`;
    if (k === 'port' && !/^\d+$/.test(v)) return `has port=${v}; a port is 1 to 65535`;
    if (k === 'port' && (Number(v) < 1 || Number(v) > 65535)) return `has port=${v}; a port is 1 to 65535`;
  }
  return undefined;
}

const connection = z.union([
  z
    .string()
    .regex(/^postgres(ql)?:\/\//, 'must be a postgres:// or postgresql:// URI, or an object { host, port, user, database }')
    .superRefine((uri, ctx) => {
      const problem = uriProblem(uri);
      if (problem) ctx.addIssue({ code: z.ZodIssueCode.custom, message: problem });
    }),
  connObject,
]);

/** What a webhook (spec.notify) can be told; lag and retained-wal fire when their threshold is crossed upwards. */
export const NOTIFY_EVENTS = ['ready-for-cutover', 'completed', 'failed', 'cancelled', 'lag', 'retained-wal'] as const;
export type NotifyEvent = (typeof NOTIFY_EVENTS)[number];

/** Where a webhook may point: http(s), and no credentials in the URL (they would sit in history and logs). */
export function webhookUrlProblem(url: string): string | undefined {
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    return 'is not a valid URL';
  }
  if (u.protocol !== 'https:' && u.protocol !== 'http:') return 'must be an http:// or https:// URL';
  if (u.username || u.password) return 'must not carry a user or password: use a URL whose path or query holds the token your receiver checks';
  return undefined;
}

const notify = z
  .object({
    url: z.string().superRefine((url, ctx) => {
      const problem = webhookUrlProblem(url);
      if (problem) ctx.addIssue({ code: z.ZodIssueCode.custom, message: problem });
    }),
    /** Default: every event whose threshold is set (lag, retained-wal) and the others. */
    events: z.array(z.enum(NOTIFY_EVENTS)).min(1).optional(),
    lagBytes: z.number().int().min(0).optional(),
    retainedWalBytes: z.number().int().min(0).optional(),
  })
  .strict()
  .refine((n) => !n.events?.includes('lag') || n.lagBytes !== undefined, { message: 'events lists "lag": set lagBytes, the threshold', path: ['lagBytes'] })
  .refine((n) => !n.events?.includes('retained-wal') || n.retainedWalBytes !== undefined, {
    message: 'events lists "retained-wal": set retainedWalBytes, the threshold',
    path: ['retainedWalBytes'],
  });

/** spec.copy.splitAboveBytes's default: see the field's comment. */
export const DEFAULT_SPLIT_ABOVE_BYTES = 4 * 1024 ** 3;
export const migrationSpecSchema = z
  .object({
    source: connection,
    target: connection,
    schemas: z.array(schemaName).min(1, 'must name at least one schema').optional(),
    tables: z.array(z.string().min(1)).min(1, 'must name at least one table when given').optional(),
    tableSuffix: z
      .string()
      .max(30)
      .regex(/^[A-Za-z0-9_]*$/, 'may only contain letters, digits and underscores')
      .optional(),
    // Keys are checked in normalizeSpec: zod reports a refused record key only as "Invalid key".
    schemaMapping: z.record(z.string(), schemaName).optional(),
    cutover: z
      .object({
        mode: z.enum(['auto', 'manual']).default('auto'),
        /** auto mode: cut over once the apply is this many bytes or fewer behind the source. */
        maxLagBytes: z.number().int().min(0).default(1024 * 1024),
        /**
         * Longest time source writes may stay stopped for one cutover attempt: past it the fence lets
         * writes through on its own (no worker needed) and the migration returns to SYNCING_WAL.
         */
        maxWriteStopSeconds: z.number().int().min(5).max(3600).optional(),
      })
      .strict()
      .optional(),
    /**
     * What happens to the source once the target is the database of record: writes released
     * (default), kept stopped, or kept stopped while the target's changes flow back to it until the
     * `commit` or `rollback` signal (the fallback, FALLBACK_READY).
     */
    afterCutover: z.enum(['restore-writes', 'keep-source-read-only', 'reverse']).optional(),
    /** Online (default) streams changes from a replication slot; offline copies a quiet source once. */
    mode: z.enum(['online', 'offline']).optional(),
    /** After cutover, recreate the views, materialized views (refreshed), functions and triggers of the migrated schemas. */
    objects: z.boolean().optional(),
    /**
     * Owners and grants of what the migration creates on the target (activities/owners.ts), carried at
     * FINALIZING. Absent: with `objects`, carried to roles of the same name that exist on the target
     * (the others stay with the migration role, named in a notice). An object: carried always;
     * `map` renames roles (owners and grantees), `default` owns what a missing role owned; preflight
     * refuses a source owner with no role on the target. `false`: nothing carried.
     */
    owners: z
      .union([
        z.literal(false),
        z
          .object({
            // Keys are checked in normalizeSpec: zod reports a refused record key only as "Invalid key".
            map: z.record(z.string(), ownerRole).optional(),
            default: ownerRole.optional(),
          })
          .strict(),
      ])
      .optional(),
    /** VALIDATING (source fenced): sampled rows per table, full checksums; live: advisory check during SYNCING_WAL. */
    validation: z
      .object({
        sampleSize: z.number().int().min(0).max(1_000_000).optional(),
        checksum: z.boolean().optional(),
        live: z.boolean().optional(),
        chunkRows: z.number().int().min(1000).optional(),
        /** Rows the checksum names as differing are rewritten on the target from the source, in the fenced window. */
        repair: z.boolean().optional(),
        /** The most rows a repair may rewrite (all tables together); more differ and the migration fails, nothing written. */
        repairMaxRows: z.number().int().min(1).max(10_000_000).optional(),
      })
      .strict()
      .refine((v) => !(v.repair && v.checksum === false), { message: 'repair needs the checksum (it names the rows to repair): drop checksum: false', path: ['repair'] })
      .optional(),
    /**
     * Tables with no replica identity (no primary key) are refused unless this is true: then the
     * migration sets REPLICA IDENTITY FULL on them for its duration and restores it afterwards.
     */
    setReplicaIdentityFull: z.boolean().optional(),
    /** SYNCING_WAL continues as a new run past this many history events (advanced; default 10,000). */
    historyEventsLimit: z.number().int().min(200).max(50_000).optional(),
    /** Cancel drops the target tables the migration created unless this is true. */
    keepTargetOnCancel: z.boolean().optional(),
    /** How many table copies run at once. */
    parallelism: z.number().int().min(1).max(64).optional(),
    /**
     * Tables larger than splitAboveBytes (default 4 GiB) are copied in page ranges of about rangeBytes
     * (default 256 MiB; a multiple of `parallelism` ranges), each its own activity that any worker can run.
     * Why not lower: a whole-table copy loads with COPY FREEZE in key order, and its primary key then
     * built in 8.5 s where the same 2.5 GB table loaded in ranges took 17.8 s (unhinted rows, interleaved
     * order), while the ranges copied it only 1.04x faster on 2 cores (BENCHMARKS.md, session 4).
     */
    copy: z
      .object({
        splitAboveBytes: z.number().int().min(8192).optional(),
        rangeBytes: z.number().int().min(8192).optional(),
        /** Small tables copied by one activity on one pair of sessions (default 100). */
        batchTables: z.number().int().min(1).max(10_000).optional(),
        /**
         * A copy that has waited this long for a lock on its table (status.copying[].waiting) fails the
         * migration naming the lock and its holder; unset, it waits as long as the lock is held.
         */
        maxLockWaitSeconds: z.number().int().min(1).optional(),
      })
      .strict()
      .optional(),
    /**
     * The replication slot. `failover: true` (sources on PostgreSQL 17+) creates it as a failover slot,
     * which the source's standbys keep in sync (`sync_replication_slots`), so the migration survives a
     * failover of the source to one of them.
     */
    slot: z
      .object({
        failover: z.boolean().optional(),
        /** How long the slot's creation may wait for older transactions before the migration fails naming the oldest. */
        maxWaitSeconds: z.number().int().min(1).optional(),
      })
      .strict()
      .optional(),
    /** The WAL the replication slot retains: a warning past warnRetainedBytes, a clean stop past maxRetainedBytes. */
    wal: z
      .object({
        warnRetainedBytes: z.number().int().min(0).optional(),
        maxRetainedBytes: z.number().int().min(1).optional(),
      })
      .strict()
      .refine((w) => w.warnRetainedBytes === undefined || w.maxRetainedBytes === undefined || w.warnRetainedBytes <= w.maxRetainedBytes, {
        message: 'warnRetainedBytes must not exceed maxRetainedBytes',
      })
      .optional(),
    /** Webhook for alerts: a POST of JSON per event, sent by a worker (never a password or connection string in it). */
    notify: notify.optional(),
    /** Migration id used to name the slot and publication; defaults to the workflow id. */
    id: z
      .string()
      .regex(/^[a-z0-9_]{1,40}$/, 'may only contain lower-case letters, digits and underscores (at most 40)')
      .optional(),
  })
  .strict();

export type MigrationSpecInput = z.input<typeof migrationSpecSchema>;
export type ConnectionSpec = z.infer<typeof connection>;

export type { QualifiedName } from './naming';

export interface NormalizedSpec {
  source: ConnectionSpec;
  target: ConnectionSpec;
  schemas: string[];
  tables?: QualifiedName[];
  tableSuffix: string;
  schemaMapping: Record<string, string>;
  /** maxWriteStopSeconds is optional only for plans recorded before it existed. */
  cutover: { mode: 'auto' | 'manual'; maxLagBytes: number; maxWriteStopSeconds?: number };
  /** Optional only for plans recorded before it existed. */
  wal?: { warnRetainedBytes?: number; maxRetainedBytes?: number };
  afterCutover: 'restore-writes' | 'keep-source-read-only' | 'reverse';
  mode: 'online' | 'offline';
  parallelism: number;
  /** Optional only for plans recorded before it existed (replayed histories). */
  copy?: { splitAboveBytes: number; rangeBytes: number; batchTables?: number; maxLockWaitSeconds?: number };
  keepTargetOnCancel: boolean;
  historyEventsLimit?: number;
  setReplicaIdentityFull: boolean;
  /** repair/repairMaxRows present only when repair is asked for (plans recorded before it have neither). */
  validation: { sampleSize: number; checksum: boolean; live: boolean; chunkRows?: number; repair?: boolean; repairMaxRows?: number };
  objects: boolean;
  /** spec.owners; absent when not given (see OwnersSpec). */
  owners?: OwnersSpec;
  /** Present only when asked for (plans recorded before it have none). */
  slot?: { failover: boolean; maxWaitSeconds?: number };
  /** Present only when asked for. */
  notify?: { url: string; events?: NotifyEvent[]; lagBytes?: number; retainedWalBytes?: number };
}

/** false: nothing carried; an object: carried, every owner must exist on the target (mapped or default). */
export type OwnersSpec = false | { map: Record<string, string>; default?: string };

export class SpecError extends Error {
  override name = 'SpecError';
}

/**
 * Splits "schema.table" / "\"Sales Dept\".\"Order Items\"" / "Sales Dept.Order Items" / "orders".
 * Double quotes group a part (with "" for a literal quote); an unquoted dot separates schema and table.
 * Case is kept: identifiers are names as PostgreSQL stores them.
 */
export function parseTableName(raw: string, defaultSchema: string): QualifiedName {
  const parts: string[] = [];
  let cur = '';
  let quoted = false;
  for (let i = 0; i < raw.length; i++) {
    const ch = raw[i]!;
    if (quoted) {
      if (ch === '"') {
        if (raw[i + 1] === '"') {
          cur += '"';
          i++;
        } else quoted = false;
      } else cur += ch;
    } else if (ch === '"') {
      quoted = true;
    } else if (ch === '.') {
      parts.push(cur);
      cur = '';
    } else cur += ch;
  }
  if (quoted) throw new SpecError(`table name ${JSON.stringify(raw)} has an unterminated double quote`);
  parts.push(cur);
  if (parts.length > 2) {
    throw new SpecError(
      `table name ${JSON.stringify(raw)} has more than one unquoted dot; quote a name that contains a dot: "schema"."ta.ble"`,
    );
  }
  if (parts.some((p) => p.length === 0)) throw new SpecError(`table name ${JSON.stringify(raw)} has an empty part`);
  for (const p of parts) {
    if (identifierTooLong(p)) {
      throw new SpecError(`table name ${JSON.stringify(raw)}: ${JSON.stringify(p)} is longer than ${MAX_IDENTIFIER_BYTES} bytes`);
    }
  }
  return parts.length === 2 ? { schema: parts[0]!, name: parts[1]! } : { schema: defaultSchema, name: parts[0]! };
}

function formatIssues(err: z.ZodError): string {
  return err.issues
    .map((i) => {
      const path = i.path.length ? i.path.join('.') : '(spec)';
      return `${path}: ${i.message}`;
    })
    .join('; ');
}

/** Validates and fills defaults; throws SpecError with every problem named by its field. */
export function normalizeSpec(input: unknown): NormalizedSpec {
  if (input === null || typeof input !== 'object' || Array.isArray(input)) {
    throw new SpecError('invalid migration spec: expected a JSON object with at least "source" and "target"');
  }
  const parsed = migrationSpecSchema.safeParse(input);
  if (!parsed.success) throw new SpecError(`invalid migration spec: ${formatIssues(parsed.error)}`);
  const s = parsed.data;
  const schemas = s.schemas ?? ['public'];
  if (new Set(schemas).size !== schemas.length) throw new SpecError('invalid migration spec: schemas: duplicate schema');
  for (const key of Object.keys(s.schemaMapping ?? {})) {
    const bad = schemaName.safeParse(key);
    if (!bad.success) throw new SpecError(`invalid migration spec: schemaMapping: key ${JSON.stringify(key)} ${bad.error.issues[0]?.message ?? 'is not a schema name'}`);
  }
  for (const key of Object.keys(s.owners ? (s.owners.map ?? {}) : {})) {
    const bad = identifier.safeParse(key);
    if (!bad.success) throw new SpecError(`invalid migration spec: owners.map: key ${JSON.stringify(key)} ${bad.error.issues[0]?.message ?? 'is not a role name'}`);
  }
  const tables = s.tables?.map((t) => parseTableName(t, schemas[0]!));
  for (const t of tables ?? []) {
    if (reservedSchema(t.schema)) throw new SpecError(`invalid migration spec: tables: ${JSON.stringify(t.schema)} ${RESERVED_WHY}`);
  }
  if (s.afterCutover === 'reverse' && s.mode === 'offline') {
    throw new SpecError('invalid migration spec: afterCutover: "reverse" replicates the target\'s changes back to the source after the cutover and needs mode "online"');
  }
  if (tables) {
    const seen = new Set<string>();
    for (const t of tables) {
      const key = nameKey(t);
      if (seen.has(key)) throw new SpecError(`invalid migration spec: tables: ${t.schema}.${t.name} is listed twice`);
      seen.add(key);
    }
  }
  return {
    source: s.source,
    target: s.target,
    schemas,
    tables,
    tableSuffix: s.tableSuffix ?? '',
    schemaMapping: s.schemaMapping ?? {},
    cutover: {
      mode: s.cutover?.mode ?? 'auto',
      maxLagBytes: s.cutover?.maxLagBytes ?? 1024 * 1024,
      maxWriteStopSeconds: s.cutover?.maxWriteStopSeconds ?? DEFAULT_MAX_WRITE_STOP_SECONDS,
    },
    wal: { ...(s.wal?.warnRetainedBytes !== undefined ? { warnRetainedBytes: s.wal.warnRetainedBytes } : {}), ...(s.wal?.maxRetainedBytes !== undefined ? { maxRetainedBytes: s.wal.maxRetainedBytes } : {}) },
    afterCutover: s.afterCutover ?? 'restore-writes',
    mode: s.mode ?? 'online',
    parallelism: s.parallelism ?? 4,
    copy: {
      splitAboveBytes: s.copy?.splitAboveBytes ?? DEFAULT_SPLIT_ABOVE_BYTES,
      rangeBytes: s.copy?.rangeBytes ?? 256 * 1024 ** 2,
      ...(s.copy?.batchTables !== undefined ? { batchTables: s.copy.batchTables } : {}),
      ...(s.copy?.maxLockWaitSeconds !== undefined ? { maxLockWaitSeconds: s.copy.maxLockWaitSeconds } : {}),
    },
    keepTargetOnCancel: s.keepTargetOnCancel ?? false,
    historyEventsLimit: s.historyEventsLimit,
    setReplicaIdentityFull: s.setReplicaIdentityFull ?? false,
    objects: s.objects ?? false,
    ...(s.owners === false ? { owners: false as const } : s.owners ? { owners: { map: s.owners.map ?? {}, ...(s.owners.default ? { default: s.owners.default } : {}) } } : {}),
    ...(s.slot?.failover || s.slot?.maxWaitSeconds
      ? { slot: { failover: s.slot.failover ?? false, ...(s.slot.maxWaitSeconds ? { maxWaitSeconds: s.slot.maxWaitSeconds } : {}) } }
      : {}),
    ...(s.notify ? { notify: s.notify } : {}),
    validation: {
      sampleSize: s.validation?.sampleSize ?? 1000,
      checksum: s.validation?.checksum ?? true,
      live: s.validation?.live ?? false,
      chunkRows: s.validation?.chunkRows,
      ...(s.validation?.repair ? { repair: true, repairMaxRows: s.validation.repairMaxRows ?? DEFAULT_REPAIR_MAX_ROWS } : {}),
    },
  };
}

export function displayName(q: QualifiedName): string {
  return `${q.schema}.${q.name}`;
}

#!/usr/bin/env node
/**
 * `dts`: start and drive migrations (commander). Reads TEMPORAL_ADDRESS, TEMPORAL_NAMESPACE and
 * TEMPORAL_TASK_QUEUE like the worker, and PG_DTS_CODEC_KEY for payload encryption.
 * Exit codes: 0 ok, 1 the operation failed (or the migration it watched did not complete, or there is
 * no such migration), 2 bad usage or input (unknown command or option, unreadable or malformed spec).
 */
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { Command, CommanderError, InvalidArgumentError, Option } from 'commander';
import { isGrpcDeadlineError, WorkflowNotFoundError, type WorkflowHandle } from '@temporalio/client';
import { normalizeSpec, SpecError } from '../activities/spec';
import { PHASES, type MigrationReport, type MigrationStatus, type StatusPage } from '../workflows/contract';
import { migrationIdOf } from '../workflows/names';
import { applySignal } from '../workflows/state';
import { ApiAuthConfigError, apiTokenFromEnv, assertListenAllowed, registerAuth } from './auth';
import { CODEC_KEY_ENV, CodecKeyError, codecCorsOrigins, codecFromEnv, registerCodecRoutes } from './codec';
import { formatReport, formatStatus, StatusBars } from './format';
import { registerVerify } from './verify';
import { CleanupRefused, formatLeftover, runCleanup, runOrphans, type CleanupOptions } from './cleanup';
import {
  assertSecretsProtected,
  ConflictError,
  connectTemporal,
  failureMessage,
  InputError,
  listQuery,
  phaseOf,
  queryStatus,
  resultOf,
  workflowTaskProblem,
  startMigration,
  stateOf,
  TERMINAL_PHASES,
  type MigrationMemo,
  type TemporalContext,
} from './temporal';

export const EXIT_OK = 0;
export const EXIT_FAILED = 1;
export const EXIT_USAGE = 2;

/** Bad usage or input: exit 2. */
export class UsageError extends Error {}
/** Ends the command with this exit code; the message (if any) goes to stderr. */
class Exit extends Error {
  constructor(
    readonly code: number,
    message = '',
  ) {
    super(message);
  }
}

/** Where the CLI writes (tests capture it). */
export interface CliIo {
  out(text: string): void;
  err(text: string): void;
  /** The terminal for live progress bars; undefined when stdout is not a TTY. */
  tty?: NodeJS.WriteStream;
}

const processIo: CliIo = {
  out: (t) => process.stdout.write(`${t}\n`),
  err: (t) => process.stderr.write(`${t}\n`),
  tty: process.stdout.isTTY ? process.stdout : undefined,
};

const HELP_AFTER = `
Environment:
  TEMPORAL_ADDRESS     Temporal frontend (default localhost:7233)
  TEMPORAL_NAMESPACE   namespace (default default)
  TEMPORAL_TASK_QUEUE  task queue of the workers (default pg-migration)
  ${CODEC_KEY_ENV}     base64 of 32 bytes: encrypt workflow payloads (AES-256-GCM); the
                       same key on every client, API and worker. Needed for specs with passwords.

Exit codes:
  0  success
  1  the operation failed: Temporal unreachable, no such migration, the migration has ended,
     a refused pause, or (status --watch) the migration ended FAILED or CANCELLED
  2  bad usage or input: unknown command or option, unreadable or malformed spec
     (dts assess lists a malformed spec's problems with the others and exits 1)`;

export function readSpecFile(file: string): unknown {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    throw new UsageError(`cannot read ${file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
  }
  try {
    return JSON.parse(text);
  } catch (err) {
    throw new UsageError(`${file} is not valid JSON: ${(err as Error).message}`);
  }
}

function positiveInt(name: string, max = Number.MAX_SAFE_INTEGER) {
  return (v: string): number => {
    const n = Number(v);
    if (!/^\d+$/.test(v) || !Number.isSafeInteger(n) || n < 1 || n > max) throw new InvalidArgumentError(`${name} must be an integer from 1 to ${max}.`);
    return n;
  };
}

function nonNegativeInt(name: string, max: number) {
  return (v: string): number => {
    if (v === '0') return 0;
    try {
      return positiveInt(name, max)(v);
    } catch {
      throw new InvalidArgumentError(`${name} must be an integer from 0 to ${max}.`);
    }
  };
}

async function withTemporal<T>(fn: (ctx: TemporalContext) => Promise<T>): Promise<T> {
  let ctx: TemporalContext;
  try {
    ctx = await connectTemporal();
  } catch (err) {
    if (err instanceof CodecKeyError) throw new UsageError(err.message);
    throw err;
  }
  try {
    return await fn(ctx);
  } finally {
    await ctx.close();
  }
}

/**
 * A command's module, loaded only when that command runs (the demo pulls in the test harness, the API
 * Fastify). `require`, not `import()`: bin/dts.js runs this file through tsx's CommonJS hook.
 */
const lazy = <T>(id: string): T => require(id) as T;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function status(ctx: TemporalContext, handle: WorkflowHandle, page?: StatusPage): Promise<MigrationStatus> {
  try {
    return await queryStatus(ctx, handle, undefined, page);
  } catch (err) {
    if (err instanceof WorkflowNotFoundError) throw err;
    // A workflow task that keeps failing (a worker with another codec key) is why no answer comes.
    const problem = await workflowTaskProblem(ctx, handle.workflowId).catch(() => undefined);
    if (problem) throw new Exit(EXIT_FAILED, problem);
    if (isGrpcDeadlineError(err) || isGrpcDeadlineError((err as { cause?: unknown }).cause)) {
      throw new Exit(EXIT_FAILED, `no worker answered the status query of ${handle.workflowId} within 10 s: is a worker polling task queue ${ctx.settings.taskQueue}?`);
    }
    throw err;
  }
}

/** Fails (exit 1) when the migration's workflow is no longer running. */
async function assertRunning(handle: WorkflowHandle, action: string): Promise<void> {
  const d = await handle.describe();
  if (d.status.name !== 'RUNNING') {
    throw new Exit(EXIT_FAILED, `migration ${handle.workflowId} has ended (${stateOf(d.status.name, phaseOf(d))}): nothing to ${action}`);
  }
}

export function buildProgram(io: CliIo = processIo): Command {
  const program = new Command('dts')
    .description('PostgreSQL-to-PostgreSQL online migration on Temporal')
    .version(packageVersion(), '-V, --version')
    .configureOutput({ writeOut: (s) => io.out(s.replace(/\n$/, '')), writeErr: (s) => io.err(s.replace(/\n$/, '')) })
    .showHelpAfterError('(dts --help for usage)')
    .exitOverride()
    .addHelpText('after', HELP_AFTER);

  startCommand(program, io);
  assessCommand(program, io);
  statusCommand(program, io);
  reportCommand(program, io);
  signalCommands(program, io);
  listCommand(program, io);
  workerCommand(program, io);
  apiCommand(program, io);
  codecServerCommand(program, io);
  demoCommand(program, io);
  cleanupCommand(program, io);
  orphansCommand(program, io);
  registerVerify(program, io);
  return program;
}

function startCommand(program: Command, io: CliIo): void {

  program
    .command('start')
    .description('start a migration from a MigrationSpec file; prints the workflow id')
    .requiredOption('-c, --config <file>', 'MigrationSpec JSON file')
    .option('--id <workflowId>', 'workflow id (default: migration-<uuid>)')
    .option('--paused', 'create it paused: nothing runs, not even the preflight, until `dts resume <id>`')
    .action(async (opts: { config: string; id?: string; paused?: boolean }) => {
      const spec = readSpecFile(opts.config);
      // Refuse a malformed spec, or an unprotected password, before contacting anything.
      try {
        assertSecretsProtected(normalizeSpec(spec), codecFromEnv() !== undefined);
      } catch (err) {
        if (err instanceof SpecError || err instanceof InputError || err instanceof CodecKeyError) throw new UsageError(`${opts.config}: ${err.message}`);
        throw err;
      }
      await withTemporal(async (ctx) => {
        try {
          const { workflowId } = await startMigration(ctx.client, spec, {
            taskQueue: ctx.settings.taskQueue,
            workflowId: opts.id,
            paused: opts.paused,
            encrypted: ctx.codec !== undefined,
          });
          io.out(workflowId);
        } catch (err) {
          if (err instanceof SpecError || err instanceof InputError) throw new UsageError(`${opts.config}: ${err.message}`);
          if (err instanceof ConflictError) throw new Exit(EXIT_FAILED, err.message);
          throw err;
        }
      });
    });
}

function assessCommand(program: Command, io: CliIo): void {
  program
    .command('assess')
    .description('check every precondition of a MigrationSpec at once, read-only; exit 0 when nothing would stop it, 1 otherwise')
    .requiredOption('-c, --config <file>', 'MigrationSpec JSON file')
    .option('--id <workflowId>', 'the workflow id the migration will have: also checks that its slot, publication and fence names are free')
    .option('--json', 'print the assessment as JSON')
    .addOption(new Option('--wal-sample <seconds>', "seconds over which the source's WAL rate is measured (0: not measured)").default(5).argParser(nonNegativeInt('--wal-sample', 600)))
    .action(async (opts: { config: string; id?: string; json?: boolean; walSample: number }) => {
      const spec = readSpecFile(opts.config);
      const { assess } = lazy<typeof import('../activities/assess')>('../activities/assess');
      const { formatAssessment } = lazy<typeof import('./assess')>('./assess');
      const a = await assess(spec, { walSampleSeconds: opts.walSample, ...(opts.id ? { migrationId: migrationIdOf(spec, opts.id) } : {}) });
      io.out(opts.json ? JSON.stringify(a, null, 2) : formatAssessment(a));
      if (!a.ok) throw new Exit(EXIT_FAILED);
    });
}

function statusCommand(program: Command, io: CliIo): void {
  program
    .command('status <workflowId>')
    .description('phase, per-table progress and replication lag; --watch follows it live until it ends')
    .option('--json', 'print the status query as JSON (with --watch: one line per change)')
    .option('-w, --watch', 'follow until the migration ends; exit 0 if it COMPLETED, 1 otherwise')
    .addOption(new Option('--interval <seconds>', 'seconds between refreshes with --watch').default(2).argParser(positiveInt('--interval', 3600)))
    .addOption(new Option('--offset <n>', 'first table of the page of tables shown').argParser(positiveInt('--offset', 1_000_000)))
    .addOption(new Option('--limit <n>', 'tables shown (the workflow follows at most 200 one by one)').argParser(positiveInt('--limit', 1_000)))
    .option('--summary', 'tables counted per state, and only those in flight shown (the default with --watch on a terminal past 20 tables)')
    .action(async (workflowId: string, opts: { json?: boolean; watch?: boolean; interval: number; offset?: number; limit?: number; summary?: boolean }) => {
      await withTemporal(async (ctx) => {
        const handle = ctx.client.workflow.getHandle(workflowId);
        const page = opts.offset !== undefined || opts.limit !== undefined ? { offset: opts.offset, limit: opts.limit } : undefined;
        if (!opts.watch) {
          const s = await status(ctx, handle, page);
          io.out(opts.json ? JSON.stringify(s, null, 2) : formatStatus(s, { summary: opts.summary }));
          return;
        }
        await watchStatus(ctx, handle, page, workflowId, opts, io);
      });
    });
}

type StatusOptions = { json?: boolean; interval: number; summary?: boolean };

/** `dts status --watch`: follows the migration until it ends, then prints its report; exit 1 unless it COMPLETED (or ROLLED_BACK as asked). */
async function watchStatus(ctx: TemporalContext, handle: WorkflowHandle, page: StatusPage | undefined, workflowId: string, opts: StatusOptions, io: CliIo): Promise<void> {
  const bars = !opts.json && io.tty ? new StatusBars(io.tty, opts.summary ? { summaryOver: 0 } : {}) : undefined;
  let last = '';
  try {
    for (;;) {
      const s = await status(ctx, handle, page);
      if (bars) bars.update(s);
      else {
        const text = opts.json ? JSON.stringify(s) : formatStatus(s, { summary: opts.summary });
        if (text !== last) io.out(opts.json ? text : `${new Date().toISOString()}\n${text}\n`);
        last = text;
      }
      if (TERMINAL_PHASES.includes(s.phase)) {
        bars?.stop();
        // The end of a watch is the report, as `dts report` prints it.
        if (!opts.json) {
          const report = await resultOf(ctx, handle).catch(() => undefined);
          if (report) io.out(`\n${formatReport(report)}`);
        }
        // A rollback asked for and done (afterCutover "reverse") ended as asked.
        if (s.phase !== 'COMPLETED' && s.phase !== 'ROLLED_BACK') throw new Exit(EXIT_FAILED, `migration ${workflowId} ended ${s.phase}${s.error ? `: ${s.error}` : ''}`);
        return;
      }
      // A terminated or timed-out workflow never reaches a terminal phase: stop on its status.
      const d = await handle.describe();
      if (d.status.name !== 'RUNNING') {
        bars?.stop();
        throw new Exit(EXIT_FAILED, `migration ${workflowId} ended (Temporal status ${d.status.name}) in phase ${s.phase}`);
      }
      await sleep(opts.interval * 1000);
    }
  } finally {
    bars?.stop();
  }
}

function reportCommand(program: Command, io: CliIo): void {
  program
    .command('report <workflowId>')
    .description('the final report of a migration that has ended: per-table counts and verdicts, sequences, cutover window, durations')
    .option('--json', 'print the report as JSON')
    .action(async (workflowId: string, opts: { json?: boolean }) => {
      await withTemporal(async (ctx) => {
        const handle = ctx.client.workflow.getHandle(workflowId);
        const d = await handle.describe();
        if (d.status.name === 'RUNNING') {
          const s = await queryStatus(ctx, handle, 5000).catch(() => undefined);
          throw new Exit(EXIT_FAILED, `migration ${workflowId} is still running${s ? ` (phase ${s.phase})` : ''}: its report comes when it ends; dts status ${workflowId} shows where it is`);
        }
        let report: MigrationReport;
        try {
          report = await resultOf(ctx, handle);
        } catch (err) {
          const error = failureMessage(err);
          if (opts.json) io.out(JSON.stringify({ migrationId: workflowId, phase: 'FAILED', temporalStatus: d.status.name, error }, null, 2));
          throw new Exit(EXIT_FAILED, `migration ${workflowId} ended ${d.status.name}: ${error}`);
        }
        io.out(opts.json ? JSON.stringify(report, null, 2) : formatReport(report));
        if (report.phase !== 'COMPLETED' && report.phase !== 'ROLLED_BACK') throw new Exit(EXIT_FAILED);
      });
    });
}

function signalCommands(program: Command, io: CliIo): void {
  const signals: Array<[string, string]> = [
    ['pause', 'pause (in-flight copies stop and are redone; the apply stops, the slot keeps the WAL); refused during the cutover'],
    ['resume', 'resume a paused migration (or start one created with --paused)'],
    ['cancel', 'cancel: stop, lift any fence, drop the slot and publication, drop the target tables it created'],
    ['cutover', 'cut over now (cutover mode manual)'],
    ['commit', 'afterCutover "reverse", in FALLBACK_READY: stay on the target (the reverse replication is dropped, the source stays fenced)'],
    ['rollback', 'afterCutover "reverse", in FALLBACK_READY: move back to the source with every write made on the target (the target is fenced)'],
  ];
  for (const [name, description] of signals) {
    program
      .command(`${name} <workflowId>`)
      .description(description)
      .action(async (workflowId: string) => {
        await withTemporal(async (ctx) => {
          const handle = ctx.client.workflow.getHandle(workflowId);
          await assertRunning(handle, name);
          let note = '';
          if (name === 'pause' || name === 'resume') {
            // The workflow decides (state.ts); predict its answer to report a refusal with exit 1.
            const s = await queryStatus(ctx, handle, 5000).catch(() => undefined);
            if (s) {
              const effect = applySignal(s, name);
              if (name === 'pause' && effect.paused !== true) throw new Exit(EXIT_FAILED, `${workflowId}: ${effect.lastControl ?? 'pause refused'}`);
              note = effect.lastControl ? ` (${effect.lastControl})` : '';
            }
          }
          await handle.signal(name);
          io.out(`${name} sent to ${workflowId}${note}`);
        });
      });
  }
}

function listCommand(program: Command, io: CliIo): void {
  program
    .command('list')
    .description('list migrations (newest first): id, Temporal status, phase, start time, source -> target')
    .addOption(new Option('--phase <phase>', 'only migrations in this phase').choices([...PHASES]))
    .addOption(new Option('--limit <n>', 'at most this many').default(50).argParser(positiveInt('--limit', 10_000)))
    .option('--json', 'print JSON, one object per migration')
    .action(async (opts: { phase?: string; limit: number; json?: boolean }) => {
      await withTemporal(async (ctx) => {
        let n = 0;
        for await (const wf of ctx.client.workflow.list({ query: listQuery(opts.phase) })) {
          if (n++ >= opts.limit) break;
          const memo = (wf.memo ?? {}) as Partial<MigrationMemo>;
          const row = {
            id: wf.workflowId,
            temporalStatus: wf.status.name,
            phase: phaseOf(wf),
            startTime: wf.startTime.toISOString(),
            source: memo.source ?? null,
            target: memo.target ?? null,
          };
          io.out(opts.json ? JSON.stringify(row) : [row.id, row.temporalStatus, row.phase ?? '-', row.startTime, row.source ? `${row.source} -> ${row.target}` : ''].join('\t'));
        }
      });
    });
}

function workerCommand(program: Command, io: CliIo): void {
  program
    .command('worker')
    .description('run a worker (same as npm run worker)')
    .action(async () => {
      const { runWorker } = lazy<typeof import('../worker/main')>('../worker/main');
      await runWorker();
    });
}

function apiCommand(program: Command, io: CliIo): void {
  program
    .command('api')
    .description('serve the REST API (/api/v1, OpenAPI at /api/v1/openapi.json) and the codec endpoint (/codec)')
    .addOption(new Option('-p, --port <port>', 'port').default(8080).argParser(positiveInt('--port', 65535)))
    .option('--host <host>', 'address to listen on (0.0.0.0 for every interface)', '127.0.0.1')
    .action(async (opts: { port: number; host: string }) => {
      if (codecKeyInvalid()) throw new UsageError(codecKeyInvalid()!);
      const { runApi } = lazy<typeof import('./api')>('./api');
      await runApi({ port: opts.port, host: opts.host });
    });
}

function codecServerCommand(program: Command, io: CliIo): void {
  program
    .command('codec-server')
    .description(`serve only the codec endpoint (/codec/encode, /codec/decode) for the Temporal UI; needs ${CODEC_KEY_ENV}`)
    .addOption(new Option('-p, --port <port>', 'port').default(8081).argParser(positiveInt('--port', 65535)))
    .option('--host <host>', 'address to listen on', '127.0.0.1')
    .action(async (opts: { port: number; host: string }) => {
      let codec;
      try {
        codec = codecFromEnv();
      } catch (err) {
        throw new UsageError((err as Error).message);
      }
      if (!codec) throw new UsageError(`${CODEC_KEY_ENV} is not set: there is nothing to decode`);
      const token = apiTokenFromEnv();
      assertListenAllowed(opts.host, token);
      const Fastify = lazy<typeof import('fastify')>('fastify').default;
      const app = Fastify({ logger: true });
      registerAuth(app, { token, allowedOrigins: codecCorsOrigins(), publicPaths: [] });
      await registerCodecRoutes(app, { codec, corsOrigins: codecCorsOrigins(), namespace: process.env.TEMPORAL_NAMESPACE || 'default' });
      await app.listen({ port: opts.port, host: opts.host });
      io.err(`codec endpoint http://${opts.host}:${opts.port}/codec (key id ${codec.keyId}); CORS for ${codecCorsOrigins().join(', ')}`);
      await new Promise<void>((resolve) => {
        process.once('SIGINT', resolve);
        process.once('SIGTERM', resolve);
      });
      await app.close();
    });
}

function demoCommand(program: Command, io: CliIo): void {
  program
    .command('demo')
    .description('run a complete live migration on throwaway local servers (same as npm run demo)')
    .action(async () => {
      // Not `typeof import('./demo')`: that would compile the demo and the test harness into lib/.
      let runDemo: () => Promise<boolean>;
      try {
        ({ runDemo } = lazy<{ runDemo: () => Promise<boolean> }>('./demo'));
      } catch {
        // The demo uses the test harness, which the installed package does not carry.
        throw new Exit(EXIT_FAILED, 'the demo runs from a checkout of the repository: npm ci && npm run demo');
      }
      const ok = await runDemo();
      if (ok === false) throw new Exit(EXIT_FAILED);
    });
}

function cleanupCommand(program: Command, io: CliIo): void {
  program
    .command('cleanup <id>')
    .description("remove what a migration left (its fence first, then slot, publication, the apply's position on the target); also after terminate or failure; refused while it runs")
    .option('--source <url>', 'source URI (default: from the workflow); with it, <id> may be a migration id as dts orphans prints it')
    .option('--target <url>', 'target URI (default: from the workflow)')
    .action(async (id: string, opts: CleanupOptions) => {
      await withTemporal(async (ctx) => {
        try {
          const { migrationId, removed } = await runCleanup(ctx, id, opts);
          if (!removed.length) io.out(`nothing left by migration ${migrationId}`);
          for (const l of removed) io.out(`removed ${formatLeftover(l)}`);
        } catch (err) {
          if (err instanceof CleanupRefused) throw new Exit(EXIT_FAILED, err.message);
          throw err;
        }
      });
    });
}

function orphansCommand(program: Command, io: CliIo): void {
  program
    .command('orphans')
    .description('list slots, publications, fences and progress rows of pg-dts migrations that are no longer running')
    .requiredOption('--source <url>', 'source database URI')
    .option('--target <url>', 'target database URI')
    .option('--json', 'print JSON, one object per leftover')
    .action(async (opts: { source: string; target?: string; json?: boolean }) => {
      await withTemporal(async (ctx) => {
        const orphans = await runOrphans(ctx, opts);
        if (opts.json) for (const l of orphans) io.out(JSON.stringify(l));
        else if (!orphans.length) io.out('no leftovers of pg-dts migrations that are not running');
        else for (const l of orphans) io.out(formatLeftover(l));
      });
    });

}

function codecKeyInvalid(): string | undefined {
  try {
    codecFromEnv();
    return undefined;
  } catch (err) {
    return (err as Error).message;
  }
}

function packageVersion(): string {
  try {
    // client/ in a checkout, lib/client/ in the installed package.
    const file = [path.join(__dirname, '..', 'package.json'), path.join(__dirname, '..', '..', 'package.json')].find(
      (f) => existsSync(f) && (JSON.parse(readFileSync(f, 'utf8')) as { name?: string }).name === 'pg-dts',
    );
    return file ? (JSON.parse(readFileSync(file, 'utf8')) as { version: string }).version : '0.0.0';
  } catch {
    return '0.0.0';
  }
}

/** Runs the CLI; resolves to the exit code (never calls process.exit). */
export async function main(argv: string[], io: CliIo = processIo): Promise<number> {
  const before = process.exitCode;
  process.exitCode = undefined;
  try {
    await buildProgram(io).parseAsync(argv);
    // A command may report its outcome through process.exitCode (dts verify does).
    const code = process.exitCode;
    return typeof code === 'number' ? code : EXIT_OK;
  } catch (err) {
    if (err instanceof CommanderError) {
      if (err.exitCode === 0) return EXIT_OK;
      // commander printed the error; UsageErrors thrown from option parsers arrive wrapped.
      return EXIT_USAGE;
    }
    if (err instanceof Exit) {
      if (err.message) io.err(`dts: ${err.message}`);
      return err.code;
    }
    if (err instanceof UsageError || err instanceof CodecKeyError || err instanceof ApiAuthConfigError) {
      io.err(`dts: ${err.message}`);
      return EXIT_USAGE;
    }
    if (err instanceof WorkflowNotFoundError) {
      io.err(`dts: no such migration: ${err.workflowId}`);
      return EXIT_FAILED;
    }
    io.err(`dts: ${err instanceof Error ? err.message : String(err)}`);
    return EXIT_FAILED;
  } finally {
    process.exitCode = before;
  }
}

/**
 * Exits once stdout and stderr have taken everything written to them. A pipe to another process can be
 * non-blocking, and process.exit() right after a large write (`dts status --json` of many tables) cut
 * the output at 64 KiB.
 */
export function exitWhenFlushed(code: number): void {
  process.stdout.write('', () => process.stderr.write('', () => process.exit(code)));
}

/** `dts` from a shell (bin/dts.js): a reader that stops early (`| head`) ends the command quietly. */
export function runCli(argv: string[]): void {
  process.stdout.on('error', (err: NodeJS.ErrnoException) => {
    if (err.code === 'EPIPE') process.exit(EXIT_OK);
    throw err;
  });
  void main(argv).then(exitWhenFlushed);
}

if (require.main === module) runCli(process.argv);

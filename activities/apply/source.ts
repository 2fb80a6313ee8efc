/**
 * The apply's connections to the source (SYNCING_WAL): the replication stream (`ReplicationSource`:
 * START_REPLICATION built by us, a ReplicationFramer (framer.ts) between the socket and pg's parser,
 * backpressure, standby status updates), its monitor session (the source's WAL position, the slot's
 * confirmation and release at the end) and the slot's checks before streaming.
 *
 * pg-logical-replication 2.5.0 traps handled here and in the engine (each found the hard way; keep them
 * in mind on a library upgrade):
 * - acknowledge.auto false AND timeoutSeconds 0, or it confirms what was merely received;
 * - keepalives are answered by us, always with the durable position;
 * - without flowControl it never waits for its 'data' handlers and memory is unbounded; with it, it
 *   pays a queue entry and several promises per message and pauses the socket while any handler runs.
 *   We leave it off and do the same ourselves, cheaper: messages that need no I/O are handled in the
 *   socket callback, the rest wait in the engine's queue, and the socket is paused while that queue is
 *   over its bounds (so decoding on the source and writing to the target overlap, within bounds);
 * - its own parser turns values into JS objects with pg's global type parsers: we parse pgoutput
 *   ourselves (pgoutput.ts), values kept as PostgreSQL text;
 * - per message, pg's parser made a message object and the library an LSN string, and both copied:
 *   our plugin reads the socket itself (ReplicationFramer) and parses each XLogData message in place;
 *   the library only starts the stream and sends our standby status updates;
 * - its `acknowledge(lsn)` sends lsn + 1, so we pass the durable position minus one;
 * - a handler that throws does not stop its queue: ours never throw, they record the failure and stop;
 * - it does not escape the slot or publication names: we build START_REPLICATION ourselves.
 */
import type { Client, ClientConfig } from 'pg';
import { LogicalReplicationService } from 'pg-logical-replication';
import { clientConfigs, connect } from '../db';
import { hasPgoutputMessages, serverVersionNum } from '../pg-version';
import { sleep } from '../sleep';
import { ident } from '../sql';
import type { ConnectionSpec } from '../spec';
import { ApplyError, safeDbMessage, sqlState } from './errors';
import { ReplicationFramer } from './framer';
import { bigIntToLsn, lsnToBigInt } from './lsn';
import { parsePgoutput, type PgoutputMessage } from './pgoutput';
import type { Spool } from './spool';
import { replicationSocketOf, socketOf } from '../pg-internals';

/** A replication-protocol string literal: the walsender's grammar knows '' but not E'' escapes. */
function replString(s: string): string {
  if (s.includes('\u0000')) throw new Error('NUL in a replication command');
  return `'${s.replace(/'/g, "''")}'`;
}

export function startReplicationSql(slot: string, publication: string, startLsn: string, messages = true): string {
  lsnToBigInt(startLsn); // validates
  // publication_names is parsed like a list of SQL identifiers: quote ours so case and commas survive.
  const options = [`proto_version '1'`, `publication_names ${replString(ident(publication))}`];
  // Sources before 14 reject the option; their fence marker is a row (fenceMarkerTable) instead.
  if (messages) options.push(`messages 'true'`);
  return `START_REPLICATION SLOT ${ident(slot)} LOGICAL ${startLsn} (${options.join(', ')})`;
}

/** A change message over this size is parsed as it arrives, its values over LARGE_VALUE spooled to disk. */
export const LARGE_CHANGE = 8 * 1024 * 1024;
export const LARGE_VALUE = 256 * 1024;

/** What the replication connection delivers to the engine, straight from the socket (ReplicationFramer). */
export interface StreamSink {
  /** One pgoutput message, at WAL position `lsn`; `size` is its payload's size in bytes. */
  data(lsn: number, msg: PgoutputMessage, size: number): void;
  keepalive(walEnd: number, replyRequested: boolean): void;
}

/**
 * Structurally a pg-logical-replication plugin (the library only calls `parse` and `start`), but the
 * library's per-message path is bypassed: `start` puts a ReplicationFramer in front of pg's protocol
 * parser, which parses every CopyData message of the stream in place and hands it to the sink; pg's
 * parser and the library see only the other protocol messages (START_REPLICATION's replies, errors,
 * the end of the stream). It counts what it parsed: parsed === handled means "nothing received is
 * still waiting".
 */
class TextPgoutputPlugin {
  parsed = 0;
  private framer: ReplicationFramer | undefined;
  constructor(
    readonly options: { publication: string; spool: Spool; largeChangeBytes: number; largeValueBytes: number },
    private readonly sink: StreamSink,
  ) {}
  get name(): string {
    return 'pgoutput';
  }
  /** Large changes parsed from the socket so far. */
  get largeChanges(): number {
    return this.framer?.count ?? 0;
  }
  /** Only reached if a CopyData message got past the framer: reported, never applied. */
  parse(_buffer: Buffer): PgoutputMessage {
    return { tag: 'invalid', error: new Error('a replication message bypassed the reader') };
  }
  async start(client: Client, slotName: string, lastLsn: string): Promise<unknown> {
    const version = await serverVersionNum(client);
    this.intercept(client);
    return client.query(startReplicationSql(slotName, this.options.publication, lastLsn, hasPgoutputMessages(version)));
  }

  /**
   * Puts a ReplicationFramer between the socket and pg's protocol parser (its one 'data' listener).
   * Called while the connection is idle, before START_REPLICATION: the next byte starts a message.
   */
  private intercept(client: Client): void {
    const stream = socketOf(client);
    const listeners = stream?.listeners('data') ?? [];
    if (!stream || listeners.length !== 1) throw new ApplyError('cannot attach to the replication connection (pg changed its internals?)', { permanent: true });
    const pgParser = listeners[0] as (b: Buffer) => void;
    const sink = this.sink;
    const framer = new ReplicationFramer({
      spool: this.options.spool,
      messageThreshold: this.options.largeChangeBytes,
      valueThreshold: this.options.largeValueBytes,
      forward: (b) => pgParser.call(stream, b),
      xlog: (lsn, buf, start, end) => {
        this.parsed++;
        sink.data(lsn, parsePgoutput(buf, start, end), end - start);
      },
      large: (lsn, change, size) => {
        this.parsed++;
        sink.data(lsn, change, size);
      },
      keepalive: (walEnd, reply) => sink.keepalive(walEnd, reply),
    });
    this.framer = framer;
    stream.removeListener('data', pgParser);
    stream.on('data', (chunk: Buffer) => {
      try {
        framer.push(chunk);
      } catch (err) {
        const e = err as NodeJS.ErrnoException;
        stream.destroy(new Error(`reading the replication stream failed: ${e.message}${e.code ? ` (${e.code}, spool ${this.options.spool.dir})` : ''}`));
      }
    });
  }
}

function replicationConfig(spec: ConnectionSpec, slot: string): ClientConfig {
  // clientConfig pins TEXT_FORMAT_SETTINGS at startup: the walsender renders values with them.
  // The first attempt only: the spec is pinned (pinnedSpec) to the sslmode the monitor connected with.
  return clientConfigs(spec, { replication: 'database', applicationName: `pg-dts walsender ${slot}`.slice(0, 63) })[0]!;
}

interface SlotInfo {
  slot_type: string;
  plugin: string | null;
  database: string | null;
  active_pid: number | null;
  confirmed: string | null;
  db: string;
}

export async function readSlot(c: Client, slot: string): Promise<SlotInfo> {
  const r = await c.query<SlotInfo>(
    `SELECT s.slot_type::text, s.plugin::text, s.database::text, s.active_pid, s.confirmed_flush_lsn::text AS confirmed, current_database()::text AS db
       FROM pg_replication_slots s WHERE s.slot_name = $1`,
    [slot],
  );
  const row = r.rows[0];
  if (!row) throw new ApplyError(`replication slot ${slot} does not exist on the source`, { permanent: true });
  if (row.slot_type !== 'logical' || row.plugin !== 'pgoutput') {
    throw new ApplyError(`replication slot ${slot} is not a logical pgoutput slot (type ${row.slot_type}, plugin ${row.plugin ?? 'none'})`, { permanent: true });
  }
  if (row.database !== row.db) throw new ApplyError(`replication slot ${slot} belongs to database ${row.database ?? '?'}, not ${row.db}`, { permanent: true });
  return row;
}

export async function waitSlotFree(c: Client, slot: string, ms: number, signal: AbortSignal): Promise<void> {
  const deadline = Date.now() + ms;
  for (;;) {
    const info = await readSlot(c, slot);
    if (info.active_pid === null || signal.aborted) return;
    // Subscribing retries on "slot is active" too; this wait only avoids a burst of failed attempts.
    if (Date.now() >= deadline) return;
    await sleep(100);
  }
}

export interface SourceOptions {
  /** Pinned (pinnedSpec) to the sslmode the monitor connected with. */
  source: ConnectionSpec;
  slot: string;
  publication: string;
  spool: Spool;
  largeChangeBytes: number;
  largeValueBytes: number;
}

/** What the replication connection tells the engine besides the stream's messages. */
export interface SourceEvents {
  /** The engine is stopping: the stream's end is expected. */
  stopping(): boolean;
  fail(err: ApplyError): void;
  /** START_REPLICATION succeeded. */
  started(): void;
}

const MONITOR = { applicationName: 'pg-dts apply monitor', statementTimeoutMs: 10_000 } as const;

/** The replication stream from the slot, and the monitor session beside it. */
export class ReplicationSource {
  /** START_REPLICATION succeeded. */
  started = false;
  /** The replication connection is gone (ended or failed). */
  down = false;
  /** Settles when the stream has ended, either way. */
  ended: Promise<void> = Promise.resolve();
  private readonly plugin: TextPgoutputPlugin;
  private readonly service: LogicalReplicationService;

  constructor(
    private readonly opts: SourceOptions,
    sink: StreamSink,
    private readonly events: SourceEvents,
    private monitor: Client | undefined,
  ) {
    this.plugin = new TextPgoutputPlugin(
      { publication: opts.publication, spool: opts.spool, largeChangeBytes: opts.largeChangeBytes, largeValueBytes: opts.largeValueBytes },
      sink,
    );
    this.service = new LogicalReplicationService(replicationConfig(opts.source, opts.slot), {
      acknowledge: { auto: false, timeoutSeconds: 0 },
      flowControl: { enabled: false },
    });
  }

  /** Data messages parsed from the socket so far (parsed === handled: nothing received still waits). */
  get parsed(): number {
    return this.plugin.parsed;
  }

  /** Large changes parsed from the socket so far. */
  get largeChanges(): number {
    return this.plugin.largeChanges;
  }

  listen(): void {
    this.service.on('error', (e: Error) => {
      this.down = true;
      this.events.fail(new ApplyError(`replication connection to the source failed: ${safeDbMessage(e)}`));
    });
    this.service.on('start', () => {
      this.started = true;
      this.events.started();
    });
  }

  /** Starts streaming after `from` (retried while a previous walsender still holds the slot, until `deadline`). */
  subscribe(from: bigint, deadline: number): void {
    const p = this.service.subscribe(this.plugin, this.opts.slot, bigIntToLsn(from));
    this.ended = p.then(
      () => {
        this.down = true;
        if (!this.events.stopping()) this.events.fail(new ApplyError('the source ended the replication stream'));
      },
      (e: unknown) => {
        this.down = true;
        if (this.events.stopping()) return;
        // The previous walsender may still hold the slot for a moment after its client went away.
        if (sqlState(e) === '55006' && !this.started && Date.now() < deadline) {
          this.down = false;
          setTimeout(() => {
            if (!this.events.stopping()) this.subscribe(from, deadline);
          }, 250);
          return;
        }
        this.events.fail(new ApplyError(`replication from slot ${this.opts.slot} failed: ${safeDbMessage(e)}`, { code: sqlState(e) }));
      },
    );
  }

  /** Backpressure: the walsender waits (its socket buffer full) while we catch up. */
  pause(pause: boolean): void {
    const stream = replicationSocketOf(this.service);
    if (pause) stream?.pause?.();
    else stream?.resume?.();
  }

  /** Confirms `durable` to the slot (also our standby status update / keepalive answer). */
  acknowledge(durable: bigint): void {
    if (durable <= 0n) return;
    // pg-logical-replication 2.5.0 sends lsn + 1. The commit end LSN is already "last byte + 1"; one
    // byte more would make the server skip a transaction whose commit record starts exactly there.
    this.service.acknowledge(bigIntToLsn(durable - 1n)).catch(() => undefined);
  }

  async destroy(): Promise<void> {
    await this.service.destroy().catch(() => undefined);
  }

  /** pg_current_wal_lsn() on the source, or undefined (lag is informative only: reconnect next time). */
  async currentLsn(): Promise<bigint | undefined> {
    try {
      this.monitor ??= await connect(this.opts.source, MONITOR);
      const r = await this.monitor.query<{ lsn: string }>('SELECT pg_current_wal_lsn()::text AS lsn');
      const l = r.rows[0]?.lsn;
      return l ? lsnToBigInt(l) : undefined;
    } catch {
      // Replication itself reports real failures.
      const m = this.monitor;
      this.monitor = undefined;
      await m?.end().catch(() => undefined);
      return undefined;
    }
  }

  /**
   * The last confirmation is only a message on the socket; closing it at once can lose it. Waiting
   * (briefly) until the slot shows it keeps the slot from retaining WAL that is already applied.
   */
  async waitConfirmed(durable: bigint): Promise<void> {
    if (!this.started || this.down || durable <= 0n) return;
    const deadline = Date.now() + 2_000;
    let lastAck = 0;
    while (Date.now() < deadline && !this.down) {
      if (Date.now() - lastAck >= 250) {
        this.acknowledge(durable);
        lastAck = Date.now();
      }
      try {
        this.monitor ??= await connect(this.opts.source, MONITOR);
        const r = await this.monitor.query<{ lsn: string | null }>(
          'SELECT confirmed_flush_lsn::text AS lsn FROM pg_replication_slots WHERE slot_name = $1',
          [this.opts.slot],
        );
        const l = r.rows[0]?.lsn;
        if (!l || lsnToBigInt(l) >= durable) return;
      } catch {
        return;
      }
      await sleep(25);
    }
  }

  /** So that a restarted apply can take the slot at once: our walsender must be gone. */
  async waitReleased(): Promise<void> {
    const deadline = Date.now() + 10_000;
    while (Date.now() < deadline) {
      try {
        this.monitor ??= await connect(this.opts.source, MONITOR);
        const r = await this.monitor.query<{ active: boolean }>('SELECT active FROM pg_replication_slots WHERE slot_name = $1', [this.opts.slot]);
        if (!r.rows[0]?.active) return;
      } catch {
        return;
      }
      await sleep(50);
    }
  }

  closeMonitor(): Promise<void> {
    const m = this.monitor;
    this.monitor = undefined;
    return m ? m.end().catch(() => undefined) : Promise.resolve();
  }
}

/**
 * The apply's replication connection to the source (SYNCING_WAL): START_REPLICATION built by us, the
 * plugin that puts a ReplicationFramer (framer.ts) between the socket and pg's parser, and the slot's
 * checks before streaming.
 */
import type { Client, ClientConfig } from 'pg';
import { clientConfigs } from '../db';
import { hasPgoutputMessages, serverVersionNum } from '../pg-version';
import { ident } from '../sql';
import type { ConnectionSpec } from '../spec';
import { ApplyError } from './errors';
import { ReplicationFramer } from './framer';
import { lsnToBigInt } from './lsn';
import { parsePgoutput, type PgoutputMessage } from './pgoutput';
import type { Spool } from './spool';

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

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
export class TextPgoutputPlugin {
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
    const stream = (client as unknown as { connection?: { stream?: NodeJS.EventEmitter & { destroy(e?: Error): void } } }).connection?.stream;
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

export function replicationConfig(spec: ConnectionSpec, slot: string): ClientConfig {
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

/**
 * Every use of fields that `pg` and `pg-logical-replication` do not document, in one place: upgrading
 * either library means checking this file (and `copy-out.ts`, whose streams extend pg-copy-streams'
 * classes and read their protocol state by design). Each accessor fails soft (undefined) where the
 * field may be missing, so a caller can say "pg changed its internals" instead of crashing.
 */
import type { Client } from 'pg';

/** The socket under a `pg` client (its protocol parser is the one 'data' listener). */
export type PgSocket = NodeJS.EventEmitter & { destroy(e?: Error): void; write(b: Buffer): boolean };

export function socketOf(c: Client | undefined): PgSocket | undefined {
  return (c as unknown as { connection?: { stream?: PgSocket } } | undefined)?.connection?.stream;
}

/** Closes a client's socket at once, whatever it was doing (ends a query stuck on a lock). */
export function dropConnection(c: Client | undefined): void {
  socketOf(c)?.destroy();
}

/** What a CancelRequest for the client's backend needs: its process id and secret key, and where it connected. */
export function backendKeyOf(c: Client): { processID?: number | null; secretKey?: number | null; host?: string; port?: number } {
  return c as unknown as { processID?: number | null; secretKey?: number | null; host?: string; port?: number };
}

/** The socket of a pg-logical-replication service's replication connection (pause/resume for backpressure). */
export function replicationSocketOf(service: object): { pause?: () => void; resume?: () => void } | undefined {
  return (service as { _connection?: { stream?: { pause?: () => void; resume?: () => void } } })._connection?.stream;
}

/** The socket a pg-copy-streams COPY FROM stream writes to (it is a pg query with its connection attached). */
export function copyStreamSocketOf(stream: object): { write(b: Buffer): boolean } {
  return (stream as { connection: { stream: { write(b: Buffer): boolean } } }).connection.stream;
}

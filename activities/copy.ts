/**
 * MIGRATING_DATA: stream one table from source to target with COPY. Idempotent: the target table is
 * emptied in the same transaction that loads it, so a retried copy never leaves duplicates. Online
 * migrations read inside the replication slot's exported snapshot, so the copy and the change stream
 * meet exactly.
 */
import { Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { Client } from 'pg';
import { from as copyFrom, to as copyTo } from 'pg-copy-streams';
import { connect } from './db';
import { classify, preconditionFailed } from './errors';
import { columnList, literal, qname } from './sql';
import { displayName, type ConnectionSpec, type QualifiedName } from './spec';

export interface CopyTableInput {
  source: ConnectionSpec;
  target: ConnectionSpec;
  table: { source: QualifiedName; target: QualifiedName; copyColumns: string[] };
  /** Exported snapshot to read in (online); absent for an offline copy. */
  snapshot?: string;
}

export interface CopyProgress {
  rows: number;
  bytes: number;
}

export interface CopyTableResult extends CopyProgress {
  durationMs: number;
}

export interface CopyHooks {
  heartbeat(p: CopyProgress): void;
  signal: AbortSignal;
}

/** Counts rows (one newline ends each row in text COPY; embedded newlines are escaped) and bytes. */
class Meter extends Transform {
  rows = 0;
  bytes = 0;
  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: (err?: Error | null, data?: Buffer) => void): void {
    this.bytes += chunk.length;
    let i = -1;
    while ((i = chunk.indexOf(10, i + 1)) !== -1) this.rows++;
    cb(null, chunk);
  }
}

export async function copyTable(input: CopyTableInput, hooks: CopyHooks): Promise<CopyTableResult> {
  const started = Date.now();
  const { table } = input;
  const where = `copy ${displayName(table.source)} -> ${displayName(table.target)}`;
  let src: Client | undefined;
  let dst: Client | undefined;
  let srcPoisoned = false;
  const meter = new Meter();
  const tick = setInterval(() => hooks.heartbeat({ rows: meter.rows, bytes: meter.bytes }), 2000);
  try {
    src = await connect(input.source, { applicationName: 'pg-dts copy' });
    dst = await connect(input.target, { applicationName: 'pg-dts copy' });
    await src.query('BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY');
    if (input.snapshot) {
      try {
        await src.query(`SET TRANSACTION SNAPSHOT ${literal(input.snapshot)}`);
      } catch (err) {
        // The holder of the exported snapshot is gone: this copy can never be consistent with the slot.
        throw preconditionFailed(`${where}: cannot import snapshot ${input.snapshot}: ${(err as Error).message}`, { snapshotLost: true });
      }
    }
    await dst.query('BEGIN');
    await dst.query(`TRUNCATE ONLY ${qname(table.target)}`);
    const cols = columnList(table.copyColumns);
    const readStream = src.query(copyTo(`COPY (SELECT ${cols} FROM ${qname(table.source)}) TO STDOUT`));
    const writeStream = dst.query(copyFrom(`COPY ${qname(table.target)} (${cols}) FROM STDIN`));
    srcPoisoned = true; // until the pipeline ends cleanly, the source client may be mid-COPY
    await pipeline(readStream, meter, writeStream, { signal: hooks.signal });
    srcPoisoned = false;
    await dst.query('COMMIT');
    await src.query('COMMIT');
    hooks.heartbeat({ rows: meter.rows, bytes: meter.bytes });
    return { rows: meter.rows, bytes: meter.bytes, durationMs: Date.now() - started };
  } catch (err) {
    await dst?.query('ROLLBACK').catch(() => undefined);
    throw classify(err, where);
  } finally {
    clearInterval(tick);
    await dst?.end().catch(() => undefined);
    // Destroying the reading side does not cancel the server's COPY: drop that connection outright.
    if (srcPoisoned) (src as unknown as { connection?: { stream?: { destroy(): void } } } | undefined)?.connection?.stream?.destroy();
    else await src?.end().catch(() => undefined);
  }
}

/**
 * pgoutput (protocol version 1) decoding for the apply (SYNCING_WAL), values kept as PostgreSQL text:
 * pg-logical-replication's own parser turns values into JS objects with pg's global type parsers
 * (timestamptz -> Date loses microseconds) and folds unchanged TOAST into undefined. Pure, no I/O.
 */
import { decodeText } from './text';
import { UNCHANGED_TOAST, type ReplicaIdentity, type Tuple, type TupleValue } from './statements';

export interface RelationColumn {
  name: string;
  /** Bit 0: part of the replica identity. */
  flags: number;
  typeOid: number;
  typeMod: number;
}

export type PgoutputMessage =
  | { tag: 'begin'; finalLsn: bigint; commitTime: bigint; xid: number }
  | { tag: 'commit'; flags: number; commitLsn: bigint; endLsn: bigint; commitTime: bigint }
  | { tag: 'origin'; originLsn: bigint; name: string }
  | { tag: 'relation'; relationOid: number; schema: string; name: string; replicaIdentity: ReplicaIdentity; columns: RelationColumn[] }
  | { tag: 'type'; typeOid: number; schema: string; name: string }
  // `spooled`: a large change whose large values are in the spool (spool.ts), as marker strings here.
  | { tag: 'insert'; relationOid: number; new: Tuple; spooled?: number }
  | { tag: 'update'; relationOid: number; key: Tuple | null; old: Tuple | null; new: Tuple; spooled?: number }
  | { tag: 'delete'; relationOid: number; key: Tuple | null; old: Tuple | null; spooled?: number }
  | { tag: 'truncate'; relationOids: number[]; cascade: boolean; restartIdentity: boolean }
  | { tag: 'message'; transactional: boolean; lsn: bigint; prefix: string; content: Buffer }
  /** Parsing failed: reported through the apply (a throw inside the socket handler would kill the process). */
  | { tag: 'invalid'; error: Error };

class Reader {
  constructor(
    private readonly b: Buffer,
    private p: number,
    private readonly end: number,
  ) {}
  private need(n: number): void {
    if (this.p + n > this.end) throw new Error('pgoutput message ends early');
  }
  u8(): number {
    this.need(1);
    return this.b.readUInt8(this.p++);
  }
  i16(): number {
    this.need(2);
    const v = this.b.readInt16BE(this.p);
    this.p += 2;
    return v;
  }
  i32(): number {
    this.need(4);
    const v = this.b.readInt32BE(this.p);
    this.p += 4;
    return v;
  }
  u32(): number {
    this.need(4);
    const v = this.b.readUInt32BE(this.p);
    this.p += 4;
    return v;
  }
  u64(): bigint {
    this.need(8);
    const v = this.b.readBigUInt64BE(this.p);
    this.p += 8;
    return v;
  }
  i64(): bigint {
    this.need(8);
    const v = this.b.readBigInt64BE(this.p);
    this.p += 8;
    return v;
  }
  str(): string {
    const end = this.b.indexOf(0, this.p);
    if (end < 0 || end >= this.end) throw new Error('pgoutput string is not terminated');
    const s = this.b.toString('utf8', this.p, end);
    this.p = end + 1;
    return s;
  }
  bytes(n: number): Buffer {
    if (n < 0) throw new Error('pgoutput negative length');
    this.need(n);
    // Copied: the replication chunk this came from is reused by nothing, but a copy keeps a small
    // value from pinning a large network buffer while it waits in a batch.
    const out = Buffer.from(this.b.subarray(this.p, this.p + n));
    this.p += n;
    return out;
  }
  text(n: number): string {
    if (n < 0) throw new Error('pgoutput negative length');
    this.need(n);
    const p = this.p;
    this.p += n;
    return decodeText(this.b, p, n);
  }
  tuple(): TupleValue[] {
    const n = this.i16();
    const out: TupleValue[] = new Array<TupleValue>(n);
    for (let i = 0; i < n; i++) {
      const kind = this.u8();
      switch (kind) {
        case 0x6e: // 'n'
          out[i] = null;
          break;
        case 0x75: // 'u'
          out[i] = UNCHANGED_TOAST;
          break;
        case 0x74: // 't'
          out[i] = this.text(this.i32());
          break;
        case 0x62: // 'b': only with the binary option, which we never request
          throw new Error('pgoutput sent a binary column value; the apply requests text');
        default:
          throw new Error(`pgoutput unknown column kind 0x${kind.toString(16)}`);
      }
    }
    return out;
  }
}

function readIdentity(c: number): ReplicaIdentity {
  switch (c) {
    case 0x64:
      return 'default';
    case 0x6e:
      return 'nothing';
    case 0x66:
      return 'full';
    case 0x69:
      return 'index';
    default:
      throw new Error(`pgoutput unknown replica identity 0x${c.toString(16)}`);
  }
}

/** Parses one pgoutput message (the XLogData payload, `buf[start, end)`). Never throws. */
export function parsePgoutput(buf: Buffer, start = 0, end = buf.length): PgoutputMessage {
  try {
    const r = new Reader(buf, start, end);
    const tag = r.u8();
    switch (tag) {
      case 0x42: // B
        return { tag: 'begin', finalLsn: r.u64(), commitTime: r.i64(), xid: r.u32() };
      case 0x43: // C
        return { tag: 'commit', flags: r.u8(), commitLsn: r.u64(), endLsn: r.u64(), commitTime: r.i64() };
      case 0x4f: // O
        return { tag: 'origin', originLsn: r.u64(), name: r.str() };
      case 0x52: {
        // R
        const relationOid = r.u32();
        const schema = r.str();
        const name = r.str();
        const replicaIdentity = readIdentity(r.u8());
        const n = r.i16();
        const columns: RelationColumn[] = [];
        for (let i = 0; i < n; i++) columns.push({ flags: r.u8(), name: r.str(), typeOid: r.u32(), typeMod: r.i32() });
        return { tag: 'relation', relationOid, schema, name, replicaIdentity, columns };
      }
      case 0x59: // Y
        return { tag: 'type', typeOid: r.u32(), schema: r.str(), name: r.str() };
      case 0x49: {
        // I
        const relationOid = r.u32();
        const k = r.u8();
        if (k !== 0x4e) throw new Error('pgoutput INSERT without a new tuple');
        return { tag: 'insert', relationOid, new: r.tuple() };
      }
      case 0x55: {
        // U
        const relationOid = r.u32();
        let key: Tuple | null = null;
        let old: Tuple | null = null;
        let k = r.u8();
        if (k === 0x4b) {
          key = r.tuple();
          k = r.u8();
        } else if (k === 0x4f) {
          old = r.tuple();
          k = r.u8();
        }
        if (k !== 0x4e) throw new Error('pgoutput UPDATE without a new tuple');
        return { tag: 'update', relationOid, key, old, new: r.tuple() };
      }
      case 0x44: {
        // D
        const relationOid = r.u32();
        const k = r.u8();
        if (k === 0x4b) return { tag: 'delete', relationOid, key: r.tuple(), old: null };
        if (k === 0x4f) return { tag: 'delete', relationOid, key: null, old: r.tuple() };
        throw new Error('pgoutput DELETE without an old key or row');
      }
      case 0x54: {
        // T
        const n = r.u32();
        const flags = r.u8();
        const relationOids: number[] = [];
        for (let i = 0; i < n; i++) relationOids.push(r.u32());
        return { tag: 'truncate', relationOids, cascade: (flags & 1) !== 0, restartIdentity: (flags & 2) !== 0 };
      }
      case 0x4d: {
        // M
        const flags = r.u8();
        const lsn = r.u64();
        const prefix = r.str();
        const content = r.bytes(r.u32());
        return { tag: 'message', transactional: (flags & 1) !== 0, lsn, prefix, content };
      }
      default:
        throw new Error(`pgoutput unknown message type 0x${tag.toString(16)}`);
    }
  } catch (err) {
    return { tag: 'invalid', error: err instanceof Error ? err : new Error(String(err)) };
  }
}

export type ChangeMessage = Extract<PgoutputMessage, { tag: 'insert' | 'update' | 'delete' }>;
export type TruncateMessage = Extract<PgoutputMessage, { tag: 'truncate' }>;

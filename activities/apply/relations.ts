/**
 * The apply's relation mapping (SYNCING_WAL): which target table each source relation of the stream
 * goes to, as pgoutput's Relation messages describe it, checked against the target table (a
 * difference is DDL on the source: final), and how it is written (set-based or row by row). Sources
 * before 13 publish leaf partitions: each is written through its root's target table.
 */
import type { Client } from 'pg';
import { fenceMarkerTable } from '../stop-writes';
import { displayName, type QualifiedName } from '../spec';
import { keyedRelation, type KeyedRelation } from './batch';
import { ApplyError } from './errors';
import type { ApplyTable } from './options';
import type { PgoutputMessage } from './pgoutput';
import type { ApplyRelation } from './statements';
import { readTargetTables, type TargetTable } from './target';
import { nameKey } from '../naming';

/** First OID of user objects: below it, types are built in and have the same OID on every server. */
const FIRST_NORMAL_OBJECT_ID = 16384;
/** pg_type OID of "char" (the one-byte internal type). */
const CHAR_OID = 18;

type RelationMessage = Extract<PgoutputMessage, { tag: 'relation' }>;

/**
 * A leaf partition of a migrated partitioned table on a source before 13, which publishes leaves only
 * (no publish_via_partition_root): its changes are written through the root's target table, which
 * routes each row to its partition, as the copy did.
 */
export interface LeafRoute {
  source: QualifiedName;
  /** The migrated (root) table it belongs to, on the source and on the target. */
  root: QualifiedName;
  target: QualifiedName;
  /** How many leaves that root has: a TRUNCATE must name them all. */
  leaves: number;
}

/** The leaves of the partitioned tables among `tables`, with their roots' target names. */
export async function readLeafRoutes(source: Client, tables: readonly ApplyTable[]): Promise<LeafRoute[]> {
  const r = await source.query<{ i: string; schema: string; name: string; leaves: number }>(
    `SELECT u.i::text AS i, ln.nspname AS schema, l.relname AS name, count(*) OVER (PARTITION BY u.i)::int AS leaves
       FROM unnest($1::text[], $2::text[]) WITH ORDINALITY AS u(s, r, i)
       JOIN pg_namespace n ON n.nspname = u.s
       JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = u.r AND c.relkind = 'p'
       CROSS JOIN LATERAL pg_partition_tree(c.oid) t
       JOIN pg_class l ON l.oid = t.relid
       JOIN pg_namespace ln ON ln.oid = l.relnamespace
      WHERE t.isleaf`,
    [tables.map((t) => t.source.schema), tables.map((t) => t.source.name)],
  );
  return r.rows.map((row) => {
    const t = tables[Number(row.i) - 1]!;
    return { source: { schema: row.schema, name: row.name }, root: t.source, target: t.target, leaves: row.leaves };
  });
}

export interface MappedRelation {
  rel: ApplyRelation;
  display: string;
  /** Set when the set-based path can write this table. */
  keyed?: KeyedRelation;
  /** Per column, the type its text form is cast to (for INSERT ... SELECT FROM unnest). */
  castTypes?: readonly string[];
}

export interface RelationState {
  source: QualifiedName;
  mapped?: MappedRelation;
  /** Our fence marker table (sources before 14): its INSERT marks the fence, nothing is written. */
  fenceMarker?: true;
}

type TargetColumn = TargetTable['columns'][number];

/** The stream's relations (by source OID) and the migrated tables they map to. */
export class Relations {
  private readonly tableMap = new Map<string, QualifiedName>();
  private readonly fenceMarkerKey: string;
  /** Leaf partition (sources before 13) -> its root's key and leaf count (routeLeaves). */
  private readonly leafRoots = new Map<string, { root: string; leaves: number }>();
  private readonly relations = new Map<number, RelationState>();
  /** pgoutput Type messages: source OID of a user-defined type -> its name (a domain's: its base type's). */
  private readonly sourceTypes = new Map<number, QualifiedName>();
  /** Target tables read ahead (undefined if that failed), each used by its first relation message. */
  private prefetched: Promise<Map<string, TargetTable> | undefined> | undefined;

  constructor(
    tables: readonly ApplyTable[],
    private readonly publication: string,
    private readonly setBased: boolean,
  ) {
    for (const t of tables) this.tableMap.set(nameKey(t.source), t.target);
    this.fenceMarkerKey = nameKey(fenceMarkerTable(publication));
  }

  /** Sources before 13 publish leaf partitions: each is written through its root's target table. */
  routeLeaves(routes: readonly LeafRoute[]): void {
    for (const r of routes) {
      this.tableMap.set(nameKey(r.source), r.target);
      this.leafRoots.set(nameKey(r.source), { root: nameKey(r.root), leaves: r.leaves });
    }
  }

  /**
   * The target tables' descriptions, read once for all while the stream starts (instead of one
   * catalog query per table as its first change arrives); a failure here is met again per table.
   */
  prefetch(target: Client): void {
    this.prefetched = readTargetTables(target, [...this.tableMap.values()]).catch(() => undefined);
  }

  /** Sent before a relation that uses a non-built-in type: its name, to compare with the target's. */
  noteType(msg: Extract<PgoutputMessage, { tag: 'type' }>): void {
    this.sourceTypes.set(msg.typeOid, { schema: msg.schema, name: msg.name });
  }

  get(oid: number): RelationState | undefined {
    return this.relations.get(oid);
  }

  get hasLeaves(): boolean {
    return this.leafRoots.size > 0;
  }

  mappedOrThrow(oid: number, op: string): MappedRelation {
    const st = this.relations.get(oid);
    if (!st) throw new ApplyError(`replication stream: ${op} for relation OID ${oid} before its description`);
    if (!st.mapped) {
      throw new ApplyError(
        `${op} on source table ${displayName(st.source)}, which is not one of the migrated tables (is it in publication ${this.publication}?)`,
        { table: displayName(st.source), operation: op, permanent: true },
      );
    }
    return st.mapped;
  }

  /**
   * TRUNCATE of a whole partitioned table reaches us as one TRUNCATE of all its leaves, and truncates
   * the root's target. One of a single leaf would empty every partition on the target: refused.
   */
  checkLeafTruncate(oids: readonly number[]): void {
    const seen = new Map<string, { leaves: number; count: number; names: string[] }>();
    for (const oid of oids) {
      const source = this.relations.get(oid)?.source;
      const leaf = source && this.leafRoots.get(nameKey(source));
      if (!source || !leaf) continue;
      const e = seen.get(leaf.root) ?? { leaves: leaf.leaves, count: 0, names: [] };
      e.count++;
      e.names.push(displayName(source));
      seen.set(leaf.root, e);
    }
    for (const e of seen.values()) {
      if (e.count < e.leaves) {
        throw new ApplyError(
          `TRUNCATE of partition(s) ${e.names.join(', ')} alone on the source: a PostgreSQL 12 source publishes partitions one by one and pg-dts writes them through their ` +
            'partitioned table on the target, so it cannot empty a single partition there; restart the migration (or truncate the same partition on the target and migrate offline)',
          { table: e.names.join(', '), operation: 'TRUNCATE', permanent: true },
        );
      }
    }
  }

  /** A Relation message: the source table (re)described, checked against its target table. */
  async describe(msg: RelationMessage, target: Client): Promise<void> {
    const source = { schema: msg.schema, name: msg.name };
    const to = this.tableMap.get(nameKey(source));
    if (!to) {
      this.relations.set(msg.relationOid, nameKey(source) === this.fenceMarkerKey ? { source, fenceMarker: true } : { source });
      return;
    }
    const display = displayName(to);
    const ahead = await this.prefetched;
    let row = ahead?.get(nameKey(to));
    if (row) ahead!.delete(nameKey(to)); // used once: a table described again is read again
    else row = (await readTargetTables(target, [to])).get(nameKey(to));
    if (!row) throw new ApplyError(`target table ${display} (for source ${displayName(source)}) does not exist`, { table: display, permanent: true });
    const targetCols = new Map(row.columns.filter((c) => !c.generated).map((c) => [c.name, c]));
    this.checkSame(msg, targetCols, source, display);
    this.relations.set(msg.relationOid, { source, mapped: this.mapped(msg, to, display, row, targetCols) });
  }

  /** Columns and types of the source relation and its target table agree, or the source saw DDL (final). */
  private checkSame(msg: RelationMessage, targetCols: ReadonlyMap<string, TargetColumn>, source: QualifiedName, display: string): void {
    const onlySource = msg.columns.filter((c) => !targetCols.has(c.name)).map((c) => c.name);
    const sourceNames = new Set(msg.columns.map((c) => c.name));
    const onlyTarget = [...targetCols.keys()].filter((n) => !sourceNames.has(n));
    const typeDiffers = msg.columns
      .filter((c) => {
        const t = targetCols.get(c.name);
        if (!t) return false;
        // Built-in types have the same OID everywhere; user types (enums, domains, extension types)
        // differ by server and are compared by name (a type may live in a mapped schema). pgoutput's
        // Type message names a domain's base type (getBaseType), so the target's base type is compared.
        const sourceBuiltIn = c.typeOid < FIRST_NORMAL_OBJECT_ID;
        if (sourceBuiltIn !== t.typid < FIRST_NORMAL_OBJECT_ID) return true;
        if (sourceBuiltIn) return c.typeOid !== t.typid || c.typeMod !== t.typmod;
        const named = this.sourceTypes.get(c.typeOid);
        return named !== undefined && named.name !== t.typname;
      })
      .map((c) => c.name);
    if (onlySource.length || onlyTarget.length || typeDiffers.length) {
      const parts = [
        onlySource.length ? `only on the source: ${onlySource.join(', ')}` : '',
        onlyTarget.length ? `only on the target: ${onlyTarget.join(', ')}` : '',
        typeDiffers.length ? `different type: ${typeDiffers.join(', ')}` : '',
      ].filter(Boolean);
      // Final: no retry brings the two back together. pg-dts does not replicate DDL.
      throw new ApplyError(
        `DDL on the source during the migration: source table ${displayName(source)} no longer matches target table ${display} (${parts.join('; ')}); ` +
          `pg-dts does not replicate schema changes, so the apply stops here: restart the migration once the source schema is settled`,
        { table: displayName(source), operation: 'RELATION', permanent: true },
      );
    }
  }

  /** How the relation's changes are written: its statements' description, set-based when it can be. */
  private mapped(msg: RelationMessage, target: QualifiedName, display: string, row: TargetTable, targetCols: ReadonlyMap<string, TargetColumn>): MappedRelation {
    const rel: ApplyRelation = {
      target,
      columns: msg.columns.map((c) => c.name),
      keyColumns: msg.columns.filter((c) => (c.flags & 1) !== 0).map((c) => c.name),
      replicaIdentity: msg.replicaIdentity,
      targetPrimaryKey: row.pk ?? undefined,
      partitioned: row.relkind === 'p',
      identityAlways: msg.columns.filter((c) => targetCols.get(c.name)?.identity === 'a').map((c) => c.name),
      // Written by PostgreSQL's format_type, which quotes what needs quoting: safe to splice as a type.
      columnTypes: msg.columns.map((c) => targetCols.get(c.name)!.type),
    };
    // A cast from text to "char" keeps the first byte of the text, not what charin reads ("\351" is
    // one byte): tables with a "char" column take the per-row statements, whose parameters go through
    // the type's input function.
    const hasChar = msg.columns.some((c) => targetCols.get(c.name)!.typid === CHAR_OID);
    const keyed =
      !this.setBased || hasChar
        ? undefined
        : keyedRelation(
            rel,
            msg.columns.map((c) => targetCols.get(c.name)!.cast),
            msg.columns.map((c) => {
              const coll = targetCols.get(c.name)!.coll;
              return coll ? ` COLLATE ${coll}` : '';
            }),
            row.uniques,
          );
    const castTypes = hasChar ? undefined : msg.columns.map((c) => targetCols.get(c.name)!.cast);
    return keyed ? { rel, display, keyed, castTypes } : { rel, display, castTypes };
  }
}

/**
 * What each PostgreSQL major version offers the migration, in one place: the source's replication
 * commands and pgoutput options, and the versions we accept on each side. Pure; the activities ask the
 * server for `server_version_num` and decide here.
 */
import type { Client } from 'pg';

/**
 * Oldest major on either side: the catalog reader and the apply use `pg_partition_tree`,
 * `pg_partition_root` and `attgenerated`, all added in 12. (Tested: sources 12–18, targets 13–18.)
 */
export const MIN_MAJOR = 12;

/** 130023 → "13.23", 90624 → "9.6.24": the form people write and release notes use. */
export function formatPgVersion(num: number): string {
  const major = Math.floor(num / 10000);
  if (major >= 10) return `${major}.${num % 10000}`;
  return `${Math.floor(num / 10000)}.${Math.floor(num / 100) % 100}.${num % 100}`;
}

export async function serverVersionNum(c: Client): Promise<number> {
  const r = await c.query<{ v: string }>(`SELECT current_setting('server_version_num') AS v`);
  return Number(r.rows[0]!.v);
}

/**
 * Transactional logical messages reach pgoutput (its `messages` option) from 14 on. Older sources get
 * the fence marker as a row in a table of ours that is in the publication instead.
 */
export const hasPgoutputMessages = (v: number): boolean => v >= 140000;

/** `publish_via_partition_root` (a partitioned table published as itself) exists from 13 on. */
export const hasPublishViaRoot = (v: number): boolean => v >= 130000;

/** Failover slots (`CREATE_REPLICATION_SLOT … (FAILOVER)`, synced to standbys) exist from 17 on. */
export const hasFailoverSlots = (v: number): boolean => v >= 170000;

/**
 * The replication command that creates our slot and exports its snapshot. The parenthesised option
 * list is 15+ grammar; 14 and older know only the bare EXPORT_SNAPSHOT keyword.
 */
export function createSlotCommand(quotedSlot: string, version: number, failover = false, temporary = false): string {
  if (failover && !hasFailoverSlots(version)) {
    throw new Error(`failover slots need PostgreSQL 17 or later; the source runs ${formatPgVersion(version)}`);
  }
  const temp = temporary ? ' TEMPORARY' : '';
  if (version < 150000) return `CREATE_REPLICATION_SLOT ${quotedSlot}${temp} LOGICAL pgoutput EXPORT_SNAPSHOT`;
  return `CREATE_REPLICATION_SLOT ${quotedSlot}${temp} LOGICAL pgoutput (SNAPSHOT 'export'${failover ? ', FAILOVER true' : ''})`;
}

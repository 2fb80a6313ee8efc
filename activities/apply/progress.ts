/**
 * The apply's position on the target (SYNCING_WAL): `pgdts.apply_progress` holds, per slot, the source
 * commit end LSN of the last transaction committed on the target, written in the same target
 * transaction as the changes (exactly once), and the fence token once the fence's transaction is in.
 */
import type { Client } from 'pg';
import { runIdempotentDdl } from '../db';
import { literal } from '../sql';
import { bigIntToLsn } from './lsn';

/** Not "pg_dts": PostgreSQL reserves schema names beginning with pg_ ("unacceptable schema name"). */
export const APPLY_PROGRESS_SCHEMA = 'pgdts';
export const APPLY_PROGRESS_TABLE = 'pgdts.apply_progress';
export const APPLY_PROGRESS_DDL = [
  'CREATE SCHEMA IF NOT EXISTS pgdts',
  `CREATE TABLE IF NOT EXISTS pgdts.apply_progress (
  slot_name text PRIMARY KEY,
  applied_lsn pg_lsn NOT NULL,
  fence_token text,
  updated_at timestamptz NOT NULL DEFAULT now()
)`,
] as const;
export const READ_APPLY_PROGRESS_SQL =
  'SELECT applied_lsn::text AS applied_lsn, fence_token FROM pgdts.apply_progress WHERE slot_name = $1';
export const DELETE_APPLY_PROGRESS_SQL = 'DELETE FROM pgdts.apply_progress WHERE slot_name = $1';


export interface AppliedPosition {
  appliedLsn: string;
  fenceToken?: string;
}

/** The committed position for a slot, or undefined when the table or the row does not exist. */
export async function readApplyProgress(client: Client, slot: string): Promise<AppliedPosition | undefined> {
  const has = await client.query<{ ok: boolean }>(`SELECT to_regclass('pgdts.apply_progress') IS NOT NULL AS ok`);
  if (!has.rows[0]?.ok) return undefined;
  const r = await client.query<{ applied_lsn: string; fence_token: string | null }>(READ_APPLY_PROGRESS_SQL, [slot]);
  const row = r.rows[0];
  if (!row) return undefined;
  return row.fence_token === null ? { appliedLsn: row.applied_lsn } : { appliedLsn: row.applied_lsn, fenceToken: row.fence_token };
}

export async function ensureApplyProgressTable(client: Client): Promise<void> {
  await runIdempotentDdl(client, APPLY_PROGRESS_DDL, 1);
}


/** Upsert, so a missing row can never let changes commit without their position. */
export function progressUpsert(slot: string, lsn: bigint, fenceToken: string | undefined): string {
  return (
    `INSERT INTO pgdts.apply_progress AS p (slot_name, applied_lsn, fence_token) ` +
    `VALUES (${literal(slot)}, ${literal(bigIntToLsn(lsn))}::pg_lsn, ${fenceToken === undefined ? 'NULL' : literal(fenceToken)}) ` +
    `ON CONFLICT (slot_name) DO UPDATE SET applied_lsn = EXCLUDED.applied_lsn, ` +
    `fence_token = COALESCE(EXCLUDED.fence_token, p.fence_token), updated_at = now()`
  );
}

/**
 * CREATING_TABLES, after the extensions are on the target: the rows a user added to an extension's
 * configuration tables (`pg_extension_config_dump`: e.g. custom SRIDs in PostGIS's spatial_ref_sys).
 * The extension's script makes its own rows on the target; the rows that match the table's dump
 * condition are the user's, and pg_dump carries exactly those. So do we, for the extensions that the
 * migrated tables' column types come from, once, in CREATING_TABLES: an extension's
 * configuration is not replicated afterwards. A row the target already has (same key) is kept.
 */
import type { Client } from 'pg';
import { qname } from './sql';
import type { QualifiedName } from './spec';

interface ConfigTable {
  extension: string;
  table: QualifiedName;
  /** The extension's dump condition ("WHERE …"), or '' for every row. */
  condition: string;
}

/** Extensions that own a type (or an array's element type) of the tables' columns. */
async function extensionsOfColumns(source: Client, tables: readonly QualifiedName[]): Promise<string[]> {
  const r = await source.query<{ extname: string }>(
    `SELECT DISTINCT e.extname
       FROM unnest($1::text[], $2::text[]) AS u(s, n)
       JOIN pg_namespace ns ON ns.nspname = u.s
       JOIN pg_class c ON c.relnamespace = ns.oid AND c.relname = u.n
       JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
       JOIN pg_type t ON t.oid = a.atttypid
       JOIN pg_depend d ON d.classid = 'pg_type'::regclass AND d.objid = CASE WHEN t.typelem <> 0 AND t.typlen = -1 THEN t.typelem ELSE t.oid END
                       AND d.refclassid = 'pg_extension'::regclass AND d.deptype = 'e'
       JOIN pg_extension e ON e.oid = d.refobjid
      ORDER BY 1`,
    [tables.map((t) => t.schema), tables.map((t) => t.name)],
  );
  return r.rows.map((x) => x.extname);
}

async function configTables(source: Client, extensions: string[]): Promise<ConfigTable[]> {
  const r = await source.query<{ extension: string; schema: string; name: string; condition: string | null }>(
    `SELECT e.extname AS extension, n.nspname AS schema, c.relname AS name, x.cond AS condition
       FROM pg_extension e
       CROSS JOIN LATERAL unnest(e.extconfig, e.extcondition) AS x(cfg, cond)
       JOIN pg_class c ON c.oid = x.cfg AND c.relkind = 'r'
       JOIN pg_namespace n ON n.oid = c.relnamespace
      WHERE e.extname = ANY($1::text[])
      ORDER BY 1, 2, 3`,
    [extensions],
  );
  return r.rows.map((x) => ({ extension: x.extension, table: { schema: x.schema, name: x.name }, condition: x.condition ?? '' }));
}

/**
 * Copies the user's rows of the configuration tables of the extensions the `tables` use, from
 * `source` to `target` (where CREATE EXTENSION has run). Returns one notice per table that had any.
 */
export async function copyExtensionConfig(source: Client, target: Client, tables: readonly QualifiedName[]): Promise<string[]> {
  const extensions = await extensionsOfColumns(source, tables);
  if (extensions.length === 0) return [];
  const onTarget = new Set((await target.query<{ extname: string }>('SELECT extname FROM pg_extension')).rows.map((x) => x.extname));
  const notices: string[] = [];
  for (const cfg of await configTables(source, extensions.filter((e) => onTarget.has(e)))) {
    // The condition is the extension's own SQL (pg_extension_config_dump), read as pg_dump does, on the source.
    const rows = await source.query<{ rows: string; n: number }>(
      `SELECT coalesce(json_agg(t), '[]')::text AS rows, count(*)::int AS n FROM (SELECT * FROM ONLY ${qname(cfg.table)} ${cfg.condition}) t`,
    );
    const { rows: json, n } = rows.rows[0]!;
    if (n === 0) continue;
    const ins = await target.query(
      `INSERT INTO ${qname(cfg.table)} SELECT * FROM json_populate_recordset(NULL::${qname(cfg.table)}, $1::json) ON CONFLICT DO NOTHING`,
      [json],
    );
    notices.push(
      `extension ${cfg.extension}: ${n} row(s) you added to its configuration table ${qname(cfg.table)} carried to the target` +
        (ins.rowCount !== n ? ` (${n - (ins.rowCount ?? 0)} already there with the same key, kept as they were)` : ''),
    );
  }
  return notices;
}

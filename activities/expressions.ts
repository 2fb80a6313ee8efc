/**
 * INIT: source-defined expressions the target will evaluate with the migration's (superuser) rights.
 *
 * CHECK constraints, domain CHECKs, generated columns, index expressions and predicates and partition
 * keys are rebuilt on the target from the source catalog, then evaluated there by the copy, the
 * post-load DDL and the apply — all in the migration role's sessions, often a superuser's.
 * `SET ROLE` around them would be no boundary: an expression can call set_config('role', 'none') and
 * then run SQL through query_to_xml. So every function such an expression calls must be on an
 * allow-list, else preflight refuses naming the object and the function, before anything changes.
 *
 * Allowed: functions of pg_catalog or of an extension (but dblink/adminpack) that PUBLIC may execute,
 * that are immutable or stable (or one of a few harmless volatile ones), and that neither run SQL given
 * as text nor read server settings or other sessions' activity. Plain column defaults are not checked:
 * the copy and the apply always write every column, so the target never evaluates them.
 * Functions are found in the stored expression trees (`:funcid`, `:opfuncid`, `:opno` via the
 * operator's function): pg_depend would miss every built-in function, as they are pinned.
 */
import type { Client } from 'pg';
import type { QualifiedName } from './spec';

/** Volatile built-ins that neither write nor read anything but the clock or a random source. */
export const VOLATILE_ALLOWED = ['clock_timestamp', 'timeofday', 'random', 'gen_random_uuid'];
/** Public, non-volatile built-ins that run SQL given as text or reveal what only a superuser may read. */
export const DENIED_NAME_PATTERN = '_to_xml|_to_xmlschema|^current_setting$|^pg_show_all_settings$|^pg_settings_get_flags$|^pg_stat_get|^pg_sequence_last_value$|^pg_sequence_parameters$|^pg_cursor$|^pg_prepared_statement$';
/** Extensions whose functions open connections or touch files. */
export const DENIED_EXTENSIONS = ['dblink', 'adminpack', 'postgres_fdw', 'file_fdw'];

export interface UnsafeExpression {
  /** "CHECK constraint x_check on public.t", "index public.t_idx", ... */
  object: string;
  /** The function as regprocedure (schema-qualified when not on the search path). */
  fn: string;
  why: string;
}

const UNSAFE_EXPRESSIONS_SQL = `
WITH RECURSIVE rels AS (
  SELECT p.relid AS oid
    FROM unnest($1::text[], $2::text[]) AS u(s, r)
    JOIN pg_namespace n ON n.nspname = u.s
    JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = u.r
    CROSS JOIN LATERAL (SELECT c.oid AS relid UNION SELECT relid FROM pg_partition_tree(c.oid)) p
), types AS (
  SELECT a.atttypid AS oid FROM pg_attribute a JOIN rels ON a.attrelid = rels.oid WHERE a.attnum > 0 AND NOT a.attisdropped
  UNION
  SELECT x.oid FROM types t JOIN pg_type ty ON ty.oid = t.oid
    CROSS JOIN LATERAL (
      SELECT ty.typbasetype WHERE ty.typbasetype <> 0
      UNION ALL SELECT ty.typelem WHERE ty.typelem <> 0
      UNION ALL SELECT a.atttypid FROM pg_attribute a WHERE ty.typrelid <> 0 AND a.attrelid = ty.typrelid AND a.attnum > 0 AND NOT a.attisdropped
      UNION ALL SELECT r.rngsubtype FROM pg_range r WHERE r.rngtypid = ty.oid) AS x(oid)
), exprs AS (
  SELECT format('CHECK constraint %I on %s', con.conname, con.conrelid::regclass) AS what, con.conbin::text AS tree
    FROM pg_constraint con JOIN rels ON con.conrelid = rels.oid WHERE con.contype = 'c'
  UNION ALL
  SELECT format('generated column %I of %s', a.attname, d.adrelid::regclass), d.adbin::text
    FROM pg_attrdef d JOIN rels ON d.adrelid = rels.oid
    JOIN pg_attribute a ON a.attrelid = d.adrelid AND a.attnum = d.adnum WHERE a.attgenerated <> ''
  UNION ALL
  SELECT format('index %s', i.indexrelid::regclass), concat_ws(' ', i.indexprs::text, i.indpred::text)
    FROM pg_index i JOIN rels ON i.indrelid = rels.oid WHERE i.indexprs IS NOT NULL OR i.indpred IS NOT NULL
  UNION ALL
  SELECT format('partition key of %s', p.partrelid::regclass), p.partexprs::text
    FROM pg_partitioned_table p JOIN rels ON p.partrelid = rels.oid WHERE p.partexprs IS NOT NULL
), domains AS (
  -- Domains of the columns, and domains the expressions cast to: their CHECKs run as well.
  SELECT oid FROM types
  UNION
  SELECT m[1]::oid FROM exprs, regexp_matches(exprs.tree, ':(?:resulttype|consttype|funcresulttype) (\\d+)', 'g') AS m
), all_exprs AS (
  SELECT what, tree FROM exprs
  UNION ALL
  SELECT format('CHECK constraint %I of domain %s', con.conname, con.contypid::regtype), con.conbin::text
    FROM pg_constraint con JOIN domains d ON con.contypid = d.oid WHERE con.contype = 'c'
), calls AS (
  SELECT e.what, m[1]::oid AS fn FROM all_exprs e, regexp_matches(e.tree, ':(?:funcid|opfuncid) (\\d+)', 'g') AS m
  UNION
  SELECT e.what, o.oprcode::oid FROM all_exprs e, regexp_matches(e.tree, ':opno (\\d+)', 'g') AS m
    JOIN pg_operator o ON o.oid = m[1]::oid
)
SELECT DISTINCT calls.what AS object, p.oid::regprocedure::text AS fn,
       CASE WHEN p.pronamespace <> 'pg_catalog'::regnamespace AND x.extname IS NULL THEN 'a user-defined function'
            WHEN x.extname = ANY($3::text[]) THEN format('a function of extension %s, which reaches outside the database', x.extname)
            WHEN NOT has_function_privilege('public', p.oid, 'EXECUTE') THEN 'a function only privileged roles may execute'
            WHEN p.proname ~ $5 THEN 'a function that runs SQL given as text or reads privileged server state'
            ELSE 'a volatile function (it may change state)' END AS why
  FROM calls
  JOIN pg_proc p ON p.oid = calls.fn
  LEFT JOIN pg_depend dep ON dep.classid = 'pg_proc'::regclass AND dep.objid = p.oid AND dep.deptype = 'e'
  LEFT JOIN pg_extension x ON x.oid = dep.refobjid
 WHERE NOT ((p.pronamespace = 'pg_catalog'::regnamespace OR (x.extname IS NOT NULL AND x.extname <> ALL($3::text[])))
            AND has_function_privilege('public', p.oid, 'EXECUTE')
            AND (p.provolatile <> 'v' OR p.proname = ANY($4::text[]))
            AND p.proname !~ $5)
 ORDER BY 1, 2`;

/** Every source-defined expression of these tables (partitions included) that calls a function off the allow-list. */
export async function findUnsafeExpressions(client: Client, tables: readonly QualifiedName[]): Promise<UnsafeExpression[]> {
  // With only pg_catalog on the path, regclass/regprocedure print every other name schema-qualified.
  await client.query('BEGIN READ ONLY');
  try {
    await client.query('SET LOCAL search_path TO pg_catalog');
    const r = await client.query<UnsafeExpression>(UNSAFE_EXPRESSIONS_SQL, [
      tables.map((t) => t.schema),
      tables.map((t) => t.name),
      DENIED_EXTENSIONS,
      VOLATILE_ALLOWED,
      DENIED_NAME_PATTERN,
    ]);
    return r.rows;
  } finally {
    await client.query('ROLLBACK');
  }
}

/** The refusal preflight throws: each object, the function it calls and why it is not allowed. */
export function unsafeExpressionsMessage(found: readonly UnsafeExpression[]): string {
  const list = found.map((f) => `${f.object} calls ${f.fn} (${f.why})`).join('; ');
  return (
    `source-defined expressions would run on the target with the migration's superuser rights: ${list}. ` +
    'pg-dts only rebuilds expressions that call built-in or extension functions any role may run and that have no side effects; ' +
    'drop or rewrite these on the source, or leave their tables out and create them on the target yourself'
  );
}

/**
 * FINALIZING (spec.objects or spec.owners): owners and grants of what the migration created on the
 * target — schemas, tables and partitions (their columns' grants too), sequences, types, and with
 * `objects` the views, materialized views and functions (objects/) — carried from the source.
 *
 * Invariants:
 * - Ownership moves only after the apply has stopped: until then the migration role owns every table
 *   it writes, so a non-superuser apply role (managed services) never loses the right to write one.
 * - A source role is carried under its own name, or `owners.map`'s, when that role exists on the
 *   target; else `owners.default`'s; else the migration role keeps the object (a notice names the
 *   roles to create; with an `owners` object preflight refuses instead, see ownersPreflight).
 * - Grants: a source ACL that is not the default is reproduced exactly for PUBLIC and the roles that
 *   exist on the target (a REVOKE EXECUTE … FROM PUBLIC is carried as such); a default ACL is left
 *   default. Grants to a missing role are named in the notice.
 * - Only objects carrying this migration's mark (marks.ts) are touched here; objects/ touches only
 *   what it has just created, in the same transaction, so a SECURITY DEFINER function is never
 *   visible with the migration role as owner.
 */
import type { Client } from 'pg';
import { preconditionFailed } from './errors';
import { markText } from './marks';
import { ident, qname } from './sql';
import { displayName, type NormalizedSpec, type OwnersSpec, type QualifiedName } from './spec';
import { mapSchema as mapSchemaName, mapSequenceName, mapTableName } from './naming';

/** One privilege of an ACL (aclexplode); grantee null is PUBLIC. */
export interface AclEntry {
  grantee: string | null;
  privilege: string;
  grantable: boolean;
}

/** The roles of the target: name -> superuser. */
export interface TargetRoles {
  roles: ReadonlyMap<string, boolean>;
  /** The migration role. */
  current: string;
  /**
   * The roles the migration role may give an object to (ALTER … OWNER TO needs membership of the
   * new owner, unless a superuser runs it); absent: any (a superuser).
   */
  member?: ReadonlySet<string>;
}

export type AlterKind = 'TABLE' | 'VIEW' | 'MATERIALIZED VIEW' | 'SEQUENCE' | 'ROUTINE' | 'TYPE' | 'DOMAIN' | 'SCHEMA';
export type GrantKind = 'TABLE' | 'SEQUENCE' | 'ROUTINE' | 'TYPE' | 'DOMAIN' | 'SCHEMA';

/** What the source says about one object's owner and access. */
export interface SourceAccess {
  alter: AlterKind;
  grant: GrantKind;
  /** The object's target name as SQL (`"app"."t"`, or a routine's signature). */
  name: string;
  owner: string;
  /** The owner is a superuser on the source. */
  ownerSuper: boolean;
  /** null: the default ACL (nothing to carry). */
  acl: AclEntry[] | null;
  /** Column grants of a table (attacl). */
  columns?: Array<{ column: string; acl: AclEntry[] }>;
  /** No ALTER OWNER of its own: an owned sequence follows its table. */
  ownedByTable?: boolean;
}

/** The target role that owns what `source` owns on the source, or undefined (the migration role keeps it). */
export function targetOwner(source: string, owners: OwnersSpec | undefined, roles: TargetRoles): string | undefined {
  if (owners === false) return undefined;
  const mapped = owners?.map[source] ?? source;
  if (roles.roles.has(mapped)) return mapped;
  if (owners?.default !== undefined && roles.roles.has(owners.default)) return owners.default;
  return undefined;
}

/** The target role a grant to `source` goes to (map only: a default owner is not a default grantee). */
function targetGrantee(source: string, owners: OwnersSpec | undefined, roles: TargetRoles): string | undefined {
  if (owners === false) return undefined;
  const mapped = owners?.map[source] ?? source;
  return roles.roles.has(mapped) ? mapped : undefined;
}

export interface AccessPlan {
  /** The owner on the target; undefined: the migration role keeps it. */
  owner?: string;
  /** ALTER … OWNER TO, REVOKE, GRANT: run after the object exists, in one transaction. */
  statements: string[];
  /** Source roles that own or are granted this object and have no role on the target. */
  missing: string[];
  /** The target role that should own it, of which the migration role is not a member: it keeps the object. */
  notMember?: string;
}

/** Pure: the statements that give one object its owner and grants on the target. */
export function accessStatements(a: SourceAccess, owners: OwnersSpec | undefined, roles: TargetRoles): AccessPlan {
  const plan: AccessPlan = { statements: [], missing: [] };
  if (owners === false) return plan;
  let owner = targetOwner(a.owner, owners, roles);
  if (owner === undefined) plan.missing.push(a.owner);
  else if (roles.member && owner !== roles.current && !roles.member.has(owner)) {
    plan.notMember = owner;
    owner = undefined;
  } else {
    plan.owner = owner;
    if (!a.ownedByTable && owner !== roles.current) plan.statements.push(`ALTER ${a.alter} ${a.name} OWNER TO ${ident(owner)}`);
  }
  /** The grantee as SQL: PUBLIC, or the target role; undefined when it has none. */
  const grantee = (r: string | null): string | undefined => {
    if (r === null) return 'PUBLIC';
    const g = r === a.owner ? owner : targetGrantee(r, owners, roles);
    if (g === undefined && !plan.missing.includes(r)) plan.missing.push(r);
    return g === undefined ? undefined : ident(g);
  };
  const grants = (acl: AclEntry[], column?: string): string[] => {
    const by = new Map<string, string[]>();
    for (const e of acl) {
      const to = grantee(e.grantee);
      if (to === undefined) continue;
      const key = `${e.grantable ? 'g' : ''}\u0000${to}`;
      by.set(key, [...(by.get(key) ?? []), column === undefined ? e.privilege : `${e.privilege} (${ident(column)})`]);
    }
    return [...by.entries()].map(([k, privs]) => {
      const [g, to] = k.split('\u0000') as [string, string];
      return `GRANT ${privs.join(', ')} ON ${a.grant} ${a.name} TO ${to}${g ? ' WITH GRANT OPTION' : ''}`;
    });
  };
  if (a.acl !== null) {
    // Like pg_dump: from the default to exactly the source's entries.
    plan.statements.push(`REVOKE ALL ON ${a.grant} ${a.name} FROM PUBLIC`);
    if (owner !== undefined) plan.statements.push(`REVOKE ALL ON ${a.grant} ${a.name} FROM ${ident(owner)}`);
    plan.statements.push(...grants(a.acl));
  }
  for (const c of a.columns ?? []) plan.statements.push(...grants(c.acl, c.column));
  return plan;
}

/** The notice for roles that could not be carried (none: undefined). */
export function missingRolesNotice(missing: Iterable<string>, current: string, explicit: boolean): string | undefined {
  const names = [...new Set(missing)].sort();
  if (names.length === 0) return undefined;
  return (
    `role(s) ${names.map((n) => JSON.stringify(n)).join(', ')} own or are granted objects on the source and do not exist on the target: ` +
    `what they own stays owned by ${JSON.stringify(current)} and their grants are not carried; create them on the target` +
    (explicit ? '' : ', or name their target roles in spec.owners (map, default)')
  );
}

/** The notice for owners the migration role could not give objects to (none: undefined). */
export function notMemberNotice(owners: Iterable<string>, roles: TargetRoles): string | undefined {
  const names = [...new Set(owners)].sort();
  if (names.length === 0) return undefined;
  return (
    `the migration role ${JSON.stringify(roles.current)} is neither a superuser nor a member of ${names.map((n) => JSON.stringify(n)).join(', ')}: ` +
    `what they own on the source stays owned by ${JSON.stringify(roles.current)} on the target; to carry it: ${names.map((n) => ownerGrantAdvice(n, roles)).join('; ')}`
  );
}

/** How to let the migration role give objects to `owner`: membership, but never of a superuser (it would make the migration role one). */
export function ownerGrantAdvice(owner: string, roles: TargetRoles): string {
  return roles.roles.get(owner) ? `map ${JSON.stringify(owner)}, a superuser, to another role in spec.owners.map` : `GRANT ${ident(owner)} TO ${ident(roles.current)}`;
}

export async function readTargetRoles(c: Client): Promise<TargetRoles> {
  const r = await c.query<{ rolname: string; rolsuper: boolean; current: boolean; member: boolean }>(
    `SELECT rolname::text AS rolname, rolsuper, rolname = current_user AS current, pg_has_role(current_user, oid, 'MEMBER') AS member FROM pg_roles`,
  );
  const current = r.rows.find((x) => x.current);
  return {
    roles: new Map(r.rows.map((x) => [x.rolname, x.rolsuper])),
    current: current?.rolname ?? '',
    ...(current?.rolsuper ? {} : { member: new Set(r.rows.filter((x) => x.member).map((x) => x.rolname)) }),
  };
}

/** SQL: an object's ACL as a JSON array of AclEntry, null when it is the default. */
export const aclJson = (acl: string): string =>
  `CASE WHEN ${acl} IS NULL THEN NULL ELSE coalesce((SELECT json_agg(json_build_object('grantee', CASE WHEN a.grantee = 0 THEN NULL ELSE pg_get_userbyid(a.grantee)::text END, 'privilege', a.privilege_type, 'grantable', a.is_grantable)) FROM aclexplode(${acl}) a), '[]') END`;

/** SQL: a table and its partitions, `(relid, level)` (pg_partition_tree lists nothing for a table that is not partitioned). */
const treeOf = (table: string): string => `(SELECT t.relid, t.level FROM pg_partition_tree(${table}) t UNION SELECT ${table}, 0)`;

/** SQL: the owner's name and whether it is a superuser on the source. */
export const ownerColumns = (owner: string): string =>
  `pg_get_userbyid(${owner})::text AS owner, coalesce((SELECT rolsuper FROM pg_roles WHERE oid = ${owner}), false) AS owner_super`;

interface AccessRow {
  schema: string;
  name: string;
  owner: string;
  owner_super: boolean;
  acl: AclEntry[] | null;
}

export interface TablesAccessInput {
  /** The migrated schemas: their schemas, sequences and types. */
  schemas: string[];
  /** Roots; partitions are found here. */
  tables: Array<{ source: QualifiedName; target: QualifiedName }>;
  schemaMapping: Record<string, string>;
  tableSuffix: string;
}

/** One object of ours on the target, with what the source says about it. */
export interface OwnedObject {
  label: string;
  access: SourceAccess;
}

/**
 * From the source (one snapshot, any role that can read the catalog): owners and ACLs of the
 * migrated schemas, tables and partitions, sequences and types, named as on the target.
 */
export async function readSourceAccess(client: Client, input: TablesAccessInput): Promise<OwnedObject[]> {
  const mapSchema = (s: string) => mapSchemaName(s, input);
  const out: OwnedObject[] = [];
  const schemas = [...new Set([...input.schemas, ...input.tables.map((t) => t.source.schema)])];
  for (const r of (
    await client.query<AccessRow>(
      `SELECT n.nspname::text AS schema, n.nspname::text AS name, ${ownerColumns('n.nspowner')}, ${aclJson('n.nspacl')} AS acl
         FROM pg_namespace n WHERE n.nspname = ANY($1::text[]) ORDER BY 1`,
      [schemas],
    )
  ).rows) {
    out.push({ label: `schema ${mapSchema(r.name)}`, access: { alter: 'SCHEMA', grant: 'SCHEMA', name: ident(mapSchema(r.name)), owner: r.owner, ownerSuper: r.owner_super, acl: r.acl } });
  }

  const rels = (
    await client.query<AccessRow & { root: number; level: number; columns: Array<{ column: string; acl: AclEntry[] }> | null }>(
      `SELECT w.i AS root, t.level, n.nspname::text AS schema, c.relname::text AS name, ${ownerColumns('c.relowner')}, ${aclJson('c.relacl')} AS acl,
              (SELECT json_agg(json_build_object('column', a.attname::text, 'acl', ${aclJson('a.attacl')}) ORDER BY a.attnum)
                 FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped AND a.attacl IS NOT NULL) AS columns
         FROM unnest($1::text[], $2::text[]) WITH ORDINALITY AS w(s, r, i)
         CROSS JOIN LATERAL ${treeOf("format('%I.%I', w.s, w.r)::regclass")} AS t
         JOIN pg_class c ON c.oid = t.relid
         JOIN pg_namespace n ON n.oid = c.relnamespace
        ORDER BY w.i, t.level, n.nspname, c.relname`,
      [input.tables.map((t) => t.source.schema), input.tables.map((t) => t.source.name)],
    )
  ).rows;
  for (const r of rels) {
    const root = input.tables[Number(r.root) - 1]!;
    const target = Number(r.level) === 0 ? root.target : mapTableName(r, input);
    const access: SourceAccess = { alter: 'TABLE', grant: 'TABLE', name: qname(target), owner: r.owner, ownerSuper: r.owner_super, acl: r.acl };
    if (r.columns?.length) access.columns = r.columns;
    out.push({ label: `table ${displayName(target)}`, access });
  }

  const seqs = (
    await client.query<AccessRow & { owned: boolean }>(
      `SELECT n.nspname::text AS schema, c.relname::text AS name, ${ownerColumns('c.relowner')}, ${aclJson('c.relacl')} AS acl,
              EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype IN ('a', 'i')) AS owned
         FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE c.relkind = 'S'
          AND NOT EXISTS (SELECT 1 FROM pg_depend e WHERE e.classid = 'pg_class'::regclass AND e.objid = c.oid AND e.deptype = 'e')
          AND (n.nspname = ANY($1::text[])
               OR EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype IN ('a', 'i')
                            AND d.refobjid IN (SELECT t.relid FROM unnest($2::text[], $3::text[]) AS w(s, r), LATERAL ${treeOf("format('%I.%I', w.s, w.r)::regclass")} t)))
        ORDER BY 1, 2`,
      [input.schemas, input.tables.map((t) => t.source.schema), input.tables.map((t) => t.source.name)],
    )
  ).rows;
  for (const r of seqs) {
    const target = mapSequenceName(r, input);
    out.push({
      label: `sequence ${displayName(target)}`,
      access: { alter: 'SEQUENCE', grant: 'SEQUENCE', name: qname(target), owner: r.owner, ownerSuper: r.owner_super, acl: r.acl, ...(r.owned ? { ownedByTable: true } : {}) },
    });
  }

  const types = (
    await client.query<AccessRow & { domain: boolean }>(
      `SELECT n.nspname::text AS schema, t.typname::text AS name, ${ownerColumns('t.typowner')}, ${aclJson('t.typacl')} AS acl, t.typtype = 'd' AS domain
         FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
        WHERE n.nspname = ANY($1::text[])
          AND (t.typtype IN ('e', 'd', 'r') OR (t.typtype = 'c' AND (SELECT relkind FROM pg_class WHERE oid = t.typrelid) = 'c'))
          AND NOT EXISTS (SELECT 1 FROM pg_depend e WHERE e.classid = 'pg_type'::regclass AND e.objid = t.oid AND e.deptype = 'e')
        ORDER BY 1, 2`,
      [input.schemas],
    )
  ).rows;
  for (const r of types) {
    const target = { schema: mapSchema(r.schema), name: r.name };
    const kind = r.domain ? 'DOMAIN' : 'TYPE';
    out.push({ label: `${kind.toLowerCase()} ${displayName(target)}`, access: { alter: kind, grant: kind, name: qname(target), owner: r.owner, ownerSuper: r.owner_super, acl: r.acl } });
  }
  return out;
}

/**
 * Which of these objects the migration created (its mark on the target: the object itself, or for
 * a sequence owned by a column, the table that owns it). Everything else is left alone.
 */
export async function oursOnTarget(c: Client, objects: readonly OwnedObject[], migrationId: string): Promise<OwnedObject[]> {
  const r = await c.query<{ i: number }>(
    `SELECT w.i FROM unnest($1::text[], $2::text[]) WITH ORDINALITY AS w(kind, name, i)
      WHERE CASE
        WHEN w.kind = 'SCHEMA' THEN obj_description(to_regnamespace(w.name), 'pg_namespace') = $3
        WHEN w.kind IN ('TYPE', 'DOMAIN') THEN obj_description(to_regtype(w.name), 'pg_type') = $3
        WHEN w.kind = 'TABLE' THEN obj_description(to_regclass(w.name), 'pg_class') = $3
        ELSE obj_description(to_regclass(w.name), 'pg_class') = $3
          OR EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass AND d.objid = to_regclass(w.name) AND d.deptype IN ('a', 'i')
                       AND obj_description(d.refobjid, 'pg_class') = $3)
      END`,
    [objects.map((o) => o.access.alter), objects.map((o) => o.access.name), markText(migrationId)],
  );
  const keep = new Set(r.rows.map((x) => Number(x.i)));
  return objects.filter((_o, i) => keep.has(i + 1));
}

/**
 * INIT, with an `owners` object: every source role owning something the migration will create must
 * end as a target role (its own name, owners.map's, or owners.default), and a migration role that is
 * not a superuser must be a member of each (ALTER … OWNER TO needs it). Refuses naming the roles.
 * Without one (objects: true), the same findings are notices: ownership moves only at FINALIZING,
 * so roles created meanwhile still count.
 */
export async function checkOwners(src: Client, dst: Client, spec: NormalizedSpec, tables: readonly QualifiedName[]): Promise<string[]> {
  const owners = spec.owners;
  if (owners === false || (owners === undefined && !spec.objects)) return [];
  const notExtension = (cls: string, oid: string) => `NOT EXISTS (SELECT 1 FROM pg_depend e WHERE e.classid = '${cls}'::regclass AND e.objid = ${oid} AND e.deptype = 'e')`;
  const objects = spec.objects
    ? `UNION ALL SELECT c.relowner FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = ANY($3::text[]) AND c.relkind IN ('v', 'm') AND ${notExtension('pg_class', 'c.oid')}
       UNION ALL SELECT p.proowner FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = ANY($3::text[]) AND ${notExtension('pg_proc', 'p.oid')}`
    : '';
  const r = await src.query<{ owner: string }>(
    `SELECT DISTINCT pg_get_userbyid(x.o)::text AS owner FROM (
       SELECT c.relowner AS o FROM unnest($1::text[], $2::text[]) AS w(s, r)
         CROSS JOIN LATERAL ${treeOf("format('%I.%I', w.s, w.r)::regclass")} t JOIN pg_class c ON c.oid = t.relid
       UNION ALL SELECT nspowner FROM pg_namespace WHERE nspname = ANY($3::text[])
       UNION ALL SELECT c.relowner FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = ANY($3::text[]) AND c.relkind = 'S' AND ${notExtension('pg_class', 'c.oid')}
       UNION ALL SELECT t.typowner FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
        WHERE n.nspname = ANY($3::text[]) AND t.typtype IN ('e', 'd', 'r', 'c') AND t.typrelid IN (0, (SELECT oid FROM pg_class WHERE oid = t.typrelid AND relkind = 'c')) AND ${notExtension('pg_type', 't.oid')}
       ${objects}
     ) x ORDER BY 1`,
    [tables.map((t) => t.schema), tables.map((t) => t.name), spec.schemas],
  );
  const roles = await readTargetRoles(dst);
  if (owners?.default !== undefined && !roles.roles.has(owners.default)) {
    throw preconditionFailed(`owners.default names role ${JSON.stringify(owners.default)}, which does not exist on the target: create it, or name an existing role`);
  }
  const missing = r.rows.map((x) => x.owner).filter((o) => targetOwner(o, owners, roles) === undefined);
  if (owners === undefined) {
    const needed = r.rows.map((x) => targetOwner(x.owner, owners, roles)).filter((o): o is string => o !== undefined && o !== roles.current && roles.member?.has(o) === false);
    return [missingRolesNotice(missing, roles.current, false), notMemberNotice(needed, roles)]
      .filter((n): n is string => n !== undefined)
      .map((n) => `${n} (found in preflight: owners move at FINALIZING, so what is granted or created on the target before then counts)`);
  }
  if (missing.length) {
    const as = (o: string) => (owners.map[o] !== undefined ? `${JSON.stringify(owners.map[o])} (owners.map of ${JSON.stringify(o)})` : JSON.stringify(o));
    throw preconditionFailed(
      `the target has no role ${missing.map(as).join(', ')}, which own(s) what the migration creates on the source's behalf: create them on the target, map them to existing roles (owners.map), or name a default owner (owners.default)`,
    );
  }
  const notMember = [...new Set(r.rows.map((x) => targetOwner(x.owner, owners, roles)!))].filter((o) => o !== roles.current && roles.member?.has(o) === false).sort();
  if (notMember.length) {
    throw preconditionFailed(
      `the target role ${JSON.stringify(roles.current)} is not a superuser and cannot give what the migration creates to ${notMember.map((x) => JSON.stringify(x)).join(', ')} ` +
        `(ALTER … OWNER TO needs membership of the new owner): ${notMember.map((x) => ownerGrantAdvice(x, roles)).join('; ')}`,
    );
  }
  return [];
}

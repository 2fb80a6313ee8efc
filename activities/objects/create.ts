/**
 * Creating the planned objects on the target.
 *
 * Each object is created in its own transaction, in dependency order (pg_depend, through pg_rewrite
 * for views). An object whose creation fails, or that needs something the target does not have (a
 * table that is not migrated, a function or type of another schema), is skipped with the reason, and
 * so is everything that depends on it; the others go on. Idempotent: an object that already exists on
 * the target with the same definition counts as created (a re-run, a retried activity); one that
 * exists with a different definition is left alone and reported. Materialized views are created WITH
 * NO DATA and refreshed at the end (unless the source's was never populated either), as their owner.
 *
 * Owners and grants (owners.ts) are set in each object's creating transaction, so a SECURITY DEFINER
 * function is never visible owned by the migration role; it is created only when its owner on the
 * target is a role that is not a superuser. The schemas, tables, sequences and types CREATING_TABLES
 * made get theirs first: the views' and matviews' owners need their rights on the tables.
 */
import type { Client } from 'pg';
import { accessStatements, type AccessPlan, type OwnedObject, type TargetRoles } from '../owners';
import { displayName, type OwnersSpec } from '../spec';
import { ident, qname } from '../sql';
import { readAggregates } from './catalog';
import type { SchemaObjectsHooks, SchemaObjectsResult } from './contract';
import { aggregateDdl } from './ddl';
import { sameDefinition } from './lexer';
import { RELKIND_WORDS, SECURITY_DEFINER_UNOWNED, type PlannedObject, type Requirement } from './plan';
import type { ObjectRenames } from './rename';

/** Errors a retry may cure (connection, lock, deadlock, shutdown, resources): they fail the activity instead of skipping an object. */
function transient(err: unknown): boolean {
  const code = (err as { code?: unknown })?.code;
  if (typeof code !== 'string' || !/^[0-9A-Z]{5}$/.test(code)) return true; // no SQLSTATE: the connection itself
  return /^(08|40|53|57|58)/.test(code) || code === '55P03' || code === '55006';
}

function errorText(err: unknown): string {
  const e = err as { message?: unknown; code?: unknown };
  const msg = typeof e?.message === 'string' ? e.message : String(err);
  return typeof e?.code === 'string' ? `${msg} (SQLSTATE ${e.code})` : msg;
}

type Existing = 'absent' | 'same' | { different: string };

async function existingState(c: Client, o: PlannedObject): Promise<Existing> {
  const ex = o.existing;
  if (ex.kind === 'function') {
    const r = await c.query<{ oid: number; prokind: string }>(`SELECT p.oid, p.prokind::text AS prokind FROM pg_proc p WHERE p.oid = to_regprocedure($1)`, [ex.signature]);
    const row = r.rows[0];
    if (!row) return 'absent';
    if ((row.prokind === 'a') !== ex.aggregate) return { different: `a ${row.prokind === 'a' ? 'aggregate' : 'function'} with that signature already exists on the target` };
    let current: string;
    if (ex.aggregate) {
      const agg = (await readAggregates(c, [Number(row.oid)])).get(Number(row.oid));
      if (!agg) return { different: 'an aggregate with that signature already exists on the target' };
      const name = await c.query<{ schema: string; name: string }>(
        `SELECT n.nspname::text AS schema, p.proname::text AS name FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace WHERE p.oid = $1`,
        [row.oid],
      );
      const identity: ObjectRenames = { relations: new Map(), functions: new Map(), types: new Map(), schemaMapping: {} };
      current = aggregateDdl(agg, name.rows[0]!, identity);
    } else {
      current = (await c.query<{ d: string }>(`SELECT pg_get_functiondef($1::oid) AS d`, [row.oid])).rows[0]!.d;
    }
    return sameDefinition(current, o.compareText) ? 'same' : { different: 'a different function with that name and arguments already exists on the target' };
  }
  if (ex.kind === 'relation') {
    const r = await c.query<{ relkind: string; def: string | null }>(
      `SELECT c.relkind::text AS relkind, CASE WHEN c.relkind IN ('v', 'm') THEN pg_get_viewdef(c.oid) END AS def FROM pg_class c WHERE c.oid = to_regclass($1)`,
      [qname(ex.name)],
    );
    const row = r.rows[0];
    if (!row) return 'absent';
    if (row.relkind !== ex.relkind) return { different: `a ${RELKIND_WORDS[row.relkind] ?? 'relation'} named ${displayName(ex.name)} already exists on the target` };
    return row.def !== null && sameDefinition(row.def, o.compareText) ? 'same' : { different: `${displayName(ex.name)} already exists on the target with a different definition` };
  }
  const r = await c.query<{ def: string }>(`SELECT pg_get_triggerdef(t.oid) AS def FROM pg_trigger t WHERE t.tgrelid = to_regclass($1) AND t.tgname = $2`, [
    qname(ex.table),
    ex.name,
  ]);
  const row = r.rows[0];
  if (!row) return 'absent';
  return sameDefinition(row.def, o.compareText) ? 'same' : { different: `a different trigger ${ex.name} already exists on ${displayName(ex.table)}` };
}

async function inTransaction(c: Client, statements: string[]): Promise<void> {
  await c.query('BEGIN');
  try {
    for (const s of statements) await c.query(s);
    await c.query('COMMIT');
  } catch (err) {
    await c.query('ROLLBACK').catch(() => undefined);
    throw err;
  }
}

/** Which of the requirements exist on the target (by `kind:lookup`). */
async function availableOnTarget(c: Client, reqs: Requirement[]): Promise<Set<string>> {
  const ok = new Set<string>();
  const fn = { relation: 'to_regclass', function: 'to_regprocedure', type: 'to_regtype' } as const;
  for (const kind of ['relation', 'function', 'type'] as const) {
    const names = [...new Set(reqs.filter((r) => r.kind === kind).map((r) => r.lookup))];
    if (names.length === 0) continue;
    const r = await c.query<{ x: string }>(`SELECT x FROM unnest($1::text[]) AS x WHERE ${fn[kind]}(x) IS NOT NULL`, [names]);
    for (const row of r.rows) ok.add(`${kind}:${row.x}`);
  }
  return ok;
}

/** How objects get their owners: spec.owners and the target's roles (absent: the migration role keeps them). */
export interface OwnersContext {
  owners: OwnersSpec | undefined;
  roles: TargetRoles;
  /** Source roles that could not be carried (filled in). */
  missing: Set<string>;
  /** Target owners the migration role is not a member of (filled in). */
  notMember: Set<string>;
}

/**
 * Owners and grants of objects CREATING_TABLES made (ours by their mark), one transaction each. A
 * failure (a non-superuser migration role that is not a member of the owner role) leaves that object
 * as it was and says so.
 */
export async function carryAccess(c: Client, objects: readonly OwnedObject[], ctx: OwnersContext, notices: string[]): Promise<void> {
  for (const o of objects) {
    const plan = accessStatements(o.access, ctx.owners, ctx.roles);
    for (const m of plan.missing) ctx.missing.add(m);
    if (plan.notMember) ctx.notMember.add(plan.notMember);
    if (plan.statements.length === 0) continue;
    try {
      await inTransaction(c, plan.statements);
    } catch (err) {
      if (transient(err)) throw err;
      notices.push(`the owner and grants of ${o.label} were not carried: ${errorText(err)}`);
    }
  }
}

/**
 * A materialized view is refreshed as its owner on the target (REFRESH runs its query, and the
 * functions it calls, with the owner's rights): never as a superuser unless its source owner was one.
 */
async function refreshAsOwner(c: Client, o: PlannedObject): Promise<string | undefined> {
  const r = await c.query<{ owner: string; superuser: boolean }>(
    `SELECT r.rolname::text AS owner, r.rolsuper AS superuser FROM pg_class c JOIN pg_roles r ON r.oid = c.relowner WHERE c.oid = to_regclass($1)`,
    [o.existing.kind === 'relation' ? qname(o.existing.name) : ''],
  );
  const owner = r.rows[0];
  if (!owner) return 'it was not found on the target to refresh';
  if (owner.superuser && !o.access?.ownerSuper) {
    return `not refreshed: its owner on the target, ${JSON.stringify(owner.owner)}, is a superuser and its source owner${o.access ? ` ${JSON.stringify(o.access.owner)}` : ''} is not (its owner was not carried), and refreshing runs its query with the owner's rights; give it an owner and refresh it`;
  }
  await inTransaction(c, [`SET LOCAL ROLE ${ident(owner.owner)}`, o.refresh!]);
  return undefined;
}

/** Why a SECURITY DEFINER function may not be created: its owner on the target would not be the source's, or would be a superuser. */
function securityDefinerRefusal(o: PlannedObject, a: AccessPlan | undefined, access: OwnersContext | undefined): string | undefined {
  // Its callers run it with its owner's rights: the owner must be the source's (mapped), and no superuser.
  return a?.owner === undefined
    ? `${SECURITY_DEFINER_UNOWNED}${
        !access
          ? ' (spec.owners is false)'
          : a?.notMember
          ? ` (the migration role is not a member of ${JSON.stringify(a.notMember)}, which should own it)`
          : o.access
            ? ` (its owner on the source, ${JSON.stringify(o.access.owner)}, has no role on the target)`
            : ''
      }`
    : access?.roles.roles.get(a.owner)
      ? `SECURITY DEFINER: its owner on the target would be ${JSON.stringify(a.owner)}, a superuser, and its callers would run it with those rights; create it yourself, owned by a role that is not a superuser`
      : undefined;
}

/** Creates the planned objects on the target (see this file's comment), with their owners and grants when `access` is given. */
export async function createPlannedObjects(c: Client, plan: PlannedObject[], hooks: SchemaObjectsHooks = {}, access?: OwnersContext): Promise<SchemaObjectsResult> {
  const result: SchemaObjectsResult = { created: [], skipped: [], notices: [], rewritten: [] };
  // Like pg_dump: names in the definitions are qualified; function bodies are not checked at creation
  // (they may name tables through a search_path, and plpgsql is checked when it runs anyway).
  await c.query(`SET search_path = ''`);
  await c.query('SET check_function_bodies = off');
  // The application may be writing to the target already: queue briefly behind it, then retry later.
  await c.query(`SET lock_timeout = '30s'`);
  const available = await availableOnTarget(c, plan.flatMap((o) => o.requires));
  const state = new Map<string, 'created' | 'kept' | 'skipped'>();
  const label = new Map(plan.map((o) => [o.key, o.label]));
  const skip = (o: PlannedObject, reason: string) => {
    state.set(o.key, 'skipped');
    result.skipped.push({ object: o.label, reason });
  };
  let present = 0;
  let done = 0;
  for (const o of plan) {
    if (hooks.signal?.aborted) throw new Error('cancelled while creating views, functions and triggers');
    hooks.heartbeat?.({ done: done++, total: plan.length });
    if (o.notices) result.notices.push(...o.notices);
    const blocked = o.dependsOn.filter((d) => state.get(d) === 'skipped');
    if (o.problem) {
      skip(o, o.problem);
      continue;
    }
    if (blocked.length) {
      skip(o, `depends on ${blocked.map((b) => label.get(b) ?? b).join(', ')}, which was not created`);
      continue;
    }
    const missing = o.requires.filter((r) => !available.has(`${r.kind}:${r.lookup}`));
    if (missing.length) {
      skip(o, missing.map((m) => m.reason).join('; '));
      continue;
    }
    try {
      const ex = await existingState(c, o);
      if (ex === 'same') {
        if (o.ensure.length) await inTransaction(c, o.ensure);
        present++;
        state.set(o.key, 'created');
        result.created.push(o.createdLabel);
        if (o.rewritten) result.rewritten.push(o.rewritten);
      } else if (ex !== 'absent') {
        // Someone else's object: never replaced. Whatever depends on it will use it as it is.
        state.set(o.key, 'kept');
        result.skipped.push({ object: o.label, reason: `${ex.different}; left as it is` });
      } else {
        const a = access && o.access ? accessStatements(o.access, access.owners, access.roles) : undefined;
        for (const m of a?.missing ?? []) access?.missing.add(m);
        if (a?.notMember) access?.notMember.add(a.notMember);
        if (o.securityDefiner) {
          const why = securityDefinerRefusal(o, a, access);
          if (why) {
            skip(o, why);
            continue;
          }
        }
        try {
          await inTransaction(c, [...o.statements, ...(a?.statements ?? [])]);
        } catch (err) {
          // Without its owner a SECURITY DEFINER function is not created at all (above); another object is, and the failure is said.
          if (transient(err) || !a?.statements.length || o.securityDefiner) throw err;
          await inTransaction(c, o.statements);
          result.notices.push(`the owner and grants of ${o.label} were not carried: ${errorText(err)}`);
        }
        state.set(o.key, 'created');
        result.created.push(o.createdLabel);
        if (o.rewritten) result.rewritten.push(o.rewritten);
      }
    } catch (err) {
      if (transient(err)) throw err;
      skip(o, `creating it failed: ${errorText(err)}`);
    }
  }
  await refreshCreated(c, plan.filter((o) => o.refresh && state.get(o.key) === 'created'), result, hooks, { done, total: plan.length });
  if (present) result.notices.push(`${present} of these objects were already on the target with the same definition (a re-run)`);
  return result;
}

/** The materialized views created here that were populated on the source, refreshed; one that fails is counted as skipped. */
async function refreshCreated(c: Client, matviews: PlannedObject[], result: SchemaObjectsResult, hooks: SchemaObjectsHooks, progress: { done: number; total: number }): Promise<void> {
  for (const o of matviews) {
    if (hooks.signal?.aborted) throw new Error('cancelled while refreshing materialized views');
    hooks.heartbeat?.(progress);
    try {
      const notRefreshed = await refreshAsOwner(c, o);
      if (notRefreshed) {
        result.notices.push(`${o.label}: ${notRefreshed}`);
        continue;
      }
    } catch (err) {
      if (transient(err)) throw err;
      result.created = result.created.filter((x) => x !== o.createdLabel);
      result.skipped.push({ object: o.label, reason: `created, but REFRESH MATERIALIZED VIEW failed: ${errorText(err)}` });
    }
  }
}

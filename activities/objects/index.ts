/**
 * Optional, after cutover: the views, materialized views, functions, procedures, aggregates and
 * triggers of the migrated schemas, recreated on the target under the name mapping.
 *
 * The work is in steps, one module each: the source's catalog is read (catalog.ts), planned under
 * the mapping (plan.ts: renames by rename.ts and function-body.ts on lexer.ts's tokens, DDL by
 * ddl.ts) and created on the target (create.ts).
 */
import type { Client } from 'pg';
import { connect } from '../db';
import { during } from '../errors';
import { missingRolesNotice, notMemberNotice, oursOnTarget, readSourceAccess, readTargetRoles } from '../owners';
import { readObjectCatalog } from './catalog';
import type { SchemaObjectsHooks, SchemaObjectsInput, SchemaObjectsResult } from './contract';
import { carryAccess, createPlannedObjects, type OwnersContext } from './create';
import { planSchemaObjects } from './plan';

export type { SchemaObjectsInput, SchemaObjectsResult } from './contract';

/**
 * The activity: reads the source's objects, plans them under the mapping and creates them on the
 * target. Call after cutover, once the apply has stopped (how objects are created and owned: create.ts).
 */
export async function migrateSchemaObjects(input: SchemaObjectsInput, hooks: SchemaObjectsHooks = {}): Promise<SchemaObjectsResult> {
  let source: Client | undefined;
  let target: Client | undefined;
  try {
    source = await connect(input.source, { applicationName: 'pg-dts objects' });
    const withObjects = input.objects !== false;
    const catalog = withObjects ? await readObjectCatalog(source, input) : undefined;
    const carried = input.owners !== false && input.migrationId ? await readSourceAccess(source, input) : [];
    await source.end().catch(() => undefined);
    source = undefined;
    const plan = catalog ? planSchemaObjects(catalog, input) : [];
    target = await connect(input.target, { applicationName: 'pg-dts objects' });
    const ctx: OwnersContext | undefined = input.owners === false ? undefined : { owners: input.owners, roles: await readTargetRoles(target), missing: new Set(), notMember: new Set() };
    const notices: string[] = [];
    // Tables, schemas, sequences and types first: views and functions owned by those roles, and the
    // refresh as the matview's owner, need the owner's rights on the tables.
    if (ctx && input.migrationId) {
      await target.query(`SET lock_timeout = '30s'`);
      await carryAccess(target, await oursOnTarget(target, carried, input.migrationId), ctx, notices);
    }
    const result = await createPlannedObjects(target, plan, hooks, ctx);
    const missing = ctx && missingRolesNotice(ctx.missing, ctx.roles.current, input.owners !== undefined);
    const notMember = ctx && notMemberNotice(ctx.notMember, ctx.roles);
    result.notices.push(...notices, ...[missing, notMember].filter((n): n is string => n !== undefined));
    return result;
  } catch (err) {
    throw during(err, 'create views, functions and triggers');
  } finally {
    await source?.end().catch(() => undefined);
    await target?.end().catch(() => undefined);
  }
}

import { describe, expect, it } from 'vitest';
import { accessStatements, missingRolesNotice, targetOwner, type SourceAccess, type TargetRoles } from '../../activities/owners';
import { normalizeSpec } from '../../activities/spec';

const roles: TargetRoles = { roles: new Map([['postgres', true], ['alice', false], ['bob', false], ['app', false]]), current: 'postgres' };
const fn: SourceAccess = { alter: 'ROUTINE', grant: 'ROUTINE', name: 'app.f(integer)', owner: 'alice', ownerSuper: false, acl: null };

describe('owners and grants (pure)', () => {
  it('picks the source owner, then owners.map, then owners.default; false carries nothing', () => {
    expect(targetOwner('alice', undefined, roles)).toBe('alice');
    expect(targetOwner('ghost', undefined, roles)).toBeUndefined();
    expect(targetOwner('ghost', { map: { ghost: 'bob' } }, roles)).toBe('bob');
    expect(targetOwner('alice', { map: { alice: 'app' } }, roles)).toBe('app');
    expect(targetOwner('ghost', { map: {}, default: 'app' }, roles)).toBe('app');
    expect(targetOwner('ghost', { map: { ghost: 'nobody' } }, roles)).toBeUndefined();
    expect(targetOwner('alice', false, roles)).toBeUndefined();
  });

  it('a default ACL: only the owner changes', () => {
    expect(accessStatements(fn, undefined, roles)).toEqual({ owner: 'alice', statements: ['ALTER ROUTINE app.f(integer) OWNER TO "alice"'], missing: [] });
  });

  it('reproduces a REVOKE … FROM PUBLIC and grants, grant options apart, mapped grantees, missing ones named', () => {
    const acl = [
      { grantee: 'alice', privilege: 'EXECUTE', grantable: false },
      { grantee: 'bob', privilege: 'EXECUTE', grantable: true },
      { grantee: 'ghost', privilege: 'EXECUTE', grantable: false },
    ];
    expect(accessStatements({ ...fn, acl }, { map: { alice: 'app' } }, roles)).toEqual({
      owner: 'app',
      statements: [
        'ALTER ROUTINE app.f(integer) OWNER TO "app"',
        'REVOKE ALL ON ROUTINE app.f(integer) FROM PUBLIC',
        'REVOKE ALL ON ROUTINE app.f(integer) FROM "app"',
        'GRANT EXECUTE ON ROUTINE app.f(integer) TO "app"',
        'GRANT EXECUTE ON ROUTINE app.f(integer) TO "bob" WITH GRANT OPTION',
      ],
      missing: ['ghost'],
    });
  });

  it('column grants, an owned sequence without ALTER OWNER, and an owner that stays the migration role', () => {
    const table: SourceAccess = {
      alter: 'TABLE',
      grant: 'TABLE',
      name: '"app"."t"',
      owner: 'ghost',
      ownerSuper: false,
      acl: [
        { grantee: 'ghost', privilege: 'SELECT', grantable: false },
        { grantee: null, privilege: 'SELECT', grantable: false },
      ],
      columns: [{ column: 'Name', acl: [{ grantee: 'bob', privilege: 'SELECT', grantable: false }, { grantee: 'bob', privilege: 'UPDATE', grantable: false }] }],
    };
    expect(accessStatements(table, undefined, roles)).toEqual({
      statements: ['REVOKE ALL ON TABLE "app"."t" FROM PUBLIC', 'GRANT SELECT ON TABLE "app"."t" TO PUBLIC', 'GRANT SELECT ("Name"), UPDATE ("Name") ON TABLE "app"."t" TO "bob"'],
      missing: ['ghost'],
    });
    const seq: SourceAccess = { alter: 'SEQUENCE', grant: 'SEQUENCE', name: '"app"."t_id_seq"', owner: 'alice', ownerSuper: false, acl: null, ownedByTable: true };
    expect(accessStatements(seq, undefined, roles)).toEqual({ owner: 'alice', statements: [], missing: [] });
    expect(accessStatements({ ...table, owner: 'alice' }, false, roles)).toEqual({ statements: [], missing: [] });
  });

  it('names the roles to create', () => {
    expect(missingRolesNotice([], 'postgres', false)).toBeUndefined();
    expect(missingRolesNotice(['b', 'a', 'b'], 'postgres', false)).toMatch(/^role\(s\) "a", "b" own or are granted .* stays owned by "postgres" .*spec\.owners \(map, default\)$/);
  });
});

describe('spec.owners', () => {
  const base = { source: 'postgres://u@h/db', target: 'postgres://u@h2/db' };
  it('is absent by default, false or { map, default } when given', () => {
    expect(normalizeSpec(base).owners).toBeUndefined();
    expect(normalizeSpec({ ...base, owners: false }).owners).toBe(false);
    expect(normalizeSpec({ ...base, owners: {} }).owners).toEqual({ map: {} });
    expect(normalizeSpec({ ...base, owners: { map: { old: 'new' }, default: 'app' } }).owners).toEqual({ map: { old: 'new' }, default: 'app' });
  });
  it('refuses what is not a role that may own objects', () => {
    expect(() => normalizeSpec({ ...base, owners: true })).toThrow(/owners/);
    expect(() => normalizeSpec({ ...base, owners: { default: 'public' } })).toThrow(/owners\.default: is not a role that may own objects/);
    expect(() => normalizeSpec({ ...base, owners: { map: { a: 'pg_read_all_data' } } })).toThrow(/owners\.map\.a: is not a role/);
    expect(() => normalizeSpec({ ...base, owners: { map: { ['é'.repeat(32)]: 'a' } } })).toThrow(/owners\.map: key .* longer than 63 bytes/);
    expect(() => normalizeSpec({ ...base, owners: { roles: {} } })).toThrow(/owners/);
  });
});

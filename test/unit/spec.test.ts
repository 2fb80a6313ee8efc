import { describe, expect, it } from 'vitest';
import { normalizeSpec, parseTableName, SpecError } from '../../activities/spec';
import { mapTableName } from '../../activities/naming';
import { scrub } from '../../activities/errors';
import { ident, qname } from '../../activities/sql';
import { migrationIdFor } from '../../workflows/names';
import { applySignal } from '../../workflows/state';

describe('parseTableName', () => {
  it('splits, keeps case, honours quotes', () => {
    expect(parseTableName('orders', 'public')).toEqual({ schema: 'public', name: 'orders' });
    expect(parseTableName('public.Users', 'x')).toEqual({ schema: 'public', name: 'Users' });
    expect(parseTableName('Sales Dept.Order Items', 'public')).toEqual({ schema: 'Sales Dept', name: 'Order Items' });
    expect(parseTableName('"Sales Dept"."Order Items"', 'public')).toEqual({ schema: 'Sales Dept', name: 'Order Items' });
    expect(parseTableName('"a.b"."say ""hi"""', 'public')).toEqual({ schema: 'a.b', name: 'say "hi"' });
  });
  it('refuses malformed names', () => {
    expect(() => parseTableName('a.b.c', 'public')).toThrow(/more than one unquoted dot/);
    expect(() => parseTableName('"abc', 'public')).toThrow(/unterminated double quote/);
    expect(() => parseTableName('a.', 'public')).toThrow(/empty part/);
    expect(() => parseTableName('x'.repeat(64), 'public')).toThrow(/longer than 63 bytes/);
  });
});

describe('normalizeSpec', () => {
  it('fills defaults', () => {
    const s = normalizeSpec({ source: 'postgres://u@h/db', target: { host: 'h2', database: 'db' } });
    expect(s).toMatchObject({
      schemas: ['public'],
      tableSuffix: '',
      schemaMapping: {},
      cutover: { mode: 'auto' },
      afterCutover: 'restore-writes',
      mode: 'online',
      parallelism: 4,
    });
    expect(s.tables).toBeUndefined();
  });
  it('qualifies unqualified tables with the first schema', () => {
    const s = normalizeSpec({ source: 'postgres://h/d', target: 'postgres://h/e', schemas: ['app', 'public'], tables: ['users', 'public.orders'] });
    expect(s.tables).toEqual([
      { schema: 'app', name: 'users' },
      { schema: 'public', name: 'orders' },
    ]);
  });
  it('names every bad field', () => {
    const bad = () => normalizeSpec({ source: 'mysql://x', target: 'postgres://h/d', parallelism: 0, extra: 1 });
    expect(bad).toThrow(SpecError);
    expect(bad).toThrow(/source: must be a postgres:\/\//);
    expect(bad).toThrow(/parallelism/);
    expect(bad).toThrow(/extra/);
    expect(() => normalizeSpec(null)).toThrow(/expected a JSON object/);
    expect(() => normalizeSpec({ source: 'postgres://h/d', target: 'postgres://h/d', tables: ['a', 'public.a'] })).toThrow(/listed twice/);
    expect(() => normalizeSpec({ source: 'postgres://h/d', target: 'postgres://h/d', tableSuffix: 'x;drop' })).toThrow(/tableSuffix/);
  });
});

describe('mapping and quoting', () => {
  it('maps schema and appends the suffix', () => {
    expect(mapTableName({ schema: 'public', name: 'users' }, { schemaMapping: { public: 'app' }, tableSuffix: '_m' })).toEqual({ schema: 'app', name: 'users_m' });
    expect(mapTableName({ schema: 'x', name: 'Users' }, { schemaMapping: { public: 'app' }, tableSuffix: '' })).toEqual({ schema: 'x', name: 'Users' });
  });
  it('quotes every identifier', () => {
    expect(ident('users')).toBe('"users"');
    expect(ident('Say "hi"')).toBe('"Say ""hi"""');
    expect(qname({ schema: 'Sales Dept', name: 'Order Items' })).toBe('"Sales Dept"."Order Items"');
  });
});

describe('secrets', () => {
  it('scrubs passwords from messages', () => {
    expect(scrub('failed postgres://alice:s3cr3t@db:5432/x')).toBe('failed postgres://alice:***@db:5432/x');
    expect(scrub("host=db password='p w' user=x")).toBe('host=db password=*** user=x');
  });
});

describe('workflow helpers', () => {
  it('derives stable, slot-safe migration ids', () => {
    const a = migrationIdFor('Migration-ABC/2024');
    expect(a).toMatch(/^[a-z0-9_]{1,40}$/);
    expect(migrationIdFor('Migration-ABC/2024')).toBe(a);
    expect(migrationIdFor('migration-abc-2024')).not.toBe(a);
    expect(migrationIdFor('x'.repeat(200)).length).toBeLessThanOrEqual(40);
  });
  it('pause and resume flip the flag, not after the end', () => {
    expect(applySignal({ phase: 'MIGRATING_DATA', paused: false }, 'pause')).toMatchObject({ paused: true });
    expect(applySignal({ phase: 'MIGRATING_DATA', paused: true }, 'resume')).toMatchObject({ paused: false });
    expect(applySignal({ phase: 'COMPLETED', paused: false }, 'pause')).not.toHaveProperty('paused');
  });
  it('refuses a pause while the source is fenced, with the reason', () => {
    for (const phase of ['STOPPING_WRITES', 'VALIDATING', 'FINALIZING'] as const) {
      const r = applySignal({ phase, paused: false }, 'pause');
      expect(r).not.toHaveProperty('paused');
      expect(r.lastControl).toMatch(/pause refused in .*source writes are stopped/);
    }
    expect(applySignal({ phase: 'SYNCING_WAL', paused: false }, 'pause')).toMatchObject({ paused: true });
  });
});

describe('reserved schemas and identifier length', () => {
  const base = { source: 'postgres://u@h/db', target: 'postgres://u@h2/db' };
  it('refuses system schemas and pgdts as sources, tables and mapping values', () => {
    expect(() => normalizeSpec({ ...base, schemas: ['pg_catalog'] })).toThrow(/schemas\.0: is a reserved schema/);
    expect(() => normalizeSpec({ ...base, schemas: ['information_schema'] })).toThrow(/reserved schema/);
    expect(() => normalizeSpec({ ...base, tables: ['pg_catalog.pg_authid'] })).toThrow(/tables: "pg_catalog" is a reserved schema/);
    expect(() => normalizeSpec({ ...base, schemaMapping: { public: 'information_schema' } })).toThrow(/schemaMapping\.public: is a reserved schema/);
    expect(() => normalizeSpec({ ...base, schemaMapping: { public: 'pgdts' } })).toThrow(/reserved schema/);
    expect(() => normalizeSpec({ ...base, schemaMapping: { pgdts: 'app' } })).toThrow(/reserved schema/);
    expect(normalizeSpec({ ...base, schemas: ['pgdts_app', 'app_pg_x'] }).schemas).toEqual(['pgdts_app', 'app_pg_x']);
  });
  it('counts identifiers in bytes, as PostgreSQL does', () => {
    const s32 = 'é'.repeat(32); // 32 characters, 64 bytes
    expect(() => normalizeSpec({ ...base, schemas: [s32] })).toThrow(/longer than 63 bytes/);
    expect(() => normalizeSpec({ ...base, schemaMapping: { public: s32 } })).toThrow(/longer than 63 bytes/);
    expect(() => normalizeSpec({ ...base, tables: [`public.${s32}`] })).toThrow(/longer than 63 bytes/);
    expect(normalizeSpec({ ...base, schemas: ['é'.repeat(31)] }).schemas).toHaveLength(1);
  });
});

describe('connection URIs are validated in the spec check', () => {
  const at = (uri: string) => () => normalizeSpec({ source: uri, target: 'postgres://u@h2/db' });
  it('refuses what would fail late or be silently ignored', () => {
    expect(at('postgres://u@h:70000/db')).toThrow(/source: is not a valid URI/);
    expect(at('postgres://u@h:0/db')).toThrow(/port 0/);
    expect(at('postgres://u@h/db?port=99999')).toThrow(/port=99999/);
    expect(at('postgres://u@h/db?sslmode=maybe')).toThrow(/sslmode=maybe; expected one of disable, allow, prefer, require, verify-ca, verify-full/);
    expect(at('postgres://u@h/db?ssl=true')).toThrow(/use sslmode=/);
    expect(at('postgres://u@h/db?sslcompression=1')).toThrow(/"sslcompression", which pg-dts does not support/);
    expect(() => normalizeSpec({ source: { host: 'h', sslmode: 'maybe' }, target: 'postgres://h/db' })).toThrow(SpecError);
  });
  it('accepts libpq URIs with TLS files and socket hosts', () => {
    expect(at('postgres://u@h:5432/db?sslmode=verify-full&sslrootcert=/etc/ca.crt&sslcert=/c&sslkey=/k')).not.toThrow();
    expect(at('postgresql:///db?host=/var/run/postgresql')).not.toThrow();
    expect(() => normalizeSpec({ source: { host: 'h', sslmode: 'verify-ca', sslrootcert: 'system' }, target: 'postgres://h/db' })).not.toThrow();
  });
});

/**
 * The pure parts of the REST API and the shared client helpers: the seed body → MigrationSpec
 * mapping, field names in errors, state derivation, visibility queries, password handling.
 */
import { describe, expect, it } from 'vitest';
import { fieldOfSpecError, toMigrationSpec } from '../../client/api';
import { CreateMigrationSchema } from '../../client/openapi';
import { assertSecretsProtected, describeEndpoint, hasPassword, InputError, listQuery, migrationMetadata, stateOf } from '../../client/temporal';
import { normalizeSpec, SpecError } from '../../activities/spec';

const seedBody = {
  source_db: { host: 'old-db', port: 5432, user: 'app', password: 'pw', dbname: 'shop', sslmode: 'require' },
  target_db: { host: 'new-db', port: '6432', user: 'app', dbname: 'shop' },
  tables: ['public.users', 'orders'],
  table_suffix: '_migrated',
};

describe('REST body', () => {
  it('maps the seed body onto a MigrationSpec', () => {
    const body = CreateMigrationSchema.parse({ ...seedBody, cutover: 'manual', max_lag_bytes: 4096, keep_target_on_cancel: true });
    const spec = toMigrationSpec(body);
    expect(spec).toEqual({
      source: { host: 'old-db', port: 5432, user: 'app', password: 'pw', database: 'shop', sslmode: 'require' },
      target: { host: 'new-db', port: 6432, user: 'app', database: 'shop' },
      tables: ['public.users', 'orders'],
      tableSuffix: '_migrated',
      cutover: { mode: 'manual', maxLagBytes: 4096 },
      keepTargetOnCancel: true,
    });
    expect(() => normalizeSpec(spec)).not.toThrow();
    expect(toMigrationSpec(CreateMigrationSchema.parse({ source_db: seedBody.target_db, target_db: seedBody.target_db })).source).toEqual({
      host: 'new-db',
      port: 6432,
      user: 'app',
      database: 'shop',
    });
  });

  it('names the body field a spec error is about', () => {
    const fieldOf = (spec: unknown) => {
      try {
        normalizeSpec(spec);
      } catch (err) {
        return fieldOfSpecError((err as SpecError).message);
      }
      return undefined;
    };
    const ok = toMigrationSpec(CreateMigrationSchema.parse(seedBody));
    expect(fieldOf({ ...ok, tables: ['a.b.c'] })).toBe('tables');
    expect(fieldOf({ ...ok, tables: ['x', 'public.x'] })).toBe('tables');
    expect(fieldOfSpecError('invalid migration spec: source.database: too long')).toBe('source_db.dbname');
    expect(fieldOfSpecError('invalid migration spec: cutover.maxLagBytes: too small')).toBe('max_lag_bytes');
    expect(fieldOfSpecError('invalid migration spec: tableSuffix: bad')).toBe('table_suffix');
    expect(fieldOfSpecError('something else')).toBeUndefined();
  });
});

describe('client helpers', () => {
  it('derives one state from Temporal status, phase and the status query', () => {
    expect(stateOf('RUNNING', 'INIT', { phase: 'INIT', paused: true })).toBe('created');
    expect(stateOf('RUNNING', 'SYNCING_WAL', { phase: 'SYNCING_WAL', paused: true })).toBe('paused');
    expect(stateOf('RUNNING', 'SYNCING_WAL', { phase: 'SYNCING_WAL', paused: false })).toBe('running');
    expect(stateOf('RUNNING', null)).toBe('running');
    expect(stateOf('COMPLETED', 'COMPLETED')).toBe('completed');
    expect(stateOf('COMPLETED', 'CANCELLED')).toBe('cancelled');
    expect(stateOf('CANCELLED', 'CANCELLED')).toBe('cancelled');
    expect(stateOf('FAILED', 'FAILED')).toBe('failed');
    expect(stateOf('TERMINATED', 'SYNCING_WAL')).toBe('terminated');
  });

  it('builds visibility queries from known phases only', () => {
    expect(listQuery()).toBe("WorkflowType = 'migrationWorkflow' AND ExecutionStatus != 'ContinuedAsNew'");
    expect(listQuery('SYNCING_WAL')).toBe("WorkflowType = 'migrationWorkflow' AND ExecutionStatus != 'ContinuedAsNew' AND MigrationPhase = 'SYNCING_WAL'");
    expect(() => listQuery("X' OR '1'='1")).toThrow(InputError);
  });

  it('finds passwords in every form and describes endpoints without them', () => {
    expect(hasPassword('postgres://u:secret@h:5432/d')).toBe(true);
    expect(hasPassword('postgres://u@h:5432/d?password=secret')).toBe(true);
    expect(hasPassword({ host: 'h', user: 'u', password: 'secret', database: 'd' })).toBe(true);
    expect(hasPassword('postgres://u@h:5432/d')).toBe(false);
    expect(hasPassword({ host: 'h', user: 'u', password: '', database: 'd' })).toBe(false);
    expect(describeEndpoint('postgres://u:secret@h:6000/d')).toBe('u@h:6000/d');
    const meta = migrationMetadata(normalizeSpec({ source: 'postgres://u:secret@h:6000/d', target: { host: 'h2', user: 'v', password: 'secret', database: 'e' }, schemas: ['public', 'crm'] }));
    expect(meta.staticSummary).toBe('u@h:6000/d → v@h2:5432/e, every table in public, crm');
    expect(JSON.stringify(meta)).not.toContain('secret');
    const spec = normalizeSpec({ source: 'postgres://u:secret@h/d', target: 'postgres://u@h2/d' });
    expect(() => assertSecretsProtected(spec, false)).toThrow(/source contains a password/);
    expect(() => assertSecretsProtected(spec, true)).not.toThrow();
  });
});

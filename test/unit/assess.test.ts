import { describe, expect, it } from 'vitest';
import { copySeconds, lenientSpec } from '../../activities/assess';
import { normalizeSpec } from '../../activities/spec';
import { thresholdAlert, wants } from '../../workflows/notify';

const conn = { source: 'postgres://u@a:5432/db', target: 'postgres://u@b:5432/db' };

describe('lenientSpec: every spec problem, and what can still be checked', () => {
  it('lists each problem and keeps the rest of the spec', () => {
    const r = lenientSpec({ ...conn, schemas: ['public', 'pg_catalog', 'pgdts'], tableSuffix: 'bad-suffix', parallelism: 0 });
    expect(r.problems).toEqual([
      expect.stringMatching(/^spec: schemas\.1: is a reserved schema/),
      expect.stringMatching(/^spec: schemas\.2: is a reserved schema/),
      expect.stringMatching(/^spec: tableSuffix: may only contain/),
      expect.stringMatching(/^spec: parallelism: /),
    ]);
    expect(r.spec).toMatchObject({ schemas: ['public'], tableSuffix: '', parallelism: 4 });
  });

  it('drops a refused schemaMapping key and goes on', () => {
    const r = lenientSpec({ ...conn, schemaMapping: { pg_toast: 'x', public: 'app' } });
    expect(r.problems).toEqual([expect.stringMatching(/^spec: schemaMapping: key "pg_toast" is a reserved schema/)]);
    expect(r.spec?.schemaMapping).toEqual({});
  });

  it('checks no database when a connection or the table list is wrong', () => {
    expect(lenientSpec({ ...conn, source: 'mysql://x' }).spec).toBeUndefined();
    expect(lenientSpec({ ...conn, tables: ['pg_catalog.pg_authid'] })).toEqual({ problems: [expect.stringMatching(/tables: "pg_catalog" is a reserved schema/)] });
    expect(lenientSpec([])).toEqual({ problems: [expect.stringMatching(/expected a JSON object/)] });
  });

  it('a sound spec has no problem', () => {
    expect(lenientSpec(conn)).toEqual({ spec: normalizeSpec(conn), problems: [] });
  });
});

describe('copySeconds', () => {
  const spec = normalizeSpec({ ...conn, parallelism: 4 });
  const mb = 1024 * 1024;
  it('shares the bytes between sessions, bounded by the largest table copied whole', () => {
    const sizes = { count: 8, dataBytes: 800 * mb, indexBytes: 0, estimatedRows: 0, largest: [{ table: 't', dataBytes: 100 * mb, estimatedRows: 0 }] };
    expect(copySeconds(sizes, spec, 50 * mb)).toBe(4);
    expect(copySeconds({ ...sizes, dataBytes: 500 * mb, largest: [{ table: 't', dataBytes: 400 * mb, estimatedRows: 0 }] }, spec, 50 * mb)).toBe(8);
  });
});

describe('notify: spec validation and threshold alerts', () => {
  it('refuses a webhook URL that is not http(s) or carries credentials, and a threshold event without its threshold', () => {
    expect(() => normalizeSpec({ ...conn, notify: { url: 'ftp://x/y' } })).toThrow(/notify\.url: must be an http/);
    expect(() => normalizeSpec({ ...conn, notify: { url: 'https://user:pw@hooks.example.com/x' } })).toThrow(/notify\.url: must not carry a user or password/);
    expect(() => normalizeSpec({ ...conn, notify: { url: 'https://hooks.example.com/x', events: ['lag'] } })).toThrow(/notify\.lagBytes: events lists "lag"/);
    expect(() => normalizeSpec({ ...conn, notify: { url: 'https://hooks.example.com/x', events: ['paged'] } })).toThrow(/notify\.events\.0/);
    expect(normalizeSpec({ ...conn, notify: { url: 'https://hooks.example.com/x?token=1', lagBytes: 5 } }).notify).toEqual({ url: 'https://hooks.example.com/x?token=1', lagBytes: 5 });
  });

  it('wants: every event by default, threshold events only with their threshold', () => {
    const n = { url: 'https://h/x' };
    expect(wants(n, 'completed')).toBe(true);
    expect(wants(n, 'lag')).toBe(false);
    expect(wants({ ...n, lagBytes: 1 }, 'lag')).toBe(true);
    expect(wants({ ...n, events: ['failed'] }, 'completed')).toBe(false);
    expect(wants(undefined, 'failed')).toBe(false);
  });

  it('thresholdAlert fires once per crossing and re-arms at half the threshold', () => {
    let armed = true;
    const fired: number[] = [];
    for (const v of [10, 120, 150, 90, 60, 49, 130, 140]) {
      const a = thresholdAlert(armed, v, 100);
      armed = a.armed;
      if (a.fire) fired.push(v);
    }
    expect(fired).toEqual([120, 130]);
  });
});

describe('slot.maxWaitSeconds', () => {
  it('is kept when set, and leaves a failover-only slot as it was', () => {
    expect(normalizeSpec({ ...conn, slot: { maxWaitSeconds: 600 } }).slot).toEqual({ failover: false, maxWaitSeconds: 600 });
    expect(normalizeSpec({ ...conn, slot: { failover: true } }).slot).toEqual({ failover: true });
    expect(normalizeSpec(conn).slot).toBeUndefined();
    expect(() => normalizeSpec({ ...conn, slot: { maxWaitSeconds: 0 } })).toThrow(/slot\.maxWaitSeconds/);
  });
});

import { describe, expect, it } from 'vitest';
import { fromNameKey, mapSchema, mapSequenceName, mapTableName, mapTypeName, MAX_IDENTIFIER_BYTES, nameKey, targetObjectName } from '../../activities/naming';

const spec = { schemaMapping: { public: 'app' }, tableSuffix: '_m' };

describe('the target-naming rule', () => {
  it('maps each kind of object as its header says', () => {
    expect(mapSchema('public', spec)).toBe('app');
    expect(mapSchema('Sales Dept', spec)).toBe('Sales Dept');
    expect(mapTableName({ schema: 'public', name: 'orders' }, spec)).toEqual({ schema: 'app', name: 'orders_m' });
    expect(mapSequenceName({ schema: 'public', name: 'orders_id_seq' }, spec)).toEqual({ schema: 'app', name: 'orders_id_seq_m' });
    expect(mapTypeName({ schema: 'public', name: 'mood' }, spec)).toEqual({ schema: 'app', name: 'mood' });
    expect(targetObjectName('orders_pkey', spec)).toBe('orders_pkey_m');
  });

  it("clips an index's or sequence's name before the suffix, never the suffix", () => {
    const long = 'é'.repeat(40); // 80 bytes
    const name = targetObjectName(long, spec);
    expect(name.endsWith('_m')).toBe(true);
    expect(Buffer.byteLength(name, 'utf8')).toBeLessThanOrEqual(MAX_IDENTIFIER_BYTES);
  });

  it('keys a qualified name so that no two names share a key', () => {
    expect(nameKey({ schema: 'a.b', name: 'c' })).not.toBe(nameKey({ schema: 'a', name: 'b.c' }));
    expect(fromNameKey(nameKey({ schema: 'Sales Dept', name: 'Order Items' }))).toEqual({ schema: 'Sales Dept', name: 'Order Items' });
  });
});

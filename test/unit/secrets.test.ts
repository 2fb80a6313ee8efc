/** workflows/secrets.ts: which specs carry a password (the worker refuses them without a codec key). */
import { describe, expect, it } from 'vitest';
import { specCarriesPassword } from '../../workflows/secrets';

describe('specCarriesPassword', () => {
  it('finds a password in URIs, key=value strings and objects', () => {
    for (const source of [
      'postgres://u:pw@h/db',
      'postgresql://u:p%40w@h:5432/db?sslmode=require',
      'postgres://u@h/db?password=pw',
      'postgres://u@h/db?sslmode=disable&password=pw',
      "host=h user=u password='p w'",
      'host=h password=pw',
      { host: 'h', user: 'u', password: 'pw', database: 'd' },
    ]) {
      expect(specCarriesPassword({ source, target: 'postgres://u@h/db' }), JSON.stringify(source)).toBe(true);
      expect(specCarriesPassword({ source: 'postgres://u@h/db', target: source }), JSON.stringify(source)).toBe(true);
    }
  });

  it('finds none where there is none', () => {
    for (const source of ['postgres://u@h/db', 'postgres://u:@h/db', 'postgres://h/db?user=u', 'host=h user=u', { host: 'h', user: 'u', database: 'd' }, { host: 'h', password: '' }]) {
      expect(specCarriesPassword({ source, target: source }), JSON.stringify(source)).toBe(false);
    }
    expect(specCarriesPassword(null)).toBe(false);
  });
});

/** client/auth.ts: where the API token comes from, how it is compared, which hosts are loopback. */
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { apiTokenFromEnv, assertListenAllowed, bearerToken, boundedText, hostOfHeader, isLoopback, tokenMatches } from '../../client/auth';

const TOKEN = '0123456789abcdef0123';

describe('apiTokenFromEnv', () => {
  it('reads the variable or the file, and refuses both, empty or short tokens', () => {
    expect(apiTokenFromEnv({})).toBeUndefined();
    expect(apiTokenFromEnv({ PG_DTS_API_TOKEN: ` ${TOKEN}\n` })).toBe(TOKEN);
    const dir = mkdtempSync(join(tmpdir(), 'pgdts-token-'));
    writeFileSync(join(dir, 't'), `${TOKEN}\n`);
    writeFileSync(join(dir, 'empty'), '\n');
    expect(apiTokenFromEnv({ PG_DTS_API_TOKEN_FILE: join(dir, 't') })).toBe(TOKEN);
    expect(() => apiTokenFromEnv({ PG_DTS_API_TOKEN_FILE: join(dir, 'empty') })).toThrow(/is empty/);
    expect(() => apiTokenFromEnv({ PG_DTS_API_TOKEN_FILE: join(dir, 'missing') })).toThrow(/cannot read .*missing \(ENOENT\)/);
    expect(() => apiTokenFromEnv({ PG_DTS_API_TOKEN: TOKEN, PG_DTS_API_TOKEN_FILE: join(dir, 't') })).toThrow(/not both/);
    expect(() => apiTokenFromEnv({ PG_DTS_API_TOKEN: 'short' })).toThrow(/at least 16 characters/);
  });
});

describe('checks', () => {
  it('compares tokens of any length, parses the header', () => {
    expect(tokenMatches(TOKEN, TOKEN)).toBe(true);
    expect(tokenMatches(TOKEN, `${TOKEN}x`)).toBe(false);
    expect(tokenMatches(TOKEN, '')).toBe(false);
    expect(tokenMatches(TOKEN, undefined)).toBe(false);
    expect(bearerToken(`Bearer ${TOKEN}`)).toBe(TOKEN);
    expect(bearerToken(`bearer  ${TOKEN} `)).toBe(TOKEN);
    expect(bearerToken(`Basic ${TOKEN}`)).toBeUndefined();
    expect(bearerToken(undefined)).toBeUndefined();
  });

  it('knows loopback hosts and Host headers', () => {
    for (const h of ['127.0.0.1', '127.1.2.3', '::1', '[::1]', 'localhost', 'api.localhost', '::ffff:127.0.0.1']) expect(isLoopback(h), h).toBe(true);
    for (const h of ['0.0.0.0', '10.0.0.1', '::', 'evil.example', 'localhost.evil.example', '128.0.0.1']) expect(isLoopback(h), h).toBe(false);
    expect(hostOfHeader('localhost:8080')).toBe('localhost');
    expect(hostOfHeader('[::1]:8080')).toBe('[::1]');
    expect(hostOfHeader('evil.example')).toBe('evil.example');
    expect(() => assertListenAllowed('0.0.0.0', undefined)).toThrow(/refusing to serve the API on 0.0.0.0 without authentication/);
    expect(() => assertListenAllowed('0.0.0.0', TOKEN)).not.toThrow();
    expect(() => assertListenAllowed('127.0.0.1', undefined)).not.toThrow();
  });

  it('bounds error texts', () => {
    expect(boundedText('x'.repeat(5000)).length).toBeLessThan(2100);
    expect(boundedText('short')).toBe('short');
  });
});

import { describe, expect, it } from 'vitest';
import { jsonLine, logFormat } from '../../worker/logging';
import { parseAddress } from '../../worker/metrics';
import { migrationIdFor } from '../../workflows/names';

describe('jsonLine', () => {
  it('names the migration from the workflow id and keeps the event fields', () => {
    const line = JSON.parse(
      jsonLine({ level: 'INFO', message: 'table copied', timestampNanos: 1_733_400_000_123_000_000n, meta: { workflowId: 'm1', table: 'public.t', rows: 10n } }),
    ) as Record<string, unknown>;
    expect(line).toEqual({ time: '2024-12-05T12:00:00.123Z', level: 'info', message: 'table copied', migrationId: migrationIdFor('m1'), workflowId: 'm1', table: 'public.t', rows: '10' });
  });
  it('has no migrationId for lines about no migration', () => {
    expect(JSON.parse(jsonLine({ level: 'WARN', message: 'x', timestampNanos: 0n, meta: undefined }))).toEqual({ time: '1970-01-01T00:00:00.000Z', level: 'warn', message: 'x' });
  });
  it('refuses an unknown PG_DTS_LOG_FORMAT', () => {
    expect(logFormat({})).toBe('text');
    expect(() => logFormat({ PG_DTS_LOG_FORMAT: 'yaml' })).toThrow('PG_DTS_LOG_FORMAT must be json or text');
  });
});

describe('parseAddress', () => {
  it('takes host:port and [v6]:port', () => {
    expect(parseAddress('0.0.0.0:9464')).toEqual({ host: '0.0.0.0', port: 9464 });
    expect(parseAddress('[::1]:9464')).toEqual({ host: '::1', port: 9464 });
    expect(parseAddress(':9464')).toEqual({ host: '0.0.0.0', port: 9464 });
  });
  it('names the variable when malformed', () => {
    expect(() => parseAddress('9464')).toThrow('PG_DTS_METRICS_ADDRESS must be host:port');
    expect(() => parseAddress('h:70000')).toThrow('PG_DTS_METRICS_ADDRESS must be host:port');
  });
});

import { describe, expect, it } from 'vitest';
import { jsonLine, logFormat } from '../../worker/logging';
import { Registry } from 'prom-client';
import { gauges, parseAddress, recordStatus } from '../../worker/metrics';
import type { MigrationStatus } from '../../workflows/contract';
import { copyChildId, migrationIdFor } from '../../workflows/names';

describe('jsonLine', () => {
  it('names the migration from the workflow id and keeps the event fields', () => {
    const line = JSON.parse(
      jsonLine({ level: 'INFO', message: 'table copied', timestampNanos: 1_733_400_000_123_000_000n, meta: { workflowId: 'm1', table: 'public.t', rows: 10n } }),
    ) as Record<string, unknown>;
    expect(line).toEqual({ time: '2024-12-05T12:00:00.123Z', level: 'info', message: 'table copied', migrationId: migrationIdFor('m1'), workflowId: 'm1', table: 'public.t', rows: '10' });
  });
  it("names a copy child's lines after its migration", () => {
    const line = JSON.parse(jsonLine({ level: 'INFO', message: 'table copied', timestampNanos: 0n, meta: { workflowId: copyChildId('m1', 2), workflowType: 'copyWorkflow' } })) as Record<string, unknown>;
    expect(line.migrationId).toBe(migrationIdFor('m1'));
    // Only a copy child's: a migration whose own id ends so keeps it.
    const own = JSON.parse(jsonLine({ level: 'INFO', message: 'x', timestampNanos: 0n, meta: { workflowId: 'm1-copy-2', workflowType: 'migrationWorkflow' } })) as Record<string, unknown>;
    expect(own.migrationId).toBe(migrationIdFor('m1-copy-2'));
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

describe('recordStatus', () => {
  it('turns one status answer into the migration\'s gauges', async () => {
    const registry = new Registry();
    const m = gauges(registry);
    const status = {
      migrationId: 'x', phase: 'SYNCING_WAL', paused: false, mode: 'online', notices: [],
      tables: [
        { source: 'public.a', target: 'public.a', state: 'syncing', rowsCopied: 10, rowsTotal: 10, bytesCopied: 100 },
        { source: 'public.b', target: 'public.b', state: 'syncing', rowsCopied: 5, rowsTotal: 6, bytesCopied: 50 },
      ],
      replication: { slot: 's', confirmedLsn: '0/1', lagBytes: 4096, lagSeconds: 2, transactions: 7, changes: 70 },
      wal: { slot: 's', retainedBytes: 123456, walStatus: 'lost', updatedAt: '' },
      cutover: { requested: true, attempts: 2 },
    } as unknown as MigrationStatus;
    recordStatus(m, 'wf-1', status);
    const page = await registry.metrics();
    for (const line of [
      'pgdts_migration_phase{migration="wf-1",phase="SYNCING_WAL"} 1',
      'pgdts_migration_phase{migration="wf-1",phase="COMPLETED"} 0',
      'pgdts_tables{migration="wf-1",state="syncing"} 2',
      'pgdts_rows_copied{migration="wf-1"} 15',
      'pgdts_rows_total{migration="wf-1"} 16',
      'pgdts_bytes_copied{migration="wf-1"} 150',
      'pgdts_apply_lag_bytes{migration="wf-1"} 4096',
      'pgdts_apply_transactions{migration="wf-1"} 7',
      'pgdts_wal_retained_bytes{migration="wf-1"} 123456',
      'pgdts_wal_slot_lost{migration="wf-1"} 1',
      'pgdts_cutover_attempts{migration="wf-1"} 2',
    ]) expect(page).toContain(line);
  });
});

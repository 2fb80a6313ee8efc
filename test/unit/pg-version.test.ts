import { describe, expect, it } from 'vitest';
import { createSlotCommand, formatPgVersion, hasFailoverSlots, hasPgoutputMessages, hasPublishViaRoot } from '../../activities/pg-version';
import { startReplicationSql } from '../../activities/apply/source';
import { normalizeSpec } from '../../activities/spec';

describe('PostgreSQL versions', () => {
  it('names versions as people write them', () => {
    expect(formatPgVersion(130023)).toBe('13.23');
    expect(formatPgVersion(180000)).toBe('18.0');
    expect(formatPgVersion(120022)).toBe('12.22');
    expect(formatPgVersion(90624)).toBe('9.6.24');
    expect(formatPgVersion(110022)).toBe('11.22');
  });

  it('creates the slot with the grammar of the source version', () => {
    expect(createSlotCommand('"s"', 120022)).toBe('CREATE_REPLICATION_SLOT "s" LOGICAL pgoutput EXPORT_SNAPSHOT');
    expect(createSlotCommand('"s"', 140023)).toBe('CREATE_REPLICATION_SLOT "s" LOGICAL pgoutput EXPORT_SNAPSHOT');
    expect(createSlotCommand('"s"', 150018)).toBe(`CREATE_REPLICATION_SLOT "s" LOGICAL pgoutput (SNAPSHOT 'export')`);
    expect(createSlotCommand('"s"', 170010, true)).toBe(`CREATE_REPLICATION_SLOT "s" LOGICAL pgoutput (SNAPSHOT 'export', FAILOVER true)`);
    // A resumed copy's snapshot: a temporary slot, gone with its connection.
    expect(createSlotCommand('"s"', 140023, false, true)).toBe('CREATE_REPLICATION_SLOT "s" TEMPORARY LOGICAL pgoutput EXPORT_SNAPSHOT');
    expect(createSlotCommand('"s"', 150018, false, true)).toBe(`CREATE_REPLICATION_SLOT "s" TEMPORARY LOGICAL pgoutput (SNAPSHOT 'export')`);
    expect(() => createSlotCommand('"s"', 160014, true)).toThrow('failover slots need PostgreSQL 17 or later; the source runs 16.14');
  });

  it('knows what each version offers', () => {
    expect([12, 13, 14, 17].map((m) => hasPgoutputMessages(m * 10000))).toEqual([false, false, true, true]);
    expect([12, 13].map((m) => hasPublishViaRoot(m * 10000))).toEqual([false, true]);
    expect([16, 17, 18].map((m) => hasFailoverSlots(m * 10000 + 1))).toEqual([false, true, true]);
  });

  it('asks pgoutput for logical messages only where they exist', () => {
    expect(startReplicationSql('s', 'p', '0/0', false)).toBe(`START_REPLICATION SLOT "s" LOGICAL 0/0 (proto_version '1', publication_names '"p"')`);
  });

  it('takes slot.failover in the spec, and only a boolean', () => {
    const base = { source: 'postgres://a@h/db', target: 'postgres://a@h2/db' };
    expect(normalizeSpec({ ...base, slot: { failover: true } }).slot).toEqual({ failover: true });
    expect(normalizeSpec(base).slot).toBeUndefined();
    expect(() => normalizeSpec({ ...base, slot: { failover: 'yes' } })).toThrow(/slot\.failover/);
    expect(() => normalizeSpec({ ...base, slot: { name: 'x' } })).toThrow(/slot/);
  });
});

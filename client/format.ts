/** Text rendering of the status query for the CLI and the demo. */
import type { MigrationReport, MigrationStatus } from '../workflows/contract';

const bar = (done: number, total: number | undefined, width = 24): string => {
  if (!total || total <= 0) return ' '.repeat(width);
  const filled = Math.max(0, Math.min(width, Math.round((done / total) * width)));
  return '█'.repeat(filled) + '░'.repeat(width - filled);
};

export function formatStatus(s: MigrationStatus): string {
  const lines = [`migration ${s.migrationId}  phase ${s.phase}${s.paused ? '  (paused)' : ''}  mode ${s.mode}`];
  const w = Math.max(8, ...s.tables.map((t) => t.source.length));
  for (const t of s.tables) {
    const total = t.rowsTotal && t.rowsTotal > t.rowsCopied ? t.rowsTotal : t.rowsCopied;
    lines.push(`  ${t.source.padEnd(w)}  ${bar(t.rowsCopied, total)}  ${String(t.rowsCopied).padStart(10)} rows  ${t.state}  -> ${t.target}`);
  }
  if (s.replication) {
    const r = s.replication;
    lines.push(`  replication: applied ${r.confirmedLsn}, source ${r.sourceLsn ?? '?'}, lag ${r.lagBytes} bytes, ${r.transactions} transactions / ${r.changes} changes applied`);
  }
  if (s.cutover?.windowMs !== undefined) lines.push(`  cutover window: ${s.cutover.windowMs} ms`);
  for (const n of s.notices) lines.push(`  notice: ${n}`);
  if (s.error) lines.push(`  error: ${s.error}`);
  return lines.join('\n');
}

export function formatReport(r: MigrationReport): string {
  const lines = [`${r.phase}: migration ${r.migrationId} (${r.mode}) in ${(r.durationMs / 1000).toFixed(1)} s`];
  const w = Math.max(8, ...r.tables.map((t) => t.source.length));
  lines.push(`  ${'source'.padEnd(w)}  ${'rows'.padStart(10)}  ${'target rows'.padStart(11)}  match  target`);
  for (const t of r.tables) {
    lines.push(`  ${t.source.padEnd(w)}  ${String(t.sourceRows).padStart(10)}  ${String(t.targetRows).padStart(11)}  ${t.countsMatch ? 'yes  ' : 'NO   '}  ${t.target}`);
  }
  for (const s of r.sequences) lines.push(`  sequence ${s.source} = ${s.sourceValue} -> ${s.target} = ${s.targetValue}`);
  if (r.cutoverWindowMs !== undefined) lines.push(`  cutover window (source writes stopped): ${r.cutoverWindowMs} ms`);
  for (const n of r.notices) lines.push(`  notice: ${n}`);
  return lines.join('\n');
}

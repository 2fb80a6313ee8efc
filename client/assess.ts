/**
 * `dts assess` output: the assessment (activities/assess.ts) as a list of problems and warnings, then
 * what the migration would move and how long the copy would take.
 */
import { formatBytes, type Assessment } from '../activities/assess';

function duration(seconds: number): string {
  if (seconds < 90) return `${Math.max(1, Math.round(seconds))} s`;
  if (seconds < 5400) return `${Math.round(seconds / 60)} min`;
  return `${(seconds / 3600).toFixed(1)} h`;
}

export function formatAssessment(a: Assessment): string {
  const lines: string[] = [];
  if (a.source) lines.push(`assessment: ${a.source} -> ${a.target} (${a.mode})`);
  lines.push(a.problems.length ? `problems (${a.problems.length}): the migration would be refused` : 'problems: none');
  for (const p of a.problems) lines.push(`  ✗ ${p}`);
  if (a.warnings.length) lines.push(`warnings (${a.warnings.length}):`);
  for (const w of a.warnings) lines.push(`  ! ${w}`);
  if (a.tables) {
    const t = a.tables;
    lines.push(
      `tables: ${t.count}, ${formatBytes(t.dataBytes)} of data, ${formatBytes(t.indexBytes)} of indexes, ~${t.estimatedRows.toLocaleString('en-US')} rows (estimated by the source's statistics)`,
    );
    for (const l of t.largest) lines.push(`  ${l.table}: ${formatBytes(l.dataBytes)}, ~${l.estimatedRows.toLocaleString('en-US')} rows`);
  }
  if (a.estimate) {
    const e = a.estimate;
    lines.push(`copy: ~${duration(e.copySeconds)} for the data at ${formatBytes(e.copyBytesPerSecond)}/s per session, ${e.sessions} session(s); index builds and validation come on top`);
    if (e.walBytesPerSecond !== undefined) {
      lines.push(
        `WAL: the source wrote ${formatBytes(e.walBytesPerSecond)}/s over ${e.walSampleSeconds} s; the slot would retain ~${formatBytes(e.retainedWalBytes ?? 0)} by the end of the copy`,
      );
    }
  }
  return lines.join('\n');
}

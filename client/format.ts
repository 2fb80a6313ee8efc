/** Text rendering of the status query and the report for the CLI and the demo; live bars (cli-progress). */
import { MultiBar, type SingleBar } from 'cli-progress';
import { describeLockWait, type MigrationReport, type MigrationStatus, type TableStatus } from '../workflows/contract';

const bar = (done: number, total: number | undefined, width = 24): string => {
  if (!total || total <= 0) return ' '.repeat(width);
  const filled = Math.max(0, Math.min(width, Math.round((done / total) * width)));
  return '█'.repeat(filled) + '░'.repeat(width - filled);
};

/** 1536 → "1.5 KiB". */
export function humanBytes(n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let v = n;
  let u = 0;
  while (Math.abs(v) >= 1024 && u < units.length - 1) {
    v /= 1024;
    u++;
  }
  return u === 0 ? `${v} B` : `${v.toFixed(1)} ${units[u]}`;
}

/** 3725 → "1h02m05s"; 65 → "1m05s"; 7 → "7s". */
export function humanDuration(seconds: number): string {
  const s = Math.max(0, Math.round(seconds));
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const r = s % 60;
  if (h) return `${h}h${String(m).padStart(2, '0')}m${String(r).padStart(2, '0')}s`;
  if (m) return `${m}m${String(r).padStart(2, '0')}s`;
  return `${r}s`;
}

/** The total a bar runs to: the estimate, or the rows copied once they pass it. */
export function tableTotal(t: Pick<TableStatus, 'rowsCopied' | 'rowsTotal'>): number {
  return Math.max(t.rowsTotal ?? 0, t.rowsCopied, 0);
}

/** First line of a status: id, phase, paused, mode. */
export function headerLine(s: MigrationStatus): string {
  // A large migration's tables are a page: its totals are in progress.
  const copied = s.progress ? s.progress.tablesCopied : s.tables.filter((t) => !['pending', 'copying'].includes(t.state)).length;
  const total = s.progress ? s.progress.tablesTotal : s.tables.length;
  const p = s.progress;
  const rate = p?.bytesPerSecond !== undefined ? `  ${humanBytes(p.bytesPerSecond)}/s` : '';
  const eta = p?.etaSeconds !== undefined ? `  about ${p.etaSeconds} s left` : '';
  const resumed = p?.copyResumes ? `  (copy resumed ${p.copyResumes}x: ${p.unitsKept ?? 0} units kept, ${p.unitsCopiedTwice ?? 0} copied twice)` : '';
  return `migration ${s.migrationId}  phase ${s.phase}${s.paused ? '  (paused)' : ''}  mode ${s.mode}  tables ${copied}/${total} copied${p ? `  ${p.rowsCopied} rows, ${humanBytes(p.bytesCopied)}` : ''}${rate}${eta}${resumed}`;
}

/**
 * The whole copy on one line: bytes of the measured total, percentage, rate and time left, copy
 * units; undefined before the sizes are known.
 */
export function overallLine(s: MigrationStatus, width = 24): string | undefined {
  const p = s.progress;
  if (!p?.bytesTotal) return undefined;
  // Sizes are measured on disk before the copy; COPY text can run past them.
  const copyDone = !['INIT', 'CREATING_TABLES', 'MIGRATING_DATA'].includes(s.phase);
  const done = copyDone ? p.bytesTotal : Math.min(p.bytesCopied, p.bytesTotal);
  const pct = Math.floor((done / p.bytesTotal) * 100);
  const rate = !copyDone && p.bytesPerSecond !== undefined ? `, ${humanBytes(p.bytesPerSecond)}/s` : '';
  const eta = !copyDone && p.etaSeconds !== undefined ? `, eta ${humanDuration(p.etaSeconds)}` : '';
  const units = p.batchesTotal !== undefined ? `, units ${p.batchesDone ?? 0}/${p.batchesTotal}` : '';
  return `overall ${bar(done, p.bytesTotal, width)} ${String(pct).padStart(3)}%  ${humanBytes(done)} of ${humanBytes(p.bytesTotal)}${rate}${eta}${units}`;
}

/** Tables per state, in the order a table moves through them: "12 copied, 3 copying, 985 pending". */
export function stateCounts(s: MigrationStatus): string {
  const order = ['failed', 'copying', 'indexing', 'pending', 'copied', 'syncing', 'validated'];
  const n = new Map<string, number>();
  for (const t of s.tables) n.set(t.state, (n.get(t.state) ?? 0) + 1);
  const shown = order.filter((k) => n.has(k)).map((k) => `${n.get(k)} ${k}`);
  const of = s.tablesTotal !== undefined && s.tablesTotal > s.tables.length ? ` (of the first ${s.tables.length} of ${s.tablesTotal} tables)` : '';
  return `tables: ${shown.join(', ') || 'none'}${of}`;
}

/**
 * The copy units in flight as the status reports them (`copying`, any table of the migration): one
 * line each; undefined when the status has none (then the page's tables in state copying stand in).
 */
export function copyingLines(s: MigrationStatus): string[] | undefined {
  if (!s.copying?.length) return undefined;
  const w = Math.max(8, ...s.copying.map((c) => c.table.length));
  return s.copying.map((c) => {
    const t = s.tables.find((x) => x.source === c.table);
    const total = t?.rowsTotal && !t.ranges ? ` of ${t.rowsTotal.toLocaleString('en-US')}` : '';
    return `${c.table.padEnd(w)}  ${c.rows.toLocaleString('en-US')}${total} rows, ${humanBytes(c.bytes)}  (${c.unit})`;
  });
}

/** The replication line: applied and source positions, lag in bytes (and seconds when reported). */
export function lagLine(s: MigrationStatus): string | undefined {
  const r = s.replication;
  if (!r) return undefined;
  const secs = r.lagSeconds;
  const lag = `lag ${humanBytes(r.lagBytes)}${secs !== undefined ? ` / ${secs.toFixed(1)} s` : ''}`;
  return `replication: ${lag}, applied ${r.confirmedLsn}, source ${r.sourceLsn ?? '?'}, ${r.transactions} transactions / ${r.changes} changes applied`;
}

/** The content proof's progress (status) or verdict (report): chunks, rows, what the cutover re-checked. */
export function proofLine(p: MigrationStatus['proof'] | MigrationReport['proof']): string | undefined {
  if (!p) return undefined;
  if ('enabled' in p) {
    if (!p.enabled) return 'content proof: off (validation.checksum = false): only counts and sampled rows compared';
    const live = p.livePasses !== undefined ? `, ${p.livePasses} live passes in ${((p.liveMs ?? 0) / 1000).toFixed(1)} s` : '';
    const cost = p.validatingMs !== undefined ? `; VALIDATING took ${p.validatingMs} ms` : '';
    const keys = p.keysReadAtCutover ? `, ${p.keysReadAtCutover} rows written since compared by key` : '';
    const read = p.readAtCutover !== undefined ? ` (${p.readAtCutover} read again to see whether they changed${keys})` : '';
    return `content proof: ${p.chunks} chunks, ${p.rowsCovered} rows: ${p.verifiedBeforeCutover} proven before the cutover, ${p.reverifiedAtCutover} re-checked at it${read}${live}${cost}`;
  }
  if (p.state === 'off') return 'content proof: off (validation.checksum = false)';
  const at = p.reverifiedAtCutover !== undefined ? `, ${p.reverifiedAtCutover} re-checked at cutover` : '';
  const pass = p.lastPassMs !== undefined ? `, last pass ${(p.lastPassMs / 1000).toFixed(1)} s` : '';
  return `content proof (${p.state}): ${p.chunksVerified}/${p.chunks} chunks verified, ${p.rowsCovered} rows covered, pass ${p.pass}${pass}${at}`;
}

/** Lines after the tables: cutover, control, notices, error. */
export function footerLines(s: MigrationStatus): string[] {
  const lines: string[] = [];
  const proof = proofLine(s.proof);
  if (proof) lines.push(proof);
  if (s.cutover?.windowMs !== undefined) lines.push(`cutover window: ${s.cutover.windowMs} ms`);
  else if (s.cutover?.fencedAt) lines.push(`source writes stopped since ${s.cutover.fencedAt}${s.cutover.deadline ? `, released by ${s.cutover.deadline} at the latest` : ''}`);
  if (s.cutover?.abandoned) lines.push(`last cutover attempt abandoned: ${s.cutover.abandoned}${s.cutover.retryAt ? `; next attempt after ${s.cutover.retryAt}` : ''}`);
  if (s.wal) {
    const budget = s.wal.maxRetainedBytes !== undefined ? ` (limit ${humanBytes(s.wal.maxRetainedBytes)})` : '';
    lines.push(`slot ${s.wal.slot} retains ${humanBytes(s.wal.retainedBytes)} of WAL${budget}, wal_status ${s.wal.walStatus ?? '?'}`);
  }
  if (s.lastControl) lines.push(`last control: ${s.lastControl}`);
  for (const n of s.notices) lines.push(`notice: ${n}`);
  if (s.error) lines.push(`error: ${s.error}`);
  return lines;
}

/** `summary`: the tables per state and only those in flight, instead of a line per table. */
export function formatStatus(s: MigrationStatus, opts: { summary?: boolean } = {}): string {
  const lines = [headerLine(s)];
  const overall = overallLine(s);
  if (overall) lines.push(`  ${overall}`);
  if (opts.summary) lines.push(`  ${stateCounts(s)}`);
  const units = opts.summary ? copyingLines(s) : undefined;
  if (units) for (const l of units) lines.push(`  ${l}`);
  const shown = opts.summary ? (units ? [] : s.tables.filter((t) => t.state === 'copying' || t.state === 'indexing')) : s.tables;
  const w = Math.max(8, ...shown.map((t) => t.source.length));
  for (const t of shown) {
    lines.push(`  ${t.source.padEnd(w)}  ${bar(t.rowsCopied, tableTotal(t))}  ${String(t.rowsCopied).padStart(10)} rows  ${t.state}  -> ${t.target}`);
  }
  if (!opts.summary && s.tablesTotal !== undefined && s.tablesTotal > s.tables.length) lines.push(`  (${s.tables.length} of ${s.tablesTotal} tables shown)`);
  const lag = lagLine(s);
  if (lag) lines.push(`  ${lag}`);
  const waiting = waitingLine(s);
  if (waiting) lines.push(`  ${waiting}`);
  for (const l of copyWaitLines(s)) lines.push(`  ${l}`);
  for (const b of s.indexing ?? []) lines.push(`  indexing ${b.table}: ${b.index}, ${b.phase}${b.percent !== undefined ? ` ${b.percent}%` : ''} (${humanDuration(b.seconds)})`);
  for (const l of footerLines(s)) lines.push(`  ${l}`);
  return lines.join('\n');
}

/** What the migration waits for: the slot creation, on the oldest transaction that began before it. */
export function waitingLine(s: Pick<MigrationStatus, 'waiting'>): string | undefined {
  const w = s.waiting;
  if (!w) return undefined;
  const on = w.pid !== undefined ? `transaction of pid ${w.pid} (open ${w.ageSeconds ?? '?'} s${w.state ? `, ${w.state}` : ''})` : 'transactions older than it (not visible to this role)';
  return `waiting: the replication slot's creation (since ${w.since}) waits for ${on} to end`;
}

/** Copy units standing still on a table lock: which side, which lock, who holds it. */
export function copyWaitLines(s: Pick<MigrationStatus, 'copying'>): string[] {
  return (s.copying ?? []).flatMap((c) => {
    const w = c.waiting;
    if (!w) return [];
    return [`waiting: the copy of ${c.table} (${c.unit}) has waited ${w.waitedSeconds} s for ${describeLockWait(w)}`];
  });
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
  if (r.copyResumes) {
    const c = r.copyResumes;
    lines.push(`  copy resumed after a lost snapshot ${c.copyResumes ?? 0} time(s): ${c.unitsKept ?? 0} units kept, ${c.unitsCopiedTwice ?? 0} copied twice`);
  }
  const proof = proofLine(r.proof);
  if (proof) lines.push(`  ${proof}`);
  // validation.repair: the keys are in `dts report --json` (tables[].repair).
  for (const t of r.tables.filter((x) => x.repair)) {
    const p = t.repair!;
    const still = p.chunks.filter((c) => !c.match).length;
    lines.push(`  repaired ${t.source}: ${p.wholeChunk ? 'its whole chunk replaced' : `${p.rows} row(s): ${p.missing} missing, ${p.extra} extra, ${p.different} different`}; ${still ? `${still} chunk(s) still differ` : `${p.chunks.length} chunk(s) equal again`}`);
  }
  for (const n of r.notices) lines.push(`  notice: ${n}`);
  return lines.join('\n');
}

/** What one table's bar shows at one moment. */
export interface TableBarModel {
  name: string;
  value: number;
  total: number;
  state: string;
  rate: string;
  eta: string;
}

/**
 * Per-table bar values. `previous` (rows and time of the last sample) gives a rate when the status
 * has none of its own.
 */
export function tableBars(s: MigrationStatus, previous?: { at: number; rows: Map<string, number> }, now = Date.now()): TableBarModel[] {
  const w = Math.max(8, ...s.tables.map((t) => t.source.length));
  return s.tables.map((t) => {
    const total = tableTotal(t);
    let perSec = t.rowsPerSecond;
    if (perSec === undefined && previous && t.state === 'copying' && now > previous.at) {
      const before = previous.rows.get(t.source);
      if (before !== undefined && t.rowsCopied >= before) perSec = ((t.rowsCopied - before) * 1000) / (now - previous.at);
    }
    const etaSec = t.etaSeconds ?? (perSec && perSec > 0 && total > t.rowsCopied ? (total - t.rowsCopied) / perSec : undefined);
    return {
      name: t.source.padEnd(w),
      value: t.rowsCopied,
      total: Math.max(total, 1),
      state: t.state.padEnd(9),
      rate: perSec !== undefined && t.state === 'copying' ? `${Math.round(perSec).toLocaleString('en-US')} rows/s` : '',
      eta: etaSec !== undefined && t.state === 'copying' ? `eta ${humanDuration(etaSec)}` : '',
    };
  });
}

/** Bars a summary (many tables) shows at most: the tables in flight. */
const SUMMARY_BARS = 10;

/**
 * Live status for `dts status --watch` on a terminal: a header line, one progress bar per table, the
 * replication lag line and the last control/notice/error lines, redrawn in place (cli-progress).
 */
export class StatusBars {
  private readonly multi: MultiBar;
  private header?: SingleBar;
  private readonly bars = new Map<string, SingleBar>();
  private readonly lines: SingleBar[] = [];
  /** Under the header: the overall copy line and, in summary mode, the tables per state. */
  private readonly topLines: SingleBar[] = [];
  private previous?: { at: number; rows: Map<string, number> };
  private readonly summaryOver: number;

  /**
   * `summaryOver`: with more tables than this, a bar only for the tables in flight (at most
   * SUMMARY_BARS) and one line counting the tables per state, so 1,500 tables do not give 1,500 bars.
   */
  constructor(stream: NodeJS.WriteStream = process.stdout, opts: { summaryOver?: number } = {}) {
    // A terminal left with its cursor hidden is the user's problem after a Ctrl-C: put it back.
    this.onInterrupt = () => {
      this.stop();
      process.exit(130);
    };
    process.once('SIGINT', this.onInterrupt);
    this.summaryOver = opts.summaryOver ?? 20;
    this.multi = new MultiBar(
      {
        stream,
        format: ' {name} {bar} {percentage}% {value}/{total} rows  {state} {rate} {remaining}',
        barCompleteChar: '█',
        barIncompleteChar: '░',
        barsize: 24,
        hideCursor: true,
        clearOnComplete: false,
        stopOnComplete: false,
        autopadding: true,
        formatValue: (v, _o, type) => (type === 'value' || type === 'total' ? Number(v).toLocaleString('en-US') : String(v)),
      },
      // The preset only supplies defaults; the format above decides what a bar shows.
      { format: '', barCompleteChar: '█', barIncompleteChar: '░' },
    );
  }

  update(s: MigrationStatus, now = Date.now()): void {
    const text = (line: string) => ({ line });
    this.header ??= this.multi.create(1, 0, text(''), { format: '{line}' });
    this.header.update(0, text(headerLine(s)));
    const summary = Math.max(s.tables.length, s.tablesTotal ?? 0) > this.summaryOver;
    // Created together on the first update, so that lines keep their places as values come and go.
    if (!this.topLines.length) for (let i = 0; i < (summary ? 2 + SUMMARY_BARS : 1); i++) this.topLines.push(this.multi.create(1, 0, text(''), { format: ' {line}' }));
    const models = tableBars(s, this.previous, now);
    if (summary) {
      // The tables in flight as text bars in fixed slots; the rest counted per state.
      const inFlight = models.filter((m) => m.state.trim() === 'copying' || m.state.trim() === 'indexing').slice(0, SUMMARY_BARS);
      const rows = copyingLines(s)?.slice(0, SUMMARY_BARS) ?? inFlight.map((m) => `${m.name} ${bar(m.value, m.total)} ${String(Math.floor((m.value / m.total) * 100)).padStart(3)}% ${m.value.toLocaleString('en-US')}/${m.total.toLocaleString('en-US')} rows  ${m.state} ${m.rate} ${m.eta}`.trimEnd());
      const top = [overallLine(s) ?? '', stateCounts(s), ...rows];
      this.topLines.forEach((b, i) => b.update(0, text(top[i] ?? '')));
    } else {
      this.topLines[0]!.update(0, text(overallLine(s) ?? ''));
      for (const m of models) {
        const payload = { name: m.name, state: m.state, rate: m.rate, remaining: m.eta };
        const key = m.name.trim();
        let b = this.bars.get(key);
        if (!b) {
          b = this.multi.create(m.total, m.value, payload);
          this.bars.set(key, b);
        }
        b.setTotal(m.total);
        b.update(m.value, payload);
      }
    }
    this.previous = { at: now, rows: new Map(s.tables.map((t) => [t.source, t.rowsCopied])) };
    const extra = [lagLine(s) ?? '', ...footerLines(s)];
    while (this.lines.length < extra.length) this.lines.push(this.multi.create(1, 0, text(''), { format: ' {line}' }));
    this.lines.forEach((b, i) => b.update(0, text(extra[i] ?? '')));
  }

  private readonly onInterrupt: () => void;

  stop(): void {
    process.removeListener('SIGINT', this.onInterrupt);
    this.multi.stop();
  }
}

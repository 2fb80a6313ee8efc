/**
 * The worker's Prometheus endpoint (`PG_DTS_METRICS_ADDRESS=host:port`, served at `/metrics`): the
 * Temporal SDK's own runtime metrics (workflow and activity latencies, task slots, sticky cache;
 * exported by the SDK's core on a loopback port of its own and passed through here) and ours,
 * prefixed `pgdts_` and labelled by migration.
 *
 * Ours are read at scrape time from the `status` query of every running migration on this worker's
 * task queue, the same answer `dts status` shows, so nothing in the copy or the apply's hot path
 * counts for metrics and every worker reports the same numbers (aggregate with `max by (migration)`
 * when several workers are scraped).
 */
import { createServer, type Server } from 'node:http';
import { createServer as createNetServer } from 'node:net';
import type { AddressInfo } from 'node:net';
import { Gauge, Registry } from 'prom-client';
import type { Client } from '@temporalio/client';
import { PHASES, WORKFLOW_TYPE, type MigrationStatus } from '../workflows/contract';

/** At most this many running migrations are queried per scrape (newest first). */
const MAX_MIGRATIONS = 200;
const QUERY_TIMEOUT_MS = 3_000;

export interface MetricsOptions {
  /** `host:port` to listen on. */
  address: string;
  client: Client;
  taskQueue: string;
  /** Where the SDK's core serves its own metrics (loopback), passed through verbatim. */
  coreMetricsUrl?: string;
}

export interface MetricsServer {
  url: string;
  close(): Promise<void>;
}

/** host:port (IPv6 in brackets) → parts; throws a message naming the variable. */
export function parseAddress(address: string, variable = 'PG_DTS_METRICS_ADDRESS'): { host: string; port: number } {
  const m = /^(?:\[([^\]]+)\]|([^:]*)):(\d{1,5})$/.exec(address.trim());
  const port = m ? Number(m[3]) : NaN;
  if (!m || port > 65535) throw new Error(`${variable} must be host:port (e.g. 0.0.0.0:9464), not ${JSON.stringify(address)}`);
  return { host: m[1] ?? (m[2] || '0.0.0.0'), port };
}

/** A free TCP port on 127.0.0.1 (for the SDK core's exporter, which only this process reads). */
export function freeLoopbackPort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createNetServer();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const port = (srv.address() as AddressInfo).port;
      srv.close(() => resolve(port));
    });
  });
}

export function gauges(registry: Registry) {
  const g = (name: string, help: string, labelNames: string[] = ['migration']) => new Gauge({ name: `pgdts_${name}`, help, labelNames, registers: [registry] });
  return {
    phase: g('migration_phase', 'Current phase of the migration (1 for the phase it is in)', ['migration', 'phase']),
    paused: g('migration_paused', '1 while the migration is paused'),
    tables: g('tables', 'Tables of the migration by state', ['migration', 'state']),
    rowsCopied: g('rows_copied', 'Rows copied so far (all tables)'),
    rowsTotal: g('rows_total', 'Rows to copy, as estimated at the start (all tables)'),
    bytesCopied: g('bytes_copied', 'Bytes copied so far (all tables)'),
    lagBytes: g('apply_lag_bytes', 'WAL between the source and what the apply has committed on the target'),
    lagSeconds: g('apply_lag_seconds', 'Age of the last applied source commit while the apply is behind'),
    transactions: g('apply_transactions', 'Source transactions applied on the target'),
    changes: g('apply_changes', 'Row changes applied on the target'),
    cutoverWindow: g('cutover_window_seconds', 'How long source writes were stopped at the cutover'),
    cutoverAttempts: g('cutover_attempts', 'Cutover attempts so far (an abandoned one released writes and went back to SYNCING_WAL)'),
    walRetained: g('wal_retained_bytes', 'WAL the migration\'s replication slot keeps on the source'),
    walLost: g('wal_slot_lost', '1 when the source has invalidated the slot (wal_status lost)'),
    validationMismatches: g('validation_mismatches', 'Rows that validation found different, per table', ['migration', 'table']),
    scrapeErrors: new Gauge({ name: 'pgdts_status_query_errors', help: 'Running migrations whose status query failed in the last scrape', registers: [registry] }),
  };
}

type Gauges = ReturnType<typeof gauges>;

/** Sets the gauges of one migration from its status answer. Pure apart from the gauges: unit-testable. */
export function recordStatus(m: Gauges, id: string, s: MigrationStatus): void {
  for (const p of PHASES) m.phase.set({ migration: id, phase: p }, p === s.phase ? 1 : 0);
  m.paused.set({ migration: id }, s.paused ? 1 : 0);
  const byState = new Map<string, number>();
  let copied = 0;
  let total = 0;
  let bytes = 0;
  for (const t of s.tables) {
    byState.set(t.state, (byState.get(t.state) ?? 0) + 1);
    copied += t.rowsCopied;
    total += t.rowsTotal ?? 0;
    bytes += t.bytesCopied ?? 0;
  }
  // A migration of more tables than the status lists (a page): its totals are in progress.
  if (s.progress && (s.tablesTotal ?? 0) > s.tables.length) {
    copied = s.progress.rowsCopied;
    bytes = s.progress.bytesCopied;
  }
  for (const [state, n] of byState) m.tables.set({ migration: id, state }, n);
  m.rowsCopied.set({ migration: id }, copied);
  m.rowsTotal.set({ migration: id }, total);
  m.bytesCopied.set({ migration: id }, bytes);
  if (s.replication) {
    m.lagBytes.set({ migration: id }, s.replication.lagBytes);
    m.lagSeconds.set({ migration: id }, s.replication.lagSeconds ?? 0);
    m.transactions.set({ migration: id }, s.replication.transactions);
    m.changes.set({ migration: id }, s.replication.changes);
  }
  if (s.cutover?.windowMs !== undefined) m.cutoverWindow.set({ migration: id }, s.cutover.windowMs / 1000);
  if (s.cutover?.attempts !== undefined) m.cutoverAttempts.set({ migration: id }, s.cutover.attempts);
  if (s.wal) {
    m.walRetained.set({ migration: id }, s.wal.retainedBytes);
    m.walLost.set({ migration: id }, s.wal.walStatus === 'lost' ? 1 : 0);
  }
  for (const v of s.validation ?? []) m.validationMismatches.set({ migration: id, table: v.source }, v.mismatches);
}

export async function startMetricsServer(opts: MetricsOptions): Promise<MetricsServer> {
  const { host, port } = parseAddress(opts.address);
  const collect = async (): Promise<string> => {
    // A fresh registry per scrape: migrations that ended leave no stale series behind.
    const registry = new Registry();
    const m = gauges(registry);
    const query = `WorkflowType = '${WORKFLOW_TYPE}' AND TaskQueue = '${opts.taskQueue.replace(/'/g, "''")}' AND ExecutionStatus = 'Running'`;
    const ids: string[] = [];
    for await (const wf of opts.client.workflow.list({ query, pageSize: MAX_MIGRATIONS })) {
      ids.push(wf.workflowId);
      if (ids.length >= MAX_MIGRATIONS) break;
    }
    let errors = 0;
    await Promise.all(
      ids.map(async (id) => {
        try {
          const s = await opts.client.connection.withDeadline(Date.now() + QUERY_TIMEOUT_MS, () => opts.client.workflow.getHandle(id).query<MigrationStatus>('status'));
          recordStatus(m, id, s);
        } catch {
          errors++;
        }
      }),
    );
    m.scrapeErrors.set(errors);
    let core = '';
    if (opts.coreMetricsUrl) {
      core = await fetch(opts.coreMetricsUrl, { signal: AbortSignal.timeout(QUERY_TIMEOUT_MS) })
        .then((r) => (r.ok ? r.text() : ''))
        .catch(() => '');
    }
    return `${await registry.metrics()}\n${core}`;
  };
  const server: Server = createServer((req, res) => {
    if (req.method !== 'GET' || (req.url ?? '').split('?')[0] !== '/metrics') {
      res.writeHead(404, { 'content-type': 'text/plain' }).end('not found: metrics are at /metrics\n');
      return;
    }
    collect().then(
      (body) => res.writeHead(200, { 'content-type': 'text/plain; version=0.0.4; charset=utf-8' }).end(body),
      (err: Error) => res.writeHead(503, { 'content-type': 'text/plain' }).end(`metrics unavailable: ${err.message}\n`),
    );
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => resolve());
  });
  const a = server.address() as AddressInfo;
  return {
    url: `http://${a.family === 'IPv6' ? `[${a.address}]` : a.address}:${a.port}/metrics`,
    close: () => new Promise((resolve) => server.close(() => resolve())),
  };
}

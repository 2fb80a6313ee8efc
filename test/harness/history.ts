/**
 * Activities of a workflow run as its history records them: when each was scheduled, started and
 * ended, and its input. For tests that check what ran at the same time.
 */
import { defaultPayloadConverter } from '@temporalio/common';
import { temporal as proto } from '@temporalio/proto';
import type { TestWorkflowEnvironment } from '@temporalio/testing';

export interface ActivitySpan {
  type: string;
  input: unknown[];
  /** Milliseconds since the epoch. */
  scheduledAt: number;
  startedAt?: number;
  endedAt?: number;
  outcome?: 'completed' | 'failed' | 'cancelled' | 'timed-out';
}

type Time = { seconds?: { toString(): string } | number | null; nanos?: number | null } | null | undefined;
const ms = (t: Time) => (t ? Number(t.seconds?.toString() ?? 0) * 1000 + Math.floor((t.nanos ?? 0) / 1e6) : 0);
const key = (id: { toString(): string } | number | null | undefined) => String(id ?? '');

type History = Awaited<ReturnType<ReturnType<TestWorkflowEnvironment['client']['workflow']['getHandle']>['fetchHistory']>>;

export interface RunHistory {
  workflowId: string;
  runId: string;
  history: History;
}

/**
 * The histories of `workflowId`'s runs and of the child workflows they started (the copy children,
 * every run of each): with `latestOnly`, of its latest run and its children only; else of every run
 * of its continue-as-new chain, from the first.
 */
export async function workflowHistories(temporal: Pick<TestWorkflowEnvironment, 'client'>, workflowId: string, opts: { latestOnly?: boolean } = {}): Promise<RunHistory[]> {
  const out: RunHistory[] = [];
  const seen = new Set<string>();
  const visit = async (id: string, runId: string | undefined, chain: boolean): Promise<void> => {
    const history = await temporal.client.workflow.getHandle(id, runId).fetchHistory();
    const events = history.events ?? [];
    const run = runId ?? events[0]?.workflowExecutionStartedEventAttributes?.originalExecutionRunId ?? '';
    if (seen.has(`${id}/${run}`)) return;
    seen.add(`${id}/${run}`);
    out.push({ workflowId: id, runId: run, history });
    for (const e of events) {
      const child = e.childWorkflowExecutionStartedEventAttributes?.workflowExecution;
      if (child?.workflowId && child.runId) await visit(child.workflowId, child.runId, true);
      const next = e.workflowExecutionContinuedAsNewEventAttributes?.newExecutionRunId;
      if (next && chain) await visit(id, next, true);
    }
  };
  if (opts.latestOnly) {
    await visit(workflowId, undefined, false);
    return out;
  }
  const latest = await temporal.client.workflow.getHandle(workflowId).fetchHistory();
  const first = latest.events?.[0]?.workflowExecutionStartedEventAttributes?.firstExecutionRunId ?? undefined;
  await visit(workflowId, first ?? undefined, true);
  return out;
}

/** The activities running now for `workflowId` and for the child workflows it has running (its copy child). */
export async function pendingActivities(temporal: TestWorkflowEnvironment, workflowId: string) {
  const d = await temporal.client.workflow.getHandle(workflowId).describe();
  const out = [...(d.raw.pendingActivities ?? [])];
  for (const c of d.raw.pendingChildren ?? []) {
    if (c.workflowId) out.push(...((await temporal.client.workflow.getHandle(c.workflowId).describe()).raw.pendingActivities ?? []));
  }
  return out;
}

/** The activities of `workflowId`'s latest run and of the copy children it started, by when they were scheduled. */
export async function activitySpans(temporal: Pick<TestWorkflowEnvironment, 'client'>, workflowId: string): Promise<ActivitySpan[]> {
  const out: ActivitySpan[] = [];
  for (const { history } of await workflowHistories(temporal, workflowId, { latestOnly: true })) out.push(...spansOf(history));
  return out.sort((a, b) => a.scheduledAt - b.scheduledAt);
}

function spansOf(history: History): ActivitySpan[] {
  const spans = new Map<string, ActivitySpan>();
  for (const e of history.events ?? []) {
    const at = ms(e.eventTime as Time);
    const s = e.activityTaskScheduledEventAttributes;
    if (s) {
      spans.set(key(e.eventId), {
        type: s.activityType?.name ?? '',
        input: (s.input?.payloads ?? []).map((p) => defaultPayloadConverter.fromPayload(p)),
        scheduledAt: at,
      });
      continue;
    }
    const ended: Array<[ActivitySpan['outcome'], { scheduledEventId?: unknown } | null | undefined]> = [
      ['completed', e.activityTaskCompletedEventAttributes],
      ['failed', e.activityTaskFailedEventAttributes],
      ['cancelled', e.activityTaskCanceledEventAttributes],
      ['timed-out', e.activityTaskTimedOutEventAttributes],
    ];
    const started = e.activityTaskStartedEventAttributes;
    if (started) {
      const span = spans.get(key(started.scheduledEventId));
      if (span) span.startedAt = at;
    }
    for (const [outcome, attrs] of ended) {
      const span = attrs ? spans.get(key(attrs.scheduledEventId as number)) : undefined;
      if (span) Object.assign(span, { endedAt: at, outcome });
    }
  }
  return [...spans.values()];
}

/**
 * The most database sessions `spans` had at once, each span counting `weight(span)` sessions from its
 * start to its end (an end and a start at the same instant do not overlap).
 */
export function peakSessions(spans: ActivitySpan[], weight: (s: ActivitySpan) => number): number {
  const points = spans
    .filter((s) => s.startedAt !== undefined && s.endedAt !== undefined)
    .flatMap((s) => [
      { at: s.startedAt!, d: weight(s) },
      { at: s.endedAt!, d: -weight(s) },
    ])
    .sort((a, b) => a.at - b.at || a.d - b.d);
  let now = 0;
  let peak = 0;
  for (const p of points) {
    now += p.d;
    peak = Math.max(peak, now);
  }
  return peak;
}

/** The limits issue 16 sets on every workflow run's history, as measured. */
export interface RunHistoryLimits {
  workflowId: string;
  runId: string;
  events: number;
  /** Encoded size of the whole history. */
  bytes: number;
  /** The largest single payload (activity input or result, signal, continue-as-new input...). */
  largestPayload: number;
  /** The longest workflow task: started to completed, and the event that completed it. */
  longestTaskMs: number;
  longestTaskEvent: number;
}

/**
 * Every run of `workflowId` (continue-as-new included) and of the child workflows they started,
 * measured from their histories as the server returns them (fetchHistory).
 */
export async function historyLimits(temporal: TestWorkflowEnvironment, workflowId: string): Promise<RunHistoryLimits[]> {
  return (await workflowHistories(temporal, workflowId)).map(({ workflowId: id, runId, history }) => {
    const events = history.events ?? [];
    let largestPayload = 0;
    const walk = (v: unknown): void => {
      if (!v || typeof v !== 'object') return;
      if (v instanceof Uint8Array) return;
      const o = v as Record<string, unknown>;
      if (o.data instanceof Uint8Array && 'metadata' in o) largestPayload = Math.max(largestPayload, o.data.length);
      for (const x of Object.values(o)) walk(x);
    };
    let longestTaskMs = 0;
    let longestTaskEvent = 0;
    const started = new Map<string, number>();
    for (const e of events) {
      walk(e);
      const at = ms(e.eventTime as Time);
      if (e.workflowTaskStartedEventAttributes) started.set(key(e.eventId), at);
      const done = e.workflowTaskCompletedEventAttributes ?? e.workflowTaskFailedEventAttributes ?? e.workflowTaskTimedOutEventAttributes;
      const took = done ? at - (started.get(key((done as { startedEventId?: unknown }).startedEventId as number)) ?? at) : 0;
      if (took > longestTaskMs) {
        longestTaskMs = took;
        longestTaskEvent = Number(e.eventId ?? 0);
      }
    }
    const bytes = proto.api.history.v1.History.encode(history).finish().length;
    return { workflowId: id, runId, events: events.length, bytes, largestPayload, longestTaskMs, longestTaskEvent };
  });
}

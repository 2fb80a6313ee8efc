/**
 * Activities of a workflow run as its history records them: when each was scheduled, started and
 * ended, and its input. For tests that check what ran at the same time.
 */
import { defaultPayloadConverter } from '@temporalio/common';
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

export async function activitySpans(temporal: TestWorkflowEnvironment, workflowId: string): Promise<ActivitySpan[]> {
  const history = await temporal.client.workflow.getHandle(workflowId).fetchHistory();
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

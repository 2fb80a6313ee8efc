/**
 * Alerts (spec.notify): which events a webhook wants, and when a threshold alert is due. Pure, for
 * the workflow; the POST itself is the notifyWebhook activity.
 */
import type { NormalizedSpec, NotifyEvent } from '../activities/spec';

export type NotifySettings = NonNullable<NormalizedSpec['notify']>;

/** What every webhook receives: names and numbers, never a password, user or connection string. */
export interface NotifyPayload {
  event: NotifyEvent;
  migrationId: string;
  workflowId: string;
  phase: string;
  /** Workflow time of the event. */
  at: string;
  /** host:port/database */
  source?: string;
  target?: string;
  message: string;
  lagBytes?: number;
  lagSeconds?: number;
  retainedWalBytes?: number;
  threshold?: number;
  error?: string;
  cutoverWindowMs?: number;
  tables?: number;
}

/** The spec's notify, read before preflight has validated the spec (a failure in INIT is an event too). */
export function notifyOf(spec: unknown): NotifySettings | undefined {
  const n = (spec as { notify?: unknown } | null)?.notify as Partial<NotifySettings> | undefined;
  return n && typeof n === 'object' && typeof n.url === 'string' ? (n as NotifySettings) : undefined;
}

export function wants(n: NotifySettings | undefined, event: NotifyEvent): n is NotifySettings {
  if (!n) return false;
  if (event === 'lag' && n.lagBytes === undefined) return false;
  if (event === 'retained-wal' && n.retainedWalBytes === undefined) return false;
  return n.events ? n.events.includes(event) : true;
}

/**
 * A threshold alert fires once when the value goes over it, and is armed again only once the value
 * has fallen to half of it: a lag hovering around the threshold pages once, not at every report.
 */
export function thresholdAlert(armed: boolean, value: number, threshold: number): { fire: boolean; armed: boolean } {
  if (armed && value > threshold) return { fire: true, armed: false };
  if (!armed && value <= threshold / 2) return { fire: false, armed: true };
  return { fire: false, armed };
}

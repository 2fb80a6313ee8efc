/**
 * The cutover's request to an apply that has passed its fence: stop now. VALIDATING stops the apply
 * while it compares (the source is fenced, nothing is left to apply); Temporal's cancellation reaches
 * the activity only with a heartbeat's response, up to a second later (maxHeartbeatThrottleInterval),
 * and that wait was most of the write stop under load (bench:e2e at 748 MB and 1,000 tps: 0.75 s of a
 * 1.14 s window). validateMigration therefore also sends a NOTIFY on the target, where the apply
 * LISTENs on its own session: it stops at once, the same clean stop as a cancellation. The request
 * names the slot and the fence token, and the apply obeys only once it has committed that fence, so a
 * stray or late request changes nothing; one that is lost leaves the cancellation to do it.
 */
import type { Client } from 'pg';
import { withClient } from '../db';
import type { ConnectionSpec } from '../spec';

const CHANNEL = 'pgdts_apply_stop';

const payload = (slot: string, token: string): string => `${slot}:${token}`;

/**
 * Watches `target` (the apply's session) for a request for `slot` naming a fence this run of the apply
 * committed (`fenceCommitted`), and calls `stop` on one. It LISTENs only from its first fence on: a
 * listening session inside a long transaction (a large source transaction being applied) would hold
 * the cluster's notification queue back; past the fence the apply is idle. Best effort: a failed
 * LISTEN leaves the stop to the cancellation. A fence token stored by an earlier run is not obeyed:
 * a late request from an abandoned attempt must not stop the apply that resumed after it.
 */
export function watchStopRequests(target: Client, slot: string, stop: () => void): { fenceCommitted(token: string): void } {
  let fence: string | undefined;
  let listening = false;
  target.on('notification', (n) => {
    if (n.channel === CHANNEL && fence !== undefined && n.payload === payload(slot, fence)) stop();
  });
  return {
    fenceCommitted(token) {
      fence = token;
      if (listening) return;
      listening = true;
      target.query(`LISTEN ${CHANNEL}`).catch(() => undefined);
    },
  };
}

/** Asks the apply of `slot`, once past the fence `token`, to stop (best effort: the caller also cancels it). */
export async function requestApplyStop(target: ConnectionSpec, slot: string, token: string): Promise<void> {
  await withClient(target, (c) => c.query('SELECT pg_notify($1, $2)', [CHANNEL, payload(slot, token)]), { applicationName: 'pg-dts apply stop' });
}

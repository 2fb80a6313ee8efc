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
 * LISTENs on `target` (the apply's session) and calls `stop` on a request for `slot` naming the fence
 * token `fenceToken()` returns (the last fence the apply committed, undefined before any).
 */
export async function listenForStopRequest(target: Client, slot: string, fenceToken: () => string | undefined, stop: () => void): Promise<void> {
  target.on('notification', (n) => {
    const token = fenceToken();
    if (n.channel === CHANNEL && token !== undefined && n.payload === payload(slot, token)) stop();
  });
  await target.query(`LISTEN ${CHANNEL}`);
}

/** Asks the apply of `slot`, once past the fence `token`, to stop (best effort: the caller also cancels it). */
export async function requestApplyStop(target: ConnectionSpec, slot: string, token: string): Promise<void> {
  await withClient(target, (c) => c.query('SELECT pg_notify($1, $2)', [CHANNEL, payload(slot, token)]), { applicationName: 'pg-dts apply stop' });
}

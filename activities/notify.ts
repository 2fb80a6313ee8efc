/**
 * Alerts: one webhook POST per event (spec.notify), from an activity so that the workflow stays
 * deterministic and a slow or failing receiver only costs retries. The URL reaches only hosts that
 * PG_DTS_ALLOWED_HOSTS allows (a spec's author must not make the worker call internal services:
 * link-local addresses such as cloud metadata are refused unless listed), and redirects are not
 * followed. The payload is built by the workflow from names and numbers; error texts are scrubbed.
 */
import { request as httpRequest, type IncomingMessage } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { isIP } from 'node:net';
import { allowListFromEnv, ConnectionRefusedError, guardedLookup, refusal } from './connect-guard';
import { finalFailure, scrub } from './errors';
import { ErrorType } from '../workflows/error-types';
import { webhookUrlProblem } from './spec';
import type { NotifyPayload } from '../workflows/notify';

const TIMEOUT_MS = 10_000;

export async function notifyWebhook(input: { url: string; payload: NotifyPayload }): Promise<{ status: number }> {
  const problem = webhookUrlProblem(input.url);
  if (problem) throw finalFailure(ErrorType.NotifyRefused, `notify.url ${problem}`);
  const url = new URL(input.url);
  const port = Number(url.port || (url.protocol === 'https:' ? 443 : 80));
  const payload = { ...input.payload, ...(input.payload.error ? { error: scrub(input.payload.error) } : {}), message: scrub(input.payload.message) };
  const body = Buffer.from(JSON.stringify(payload));
  const send = url.protocol === 'https:' ? httpsRequest : httpRequest;
  const where = `${url.protocol}//${url.host}`;
  const host = url.hostname.replace(/^\[|\]$/g, '');
  // An address in the URL is connected to without a lookup: checked here.
  const refused = isIP(host) ? refusal(allowListFromEnv(), host, port, host) : undefined;
  if (refused) throw finalFailure(ErrorType.NotifyRefused, `notify.url: ${refused}`);
  try {
    const status = await new Promise<number>((resolve, reject) => {
      const req = send(
        url,
        {
          method: 'POST',
          headers: { 'content-type': 'application/json', 'content-length': body.length, 'user-agent': 'pg-dts', 'x-pg-dts-event': payload.event },
          lookup: guardedLookup(host, port),
          timeout: TIMEOUT_MS,
        },
        (res: IncomingMessage) => {
          res.resume();
          res.on('end', () => resolve(res.statusCode ?? 0));
          res.on('error', reject);
        },
      );
      req.on('timeout', () => req.destroy(new Error(`no answer within ${TIMEOUT_MS / 1000} s`)));
      req.on('error', reject);
      req.end(body);
    });
    // Only a 2xx is a delivery; anything else is retried (within the workflow's bounded policy).
    if (status < 200 || status > 299) throw new Error(`webhook ${where} answered ${status}`);
    return { status };
  } catch (err) {
    if (err instanceof ConnectionRefusedError) throw finalFailure(ErrorType.NotifyRefused, `notify.url: ${err.message}`);
    // The URL's path and query may hold the receiver's token: name only scheme and host.
    throw new Error(`webhook ${where}: ${scrub((err as Error).message).replace(input.url, where)}`);
  }
}

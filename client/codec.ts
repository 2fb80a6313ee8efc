/**
 * The codec endpoint of the REST API (the standard Temporal codec server protocol): lets the Temporal
 * UI and `temporal --codec-endpoint` show decoded payloads to whoever runs it with the key. The codec
 * itself is connection/codec.ts, shared with the worker; its names are re-exported here for the CLI
 * and the API.
 */
import type { Payload, PayloadCodec } from '@temporalio/common';
import { temporal } from '@temporalio/proto';
import type { FastifyInstance } from 'fastify';
import cors from '@fastify/cors';

import { CODEC_KEY_ENV, CodecKeyError } from '../connection/codec';

export { AesGcmCodec, CODEC_KEY_ENV, CodecKeyError, ENCRYPTED_ENCODING, codecFromEnv, parseCodecKeys, type CodecKey } from '../connection/codec';

// ── Codec server (https://docs.temporal.io/production-deployment/data-encryption) ──

/** Origins of the Temporal UI allowed to call the codec endpoint: the dev server's and the compose UI's. */
export const DEFAULT_CODEC_CORS_ORIGINS = ['http://localhost:8233', 'http://127.0.0.1:8233', 'http://localhost:8080', 'http://127.0.0.1:8080'];

/** Origins from PG_DTS_CODEC_CORS_ORIGINS (comma-separated), else the defaults. */
export function codecCorsOrigins(env: NodeJS.ProcessEnv = process.env): string[] {
  const v = env.PG_DTS_CODEC_CORS_ORIGINS?.trim();
  return v ? v.split(',').map((s) => s.trim()).filter(Boolean) : DEFAULT_CODEC_CORS_ORIGINS;
}

export interface CodecRoutesOptions {
  codec: PayloadCodec | undefined;
  /** Browser origins (the Temporal UI) allowed by CORS. */
  corsOrigins: string[];
  /** Where the endpoints live: `${prefix}/encode`, `${prefix}/decode`. Default `/codec`. */
  prefix?: string;
  /** The namespace whose payloads this key protects: a request naming another (X-Namespace) is refused. */
  namespace?: string;
}

/**
 * Largest codec request body. The UI sends one event's payloads at a time and a migration's payloads
 * are specs and reports of kilobytes; 64 MiB let one request grow the API from 127 MB to 655 MB.
 */
export const CODEC_BODY_LIMIT = 4 * 1024 * 1024;

/** JSON body of the codec server protocol: `{ payloads: [{ metadata: { k: base64 }, data: base64 }] }`. */
function payloadsFromJson(body: unknown): Payload[] {
  // Proto3 JSON omits empty lists: `{}` is zero payloads (the temporal CLI sends it).
  const list = body && typeof body === 'object' ? (body as { payloads?: unknown }).payloads : undefined;
  if (!body || typeof body !== 'object' || Array.isArray(body) || (list !== undefined && list !== null && !Array.isArray(list))) {
    throw new CodecRequestError('expected a JSON body { "payloads": [...] }');
  }
  try {
    return temporal.api.common.v1.Payloads.fromObject(body as object).payloads;
  } catch (err) {
    throw new CodecRequestError(`malformed payloads: ${(err as Error).message}`);
  }
}

function payloadsToJson(payloads: Payload[]): unknown {
  const json = temporal.api.common.v1.Payloads.toObject(temporal.api.common.v1.Payloads.fromObject({ payloads }), { bytes: String });
  return { payloads: (json.payloads as unknown[] | undefined) ?? [] };
}

class CodecRequestError extends Error {}

/**
 * Registers POST `${prefix}/encode` and `${prefix}/decode` (with CORS for the Temporal UI) on a
 * Fastify instance, in their own encapsulated scope. Without a codec they answer 501. Who may call
 * them is the API's authentication (client/auth.ts: `Authorization` as the codec-server convention
 * has it); the `X-Namespace` header, when sent, must name the namespace the key belongs to.
 */
export async function registerCodecRoutes(app: FastifyInstance, opts: CodecRoutesOptions): Promise<void> {
  const prefix = opts.prefix ?? '/codec';
  await app.register(
    async (scope) => {
      await scope.register(cors, {
        origin: opts.corsOrigins,
        methods: ['POST', 'OPTIONS'],
        allowedHeaders: ['content-type', 'x-namespace', 'authorization'],
        credentials: true,
        maxAge: 600,
      });
      for (const op of ['encode', 'decode'] as const) {
        scope.post(`${prefix}/${op}`, { bodyLimit: CODEC_BODY_LIMIT, schema: { hide: true } }, async (req, reply) => {
          const ns = req.headers['x-namespace'];
          if (opts.namespace !== undefined && typeof ns === 'string' && ns !== opts.namespace) {
            return reply.code(403).send({ error: `this codec endpoint serves namespace ${opts.namespace}, not ${ns.slice(0, 200)}` });
          }
          if (!opts.codec) {
            return reply.code(501).send({ error: `payload encryption is not configured: set ${CODEC_KEY_ENV}` });
          }
          let payloads: Payload[];
          try {
            payloads = payloadsFromJson(req.body);
          } catch (err) {
            req.log.warn({ error: (err as Error).message }, `codec ${op}: malformed request`);
            return reply.code(400).send({ error: (err as Error).message.slice(0, 2000), field: 'payloads' });
          }
          try {
            const out = op === 'encode' ? await opts.codec.encode(payloads) : await opts.codec.decode(payloads);
            return reply.send(payloadsToJson(out));
          } catch (err) {
            // CodecKeyError messages name key ids only; other errors are not echoed (they might quote data).
            const error = err instanceof CodecKeyError ? err.message : `cannot ${op} the payloads`;
            req.log.warn({ error }, `codec ${op} failed`);
            return reply.code(400).send({ error });
          }
        });
      }
    },
  );
}

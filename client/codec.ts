/**
 * Payload encryption: a Temporal payload codec with AES-256-GCM, keyed from the environment, so that
 * a password that arrives in a migration's input (the REST API's body, a spec file) is never stored
 * in plain text in workflow history. Client, API and worker all use it when
 * PG_DTS_CODEC_KEY is set; the codec endpoint (standard Temporal codec server protocol) lets the
 * Temporal UI and `temporal --codec-endpoint` show decoded payloads to whoever runs it with the key.
 *
 * PG_DTS_CODEC_KEY: base64 of 32 random bytes (`openssl rand -base64 32`). Several keys may be given,
 * comma-separated: the first encrypts, all decrypt (key rotation). Each encrypted payload names its
 * key by an id derived from the key (a hash prefix, never the key).
 *
 * Nothing here ever prints a key or a decrypted payload.
 */
import { createCipheriv, createDecipheriv, createHash, randomBytes } from 'node:crypto';
import type { DataConverter, Payload, PayloadCodec } from '@temporalio/common';
import { temporal } from '@temporalio/proto';
import type { FastifyInstance } from 'fastify';
import cors from '@fastify/cors';

export const CODEC_KEY_ENV = 'PG_DTS_CODEC_KEY';
export const ENCRYPTED_ENCODING = 'binary/encrypted';
export const KEY_ID_METADATA = 'encryption-key-id';
const CIPHER = 'aes-256-gcm';
const IV_BYTES = 12;
const TAG_BYTES = 16;

export class CodecKeyError extends Error {
  override name = 'CodecKeyError';
}

export interface CodecKey {
  id: string;
  key: Buffer;
}

const utf8 = (s: string) => new TextEncoder().encode(s);
const fromUtf8 = (b: Uint8Array | null | undefined) => (b ? Buffer.from(b).toString('utf8') : undefined);

/** Parses PG_DTS_CODEC_KEY's value; the error says what is wrong without echoing the key. */
export function parseCodecKeys(value: string): CodecKey[] {
  const parts = value
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean);
  if (parts.length === 0) throw new CodecKeyError(`${CODEC_KEY_ENV} is set but empty`);
  return parts.map((part, i) => {
    const which = parts.length > 1 ? ` (key ${i + 1})` : '';
    if (!/^[A-Za-z0-9+/]+={0,2}$/.test(part)) {
      throw new CodecKeyError(`${CODEC_KEY_ENV}${which} is not base64: expected 32 random bytes in base64 (openssl rand -base64 32)`);
    }
    const key = Buffer.from(part, 'base64');
    if (key.length !== 32) {
      throw new CodecKeyError(`${CODEC_KEY_ENV}${which} decodes to ${key.length} bytes, not 32 (openssl rand -base64 32)`);
    }
    return { id: keyId(key), key };
  });
}

/** A stable, non-secret name for a key: a SHA-256 prefix. */
export function keyId(key: Buffer): string {
  return createHash('sha256').update('pg-dts payload codec key').update(key).digest('hex').slice(0, 16);
}

/**
 * AES-256-GCM over the whole serialized payload (metadata and data): the stored payload is
 * `{ metadata: { encoding: binary/encrypted, encryption-key-id }, data: iv ‖ ciphertext ‖ tag }`.
 */
export class AesGcmCodec implements PayloadCodec {
  private readonly keys: CodecKey[];

  constructor(keys: CodecKey[]) {
    if (keys.length === 0) throw new CodecKeyError('the payload codec needs at least one key');
    this.keys = keys;
  }

  /** Ids of every key held (the first encrypts). */
  get keyIds(): string[] {
    return this.keys.map((k) => k.id);
  }

  /** Id of the key that encrypts (the first). */
  get keyId(): string {
    return this.keys[0]!.id;
  }

  async encode(payloads: Payload[]): Promise<Payload[]> {
    const { id, key } = this.keys[0]!;
    return payloads.map((p) => {
      const plain = temporal.api.common.v1.Payload.encode(p).finish();
      const iv = randomBytes(IV_BYTES);
      const cipher = createCipheriv(CIPHER, key, iv);
      cipher.setAAD(utf8(id));
      const body = Buffer.concat([cipher.update(plain), cipher.final()]);
      return {
        metadata: { encoding: utf8(ENCRYPTED_ENCODING), [KEY_ID_METADATA]: utf8(id) },
        data: Buffer.concat([iv, body, cipher.getAuthTag()]),
      };
    });
  }

  async decode(payloads: Payload[]): Promise<Payload[]> {
    return payloads.map((p) => {
      if (fromUtf8(p.metadata?.encoding) !== ENCRYPTED_ENCODING) return p;
      const id = fromUtf8(p.metadata?.[KEY_ID_METADATA]);
      const entry = this.keys.find((k) => k.id === id);
      if (!entry) {
        throw new CodecKeyError(`a payload is encrypted with key id ${id ?? '(none)'}, which ${CODEC_KEY_ENV} does not hold`);
      }
      const data = Buffer.from(p.data ?? new Uint8Array());
      if (data.length < IV_BYTES + TAG_BYTES) throw new CodecKeyError('an encrypted payload is truncated');
      const decipher = createDecipheriv(CIPHER, entry.key, data.subarray(0, IV_BYTES));
      decipher.setAAD(utf8(entry.id));
      decipher.setAuthTag(data.subarray(data.length - TAG_BYTES));
      let plain: Buffer;
      try {
        plain = Buffer.concat([decipher.update(data.subarray(IV_BYTES, data.length - TAG_BYTES)), decipher.final()]);
      } catch {
        throw new CodecKeyError(`an encrypted payload (key id ${entry.id}) failed authentication: wrong key or corrupted data`);
      }
      return temporal.api.common.v1.Payload.decode(plain);
    });
  }
}

/** The key id an encrypted payload names; undefined for a payload that is not encrypted. */
export function payloadKeyId(p: Payload | null | undefined): string | undefined {
  if (fromUtf8(p?.metadata?.encoding) !== ENCRYPTED_ENCODING) return undefined;
  return fromUtf8(p?.metadata?.[KEY_ID_METADATA]) ?? '(none)';
}

/** The codec PG_DTS_CODEC_KEY describes, or undefined when it is not set. */
export function codecFromEnv(env: NodeJS.ProcessEnv = process.env): AesGcmCodec | undefined {
  const value = env[CODEC_KEY_ENV];
  if (value === undefined || value.trim() === '') return undefined;
  return new AesGcmCodec(parseCodecKeys(value));
}

/** The failure converter workers use (failure-converter.js): messages and stack traces in encoded payloads. */
export const FAILURE_CONVERTER_PATH = require.resolve('./failure-converter.js');

/** Data converter for clients and workers: the codec when configured, else Temporal's default. */
export function dataConverterFor(codec: PayloadCodec | undefined): DataConverter | undefined {
  return codec ? { payloadCodecs: [codec] } : undefined;
}

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

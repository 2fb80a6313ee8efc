/**
 * Payload encryption: a Temporal payload codec with AES-256-GCM, keyed from the environment, so that
 * a password that arrives in a migration's input (the REST API's body, a spec file) is never stored
 * in plain text in workflow history. Client, API and worker all use it when
 * PG_DTS_CODEC_KEY is set (the API's codec endpoint, for the Temporal UI, is client/codec.ts).
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

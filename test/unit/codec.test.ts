/**
 * The AES-256-GCM payload codec and its codec server endpoints (Temporal's protocol), without a
 * Temporal server: round trips, key rotation, tampering, key parsing, CORS.
 */
import { randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import Fastify from 'fastify';
import { defaultPayloadConverter } from '@temporalio/common';
import { AesGcmCodec, CodecKeyError, ENCRYPTED_ENCODING, codecFromEnv, parseCodecKeys, registerCodecRoutes } from '../../client/codec';

const SECRET = 'hunter2-correct-horse';
const b64key = () => randomBytes(32).toString('base64');
const codecOf = (...keys: string[]) => new AesGcmCodec(parseCodecKeys(keys.join(',')));
const payloadOf = (v: unknown) => defaultPayloadConverter.toPayload(v)!;
const text = (b: Uint8Array | null | undefined) => Buffer.from(b ?? new Uint8Array()).toString('utf8');

describe('AesGcmCodec', () => {
  it('round-trips payloads and stores neither the value nor its encoding in clear', async () => {
    const codec = codecOf(b64key());
    const input = [payloadOf({ source: { host: 'db', password: SECRET } }), payloadOf('plain string'), payloadOf(null)];
    const encoded = await codec.encode(input);
    expect(encoded).toHaveLength(3);
    for (const p of encoded) {
      expect(text(p.metadata?.encoding)).toBe(ENCRYPTED_ENCODING);
      expect(text(p.metadata?.['encryption-key-id'])).toBe(codec.keyId);
      expect(Buffer.from(p.data!).includes(Buffer.from(SECRET))).toBe(false);
      expect(Buffer.from(p.data!).includes(Buffer.from('json/plain'))).toBe(false);
    }
    const decoded = await codec.decode(encoded);
    expect(decoded.map((p) => defaultPayloadConverter.fromPayload(p))).toEqual([{ source: { host: 'db', password: SECRET } }, 'plain string', null]);
  });

  it('uses a fresh nonce every time', async () => {
    const codec = codecOf(b64key());
    const [a] = await codec.encode([payloadOf('same')]);
    const [b] = await codec.encode([payloadOf('same')]);
    expect(Buffer.from(a!.data!).equals(Buffer.from(b!.data!))).toBe(false);
  });

  it('passes unencrypted payloads through decode', async () => {
    const p = payloadOf({ a: 1 });
    expect(await codecOf(b64key()).decode([p])).toEqual([p]);
  });

  it('decrypts with any listed key (rotation) and encrypts with the first', async () => {
    const oldKey = b64key();
    const newKey = b64key();
    const old = codecOf(oldKey);
    const rotated = codecOf(newKey, oldKey);
    const [fromOld] = await old.encode([payloadOf('x')]);
    expect(defaultPayloadConverter.fromPayload((await rotated.decode([fromOld!]))[0]!)).toBe('x');
    const [fromNew] = await rotated.encode([payloadOf('y')]);
    expect(text(fromNew!.metadata?.['encryption-key-id'])).toBe(codecOf(newKey).keyId);
    await expect(old.decode([fromNew!])).rejects.toThrow(/key id [0-9a-f]{16}, which PG_DTS_CODEC_KEY does not hold/);
  });

  it('refuses tampered data', async () => {
    const codec = codecOf(b64key());
    const [p] = await codec.encode([payloadOf('value')]);
    const data = Buffer.from(p!.data!);
    data[data.length - 20]! ^= 1;
    await expect(codec.decode([{ ...p!, data }])).rejects.toThrow(/failed authentication/);
  });

  it('parses keys and says what is wrong without echoing them', () => {
    expect(parseCodecKeys(` ${b64key()} , ${b64key()} `)).toHaveLength(2);
    const short = randomBytes(16).toString('base64');
    expect(() => parseCodecKeys(short)).toThrow(CodecKeyError);
    try {
      parseCodecKeys(short);
    } catch (err) {
      expect((err as Error).message).toMatch(/16 bytes, not 32/);
      expect((err as Error).message).not.toContain(short);
    }
    expect(() => parseCodecKeys('not base64 at all!')).toThrow(/not base64/);
    expect(() => parseCodecKeys(' , ')).toThrow(/empty/);
    expect(codecFromEnv({})).toBeUndefined();
    expect(codecFromEnv({ PG_DTS_CODEC_KEY: b64key() })).toBeInstanceOf(AesGcmCodec);
  });
});

describe('codec endpoint', () => {
  const UI = 'http://localhost:8233';

  async function app(codec: AesGcmCodec | undefined) {
    const a = Fastify();
    await registerCodecRoutes(a, { codec, corsOrigins: [UI] });
    return a;
  }

  it('speaks the Temporal codec server protocol (base64 JSON payloads)', async () => {
    const codec = codecOf(b64key());
    const a = await app(codec);
    const plain = payloadOf({ password: SECRET });
    const body = {
      payloads: [{ metadata: { encoding: Buffer.from(plain.metadata!.encoding!).toString('base64') }, data: Buffer.from(plain.data!).toString('base64') }],
    };
    const enc = await a.inject({ method: 'POST', url: '/codec/encode', payload: body, headers: { 'x-namespace': 'default' } });
    expect(enc.statusCode).toBe(200);
    const encoded = enc.json() as { payloads: Array<{ metadata: Record<string, string>; data: string }> };
    expect(Buffer.from(encoded.payloads[0]!.metadata.encoding!, 'base64').toString()).toBe(ENCRYPTED_ENCODING);
    expect(enc.body).not.toContain(Buffer.from(SECRET).toString('base64').slice(0, 8));

    const dec = await a.inject({ method: 'POST', url: '/codec/decode', payload: encoded });
    expect(dec.statusCode).toBe(200);
    expect(dec.json()).toEqual(body);

    // Proto3 JSON leaves out an empty list: {} is zero payloads (the temporal CLI sends that).
    expect((await a.inject({ method: 'POST', url: '/codec/decode', payload: {} })).json()).toEqual({ payloads: [] });
    expect((await a.inject({ method: 'POST', url: '/codec/decode', payload: { payloads: 'x' } })).statusCode).toBe(400);
    expect((await a.inject({ method: 'POST', url: '/codec/decode', payload: [1] })).statusCode).toBe(400);
    await a.close();
  });

  it('answers CORS preflights from the Temporal UI only', async () => {
    const a = await app(codecOf(b64key()));
    const ok = await a.inject({
      method: 'OPTIONS',
      url: '/codec/decode',
      headers: { origin: UI, 'access-control-request-method': 'POST', 'access-control-request-headers': 'content-type,x-namespace' },
    });
    expect(ok.statusCode).toBe(204);
    expect(ok.headers['access-control-allow-origin']).toBe(UI);
    expect(String(ok.headers['access-control-allow-headers'])).toMatch(/x-namespace/);
    const other = await a.inject({
      method: 'OPTIONS',
      url: '/codec/decode',
      headers: { origin: 'http://evil.example', 'access-control-request-method': 'POST' },
    });
    expect(other.headers['access-control-allow-origin']).toBeUndefined();
    await a.close();
  });

  it('answers 501 without a key', async () => {
    const a = await app(undefined);
    const r = await a.inject({ method: 'POST', url: '/codec/decode', payload: { payloads: [] } });
    expect(r.statusCode).toBe(501);
    expect(r.json()).toEqual({ error: expect.stringMatching(/PG_DTS_CODEC_KEY/) });
    await a.close();
  });
});

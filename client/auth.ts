/**
 * Who may use `dts api` and its codec endpoint (the documented settings PG_DTS_API_TOKEN, PG_DTS_API_TOKEN_FILE).
 *
 * Whoever reaches the API controls every database the workers can reach (it starts migrations, and
 * the codec endpoint decrypts history), so every request carries `Authorization: Bearer <token>` once a
 * token is configured. Without one the API serves loopback only: `dts api` refuses another address,
 * and every request must name a loopback Host, so a DNS-rebound name cannot reach it from a browser.
 * Either way a POST from a browser page of another origin is refused (a form needs no CORS preflight,
 * so the browser would send it and only hide the answer).
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { isIP } from 'node:net';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { fileFromEnv } from '../connection/settings';

export const API_TOKEN_ENV = 'PG_DTS_API_TOKEN';
/** mTLS instead of (or besides) the token: the API's certificate, its key, and the CA of client certificates. */
export const API_TLS_CERT_ENV = 'PG_DTS_API_TLS_CERT';
export const API_TLS_KEY_ENV = 'PG_DTS_API_TLS_KEY';
export const API_TLS_CLIENT_CA_ENV = 'PG_DTS_API_TLS_CLIENT_CA';
export const API_TOKEN_FILE_ENV = 'PG_DTS_API_TOKEN_FILE';
/** Shorter tokens are refused: a guessable token is no authentication. */
export const MIN_TOKEN_LENGTH = 16;

export class ApiAuthConfigError extends Error {
  override name = 'ApiAuthConfigError';
}

/** The bearer token from PG_DTS_API_TOKEN or the file PG_DTS_API_TOKEN_FILE names; undefined when neither is set. */
export function apiTokenFromEnv(env: NodeJS.ProcessEnv = process.env): string | undefined {
  const direct = env[API_TOKEN_ENV]?.trim();
  const file = env[API_TOKEN_FILE_ENV]?.trim();
  if (direct && file) throw new ApiAuthConfigError(`set ${API_TOKEN_ENV} or ${API_TOKEN_FILE_ENV}, not both`);
  let token = direct;
  if (file) {
    try {
      token = readFileSync(file, 'utf8').trim();
    } catch (err) {
      throw new ApiAuthConfigError(`${API_TOKEN_FILE_ENV}: cannot read ${file} (${(err as NodeJS.ErrnoException).code ?? 'error'})`);
    }
  }
  if (token === undefined || token === '') {
    if (file) throw new ApiAuthConfigError(`${API_TOKEN_FILE_ENV}: ${file} is empty`);
    return undefined;
  }
  if (token.length < MIN_TOKEN_LENGTH || /\s/.test(token)) {
    throw new ApiAuthConfigError(`the API token must be at least ${MIN_TOKEN_LENGTH} characters without spaces (openssl rand -hex 32)`);
  }
  return token;
}

/** What node's https server takes: HTTPS, and with a client CA, only clients holding a certificate it signed. */
export interface ApiTls {
  cert: Buffer;
  key: Buffer;
  ca?: Buffer;
  requestCert: boolean;
  rejectUnauthorized: boolean;
}

/**
 * HTTPS for `dts api` from PG_DTS_API_TLS_CERT and PG_DTS_API_TLS_KEY (files); with
 * PG_DTS_API_TLS_CLIENT_CA, mutual TLS: the TLS handshake refuses a client without a certificate
 * signed by that CA, which then authenticates every request. Undefined when none is set.
 */
export function apiTlsFromEnv(env: NodeJS.ProcessEnv = process.env): ApiTls | undefined {
  const read = (name: string) => fileFromEnv(env, name, (m) => new ApiAuthConfigError(m));
  const cert = read(API_TLS_CERT_ENV);
  const key = read(API_TLS_KEY_ENV);
  const ca = read(API_TLS_CLIENT_CA_ENV);
  if (!cert && !key && !ca) return undefined;
  if (!cert || !key) throw new ApiAuthConfigError(`${API_TLS_CERT_ENV} and ${API_TLS_KEY_ENV} go together (and ${API_TLS_CLIENT_CA_ENV} needs them)`);
  return ca ? { cert, key, ca, requestCert: true, rejectUnauthorized: true } : { cert, key, requestCert: false, rejectUnauthorized: false };
}

const digest = (s: string) => createHash('sha256').update(s).digest();

/** Constant-time: both sides are hashed first, so neither the content nor the length leaks through timing. */
export function tokenMatches(expected: string, presented: string | undefined): boolean {
  if (presented === undefined) return false;
  return timingSafeEqual(digest(expected), digest(presented));
}

/** The token of an `Authorization: Bearer <token>` header (scheme case-insensitive). */
export function bearerToken(header: string | string[] | undefined): string | undefined {
  const value = Array.isArray(header) ? header[0] : header;
  const m = value ? /^Bearer\s+(\S+)\s*$/i.exec(value) : null;
  return m?.[1];
}

/** True for 127.0.0.0/8, ::1, localhost and IPv4-mapped loopback. */
export function isLoopback(host: string): boolean {
  const h = host.replace(/^\[(.*)\]$/, '$1').toLowerCase();
  if (h === 'localhost' || h.endsWith('.localhost')) return true;
  if (isIP(h) === 4) return h.startsWith('127.');
  if (isIP(h) === 6) return h === '::1' || /^::ffff:127\./.test(h);
  return false;
}

/** The host part of a Host header (`name:port`, `[v6]:port`). */
export function hostOfHeader(host: string): string {
  if (host.startsWith('[')) return host.slice(0, host.indexOf(']') + 1);
  const i = host.lastIndexOf(':');
  return i > 0 && host.indexOf(':') === i ? host.slice(0, i) : host;
}

/** Refuses `dts api --host` on a non-loopback address without a token or mTLS. */
export function assertListenAllowed(host: string, token: string | undefined, mutualTls = false): void {
  if (token || mutualTls || isLoopback(host)) return;
  throw new ApiAuthConfigError(
    `refusing to serve the API on ${host} without authentication: anyone who reaches it could start migrations against any ` +
      `database the workers reach and decrypt payloads. Set ${API_TOKEN_ENV} or ${API_TOKEN_FILE_ENV} (openssl rand -hex 32), or listen on 127.0.0.1`,
  );
}

export interface AuthOptions {
  /** The bearer token; undefined: no authentication, loopback Host only. */
  token: string | undefined;
  /** Browser origins that may POST (the Temporal UI calling the codec endpoint). */
  allowedOrigins: string[];
  /** Paths anyone may GET (the OpenAPI document, the health summary). */
  publicPaths: string[];
  /** Mutual TLS: the handshake already refused every client without a certificate from the client CA. */
  mutualTls?: boolean;
}

/** The request is authenticated (mutual TLS, a valid token, or no token configured). */
export function isAuthenticated(req: FastifyRequest, token: string | undefined, mutualTls = false): boolean {
  if (mutualTls && (req.raw.socket as { authorized?: boolean }).authorized === true) return true;
  return token === undefined || tokenMatches(token, bearerToken(req.headers.authorization));
}

/**
 * The request's Origin is not this server's own nor an allowed one. Also refuses what
 * `Sec-Fetch-Site: cross-site` marks, for browsers that leave out Origin.
 */
function crossSite(req: FastifyRequest, allowedOrigins: string[]): string | undefined {
  const origin = req.headers.origin;
  if (origin !== undefined && origin !== 'null') {
    let host: string;
    try {
      host = new URL(origin).host;
    } catch {
      return 'a malformed Origin';
    }
    if (allowedOrigins.includes(origin) || host === req.headers.host) return undefined;
    return `Origin ${origin.slice(0, 200)}`;
  }
  if (origin === 'null') return 'an opaque Origin';
  if (req.headers['sec-fetch-site'] === 'cross-site') return 'a cross-site request';
  return undefined;
}

const deny = (reply: FastifyReply, code: number, error: string) => {
  if (code === 401) reply.header('www-authenticate', 'Bearer realm="pg-dts"');
  return reply.code(code).send({ error });
};

/** Checks every request before its route runs (an onRequest hook: before the body is even read). */
export function registerAuth(app: FastifyInstance, opts: AuthOptions): void {
  app.addHook('onRequest', async (req, reply) => {
    const hostHeader = req.headers.host ?? '';
    if (opts.token === undefined && !opts.mutualTls && !isLoopback(hostOfHeader(hostHeader))) {
      return deny(reply, 403, `Host ${hostHeader.slice(0, 200)} refused: without ${API_TOKEN_ENV} the API answers loopback names only`);
    }
    // CORS preflights carry no credentials; @fastify/cors answers them on the codec routes.
    if (req.method === 'OPTIONS') return undefined;
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      const why = crossSite(req, opts.allowedOrigins);
      if (why) return deny(reply, 403, `cross-site request refused (${why})`);
    }
    const path = req.url.split('?')[0]!;
    if ((req.method === 'GET' || req.method === 'HEAD') && opts.publicPaths.includes(path)) return undefined;
    if (!isAuthenticated(req, opts.token, opts.mutualTls)) {
      return deny(reply, 401, req.headers.authorization ? 'invalid API token' : `authentication required: Authorization: Bearer <${API_TOKEN_ENV}>`);
    }
    return undefined;
  });
}

/** Error texts in responses are capped: a request must not make the answer larger than it. */
export const MAX_ERROR_CHARS = 2000;

export function boundedText(s: string, max = MAX_ERROR_CHARS): string {
  return s.length <= max ? s : `${s.slice(0, max)}… (${s.length - max} more characters)`;
}

/**
 * Where the worker may connect, and what it answers a server that asks for a password. A migration's
 * spec can come from whoever may use the API, so the servers it names are the caller's choice: without
 * limits the worker would copy a production table into any database, probe ports and local sockets,
 * and hand PGPASSWORD to a fake server that asks for it in clear text.
 *
 * PG_DTS_ALLOWED_HOSTS (a documented setting of worker and API; unset: any host): comma-separated
 * entries, each one of
 *   db.example.com         a host name, any port (as named in the spec; DNS decides the address)
 *   db.example.com:5433    a host name or IPv4 address on one port
 *   10.1.2.3, [fd00::1]:5432, fd00::1
 *   10.0.0.0/8, fd00::/8   every address in a CIDR block, any port
 *   /var/run/postgresql    a unix-socket directory
 * Unset: any TCP host except link-local addresses (169.254.0.0/16, fe80::/10: cloud metadata services
 * live there). Unix sockets (peer authentication as the worker's OS user) and link-local addresses are
 * refused unless listed.
 *
 * Every socket pg opens goes through guardedStream: the check runs on the address actually connected
 * (after DNS), so a name that resolves elsewhere between a check and the connect gains nothing.
 */
import dns, { type LookupAddress, type LookupOptions } from 'node:dns';
import { BlockList, isIP, Socket } from 'node:net';

export const ALLOWED_HOSTS_ENV = 'PG_DTS_ALLOWED_HOSTS';

/** A connection the allow-list or the password policy refuses: final, no retry changes it. */
export class ConnectionRefusedError extends Error {
  override name = 'ConnectionRefusedError';
}

interface Rule {
  /** A host name (lower case) or IP address as written. */
  host?: string;
  /** A CIDR block or single address. */
  block?: BlockList;
  socketDir?: string;
  port?: number;
}

export interface AllowList {
  /** False: PG_DTS_ALLOWED_HOSTS unset (any TCP host but link-local). */
  configured: boolean;
  rules: Rule[];
}

const LINK_LOCAL = new BlockList();
LINK_LOCAL.addSubnet('169.254.0.0', 16, 'ipv4');
LINK_LOCAL.addSubnet('fe80::', 10, 'ipv6');

const family = (addr: string): 'ipv4' | 'ipv6' => (isIP(addr) === 6 ? 'ipv6' : 'ipv4');

/** ::ffff:10.1.2.3 is 10.1.2.3. */
function plainAddress(addr: string): string {
  const m = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(addr);
  return m ? m[1]! : addr;
}

function parsePort(s: string, entry: string): number {
  const n = Number(s);
  if (!/^\d+$/.test(s) || n < 1 || n > 65535) throw new ConnectionRefusedError(`${ALLOWED_HOSTS_ENV}: bad port in ${JSON.stringify(entry)}`);
  return n;
}

function parseEntry(entry: string): Rule {
  const bad = () => new ConnectionRefusedError(`${ALLOWED_HOSTS_ENV}: ${JSON.stringify(entry)} is not a host, host:port, address, CIDR or socket directory`);
  if (entry.startsWith('/')) return { socketDir: entry.replace(/\/+$/, '') || '/' };
  const cidr = /^([^/]+)\/(\d{1,3})$/.exec(entry);
  if (cidr) {
    const addr = plainAddress(cidr[1]!);
    const prefix = Number(cidr[2]);
    if (!isIP(addr) || prefix > (isIP(addr) === 6 ? 128 : 32)) throw bad();
    const block = new BlockList();
    block.addSubnet(addr, prefix, family(addr));
    return { block };
  }
  let host = entry;
  let port: number | undefined;
  const bracketed = /^\[([^\]]+)\](?::(\d+))?$/.exec(entry);
  if (bracketed) {
    host = bracketed[1]!;
    if (isIP(host) !== 6) throw bad();
    if (bracketed[2] !== undefined) port = parsePort(bracketed[2], entry);
  } else if (isIP(entry) !== 6 && entry.includes(':')) {
    const i = entry.lastIndexOf(':');
    host = entry.slice(0, i);
    port = parsePort(entry.slice(i + 1), entry);
  }
  if (!host || /[\s/@]/.test(host)) throw bad();
  const addr = plainAddress(host);
  if (isIP(addr)) {
    const block = new BlockList();
    block.addAddress(addr, family(addr));
    return { block, port };
  }
  return { host: host.toLowerCase().replace(/\.$/, ''), port };
}

export function parseAllowedHosts(value: string | undefined): AllowList {
  const entries = (value ?? '')
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean);
  return { configured: entries.length > 0, rules: entries.map(parseEntry) };
}

let cached: { value: string | undefined; list: AllowList } | undefined;
/** PG_DTS_ALLOWED_HOSTS, parsed once per value. */
export function allowListFromEnv(env: NodeJS.ProcessEnv = process.env): AllowList {
  const value = env[ALLOWED_HOSTS_ENV];
  if (cached === undefined || cached.value !== value) cached = { value, list: parseAllowedHosts(value) };
  return cached.list;
}

const portMatches = (r: Rule, port: number) => r.port === undefined || r.port === port;

/** Why a TCP connection to `host`:`port`, resolved to `address`, is refused; undefined when allowed. */
export function refusal(list: AllowList, host: string, port: number, address: string): string | undefined {
  const addr = plainAddress(address);
  const name = host.toLowerCase().replace(/\.$/, '');
  const listed = list.rules.some((r) => portMatches(r, port) && (r.host === name || (r.block?.check(addr, family(addr)) ?? false)));
  if (listed) return undefined;
  if (list.configured) return `${host}:${port} is not in ${ALLOWED_HOSTS_ENV}`;
  if (LINK_LOCAL.check(addr, family(addr))) return `${host}:${port} is a link-local address, refused unless ${ALLOWED_HOSTS_ENV} lists it`;
  return undefined;
}

/** Why a unix-socket connection in `dir` is refused; undefined when its directory is listed. */
export function socketRefusal(list: AllowList, dir: string): string | undefined {
  const d = dir.replace(/\/+$/, '') || '/';
  if (list.rules.some((r) => r.socketDir === d)) return undefined;
  return `unix socket ${d} refused: list its directory in ${ALLOWED_HOSTS_ENV} to allow it`;
}

/** A dns.lookup for other TCP clients (the notify webhook): PG_DTS_ALLOWED_HOSTS checked on each address it resolves. */
export function guardedLookup(host: string, port: number): (hostname: string, options: LookupOptions, callback: LookupCallback) => void {
  return checkedLookup(allowListFromEnv(), host, port);
}

type LookupCallback = (err: NodeJS.ErrnoException | null, address: string | LookupAddress[], family?: number) => void;

/** dns.lookup that drops refused addresses, and fails when none is left. */
function checkedLookup(list: AllowList, host: string, port: number) {
  return (hostname: string, options: LookupOptions, callback: LookupCallback): void => {
    dns.lookup(hostname, { ...options, all: true }, (err, addresses) => {
      if (err) return callback(err, []);
      const ok = addresses.filter((a) => refusal(list, host, port, a.address) === undefined);
      if (ok.length === 0) {
        const why = addresses.length ? refusal(list, host, port, addresses[0]!.address)! : `${host} has no address`;
        return callback(new ConnectionRefusedError(why), []);
      }
      if (options.all) callback(null, ok);
      else callback(null, ok[0]!.address, ok[0]!.family);
    });
  };
}

const AUTH_REQUEST = 0x52; // 'R'
const ERROR_RESPONSE = 0x45; // 'E'
const AUTH_OK = 0;
const AUTH_CLEARTEXT = 3;
/** The authentication exchange is a few small messages; stop looking after this much. */
const WATCH_BYTES = 64 * 1024;

/**
 * Watches what the server sends until authentication ends, and destroys the socket if it asks for the
 * password in clear text on a connection without TLS. Runs before pg's own listener (registered
 * first), so pg's answer is written to a destroyed socket: nothing leaves.
 */
function refuseCleartextPassword(sock: Socket, tls: boolean, describe: () => string): void {
  let buf: Buffer = Buffer.alloc(0);
  let sslReplyPending = tls;
  let seen = 0;
  const onData = (chunk: Buffer) => {
    seen += chunk.length;
    if (sslReplyPending) {
      // pg asked for TLS: 'S' means the rest is TLS, which is not ours to read; pg handles 'N'.
      sock.off('data', onData);
      return;
    }
    buf = buf.length ? Buffer.concat([buf, chunk]) : chunk;
    while (buf.length >= 5) {
      const type = buf[0];
      const len = buf.readInt32BE(1);
      if (buf.length < 1 + len) break;
      if (type === AUTH_REQUEST && len >= 8) {
        const code = buf.readInt32BE(5);
        if (code === AUTH_CLEARTEXT) {
          sock.off('data', onData);
          sock.destroy(
            new ConnectionRefusedError(
              `${describe()} asked for the password in clear text on a connection without TLS: refused, the password was not sent ` +
                '(use scram-sha-256 or md5 authentication, or sslmode=require or stronger)',
            ),
          );
          return;
        }
        if (code === AUTH_OK) {
          sock.off('data', onData);
          return;
        }
      } else if (type === ERROR_RESPONSE) {
        sock.off('data', onData);
        return;
      }
      buf = buf.subarray(1 + len);
    }
    if (seen > WATCH_BYTES) sock.off('data', onData);
  };
  sock.on('data', onData);
}

/**
 * The socket factory pg's ClientConfig.stream takes: every connection the worker opens (sessions and
 * the replication stream) checks PG_DTS_ALLOWED_HOSTS on the address it connects to, and refuses a
 * clear-text password request without TLS.
 */
export function guardedStream(config: { ssl?: unknown; sslNegotiation?: string } = {}): Socket {
  const list = allowListFromEnv();
  const sock = new Socket();
  let target = 'the server';
  const fail = (why: string) => {
    process.nextTick(() => sock.destroy(new ConnectionRefusedError(why)));
    return sock;
  };
  const connect = sock.connect.bind(sock) as (...args: unknown[]) => Socket;
  const guarded = (...args: unknown[]): Socket => {
    const [first, second] = args;
    if (typeof first === 'string' && second === undefined) {
      // pg connects to `${dir}/.s.PGSQL.${port}` for a host that is a directory.
      const dir = first.replace(/\/\.s\.PGSQL\.\d+$/, '');
      target = first;
      const why = socketRefusal(list, dir);
      return why ? fail(why) : connect(first);
    }
    const port = Number(first);
    const host = typeof second === 'string' && second ? second : 'localhost';
    target = `${host}:${port}`;
    if (isIP(host)) {
      const why = refusal(list, host, port, host);
      return why ? fail(why) : connect(port, host);
    }
    return connect({ port, host, lookup: checkedLookup(list, host, port) });
  };
  (sock as unknown as { connect: typeof guarded }).connect = guarded;
  // Direct TLS negotiation starts TLS at once: there is no clear-text exchange to watch.
  if (!(config.ssl && config.sslNegotiation === 'direct')) refuseCleartextPassword(sock, Boolean(config.ssl), () => target);
  return sock;
}

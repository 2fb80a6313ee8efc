/**
 * A TCP proxy in front of a server that slows what the server sends (a slow link): a test that must
 * act while a copy is in flight gets a copy that lasts, whatever this machine's speed.
 */
import net from 'node:net';

export interface ThrottleProxy {
  port: number;
  /** Bytes a second from the server to each client; Infinity lifts the limit. */
  rate: number;
  /** The URI with its port replaced by the proxy's. */
  uri(uri: string): string;
  close(): Promise<void>;
}

export async function throttleProxy(serverPort: number, rate: number): Promise<ThrottleProxy> {
  const sockets = new Set<net.Socket>();
  const proxy: ThrottleProxy = {
    port: 0,
    rate,
    uri: (uri) => uri.replace(/:(\d+)\//, `:${proxy.port}/`),
    close: () => {
      for (const s of sockets) s.destroy();
      return new Promise((r) => server.close(() => r()));
    },
  };
  const server = net.createServer((client) => {
    const upstream = net.connect(serverPort, '127.0.0.1');
    sockets.add(client).add(upstream);
    let start = Date.now();
    let sent = 0;
    client.pipe(upstream);
    upstream.on('data', (chunk: Buffer) => {
      client.write(chunk);
      if (proxy.rate === Infinity) return;
      sent += chunk.length;
      const ahead = (sent / proxy.rate) * 1000 - (Date.now() - start);
      if (ahead > 0) {
        upstream.pause();
        setTimeout(() => upstream.resume(), ahead);
      } else if (ahead < -1000) {
        // An idle link does not bank a burst.
        start = Date.now();
        sent = 0;
      }
    });
    const end = () => {
      client.destroy();
      upstream.destroy();
      sockets.delete(client);
      sockets.delete(upstream);
    };
    client.on('close', end).on('error', end);
    upstream.on('close', end).on('error', end);
    upstream.on('end', () => client.end());
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  proxy.port = (server.address() as net.AddressInfo).port;
  return proxy;
}

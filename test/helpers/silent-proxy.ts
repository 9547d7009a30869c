// A PostgreSQL that goes silent, with no reset and no FIN (its host lost in a failover, a
// connection dropped by a firewall, a server stopped with SIGSTOP), or restarts (refusing
// connections for a while), through a TCP proxy.
import net from 'node:net';

/**
 * A TCP proxy to PostgreSQL. `silence()` makes every connection open now go quiet for good
 * (nothing more is forwarded either way, nothing is closed), and new ones too, until `answer()`:
 * connections made after that work. While `armed`, a new dispatcher pool connection goes quiet
 * for good at its first statement (the pool's session settings), once the connection is made.
 */
export async function silenceableProxy(target: URL) {
  let generation = 0;
  let silent = false;
  let armed = false;
  const sockets = new Set<net.Socket>();
  /** Each open connection's application_name, and how to silence it. */
  const connections = new Map<net.Socket, { application: string; silence: () => void }>();
  const server = net.createServer((client) => {
    const born = generation;
    let first = true;
    let victim = false;
    let quiet = false;
    client.on('close', () => connections.delete(client));
    const alive = () => !silent && !quiet && born === generation;
    const upstream = net.connect(Number(target.port), target.hostname);
    for (const s of [client, upstream]) {
      sockets.add(s);
      s.on('error', () => {});
      s.on('close', () => sockets.delete(s));
    }
    client.on('data', (d) => {
      if (first) {
        first = false;
        const application = /\0application_name\0([^\0]*)\0/.exec(d.toString('latin1'))?.[1] ?? '';
        connections.set(client, { application, silence: () => (quiet = true) });
        victim = armed && application === 'hookline-dispatcher';
      } else if (victim && d[0] === 0x51) quiet = true; // 'Q', a simple query
      if (alive()) upstream.write(d);
    });
    upstream.on('data', (d) => alive() && client.write(d));
    // A connection that ends while alive ends on the other side too; a silenced one never does.
    client.on('close', () => alive() && upstream.destroy());
    upstream.on('close', () => alive() && client.destroy());
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const url = new URL(target);
  url.port = String((server.address() as net.AddressInfo).port);
  return {
    url: url.toString(),
    silence() {
      silent = true;
      generation++;
    },
    answer() {
      silent = false;
    },
    arm: () => (armed = true),
    /** Silences the connections open now whose application_name is `application` (new ones work). */
    silenceConnectionsOf(application: string): number {
      let n = 0;
      for (const connection of connections.values()) if (connection.application === application && ++n) connection.silence();
      return n;
    },
    disarm: () => (armed = false),
    /**
     * A database restart as clients see it: every connection is cut, and new ones are refused
     * (ECONNREFUSED, nothing listens on the port) until `up()`.
     */
    async down() {
      for (const s of sockets) s.destroy();
      await new Promise((resolve) => server.close(resolve));
    },
    up: () => new Promise<void>((resolve) => server.listen(Number(url.port), '127.0.0.1', resolve)),
    async close() {
      for (const s of sockets) s.destroy();
      await new Promise((resolve) => server.close(resolve));
    },
  };
}

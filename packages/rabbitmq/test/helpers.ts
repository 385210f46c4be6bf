/**
 * Test support for the RabbitMQ transport: unique names, a raw amqplib connection to arrange
 * and inspect the broker, clean-up of what a test declared, closing only this test's own
 * connections with `rabbitmqctl`, and a TCP proxy between client and broker that can cut every
 * connection or hold the bytes (a broker that stops answering), without touching the shared
 * broker itself.
 */
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { createServer, connect as netConnect, type Server, type Socket } from 'node:net';
import { promisify } from 'node:util';
import amqp, { type ChannelModel, type ConsumeMessage } from 'amqplib';
import { afterEach } from 'vitest';
import { waitFor } from '@watchtower/core/testing';

const run = promisify(execFile);

/** The shared broker of the integration tests. */
export const AMQP_URL = process.env['WATCHTOWER_AMQP_URL'] ?? 'amqp://guest:guest@127.0.0.1:5672';

/** A name no other test uses (exchange, connection name). */
export function uniqueName(label = 'wt'): string {
  return `test-${label}-${randomBytes(5).toString('hex')}`;
}

/** A raw amqplib connection for arranging and inspecting what a test needs. */
export function rawConnection(url = AMQP_URL): Promise<ChannelModel> {
  return amqp.connect(url);
}

/** Runs `work` with a raw channel, then closes the connection. */
export async function withRawChannel<T>(
  work: (channel: amqp.ConfirmChannel) => Promise<T>,
  url = AMQP_URL,
): Promise<T> {
  const connection = await rawConnection(url);
  try {
    const channel = await connection.createConfirmChannel();
    channel.on('error', () => undefined);
    return await work(channel);
  } finally {
    await connection.close().catch(() => undefined);
  }
}

/** Runs `rabbitmqctl` with `args` (for what a test arranges on the broker: a vhost). */
export async function rabbitmqctl(args: readonly string[]): Promise<string> {
  return (await run('rabbitmqctl', [...args])).stdout;
}

/** Queues of the broker whose names start with one of `prefixes`. */
async function queuesStartingWith(prefixes: readonly string[]): Promise<string[]> {
  const { stdout } = await run('rabbitmqctl', ['list_queues', '-q', '--no-table-headers', 'name']);
  return stdout
    .split('\n')
    .map((line) => line.trim())
    .filter((name) => name !== '' && prefixes.some((prefix) => name.startsWith(prefix)));
}

/**
 * Deletes the exchanges `{exchange}`, `{exchange}.dlx` and every queue whose name starts with
 * one of `exchanges` (group, own, delay and dead-letter queues).
 */
export async function deleteTopology(exchanges: readonly string[], url = AMQP_URL): Promise<void> {
  if (exchanges.length === 0) return;
  const queues = await queuesStartingWith(exchanges.map((e) => `${e}.`));
  await withRawChannel(async (channel) => {
    for (const queue of queues) await channel.deleteQueue(queue);
    for (const exchange of exchanges) {
      await channel.deleteExchange(exchange);
      await channel.deleteExchange(`${exchange}.dlx`);
    }
  }, url);
}

/**
 * Closes the broker's connections named `connectionName` (client property `connection_name`),
 * and only those: other clients of the shared broker are left alone. Returns how many.
 */
export async function closeConnectionsNamed(connectionName: string): Promise<number> {
  const { stdout } = await run('rabbitmqctl', [
    'list_connections',
    '-q',
    '--no-table-headers',
    'pid',
    'client_properties',
  ]);
  const marker = `{"connection_name","${connectionName}"}`;
  const pids = stdout
    .split('\n')
    .filter((line) => line.includes(marker))
    .map((line) => line.split('\t')[0] as string);
  for (const pid of pids) {
    await run('rabbitmqctl', ['close_connection', pid, 'closed by a watchtower test']);
  }
  return pids.length;
}

/** Waits until the broker lists a connection named `connectionName`. */
export async function waitForConnectionNamed(
  connectionName: string,
  timeoutMs = 15_000,
): Promise<void> {
  await waitFor(
    async () => {
      const { stdout } = await run('rabbitmqctl', [
        'list_connections',
        '-q',
        '--no-table-headers',
        'client_properties',
      ]);
      return stdout.includes(`{"connection_name","${connectionName}"}`);
    },
    { timeoutMs, intervalMs: 250, message: `a connection named ${connectionName}` },
  );
}

/** Messages now in `queue` (a passive declare). */
export function messageCount(queue: string): Promise<number> {
  return withRawChannel(async (channel) => (await channel.checkQueue(queue)).messageCount);
}

/** Takes the messages in `queue` with `basic.get` (acked), up to `max`. */
export function takeMessages(queue: string, max = 1000): Promise<ConsumeMessage[]> {
  return withRawChannel(async (channel) => {
    const taken: ConsumeMessage[] = [];
    while (taken.length < max) {
      const message = await channel.get(queue, { noAck: true });
      if (message === false) break;
      taken.push(message as unknown as ConsumeMessage);
    }
    return taken;
  });
}

/**
 * A TCP proxy between clients and the broker on a random local port. `cut()` destroys every
 * proxied connection (as a network failure or a broker restart does); `pause()` holds the
 * bytes both ways, so the broker seems to stop answering while the sockets stay open; new
 * connections are refused while `refusing`.
 */
export class TcpProxy {
  readonly #server: Server;
  readonly #pairs = new Set<[Socket, Socket]>();
  #paused = false;
  refusing = false;
  port = 0;

  private constructor(target: { host: string; port: number }) {
    this.#server = createServer((client) => {
      if (this.refusing) {
        client.destroy();
        return;
      }
      const upstream = netConnect(target);
      const pair: [Socket, Socket] = [client, upstream];
      this.#pairs.add(pair);
      const drop = (): void => {
        this.#pairs.delete(pair);
        client.destroy();
        upstream.destroy();
      };
      client.on('error', drop).on('close', drop);
      upstream.on('error', drop).on('close', drop);
      if (this.#paused) {
        client.pause();
        upstream.pause();
      } else {
        client.pipe(upstream);
        upstream.pipe(client);
      }
    });
  }

  /** Starts a proxy to the broker of `url`. */
  static async start(url = AMQP_URL): Promise<TcpProxy> {
    const parsed = new URL(url);
    const proxy = new TcpProxy({ host: parsed.hostname, port: Number(parsed.port || 5672) });
    await new Promise<void>((resolve) => proxy.#server.listen(0, '127.0.0.1', resolve));
    proxy.port = (proxy.#server.address() as { port: number }).port;
    return proxy;
  }

  /** The broker URL through this proxy. */
  url(url = AMQP_URL): string {
    const parsed = new URL(url);
    parsed.hostname = '127.0.0.1';
    parsed.port = String(this.port);
    return parsed.toString();
  }

  /** Proxied connections now open. */
  get connections(): number {
    return this.#pairs.size;
  }

  /** Destroys every proxied connection. */
  cut(): void {
    for (const [client, upstream] of [...this.#pairs]) {
      client.destroy();
      upstream.destroy();
    }
    this.#pairs.clear();
  }

  /** Holds the bytes of every connection, open ones and new ones, until `resume()`. */
  pause(): void {
    this.#paused = true;
    for (const [client, upstream] of this.#pairs) {
      client.unpipe(upstream);
      upstream.unpipe(client);
      client.pause();
      upstream.pause();
    }
  }

  resume(): void {
    this.#paused = false;
    for (const [client, upstream] of this.#pairs) {
      client.pipe(upstream);
      upstream.pipe(client);
      client.resume();
      upstream.resume();
    }
  }

  async stop(): Promise<void> {
    this.cut();
    await new Promise<void>((resolve) => this.#server.close(() => resolve()));
  }
}

/**
 * What the tests of one file create and the file's `afterEach` removes: `newExchange()` names a
 * fresh exchange (its queues are deleted after the test), `closers` are run first.
 */
export function perTest(label: string): {
  newExchange: () => string;
  closers: (() => Promise<void>)[];
} {
  const exchanges: string[] = [];
  const closers: (() => Promise<void>)[] = [];
  afterEach(async () => {
    await Promise.allSettled(closers.splice(0).map((close) => close()));
    await deleteTopology(exchanges.splice(0));
  });
  return {
    newExchange: () => {
      const exchange = uniqueName(label);
      exchanges.push(exchange);
      return exchange;
    },
    closers,
  };
}

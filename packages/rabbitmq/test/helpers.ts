/**
 * Test support for the RabbitMQ transport: unique names, a raw amqplib connection to arrange
 * and inspect the broker, clean-up of what a test declared, closing only this test's own
 * connections with `rabbitmqctl`, and a TCP proxy between client and broker that can cut every
 * connection or hold the bytes (a broker that stops answering), without touching the shared
 * broker itself.
 */
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { createServer, connect as netConnect, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createServer as createTlsServer } from 'node:tls';
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

/** Deliveries of `queue` sent to a consumer and not yet acked (from `rabbitmqctl`). */
export async function unackedCount(queue: string): Promise<number> {
  const { stdout } = await run('rabbitmqctl', [
    'list_queues',
    '-q',
    '--no-table-headers',
    'name',
    'messages_unacknowledged',
  ]);
  const line = stdout
    .split('\n')
    .map((entry) => entry.trim().split(/\s+/))
    .find(([name]) => name === queue);
  if (line === undefined) throw new Error(`no queue ${queue}`);
  return Number(line[1]);
}

/** The prefetch of every consumer of `queue`, as the broker reports it (`list_consumers`). */
export async function consumerPrefetches(queue: string): Promise<number[]> {
  const { stdout } = await run('rabbitmqctl', [
    'list_consumers',
    '-q',
    '--no-table-headers',
    'queue_name',
    'prefetch_count',
  ]);
  return stdout
    .split('\n')
    .map((line) => line.trim().split(/\s+/))
    .filter(([name]) => name === queue)
    .map(([, prefetch]) => Number(prefetch));
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

/** Settings of a {@link TcpProxy}. */
export interface TcpProxyOptions {
  /** Terminate TLS with this key and certificate (PEM), speaking plain AMQP to the broker. */
  readonly tls?: { readonly key: string; readonly cert: string };
}

/** One proxied connection: the client's socket, the broker's, and broker bytes not yet a frame. */
interface Pair {
  readonly client: Socket;
  readonly upstream: Socket;
  pending: Buffer;
}

/** AMQP frame: type (1), channel (2), size (4), payload (size), frame end 0xCE. */
const FRAME_OVERHEAD = 8;

/**
 * A TCP proxy between clients and the broker on a random local port. `cut()` destroys every
 * proxied connection (as a network failure or a broker restart does); `pause()` holds the
 * bytes both ways, so the broker seems to stop answering while the sockets stay open; new
 * connections are refused while `refusing`. What the broker sends is forwarded a whole AMQP
 * frame at a time, so that `injectToClients()` can slip a frame of its own in between (a
 * `connection.blocked` from the broker). With `tls` it terminates TLS (an `amqps://` broker).
 */
export class TcpProxy {
  readonly #server: Server;
  readonly #pairs = new Set<Pair>();
  #paused = false;
  refusing = false;
  port = 0;

  private constructor(target: { host: string; port: number }, options: TcpProxyOptions) {
    const accept = (client: Socket): void => {
      if (this.refusing) {
        client.destroy();
        return;
      }
      const upstream = netConnect(target);
      const pair: Pair = { client, upstream, pending: Buffer.alloc(0) };
      this.#pairs.add(pair);
      const drop = (): void => {
        this.#pairs.delete(pair);
        client.destroy();
        upstream.destroy();
      };
      client.on('error', drop).on('close', drop);
      upstream.on('error', drop).on('close', drop);
      upstream.on('data', (chunk: Buffer) => this.#fromBroker(pair, chunk));
      if (this.#paused) {
        client.pause();
        upstream.pause();
      } else {
        client.pipe(upstream);
      }
    };
    this.#server =
      options.tls === undefined
        ? createServer(accept)
        : createTlsServer({ key: options.tls.key, cert: options.tls.cert }, accept);
  }

  /** Starts a proxy to the broker of `url`. */
  static async start(url = AMQP_URL, options: TcpProxyOptions = {}): Promise<TcpProxy> {
    const parsed = new URL(url);
    const proxy = new TcpProxy(
      { host: parsed.hostname, port: Number(parsed.port || 5672) },
      options,
    );
    await new Promise<void>((resolve) => proxy.#server.listen(0, '127.0.0.1', resolve));
    proxy.port = (proxy.#server.address() as { port: number }).port;
    return proxy;
  }

  /** The broker URL through this proxy (`amqps://` for a TLS proxy). */
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

  #fromBroker(pair: Pair, chunk: Buffer): void {
    let buffer = pair.pending.length === 0 ? chunk : Buffer.concat([pair.pending, chunk]);
    let whole = 0;
    while (buffer.length - whole >= 7) {
      const size = buffer.readUInt32BE(whole + 3);
      if (buffer.length - whole < size + FRAME_OVERHEAD) break;
      whole += size + FRAME_OVERHEAD;
    }
    if (whole > 0) pair.client.write(buffer.subarray(0, whole));
    buffer = buffer.subarray(whole);
    pair.pending = Buffer.from(buffer);
  }

  /** Sends `frame` to every client as if the broker had, between two whole frames. */
  injectToClients(frame: Buffer): void {
    for (const pair of this.#pairs) pair.client.write(frame);
  }

  /** Destroys every proxied connection. */
  cut(): void {
    for (const { client, upstream } of [...this.#pairs]) {
      client.destroy();
      upstream.destroy();
    }
    this.#pairs.clear();
  }

  /** Holds the bytes of every connection, open ones and new ones, until `resume()`. */
  pause(): void {
    this.#paused = true;
    for (const { client, upstream } of this.#pairs) {
      client.unpipe(upstream);
      client.pause();
      upstream.pause();
    }
  }

  resume(): void {
    this.#paused = false;
    for (const { client, upstream } of this.#pairs) {
      client.pipe(upstream);
      client.resume();
      upstream.resume();
    }
  }

  async stop(): Promise<void> {
    this.cut();
    await new Promise<void>((resolve) => this.#server.close(() => resolve()));
  }
}

/** A `connection.blocked` (class 10, method 60) or `connection.unblocked` (61) frame. */
export function connectionBlockedFrame(reason: string | undefined): Buffer {
  const method = Buffer.alloc(4);
  method.writeUInt16BE(10, 0);
  method.writeUInt16BE(reason === undefined ? 61 : 60, 2);
  const args =
    reason === undefined
      ? Buffer.alloc(0)
      : Buffer.concat([Buffer.from([Buffer.byteLength(reason)]), Buffer.from(reason)]);
  const payload = Buffer.concat([method, args]);
  const header = Buffer.alloc(7);
  header.writeUInt8(1, 0);
  header.writeUInt16BE(0, 1);
  header.writeUInt32BE(payload.length, 3);
  return Buffer.concat([header, payload, Buffer.from([0xce])]);
}

/** A self-signed key and certificate for `localhost` and 127.0.0.1, made with openssl. */
export async function selfSignedCertificate(): Promise<{ key: string; cert: string }> {
  const dir = await mkdtemp(join(tmpdir(), 'wt-tls-'));
  try {
    await run('openssl', [
      'req',
      '-x509',
      '-newkey',
      'rsa:2048',
      '-nodes',
      '-days',
      '1',
      '-subj',
      '/CN=localhost',
      '-addext',
      'subjectAltName=DNS:localhost,IP:127.0.0.1',
      '-keyout',
      join(dir, 'key.pem'),
      '-out',
      join(dir, 'cert.pem'),
    ]);
    return {
      key: await readFile(join(dir, 'key.pem'), 'utf8'),
      cert: await readFile(join(dir, 'cert.pem'), 'utf8'),
    };
  } finally {
    await rm(dir, { recursive: true, force: true });
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

import { randomBytes } from 'node:crypto';
import { jetstreamManager } from '@nats-io/jetstream';
import { connect, type NatsConnection } from '@nats-io/transport-node';
import type { NatsConfig, NatsMode, NatsSubscriberOptions } from '../src/index.js';
import { NatsSubscriber, NatsTransport } from '../src/index.js';

/** The shared broker of the integration tests. */
export const NATS_URL = process.env['WATCHTOWER_NATS_URL'] ?? 'nats://127.0.0.1:4222';

/** A short random name, distinct per call: `wt_3f9a1c2b`. */
export function uniqueName(prefix = 'wt'): string {
  return `${prefix}_${randomBytes(4).toString('hex')}`;
}

/** Random subject prefixes and stream names for one test. */
export interface TestNames {
  readonly subjectPrefix: string;
  readonly dlqPrefix: string;
  readonly stream: string;
  readonly dlqStream: string;
}

export function testNames(): TestNames {
  const id = randomBytes(4).toString('hex');
  return {
    subjectPrefix: `wt_${id}.events`,
    dlqPrefix: `wt_${id}.dlq`,
    stream: `WT_EVENTS_${id}`,
    dlqStream: `WT_DLQ_${id}`,
  };
}

/** A transport config on `names` with quick reconnects; `overrides` win. */
export function testConfig(
  mode: NatsMode,
  names: TestNames,
  overrides: Partial<NatsConfig> = {},
): Partial<NatsConfig> {
  return {
    servers: NATS_URL,
    mode,
    subjectPrefix: names.subjectPrefix,
    dlqPrefix: names.dlqPrefix,
    reconnectTimeWaitMs: 50,
    reconnectJitterMs: 10,
    requestTimeoutMs: 3000,
    ...overrides,
    stream: { name: names.stream, ...overrides.stream },
    dlq: { streamName: names.dlqStream, ...overrides.dlq },
  };
}

/** A raw `@nats-io` connection, as a non-Watchtower service would use. */
export function rawConnection(servers = NATS_URL): Promise<NatsConnection> {
  return connect({ servers });
}

/** Deletes the streams a test created; missing ones are fine. */
export async function deleteStreams(
  names: readonly string[],
  servers: string | string[] = NATS_URL,
): Promise<void> {
  const nc = await connect({ servers });
  try {
    const jsm = await jetstreamManager(nc);
    for (const name of names) {
      try {
        await jsm.streams.delete(name);
      } catch {
        // never created
      }
    }
  } finally {
    await nc.close();
  }
}

/**
 * Keeps what a test creates (transports, subscribers, raw connections, streams) and releases
 * it all in `cleanup()`, called from `afterEach`.
 */
export class TestResources {
  readonly #transports: { close(options: { timeoutMs: number }): Promise<void> }[] = [];
  readonly #connections: NatsConnection[] = [];
  readonly #streams = new Set<string>();
  readonly #cleanups: (() => Promise<void>)[] = [];

  transport(mode: NatsMode, names: TestNames, overrides: Partial<NatsConfig> = {}): NatsTransport {
    const transport = new NatsTransport(testConfig(mode, names, overrides));
    this.#transports.push(transport);
    this.#streams.add(transport.config.stream.name);
    this.#streams.add(transport.config.dlq.streamName);
    return transport;
  }

  /** A `NatsSubscriber` (EventBus over a NatsTransport) on `names`; `options` win. */
  subscriber(
    mode: NatsMode,
    names: TestNames,
    options: NatsSubscriberOptions = {},
  ): NatsSubscriber {
    const bus = new NatsSubscriber({ ...options, ...testConfig(mode, names, options) });
    this.#transports.push(bus);
    this.#streams.add(bus.transport.config.stream.name);
    this.#streams.add(bus.transport.config.dlq.streamName);
    return bus;
  }

  async raw(servers = NATS_URL): Promise<NatsConnection> {
    const nc = await rawConnection(servers);
    this.#connections.push(nc);
    return nc;
  }

  stream(name: string): void {
    this.#streams.add(name);
  }

  onCleanup(step: () => Promise<void>): void {
    this.#cleanups.push(step);
  }

  async cleanup(servers = NATS_URL): Promise<void> {
    await Promise.allSettled(this.#transports.splice(0).map((t) => t.close({ timeoutMs: 2000 })));
    await Promise.allSettled(this.#connections.splice(0).map((nc) => nc.close()));
    for (const step of this.#cleanups.splice(0).reverse()) await step().catch(() => undefined);
    const streams = [...this.#streams];
    this.#streams.clear();
    await deleteStreams(streams, servers).catch(() => undefined);
  }
}

/** Collects deliveries of a transport subscription in the background. */
export function drain<T>(
  iterable: AsyncIterable<T>,
  onItem: (item: T) => void | Promise<void>,
): Promise<void> {
  return (async () => {
    for await (const item of iterable) await onItem(item);
  })();
}

/**
 * Event-system scenarios: what the `EventSystem` layer adds to the plain `EventBus` on memory.
 * The "raw" side is a plain `EventBus` on a `MemoryTransport`; the "watchtower" side is an
 * `EventSystem` over the same kind of transport, with the same bus options and the same
 * `source`. Both publish `n` events (at most 1 000 unconfirmed) to one subscription whose
 * handler counts them. With no feature enabled (no catalog, route, origin, rate limit,
 * batching, middleware, ordering key) the layer's goal is at most 0.5 µs of CPU per event over
 * the plain bus: the difference of the two `cpu µs/ev` figures. The scenarios with a feature
 * on show what that feature costs, beside the same plain bus.
 */
import {
  EventBus,
  MemoryTransport,
  createEventSystem,
  type EventSystemConfig,
  type MemoryTransportOptions,
} from '@watchtower/core';
import { countdown, runWindowed, startTimer, type Measurement, type Scenario } from './harness.js';

const TYPE = 'user.created';
const SERVICE = 'bench';
const payload = (n: number): { id: string; name: string; n: number } => ({
  id: `user-${n}`,
  name: 'Ada Lovelace',
  n,
});
const quiet = { warn: () => undefined, error: () => undefined };
/** Room for the window of 1 000 publishes, on both sides. */
const BUS_OPTIONS = { backpressure: { maxQueueSize: 20_000 }, publishConcurrency: 10_000 };

type Copy = NonNullable<MemoryTransportOptions['copy']>;

/** Anything that publishes and subscribes as both sides do. */
interface Publisher {
  publish(type: string, payload: unknown): Promise<void>;
  subscribe(pattern: string, handler: () => void): Promise<unknown>;
  close(): Promise<void>;
}

/** Publishes `n` events to one counting subscription; measures from the first to the last. */
async function publishToHandler(target: Publisher, n: number): Promise<Measurement> {
  const arrivals = countdown(n, 60_000, 'all events handled');
  await target.subscribe(TYPE, () => {
    arrivals.tick();
  });
  const stop = startTimer();
  await runWindowed(n, 1000, (i) => target.publish(TYPE, payload(i)));
  await arrivals.done;
  const measured = { n, ...stop() };
  await target.close();
  return measured;
}

function plainBus(copy: Copy): Publisher {
  return new EventBus({
    transport: new MemoryTransport({ copy }),
    source: SERVICE,
    logger: quiet,
    ...BUS_OPTIONS,
  });
}

/** An event system over one memory transport, with `features` on. */
function system(
  copy: Copy,
  features: Omit<EventSystemConfig, 'service' | 'transports' | 'bus' | 'logger'> = {},
): Publisher {
  return createEventSystem({
    service: SERVICE,
    transports: { memory: new MemoryTransport({ copy }) },
    bus: BUS_OPTIONS,
    logger: quiet,
    ...features,
  });
}

export function eventSystemScenarios(scale: number): Scenario[] {
  const at = (count: number): number => Math.max(1000, Math.round(count * scale));
  const scenario = (
    name: string,
    copy: Copy,
    count: number,
    features?: Parameters<typeof system>[1],
  ): Scenario => ({
    name,
    transport: 'memory',
    raw: () => publishToHandler(plainBus(copy), at(count)),
    watchtower: () => publishToHandler(system(copy, features), at(count)),
  });
  return [
    scenario('system vs bus, no feature [codec]', 'codec', 100_000),
    scenario('system vs bus, no feature [reference]', 'reference', 200_000),
    scenario('system vs bus, route with topic [reference]', 'reference', 200_000, {
      routes: [{ pattern: 'user.>', transport: 'memory', topic: 'users' }],
    }),
    scenario('system vs bus, origin [reference]', 'reference', 200_000, { origin: 'eu.de' }),
  ];
}

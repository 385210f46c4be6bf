import { EventEmitter } from 'node:events';
import {
  EventBus,
  MemoryTransport,
  PatternIndex,
  createEvent,
  defineEvents,
  type Event,
  type EventBusOptions,
  type MemoryTransportOptions,
} from '@watchtower/core';
import { z } from 'zod';
import {
  now,
  runWindowed,
  countdown,
  startTimer,
  type Measurement,
  type Scenario,
} from './harness.js';

const TYPE = 'user.created';
const payload = (n: number): { id: string; name: string; n: number } => ({
  id: `user-${n}`,
  name: 'Ada Lovelace',
  n,
});

const quiet = { warn: () => undefined, error: () => undefined };

/**
 * How the transport passes payloads: `'codec'` (the default) encodes once per publish and
 * decodes per delivery, as a broker does; `'reference'` shares the published object.
 */
type Copy = NonNullable<MemoryTransportOptions['copy']>;

function memoryBus(copy: Copy, options: Omit<EventBusOptions, 'transport'> = {}): EventBus {
  return new EventBus({
    transport: new MemoryTransport({ copy }),
    logger: quiet,
    backpressure: { maxQueueSize: 20_000 },
    publishConcurrency: 10_000,
    ...options,
  });
}

/** Publishes `n` events keeping at most `window` unconfirmed, as a service would. */
async function publishWindowed(bus: EventBus, n: number, window: number): Promise<void> {
  await runWindowed(n, window, (i) => bus.publish(TYPE, payload(i)));
}

async function publishOnly(copy: Copy, n: number): Promise<Measurement> {
  const bus = memoryBus(copy);
  await bus.connect();
  const stop = startTimer();
  await publishWindowed(bus, n, 1000);
  const { elapsedMs, cpuUs } = stop();
  await bus.close();
  return { n, elapsedMs, cpuUs };
}

async function publishToHandler(copy: Copy, n: number, validated: boolean): Promise<Measurement> {
  const events = defineEvents({
    [TYPE]: z.object({ id: z.string(), name: z.string(), n: z.number().int() }),
  });
  const bus = memoryBus(copy, validated ? { events } : {});
  const arrivals = countdown(n, 60_000, 'all events handled');
  await bus.subscribe(TYPE, () => {
    arrivals.tick();
  });
  const stop = startTimer();
  await publishWindowed(bus, n, 1000);
  await arrivals.done;
  const { elapsedMs, cpuUs } = stop();
  await bus.close();
  return { n, elapsedMs, cpuUs };
}

/** The same work on a bare EventEmitter: build the event, hand it to a handler. */
async function rawPublishToHandler(n: number): Promise<Measurement> {
  const emitter = new EventEmitter();
  const arrivals = countdown(n, 60_000, 'all events handled');
  emitter.on(TYPE, () => {
    arrivals.tick();
  });
  const stop = startTimer();
  for (let i = 0; i < n; i++) {
    emitter.emit(TYPE, createEvent(TYPE, payload(i)));
    if (i % 1000 === 999) await Promise.resolve();
  }
  await arrivals.done;
  return { n, ...stop() };
}

async function latency(copy: Copy, n: number): Promise<Measurement> {
  const bus = memoryBus(copy);
  const latenciesUs: number[] = [];
  let arrived: (() => void) | undefined;
  await bus.subscribe(TYPE, (event: Event) => {
    latenciesUs.push((now() - (event.payload as { sentAt: number }).sentAt) * 1000);
    arrived?.();
  });
  const stop = startTimer();
  for (let i = 0; i < n; i++) {
    const handled = new Promise<void>((resolve) => (arrived = resolve));
    await bus.publish(TYPE, { sentAt: now() });
    await handled;
  }
  const { elapsedMs, cpuUs } = stop();
  await bus.close();
  return { n, elapsedMs, cpuUs, latenciesUs };
}

async function rawLatency(n: number): Promise<Measurement> {
  const emitter = new EventEmitter();
  const latenciesUs: number[] = [];
  let arrived: (() => void) | undefined;
  emitter.on(TYPE, (event: Event) => {
    // Deliver on a microtask like an async transport would, so both sides pay one turn.
    queueMicrotask(() => {
      latenciesUs.push((now() - (event.payload as { sentAt: number }).sentAt) * 1000);
      arrived?.();
    });
  });
  const stop = startTimer();
  for (let i = 0; i < n; i++) {
    const handled = new Promise<void>((resolve) => (arrived = resolve));
    emitter.emit(TYPE, createEvent(TYPE, { sentAt: now() }));
    await handled;
  }
  return { n, ...stop(), latenciesUs };
}

/**
 * Matching cost against the number of patterns: a token trie should keep it flat. The
 * lookup cache is off so every lookup walks the trie.
 */
function patternMatch(patterns: number, lookups: number): Measurement {
  const index = new PatternIndex<number>({ cacheSize: 0 });
  for (let i = 0; i < patterns; i++) {
    const service = `svc${i % 100}`;
    switch (i % 4) {
      case 0:
        index.add(`${service}.entity${i}.created`, i);
        break;
      case 1:
        index.add(`${service}.*.updated`, i);
        break;
      case 2:
        index.add(`${service}.entity${i}.>`, i);
        break;
      default:
        index.add(`*.entity${i}.deleted`, i);
    }
  }
  const types = Array.from(
    { length: 1024 },
    (_, i) => `svc${i % 100}.entity${(i * 7) % patterns}.updated`,
  );
  let matched = 0;
  const stop = startTimer();
  for (let i = 0; i < lookups; i++) matched += index.match(types[i & 1023] as string).length;
  const { elapsedMs, cpuUs } = stop();
  if (matched === 0) throw new Error('pattern benchmark matched nothing: the data set is wrong');
  return { n: lookups, elapsedMs, cpuUs };
}

/** The bus scenarios, once per copy mode: the mode is the name's suffix. */
function busScenarios(copy: Copy, scale: number): Scenario[] {
  // The encoded path is four to five times slower per event: fewer events keep the group short.
  const n = Math.round((copy === 'codec' ? 100_000 : 300_000) * scale);
  const few = Math.round(20_000 * scale);
  return [
    {
      name: `publish (no subscriber) [${copy}]`,
      transport: 'memory',
      watchtower: () => publishOnly(copy, n),
    },
    {
      name: `publish -> handler [${copy}]`,
      transport: 'memory',
      raw: () => rawPublishToHandler(n),
      watchtower: () => publishToHandler(copy, n, false),
    },
    {
      name: `publish -> handler, zod [${copy}]`,
      transport: 'memory',
      watchtower: () => publishToHandler(copy, Math.round(n / 2), true),
    },
    {
      name: `latency, one at a time [${copy}]`,
      transport: 'memory',
      raw: () => rawLatency(few),
      watchtower: () => latency(copy, few),
    },
  ];
}

export function memoryScenarios(scale: number): Scenario[] {
  const codec = busScenarios('codec', scale);
  const reference = busScenarios('reference', scale);
  return [
    // Each scenario in both modes, one after the other, so the table puts them side by side.
    ...codec.flatMap((scenario, i) => [scenario, reference[i] as Scenario]),
    {
      name: 'pattern match, 10 patterns',
      transport: 'memory',
      watchtower: () => Promise.resolve(patternMatch(10, Math.round(1_000_000 * scale))),
    },
    {
      name: 'pattern match, 10000 patterns',
      transport: 'memory',
      watchtower: () => Promise.resolve(patternMatch(10_000, Math.round(1_000_000 * scale))),
    },
  ];
}

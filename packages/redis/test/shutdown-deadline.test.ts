import { afterEach, describe, expect, it } from 'vitest';
import {
  createEvent,
  type DeadLetter,
  type Event,
  type Logger,
  type SubscriptionHandle,
  type TransportSubscription,
} from '@watchtower/core';
import { waitFor } from '@watchtower/core/testing';
import { CLOSE_MARGIN_MS } from '@watchtower/core/transport-kit';
import { RedisSubscriber, RedisTransport, type RedisConfig } from '../src/index.js';
import { FAST, PrivateRedisServer, ackAll, record, uniquePrefix } from './helpers.js';

/*
 * close({ timeoutMs }) and unsubscribe() keep their time limits whatever Redis does. Each test
 * runs a private redis-server, gives a transport an own-group and a named-group subscription, a
 * dead-letter consumer and deliveries in flight, then makes the server stop answering (SIGSTOP)
 * or kills it (SIGKILL).
 */

const CLOSE_TIMEOUT_MS = 300;
const UNSUBSCRIBE_TIMEOUT_MS = 500;
/** CI shares two cores: room for a slow scheduler, far below what a wait on Redis takes. */
const SLACK_MS = 1500;
const EVENTS = 5;

const silent: Logger = { warn: () => {}, error: () => {} };

let server: PrivateRedisServer | undefined;
/** Handlers that never finish by themselves; opened when the test ends. */
const gates: Array<() => void> = [];
const closers: Array<() => Promise<unknown>> = [];

afterEach(async () => {
  for (const open of gates.splice(0)) open();
  server?.resume();
  await Promise.allSettled(closers.splice(0).map((close) => close()));
  await server?.stop();
  server = undefined;
});

interface Fault {
  readonly name: string;
  inject(server: PrivateRedisServer): Promise<void>;
}

const FAULTS: readonly Fault[] = [
  {
    name: 'hangs (SIGSTOP)',
    inject: (s) => {
      s.pause();
      return Promise.resolve();
    },
  },
  { name: 'is killed (SIGKILL)', inject: (s) => s.kill() },
];

function configFor(s: PrivateRedisServer, prefix: string): RedisConfig {
  return { url: s.url, prefix, ...FAST, unsubscribeTimeoutMs: UNSUBSCRIBE_TIMEOUT_MS };
}

function transportOn(s: PrivateRedisServer, prefix: string, config: RedisConfig = {}) {
  const t = new RedisTransport({ ...configFor(s, prefix), ...config });
  closers.push(() => t.close({ timeoutMs: 0 }));
  return t;
}

/** Milliseconds until `promise` settles. */
async function timeOf(promise: Promise<unknown>): Promise<number> {
  const started = performance.now();
  await promise.catch(() => {});
  return performance.now() - started;
}

function blockedUntilTheEnd(): Promise<void> {
  return new Promise<void>((resolve) => gates.push(resolve));
}

const REASON = {
  message: 'it failed',
  code: 'HANDLER_FAILED',
  attempts: 3,
  failedAt: new Date(0).toISOString(),
  originalType: 'job.failed',
};

interface Busy {
  readonly transport: RedisTransport;
  readonly own: TransportSubscription;
  readonly named: TransportSubscription;
  readonly dlq: SubscriptionHandle;
  /** A dead-letter consumer whose handler is not running. */
  readonly idleDlq: SubscriptionHandle;
  readonly prefix: string;
  /** Deliveries of the named group, handed out and not settled. */
  readonly namedSeen: ReturnType<typeof record>['deliveries'];
  /** Work in flight when the fault comes: a publish and an ack. */
  inFlight(): Promise<unknown>;
}

/** A transport with subscriptions in an own and a named group, a DLQ consumer, deliveries held. */
async function busyTransport(s: PrivateRedisServer): Promise<Busy> {
  const prefix = uniquePrefix('deadline');
  const t = transportOn(s, prefix);
  const own = await t.subscribe('job.own');
  const named = await t.subscribe('job.shared', { group: 'workers' });
  const ownSeen = record(own);
  const namedSeen = record(named);
  await t.publishToDlq(createEvent('job.failed', {}), REASON);
  const letters: DeadLetter[] = [];
  const dlq = await t.consumeDlq((letter) => {
    letters.push(letter);
    return blockedUntilTheEnd();
  });
  const archived: DeadLetter[] = [];
  const idleDlq = await t.consumeDlq((letter) => void archived.push(letter), { group: 'archive' });
  for (let n = 1; n <= EVENTS; n++) {
    await t.publish(createEvent('job.own', { n }));
    await t.publish(createEvent('job.shared', { n }));
  }
  await waitFor(
    () =>
      ownSeen.deliveries.length === EVENTS &&
      namedSeen.deliveries.length === EVENTS &&
      letters.length === 1 &&
      archived.length === 1,
    { message: 'every delivery handed out' },
  );
  return {
    transport: t,
    own,
    named,
    dlq,
    idleDlq,
    prefix,
    namedSeen: namedSeen.deliveries,
    inFlight: () =>
      Promise.allSettled([
        t.publish(createEvent('job.shared', { n: EVENTS + 1 })),
        ownSeen.deliveries[0]?.ack(),
      ]),
  };
}

describe.each(FAULTS)('RedisTransport shutdown while Redis $name', (fault) => {
  it('unsubscribes an own-group, a named-group and an idle dead-letter subscription within unsubscribeTimeoutMs', async () => {
    server = await PrivateRedisServer.start();
    const busy = await busyTransport(server);
    await fault.inject(server);
    const inFlight = busy.inFlight();

    const own = await timeOf(busy.own.unsubscribe());
    const named = await timeOf(busy.named.unsubscribe());
    const dlq = await timeOf(busy.idleDlq.unsubscribe());

    expect(own).toBeLessThan(UNSUBSCRIBE_TIMEOUT_MS + SLACK_MS);
    expect(named).toBeLessThan(UNSUBSCRIBE_TIMEOUT_MS + SLACK_MS);
    expect(dlq).toBeLessThan(UNSUBSCRIBE_TIMEOUT_MS + SLACK_MS);
    const closed = await timeOf(busy.transport.close({ timeoutMs: CLOSE_TIMEOUT_MS }));
    expect(closed).toBeLessThan(CLOSE_TIMEOUT_MS + CLOSE_MARGIN_MS + SLACK_MS);
    await inFlight;
  });

  it('closes within timeoutMs plus CLOSE_MARGIN_MS with subscriptions, a dead-letter consumer and deliveries in flight', async () => {
    server = await PrivateRedisServer.start();
    const busy = await busyTransport(server);
    await fault.inject(server);
    const inFlight = busy.inFlight();

    const closed = await timeOf(busy.transport.close({ timeoutMs: CLOSE_TIMEOUT_MS }));

    expect(closed).toBeLessThan(CLOSE_TIMEOUT_MS + CLOSE_MARGIN_MS + SLACK_MS);
    // What was under way when the connections were dropped has settled (failed) too.
    await inFlight;
  });

  it('closes an EventBus on Redis within timeoutMs plus CLOSE_MARGIN_MS while handlers are running', async () => {
    server = await PrivateRedisServer.start();
    const prefix = uniquePrefix('deadline-bus');
    const bus = new RedisSubscriber({ ...configFor(server, prefix), logger: silent });
    closers.push(() => bus.close({ timeoutMs: 0 }));
    let running = 0;
    const handler = (): Promise<void> => {
      running++;
      return blockedUntilTheEnd();
    };
    await bus.subscribe('job.own', handler);
    await bus.subscribe('job.shared', handler, { group: 'workers', concurrency: 4 });
    const letters: DeadLetter[] = [];
    await bus.transport.publishToDlq(createEvent('job.failed', {}), REASON);
    await bus.transport.consumeDlq((letter) => {
      letters.push(letter);
      return blockedUntilTheEnd();
    });
    for (let n = 1; n <= EVENTS; n++) {
      await bus.publish('job.own', { n });
      await bus.publish('job.shared', { n });
    }
    await waitFor(() => running === 1 + 4 && letters.length === 1, {
      message: 'handlers running',
    });
    await fault.inject(server);
    const publishing = bus.publish('job.shared', { n: EVENTS + 1 }).catch(() => {});

    const closed = await timeOf(bus.close({ timeoutMs: CLOSE_TIMEOUT_MS }));

    expect(closed).toBeLessThan(CLOSE_TIMEOUT_MS + CLOSE_MARGIN_MS + SLACK_MS);
    await publishing;
  });
});

describe('RedisTransport shutdown while Redis hangs: nothing is lost', () => {
  it('redelivers to the named group the deliveries that a close cut short left unsettled', async () => {
    server = await PrivateRedisServer.start();
    const busy = await busyTransport(server);
    server.pause();
    await timeOf(busy.transport.close({ timeoutMs: CLOSE_TIMEOUT_MS }));
    server.resume();

    const heir = transportOn(server, busy.prefix, { claimMinIdleMs: 300 });
    const received = ackAll(await heir.subscribe('job.shared', { group: 'workers' }));
    const unsettled = busy.namedSeen.map((d) => d.kind === 'event' && d.event.id);
    await waitFor(() => {
      const ids = new Set(received.deliveries.map((d) => d.kind === 'event' && d.event.id));
      return unsettled.every((id) => ids.has(id));
    });
    const payloads = received.deliveries.map(
      (d) => d.kind === 'event' && (d.event as Event<{ n: number }>).payload.n,
    );
    expect(payloads).toEqual(expect.arrayContaining([1, 2, 3, 4, 5]));
  });
});

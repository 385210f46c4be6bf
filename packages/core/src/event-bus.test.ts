import { getEventListeners } from 'node:events';
import { describe, expect, it, vi, type Mock } from 'vitest';
import {
  ConnectionError,
  ErrorCode,
  NonRetryableError,
  ValidationError,
  WatchtowerError,
  isWatchtowerError,
} from './errors.js';
import { encodeEventBytes } from './codec.js';
import { createEvent, type Event } from './event.js';
import {
  DEFAULT_EVENT_BUS_OPTIONS,
  EventBus,
  type EventBusOptions,
  type HandlerContext,
  type Logger,
  type SubscribeOptions,
} from './event-bus.js';
import type { LogMethod } from './logger.js';
import { MemoryTransport, type MemoryTransportOptions } from './memory-transport.js';
import { collectEvents } from './testing/collect.js';
import { FakeClock } from './testing/fake-clock.js';
import { DeliveryBuffer } from './transport-kit/delivery-buffer.js';
import { CLOSE_MARGIN_MS, type TransportErrorEvents } from './transport-kit/lifecycle.js';
import { waitFor } from './testing/wait-for.js';
import type {
  ConnectionChange,
  ConsumeDlqOptions,
  DeadLetter,
  DeadLetterHandler,
  DeadLetterReason,
  Delivery,
  DeliveryReceiver,
  EventDelivery,
  HealthStatus,
  MalformedMessage,
  NackOptions,
  PublishReceipt,
  SubscriptionHandle,
  Transport,
  TransportCapabilities,
  TransportInfo,
  TransportSubscribeOptions,
  TransportSubscription,
} from './transport.js';

// ---- helpers ----------------------------------------------------------------------------

/** Lets pending promise continuations (and one I/O turn each) run; never waits on time. */
async function settle(turns = 5): Promise<void> {
  for (let i = 0; i < turns; i++) await new Promise<void>((resolve) => setImmediate(resolve));
}

interface Tracked {
  state: 'pending' | 'resolved' | 'rejected';
  error: unknown;
  promise: Promise<void>;
}

/** Follows a promise without leaving a rejection unhandled. */
function track(promise: Promise<unknown>): Tracked {
  const tracked: Tracked = { state: 'pending', error: undefined, promise: Promise.resolve() };
  tracked.promise = promise.then(
    () => {
      tracked.state = 'resolved';
    },
    (error: unknown) => {
      tracked.state = 'rejected';
      tracked.error = error;
    },
  );
  return tracked;
}

async function rejection(promise: Promise<unknown>): Promise<unknown> {
  try {
    await promise;
  } catch (error) {
    return error;
  }
  throw new Error('expected a rejection');
}

function codeOf(error: unknown): string | undefined {
  return isWatchtowerError(error) ? error.code : undefined;
}

/** A gate a handler can wait on; `open()` lets every waiter through. */
function gate(): { promise: Promise<void>; open: () => void } {
  let open!: () => void;
  const promise = new Promise<void>((resolve) => (open = resolve));
  return { promise, open };
}

type LogMock = Mock<LogMethod>;

function quietLogger(): Logger & { warn: LogMock; error: LogMock } {
  return { warn: vi.fn<Logger['warn']>(), error: vi.fn<Logger['error']>() };
}

interface Settlement {
  id: string | undefined;
  attempt: number;
  action: 'ack' | 'nack';
  delayMs?: number | undefined;
}

interface ManualPublish {
  readonly event: Event;
  confirm(): void;
  fail(error: unknown): void;
}

/**
 * A Transport under the test's control, backed by a MemoryTransport for delivery: publishes
 * can be confirmed by hand, fail on demand or need `connect()` first; dead-letter writes can
 * fail; acks and nacks are recorded; capabilities can be changed.
 */
class TestTransport implements Transport {
  readonly inner: MemoryTransport;
  readonly info: TransportInfo;
  /** Every publish call, in order. */
  readonly publishCalls: Event[] = [];
  /** Events the transport confirmed, in order. */
  readonly confirmed: Event[] = [];
  /** Publishes waiting for `confirm()`/`fail()` in manual mode. */
  readonly pending: ManualPublish[] = [];
  readonly settlements: Settlement[] = [];
  /** Errors the next publish calls reject with, in order. */
  readonly publishFailures: unknown[] = [];
  manual = false;
  /** Encodes every publish with core's codec first, as the broker transports do. */
  encode = false;
  requireConnect = false;
  connected = false;
  connectCalls = 0;
  /** How many next connect calls fail with CONNECTION. */
  connectFailures = 0;
  closeCalls = 0;
  /** How many next dead-letter writes fail. */
  dlqFailures = 0;
  dlqWrites = 0;
  /** When set, every dead-letter write whose body is larger than this is refused for good. */
  dlqMaxBytes: number | undefined;
  /** Rewrites each delivered event (a producer that published it on the wrong subject). */
  deliverAs: ((event: Event) => Event) | undefined;
  inFlight = 0;
  maxInFlight = 0;
  readonly connectionListeners = new Set<(change: ConnectionChange) => void>();

  constructor(
    options: {
      capabilities?: Partial<TransportCapabilities>;
      memory?: MemoryTransportOptions;
    } = {},
  ) {
    this.inner = new MemoryTransport(options.memory);
    this.info = {
      name: 'test',
      capabilities: { ...this.inner.info.capabilities, ...options.capabilities },
    };
  }

  get deadLetterQueue(): MemoryTransport['deadLetterQueue'] {
    return this.inner.deadLetterQueue;
  }

  connect(): Promise<void> {
    this.connectCalls++;
    if (this.connectFailures > 0) {
      this.connectFailures--;
      return Promise.reject(new ConnectionError('broker unreachable'));
    }
    this.connected = true;
    return this.inner.connect();
  }

  publish(event: Event): Promise<void> {
    this.publishCalls.push(event);
    if (this.encode) {
      try {
        encodeEventBytes(event);
      } catch (error) {
        return Promise.reject(error);
      }
    }
    if (this.requireConnect && !this.connected) {
      return Promise.reject(
        new WatchtowerError(ErrorCode.TRANSPORT, 'publish before connect', { retryable: false }),
      );
    }
    if (this.publishFailures.length > 0) return Promise.reject(this.publishFailures.shift());
    if (!this.manual) return this.#deliver(event);
    this.inFlight++;
    this.maxInFlight = Math.max(this.maxInFlight, this.inFlight);
    return new Promise<void>((resolve, reject) => {
      const entry: ManualPublish = {
        event,
        confirm: () => {
          this.#remove(entry);
          this.#deliver(event).then(resolve, reject);
        },
        fail: (error) => {
          this.#remove(entry);
          reject(error);
        },
      };
      this.pending.push(entry);
    });
  }

  on<K extends keyof TransportErrorEvents>(
    name: K,
    listener: (...args: TransportErrorEvents[K]) => void,
  ): () => void {
    if (name !== 'connection') return this.inner.on(name, listener);
    const onChange = listener as (change: ConnectionChange) => void;
    this.connectionListeners.add(onChange);
    return () => this.connectionListeners.delete(onChange);
  }

  /** Reports the connection lost, as a broker transport does when its socket drops. */
  loseConnection(): void {
    const error = new ConnectionError('socket closed by the broker');
    for (const listener of this.connectionListeners) listener({ state: 'lost', error });
  }

  restoreConnection(): void {
    for (const listener of this.connectionListeners) listener({ state: 'restored' });
  }

  /** Confirms the oldest pending publish. */
  confirmNext(): void {
    const next = this.pending[0];
    if (next === undefined) throw new Error('no pending publish');
    next.confirm();
  }

  async subscribe(
    pattern: string,
    options?: TransportSubscribeOptions,
  ): Promise<TransportSubscription> {
    const sub = await this.inner.subscribe(pattern, options);
    const wrap = (delivery: Delivery): Delivery => this.#wrap(delivery);
    return {
      pattern: sub.pattern,
      unsubscribe: () => sub.unsubscribe(),
      async *[Symbol.asyncIterator]() {
        for await (const delivery of sub) yield wrap(delivery);
      },
    };
  }

  healthCheck(): Promise<HealthStatus> {
    return this.inner.healthCheck();
  }

  publishToDlq(message: Event | MalformedMessage, reason: DeadLetterReason): Promise<void> {
    this.dlqWrites++;
    const size =
      'raw' in message && message.raw instanceof Uint8Array
        ? message.raw.byteLength
        : encodeEventBytes(message as Event).byteLength;
    if (this.dlqMaxBytes !== undefined && size > this.dlqMaxBytes) {
      return Promise.reject(
        new WatchtowerError(ErrorCode.TRANSPORT, `record of ${size} bytes exceeds the maximum`, {
          retryable: false,
        }),
      );
    }
    if (this.dlqFailures > 0) {
      this.dlqFailures--;
      return Promise.reject(
        new WatchtowerError(ErrorCode.TRANSPORT, 'dead-letter store unavailable'),
      );
    }
    return this.inner.publishToDlq(message, reason);
  }

  consumeDlq(handler: DeadLetterHandler, options?: ConsumeDlqOptions): Promise<SubscriptionHandle> {
    return this.inner.consumeDlq(handler, options);
  }

  close(options?: { timeoutMs?: number }): Promise<void> {
    this.closeCalls++;
    for (const entry of [...this.pending])
      entry.fail(new WatchtowerError(ErrorCode.CLOSED, 'transport closed'));
    return this.inner.close(options);
  }

  #deliver(event: Event): Promise<void> {
    return this.inner.publish(event).then(() => {
      this.confirmed.push(event);
    });
  }

  #remove(entry: ManualPublish): void {
    this.inFlight--;
    this.pending.splice(this.pending.indexOf(entry), 1);
  }

  #wrap(delivery: Delivery): Delivery {
    const record = (action: 'ack' | 'nack', options?: NackOptions): void => {
      this.settlements.push({
        id: delivery.kind === 'event' ? delivery.event.id : undefined,
        attempt: delivery.attempt,
        action,
        delayMs: options?.delayMs,
      });
    };
    const redelivery = this.info.capabilities.redelivery;
    const common = {
      attempt: delivery.attempt,
      origin: delivery.origin,
      ack: (): Promise<void> => {
        record('ack');
        return delivery.ack();
      },
      nack: (options?: NackOptions): Promise<void> => {
        record('nack', options);
        // A transport without redelivery has nothing to hand back to.
        return redelivery ? delivery.nack(options) : delivery.ack();
      },
    };
    return delivery.kind === 'event'
      ? { kind: 'event', event: this.deliverAs?.(delivery.event) ?? delivery.event, ...common }
      : { kind: 'malformed', raw: delivery.raw, error: delivery.error, ...common };
  }
}

function makeBus(
  options: Partial<EventBusOptions> = {},
  transport: Transport = new TestTransport(),
): EventBus {
  return new EventBus({ transport, logger: quietLogger(), ...options });
}

const fastRetry = { maxAttempts: 3, strategy: 'fixed', minDelayMs: 1, jitter: 0 } as const;

// ---- publish ----------------------------------------------------------------------------

describe('EventBus publish', () => {
  it('publishes (type, payload) as a new event that subscribers receive', async () => {
    const bus = makeBus();
    const got = collectEvents();
    await bus.subscribe('user.created', got.handler);

    await bus.publish(
      'user.created',
      { id: 'u1' },
      { correlationId: 'c-1', headers: { tenant: 't1' } },
    );
    const [received] = await got.waitForCount(1);

    expect(received).toMatchObject({
      type: 'user.created',
      payload: { id: 'u1' },
      correlationId: 'c-1',
      headers: { tenant: 't1' },
    });
    expect(received?.id).toMatch(/^[0-9a-f-]{36}$/);
    expect(Number.isNaN(Date.parse(received?.timestamp ?? ''))).toBe(false);
    await bus.close();
  });

  it('publishes a whole event as given', async () => {
    const bus = makeBus();
    const got = collectEvents();
    await bus.subscribe('user.*', got.handler);
    const event = createEvent(
      'user.deleted',
      { id: 'u1' },
      { source: 'admin', causationId: 'x-1' },
    );

    await bus.publish(event);
    const [received] = await got.waitForCount(1);

    expect(received).toEqual(event);
    await bus.close();
  });

  it('rejects an invalid event type with VALIDATION before anything is queued', async () => {
    const transport = new TestTransport();
    const bus = makeBus({}, transport);

    for (const type of [
      '',
      'user..created',
      'user.*',
      'user.>',
      'user created',
      '.user',
      'user.',
    ]) {
      expect(codeOf(await rejection(bus.publish(type as never, {})))).toBe(ErrorCode.VALIDATION);
      const event = { ...createEvent('user.created', {}), type };
      expect(codeOf(await rejection(bus.publish(event)))).toBe(ErrorCode.VALIDATION);
    }
    expect(codeOf(await rejection(bus.publish({ ...createEvent('a.b', {}), id: '' })))).toBe(
      ErrorCode.VALIDATION,
    );
    expect(codeOf(await rejection(bus.publish(null as unknown as Event)))).toBe(
      ErrorCode.VALIDATION,
    );

    expect(transport.publishCalls).toHaveLength(0);
    expect(bus.stats().backpressure.currentQueueSize).toBe(0);
    expect(bus.stats().publishFailed).toBe(0);
    await bus.close();
  });

  it('sets the bus source on events it creates, unless the metadata names one', async () => {
    const transport = new TestTransport();
    const bus = makeBus({ source: 'billing' }, transport);

    await bus.publish('invoice.sent', {});
    await bus.publish('invoice.sent', {}, { source: 'explicit' });
    await bus.publish(createEvent('invoice.sent', {}));

    expect(transport.confirmed.map((e) => e.source)).toEqual(['billing', 'explicit', undefined]);
    await bus.close();
  });

  it('resolves only once the transport has confirmed the publish', async () => {
    const transport = new TestTransport();
    transport.manual = true;
    const bus = makeBus({}, transport);

    const published = track(bus.publish('order.placed', { n: 1 }));
    await waitFor(() => transport.pending.length === 1);
    await settle();
    expect(published.state).toBe('pending');
    expect(bus.stats().published).toBe(0);

    transport.confirmNext();
    await published.promise;
    expect(published.state).toBe('resolved');
    expect(bus.stats().published).toBe(1);
    await bus.close();
  });

  it('retries a failed connect like a failed publish', async () => {
    const clock = new FakeClock();
    const transport = new TestTransport();
    transport.requireConnect = true;
    transport.connectFailures = 1;
    const bus = makeBus(
      {
        clock,
        retry: { maxAttempts: 3, strategy: 'fixed', minDelayMs: 100, jitter: 0 },
        circuitBreaker: { failureThreshold: 100 },
      },
      transport,
    );

    const published = track(bus.publish('a.b', {}));
    await clock.advanceAsync(99);
    expect(transport.connectCalls).toBe(1);
    expect(transport.publishCalls).toHaveLength(0);
    await clock.advanceAsync(1);
    await published.promise;

    expect(published.state).toBe('resolved');
    expect(transport.connectCalls).toBe(2);
    expect(transport.confirmed).toHaveLength(1);
    await bus.close();
  });

  it('connects the transport once before the first publish', async () => {
    const transport = new TestTransport();
    transport.requireConnect = true;
    const bus = makeBus({}, transport);

    await Promise.all([bus.publish('a.b', {}), bus.publish('a.b', {})]);
    await bus.publish('a.b', {});
    await bus.subscribe('a.b', () => undefined);

    expect(transport.connectCalls).toBe(1);
    expect(transport.confirmed).toHaveLength(3);
    await bus.close();
  });

  it('rejects with the transport’s error when a publish fails for good', async () => {
    const transport = new TestTransport();
    const failure = new WatchtowerError(ErrorCode.TRANSPORT, 'refused', { retryable: false });
    transport.publishFailures.push(failure);
    const bus = makeBus({}, transport);

    expect(await rejection(bus.publish('a.b', {}))).toBe(failure);
    expect(transport.publishCalls).toHaveLength(1);
    expect(bus.stats()).toMatchObject({ published: 0, publishFailed: 1 });
    await bus.close();
  });

  it.each<[string, Record<string, unknown>]>([
    ['a numeric source', { source: 5 }],
    ['a numeric header', { headers: { n: 1 } }],
    ['a timestamp that is no date', { timestamp: 'hello' }],
    ['a timestamp that is not RFC 3339', { timestamp: 'Nov 7, 2025' }],
    ['a numeric correlationId', { correlationId: 7 }],
  ])(
    'refuses %s with VALIDATION before anything is sent, as metadata and on a whole event',
    async (_, metadata) => {
      const transport = new TestTransport();
      const bus = makeBus({}, transport);

      expect(codeOf(await rejection(bus.publish('a.b', {}, metadata as never)))).toBe(
        ErrorCode.VALIDATION,
      );
      const event = { ...createEvent('a.b', {}), ...metadata } as Event;
      expect(codeOf(await rejection(bus.publish(event)))).toBe(ErrorCode.VALIDATION);

      expect(transport.publishCalls).toHaveLength(0);
      expect(bus.stats().circuitBreaker.totalRequests).toBe(0);
      await bus.close();
    },
  );

  it('writes a Date timestamp as RFC 3339 and consumers decode what publish accepted', async () => {
    const bus = makeBus();
    const got = collectEvents();
    await bus.subscribe('a.b', got.handler);

    await bus.publish('a.b', {}, { timestamp: new Date(Date.UTC(2025, 10, 7, 10)) });
    await bus.publish('a.b', {}, { timestamp: '2025-11-07T10:00:00.123456789Z', headers: {} });
    const received = await got.waitForCount(2);

    expect(received.map((e) => e.timestamp)).toEqual([
      '2025-11-07T10:00:00.000Z',
      '2025-11-07T10:00:00.123456789Z',
    ]);
    expect(bus.stats()).toMatchObject({ deadLettered: 0, malformed: 0 });
    await bus.close();
  });

  describe('payloads that cannot be JSON', () => {
    const cyclic = (): Record<string, unknown> => {
      const value: Record<string, unknown> = { n: 1 };
      value['self'] = value;
      return value;
    };

    it('refuses them with SERIALIZATION before admission: no queue slot, no breaker call, no transport call', async () => {
      const transport = new TestTransport();
      transport.encode = true;
      const bus = makeBus({ circuitBreaker: { failureThreshold: 5 } }, transport);

      for (let i = 0; i < 12; i++) {
        const payload = i % 2 === 0 ? { big: 10n } : cyclic();
        expect(codeOf(await rejection(bus.publish('a.b', payload)))).toBe(ErrorCode.SERIALIZATION);
        expect(codeOf(await rejection(bus.publish(createEvent('a.b', payload))))).toBe(
          ErrorCode.SERIALIZATION,
        );
      }

      expect(transport.publishCalls).toHaveLength(0);
      expect(bus.stats().circuitBreaker).toMatchObject({
        state: 'closed',
        failureCount: 0,
        totalRequests: 0,
      });
      expect(bus.stats().backpressure).toMatchObject({ currentQueueSize: 0, rejectedEvents: 0 });
      expect(bus.stats().publishFailed).toBe(0);
      await bus.publish('a.b', { ok: true });
      expect(transport.confirmed.map((e) => e.payload)).toEqual([{ ok: true }]);
      await bus.close();
    });

    it('refuses them on the queued path too, while the queue holds other publishes', async () => {
      const transport = new TestTransport();
      transport.manual = true;
      transport.encode = true;
      const bus = makeBus({ publishConcurrency: 1 }, transport);

      const first = track(bus.publish('a.b', { n: 1 }));
      const queued = track(bus.publish('a.b', { n: 2 }));
      expect(codeOf(await rejection(bus.publish('a.b', { big: 1n })))).toBe(
        ErrorCode.SERIALIZATION,
      );
      expect(bus.stats().backpressure.currentQueueSize).toBe(1);
      expect(bus.stats().publishesInFlight).toBe(1);
      await waitFor(() => transport.pending.length === 1);
      transport.confirmNext();
      await waitFor(() => transport.pending.length === 1 && transport.confirmed.length === 1);
      transport.confirmNext();
      await Promise.all([first.promise, queued.promise]);

      expect(transport.publishCalls.map((e) => e.payload)).toEqual([{ n: 1 }, { n: 2 }]);
      await bus.close();
    });

    it("encodes each event once: the transport's encoding reuses the bus's", async () => {
      // The memory transport behind the test one shares objects, so only one encode is counted.
      const transport = new TestTransport({ memory: { copy: 'reference' } });
      transport.encode = true;
      const bus = makeBus({ publishConcurrency: 1 }, transport);
      let encodings = 0;
      const payload = (n: number): object => ({
        toJSON: () => {
          encodings++;
          return { n };
        },
      });

      await bus.publish('a.b', payload(1));
      expect(encodings).toBe(1);
      // Queued behind another publish, and sent later: still one encoding each.
      transport.manual = true;
      const first = track(bus.publish('a.b', payload(2)));
      const second = track(bus.publish('a.b', payload(3)));
      await waitFor(() => transport.pending.length === 1);
      transport.confirmNext();
      await waitFor(() => transport.pending.length === 1 && transport.confirmed.length === 2);
      transport.confirmNext();
      await Promise.all([first.promise, second.promise]);

      expect(encodings).toBe(3);
      await bus.close();
    });

    it('encodes a published event as it was at publish time, not as it was later changed', async () => {
      const transport = new TestTransport();
      transport.encode = true;
      const bus = makeBus({}, transport);
      const event = createEvent('a.b', { n: 1 });
      await bus.publish(event);
      event.payload = { n: 1n } as never;

      expect(() => encodeEventBytes(event)).toThrow(/BigInt/);
      await bus.close();
    });
  });

  describe('retry', () => {
    const retry = { maxAttempts: 4, strategy: 'fixed', minDelayMs: 100, jitter: 0 } as const;

    it('retries a retryable failure on the policy’s schedule, then resolves', async () => {
      const clock = new FakeClock();
      const transport = new TestTransport();
      transport.publishFailures.push(
        new ConnectionError('down'),
        new ConnectionError('still down'),
      );
      const bus = makeBus({ clock, retry }, transport);

      const published = track(bus.publish('a.b', { n: 1 }));
      await clock.advanceAsync(0);
      expect(transport.publishCalls).toHaveLength(1);
      await clock.advanceAsync(99);
      expect(transport.publishCalls).toHaveLength(1);
      await clock.advanceAsync(1);
      expect(transport.publishCalls).toHaveLength(2);
      await clock.advanceAsync(100);
      await published.promise;

      expect(published.state).toBe('resolved');
      expect(transport.publishCalls).toHaveLength(3);
      expect(transport.confirmed).toHaveLength(1);
      expect(bus.stats()).toMatchObject({ published: 1, publishFailed: 0 });
      await bus.close();
    });

    it('rejects with the last error after maxAttempts attempts', async () => {
      const clock = new FakeClock();
      const transport = new TestTransport();
      for (let i = 0; i < 10; i++) transport.publishFailures.push(new ConnectionError(`down ${i}`));
      const bus = makeBus({ clock, retry, circuitBreaker: { failureThreshold: 100 } }, transport);

      const published = track(bus.publish('a.b', {}));
      await clock.advanceAsync(1_000);
      await published.promise;

      expect(published.state).toBe('rejected');
      expect(codeOf(published.error)).toBe(ErrorCode.CONNECTION);
      expect((published.error as Error).message).toBe('down 3');
      expect(transport.publishCalls).toHaveLength(4);
      expect(bus.stats().publishFailed).toBe(1);
      await bus.close();
    });

    it('does not retry a non-retryable error', async () => {
      const clock = new FakeClock();
      const transport = new TestTransport();
      transport.publishFailures.push(new ValidationError('broker refused the payload'));
      const bus = makeBus({ clock, retry }, transport);

      const error = await rejection(bus.publish('a.b', {}));
      await clock.advanceAsync(1_000);

      expect(codeOf(error)).toBe(ErrorCode.VALIDATION);
      expect(transport.publishCalls).toHaveLength(1);
      await bus.close();
    });

    it('tries once with retry.maxAttempts 1', async () => {
      const transport = new TestTransport();
      transport.publishFailures.push(new ConnectionError('down'), new ConnectionError('down'));
      const bus = makeBus({ retry: { maxAttempts: 1 } }, transport);

      expect(codeOf(await rejection(bus.publish('a.b', {})))).toBe(ErrorCode.CONNECTION);
      expect(transport.publishCalls).toHaveLength(1);
      await bus.close();
    });
  });

  describe('circuit breaker', () => {
    it('opens after failureThreshold failed publishes and then rejects with CIRCUIT_OPEN without calling the transport', async () => {
      const clock = new FakeClock();
      const transport = new TestTransport();
      for (let i = 0; i < 3; i++) transport.publishFailures.push(new ConnectionError('down'));
      const bus = makeBus(
        {
          clock,
          retry: { maxAttempts: 1 },
          circuitBreaker: { failureThreshold: 3, resetTimeoutMs: 5_000, successThreshold: 1 },
        },
        transport,
      );
      const changes: string[] = [];
      bus.on('circuitStateChange', (to, from) => changes.push(`${from}->${to}`));

      for (let i = 0; i < 3; i++) {
        expect(codeOf(await rejection(bus.publish('a.b', {})))).toBe(ErrorCode.CONNECTION);
      }
      const open = await rejection(bus.publish('a.b', {}));

      expect(codeOf(open)).toBe(ErrorCode.CIRCUIT_OPEN);
      expect((open as { retryAfterMs: number }).retryAfterMs).toBe(5_000);
      expect(transport.publishCalls).toHaveLength(3);
      expect(bus.stats().circuitBreaker).toMatchObject({ state: 'open', rejectedRequests: 1 });
      expect(bus.circuitBreakerStats().state).toBe('open');
      expect(bus.stats().publishFailed).toBe(4);

      // After the reset timeout a trial publish goes through and closes the circuit.
      await clock.advanceAsync(5_000);
      await bus.publish('a.b', {});
      expect(transport.publishCalls).toHaveLength(4);
      expect(changes).toEqual(['closed->open', 'open->half-open', 'half-open->closed']);
      await bus.close();
    });

    it('counts each publish once, after its retries, towards opening the circuit', async () => {
      const clock = new FakeClock();
      const transport = new TestTransport();
      const bus = makeBus(
        {
          clock,
          retry: { maxAttempts: 3, strategy: 'fixed', minDelayMs: 10, jitter: 0 },
          circuitBreaker: { failureThreshold: 2 },
        },
        transport,
      );
      // Fails twice, then goes through on its last retry: a success for the breaker.
      transport.publishFailures.push(new ConnectionError('down'), new ConnectionError('down'));
      const recovered = track(bus.publish('a.b', { n: 1 }));
      await clock.advanceAsync(1_000);
      expect(recovered.state).toBe('resolved');
      expect(bus.circuitBreakerStats()).toMatchObject({ state: 'closed', failureCount: 0 });

      // Two publishes that fail on every attempt open it.
      for (let i = 0; i < 6; i++) transport.publishFailures.push(new ConnectionError('down'));
      const failed = [track(bus.publish('a.b', { n: 2 })), track(bus.publish('a.b', { n: 3 }))];
      await clock.advanceAsync(1_000);
      expect(failed.map((p) => codeOf(p.error))).toEqual([
        ErrorCode.CONNECTION,
        ErrorCode.CONNECTION,
      ]);
      expect(transport.publishCalls).toHaveLength(9);
      expect(bus.circuitBreakerStats().state).toBe('open');
      expect(codeOf(await rejection(bus.publish('a.b', { n: 4 })))).toBe(ErrorCode.CIRCUIT_OPEN);
      await bus.close();
    });

    it('lets publishes wait for the trial calls of a half-open circuit instead of failing them', async () => {
      const clock = new FakeClock();
      const transport = new TestTransport();
      const bus = makeBus(
        {
          clock,
          retry: { maxAttempts: 1 },
          circuitBreaker: { failureThreshold: 1, resetTimeoutMs: 1000, successThreshold: 1 },
        },
        transport,
      );
      transport.publishFailures.push(new ConnectionError('down'));
      await rejection(bus.publish('a.b', { n: 0 }));
      await clock.advanceAsync(1000);
      expect(bus.circuitBreakerStats().state).toBe('half-open');
      transport.manual = true;
      const publishes = [1, 2, 3].map((n) => track(bus.publish('a.b', { n })));
      await clock.advanceAsync(0);
      // One trial goes out; the others wait for its outcome.
      expect(transport.pending).toHaveLength(1);
      transport.manual = false;
      transport.confirmNext();
      await clock.advanceAsync(0);
      expect(publishes.map((p) => p.state)).toEqual(['resolved', 'resolved', 'resolved']);
      expect(bus.circuitBreakerStats().state).toBe('closed');
      await bus.close();
    });
  });

  describe('backpressure', () => {
    it('drop-newest rejects a publish that finds the queue full with BACKPRESSURE_FULL', async () => {
      const transport = new TestTransport();
      transport.manual = true;
      const bus = makeBus(
        { publishConcurrency: 1, backpressure: { maxQueueSize: 1, strategy: 'drop-newest' } },
        transport,
      );

      const first = track(bus.publish('a.b', { n: 1 }));
      const second = track(bus.publish('a.b', { n: 2 }));
      const third = await rejection(bus.publish('a.b', { n: 3 }));

      expect(codeOf(third)).toBe(ErrorCode.BACKPRESSURE_FULL);
      expect(bus.stats().backpressure).toMatchObject({ currentQueueSize: 1, rejectedEvents: 1 });
      expect(bus.stats().publishesInFlight).toBe(1);
      await waitFor(() => transport.pending.length === 1);
      transport.confirmNext();
      await waitFor(() => transport.pending.length === 1 && transport.confirmed.length === 1);
      transport.confirmNext();
      await Promise.all([first.promise, second.promise]);

      expect([first.state, second.state]).toEqual(['resolved', 'resolved']);
      expect(transport.confirmed.map((e) => e.payload)).toEqual([{ n: 1 }, { n: 2 }]);
      await bus.close();
    });

    it('drop-oldest rejects the evicted publish with BACKPRESSURE_DROPPED and sends the newer one', async () => {
      const transport = new TestTransport();
      transport.manual = true;
      const bus = makeBus(
        { publishConcurrency: 1, backpressure: { maxQueueSize: 1, strategy: 'drop-oldest' } },
        transport,
      );

      const first = track(bus.publish('a.b', { n: 1 }));
      const second = track(bus.publish('a.b', { n: 2 }));
      const third = track(bus.publish('a.b', { n: 3 }));
      await second.promise;

      expect(second.state).toBe('rejected');
      expect(codeOf(second.error)).toBe(ErrorCode.BACKPRESSURE_DROPPED);
      await waitFor(() => transport.pending.length === 1);
      transport.confirmNext();
      await waitFor(() => transport.pending.length === 1 && transport.confirmed.length === 1);
      transport.confirmNext();
      await Promise.all([first.promise, third.promise]);

      expect([first.state, third.state]).toEqual(['resolved', 'resolved']);
      expect(transport.publishCalls.map((e) => e.payload)).toEqual([{ n: 1 }, { n: 3 }]);
      expect(bus.stats()).toMatchObject({ published: 2, publishFailed: 1 });
      expect(bus.stats().backpressure.droppedEvents).toBe(1);
      await bus.close();
    });

    it('logs that the queue is filling up at most once per interval, counting the warnings held back', async () => {
      const clock = new FakeClock();
      const transport = new TestTransport({ memory: { clock } });
      transport.manual = true;
      const logger = quietLogger();
      const bus = makeBus(
        {
          clock,
          logger,
          publishConcurrency: 1,
          backpressure: { maxQueueSize: 2, warningThreshold: 0.5 },
        },
        transport,
      );
      const crossings: number[] = [];
      bus.on('backpressureWarning', (stats) => crossings.push(stats.currentQueueSize));
      await bus.connect();
      const fill = async (): Promise<void> => {
        // One at the transport, one waiting: the queue crosses its threshold once.
        const published = [bus.publish('a.b', { n: 1 }), bus.publish('a.b', { n: 2 })];
        await waitFor(() => transport.pending.length === 1);
        transport.confirmNext();
        await waitFor(() => transport.pending.length === 1);
        transport.confirmNext();
        await Promise.all(published);
      };

      for (let i = 0; i < 5; i++) await fill();
      expect(crossings).toHaveLength(5);
      const queueWarnings = (): unknown[][] =>
        logger.warn.mock.calls.filter((call) => String(call[1]).includes('filling up'));
      expect(queueWarnings()).toHaveLength(1);

      clock.advance(5000);
      await fill();
      expect(queueWarnings()).toHaveLength(2);
      expect(queueWarnings()[1]?.[0]).toMatchObject({ suppressedWarnings: 4 });
      expect(String(queueWarnings()[1]?.[1])).toContain('4 more such warnings held back');
      await bus.close();
    });

    it('block makes a publish wait for room and then sends it', async () => {
      const transport = new TestTransport();
      transport.manual = true;
      const bus = makeBus(
        { publishConcurrency: 1, backpressure: { maxQueueSize: 1, strategy: 'block' } },
        transport,
      );
      const warnings: number[] = [];
      bus.on('backpressureWarning', (stats) => warnings.push(stats.fillRatio()));
      await bus.connect();

      // One at the transport, one waiting (the queue is full), one blocked.
      const first = track(bus.publish('a.b', { n: 1 }));
      const second = track(bus.publish('a.b', { n: 2 }));
      const third = track(bus.publish('a.b', { n: 3 }));
      await waitFor(() => transport.pending.length === 1);
      await settle();

      expect([second.state, third.state]).toEqual(['pending', 'pending']);
      expect(transport.publishCalls).toHaveLength(1);
      expect(bus.stats().backpressure).toMatchObject({ currentQueueSize: 1, blockedAdmits: 1 });

      transport.confirmNext();
      await first.promise;
      await waitFor(() => transport.pending.length === 1);
      expect(transport.pending[0]?.event.payload).toEqual({ n: 2 });
      expect(bus.stats().backpressure).toMatchObject({ currentQueueSize: 1, blockedAdmits: 0 });
      transport.confirmNext();
      await second.promise;
      await waitFor(() => transport.pending.length === 1);
      expect(transport.pending[0]?.event.payload).toEqual({ n: 3 });
      transport.confirmNext();
      await third.promise;

      expect(third.state).toBe('resolved');
      expect(warnings).toEqual([1]);
      await bus.close();
    });

    it('block rejects with BACKPRESSURE_FULL after blockTimeoutMs without sending', async () => {
      const clock = new FakeClock();
      const transport = new TestTransport();
      transport.manual = true;
      const bus = makeBus(
        {
          clock,
          publishConcurrency: 1,
          backpressure: { maxQueueSize: 1, strategy: 'block', blockTimeoutMs: 100 },
        },
        transport,
      );

      // One at the transport, one waiting (the queue is full), one blocked.
      const first = track(bus.publish('a.b', { n: 1 }));
      const second = track(bus.publish('a.b', { n: 2 }));
      const third = track(bus.publish('a.b', { n: 3 }));
      await clock.advanceAsync(99);
      expect(third.state).toBe('pending');
      await clock.advanceAsync(1);
      await third.promise;

      expect(codeOf(third.error)).toBe(ErrorCode.BACKPRESSURE_FULL);
      transport.confirmNext();
      await first.promise;
      await waitFor(() => transport.pending.length === 1);
      transport.confirmNext();
      await second.promise;
      expect(transport.publishCalls.map((e) => e.payload)).toEqual([{ n: 1 }, { n: 2 }]);
      await bus.close();
    });

    // maxQueueSize counts the publishes waiting for a send slot; publishConcurrency bounds the
    // ones at the transport. Each strategy acts once maxQueueSize wait, whatever the two sizes.
    const CONCURRENCY = 4;
    const strategyCases = (['drop-oldest', 'drop-newest', 'block'] as const).flatMap((strategy) =>
      (
        [
          ['below', 2],
          ['at', CONCURRENCY],
          ['above', 8],
        ] as const
      ).map(([where, maxQueueSize]) => [strategy, maxQueueSize, where] as const),
    );

    it.each(strategyCases)(
      '%s with maxQueueSize %i (%s publishConcurrency) has its own effect once the queue is full',
      async (strategy, maxQueueSize) => {
        const transport = new TestTransport();
        transport.manual = true;
        const bus = makeBus(
          { publishConcurrency: CONCURRENCY, backpressure: { maxQueueSize, strategy } },
          transport,
        );
        await bus.connect();
        const accepted = CONCURRENCY + maxQueueSize;
        const all = Array.from({ length: accepted }, (_, n) => track(bus.publish('a.b', { n })));
        await waitFor(() => transport.pending.length === CONCURRENCY);
        expect(bus.stats()).toMatchObject({
          publishesInFlight: CONCURRENCY,
          backpressure: { currentQueueSize: maxQueueSize, droppedEvents: 0, rejectedEvents: 0 },
        });

        const extra = track(bus.publish('a.b', { n: accepted }));
        all.push(extra);
        await settle();
        const oldestWaiting = all[CONCURRENCY] as (typeof all)[number];
        switch (strategy) {
          case 'drop-oldest':
            expect(oldestWaiting.state).toBe('rejected');
            expect(codeOf(oldestWaiting.error)).toBe(ErrorCode.BACKPRESSURE_DROPPED);
            expect(extra.state).toBe('pending');
            break;
          case 'drop-newest':
            expect(extra.state).toBe('rejected');
            expect(codeOf(extra.error)).toBe(ErrorCode.BACKPRESSURE_FULL);
            expect(oldestWaiting.state).toBe('pending');
            break;
          case 'block':
            expect(extra.state).toBe('pending');
            expect(bus.stats().backpressure.blockedAdmits).toBe(1);
            break;
        }
        expect(bus.stats().backpressure.currentQueueSize).toBe(maxQueueSize);

        while (all.some((p) => p.state === 'pending')) {
          await waitFor(() => transport.pending.length > 0);
          transport.confirmNext();
          await settle(1);
        }
        const sent = transport.confirmed.map((e) => (e.payload as { n: number }).n);
        const every = Array.from({ length: accepted + 1 }, (_, n) => n);
        expect(sent).toEqual(
          strategy === 'drop-oldest'
            ? every.filter((n) => n !== CONCURRENCY)
            : strategy === 'drop-newest'
              ? every.slice(0, accepted)
              : every,
        );
        expect(transport.maxInFlight).toBe(CONCURRENCY);
        await bus.close();
      },
    );

    it('keeps at most publishConcurrency publishes at the transport at once, in order', async () => {
      const transport = new TestTransport();
      transport.manual = true;
      const bus = makeBus({ publishConcurrency: 3 }, transport);

      const all = Array.from({ length: 10 }, (_, n) => track(bus.publish('a.b', { n })));
      for (let confirmed = 0; confirmed < 10; confirmed++) {
        await waitFor(() => transport.pending.length === Math.min(3, 10 - confirmed));
        transport.confirmNext();
      }
      await Promise.all(all.map((p) => p.promise));

      expect(transport.maxInFlight).toBe(3);
      expect(all.every((p) => p.state === 'resolved')).toBe(true);
      expect(transport.confirmed.map((e) => (e.payload as { n: number }).n)).toEqual([
        0, 1, 2, 3, 4, 5, 6, 7, 8, 9,
      ]);
      await bus.close();
    });
  });
});

// ---- consume ----------------------------------------------------------------------------

describe('EventBus subscribe', () => {
  it('acks an event once its handler succeeds', async () => {
    const transport = new TestTransport();
    const bus = makeBus({}, transport);
    const got = collectEvents();
    await bus.subscribe('user.created', got.handler);

    await bus.publish('user.created', { id: 'u1' });
    await got.waitForCount(1);
    await waitFor(() => transport.settlements.length === 1);

    expect(transport.settlements).toEqual([
      { id: got.events[0]?.id, attempt: 1, action: 'ack', delayMs: undefined },
    ]);
    expect(bus.stats()).toMatchObject({ received: 1, handled: 1, handlerFailures: 0 });
    await bus.close();
  });

  it('passes the attempt, the subscription name and a signal to the handler', async () => {
    const bus = makeBus();
    const contexts: HandlerContext[] = [];
    await bus.subscribe('user.*', (_event, context) => void contexts.push(context), {
      name: 'users',
    });
    const grouped: HandlerContext[] = [];
    await bus.subscribe(['a.b', 'c.d'], (_event, context) => void grouped.push(context), {
      group: 'workers',
    });
    const unnamed: HandlerContext[] = [];
    await bus.subscribe(['a.b', 'c.d'], (_event, context) => void unnamed.push(context));

    await bus.publish('user.created', {});
    await bus.publish('a.b', {});
    await waitFor(() => contexts.length === 1 && grouped.length === 1 && unnamed.length === 1);

    expect(contexts[0]).toMatchObject({ attempt: 1, subscription: 'users' });
    expect(contexts[0]?.signal.aborted).toBe(false);
    expect(grouped[0]?.subscription).toBe('workers');
    expect(unnamed[0]?.subscription).toBe('a.b,c.d');
    await bus.close();
  });

  it('redelivers a failed event with attempt 2 after the retry delay', async () => {
    const clock = new FakeClock();
    const transport = new TestTransport({ memory: { clock } });
    const bus = makeBus({}, transport);
    const attempts: number[] = [];
    await bus.subscribe(
      'job.run',
      (_event, context) => {
        attempts.push(context.attempt);
        if (context.attempt === 1) throw new Error('flaky');
      },
      { retry: { maxAttempts: 4, strategy: 'fixed', minDelayMs: 500, jitter: 0 } },
    );

    await bus.publish('job.run', {});
    await waitFor(() => transport.settlements.length === 1);
    expect(transport.settlements[0]).toMatchObject({ action: 'nack', attempt: 1, delayMs: 500 });

    clock.advance(499);
    await settle();
    expect(attempts).toEqual([1]);
    clock.advance(1);
    await waitFor(() => transport.settlements.length === 2);

    expect(attempts).toEqual([1, 2]);
    expect(transport.settlements[1]).toMatchObject({ action: 'ack', attempt: 2 });
    expect(bus.stats()).toMatchObject({
      handled: 1,
      handlerFailures: 1,
      retried: 1,
      deadLettered: 0,
    });
    await bus.close();
  });

  it('dead-letters an event after retry.maxAttempts attempts, with the reason, and only then acks it', async () => {
    const transport = new TestTransport();
    const bus = makeBus({}, transport);
    const letters: DeadLetter[] = [];
    bus.on('deadLetter', (letter) => letters.push(letter));
    const attempts: number[] = [];
    const handle = await bus.subscribe(
      'job.*',
      (_event, context) => {
        attempts.push(context.attempt);
        throw new Error('boom');
      },
      { retry: fastRetry, name: 'job-runner' },
    );

    const before = Date.now();
    await bus.publish('job.run', { n: 1 });
    await waitFor(() => transport.deadLetterQueue.size === 1);
    await waitFor(() => transport.settlements.length === 3);

    const [letter] = transport.deadLetterQueue.list();
    expect(letter?.event?.type).toBe('job.run');
    expect(letter?.event?.payload).toEqual({ n: 1 });
    expect(letter?.reason).toMatchObject({
      message: 'boom',
      code: ErrorCode.HANDLER_FAILED,
      attempts: 3,
      originalType: 'job.run',
      subscription: 'job-runner',
    });
    expect(Date.parse(letter?.reason.failedAt ?? '')).toBeGreaterThanOrEqual(before - 1000);
    expect(attempts).toEqual([1, 2, 3]);
    expect(transport.settlements.map((s) => `${s.action}@${s.attempt}`)).toEqual([
      'nack@1',
      'nack@2',
      'ack@3',
    ]);
    expect(letters).toHaveLength(1);
    expect(letters[0]?.reason).toEqual(letter?.reason);
    expect(bus.stats()).toMatchObject({
      handlerFailures: 3,
      retried: 2,
      deadLettered: 1,
      handled: 0,
    });
    expect(handle.id).toMatch(/\S/);
    await bus.close();
  });

  it.each([1, 2, 4])(
    'runs a failing handler maxAttempts (%i) times in all, counting the first, then dead-letters it',
    async (maxAttempts) => {
      const transport = new TestTransport();
      const bus = makeBus({}, transport);
      const attempts: number[] = [];
      await bus.subscribe(
        'job.*',
        (_event, context) => {
          attempts.push(context.attempt);
          throw new Error('boom');
        },
        { retry: { ...fastRetry, maxAttempts } },
      );

      await bus.publish('job.run', {});
      await waitFor(() => transport.deadLetterQueue.size === 1);

      expect(attempts).toEqual(Array.from({ length: maxAttempts }, (_, i) => i + 1));
      expect(transport.deadLetterQueue.list()[0]?.reason.attempts).toBe(maxAttempts);
      await bus.close();
    },
  );

  it('tries a failing publish maxAttempts times in all, the first included', async () => {
    const clock = new FakeClock();
    const transport = new TestTransport();
    for (let i = 0; i < 5; i++) transport.publishFailures.push(new ConnectionError('down'));
    const bus = makeBus(
      { clock, retry: { ...fastRetry, maxAttempts: 2 }, circuitBreaker: { failureThreshold: 10 } },
      transport,
    );

    const published = track(bus.publish('a.b', {}));
    await clock.advanceAsync(100);
    await published.promise;

    expect(codeOf(published.error)).toBe(ErrorCode.CONNECTION);
    expect(transport.publishCalls).toHaveLength(2);
    await bus.close();
  });

  it('dead-letters on the first failure with retry.maxAttempts 1', async () => {
    const transport = new TestTransport();
    const bus = makeBus({}, transport);
    let calls = 0;
    await bus.subscribe(
      'job.run',
      () => {
        calls++;
        throw new Error('boom');
      },
      { retry: { maxAttempts: 1 } },
    );

    await bus.publish('job.run', {});
    await waitFor(() => transport.deadLetterQueue.size === 1);

    expect(calls).toBe(1);
    expect(transport.deadLetterQueue.list()[0]?.reason.attempts).toBe(1);
    await bus.close();
  });

  it('sends an event whose handler throws NonRetryableError straight to the dead-letter queue', async () => {
    const transport = new TestTransport();
    const bus = makeBus({}, transport);
    let calls = 0;
    await bus.subscribe(
      'job.run',
      async () => {
        calls++;
        await Promise.resolve();
        throw new NonRetryableError('bad input');
      },
      { retry: fastRetry },
    );

    await bus.publish('job.run', {});
    await waitFor(() => transport.deadLetterQueue.size === 1);

    expect(calls).toBe(1);
    expect(transport.deadLetterQueue.list()[0]?.reason).toMatchObject({
      message: 'bad input',
      code: ErrorCode.NON_RETRYABLE,
      attempts: 1,
    });
    expect(transport.settlements.map((s) => s.action)).toEqual(['ack']);
    await bus.close();
  });

  it('keeps the code of a thrown error that has one, and describes non-Error throws', async () => {
    const transport = new TestTransport();
    const bus = makeBus({}, transport);
    await bus.subscribe(
      'job.*',
      (event) => {
        if (event.type === 'job.coded')
          throw Object.assign(new Error('no such file'), { code: 'ENOENT' });
        // eslint-disable-next-line @typescript-eslint/only-throw-error
        throw 'plain string';
      },
      { retry: { maxAttempts: 1 } },
    );

    await bus.publish('job.coded', {});
    await bus.publish('job.string', {});
    await waitFor(() => transport.deadLetterQueue.size === 2);

    const reasons = transport.deadLetterQueue.list().map((letter) => letter.reason);
    expect(reasons.find((r) => r.originalType === 'job.coded')).toMatchObject({
      code: 'ENOENT',
      message: 'no such file',
    });
    expect(reasons.find((r) => r.originalType === 'job.string')).toMatchObject({
      code: ErrorCode.HANDLER_FAILED,
      message: 'plain string',
    });
    await bus.close();
  });

  describe('handler timeout', () => {
    it('fails an attempt that runs past timeoutMs with TIMEOUT and aborts its signal', async () => {
      const transport = new TestTransport();
      const bus = makeBus({}, transport);
      const signals: AbortSignal[] = [];
      await bus.subscribe(
        'job.slow',
        async (_event, context) => {
          signals.push(context.signal);
          await new Promise((resolve) => context.signal.addEventListener('abort', resolve));
        },
        { timeoutMs: 30, retry: { maxAttempts: 1 } },
      );

      await bus.publish('job.slow', {});
      await waitFor(() => transport.deadLetterQueue.size === 1);

      expect(transport.deadLetterQueue.list()[0]?.reason).toMatchObject({
        code: ErrorCode.TIMEOUT,
        attempts: 1,
      });
      expect(signals[0]?.aborted).toBe(true);
      expect(codeOf(signals[0]?.reason)).toBe(ErrorCode.TIMEOUT);
      expect(bus.stats().handlerFailures).toBe(1);
      await bus.close();
    });

    it('shows an aborted signal to a timed-out handler that looks at it only later', async () => {
      const transport = new TestTransport();
      const bus = makeBus({}, transport);
      const late = gate();
      let abortedWhenLooked: boolean | undefined;
      await bus.subscribe(
        'job.slow',
        async (_event, context) => {
          await late.promise;
          abortedWhenLooked = context.signal.aborted;
        },
        { timeoutMs: 30, retry: { maxAttempts: 1 } },
      );

      await bus.publish('job.slow', {});
      await waitFor(() => transport.deadLetterQueue.size === 1);
      late.open();
      await waitFor(() => abortedWhenLooked !== undefined);

      expect(abortedWhenLooked).toBe(true);
      await bus.close();
    });

    it('retries a timed-out attempt like any failure', async () => {
      const transport = new TestTransport();
      const bus = makeBus({}, transport);
      const attempts: number[] = [];
      await bus.subscribe(
        'job.slow',
        async (_event, context) => {
          attempts.push(context.attempt);
          if (context.attempt === 1) {
            await new Promise((resolve) => context.signal.addEventListener('abort', resolve));
          }
        },
        { timeoutMs: 30, retry: fastRetry },
      );

      await bus.publish('job.slow', {});
      await waitFor(() => bus.stats().handled === 1);

      expect(attempts).toEqual([1, 2]);
      expect(transport.deadLetterQueue.size).toBe(0);
      await bus.close();
    });

    it('never times out a handler with timeoutMs 0', async () => {
      const transport = new TestTransport();
      const bus = makeBus({}, transport);
      const release = gate();
      await bus.subscribe('job.slow', () => release.promise, { timeoutMs: 0 });

      await bus.publish('job.slow', {});
      await waitFor(() => bus.stats().activeHandlers === 1);
      release.open();
      await waitFor(() => bus.stats().handled === 1);

      expect(bus.stats().handlerFailures).toBe(0);
      await bus.close();
    });
  });

  it('runs at most `concurrency` handlers of a subscription at once', async () => {
    const bus = makeBus();
    const waiting: (() => void)[] = [];
    let running = 0;
    let most = 0;
    let done = 0;
    await bus.subscribe(
      'job.run',
      async () => {
        running++;
        most = Math.max(most, running);
        await new Promise<void>((resolve) => waiting.push(resolve));
        running--;
        done++;
      },
      { concurrency: 3 },
    );

    for (let n = 0; n < 10; n++) await bus.publish('job.run', { n });
    await waitFor(() => waiting.length === 3);
    await settle();
    expect(waiting).toHaveLength(3);
    expect(bus.stats().activeHandlers).toBe(3);

    while (done < 10) {
      await waitFor(() => waiting.length > 0 || done === 10);
      waiting.shift()?.();
      await settle(1);
    }

    expect(most).toBe(3);
    await bus.close();
  });

  it('handles events one at a time in publish order with concurrency 1', async () => {
    const bus = makeBus();
    const order: number[] = [];
    let running = 0;
    let overlapped = false;
    await bus.subscribe('job.*', async (event) => {
      running++;
      if (running > 1) overlapped = true;
      const n = (event.payload as { n: number }).n;
      for (let i = 0; i < n % 4; i++) await new Promise<void>((resolve) => setImmediate(resolve));
      order.push(n);
      running--;
    });

    for (let n = 0; n < 40; n++) await bus.publish(n % 2 === 0 ? 'job.even' : 'job.odd', { n });
    await waitFor(() => order.length === 40);

    expect(order).toEqual(Array.from({ length: 40 }, (_, n) => n));
    expect(overlapped).toBe(false);
    await bus.close();
  });

  // In a group, overlapping patterns are refused (see "overlapping patterns in a group").
  it('handles an event that matches two patterns of one subscription once', async () => {
    for (const options of [{}] satisfies SubscribeOptions[]) {
      const bus = makeBus();
      const got = collectEvents();
      await bus.subscribe(['user.*', 'user.created', 'user.>'], got.handler, options);

      await bus.publish('user.created', {});
      await bus.publish('user.profile.updated', {});
      // Every pattern's transport subscription has seen what it matches: 3 + 1 deliveries.
      await waitFor(() => bus.stats().received === 4);
      await settle();

      expect(got.events.map((e) => e.type)).toEqual(['user.created', 'user.profile.updated']);
      expect(bus.stats().handled).toBe(2);
      await bus.close();
    }
  });

  it('dead-letters malformed bytes with SERIALIZATION and keeps the subscription working', async () => {
    const memory = new MemoryTransport();
    const bus = makeBus({}, memory);
    const got = collectEvents();
    await bus.subscribe('user.*', got.handler, { name: 'users' });
    const garbage = new TextEncoder().encode('\u0000 definitely not json');

    await memory.publishRaw('user.created', garbage);
    await waitFor(() => memory.deadLetterQueue.size === 1);
    await bus.publish('user.created', { id: 'u1' });
    await got.waitForCount(1);

    const [letter] = memory.deadLetterQueue.list();
    expect(letter?.event).toBeUndefined();
    expect(letter?.raw).toEqual(garbage);
    expect(letter?.reason).toMatchObject({
      code: ErrorCode.SERIALIZATION,
      attempts: 1,
      originalType: 'user.created',
      subscription: 'users',
    });
    expect(got.events[0]?.payload).toEqual({ id: 'u1' });
    expect(bus.stats()).toMatchObject({ malformed: 1, deadLettered: 1, handled: 1 });
    await bus.close();
  });

  it('does not ack an event whose dead-letter write failed, and dead-letters it on a later attempt', async () => {
    const transport = new TestTransport();
    transport.dlqFailures = 5;
    const bus = makeBus(
      { retry: { maxAttempts: 2, strategy: 'fixed', minDelayMs: 1, jitter: 0 } },
      transport,
    );
    const errors: [string, string | undefined][] = [];
    bus.on('error', (error, context) => errors.push([error.code, context.eventId]));
    await bus.subscribe(
      'job.run',
      () => {
        throw new NonRetryableError('bad');
      },
      { retry: { maxAttempts: 1, minDelayMs: 1 } },
    );

    await bus.publish('job.run', {});
    await waitFor(() => transport.deadLetterQueue.size === 1);
    await waitFor(() => transport.settlements.at(-1)?.action === 'ack');

    expect(transport.dlqWrites).toBe(6);
    expect(transport.settlements.map((s) => `${s.action}@${s.attempt}`)).toEqual([
      'nack@1',
      'nack@2',
      'ack@3',
    ]);
    expect(transport.deadLetterQueue.list()[0]?.reason).toMatchObject({
      code: ErrorCode.NON_RETRYABLE,
      attempts: 3,
    });
    const id = transport.deadLetterQueue.list()[0]?.event?.id;
    expect(errors).toEqual([
      [ErrorCode.TRANSPORT, id],
      [ErrorCode.TRANSPORT, id],
    ]);
    expect(bus.stats().deadLettered).toBe(1);
    await bus.close();
  });

  it('still runs the handler for an event handed back unseen by two stopping consumers', async () => {
    const transport = new MemoryTransport();
    const stopped = await transport.subscribe('job.pending', { group: 'workers' });
    const iterator = stopped[Symbol.asyncIterator]();
    await transport.publish(createEvent('job.pending', { n: 1 }));
    for (let attempt = 1; attempt <= 2; attempt++) {
      const next = await iterator.next();
      await (next.value as Delivery).nack();
    }
    await stopped.unsubscribe();
    const bus = makeBus({}, transport);
    const attempts: number[] = [];
    await bus.subscribe(
      'job.pending',
      (_event, context) => {
        attempts.push(context.attempt);
      },
      { group: 'workers', retry: { maxAttempts: 1 } },
    );
    await waitFor(() => bus.stats().handled === 1);
    expect(attempts).toEqual([3]);
    expect(transport.deadLetterQueue.size).toBe(0);
    await bus.close();
  });

  it('dead-letters an event delivered more often than its retries allow (earlier deliveries never settled) without running the handler', async () => {
    const transport = new MemoryTransport();
    // Consumers that took it and stopped without settling: each hand-back is one more delivery.
    const crashed = await transport.subscribe('job.poison', { group: 'workers' });
    const iterator = crashed[Symbol.asyncIterator]();
    const event = createEvent('job.poison', { n: 1 });
    await transport.publish(event);
    for (let attempt = 1; attempt <= 5; attempt++) {
      const next = await iterator.next();
      expect((next.value as Delivery).attempt).toBe(attempt);
      await (next.value as Delivery).nack();
    }
    await crashed.unsubscribe();

    const bus = makeBus({}, transport);
    let calls = 0;
    await bus.subscribe(
      'job.poison',
      () => {
        calls++;
      },
      { group: 'workers', retry: { maxAttempts: 3, minDelayMs: 1 } },
    );
    await waitFor(() => bus.stats().deadLettered === 1);
    expect(calls).toBe(0);
    expect(transport.deadLetterQueue.size).toBe(1);
    const letter = transport.deadLetterQueue.list()[0];
    expect(letter?.event?.id).toBe(event.id);
    expect(letter?.reason).toMatchObject({ code: ErrorCode.TIMEOUT, attempts: 6 });
    expect(letter?.reason.message).toContain('more than the 5 the retry policy allows');
    expect(bus.stats()).toMatchObject({ handled: 0, handlerFailures: 0 });
    await bus.close();
  });

  describe('on a transport without redelivery', () => {
    it('retries in process on the policy’s schedule, then dead-letters, never nacking', async () => {
      const clock = new FakeClock();
      const transport = new TestTransport({ capabilities: { redelivery: false } });
      const bus = makeBus({ clock }, transport);
      const attempts: number[] = [];
      await bus.subscribe(
        'job.run',
        (_event, context) => {
          attempts.push(context.attempt);
          throw new Error('boom');
        },
        { retry: { maxAttempts: 3, strategy: 'fixed', minDelayMs: 100, jitter: 0 } },
      );

      await bus.publish('job.run', {});
      await waitFor(() => attempts.length === 1);
      await clock.advanceAsync(99);
      expect(attempts).toEqual([1]);
      await clock.advanceAsync(1);
      expect(attempts).toEqual([1, 2]);
      await clock.advanceAsync(100);
      await waitFor(() => transport.deadLetterQueue.size === 1);

      expect(attempts).toEqual([1, 2, 3]);
      expect(transport.deadLetterQueue.list()[0]?.reason.attempts).toBe(3);
      expect(transport.settlements.map((s) => s.action)).toEqual(['ack']);
      expect(bus.stats()).toMatchObject({ retried: 2, deadLettered: 1 });
      await bus.close();
    });

    it('acks an event that succeeds on an in-process retry', async () => {
      const transport = new TestTransport({ capabilities: { redelivery: false } });
      const bus = makeBus({}, transport);
      const attempts: number[] = [];
      await bus.subscribe(
        'job.run',
        (_event, context) => {
          attempts.push(context.attempt);
          if (context.attempt < 3) throw new Error('flaky');
        },
        { retry: fastRetry },
      );

      await bus.publish('job.run', {});
      await waitFor(() => bus.stats().handled === 1);

      expect(attempts).toEqual([1, 2, 3]);
      expect(transport.settlements.map((s) => `${s.action}@${s.attempt}`)).toEqual(['ack@1']);
      expect(transport.deadLetterQueue.size).toBe(0);
      await bus.close();
    });
  });

  describe('unsubscribe', () => {
    it('waits for running handlers and then delivers nothing more', async () => {
      const bus = makeBus();
      const release = gate();
      const handled: string[] = [];
      const handle = await bus.subscribe('job.*', async (event) => {
        await release.promise;
        handled.push(event.type);
      });
      const witness = collectEvents();
      await bus.subscribe('job.*', witness.handler);

      await bus.publish('job.first', {});
      await waitFor(() => bus.stats().activeHandlers === 1);
      const unsubscribed = track(bus.unsubscribe(handle));
      await settle();
      expect(unsubscribed.state).toBe('pending');

      release.open();
      await unsubscribed.promise;
      expect(handled).toEqual(['job.first']);
      expect(bus.stats().subscriptions).toBe(1);

      await bus.publish('job.second', {});
      await witness.waitForCount(2);
      await settle();
      expect(handled).toEqual(['job.first']);
      await handle.unsubscribe(); // idempotent
      await bus.close();
    });

    it('starts no handler for an event still waiting for a slot, and resolves only when none runs', async () => {
      const bus = makeBus();
      const first = gate();
      const started: string[] = [];
      const handle = await bus.subscribe('job.*', async (event) => {
        started.push(event.type);
        await first.promise;
      });

      await bus.publish('job.first', {});
      await bus.publish('job.second', {});
      await waitFor(() => started.length === 1);
      const unsubscribed = track(handle.unsubscribe());
      await settle();
      first.open();
      await unsubscribed.promise;

      expect(bus.stats().activeHandlers).toBe(0);
      await settle();
      expect(started).toEqual(['job.first']);
      await bus.close();
    });

    it('hands an event still waiting for a slot back to its group, losing nothing', async () => {
      const transport = new TestTransport();
      const bus = makeBus({}, transport);
      const first = gate();
      const leaving: string[] = [];
      const handle = await bus.subscribe(
        'job.*',
        async (event) => {
          leaving.push(event.type);
          await first.promise;
        },
        { group: 'workers' },
      );

      await bus.publish('job.first', {});
      await bus.publish('job.second', {});
      await waitFor(() => leaving.length === 1);
      const unsubscribed = track(handle.unsubscribe());
      first.open();
      await unsubscribed.promise;
      const staying = collectEvents();
      await bus.subscribe('job.*', staying.handler, { group: 'workers' });
      await staying.waitForCount(1);

      expect(leaving).toEqual(['job.first']);
      expect(staying.events.map((e) => e.type)).toEqual(['job.second']);
      await bus.close();
    });

    it('unsubscribes when the subscription’s signal aborts', async () => {
      const bus = makeBus();
      const controller = new AbortController();
      await bus.subscribe('job.*', () => undefined, { signal: controller.signal });
      expect(bus.stats().subscriptions).toBe(1);

      controller.abort();
      await waitFor(() => bus.stats().subscriptions === 0);
      await bus.close();
    });

    it('lets go of the signal’s abort listener once unsubscribed', async () => {
      const bus = makeBus();
      const controller = new AbortController();
      const handles = [
        await bus.subscribe('job.*', () => undefined, { signal: controller.signal }),
        await bus.subscribe('job.*', () => undefined, { signal: controller.signal }),
      ];
      expect(getEventListeners(controller.signal, 'abort')).toHaveLength(2);

      for (const handle of handles) await handle.unsubscribe();

      expect(getEventListeners(controller.signal, 'abort')).toHaveLength(0);
      await bus.close();
    });

    it('refuses to subscribe with a signal that has already aborted', async () => {
      const bus = makeBus();
      const error = await rejection(
        bus.subscribe('job.*', () => undefined, { signal: AbortSignal.abort() }),
      );
      expect((error as Error).name).toBe('AbortError');
      expect(bus.stats().subscriptions).toBe(0);
      await bus.close();
    });
  });
});

// ---- close ------------------------------------------------------------------------------

describe('EventBus close', () => {
  it('keeps its deadline when the transport neither unsubscribes nor closes, rejecting with TIMEOUT', async () => {
    const clock = new FakeClock();
    class HangingTransport extends TestTransport {
      override async subscribe(
        pattern: string,
        options?: TransportSubscribeOptions,
      ): Promise<TransportSubscription> {
        const sub = await super.subscribe(pattern, options);
        return {
          pattern: sub.pattern,
          unsubscribe: () => new Promise<void>(() => undefined),
          [Symbol.asyncIterator]: () => sub[Symbol.asyncIterator](),
        };
      }
      override close(): Promise<void> {
        this.closeCalls++;
        return new Promise<void>(() => undefined);
      }
    }
    const transport = new HangingTransport();
    const bus = makeBus({ clock }, transport);
    await bus.subscribe('a.b', () => undefined);
    const closed = track(bus.close({ timeoutMs: 100 }));
    await clock.advanceAsync(100);
    expect(transport.closeCalls).toBe(1);
    expect(closed.state).toBe('pending');
    await clock.advanceAsync(CLOSE_MARGIN_MS);
    await settle();
    expect(closed.state).toBe('rejected');
    expect(codeOf(closed.error)).toBe(ErrorCode.TIMEOUT);
  });

  it('is idempotent: every call returns the same promise', async () => {
    const bus = makeBus();
    const first = bus.close();
    expect(bus.close()).toBe(first);
    expect(bus.close({ timeoutMs: 5 })).toBe(first);
    await first;
  });

  it('sends the queued publishes before it closes the transport', async () => {
    const transport = new TestTransport();
    transport.manual = true;
    const bus = makeBus({ publishConcurrency: 1 }, transport);

    const published = [1, 2, 3].map((n) => track(bus.publish('a.b', { n })));
    await waitFor(() => transport.pending.length === 1);
    const closed = track(bus.close());
    const late = await rejection(bus.publish('a.b', { n: 4 }));
    expect(codeOf(late)).toBe(ErrorCode.CLOSED);

    for (let n = 0; n < 3; n++) {
      await waitFor(() => transport.pending.length === 1);
      expect(transport.closeCalls).toBe(0);
      transport.confirmNext();
    }
    await closed.promise;

    expect(closed.state).toBe('resolved');
    expect(published.map((p) => p.state)).toEqual(['resolved', 'resolved', 'resolved']);
    expect(transport.confirmed.map((e) => e.payload)).toEqual([{ n: 1 }, { n: 2 }, { n: 3 }]);
    expect(transport.closeCalls).toBe(1);
  });

  it('gives up on queued publishes after its timeout, rejecting them with CLOSED', async () => {
    const clock = new FakeClock();
    const transport = new TestTransport();
    transport.manual = true;
    const bus = makeBus({ clock, publishConcurrency: 1 }, transport);

    const first = track(bus.publish('a.b', { n: 1 }));
    const second = track(bus.publish('a.b', { n: 2 }));
    await waitFor(() => transport.pending.length === 1);
    const closed = track(bus.close({ timeoutMs: 1_000 }));
    await clock.advanceAsync(999);
    expect(closed.state).toBe('pending');
    await clock.advanceAsync(1);
    await closed.promise;
    await Promise.all([first.promise, second.promise]);

    expect(codeOf(second.error)).toBe(ErrorCode.CLOSED);
    expect(codeOf(first.error)).toBe(ErrorCode.CLOSED);
    expect(transport.publishCalls).toHaveLength(1);
    expect(transport.closeCalls).toBe(1);
  });

  it('settles every publish accepted before it by its deadline, even when the transport never answers', async () => {
    const clock = new FakeClock();
    class SilentTransport extends TestTransport {
      override publish(event: Event): Promise<void> {
        this.publishCalls.push(event);
        return new Promise<void>(() => undefined);
      }
    }
    const transport = new SilentTransport();
    const bus = makeBus({ clock, publishConcurrency: 2 }, transport);
    await bus.connect();

    const inFlight = [track(bus.publish('a.b', { n: 1 })), track(bus.publish('a.b', { n: 2 }))];
    const queued = track(bus.publish('a.b', { n: 3 }));
    expect(bus.stats()).toMatchObject({
      publishesInFlight: 2,
      backpressure: { currentQueueSize: 1 },
    });
    const closed = track(bus.close({ timeoutMs: 1_000 }));
    await clock.advanceAsync(999);
    expect([...inFlight, queued].map((p) => p.state)).toEqual(['pending', 'pending', 'pending']);

    await clock.advanceAsync(1);
    await Promise.all([...inFlight, queued].map((p) => p.promise));
    expect([...inFlight, queued].map((p) => codeOf(p.error))).toEqual([
      ErrorCode.CLOSED,
      ErrorCode.CLOSED,
      ErrorCode.CLOSED,
    ]);
    await closed.promise;
    expect(closed.state).toBe('resolved');
    expect(transport.publishCalls).toHaveLength(2);
    expect(bus.stats()).toMatchObject({ publishFailed: 3, published: 0, publishesInFlight: 0 });
  });

  it('cuts off a publish waiting for its next retry at the deadline with CLOSED', async () => {
    const clock = new FakeClock();
    const transport = new TestTransport();
    for (let i = 0; i < 5; i++) transport.publishFailures.push(new ConnectionError('down'));
    const bus = makeBus(
      { clock, retry: { maxAttempts: 6, strategy: 'fixed', minDelayMs: 20_000, jitter: 0 } },
      transport,
    );
    await bus.connect();

    const published = track(bus.publish('a.b', {}));
    await settle();
    const closed = track(bus.close({ timeoutMs: 500 }));
    await clock.advanceAsync(500);
    await published.promise;
    await closed.promise;

    expect(codeOf(published.error)).toBe(ErrorCode.CLOSED);
    expect(transport.publishCalls).toHaveLength(1);
  });

  it('ignores a confirmation that arrives after close cut the publish off', async () => {
    const clock = new FakeClock();
    class LateTransport extends TestTransport {
      readonly late: (() => void)[] = [];
      override publish(event: Event): Promise<void> {
        this.publishCalls.push(event);
        return new Promise<void>((resolve) => this.late.push(resolve));
      }
    }
    const transport = new LateTransport();
    const bus = makeBus({ clock }, transport);
    await bus.connect();
    const published = track(bus.publish('a.b', {}));
    const closed = track(bus.close({ timeoutMs: 100 }));
    await clock.advanceAsync(100);
    await closed.promise;
    for (const confirm of transport.late) confirm();
    await settle();

    expect(published.state).toBe('rejected');
    expect(codeOf(published.error)).toBe(ErrorCode.CLOSED);
    expect(bus.stats()).toMatchObject({ published: 0, publishFailed: 1 });
  });

  it('waits for running handlers, then closes the transport', async () => {
    const transport = new TestTransport();
    const bus = makeBus({}, transport);
    const release = gate();
    await bus.subscribe('job.run', () => release.promise);

    await bus.publish('job.run', {});
    await waitFor(() => bus.stats().activeHandlers === 1);
    const closed = track(bus.close());
    await settle();
    expect(closed.state).toBe('pending');
    expect(transport.closeCalls).toBe(0);

    release.open();
    await closed.promise;

    expect(closed.state).toBe('resolved');
    expect(transport.settlements.map((s) => s.action)).toEqual(['ack']);
    expect(transport.closeCalls).toBe(1);
    expect((await bus.healthCheck()).healthy).toBe(false);
    expect(bus.stats().subscriptions).toBe(0);
  });

  it('finishes after its timeout even when a handler ignores its signal, starting no other handler', async () => {
    const bus = makeBus();
    const stuck = gate();
    const started: string[] = [];
    await bus.subscribe('job.*', async (event) => {
      started.push(event.type);
      await stuck.promise;
    });

    await bus.publish('job.first', {});
    await bus.publish('job.second', {});
    await waitFor(() => started.length === 1);
    await bus.close({ timeoutMs: 20 });

    expect(started).toEqual(['job.first']);
    stuck.open();
  });

  it('refuses a subscribe that races it with CLOSED, leaving nothing subscribed', async () => {
    const bus = makeBus();
    const subscribing = rejection(bus.subscribe('job.*', () => undefined));
    await bus.close();

    expect(codeOf(await subscribing)).toBe(ErrorCode.CLOSED);
    expect(bus.stats().subscriptions).toBe(0);
  });

  it('aborts the signal of a handler still running when the close timeout passes', async () => {
    const bus = makeBus();
    let signal: AbortSignal | undefined;
    await bus.subscribe('job.run', async (_event, context) => {
      signal = context.signal;
      await new Promise((resolve) => context.signal.addEventListener('abort', resolve));
    });

    await bus.publish('job.run', {});
    await waitFor(() => signal !== undefined);
    await bus.close({ timeoutMs: 20 });

    expect(signal?.aborted).toBe(true);
    expect(codeOf(signal?.reason)).toBe(ErrorCode.CLOSED);
  });

  it('refuses publishes, subscriptions and connects with CLOSED afterwards', async () => {
    const bus = makeBus();
    await bus.close();

    expect(codeOf(await rejection(bus.publish('a.b', {})))).toBe(ErrorCode.CLOSED);
    expect(codeOf(await rejection(bus.publish(createEvent('a.b', {}))))).toBe(ErrorCode.CLOSED);
    expect(codeOf(await rejection(bus.subscribe('a.b', () => undefined)))).toBe(ErrorCode.CLOSED);
    expect(codeOf(await rejection(bus.connect()))).toBe(ErrorCode.CLOSED);
  });

  it('rejects a bad close timeout with CONFIG instead of throwing', async () => {
    const bus = makeBus();
    let result: Promise<void> | undefined;
    expect(() => {
      result = bus.close({ timeoutMs: -1 });
    }).not.toThrow();
    const error = await rejection(result as Promise<void>);
    expect(codeOf(error)).toBe(ErrorCode.CONFIG);
    expect((error as Error).message).toContain('`timeoutMs`');
    await bus.close();
  });

  it('refuses a misspelt close option with CONFIG naming it, and stays open', async () => {
    const bus = makeBus();
    const error = await rejection(bus.close({ timeoutMS: 10 } as never));
    expect(codeOf(error)).toBe(ErrorCode.CONFIG);
    expect((error as Error).message).toContain('`timeoutMS`');
    await bus.publish('a.b', {});
    await bus.close();
  });

  it('refuses misspelt event metadata on publish with CONFIG naming it, publishing nothing', async () => {
    const transport = new TestTransport();
    const bus = makeBus({}, transport);
    const error = await rejection(bus.publish('a.b', {}, { correlationID: 'c-1' } as never));
    expect(codeOf(error)).toBe(ErrorCode.CONFIG);
    expect((error as Error).message).toContain('`correlationID`');
    expect(transport.publishCalls).toEqual([]);
    await bus.close();
  });

  it('closes on await using', async () => {
    const transport = new TestTransport();
    {
      await using bus = makeBus({}, transport);
      await bus.publish('a.b', {});
    }
    expect(transport.closeCalls).toBe(1);
  });
});

// ---- observation ------------------------------------------------------------------------

describe('EventBus stats and listeners', () => {
  it('counts what happened', async () => {
    const transport = new TestTransport();
    const bus = makeBus({}, transport);
    expect(bus.stats()).toMatchObject({
      published: 0,
      publishFailed: 0,
      received: 0,
      handled: 0,
      handlerFailures: 0,
      retried: 0,
      deadLettered: 0,
      validationFailures: 0,
      malformed: 0,
      activeHandlers: 0,
      subscriptions: 0,
    });
    const handle = await bus.subscribe(
      'job.*',
      (event, context) => {
        if (event.type === 'job.flaky' && context.attempt === 1) throw new Error('once');
        if (event.type === 'job.bad') throw new NonRetryableError('never');
      },
      { retry: fastRetry },
    );
    await bus.subscribe('other.*', () => undefined);

    await bus.publish('job.ok', {});
    await bus.publish('job.flaky', {});
    await bus.publish('job.bad', {});
    transport.publishFailures.push(
      new WatchtowerError(ErrorCode.TRANSPORT, 'no', { retryable: false }),
    );
    await rejection(bus.publish('job.lost', {}));
    await waitFor(() => bus.stats().handled === 2 && bus.stats().deadLettered === 1);

    const stats = bus.stats();
    expect(stats).toMatchObject({
      published: 3,
      publishFailed: 1,
      received: 4,
      handled: 2,
      handlerFailures: 2,
      retried: 1,
      deadLettered: 1,
      activeHandlers: 0,
      subscriptions: 2,
    });
    expect(stats.circuitBreaker.state).toBe('closed');
    expect(stats.backpressure.maxQueueSize).toBe(1000);
    expect(bus.backpressureStats().currentQueueSize).toBe(0);

    await handle.unsubscribe();
    expect(bus.stats().subscriptions).toBe(1);
    await bus.close();
  });

  it('tells deadLetter listeners until they are removed', async () => {
    const transport = new TestTransport();
    const bus = makeBus({}, transport);
    const letters: DeadLetter[] = [];
    const remove = bus.on('deadLetter', (letter) => letters.push(letter));
    await bus.subscribe(
      'job.*',
      () => {
        throw new NonRetryableError('no');
      },
      { name: 'jobs' },
    );

    await bus.publish('job.one', {});
    await waitFor(() => letters.length === 1);
    remove();
    await bus.publish('job.two', {});
    await waitFor(() => transport.deadLetterQueue.size === 2);

    expect(letters).toHaveLength(1);
    expect(letters[0]?.event?.type).toBe('job.one');
    expect(letters[0]?.reason).toMatchObject({
      code: ErrorCode.NON_RETRYABLE,
      subscription: 'jobs',
    });
    await bus.close();
  });

  it('reports failures no caller can see to error listeners, else to the logger', async () => {
    const clock = new FakeClock();
    const transport = new TestTransport({ memory: { clock } });
    transport.dlqFailures = 2;
    const logger = quietLogger();
    const bus = new EventBus({ transport, logger, retry: { maxAttempts: 1 } });
    const errors: { code: string; subscription: string | undefined }[] = [];
    const remove = bus.on('error', (error, context) =>
      errors.push({ code: error.code, subscription: context.subscription }),
    );
    await bus.subscribe(
      'job.*',
      () => {
        throw new NonRetryableError('no');
      },
      { name: 'jobs', retry: { maxAttempts: 1, strategy: 'fixed', minDelayMs: 100, jitter: 0 } },
    );

    await bus.publish('job.one', {});
    await waitFor(() => errors.length === 1);
    remove();
    clock.advance(100);
    await waitFor(() => logger.error.mock.calls.length === 1);
    clock.advance(100);
    await waitFor(() => transport.deadLetterQueue.size === 1);

    expect(errors).toEqual([{ code: ErrorCode.TRANSPORT, subscription: 'jobs' }]);
    expect(logger.error.mock.calls[0]?.[0]).toMatchObject({
      code: ErrorCode.TRANSPORT,
      subscription: 'jobs',
    });
    await bus.close();
  });

  it('reports health through the transport and never rejects', async () => {
    const transport = new TestTransport();
    const bus = makeBus({}, transport);
    expect(await bus.healthCheck()).toMatchObject({ healthy: true });
    transport.healthCheck = () => Promise.reject(new Error('probe failed'));
    expect(await bus.healthCheck()).toMatchObject({ healthy: false, message: 'probe failed' });
    await bus.close();
  });
});

// ---- options ----------------------------------------------------------------------------

describe('EventBus dead letters that cannot be written', () => {
  const failing = (): never => {
    throw new NonRetryableError('handler refused it');
  };

  it('dead-letters an event whose type does not match the subscription it arrived on as MISROUTED', async () => {
    const transport = new TestTransport();
    transport.deliverAs = (event) => ({ ...event, type: 'order.placed' });
    const bus = makeBus({}, transport);
    const handled: string[] = [];
    await bus.subscribe('user.*', (event) => void handled.push(event.type), { name: 'users' });
    await bus.publish('user.created', { id: 1 });
    await waitFor(() => bus.stats().deadLettered === 1);
    const letter = transport.deadLetterQueue.list()[0];
    expect(letter?.event?.type).toBe('order.placed');
    expect(letter?.reason).toMatchObject({ code: ErrorCode.MISROUTED, subscription: 'users' });
    expect(letter?.reason.message).toContain('"user.*"');
    expect(handled).toEqual([]);
    expect(bus.stats()).toMatchObject({ misrouted: 1, deadLettered: 1, handled: 0 });
    await bus.close();
  });

  it('writes a reduced dead letter when the full record can never be stored', async () => {
    const transport = new TestTransport();
    transport.dlqMaxBytes = 2048;
    const bus = makeBus({}, transport);
    const letters: DeadLetter[] = [];
    bus.on('deadLetter', (letter) => letters.push(letter));
    await bus.subscribe('big.one', failing, { name: 'big', retry: { maxAttempts: 1 } });
    const event = createEvent('big.one', { blob: 'x'.repeat(10_000) }, { correlationId: 'c-1' });
    await bus.publish(event);
    await waitFor(() => transport.deadLetterQueue.size === 1);
    const stored = transport.deadLetterQueue.list()[0];
    expect(stored?.event).toBeUndefined();
    expect(stored?.raw?.byteLength).toBe(1024);
    expect(new TextDecoder().decode(stored?.raw)).toContain(event.id);
    expect(stored?.reason).toMatchObject({
      code: ErrorCode.NON_RETRYABLE,
      originalType: 'big.one',
      reduced: {
        eventId: event.id,
        correlationId: 'c-1',
        keptBytes: 1024,
        origin: 'big.one',
      },
    });
    expect(stored?.reason.reduced?.originalBytes).toBeGreaterThan(10_000);
    expect(stored?.reason.reduced?.why).toContain('exceeds the maximum');
    expect(letters[0]?.reason.reduced).toBeDefined();
    // One refused full write, one reduced: no loop.
    expect(transport.dlqWrites).toBe(2);
    expect(transport.settlements.map((s) => s.action)).toEqual(['ack']);
    expect(bus.stats()).toMatchObject({ deadLettered: 1, deadLettersReduced: 1 });
    await bus.close();
  });

  it('hands back a delivery whose dead letter fails with a delay that grows with each try', async () => {
    const clock = new FakeClock();
    const transport = new TestTransport({ memory: { clock } });
    transport.dlqFailures = 1_000_000;
    const bus = makeBus({ clock, retry: { maxAttempts: 1 } }, transport);
    const errors: string[] = [];
    bus.on('error', (error) => errors.push(error.message));
    await bus.subscribe('job.run', failing, {
      retry: { maxAttempts: 1, minDelayMs: 100, maxDelayMs: 60_000, jitter: 0 },
    });
    await bus.publish('job.run', {});
    for (let i = 0; i < 6; i++) {
      await waitFor(() => transport.settlements.length === i + 1);
      await clock.advanceAsync(transport.settlements[i]?.delayMs ?? 0);
    }
    const delays = transport.settlements.slice(0, 6).map((s) => s.delayMs);
    expect(transport.settlements.every((s) => s.action === 'nack')).toBe(true);
    expect(delays).toEqual([100, 200, 400, 800, 1600, 3200]);
    // Each try writes the dead letter straight away: the handler ran once.
    expect(bus.stats().handlerFailures).toBe(1);
    expect(bus.stats().deadLetterFailures).toBeGreaterThanOrEqual(6);
    expect(errors[0]).toContain('could not be written');
    expect(errors[0]).toContain('tried again in 100 ms');
    await bus.close();
  });

  it('backs off on undecodable bytes whose dead letter fails, as for events', async () => {
    const clock = new FakeClock();
    const transport = new TestTransport({ memory: { clock } });
    transport.dlqFailures = 1_000_000;
    const bus = makeBus({ clock, retry: { maxAttempts: 1 } }, transport);
    bus.on('error', () => undefined);
    await bus.subscribe('raw.in', () => undefined, {
      retry: { maxAttempts: 3, minDelayMs: 50, maxDelayMs: 60_000, jitter: 0 },
    });
    await transport.inner.publishRaw('raw.in', new Uint8Array([0xff, 0x00]));
    for (let i = 0; i < 4; i++) {
      await waitFor(() => transport.settlements.length === i + 1);
      await clock.advanceAsync(transport.settlements[i]?.delayMs ?? 0);
    }
    expect(transport.settlements.slice(0, 4).map((s) => s.delayMs)).toEqual([50, 100, 200, 400]);
    expect(bus.stats().deadLettered).toBe(0);
    expect(bus.stats().deadLetterFailures).toBeGreaterThanOrEqual(4);
    await bus.close();
  });

  it('reports as lost what can be neither dead-lettered nor delivered again', async () => {
    const transport = new TestTransport({ capabilities: { redelivery: false } });
    transport.dlqFailures = 1_000_000;
    const bus = makeBus({ retry: { maxAttempts: 1 } }, transport);
    const errors: string[] = [];
    bus.on('error', (error) => errors.push(error.message));
    await bus.subscribe('job.run', failing, { retry: { maxAttempts: 1 } });
    await bus.publish('job.run', {});
    await waitFor(() => errors.length === 1);
    expect(errors[0]).toContain('cannot deliver it again, so it is lost');
    expect(bus.stats().deadLetterFailures).toBe(1);
    await bus.close();
  });
});

describe('EventBus and the connection of its transport', () => {
  const transportError = (): WatchtowerError =>
    new WatchtowerError(ErrorCode.TRANSPORT, 'broker went away', { retryable: true });

  it('rejects a publish the transport never confirms with TIMEOUT after publishTimeoutMs', async () => {
    const clock = new FakeClock();
    const transport = new TestTransport();
    transport.manual = true;
    const bus = makeBus({ clock, publishTimeoutMs: 1000 }, transport);
    await bus.connect();
    const publish = track(bus.publish('a.b', {}));
    await clock.advanceAsync(999);
    expect(publish.state).toBe('pending');
    await clock.advanceAsync(101);
    expect(publish.state).toBe('rejected');
    expect(codeOf(publish.error)).toBe(ErrorCode.TIMEOUT);
    expect(String(publish.error)).toContain('publishTimeoutMs (1000 ms)');
    expect(bus.stats()).toMatchObject({ publishFailed: 1, publishesInFlight: 0 });
    // The transport confirming it later changes nothing for the caller.
    transport.confirmNext();
    await clock.advanceAsync(0);
    expect(bus.stats().published).toBe(0);
    await bus.close();
  });

  it('holds new publishes while the connection is lost and sends them when it is back', async () => {
    const clock = new FakeClock();
    const transport = new TestTransport();
    const bus = makeBus({ clock }, transport);
    await bus.connect();
    transport.loseConnection();
    const publishes = [track(bus.publish('a.b', { n: 1 })), track(bus.publish('a.b', { n: 2 }))];
    await clock.advanceAsync(5000);
    expect(transport.publishCalls).toHaveLength(0);
    expect(bus.stats().backpressure.currentQueueSize).toBe(2);
    transport.restoreConnection();
    await clock.advanceAsync(0);
    expect(publishes.map((p) => p.state)).toEqual(['resolved', 'resolved']);
    expect(transport.confirmed.map((e) => e.payload)).toEqual([{ n: 1 }, { n: 2 }]);
    await bus.close();
  });

  it('rejects publishes still held at publishTimeoutMs with TIMEOUT caused by the lost connection', async () => {
    const clock = new FakeClock();
    const transport = new TestTransport();
    const bus = makeBus({ clock, publishTimeoutMs: 2000 }, transport);
    await bus.connect();
    transport.loseConnection();
    const publish = track(bus.publish('a.b', {}));
    await clock.advanceAsync(2200);
    expect(codeOf(publish.error)).toBe(ErrorCode.TIMEOUT);
    expect(String(publish.error)).toContain('connection is lost (socket closed by the broker)');
    expect(codeOf((publish.error as Error).cause)).toBe(ErrorCode.CONNECTION);
    expect(bus.stats().backpressure.currentQueueSize).toBe(0);
    transport.restoreConnection();
    await clock.advanceAsync(0);
    expect(transport.publishCalls).toHaveLength(0);
    await bus.close();
  });

  it('waits for the connection before retrying a failed publish, however long the outage', async () => {
    const clock = new FakeClock();
    const transport = new TestTransport();
    const bus = makeBus({ clock, retry: fastRetry, publishTimeoutMs: 60_000 }, transport);
    await bus.connect();
    transport.publishFailures.push(transportError());
    const publish = track(bus.publish('a.b', {}));
    transport.loseConnection();
    await clock.advanceAsync(30_000);
    // One attempt, then no retry burnt while nothing could be reached.
    expect(transport.publishCalls).toHaveLength(1);
    expect(publish.state).toBe('pending');
    transport.restoreConnection();
    await clock.advanceAsync(10);
    expect(publish.state).toBe('resolved');
    expect(transport.publishCalls).toHaveLength(2);
    await bus.close();
  });

  it('puts an open circuit half-open as soon as the transport reports the connection back', async () => {
    const clock = new FakeClock();
    const transport = new TestTransport();
    const bus = makeBus(
      {
        clock,
        retry: { maxAttempts: 1 },
        circuitBreaker: { failureThreshold: 2, resetTimeoutMs: 60_000, successThreshold: 1 },
      },
      transport,
    );
    await bus.connect();
    transport.publishFailures.push(transportError(), transportError());
    await rejection(bus.publish('a.b', {}));
    await rejection(bus.publish('a.b', {}));
    expect(bus.circuitBreakerStats().state).toBe('open');
    const refused = await rejection(bus.publish('a.b', {}));
    expect(codeOf(refused)).toBe(ErrorCode.CIRCUIT_OPEN);
    // The last failure behind the open circuit is its cause, and named in the message.
    expect((refused as Error).cause).toBeInstanceOf(WatchtowerError);
    expect(((refused as Error).cause as Error).message).toBe('broker went away');
    expect(String(refused)).toContain('last failure: broker went away');

    transport.loseConnection();
    transport.restoreConnection();
    expect(bus.circuitBreakerStats().state).toBe('half-open');
    await bus.publish('a.b', { trial: true });
    expect(bus.circuitBreakerStats().state).toBe('closed');
    await bus.close();
  });

  it('adds no listener per retrying publish to a shared signal (no MaxListeners warning)', async () => {
    const clock = new FakeClock();
    const transport = new TestTransport();
    const bus = makeBus(
      {
        clock,
        retry: { maxAttempts: 3, strategy: 'fixed', minDelayMs: 100, jitter: 0 },
        circuitBreaker: { failureThreshold: 100 },
      },
      transport,
    );
    await bus.connect();
    const warnings: Error[] = [];
    const onWarning = (warning: Error): void => void warnings.push(warning);
    process.on('warning', onWarning);
    try {
      for (let i = 0; i < 40; i++) transport.publishFailures.push(transportError());
      const publishes = Array.from({ length: 40 }, (_, n) => track(bus.publish('a.b', { n })));
      await clock.advanceAsync(50);
      await new Promise((resolve) => setImmediate(resolve));
      await clock.advanceAsync(500);
      expect(publishes.every((p) => p.state === 'resolved')).toBe(true);
      await new Promise((resolve) => setImmediate(resolve));
      expect(warnings.map((w) => w.name)).not.toContain('MaxListenersExceededWarning');
    } finally {
      process.off('warning', onWarning);
    }
    await bus.close();
  });

  it('keeps trying the first connect for connectWaitMs, with backoff', async () => {
    const clock = new FakeClock();
    const transport = new TestTransport();
    transport.connectFailures = 3;
    const bus = makeBus({ clock, connectWaitMs: 30_000 }, transport);
    const connected = track(bus.connect());
    await clock.advanceAsync(29_000);
    expect(connected.state).toBe('resolved');
    expect(transport.connectCalls).toBe(4);
    await bus.close();
  });

  it('fails the first connect with CONNECTION once connectWaitMs has passed', async () => {
    const clock = new FakeClock();
    const transport = new TestTransport();
    transport.connectFailures = 1_000;
    const bus = makeBus({ clock, connectWaitMs: 10_000 }, transport);
    const connected = track(bus.connect());
    await clock.advanceAsync(9_000);
    expect(connected.state).toBe('pending');
    await clock.advanceAsync(1_000);
    expect(connected.state).toBe('rejected');
    expect(codeOf(connected.error)).toBe(ErrorCode.CONNECTION);
    expect(String(connected.error)).toContain('could not connect within connectWaitMs (10000 ms');
    expect(((connected.error as Error).cause as Error).message).toBe('broker unreachable');
    expect(transport.connectCalls).toBeGreaterThan(2);
    await bus.close();
  });

  it('opens the circuit after failureThreshold failed reconnects and half-opens it when the connection is back', async () => {
    const clock = new FakeClock();
    const transport = new TestTransport();
    const bus = makeBus(
      { clock, circuitBreaker: { failureThreshold: 3, successThreshold: 1 } },
      transport,
    );
    await bus.connect();
    transport.loseConnection();
    const failed = (): void => {
      const error = new ConnectionError('connection refused');
      for (const listener of transport.connectionListeners)
        listener({ state: 'reconnect-failed', error });
    };
    failed();
    failed();
    expect(bus.stats().circuitBreaker).toMatchObject({ state: 'closed', failureCount: 2 });
    failed();
    expect(bus.stats().circuitBreaker.state).toBe('open');
    transport.restoreConnection();
    expect(bus.stats().circuitBreaker.state).toBe('half-open');
    await bus.publish('a.b', {});
    expect(bus.stats().circuitBreaker.state).toBe('closed');
    await bus.close();
  });

  it('stops holding publishes when the transport gives its connection up', async () => {
    const clock = new FakeClock();
    const transport = new TestTransport();
    const bus = makeBus({ clock, retry: { maxAttempts: 1 } }, transport);
    await bus.connect();
    transport.loseConnection();
    const held = track(bus.publish('a.b', {}));
    await clock.advanceAsync(1000);
    expect(transport.publishCalls).toHaveLength(0);
    transport.publishFailures.push(new ConnectionError('not connected: given up'));
    for (const listener of transport.connectionListeners) listener({ state: 'given-up' });
    await clock.advanceAsync(0);
    // Sent to the transport at once (which refuses it), not held until publishTimeoutMs.
    expect(transport.publishCalls).toHaveLength(1);
    expect(codeOf(held.error)).toBe(ErrorCode.CONNECTION);
    await bus.close();
  });

  it('fails the first connect at once by default', async () => {
    const transport = new TestTransport();
    transport.connectFailures = 1;
    const bus = makeBus({}, transport);
    expect(codeOf(await rejection(bus.connect()))).toBe(ErrorCode.CONNECTION);
    expect(transport.connectCalls).toBe(1);
    await bus.close();
  });
});

describe('EventBus options', () => {
  it('exports its defaults', () => {
    expect(DEFAULT_EVENT_BUS_OPTIONS).toEqual({
      validation: 'strict',
      publishConcurrency: 256,
      publishTimeoutMs: 30_000,
      connectWaitMs: 0,
      closeTimeoutMs: 10_000,
      concurrency: 1,
      timeoutMs: 30_000,
    });
  });

  const badBusOptions: [string, Record<string, unknown>, string][] = [
    ['no transport', { transport: undefined }, 'transport'],
    ['a transport without publish', { transport: {} }, 'transport'],
    ['publishConcurrency 0', { publishConcurrency: 0 }, 'publishConcurrency'],
    ['publishConcurrency 1.5', { publishConcurrency: 1.5 }, 'publishConcurrency'],
    ['closeTimeoutMs -1', { closeTimeoutMs: -1 }, 'closeTimeoutMs'],
    ['closeTimeoutMs NaN', { closeTimeoutMs: Number.NaN }, 'closeTimeoutMs'],
    ["validation 'x'", { validation: 'x' }, 'validation'],
    ['a numeric source', { source: 5 }, 'source'],
    ['events null', { events: null }, 'events'],
    [
      'circuitBreaker.failureThreshold 0',
      { circuitBreaker: { failureThreshold: 0 } },
      'failureThreshold',
    ],
    [
      'circuitBreaker.resetTimeoutMs -1',
      { circuitBreaker: { resetTimeoutMs: -1 } },
      'resetTimeoutMs',
    ],
    ['backpressure.maxQueueSize 0', { backpressure: { maxQueueSize: 0 } }, 'maxQueueSize'],
    ["backpressure.strategy 'x'", { backpressure: { strategy: 'x' } }, 'strategy'],
    [
      'backpressure.warningThreshold 2',
      { backpressure: { warningThreshold: 2 } },
      'warningThreshold',
    ],
    ['retry.maxAttempts -1', { retry: { maxAttempts: -1 } }, 'maxAttempts'],
    ['retry.maxAttempts 0', { retry: { maxAttempts: 0 } }, 'maxAttempts'],
    [
      'subscriptionDefaults.retry.maxAttempts 0',
      { subscriptionDefaults: { retry: { maxAttempts: 0 } } },
      'maxAttempts',
    ],
    ['retry.jitter 2', { retry: { jitter: 2 } }, 'jitter'],
    ["retry.strategy 'x'", { retry: { strategy: 'x' } }, 'strategy'],
    [
      'subscriptionDefaults.concurrency 0',
      { subscriptionDefaults: { concurrency: 0 } },
      'concurrency',
    ],
    ['subscriptionDefaults.timeoutMs -1', { subscriptionDefaults: { timeoutMs: -1 } }, 'timeoutMs'],
    [
      'subscriptionDefaults.maxInFlight 0',
      { subscriptionDefaults: { maxInFlight: 0 } },
      'maxInFlight',
    ],
    [
      'subscriptionDefaults.retry.minDelayMs -1',
      { subscriptionDefaults: { retry: { minDelayMs: -1 } } },
      'minDelayMs',
    ],
    // An options object given as something else is refused, never replaced by the defaults.
    ['backpressure 500', { backpressure: 500 }, 'backpressure'],
    ['backpressure as an array', { backpressure: [] }, 'backpressure'],
    ['backpressure null', { backpressure: null }, 'backpressure'],
    ['circuitBreaker 5', { circuitBreaker: 5 }, 'circuitBreaker'],
    ["circuitBreaker 'off'", { circuitBreaker: 'off' }, 'circuitBreaker'],
    ['retry 0', { retry: 0 }, 'retry'],
    ['retry false', { retry: false }, 'retry'],
    ['subscriptionDefaults 3', { subscriptionDefaults: 3 }, 'subscriptionDefaults'],
    ['subscriptionDefaults as an array', { subscriptionDefaults: [] }, 'subscriptionDefaults'],
    [
      'subscriptionDefaults.retry 0',
      { subscriptionDefaults: { retry: 0 } },
      'subscriptionDefaults.retry',
    ],
    ['logger 5', { logger: 5 }, 'logger'],
    ['a logger without error()', { logger: { warn: () => undefined } }, 'logger'],
    ['clock 5', { clock: 5 }, 'clock'],
  ];

  it.each(badBusOptions)('rejects %s with a CONFIG error naming the field', (_, options, field) => {
    let error: unknown;
    try {
      new EventBus({
        transport: new MemoryTransport(),
        logger: quietLogger(),
        ...options,
      });
    } catch (caught) {
      error = caught;
    }
    expect(codeOf(error)).toBe(ErrorCode.CONFIG);
    expect((error as Error).message).toContain(`\`${field}\``);
  });

  const badSubscribeOptions: [string, Record<string, unknown>, string][] = [
    ['concurrency 1.5', { concurrency: 1.5 }, 'concurrency'],
    ['concurrency 0', { concurrency: 0 }, 'concurrency'],
    ['timeoutMs NaN', { timeoutMs: Number.NaN }, 'timeoutMs'],
    ['timeoutMs -5', { timeoutMs: -5 }, 'timeoutMs'],
    ['timeoutMs Infinity', { timeoutMs: Number.POSITIVE_INFINITY }, 'timeoutMs'],
    ['maxInFlight 0', { maxInFlight: 0 }, 'maxInFlight'],
    ["group ''", { group: '' }, 'group'],
    ['a numeric group', { group: 7 }, 'group'],
    ["retry.strategy 'x'", { retry: { strategy: 'x' } }, 'strategy'],
    ['retry.maxAttempts 1.5', { retry: { maxAttempts: 1.5 } }, 'maxAttempts'],
    ['retry.maxAttempts 0', { retry: { maxAttempts: 0 } }, 'maxAttempts'],
    [
      'retry.maxDelayMs below minDelayMs',
      { retry: { minDelayMs: 100, maxDelayMs: 10 } },
      'maxDelayMs',
    ],
    // An options object given as something else is refused, never replaced by the defaults.
    ['retry 0', { retry: 0 }, 'retry'],
    ["retry 'none'", { retry: 'none' }, 'retry'],
    ['retry null', { retry: null }, 'retry'],
    ['retry as an array', { retry: [] }, 'retry'],
  ];

  it.each(badSubscribeOptions)(
    'rejects a subscription with %s with a CONFIG error naming the field, subscribing nothing',
    async (_, options, field) => {
      const bus = makeBus();
      const error = await rejection(bus.subscribe('job.*', () => undefined, options));
      expect(codeOf(error)).toBe(ErrorCode.CONFIG);
      expect((error as Error).message).toContain(`\`${field}\``);
      expect(bus.stats().subscriptions).toBe(0);
      await bus.close();
    },
  );

  it.each<[string, unknown]>([
    ['a number', 5],
    ['null', null],
    ['an array', []],
    ['a string', 'fast'],
  ])(
    'rejects subscribe options given as %s with CONFIG, subscribing nothing',
    async (_, options) => {
      const bus = makeBus();
      const error = await rejection(bus.subscribe('job.*', () => undefined, options as never));
      expect(codeOf(error)).toBe(ErrorCode.CONFIG);
      expect((error as Error).message).toContain('`subscribe()`');
      expect(bus.stats().subscriptions).toBe(0);
      await bus.close();
    },
  );

  it('runs a handler with the retries it was given, never the defaults in place of a bad value', async () => {
    const transport = new TestTransport();
    const bus = makeBus({}, transport);
    let calls = 0;
    const handler = (): never => {
      calls++;
      throw new Error('boom');
    };

    expect(codeOf(await rejection(bus.subscribe('job.*', handler, { retry: 0 as never })))).toBe(
      ErrorCode.CONFIG,
    );
    await bus.publish('job.run', {});
    await settle();
    expect(calls).toBe(0);
    await bus.close();
  });

  it('rejects a subscription without event types or handler with CONFIG, and a bad pattern with VALIDATION', async () => {
    const bus = makeBus();
    const noTypes = await rejection(bus.subscribe([], () => undefined));
    expect(codeOf(noTypes)).toBe(ErrorCode.CONFIG);
    expect((noTypes as Error).message).toContain('`eventTypes`');
    const noHandler = await rejection(bus.subscribe('a.b', 'nope' as never));
    expect(codeOf(noHandler)).toBe(ErrorCode.CONFIG);
    expect((noHandler as Error).message).toContain('`handler`');
    expect(codeOf(await rejection(bus.subscribe('a..b', () => undefined)))).toBe(
      ErrorCode.VALIDATION,
    );
    await bus.close();
  });

  it('applies subscriptionDefaults to every subscription unless it sets its own', async () => {
    const transport = new TestTransport();
    const bus = makeBus(
      { subscriptionDefaults: { retry: { maxAttempts: 1 }, concurrency: 2 } },
      transport,
    );
    let calls = 0;
    await bus.subscribe('job.*', () => {
      calls++;
      throw new Error('boom');
    });

    await bus.publish('job.run', {});
    await waitFor(() => transport.deadLetterQueue.size === 1);

    expect(calls).toBe(1);
    await bus.close();
  });
});

describe('EventBus and overlapping patterns in a group', () => {
  it('refuses overlapping patterns in a group with CONFIG, before subscribing', async () => {
    const bus = new EventBus({ transport: new MemoryTransport() });
    await expect(
      bus.subscribe(['m.*', 'm.a'], () => undefined, { group: 'g' }),
    ).rejects.toMatchObject({ code: ErrorCode.CONFIG });
    expect(bus.stats().subscriptions).toBe(0);
    await bus.close();
  });

  it('accepts patterns in a group that cannot match the same event, and handles both', async () => {
    const bus = new EventBus({ transport: new MemoryTransport() });
    const seen: string[] = [];
    await bus.subscribe(['m.*', 'n.>'], (event) => void seen.push(event.type), { group: 'g' });
    await bus.publish('m.a', {});
    await bus.publish('n.b.c', {});
    await waitFor(() => seen.length === 2);
    expect(seen.sort()).toEqual(['m.a', 'n.b.c']);
    await bus.close();
  });
});

describe('EventBus and transport background errors', () => {
  class NoisyTransport extends MemoryTransport {
    readonly listeners = new Set<(error: WatchtowerError) => void>();
    override on<K extends keyof TransportErrorEvents>(
      name: K,
      listener: (...args: TransportErrorEvents[K]) => void,
    ): () => void {
      if (name !== 'error') return super.on(name, listener);
      const onError = listener as (error: WatchtowerError) => void;
      this.listeners.add(onError);
      return () => this.listeners.delete(onError);
    }
    fail(error: WatchtowerError): void {
      for (const listener of this.listeners) listener(error);
    }
  }

  it('reports them on its error listeners, and stops listening on close', async () => {
    const transport = new NoisyTransport();
    const bus = new EventBus({ transport });
    const reported: string[] = [];
    bus.on('error', (error) => reported.push(error.code));
    transport.fail(new ConnectionError('read failed'));
    expect(reported).toEqual([ErrorCode.CONNECTION]);
    await bus.close();
    expect(transport.listeners.size).toBe(0);
  });

  it('logs them when nobody listens', async () => {
    const transport = new NoisyTransport();
    const logged: string[] = [];
    const bus = new EventBus({
      transport,
      logger: { warn: () => undefined, error: (_details, message) => logged.push(message) },
    });
    transport.fail(new ConnectionError('reclaim failed'));
    expect(logged).toEqual(['reclaim failed']);
    await bus.close();
  });
});

describe('EventBus publish through a transport receipt (publishTo)', () => {
  /**
   * A TestTransport with `publishTo`: each call is recorded, and settles its receipt from the
   * outcome of `publish` (manual confirms, failures on demand), or as `report` says. The bus
   * uses it once open (before that, a publish waits in its queue for the connection).
   */
  class ReceiptTransport extends TestTransport {
    readonly receiptCalls: Event[] = [];
    /** Instead of following `publish`: what to do with the receipt, right away. */
    report: ((receipt: PublishReceipt) => void) | undefined;

    publishTo(event: Event, receipt: PublishReceipt): void {
      this.receiptCalls.push(event);
      if (this.report !== undefined) {
        this.report(receipt);
        return;
      }
      this.publish(event).then(
        () => receipt.published(),
        (error: unknown) => receipt.failed(error),
      );
    }
  }

  /** A bus on `transport`, connected: the state in which it uses publishTo. */
  async function openBus(
    options: Partial<EventBusOptions>,
    transport: Transport,
  ): Promise<EventBus> {
    const bus = makeBus(options, transport);
    await bus.connect();
    return bus;
  }

  it('sends through publishTo and resolves when the receipt says published', async () => {
    const transport = new ReceiptTransport();
    transport.manual = true;
    const bus = await openBus({}, transport);

    const published = track(bus.publish('a.b', { n: 1 }));
    await settle();
    expect(transport.receiptCalls.map((e) => e.payload)).toEqual([{ n: 1 }]);
    expect(published.state).toBe('pending');
    expect(bus.stats().publishesInFlight).toBe(1);

    transport.confirmNext();
    await published.promise;
    expect(published.state).toBe('resolved');
    expect(bus.stats()).toMatchObject({ published: 1, publishFailed: 0, publishesInFlight: 0 });
    await bus.close();
  });

  it('resolves when the receipt is told before publishTo returns', async () => {
    const transport = new ReceiptTransport();
    transport.report = (receipt) => receipt.published();
    const bus = await openBus({}, transport);

    await bus.publish('a.b', {});
    expect(transport.receiptCalls).toHaveLength(1);
    expect(bus.stats()).toMatchObject({ published: 1, publishesInFlight: 0 });
    await bus.close();
  });

  it('retries a retryable failure the receipt reports, then resolves', async () => {
    const transport = new ReceiptTransport();
    transport.publishFailures.push(new ConnectionError('down'));
    const bus = await openBus({ retry: fastRetry }, transport);

    await bus.publish('a.b', { n: 2 });
    // The first attempt went through publishTo, the retry through publish.
    expect(transport.receiptCalls).toHaveLength(1);
    expect(transport.publishCalls).toHaveLength(2);
    expect(transport.confirmed.map((e) => e.payload)).toEqual([{ n: 2 }]);
    expect(bus.stats()).toMatchObject({ published: 1, publishFailed: 0 });
    await bus.close();
  });

  it('rejects with a non-retryable error the receipt reports, without retrying', async () => {
    const transport = new ReceiptTransport();
    transport.publishFailures.push(new ValidationError('refused by the broker'));
    const bus = await openBus({ retry: fastRetry }, transport);

    const error = await rejection(bus.publish('a.b', {}));
    expect(codeOf(error)).toBe(ErrorCode.VALIDATION);
    expect(transport.publishCalls).toHaveLength(1);
    expect(bus.stats()).toMatchObject({ published: 0, publishFailed: 1, publishesInFlight: 0 });
    await bus.close();
  });

  it('takes the first report of a receipt and ignores any later one', async () => {
    const transport = new ReceiptTransport();
    transport.report = (receipt) => {
      receipt.published();
      receipt.failed(new ConnectionError('too late'));
      receipt.published();
    };
    const bus = await openBus({}, transport);

    await bus.publish('a.b', {});
    await settle();
    expect(bus.stats()).toMatchObject({ published: 1, publishFailed: 0, publishesInFlight: 0 });
    expect(bus.stats().circuitBreaker).toMatchObject({ failureCount: 0, successCount: 1 });
    expect(bus.stats().circuitBreaker.lastFailureAt).toBeUndefined();
    await bus.close();
  });

  it('fails the publish with what a publishTo that breaks its contract throws', async () => {
    const transport = new ReceiptTransport();
    transport.report = () => {
      throw new ValidationError('thrown instead of reported');
    };
    const bus = await openBus({}, transport);

    const error = await rejection(bus.publish('a.b', {}));
    expect((error as Error).message).toBe('thrown instead of reported');
    expect(bus.stats()).toMatchObject({ publishFailed: 1, publishesInFlight: 0 });
    await bus.close();
  });

  it('counts receipt failures against the circuit breaker, which then keeps publishTo uncalled', async () => {
    const transport = new ReceiptTransport();
    for (let i = 0; i < 2; i++) transport.publishFailures.push(new ConnectionError('down'));
    const bus = await openBus(
      {
        retry: { maxAttempts: 1 },
        circuitBreaker: { failureThreshold: 2, resetTimeoutMs: 60_000 },
      },
      transport,
    );

    for (let i = 0; i < 2; i++) {
      expect(codeOf(await rejection(bus.publish('a.b', {})))).toBe(ErrorCode.CONNECTION);
    }
    expect(codeOf(await rejection(bus.publish('a.b', {})))).toBe(ErrorCode.CIRCUIT_OPEN);
    expect(transport.receiptCalls).toHaveLength(2);
    await bus.close();
  });

  it('rejects a publish close() cuts off with CLOSED, and a late receipt changes nothing', async () => {
    const transport = new ReceiptTransport();
    let late: PublishReceipt | undefined;
    transport.report = (receipt) => {
      late = receipt;
    };
    const bus = await openBus({ closeTimeoutMs: 50 }, transport);

    const published = track(bus.publish('a.b', {}));
    await bus.close();
    await published.promise;
    expect(codeOf(published.error)).toBe(ErrorCode.CLOSED);
    expect(transport.receiptCalls).toHaveLength(1);
    late?.published();
    expect(bus.stats()).toMatchObject({ published: 0, publishesInFlight: 0 });
  });
});

describe('EventBus on a transport that offers deliveries as they arrive (receive)', () => {
  /**
   * A transport whose subscription is a DeliveryBuffer with `receive`, as the broker
   * transports build theirs: `arrive()` pushes an event as the broker's callback would.
   */
  class ArrivalTransport extends TestTransport {
    buffer: DeliveryBuffer<Delivery> | undefined;
    receivers: (DeliveryReceiver | undefined)[] = [];
    readonly settled: string[] = [];

    override subscribe(pattern: string): Promise<TransportSubscription> {
      const buffer = new DeliveryBuffer<Delivery>();
      this.buffer = buffer;
      return Promise.resolve({
        pattern,
        unsubscribe: () => {
          buffer.end();
          return Promise.resolve();
        },
        [Symbol.asyncIterator]: () => buffer,
        tryNext: () => buffer.tryNext(),
        receive: (receiver) => {
          this.receivers.push(receiver);
          buffer.receive(receiver);
        },
      });
    }

    /** Pushes an event with payload `n`; what the buffer's push returned. */
    arrive(n: number): boolean {
      const buffer = this.buffer as DeliveryBuffer<Delivery>;
      const delivery: EventDelivery = {
        kind: 'event',
        event: createEvent('order.placed', n),
        attempt: 1,
        origin: 'order.placed',
        ack: () => {
          if (buffer.settled(delivery)) this.settled.push(`ack ${n}`);
          return Promise.resolve();
        },
        nack: () => {
          if (buffer.settled(delivery)) this.settled.push(`nack ${n}`);
          return Promise.resolve();
        },
      };
      return buffer.push(delivery);
    }
  }

  it('runs the handler of an event that arrives with a slot free within the push, and acks it', async () => {
    const transport = new ArrivalTransport();
    const bus = makeBus({}, transport);
    const handled: unknown[] = [];
    await bus.subscribe('order.placed', (event) => {
      handled.push(event.payload);
    });
    await settle();
    expect(transport.arrive(1)).toBe(true);
    expect(handled).toEqual([1]);
    expect(transport.settled).toEqual(['ack 1']);
    expect(transport.arrive(2)).toBe(true);
    expect(handled).toEqual([1, 2]);
    // Counted as handled once the ack's promise resolves.
    await settle();
    expect(bus.stats()).toMatchObject({ received: 2, handled: 2 });
    await bus.close();
  });

  it('keeps arrival order and the concurrency limit while a handler is still running', async () => {
    const transport = new ArrivalTransport();
    const bus = makeBus({}, transport);
    const first = gate();
    const started: unknown[] = [];
    let running = 0;
    let mostRunning = 0;
    await bus.subscribe(
      'order.placed',
      async (event) => {
        started.push(event.payload);
        running++;
        mostRunning = Math.max(mostRunning, running);
        if (event.payload === 1) await first.promise;
        running--;
      },
      { concurrency: 1 },
    );
    await settle();
    transport.arrive(1);
    transport.arrive(2);
    transport.arrive(3);
    expect(started).toEqual([1]);
    first.open();
    await waitFor(() => transport.settled.length === 3);
    expect(started).toEqual([1, 2, 3]);
    expect(transport.settled).toEqual(['ack 1', 'ack 2', 'ack 3']);
    expect(mostRunning).toBe(1);
    // Caught up again: the next arrival is handled within the push.
    transport.arrive(4);
    expect(started).toEqual([1, 2, 3, 4]);
    await bus.close();
  });

  it('takes nothing once the subscription stopped, and clears its receiver', async () => {
    const transport = new ArrivalTransport();
    const bus = makeBus({}, transport);
    const handled: unknown[] = [];
    const handle = await bus.subscribe('order.placed', (event) => {
      handled.push(event.payload);
    });
    await settle();
    await handle.unsubscribe();
    expect(transport.arrive(1)).toBe(false);
    expect(handled).toEqual([]);
    expect(transport.receivers.at(-1)).toBeUndefined();
    await bus.close();
  });
});

import { randomUUID } from 'node:crypto';
import { afterEach, describe, expect, it } from 'vitest';
import {
  EventBus,
  NonRetryableError,
  createEvent,
  type DeadLetter,
  type Delivery,
  type Event,
  type EventBusOptions,
  type Logger,
  type Transport,
  type TransportCapabilities,
  type WatchtowerError,
} from '@watchtower/core';
import { waitFor } from '@watchtower/core/testing';

/** How a transport plugs into the conformance suite. */
export interface ConformanceHarness {
  /** Shown in the test names. */
  name: string;
  /**
   * A new client of the broker. Transports created with the same `namespace` share their
   * topics (prefix, stream, exchange); different namespaces never see each other. Each test
   * uses a fresh namespace. The suite connects and closes what it creates.
   */
  createTransport(namespace: string): Transport | Promise<Transport>;
  /**
   * Puts raw bytes on the wire as if published under `type`. Without it the malformed-bytes
   * case is skipped (say why in the transport's docs).
   */
  publishRaw?(namespace: string, type: string, bytes: Uint8Array): Promise<void>;
  /**
   * Stops the broker and starts it again (same address, same data). Without it, or without
   * the `reconnect` capability, the reconnect case is skipped.
   */
  restartBroker?(): Promise<void>;
  /** Removes what a test left on the broker (streams, queues, keys) for `namespace`. */
  cleanup?(namespace: string): Promise<void>;
  /**
   * Capabilities to test against.
   * @defaultValue the `info.capabilities` of a transport the suite creates
   */
  capabilities?: TransportCapabilities;
  /**
   * Longest wait for something to arrive.
   * @defaultValue 10000
   */
  timeoutMs?: number;
  /**
   * Longest wait for a delivery that a closed client never acked to be delivered again
   * (ack wait, claim idle time). Tests skip nothing for it; set the transport's own timers
   * short in `createTransport`.
   * @defaultValue `timeoutMs`
   */
  redeliveryTimeoutMs?: number;
}

/** A bus created for a test, with the errors it reported. */
interface TestBus {
  bus: EventBus;
  transport: Transport;
  errors: WatchtowerError[];
}

const quietLogger: Logger = { warn: () => undefined, error: () => undefined };

/**
 * Registers the contract tests for one transport (vitest `describe`/`it`). Cases a transport
 * cannot pass by design are skipped only by its declared capabilities.
 */
export function describeTransportConformance(harness: ConformanceHarness): void {
  const timeoutMs = harness.timeoutMs ?? 10_000;
  const redeliveryTimeoutMs = harness.redeliveryTimeoutMs ?? timeoutMs;
  const caseTimeout = timeoutMs * 3 + redeliveryTimeoutMs;

  describe(`transport conformance: ${harness.name}`, () => {
    let namespace = '';
    let created: TestBus[] = [];
    let transports: Transport[] = [];
    let capabilities: TransportCapabilities | undefined = harness.capabilities;

    async function newTransport(): Promise<Transport> {
      const transport = await harness.createTransport(namespace);
      transports.push(transport);
      await transport.connect();
      capabilities ??= transport.info.capabilities;
      return transport;
    }

    async function newBus(options: Omit<EventBusOptions, 'transport'> = {}): Promise<TestBus> {
      const transport = await newTransport();
      const bus = new EventBus({
        transport,
        logger: quietLogger,
        subscriptionDefaults: { retry: { minDelayMs: 20, maxDelayMs: 200, maxAttempts: 3 } },
        retry: { minDelayMs: 50, maxDelayMs: 1000, maxAttempts: 5 },
        ...options,
      });
      const entry: TestBus = { bus, transport, errors: [] };
      bus.on('error', (error) => entry.errors.push(error));
      created.push(entry);
      return entry;
    }

    function type(suffix: string): string {
      return `conf.${suffix}`;
    }

    /** Capability check made before the case runs, so skips are visible as skips. */
    async function requires(
      ctx: { skip: (note?: string) => void },
      ...flags: (keyof TransportCapabilities)[]
    ) {
      if (capabilities === undefined) {
        const probe = await harness.createTransport(`${namespace}probe`);
        capabilities = probe.info.capabilities;
        await probe.close({ timeoutMs: 1000 });
      }
      const missing = flags.filter((flag) => !(capabilities as TransportCapabilities)[flag]);
      if (missing.length > 0) ctx.skip(`${harness.name} does not declare ${missing.join(', ')}`);
    }

    function expectNoBusErrors(...buses: TestBus[]): void {
      for (const { errors } of buses)
        expect(errors.map((e) => `${e.code}: ${e.message}`)).toEqual([]);
    }

    afterEach(async () => {
      await Promise.allSettled(created.map(({ bus }) => bus.close({ timeoutMs: 2000 })));
      await Promise.allSettled(transports.map((transport) => transport.close({ timeoutMs: 2000 })));
      created = [];
      transports = [];
      if (harness.cleanup !== undefined) await harness.cleanup(namespace);
    });

    function fresh(): void {
      namespace = `wt${randomUUID().replaceAll('-', '').slice(0, 12)}`;
    }

    const test = (
      name: string,
      body: (ctx: { skip: (note?: string) => void }) => Promise<void>,
    ): void => {
      it(
        name,
        async (ctx) => {
          fresh();
          await body(ctx);
        },
        caseTimeout,
      );
    };

    test('publishes events and delivers each one to a subscriber, payload and ids intact', async () => {
      const sub = await newBus();
      const pub = await newBus();
      const seen: Event[] = [];
      await sub.bus.subscribe(type('basic'), (event) => {
        seen.push(event);
      });
      const sent: Event[] = [];
      for (let i = 0; i < 50; i++) {
        const event = createEvent(type('basic'), { n: i, name: `event ${i}` });
        sent.push(event);
        await pub.bus.publish(event);
      }
      await waitFor(() => seen.length >= 50, { timeoutMs, message: 'all 50 events' });
      const byId = new Map(seen.map((event) => [event.id, event]));
      expect(byId.size).toBe(50);
      for (const event of sent) {
        expect(byId.get(event.id)?.payload).toEqual(event.payload);
        expect(byId.get(event.id)?.type).toBe(event.type);
        expect(byId.get(event.id)?.timestamp).toBe(event.timestamp);
      }
      expectNoBusErrors(sub, pub);
    });

    test('delivers every event to each of several independent subscribers', async () => {
      const subscribers = await Promise.all([newBus(), newBus(), newBus()]);
      const seen = subscribers.map(() => new Set<string>());
      for (const [i, sub] of subscribers.entries()) {
        await sub.bus.subscribe(type('fanout'), (event) => {
          seen[i]?.add(event.id);
        });
      }
      const pub = await newBus();
      const ids: string[] = [];
      for (let i = 0; i < 30; i++) {
        const event = createEvent(type('fanout'), { i });
        ids.push(event.id);
        await pub.bus.publish(event);
      }
      await waitFor(() => seen.every((set) => set.size >= 30), {
        timeoutMs,
        message: 'each subscriber got all 30',
      });
      for (const set of seen) expect([...set].sort()).toEqual([...ids].sort());
      expectNoBusErrors(pub, ...subscribers);
    });

    test('routes many event types each to its own subscriber and nowhere else', async () => {
      const sub = await newBus();
      const pub = await newBus();
      const types = Array.from({ length: 10 }, (_, i) => type(`topic${i}.created`));
      const seen = new Map<string, string[]>(types.map((t) => [t, []]));
      for (const t of types) {
        await sub.bus.subscribe(t, (event) => {
          seen.get(t)?.push(event.type);
        });
      }
      for (let round = 0; round < 5; round++) {
        await Promise.all(types.map((t) => pub.bus.publish(t, { round })));
      }
      await waitFor(() => [...seen.values()].every((list) => list.length >= 5), { timeoutMs });
      for (const [t, list] of seen) expect(list).toEqual(Array<string>(5).fill(t));
      expectNoBusErrors(sub, pub);
    });

    test('redelivers an event whose handler failed, with attempt 2, and handles it once', async () => {
      const sub = await newBus();
      const attempts: number[] = [];
      let handled = 0;
      await sub.bus.subscribe(type('resend'), (_event, context) => {
        attempts.push(context.attempt);
        if (context.attempt === 1) throw new Error('first try fails');
        handled++;
      });
      const pub = await newBus();
      await pub.bus.publish(type('resend'), { ok: true });
      await waitFor(() => handled === 1, { timeoutMs, message: 'handled on the second attempt' });
      expect(attempts).toEqual([1, 2]);
      expect(sub.bus.stats().deadLettered).toBe(0);
      expectNoBusErrors(sub, pub);
    });

    test('redelivers a nacked delivery with a higher attempt number', async (ctx) => {
      await requires(ctx, 'redelivery');
      const transport = await newTransport();
      const subscription = await transport.subscribe(type('nack'));
      const pub = await newBus();
      const iterator = subscription[Symbol.asyncIterator]();
      const published = pub.bus.publish(type('nack'), { n: 1 });
      const first = await nextWithin(iterator, timeoutMs);
      await published;
      expect(first.attempt).toBe(1);
      await first.nack();
      const second = await nextWithin(iterator, timeoutMs);
      expect(second.kind).toBe('event');
      expect(second.kind === 'event' && first.kind === 'event' ? second.event.id : '').toBe(
        first.kind === 'event' ? first.event.id : 'x',
      );
      expect(second.attempt).toBe(2);
      await second.ack();
      await subscription.unsubscribe();
    });

    test('delivers again to the group a delivery that a closed client never acked', async (ctx) => {
      await requires(ctx, 'redelivery', 'consumerGroups');
      const group = `g-${namespace}`;
      const leaving = await newTransport();
      const leavingSub = await leaving.subscribe(type('noack'), { group });
      const staying = await newBus();
      const seen: Event[] = [];
      const pub = await newBus();
      const event = createEvent(type('noack'), { n: 1 });
      const published = pub.bus.publish(event);
      const taken = await nextWithin(leavingSub[Symbol.asyncIterator](), timeoutMs);
      await published;
      expect(taken.kind === 'event' && taken.event.id).toBe(event.id);
      await staying.bus.subscribe(
        type('noack'),
        (e) => {
          seen.push(e);
        },
        { group },
      );
      await leaving.close({ timeoutMs: 100 });
      await waitFor(() => seen.some((e) => e.id === event.id), {
        timeoutMs: redeliveryTimeoutMs,
        message: 'the unacked event delivered to the other member',
      });
      expectNoBusErrors(staying, pub);
    });

    test('keeps delivering to a group after one member unsubscribes, losing nothing', async (ctx) => {
      await requires(ctx, 'consumerGroups');
      const group = `g-${namespace}`;
      const first = await newBus();
      const second = await newBus();
      const seen = new Set<string>();
      let firstCount = 0;
      const firstHandle = await first.bus.subscribe(
        type('leave'),
        (event) => {
          firstCount++;
          seen.add(event.id);
        },
        { group },
      );
      await second.bus.subscribe(
        type('leave'),
        (event) => {
          seen.add(event.id);
        },
        { group },
      );
      const pub = await newBus();
      const ids: string[] = [];
      for (let i = 0; i < 100; i++) {
        const event = createEvent(type('leave'), { i });
        ids.push(event.id);
        await pub.bus.publish(event);
        if (i === 30) {
          await waitFor(() => seen.size >= 10, { timeoutMs });
          await first.bus.unsubscribe(firstHandle);
        }
      }
      await waitFor(() => seen.size >= 100, {
        timeoutMs: Math.max(timeoutMs, redeliveryTimeoutMs),
        message: `all 100 events (got ${seen.size})`,
      });
      expect(ids.every((id) => seen.has(id))).toBe(true);
      expect(firstCount).toBeGreaterThan(0);
      expectNoBusErrors(first, second, pub);
    });

    test('closes many subscriptions and the bus concurrently, and close is idempotent', async () => {
      const sub = await newBus();
      const handles = await Promise.all(
        Array.from({ length: 10 }, (_, i) => sub.bus.subscribe(type(`close${i}`), () => undefined)),
      );
      const results = await Promise.allSettled([
        ...handles.map((handle) => handle.unsubscribe()),
        ...handles.map((handle) => sub.bus.unsubscribe(handle)),
      ]);
      expect(results.filter((r) => r.status === 'rejected')).toEqual([]);
      const closing = sub.bus.close();
      expect(sub.bus.close()).toBe(closing);
      await Promise.all([closing, sub.bus.close()]);
      await expect(sub.bus.publish(type('close0'), {})).rejects.toMatchObject({ code: 'CLOSED' });
      expect(sub.bus.stats().subscriptions).toBe(0);
      expectNoBusErrors(sub);
    });

    test('goes on delivering after handlers fail, dead-lettering the failures', async () => {
      const sub = await newBus();
      const handled: number[] = [];
      await sub.bus.subscribe(type('errors'), (event) => {
        const n = (event.payload as { n: number }).n;
        if (n % 2 === 1) throw new NonRetryableError(`odd ${n}`);
        handled.push(n);
      });
      const pub = await newBus();
      for (let n = 0; n < 20; n++) await pub.bus.publish(type('errors'), { n });
      await waitFor(() => handled.length >= 10 && sub.bus.stats().deadLettered >= 10, {
        timeoutMs,
      });
      expect(handled.sort((a, b) => a - b)).toEqual([0, 2, 4, 6, 8, 10, 12, 14, 16, 18]);
      expectNoBusErrors(sub, pub);
    });

    test('delivers the events of one type in publish order to one subscriber', async (ctx) => {
      await requires(ctx, 'ordering');
      const sub = await newBus();
      const order: number[] = [];
      await sub.bus.subscribe(type('order'), (event) => {
        order.push((event.payload as { n: number }).n);
      });
      const pub = await newBus();
      for (let n = 0; n < 200; n++) await pub.bus.publish(type('order'), { n });
      await waitFor(() => order.length >= 200, { timeoutMs });
      expect(order).toEqual(Array.from({ length: 200 }, (_, n) => n));
      expectNoBusErrors(sub, pub);
    });

    test('sends every accepted event before close resolves', async () => {
      const sub = await newBus();
      const seen = new Set<string>();
      await sub.bus.subscribe(type('pending'), (event) => {
        seen.add(event.id);
      });
      const pub = await newBus();
      const events = Array.from({ length: 200 }, (_, i) => createEvent(type('pending'), { i }));
      const publishes = events.map((event) => pub.bus.publish(event));
      await pub.bus.close({ timeoutMs });
      const outcomes = await Promise.allSettled(publishes);
      expect(outcomes.filter((o) => o.status === 'rejected')).toEqual([]);
      await waitFor(() => seen.size >= 200, { timeoutMs, message: 'all 200 events after close' });
      expectNoBusErrors(sub, pub);
    });

    test('delivers dotted types through * and > wildcards, including types first published after subscribing', async (ctx) => {
      await requires(ctx, 'wildcards');
      const sub = await newBus();
      const star: string[] = [];
      const rest: string[] = [];
      await sub.bus.subscribe(type('wild.*'), (event) => {
        star.push(event.type);
      });
      await sub.bus.subscribe(type('wild.>'), (event) => {
        rest.push(event.type);
      });
      const pub = await newBus();
      const published = [
        type('wild.a'),
        type('wild.b.c'),
        type('wild.new.deep.type'),
        type('other.a'),
      ];
      for (const t of published) await pub.bus.publish(t, { t });
      await waitFor(() => star.length >= 1 && rest.length >= 3, { timeoutMs });
      // Give a wrongly routed event the chance to show up before asserting exact lists.
      await pub.bus.publish(type('wild.z'), {});
      await waitFor(() => star.includes(type('wild.z')) && rest.includes(type('wild.z')), {
        timeoutMs,
      });
      expect(star.sort()).toEqual([type('wild.a'), type('wild.z')]);
      expect(rest.sort()).toEqual(
        [type('wild.a'), type('wild.b.c'), type('wild.new.deep.type'), type('wild.z')].sort(),
      );
      expectNoBusErrors(sub, pub);
    });

    test('gives each event to one member of a group and every event to each group', async (ctx) => {
      await requires(ctx, 'consumerGroups');
      const members = await Promise.all([newBus(), newBus(), newBus()]);
      const seen = members.map(() => [] as string[]);
      const groups = [`a-${namespace}`, `a-${namespace}`, `b-${namespace}`];
      for (const [i, member] of members.entries()) {
        await member.bus.subscribe(
          type('groups'),
          (event) => {
            seen[i]?.push(event.id);
          },
          { group: groups[i] as string },
        );
      }
      const pub = await newBus();
      const ids: string[] = [];
      for (let i = 0; i < 60; i++) {
        const event = createEvent(type('groups'), { i });
        ids.push(event.id);
        await pub.bus.publish(event);
      }
      const [a1, a2, b] = seen as [string[], string[], string[]];
      await waitFor(() => a1.length + a2.length >= 60 && b.length >= 60, { timeoutMs });
      expect(a1.filter((id) => a2.includes(id))).toEqual([]);
      expect([...a1, ...a2].sort()).toEqual([...ids].sort());
      expect([...b].sort()).toEqual([...ids].sort());
      expectNoBusErrors(pub, ...members);
    });

    test('lets a new subscriber read events published before it subscribed', async (ctx) => {
      await requires(ctx, 'replay');
      const pub = await newBus();
      const ids: string[] = [];
      for (let i = 0; i < 5; i++) {
        const event = createEvent(type('replay'), { i });
        ids.push(event.id);
        await pub.bus.publish(event);
      }
      const sub = await newBus();
      const seen: string[] = [];
      await sub.bus.subscribe(
        type('replay'),
        (event) => {
          seen.push(event.id);
        },
        { startFrom: 'earliest' },
      );
      await waitFor(() => seen.length >= 5, { timeoutMs });
      expect(seen).toEqual(ids);
      expectNoBusErrors(sub, pub);
    });

    test('resumes delivery after the broker restarts', async (ctx) => {
      await requires(ctx, 'reconnect');
      if (harness.restartBroker === undefined) ctx.skip('the harness cannot restart its broker');
      const sub = await newBus();
      const seen = new Set<number>();
      await sub.bus.subscribe(type('restart'), (event) => {
        seen.add((event.payload as { n: number }).n);
      });
      const pub = await newBus();
      await pub.bus.publish(type('restart'), { n: 1 });
      await waitFor(() => seen.has(1), { timeoutMs });
      await (harness.restartBroker as () => Promise<void>)();
      // Publishing may fail until the client has reconnected; the bus retries, and the
      // test keeps publishing until one after the restart arrives.
      let n = 2;
      await waitFor(
        async () => {
          await pub.bus.publish(type('restart'), { n }).catch(() => undefined);
          n++;
          return [...seen].some((value) => value >= 2);
        },
        {
          timeoutMs: timeoutMs * 3,
          intervalMs: 250,
          message: 'an event published after the restart',
        },
      );
      expect((await sub.bus.healthCheck()).healthy).toBe(true);
      expect((await pub.bus.healthCheck()).healthy).toBe(true);
    });

    test('dead-letters an event after its retries with the reason, and consumeDlq returns it', async () => {
      const sub = await newBus();
      let calls = 0;
      await sub.bus.subscribe(
        type('dlq.target'),
        () => {
          calls++;
          throw new Error('always fails');
        },
        { retry: { maxAttempts: 2, minDelayMs: 10, maxDelayMs: 50 }, name: 'dlq-case' },
      );
      const pub = await newBus();
      const event = createEvent(type('dlq.target'), { important: true });
      await pub.bus.publish(event);
      await waitFor(() => sub.bus.stats().deadLettered >= 1, {
        timeoutMs,
        message: 'a dead letter',
      });
      expect(calls).toBe(3);
      const letters: DeadLetter[] = [];
      const reader = await newTransport();
      const handle = await reader.consumeDlq((letter) => {
        letters.push(letter);
      });
      await waitFor(() => letters.some((letter) => letter.event?.id === event.id), {
        timeoutMs,
        message: 'the dead letter through consumeDlq',
      });
      await handle.unsubscribe();
      const letter = letters.find((l) => l.event?.id === event.id) as DeadLetter;
      expect(letter.event?.payload).toEqual({ important: true });
      expect(letter.reason).toMatchObject({
        message: 'always fails',
        code: 'HANDLER_FAILED',
        attempts: 3,
        originalType: type('dlq.target'),
        subscription: 'dlq-case',
      });
      expect(Number.isNaN(Date.parse(letter.reason.failedAt))).toBe(false);
      expectNoBusErrors(sub, pub);
    });

    test('dead-letters malformed bytes and keeps the subscription running', async (ctx) => {
      if (harness.publishRaw === undefined)
        ctx.skip('the harness cannot put raw bytes on the wire');
      const sub = await newBus();
      const seen: string[] = [];
      await sub.bus.subscribe(type('raw'), (event) => {
        seen.push(event.id);
      });
      await newTransport();
      const garbage = new TextEncoder().encode('{"this is": not json');
      await (harness.publishRaw as NonNullable<typeof harness.publishRaw>)(
        namespace,
        type('raw'),
        garbage,
      );
      const pub = await newBus();
      const valid = createEvent(type('raw'), { fine: true });
      await pub.bus.publish(valid);
      await waitFor(() => seen.includes(valid.id) && sub.bus.stats().deadLettered >= 1, {
        timeoutMs,
      });
      const letters: DeadLetter[] = [];
      const handle = await sub.transport.consumeDlq((letter) => {
        letters.push(letter);
      });
      await waitFor(() => letters.length >= 1, { timeoutMs });
      await handle.unsubscribe();
      expect(letters[0]?.event).toBeUndefined();
      expect(new TextDecoder().decode(letters[0]?.raw)).toBe('{"this is": not json');
      expect(letters[0]?.reason.code).toBe('SERIALIZATION');
      expect(sub.bus.stats().malformed).toBe(1);
      expectNoBusErrors(sub, pub);
    });

    test('round-trips large and unicode payloads', async () => {
      const sub = await newBus();
      const seen: Event[] = [];
      await sub.bus.subscribe(type('big'), (event) => {
        seen.push(event);
      });
      const pub = await newBus();
      const unicode = {
        text: 'héllo wörld ✓ 日本語 עברית 😀🚀',
        nested: { emoji: '👩‍👩‍👧‍👦', zero: '\u0000' },
      };
      const large = {
        blob: 'x'.repeat(512 * 1024),
        list: Array.from({ length: 1000 }, (_, i) => ({ i })),
      };
      await pub.bus.publish(type('big'), unicode);
      await pub.bus.publish(type('big'), large);
      await waitFor(() => seen.length >= 2, { timeoutMs });
      expect(seen.map((event) => event.payload)).toEqual([unicode, large]);
      expectNoBusErrors(sub, pub);
    });

    test('round-trips headers and metadata', async (ctx) => {
      await requires(ctx, 'headers');
      const sub = await newBus();
      const seen: Event[] = [];
      await sub.bus.subscribe(type('headers'), (event) => {
        seen.push(event);
      });
      const pub = await newBus();
      const event = createEvent(
        type('headers'),
        { a: 1 },
        {
          source: 'conformance',
          correlationId: randomUUID(),
          causationId: randomUUID(),
          headers: {
            traceparent: '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01',
            tracestate: 'vendor=value',
            'x-custom': 'ünïcode',
          },
        },
      );
      await pub.bus.publish(event);
      await waitFor(() => seen.length >= 1, { timeoutMs });
      expect(seen[0]).toEqual(event);
      expectNoBusErrors(sub, pub);
    });

    test('holds back a delayed nack until its delay has passed', async (ctx) => {
      await requires(ctx, 'redelivery', 'delayedRetry');
      const transport = await newTransport();
      const subscription = await transport.subscribe(type('delay'));
      const iterator = subscription[Symbol.asyncIterator]();
      const pub = await newBus();
      const published = pub.bus.publish(type('delay'), {});
      const first = await nextWithin(iterator, timeoutMs);
      await published;
      const delayMs = 1500;
      const nackedAt = Date.now();
      await first.nack({ delayMs });
      const second = await nextWithin(iterator, timeoutMs + delayMs);
      // A lower bound only: redelivery before the delay breaks the contract; later is fine.
      expect(Date.now() - nackedAt).toBeGreaterThanOrEqual(delayMs - 50);
      expect(second.attempt).toBe(2);
      await second.ack();
      await subscription.unsubscribe();
    });

    test('refuses a misspelt option of publish, subscribe, nack, consumeDlq and close with CONFIG naming it, instead of ignoring it', async () => {
      const transport = await newTransport();
      const refused = { code: 'CONFIG', message: expect.stringContaining('`grup`') as unknown };
      const event = createEvent(type('options'), { n: 1 });
      // As a JavaScript caller passes it: no type check, so the transport must refuse it itself.
      const misspelt = { grup: 'workers' } as never;
      await expect(transport.subscribe(type('options'), misspelt)).rejects.toMatchObject(refused);
      await expect(transport.publish(event, misspelt)).rejects.toMatchObject(refused);
      await expect(transport.consumeDlq(() => undefined, misspelt)).rejects.toMatchObject(refused);
      // The event was not published by the refused call: a subscriber sees only the next one.
      const subscription = await transport.subscribe(type('options'));
      const iterator = subscription[Symbol.asyncIterator]();
      await transport.publish(event);
      const delivery = await nextWithin(iterator, timeoutMs);
      await expect(delivery.nack(misspelt)).rejects.toMatchObject(refused);
      await delivery.ack();
      await subscription.unsubscribe();
      await expect(transport.close(misspelt)).rejects.toMatchObject(refused);
      // Refused, so still open.
      expect((await transport.healthCheck()).healthy).toBe(true);
    });

    test('reports health while connected and refuses work after close with CLOSED', async () => {
      const transport = await newTransport();
      const health = await transport.healthCheck();
      expect(health.healthy).toBe(true);
      await transport.close();
      await transport.close();
      expect((await transport.healthCheck()).healthy).toBe(false);
      await expect(transport.publish(createEvent(type('closed'), {}))).rejects.toMatchObject({
        code: 'CLOSED',
      });
    });
  });
}

async function nextWithin(iterator: AsyncIterator<Delivery>, timeoutMs: number): Promise<Delivery> {
  let timer: NodeJS.Timeout | undefined;
  try {
    const result = await Promise.race([
      iterator.next(),
      new Promise<never>((_, reject) => {
        timer = setTimeout(
          () => reject(new Error(`no delivery within ${timeoutMs} ms`)),
          timeoutMs,
        );
      }),
    ]);
    if (result.done === true) throw new Error('the subscription ended');
    return result.value;
  } finally {
    clearTimeout(timer);
  }
}

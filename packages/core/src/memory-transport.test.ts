import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { describe, expect, it } from 'vitest';
import { decodeEvent, encodeEvent, encodeEventBytes } from './codec.js';
import { InMemoryDeadLetterQueue } from './dead-letter-queue.js';
import { ErrorCode, isWatchtowerError } from './errors.js';
import { createEvent, type Event } from './event.js';
import {
  DEFAULT_MEMORY_TRANSPORT_OPTIONS,
  MemoryBroker,
  MemoryTransport,
  type MemoryTransportOptions,
} from './memory-transport.js';
import { FakeClock } from './testing/fake-clock.js';
import { thrown } from './testing/thrown.js';
import { waitFor } from './testing/wait-for.js';
import type {
  DeadLetter,
  DeadLetterReason,
  Delivery,
  EventDelivery,
  TransportSubscribeOptions,
  TransportSubscription,
} from './transport.js';

// ---- helpers ----------------------------------------------------------------------------

/** Lets every pending promise continuation (and the I/O turn) run; never waits on time. */
async function settle(turns = 3): Promise<void> {
  for (let i = 0; i < turns; i++) await new Promise<void>((resolve) => setImmediate(resolve));
}

/** Pulls a subscription eagerly and records what it yields. */
class Reader {
  readonly received: Delivery[] = [];
  ended = false;
  failure: unknown;
  readonly #done: Promise<void>;

  constructor(readonly subscription: TransportSubscription) {
    this.#done = this.#pull().catch((error: unknown) => {
      this.failure = error;
    });
  }

  get events(): Event[] {
    return this.received.map((delivery) => (delivery as EventDelivery).event);
  }

  get types(): string[] {
    return this.events.map((event) => event.type);
  }

  get attempts(): number[] {
    return this.received.map((delivery) => delivery.attempt);
  }

  /** Resolves once `count` deliveries have arrived in total. */
  async waitForCount(count: number): Promise<Delivery[]> {
    await waitFor(() => this.received.length >= count, {
      message: `${count} deliveries on ${this.subscription.pattern} (got ${this.received.length})`,
    });
    return this.received;
  }

  /** Resolves when iteration has ended. */
  async waitForEnd(): Promise<void> {
    await this.#done;
  }

  async #pull(): Promise<void> {
    for await (const delivery of this.subscription) this.received.push(delivery);
    this.ended = true;
  }
}

async function subscribe(
  transport: MemoryTransport,
  pattern: string,
  options?: TransportSubscribeOptions,
): Promise<Reader> {
  return new Reader(await transport.subscribe(pattern, options));
}

function event(type: string, payload: unknown = {}): Event {
  return createEvent(type, payload);
}

async function publishAll(transport: MemoryTransport, ...types: string[]): Promise<Event[]> {
  const events = types.map((type, n) => event(type, { n }));
  for (const e of events) await transport.publish(e);
  return events;
}

async function ackAll(deliveries: readonly Delivery[]): Promise<void> {
  for (const delivery of deliveries) await delivery.ack();
}

async function rejection(promise: Promise<unknown>): Promise<unknown> {
  try {
    await promise;
  } catch (error) {
    return error;
  }
  throw new Error('expected a rejection');
}

function reason(type: string, n = 0): DeadLetterReason {
  return {
    message: `failed ${n}`,
    code: ErrorCode.HANDLER_FAILED,
    attempts: 1,
    failedAt: new Date(0).toISOString(),
    originalType: type,
  };
}

/** `global.gc` when the runtime lets us have it (Node does through a V8 flag), else undefined. */
function exposeGc(): (() => void) | undefined {
  try {
    setFlagsFromString('--expose-gc');
    const gc = runInNewContext('gc') as unknown;
    return typeof gc === 'function' ? (gc as () => void) : undefined;
  } catch {
    return undefined;
  }
}

// ---- tests ------------------------------------------------------------------------------

describe('MemoryTransport', () => {
  describe('publish and subscribe', () => {
    it('delivers a published event to a subscriber of its type with attempt 1 and its type as origin', async () => {
      const transport = new MemoryTransport();
      const reader = await subscribe(transport, 'user.created');
      const sent = event('user.created', { id: 'u1' });

      await transport.publish(sent);
      await reader.waitForCount(1);

      const delivery = reader.received[0] as Delivery;
      expect(delivery.kind).toBe('event');
      expect((delivery as EventDelivery).event).toEqual(sent);
      expect(delivery.attempt).toBe(1);
      expect(delivery.origin).toBe('user.created');
      await delivery.ack();
      await transport.close();
    });

    it('keeps publish order for one subscriber', async () => {
      const transport = new MemoryTransport();
      const reader = await subscribe(transport, 'order.*');
      const types = Array.from({ length: 50 }, (_, n) =>
        n % 2 === 0 ? 'order.placed' : 'order.paid',
      );
      const sent = await publishAll(transport, ...types);

      await reader.waitForCount(50);
      expect(reader.events.map((e) => e.id)).toEqual(sent.map((e) => e.id));
      await ackAll(reader.received);
      await transport.close();
    });

    it('delivers nothing to a subscriber whose pattern does not match', async () => {
      const transport = new MemoryTransport();
      const other = await subscribe(transport, 'order.placed');
      const all = await subscribe(transport, '>');

      await publishAll(transport, 'user.created');
      await all.waitForCount(1);
      await settle();

      expect(other.received).toHaveLength(0);
      await ackAll(all.received);
      await transport.close();
    });

    it('matches wildcards token by token, including dotted types first published after subscribing', async () => {
      const transport = new MemoryTransport();
      const star = await subscribe(transport, 'user.*');
      const rest = await subscribe(transport, 'user.>');
      const hash = await subscribe(transport, 'user.#');
      const middle = await subscribe(transport, 'a.*.c.>');
      const everything = await subscribe(transport, '>');
      const oneToken = await subscribe(transport, '*');

      await publishAll(
        transport,
        'user.created',
        'user.profile.updated',
        'user',
        'a.b.c.d',
        'a.b.c',
        'a.x.c.d.e',
        'orders',
      );
      await everything.waitForCount(7);
      await settle();

      expect(star.types).toEqual(['user.created']);
      expect(rest.types).toEqual(['user.created', 'user.profile.updated']);
      expect(hash.types).toEqual(['user.created', 'user.profile.updated']);
      expect(middle.types).toEqual(['a.b.c.d', 'a.x.c.d.e']);
      expect(oneToken.types).toEqual(['user', 'orders']);
      await transport.close({ timeoutMs: 0 });
    });

    it('fans out to independent subscribers: each gets every event and settles it on its own', async () => {
      const transport = new MemoryTransport();
      const a = await subscribe(transport, 'user.*');
      const b = await subscribe(transport, 'user.created');

      await publishAll(transport, 'user.created', 'user.created');
      await a.waitForCount(2);
      await b.waitForCount(2);

      // a nacks one, b acks both: only a sees it again.
      await (a.received[0] as Delivery).nack();
      await (a.received[1] as Delivery).ack();
      await ackAll(b.received);
      await a.waitForCount(3);
      await settle();

      expect(a.attempts).toEqual([1, 1, 2]);
      expect(b.attempts).toEqual([1, 1]);
      expect(a.events[2]?.id).toBe(a.events[0]?.id);
      await ackAll(a.received);
      await transport.close();
    });

    it('rejects an invalid event type or pattern with VALIDATION', async () => {
      const transport = new MemoryTransport();
      for (const type of ['', 'user..created', 'user.*', 'user created', '>']) {
        const error = await rejection(transport.publish({ ...event('x'), type }));
        expect(isWatchtowerError(error, ErrorCode.VALIDATION)).toBe(true);
      }
      for (const pattern of ['', 'user..x', 'user.>.x', 'us er']) {
        const error = await rejection(transport.subscribe(pattern));
        expect(isWatchtowerError(error, ErrorCode.VALIDATION)).toBe(true);
      }
      await transport.close();
    });

    it('delivers raw bytes that decode as an event, and garbage as a malformed delivery with SERIALIZATION', async () => {
      const transport = new MemoryTransport();
      const reader = await subscribe(transport, 'user.*');
      const good = event('user.created', { id: 'u1' });
      const garbage = new TextEncoder().encode('{not json');

      await transport.publishRaw('user.created', encodeEventBytes(good));
      await transport.publishRaw('user.created', garbage);
      await reader.waitForCount(2);

      const [first, second] = reader.received as [Delivery, Delivery];
      expect(first.kind).toBe('event');
      expect((first as EventDelivery).event.id).toBe(good.id);
      expect((first as EventDelivery).event.payload).toEqual({ id: 'u1' });
      expect(second.kind).toBe('malformed');
      if (second.kind !== 'malformed') throw new Error('unreachable');
      expect(second.raw).toEqual(garbage);
      expect(second.error.code).toBe(ErrorCode.SERIALIZATION);
      expect(second.origin).toBe('user.created');
      await ackAll(reader.received);
      await transport.close();
    });

    it('reports itself healthy until closed, with capabilities as data', async () => {
      const transport = new MemoryTransport();
      expect(transport.info.name).toBe('memory');
      expect(transport.info.capabilities).toMatchObject({
        consumerGroups: true,
        redelivery: true,
        delayedRetry: true,
        wildcards: true,
        persistence: false,
        replay: false,
      });
      expect(await transport.healthCheck()).toMatchObject({ healthy: true, state: 'connected' });
      await transport.connect();
      await transport.close();
      expect(await transport.healthCheck()).toMatchObject({ healthy: false, state: 'closed' });
    });
  });

  describe('copy', () => {
    it('delivers what the codec would deliver: a Date as its ISO string, an undefined field gone', async () => {
      const transport = new MemoryTransport();
      const reader = await subscribe(transport, 'doc.saved');
      const at = new Date(Date.UTC(2026, 0, 2, 3, 4, 5));
      const sent = event('doc.saved', { at, note: undefined, tags: ['a'] });

      await transport.publish(sent);
      await reader.waitForCount(1);

      expect(reader.events[0]).toEqual(decodeEvent(encodeEvent(sent)));
      expect(reader.events[0]?.payload).toStrictEqual({ at: at.toISOString(), tags: ['a'] });
      await ackAll(reader.received);
      await transport.close();
    });

    it('gives each delivery its own copy: a handler’s change reaches neither the publisher nor another subscriber', async () => {
      const transport = new MemoryTransport();
      const grouped = await subscribe(transport, 'doc.saved', { group: 'indexers' });
      const solo = await subscribe(transport, 'doc.*');
      const sent = event('doc.saved', { title: 'draft', tags: ['a'] });

      await transport.publish(sent);
      await grouped.waitForCount(1);
      await solo.waitForCount(1);
      const mine = grouped.events[0] as Event<{ title: string; tags: string[] }>;
      mine.payload.title = 'changed';
      mine.payload.tags.push('b');
      mine.headers['x-seen'] = 'yes';

      expect(solo.events[0]).not.toBe(mine);
      expect(solo.events[0]?.payload).toEqual({ title: 'draft', tags: ['a'] });
      expect(solo.events[0]?.headers).toEqual({});
      expect(sent.payload).toEqual({ title: 'draft', tags: ['a'] });
      expect(sent.headers).toEqual({});
      await ackAll([...grouped.received, ...solo.received]);
      await transport.close();
    });

    it('redelivers a nacked event as it was published, not as the handler left it', async () => {
      const transport = new MemoryTransport();
      const reader = await subscribe(transport, 'job.run');
      await transport.publish(event('job.run', { step: 1 }));
      await reader.waitForCount(1);
      (reader.events[0]?.payload as { step: number }).step = 99;

      await (reader.received[0] as Delivery).nack();
      await reader.waitForCount(2);

      expect(reader.attempts).toEqual([1, 2]);
      expect(reader.events[1]?.payload).toEqual({ step: 1 });
      await ackAll(reader.received);
      await transport.close();
    });

    it.each<[string, () => unknown]>([
      ['a BigInt', () => ({ amount: 10n })],
      [
        'a cycle',
        () => {
          const node: Record<string, unknown> = { name: 'loop' };
          node['self'] = node;
          return node;
        },
      ],
    ])('rejects a payload with %s with SERIALIZATION, delivering nothing', async (_, payload) => {
      const transport = new MemoryTransport();
      const subscription = await transport.subscribe('bad.payload');

      const error = await rejection(transport.publish(event('bad.payload', payload())));

      expect(isWatchtowerError(error, ErrorCode.SERIALIZATION)).toBe(true);
      expect(subscription.tryNext?.()).toBeUndefined();
      await transport.close();
    });

    it('rejects an unencodable payload with SERIALIZATION even when no group matches', async () => {
      const transport = new MemoryTransport();
      const error = await rejection(transport.publish(event('bad.payload', { amount: 1n })));
      expect(isWatchtowerError(error, ErrorCode.SERIALIZATION)).toBe(true);
      await transport.close();
    });

    it('encodes an event once per publish however many groups it reaches', async () => {
      const transport = new MemoryTransport();
      const readers = [
        await subscribe(transport, 'doc.saved'),
        await subscribe(transport, 'doc.*'),
        await subscribe(transport, '>', { group: 'audit' }),
      ];
      let encoded = 0;
      const payload = {
        toJSON: () => {
          encoded++;
          return { title: 'draft' };
        },
      };

      await transport.publish(event('doc.saved', payload));
      for (const reader of readers) await reader.waitForCount(1);

      expect(encoded).toBe(1);
      expect(readers.map((reader) => reader.events[0]?.payload)).toEqual([
        { title: 'draft' },
        { title: 'draft' },
        { title: 'draft' },
      ]);
      await transport.close({ timeoutMs: 0 });
    });

    it('dead-letters a copy of the event: a later change to the object leaves the letter as written', async () => {
      const transport = new MemoryTransport();
      const e = event('job.a', { step: 1 });

      await transport.publishToDlq(e, reason('job.a'));
      (e.payload as { step: number }).step = 2;

      expect(transport.deadLetterQueue.list()[0]?.event?.payload).toEqual({ step: 1 });
      await expect(
        transport.publishToDlq(event('job.a', { amount: 1n }), reason('job.a')),
      ).rejects.toMatchObject({ code: ErrorCode.SERIALIZATION });
      expect(transport.deadLetterQueue.size).toBe(1);
      await transport.close();
    });

    it("with copy: 'reference', hands every subscriber the published object and encodes nothing", async () => {
      const transport = new MemoryTransport({ copy: 'reference' });
      const a = await subscribe(transport, 'doc.saved');
      const b = await subscribe(transport, 'doc.*', { group: 'indexers' });
      const at = new Date();
      const sent = event('doc.saved', { at, amount: 1n });

      await transport.publish(sent);
      await a.waitForCount(1);
      await b.waitForCount(1);

      expect(a.events[0]).toBe(sent);
      expect(b.events[0]).toBe(sent);
      expect((a.events[0]?.payload as { at: Date }).at).toBe(at);
      await transport.publishToDlq(sent, reason('doc.saved'));
      expect(transport.deadLetterQueue.list()[0]?.event).toBe(sent);
      await ackAll([...a.received, ...b.received]);
      await transport.close();
    });

    it("decodes each delivery of publishRaw bytes on its own, also with copy: 'reference'", async () => {
      const transport = new MemoryTransport({ copy: 'reference' });
      const a = await subscribe(transport, 'doc.saved');
      const b = await subscribe(transport, 'doc.saved');

      await transport.publishRaw('doc.saved', encodeEventBytes(event('doc.saved', { n: 1 })));
      await a.waitForCount(1);
      await b.waitForCount(1);

      expect(a.events[0]).toEqual(b.events[0]);
      expect(a.events[0]).not.toBe(b.events[0]);
      await ackAll([...a.received, ...b.received]);
      await transport.close();
    });

    it('rejects a copy that is neither codec nor reference with CONFIG naming the field', () => {
      const error = thrown(() => new MemoryTransport({ copy: 'deep' as never }));
      expect(isWatchtowerError(error, ErrorCode.CONFIG)).toBe(true);
      expect((error as Error).message).toContain('`copy`');
      expect((error as Error).message).toContain('"reference"');
    });
  });

  describe('consumer groups', () => {
    it('gives each event to one member of a group, round robin', async () => {
      const transport = new MemoryTransport();
      const a = await subscribe(transport, 'job.*', { group: 'workers' });
      const b = await subscribe(transport, 'job.*', { group: 'workers' });

      const sent = await publishAll(
        transport,
        'job.a',
        'job.b',
        'job.c',
        'job.d',
        'job.e',
        'job.f',
      );
      await waitFor(() => a.received.length + b.received.length === 6);
      await settle();

      expect(a.types).toEqual(['job.a', 'job.c', 'job.e']);
      expect(b.types).toEqual(['job.b', 'job.d', 'job.f']);
      const ids = [...a.events, ...b.events].map((e) => e.id).sort();
      expect(ids).toEqual(sent.map((e) => e.id).sort());
      await ackAll([...a.received, ...b.received]);
      await transport.close();
    });

    it('gives every event to each of several groups and to subscribers without a group', async () => {
      const transport = new MemoryTransport();
      const g1 = [
        await subscribe(transport, 'job.*', { group: 'g1' }),
        await subscribe(transport, 'job.*', { group: 'g1' }),
      ];
      const g2 = await subscribe(transport, 'job.*', { group: 'g2' });
      const solo = await subscribe(transport, 'job.*');

      await publishAll(transport, 'job.a', 'job.b', 'job.c', 'job.d');
      await g2.waitForCount(4);
      await solo.waitForCount(4);
      await waitFor(() => g1[0]!.received.length + g1[1]!.received.length === 4);
      await settle();

      expect(g1[0]!.received.length + g1[1]!.received.length).toBe(4);
      expect(g2.types).toEqual(['job.a', 'job.b', 'job.c', 'job.d']);
      expect(solo.types).toEqual(['job.a', 'job.b', 'job.c', 'job.d']);
      await transport.close({ timeoutMs: 0 });
    });

    it('redelivers a nacked event to a member of the same group with the attempt counted', async () => {
      const transport = new MemoryTransport();
      const a = await subscribe(transport, 'job.*', { group: 'workers', maxInFlight: 1 });
      const b = await subscribe(transport, 'job.*', { group: 'workers', maxInFlight: 1 });

      const [sent] = await publishAll(transport, 'job.a');
      await a.waitForCount(1);
      await (a.received[0] as Delivery).nack();
      // Round robin hands the retry to b.
      await b.waitForCount(1);

      expect((b.received[0] as EventDelivery).event.id).toBe(sent?.id);
      expect(b.received[0]?.attempt).toBe(2);
      await ackAll(b.received);
      await transport.close();
    });

    it('hands the buffered deliveries of a member that unsubscribes to the other members, losing none', async () => {
      const transport = new MemoryTransport();
      const a = await subscribe(transport, 'job.*', { group: 'workers' });
      const leaving = await transport.subscribe('job.*', { group: 'workers' });

      const sent = await publishAll(
        transport,
        'job.a',
        'job.b',
        'job.c',
        'job.d',
        'job.e',
        'job.f',
      );
      await a.waitForCount(3);
      // `leaving` never read its three deliveries: they go back to the group.
      await leaving.unsubscribe();
      await a.waitForCount(6);

      expect(a.events.map((e) => e.id).sort()).toEqual(sent.map((e) => e.id).sort());
      expect(a.attempts).toEqual([1, 1, 1, 1, 1, 1]);
      await ackAll(a.received);
      // Nothing is left in flight, so close does not wait for its timeout.
      await transport.close({ timeoutMs: 60_000 });
    });

    it('keeps publish order for the remaining member after another member leaves', async () => {
      const transport = new MemoryTransport();
      const stay = await subscribe(transport, 'job.*', { group: 'workers', maxInFlight: 1 });
      const leaving = await transport.subscribe('job.*', { group: 'workers', maxInFlight: 2 });
      await publishAll(transport, 'job.a', 'job.b', 'job.c', 'job.d', 'job.e', 'job.f');
      await stay.waitForCount(1);

      await leaving.unsubscribe();
      for (let n = 1; n <= 6; n++) {
        await stay.waitForCount(n);
        await (stay.received[n - 1] as Delivery).ack();
      }

      expect(stay.types).toEqual(['job.a', 'job.b', 'job.c', 'job.d', 'job.e', 'job.f']);
      await transport.close();
    });

    it('closes promptly after a subscriber left with deliveries it never read', async () => {
      const clock = new FakeClock();
      const transport = new MemoryTransport({ clock });
      const sub = await transport.subscribe('job.*');
      await publishAll(transport, 'job.a', 'job.b');
      await sub.unsubscribe();

      let closed = false;
      void transport.close({ timeoutMs: 10_000 }).then(() => (closed = true));
      await settle();

      expect(closed).toBe(true);
    });

    it('gives a delivery a member read but had not settled when it left back to the group on nack', async () => {
      const transport = new MemoryTransport();
      const leaving = await subscribe(transport, 'job.*', { group: 'workers' });
      await publishAll(transport, 'job.a');
      await leaving.waitForCount(1);
      const stay = await subscribe(transport, 'job.*', { group: 'workers' });

      await leaving.subscription.unsubscribe();
      await leaving.waitForEnd();
      await (leaving.received[0] as Delivery).nack();
      await stay.waitForCount(1);

      expect(stay.types).toEqual(['job.a']);
      expect(stay.attempts).toEqual([2]);
      await ackAll(stay.received);
      await transport.close();
    });

    it('keeps the events of a named group for a member that joins later', async () => {
      const transport = new MemoryTransport();
      const first = await transport.subscribe('job.*', { group: 'workers' });
      await first.unsubscribe();

      const sent = await publishAll(transport, 'job.a', 'job.b');
      const private_ = await subscribe(transport, 'job.*');
      const later = await subscribe(transport, 'job.*', { group: 'workers' });
      await later.waitForCount(2);
      await settle();

      expect(later.events.map((e) => e.id)).toEqual(sent.map((e) => e.id));
      // A subscription without a group starts with new events only.
      expect(private_.received).toHaveLength(0);
      await ackAll(later.received);
      await transport.close();
    });

    it('ends iteration after unsubscribe and delivers nothing more', async () => {
      const transport = new MemoryTransport();
      const reader = await subscribe(transport, 'job.*');
      const witness = await subscribe(transport, 'job.*');
      await reader.subscription.unsubscribe();
      await reader.subscription.unsubscribe(); // idempotent
      await reader.waitForEnd();

      await publishAll(transport, 'job.a');
      await witness.waitForCount(1);
      await settle();

      expect(reader.ended).toBe(true);
      expect(reader.received).toHaveLength(0);
      await transport.close({ timeoutMs: 0 });
    });
  });

  describe('ack and nack', () => {
    it('redelivers a nacked event with attempt 2, then 3, and forgets an acked one', async () => {
      const transport = new MemoryTransport();
      const reader = await subscribe(transport, 'job.*');
      const witness = await subscribe(transport, 'job.*');
      const [sent] = await publishAll(transport, 'job.a');

      await reader.waitForCount(1);
      await (reader.received[0] as Delivery).nack();
      await reader.waitForCount(2);
      await (reader.received[1] as Delivery).nack({ requeue: true });
      await reader.waitForCount(3);
      await (reader.received[2] as Delivery).ack();
      // Settling again is a no-op.
      await (reader.received[2] as Delivery).nack();
      await (reader.received[0] as Delivery).nack();

      await publishAll(transport, 'job.b');
      await reader.waitForCount(4);
      await witness.waitForCount(2);
      await settle();

      expect(reader.attempts).toEqual([1, 2, 3, 1]);
      expect(reader.events.slice(0, 3).map((e) => e.id)).toEqual([sent?.id, sent?.id, sent?.id]);
      expect(reader.types[3]).toBe('job.b');
      await transport.close({ timeoutMs: 0 });
    });

    it('drops an event nacked with requeue: false', async () => {
      const transport = new MemoryTransport();
      const reader = await subscribe(transport, 'job.*');
      await publishAll(transport, 'job.a');
      await reader.waitForCount(1);

      await (reader.received[0] as Delivery).nack({ requeue: false });
      await publishAll(transport, 'job.b');
      await reader.waitForCount(2);
      await settle();

      expect(reader.types).toEqual(['job.a', 'job.b']);
      await ackAll(reader.received);
      await transport.close();
    });

    it('does not redeliver a delayed nack before its delay has passed', async () => {
      const clock = new FakeClock();
      const transport = new MemoryTransport({ clock });
      const reader = await subscribe(transport, 'job.*');
      await publishAll(transport, 'job.a');
      await reader.waitForCount(1);

      await (reader.received[0] as Delivery).nack({ delayMs: 1_000 });
      clock.advance(999);
      await settle();
      expect(reader.received).toHaveLength(1);

      clock.advance(1);
      await reader.waitForCount(2);
      expect(reader.attempts).toEqual([1, 2]);
      await ackAll(reader.received);
      await transport.close();
    });

    it('forgets pending delayed redeliveries of a subscription that is gone', async () => {
      const clock = new FakeClock();
      const transport = new MemoryTransport({ clock });
      const reader = await subscribe(transport, 'job.*');
      await publishAll(transport, 'job.a');
      await reader.waitForCount(1);
      await (reader.received[0] as Delivery).nack({ delayMs: 1_000 });
      expect(clock.pendingTimers()).toBe(1);

      await reader.subscription.unsubscribe();

      expect(clock.pendingTimers()).toBe(0);
      await transport.close();
    });

    it('hands out at most maxInFlight unsettled deliveries per subscription', async () => {
      const transport = new MemoryTransport();
      const reader = await subscribe(transport, 'job.*', { maxInFlight: 2 });
      await publishAll(transport, 'job.a', 'job.b', 'job.c', 'job.d', 'job.e');

      await reader.waitForCount(2);
      await settle();
      expect(reader.types).toEqual(['job.a', 'job.b']);

      await (reader.received[0] as Delivery).ack();
      await reader.waitForCount(3);
      await settle();
      expect(reader.types).toEqual(['job.a', 'job.b', 'job.c']);

      // A nack frees the slot too; the redelivery queues behind what was waiting.
      await (reader.received[1] as Delivery).nack();
      await reader.waitForCount(4);
      await settle();
      expect(reader.types).toEqual(['job.a', 'job.b', 'job.c', 'job.d']);

      await ackAll(reader.received.slice(2));
      await reader.waitForCount(6);
      expect(reader.types.slice(4).sort()).toEqual(['job.b', 'job.e']);
      await ackAll(reader.received.slice(4));
      await transport.close();
    });

    it('applies the transport-wide maxInFlight when a subscription gives none', async () => {
      const transport = new MemoryTransport({ maxInFlight: 1 });
      const reader = await subscribe(transport, 'job.*');
      await publishAll(transport, 'job.a', 'job.b');
      await reader.waitForCount(1);
      await settle();
      expect(reader.received).toHaveLength(1);

      await (reader.received[0] as Delivery).ack();
      await reader.waitForCount(2);
      await ackAll(reader.received);
      await transport.close();
    });
  });

  describe('shared broker', () => {
    it('lets two transports on one broker see each other’s events', async () => {
      const broker = new MemoryBroker();
      const t1 = new MemoryTransport({ broker });
      const t2 = new MemoryTransport({ broker });
      const on1 = await subscribe(t1, 'ping.*');
      const on2 = await subscribe(t2, 'ping.*');

      await t1.publish(event('ping.from1'));
      await t2.publish(event('ping.from2'));
      await on1.waitForCount(2);
      await on2.waitForCount(2);

      expect(on1.types).toEqual(['ping.from1', 'ping.from2']);
      expect(on2.types).toEqual(['ping.from1', 'ping.from2']);
      expect(t1.deadLetterQueue).toBe(t2.deadLetterQueue);
      await ackAll([...on1.received, ...on2.received]);
      await Promise.all([t1.close(), t2.close()]);
    });

    it('shares a consumer group between transports on one broker', async () => {
      const broker = new MemoryBroker();
      const t1 = new MemoryTransport({ broker });
      const t2 = new MemoryTransport({ broker });
      const a = await subscribe(t1, 'job.*', { group: 'workers' });
      const b = await subscribe(t2, 'job.*', { group: 'workers' });

      await publishAll(t1, 'job.a', 'job.b', 'job.c', 'job.d');
      await waitFor(() => a.received.length + b.received.length === 4);

      expect(a.received).toHaveLength(2);
      expect(b.received).toHaveLength(2);
      await ackAll([...a.received, ...b.received]);
      await Promise.all([t1.close(), t2.close()]);
    });
  });

  describe('close', () => {
    it('waits for unacked deliveries up to timeoutMs, then requeues them to the group', async () => {
      const clock = new FakeClock();
      const broker = new MemoryBroker({ clock });
      const t1 = new MemoryTransport({ broker });
      const t2 = new MemoryTransport({ broker });
      const a = await subscribe(t1, 'job.*', { group: 'workers' });
      const [sent] = await publishAll(t1, 'job.a');
      await a.waitForCount(1);
      const b = await subscribe(t2, 'job.*', { group: 'workers' });

      let closed = false;
      const closing = t1.close({ timeoutMs: 1_000 }).then(() => (closed = true));
      clock.advance(999);
      await settle();
      expect(closed).toBe(false);
      expect(b.received).toHaveLength(0);

      clock.advance(1);
      await closing;
      await a.waitForEnd();
      await b.waitForCount(1);

      expect((b.received[0] as EventDelivery).event.id).toBe(sent?.id);
      expect(b.received[0]?.attempt).toBe(2);
      // A late ack of the requeued delivery changes nothing.
      await (a.received[0] as Delivery).ack();
      await ackAll(b.received);
      await t2.close();
    });

    it('finishes as soon as every handed-out delivery is settled', async () => {
      const clock = new FakeClock();
      const transport = new MemoryTransport({ clock });
      const reader = await subscribe(transport, 'job.*');
      await publishAll(transport, 'job.a', 'job.b');
      await reader.waitForCount(2);

      let closed = false;
      const closing = transport.close({ timeoutMs: 60_000 }).then(() => (closed = true));
      await (reader.received[0] as Delivery).ack();
      await settle();
      expect(closed).toBe(false);

      await (reader.received[1] as Delivery).nack();
      await closing;
      await reader.waitForEnd();
      // The nack during close was not redelivered to the closing subscription.
      expect(reader.received).toHaveLength(2);
    });

    it('is idempotent and refuses publishes, subscriptions and dead letters with CLOSED afterwards', async () => {
      const transport = new MemoryTransport();
      const first = transport.close();
      expect(transport.close()).toBe(first);
      await first;

      const errors = [
        await rejection(transport.publish(event('job.a'))),
        await rejection(transport.publishRaw('job.a', new Uint8Array([1]))),
        await rejection(transport.subscribe('job.*')),
        await rejection(transport.connect()),
        await rejection(transport.publishToDlq(event('job.a'), reason('job.a'))),
        await rejection(transport.consumeDlq(() => undefined)),
      ];
      for (const error of errors) expect(isWatchtowerError(error, ErrorCode.CLOSED)).toBe(true);
    });

    it('supports await using', async () => {
      let transport: MemoryTransport | undefined;
      {
        await using t = new MemoryTransport();
        transport = t;
        expect((await t.healthCheck()).healthy).toBe(true);
      }
      expect((await transport.healthCheck()).healthy).toBe(false);
    });
  });

  describe('dead-letter queue', () => {
    it('stores dead letters of events and of raw bytes in the broker’s queue', async () => {
      const dlq = new InMemoryDeadLetterQueue({ capacity: 5 });
      const transport = new MemoryTransport({ deadLetterQueue: dlq });
      const e = event('job.a');
      const raw = new Uint8Array([1, 2, 3]);

      await transport.publishToDlq(e, reason('job.a'));
      await transport.publishToDlq({ raw, origin: 'job.b' }, reason('job.b'));

      expect(transport.deadLetterQueue).toBe(dlq);
      expect(dlq.list()).toEqual([
        { event: e, reason: reason('job.a') },
        { raw, reason: reason('job.b') },
      ]);
      await transport.close();
    });

    it('feeds existing and new dead letters to consumeDlq and removes each once handled', async () => {
      const transport = new MemoryTransport();
      await transport.publishToDlq(event('job.old'), reason('job.old'));
      const handled: DeadLetter[] = [];
      const handle = await transport.consumeDlq((letter) => {
        handled.push(letter);
      });

      await transport.publishToDlq(event('job.new'), reason('job.new'));
      await waitFor(() => handled.length === 2);

      expect(handled.map((letter) => letter.event?.type)).toEqual(['job.old', 'job.new']);
      expect(transport.deadLetterQueue.size).toBe(0);
      await handle.unsubscribe();
      await transport.close();
    });

    it('skips letters written before the call with fromStart: false', async () => {
      const transport = new MemoryTransport();
      await transport.publishToDlq(event('job.old'), reason('job.old'));
      const handled: string[] = [];
      const handle = await transport.consumeDlq((letter) => void handled.push(letter.event!.type), {
        fromStart: false,
      });

      await transport.publishToDlq(event('job.new'), reason('job.new'));
      await waitFor(() => handled.length === 1);
      await settle();

      expect(handled).toEqual(['job.new']);
      expect(transport.deadLetterQueue.list().map((l) => l.event?.type)).toEqual(['job.old']);
      await handle.unsubscribe();
      await transport.close();
    });

    it('leaves a letter whose handler throws in the queue, for a later consumer', async () => {
      const transport = new MemoryTransport();
      await transport.publishToDlq(event('job.a'), reason('job.a'));
      let calls = 0;
      const failing = await transport.consumeDlq(async () => {
        calls++;
        await Promise.resolve();
        throw new Error('cannot handle it');
      });
      await waitFor(() => calls === 1);
      await failing.unsubscribe();
      expect(transport.deadLetterQueue.size).toBe(1);

      const handled: DeadLetter[] = [];
      const later = await transport.consumeDlq((letter) => void handled.push(letter));
      await waitFor(() => handled.length === 1);

      expect(handled[0]?.event?.type).toBe('job.a');
      expect(transport.deadLetterQueue.size).toBe(0);
      await later.unsubscribe();
      await transport.close();
    });

    it('reports a dead-letter handler that throws on error listeners as HANDLER_FAILED', async () => {
      const transport = new MemoryTransport();
      const reported: { code: string; message: string }[] = [];
      transport.on('error', (error) => reported.push({ code: error.code, message: error.message }));
      await transport.publishToDlq(event('job.a'), reason('job.a'));
      const failing = await transport.consumeDlq(() => {
        throw new Error('cannot handle it');
      });
      await waitFor(() => reported.length === 1);
      await failing.unsubscribe();
      expect(reported[0]?.code).toBe(ErrorCode.HANDLER_FAILED);
      expect(reported[0]?.message).toContain('cannot handle it');
      expect(transport.deadLetterQueue.size).toBe(1);
      await transport.close();
    });

    it('never gives the same letter to two competing consumers', async () => {
      const transport = new MemoryTransport();
      for (let n = 0; n < 4; n++)
        await transport.publishToDlq(event(`job.n${n}`), reason('job', n));
      const seen: string[] = [];
      let openGate!: () => void;
      const gate = new Promise<void>((resolve) => (openGate = resolve));

      // The slow consumer holds the first letter while the fast one handles the rest.
      const slow = await transport.consumeDlq(async (letter) => {
        seen.push(`slow:${letter.event!.type}`);
        if (letter.event!.type === 'job.n0') await gate;
      });
      const fast = await transport.consumeDlq((letter) => {
        seen.push(`fast:${letter.event!.type}`);
      });
      await waitFor(() => transport.deadLetterQueue.size === 1);
      openGate();
      await waitFor(() => transport.deadLetterQueue.size === 0);
      await transport.publishToDlq(event('job.n4'), reason('job', 4));
      await waitFor(() => transport.deadLetterQueue.size === 0);
      await settle();

      const types = seen.map((entry) => entry.split(':')[1]);
      expect(types.sort()).toEqual(['job.n0', 'job.n1', 'job.n2', 'job.n3', 'job.n4']);
      expect(seen).toContain('slow:job.n0');
      await Promise.all([slow.unsubscribe(), fast.unsubscribe()]);
      await transport.close();
    });

    it('stops feeding a consumer after unsubscribe', async () => {
      const transport = new MemoryTransport();
      const handled: DeadLetter[] = [];
      const handle = await transport.consumeDlq((letter) => void handled.push(letter));
      await handle.unsubscribe();

      await transport.publishToDlq(event('job.a'), reason('job.a'));
      await settle();

      expect(handled).toHaveLength(0);
      expect(transport.deadLetterQueue.size).toBe(1);
      await transport.close();
    });
  });

  describe('memory', () => {
    const gc = exposeGc();

    it.runIf(gc !== undefined)('retains no event once every delivery of it is acked', async () => {
      // By reference, so that the weak references below point at what the broker holds: with
      // the codec copy the broker never holds the published object at all.
      const transport = new MemoryTransport({ copy: 'reference' });
      const grouped = await transport.subscribe('job.*', { group: 'workers' });
      const solo = await transport.subscribe('job.*');
      const iterators = [grouped, solo].map((sub) => sub[Symbol.asyncIterator]());

      const refs = await (async () => {
        const made: WeakRef<object>[] = [];
        for (let n = 0; n < 3; n++) {
          const e = event('job.a', { big: 'x'.repeat(1_000), n });
          made.push(new WeakRef(e));
          await transport.publish(e);
        }
        for (const iterator of iterators) {
          for (let n = 0; n < 3; n++) {
            const next = await iterator.next();
            // The first one is redelivered once, to exercise the nack path too.
            if (n === 0) {
              await (next.value as Delivery).nack();
              await ((await iterator.next()).value as Delivery).ack();
            } else {
              await (next.value as Delivery).ack();
            }
          }
        }
        return made;
      })();
      // Control: an event still unacked must survive the same collection.
      const unacked = (() => {
        const e = event('job.kept');
        void transport.publish(e);
        return new WeakRef(e);
      })();
      await settle();
      gc!();
      await settle();
      gc!();

      expect(refs.map((ref) => ref.deref() === undefined)).toEqual([true, true, true]);
      expect(unacked.deref()?.type).toBe('job.kept');
      await transport.close({ timeoutMs: 0 });
    });

    it.runIf(gc !== undefined)('retains no delivered copy once it is acked', async () => {
      const transport = new MemoryTransport();
      const subscription = await transport.subscribe('job.*', { group: 'workers' });
      const iterator = subscription[Symbol.asyncIterator]();
      for (let n = 0; n < 4; n++) {
        await transport.publish(event('job.a', { big: 'x'.repeat(1_000), n }));
      }

      const copies = await (async () => {
        const made: WeakRef<object>[] = [];
        for (let n = 0; n < 4; n++) {
          const delivery = (await iterator.next()).value as EventDelivery;
          made.push(new WeakRef(delivery.event));
          // The last one stays unacked: the broker holds it until it is settled.
          if (n < 3) await delivery.ack();
        }
        return made;
      })();
      await settle();
      gc!();
      await settle();
      gc!();

      expect(copies.map((ref) => ref.deref() === undefined)).toEqual([true, true, true, false]);
      await transport.close({ timeoutMs: 0 });
    });
  });

  describe('options', () => {
    it('exports its defaults', () => {
      expect(DEFAULT_MEMORY_TRANSPORT_OPTIONS).toEqual({
        maxInFlight: 128,
        maxPending: 10_000,
        copy: 'codec',
      });
    });

    it('rejects broker-level options given beside a shared broker', () => {
      expect(() => new MemoryTransport({ broker: new MemoryBroker(), maxPending: 5 })).toThrow(
        /broker/,
      );
    });

    it('rejects consumeDlq with a group: its one queue is shared by every consumer', async () => {
      const transport = new MemoryTransport();
      await expect(transport.consumeDlq(() => undefined, { group: 'g' })).rejects.toMatchObject({
        code: ErrorCode.CONFIG,
      });
      await transport.close();
    });

    it('refuses a publish whose signal is already aborted with ABORTED, delivering nothing', async () => {
      const transport = new MemoryTransport();
      const subscription = await transport.subscribe('flow.tick');
      const signal = AbortSignal.abort(new Error('stop'));
      await expect(
        transport.publish(createEvent('flow.tick', {}), { signal }),
      ).rejects.toMatchObject({ code: ErrorCode.ABORTED });
      expect(subscription.tryNext?.()).toBeUndefined();
      await transport.close();
    });

    it('rejects a maxPending that is not an integer >= 1 with CONFIG naming the field', () => {
      for (const maxPending of [0, 1.5, -1, Number.NaN]) {
        expect(() => new MemoryBroker({ maxPending })).toThrow(/maxPending/);
      }
    });
  });

  describe('maxPending', () => {
    const event = (n: number): Event => createEvent('flow.tick', { n });

    it('holds back publish confirmations while a group with members is over maxPending', async () => {
      const transport = new MemoryTransport({
        broker: new MemoryBroker({ maxPending: 2 }),
        maxInFlight: 1,
      });
      const subscription = await transport.subscribe('flow.tick');
      const iterator = subscription[Symbol.asyncIterator]();
      // One is handed to the member, two wait in the group: still within maxPending.
      await transport.publish(event(1));
      await transport.publish(event(2));
      await transport.publish(event(3));
      let confirmed = false;
      const fourth = transport.publish(event(4)).then(() => {
        confirmed = true;
      });
      await new Promise((resolve) => setImmediate(resolve));
      expect(confirmed).toBe(false);
      const first = await iterator.next();
      await (first.value as Delivery).ack();
      await fourth;
      expect(confirmed).toBe(true);
      const rest: number[] = [];
      for (let i = 0; i < 3; i++) {
        const next = (await iterator.next()).value as EventDelivery;
        rest.push((next.event.payload as { n: number }).n);
        await next.ack();
      }
      expect(rest).toEqual([2, 3, 4]);
      await transport.close();
    });

    it('drops the oldest events of a named group without members past maxPending, and counts them', async () => {
      const broker = new MemoryBroker({ maxPending: 3 });
      const transport = new MemoryTransport({ broker });
      const member = await transport.subscribe('flow.tick', { group: 'later' });
      await member.unsubscribe();
      for (let n = 1; n <= 5; n++) await transport.publish(event(n));
      expect(broker.droppedEvents).toBe(2);
      const joined = await transport.subscribe('flow.tick', { group: 'later' });
      const iterator = joined[Symbol.asyncIterator]();
      const seen: number[] = [];
      for (let i = 0; i < 3; i++) {
        const next = (await iterator.next()).value as EventDelivery;
        seen.push((next.event.payload as { n: number }).n);
        await next.ack();
      }
      expect(seen).toEqual([3, 4, 5]);
      await transport.close();
    });

    it.each<[string, MemoryTransportOptions, string]>([
      ['maxInFlight 0', { maxInFlight: 0 }, 'maxInFlight'],
      ['maxInFlight 1.5', { maxInFlight: 1.5 }, 'maxInFlight'],
      ['maxInFlight NaN', { maxInFlight: Number.NaN }, 'maxInFlight'],
      ['a broker with a clock', { broker: new MemoryBroker(), clock: new FakeClock() }, 'broker'],
      [
        'a broker with a dead-letter queue',
        { broker: new MemoryBroker(), deadLetterQueue: new InMemoryDeadLetterQueue() },
        'broker',
      ],
    ])('rejects %s with a CONFIG error naming the field', (_, options, field) => {
      let error: unknown;
      try {
        new MemoryTransport(options);
      } catch (caught) {
        error = caught;
      }
      expect(isWatchtowerError(error, ErrorCode.CONFIG)).toBe(true);
      expect((error as Error).message).toContain(`\`${field}\``);
    });

    it.each<[string, TransportSubscribeOptions, string]>([
      ['maxInFlight 0', { maxInFlight: 0 }, 'maxInFlight'],
      ['maxInFlight -1', { maxInFlight: -1 }, 'maxInFlight'],
      ['an empty group', { group: '' }, 'group'],
      ['startFrom earliest', { startFrom: 'earliest' }, 'startFrom'],
      ['startFrom a sequence', { startFrom: { sequence: 1 } }, 'startFrom'],
    ])(
      'rejects a subscription with %s with a CONFIG error naming the field',
      async (_, options, field) => {
        const transport = new MemoryTransport();
        const error = await rejection(transport.subscribe('job.*', options));
        expect(isWatchtowerError(error, ErrorCode.CONFIG)).toBe(true);
        expect((error as Error).message).toContain(`\`${field}\``);
        await transport.close();
      },
    );

    it('accepts startFrom new', async () => {
      const transport = new MemoryTransport();
      const sub = await transport.subscribe('job.*', { startFrom: 'new' });
      await sub.unsubscribe();
      await transport.close();
    });
  });
});

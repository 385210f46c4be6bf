import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import {
  ErrorCode,
  createEvent,
  decodeEvent,
  isWatchtowerError,
  type DeadLetter,
  type Event,
  type WatchtowerError,
} from '@watchtower/core';
import { RedisTransport, ReplicationTimeoutError, type RedisConfig } from '../src/index.js';
import { FAST, REDIS_URL, TestContext, ackAll, eventually, record } from './helpers.js';

let ctx: TestContext;

beforeEach(() => {
  ctx = new TestContext();
});

afterEach(async () => {
  await ctx.cleanup();
});

function transport(config: RedisConfig = {}): RedisTransport {
  return ctx.defer(
    new RedisTransport({
      url: REDIS_URL,
      prefix: ctx.prefix,
      consumerPrefix: ctx.prefix,
      ...FAST,
      ...config,
    }),
  );
}

function eventOf(type: string, payload: unknown = { n: 1 }): Event {
  return createEvent(type, payload);
}

describe('RedisTransport publish', () => {
  it('writes the event to the stream {prefix}:{type} in the field `event`, in the Rust wire format', async () => {
    const t = transport();
    const event = createEvent(
      'user.created',
      { name: 'Ada' },
      { correlationId: 'c-1', headers: { traceparent: 'tp' } },
    );
    await t.publish(event);
    const entries = await ctx.redis.xrange(`${ctx.prefix}:user.created`, '-', '+');
    expect(entries).toHaveLength(1);
    const [, fields] = entries[0] as [string, string[]];
    expect(fields[0]).toBe('event');
    const wire = JSON.parse(fields[1] as string) as Record<string, Record<string, unknown>>;
    expect(wire['metadata']).toMatchObject({
      id: event.id,
      event_type: 'user.created',
      correlation_id: 'c-1',
    });
    expect(decodeEvent(fields[1] as string)).toEqual(event);
  });

  it('rejects an invalid event type with VALIDATION and writes nothing', async () => {
    const t = transport();
    const bad = { ...eventOf('user.created'), type: 'user..created' };
    await expect(t.publish(bad)).rejects.toSatisfy((error) =>
      isWatchtowerError(error, ErrorCode.VALIDATION),
    );
    expect(await ctx.redis.exists(`${ctx.prefix}:user..created`)).toBe(0);
  });

  it('rejects the event type that would land in the dead-letter stream', async () => {
    const t = transport();
    await expect(t.publish(eventOf('dlq'))).rejects.toSatisfy((error) =>
      isWatchtowerError(error, ErrorCode.VALIDATION),
    );
  });

  it('rejects publish after close with CLOSED, and close is idempotent', async () => {
    const t = transport();
    await t.connect();
    const first = t.close();
    expect(t.close()).toBe(first);
    await first;
    await expect(t.publish(eventOf('a.b'))).rejects.toSatisfy((error) =>
      isWatchtowerError(error, ErrorCode.CLOSED),
    );
  });

  it('rejects a subscribe that races close with CLOSED and leaves no connection open', async () => {
    const t = transport({ consumerPrefix: ctx.prefix });
    await t.connect();
    const subscribing = t.subscribe('race.*');
    const closing = t.close();
    await expect(subscribing).rejects.toSatisfy((error) =>
      isWatchtowerError(error, ErrorCode.CLOSED),
    );
    await closing;
    await eventually(async () => {
      const clients = (await ctx.redis.client('LIST')) as string;
      expect(clients).not.toContain(`name=watchtower:${ctx.prefix}`);
    });
  });

  it('rejects connect with CONNECTION when Redis cannot be reached, and stops trying', async () => {
    const t = transport({ url: 'redis://127.0.0.1:1' });
    await expect(t.connect()).rejects.toSatisfy((error) =>
      isWatchtowerError(error, ErrorCode.CONNECTION),
    );
    expect((await t.healthCheck()).healthy).toBe(false);
  });
});

describe('RedisTransport waitReplicas on a Redis without replicas', () => {
  it('rejects a publish and a burst with ReplicationTimeoutError after waitTimeoutMs, the entries stored on the master', async () => {
    const t = transport({ waitReplicas: 1, waitTimeoutMs: 50 });
    const alone = await t.publish(eventOf('order.created')).catch((error: unknown) => error);
    expect(alone).toBeInstanceOf(ReplicationTimeoutError);
    expect(alone).toMatchObject({ code: 'TIMEOUT', acknowledged: 0, required: 1 });
    const burst = await Promise.allSettled(
      [1, 2, 3].map(() => t.publish(eventOf('order.created'))),
    );
    expect(burst.map((outcome) => outcome.status)).toEqual(['rejected', 'rejected', 'rejected']);
    expect(await ctx.redis.xlen(`${ctx.prefix}:order.created`)).toBe(4);
  });

  it('stores a publish retried after ReplicationTimeoutError once when dedupeWindowMs is set', async () => {
    const t = transport({ waitReplicas: 1, waitTimeoutMs: 50, dedupeWindowMs: 60_000 });
    const event = eventOf('order.created');
    for (const attempt of [1, 2]) {
      await expect(t.publish(event), `attempt ${attempt}`).rejects.toBeInstanceOf(
        ReplicationTimeoutError,
      );
    }
    expect(await ctx.redis.xlen(`${ctx.prefix}:order.created`)).toBe(1);
  });
});

describe('RedisTransport publish bursts', () => {
  /** The `n` payload field of every entry of `type`'s stream, in stream order. */
  async function storedNs(type: string): Promise<number[]> {
    const entries = await ctx.redis.xrange(`${ctx.prefix}:${type}`, '-', '+');
    return entries.map(
      ([, fields]) => (decodeEvent(fields[1] as string) as Event<{ n: number }>).payload.n,
    );
  }

  it('writes a burst of publishes made in one turn in publish order per stream, each resolving once its entry is stored', async () => {
    const t = transport();
    await t.connect();
    const types = ['order.created', 'order.paid'];
    const checks: Array<Promise<void>> = [];
    const published = Array.from({ length: 300 }, (_, n) => {
      const type = types[n % 2] as string;
      const position = Math.floor(n / 2);
      return t.publish(eventOf(type, { n })).then(() => {
        // Asked only after this publish resolved: its entry (and every earlier one of the
        // stream) must be there by then.
        checks.push(
          ctx.redis.xlen(`${ctx.prefix}:${type}`).then((length) => {
            expect(length).toBeGreaterThan(position);
          }),
        );
      });
    });
    await Promise.all(published);
    await Promise.all(checks);
    const expected = Array.from({ length: 300 }, (_, n) => n);
    expect(await storedNs('order.created')).toEqual(expected.filter((n) => n % 2 === 0));
    expect(await storedNs('order.paid')).toEqual(expected.filter((n) => n % 2 === 1));
  });

  it('keeps publish order across the bursts of consecutive turns, without awaiting in between', async () => {
    const t = transport({ maxLen: null });
    await t.connect();
    const published: Array<Promise<void>> = [];
    for (let turn = 0; turn < 5; turn++) {
      for (let i = 0; i < 40; i++)
        published.push(t.publish(eventOf('tick.tock', { n: turn * 40 + i })));
      await new Promise((resolve) => setImmediate(resolve));
    }
    await Promise.all(published);
    expect(await storedNs('tick.tock')).toEqual(Array.from({ length: 200 }, (_, n) => n));
  });

  it('connects on the first use for a burst published before connect, in publish order', async () => {
    const t = transport();
    await Promise.all(
      Array.from({ length: 50 }, (_, n) => t.publish(eventOf('cold.start', { n }))),
    );
    expect(await storedNs('cold.start')).toEqual(Array.from({ length: 50 }, (_, n) => n));
  });

  it('rejects only the publish whose XADD failed in a burst, with TRANSPORT, and writes the others', async () => {
    const t = transport();
    await t.connect();
    // A plain string where the stream of `broken.type` would be: its XADD gets WRONGTYPE.
    await ctx.redis.set(`${ctx.prefix}:broken.type`, 'not a stream');
    const outcomes = await Promise.allSettled([
      t.publish(eventOf('fine.type', { n: 0 })),
      t.publish(eventOf('broken.type', { n: 1 })),
      t.publish(eventOf('fine.type', { n: 2 })),
      t.publish(eventOf('broken.type', { n: 3 })),
      t.publish(eventOf('fine.type', { n: 4 })),
    ]);
    expect(outcomes.map((o) => o.status)).toEqual([
      'fulfilled',
      'rejected',
      'fulfilled',
      'rejected',
      'fulfilled',
    ]);
    for (const outcome of [outcomes[1], outcomes[3]]) {
      if (outcome?.status !== 'rejected') throw new Error('expected a rejection');
      const error = outcome.reason as WatchtowerError;
      expect(error.code).toBe(ErrorCode.TRANSPORT);
      expect(error.retryable).toBe(false);
      expect(error.message).toContain(`XADD ${ctx.prefix}:broken.type`);
      expect((error.cause as Error).message).toMatch(/^WRONGTYPE/);
    }
    expect(await storedNs('fine.type')).toEqual([0, 2, 4]);
    expect(await ctx.redis.get(`${ctx.prefix}:broken.type`)).toBe('not a stream');
  });

  it('rejects the publishes of a burst that fail before sending (bad type, DLQ type, aborted signal) and sends the rest', async () => {
    const t = transport();
    await t.connect();
    const aborted = AbortSignal.abort(new Error('gave up'));
    const outcomes = await Promise.allSettled([
      t.publish(eventOf('ok.one', { n: 0 })),
      t.publish({ ...eventOf('ok.one'), type: 'bad..type' }),
      t.publish(eventOf('dlq')),
      t.publish(eventOf('ok.one', { n: 1 }), { signal: aborted }),
      t.publish(eventOf('ok.one', { n: 2 })),
    ]);
    const codes = outcomes.map((o) =>
      o.status === 'fulfilled' ? 'ok' : (o.reason as WatchtowerError).code,
    );
    expect(codes).toEqual([
      'ok',
      ErrorCode.VALIDATION,
      ErrorCode.VALIDATION,
      ErrorCode.ABORTED,
      'ok',
    ]);
    expect(await storedNs('ok.one')).toEqual([0, 2]);
  });

  it('sends publishes awaited one at a time, each stored when it resolves', async () => {
    const t = transport();
    await t.connect();
    for (let n = 0; n < 50; n++) {
      await t.publish(eventOf('one.by.one', { n }));
      expect(await ctx.redis.xlen(`${ctx.prefix}:one.by.one`)).toBe(n + 1);
    }
    expect(await storedNs('one.by.one')).toEqual(Array.from({ length: 50 }, (_, n) => n));
  });

  it('sends a burst published just before close() before quitting, and rejects later publishes with CLOSED', async () => {
    const t = transport();
    await t.connect();
    const published = Array.from({ length: 20 }, (_, n) => t.publish(eventOf('last.words', { n })));
    await t.close();
    // Sent before close() quit the connection: QUIT waits for their replies.
    await Promise.all(published);
    expect(await storedNs('last.words')).toEqual(Array.from({ length: 20 }, (_, n) => n));
    await expect(t.publish(eventOf('last.words'))).rejects.toSatisfy((error) =>
      isWatchtowerError(error, ErrorCode.CLOSED),
    );
  });
});

describe('RedisTransport subscribe', () => {
  it('delivers a published event with attempt 1 and the stream key as origin', async () => {
    const t = transport();
    const sub = await t.subscribe('order.placed');
    const { deliveries } = ackAll(sub);
    const event = eventOf('order.placed', { total: 42 });
    await t.publish(event);
    await eventually(() => expect(deliveries).toHaveLength(1));
    const delivery = deliveries[0];
    expect(delivery?.kind).toBe('event');
    if (delivery?.kind !== 'event') return;
    expect(delivery.event).toEqual(event);
    expect(delivery.attempt).toBe(1);
    expect(delivery.origin).toBe(`${ctx.prefix}:order.placed`);
  });

  it('gives every subscriber without a group every event, and destroys its own group on unsubscribe', async () => {
    const t = transport();
    const a = await t.subscribe('item.added');
    const b = await t.subscribe('item.added');
    const ra = ackAll(a);
    const rb = ackAll(b);
    for (let i = 0; i < 5; i++) await t.publish(eventOf('item.added', { i }));
    await eventually(() => {
      expect(ra.deliveries).toHaveLength(5);
      expect(rb.deliveries).toHaveLength(5);
    });
    expect(await ctx.redis.xinfo('GROUPS', `${ctx.prefix}:item.added`)).toHaveLength(2);
    await a.unsubscribe();
    await b.unsubscribe();
    await ra.done;
    await rb.done;
    expect(await ctx.redis.xinfo('GROUPS', `${ctx.prefix}:item.added`)).toHaveLength(0);
  });

  it('hands each event to one member of a named group', async () => {
    const t1 = transport();
    const t2 = transport();
    const a = ackAll(await t1.subscribe('job.queued', { group: 'workers' }));
    const b = ackAll(await t2.subscribe('job.queued', { group: 'workers' }));
    for (let i = 0; i < 40; i++) await t1.publish(eventOf('job.queued', { i }));
    await eventually(() => expect(a.deliveries.length + b.deliveries.length).toBe(40));
    const ids = [...a.deliveries, ...b.deliveries].map((d) =>
      d.kind === 'event' ? d.event.id : '',
    );
    expect(new Set(ids).size).toBe(40);
  });

  it('delivers dotted types through wildcards, including types first published after subscribing', async () => {
    const t = transport();
    await t.publish(eventOf('user.created'));
    const deep = ackAll(await t.subscribe('user.>'));
    const single = ackAll(await t.subscribe('user.*'));
    await t.publish(eventOf('user.created', { n: 2 }));
    // Streams that did not exist when the subscriptions started:
    await t.publish(eventOf('user.profile.updated'));
    await t.publish(eventOf('user.deleted'));
    await t.publish(eventOf('order.created'));
    const types = (list: typeof deep.deliveries) =>
      list.map((d) => (d.kind === 'event' ? d.event.type : 'malformed')).sort();
    await eventually(() => {
      expect(types(deep.deliveries)).toEqual([
        'user.created',
        'user.deleted',
        'user.profile.updated',
      ]);
      expect(types(single.deliveries)).toEqual(['user.created', 'user.deleted']);
    });
  });

  it('redelivers a nacked event with attempt 2, not before its delay', async () => {
    const t = transport();
    const sub = await t.subscribe('pay.failed');
    const { deliveries } = record(sub);
    await t.publish(eventOf('pay.failed'));
    await eventually(() => expect(deliveries).toHaveLength(1));
    const nackedAt = Date.now();
    await deliveries[0]?.nack({ delayMs: 300 });
    await eventually(() => expect(deliveries).toHaveLength(2));
    expect(Date.now() - nackedAt).toBeGreaterThanOrEqual(290);
    expect(deliveries[1]?.attempt).toBe(2);
    await deliveries[1]?.nack();
    await eventually(() => expect(deliveries).toHaveLength(3));
    expect(deliveries[2]?.attempt).toBe(3);
    await deliveries[2]?.ack();
    const key = `${ctx.prefix}:pay.failed`;
    const [group] = (await ctx.redis.xinfo('GROUPS', key)) as unknown[][];
    await eventually(async () =>
      expect(await ctx.redis.xpending(key, String(group?.[1]))).toEqual([0, null, null, null]),
    );
  });

  it('drops a delivery nacked with requeue: false (acked, not redelivered)', async () => {
    const t = transport();
    const sub = await t.subscribe('pay.dropped', { group: 'g' });
    const { deliveries } = record(sub);
    await t.publish(eventOf('pay.dropped'));
    await eventually(() => expect(deliveries).toHaveLength(1));
    await deliveries[0]?.nack({ requeue: false });
    // The ack goes out with the next batch of acks (end of this event-loop turn).
    await eventually(async () =>
      expect((await ctx.redis.xpending(`${ctx.prefix}:pay.dropped`, 'g'))[0]).toBe(0),
    );
  });

  it('delivers an entry whose event type does not belong to its stream, for the bus to dead-letter', async () => {
    const t = transport();
    const sub = await t.subscribe('user.created', { group: 'g' });
    const { deliveries } = ackAll(sub);
    const key = `${ctx.prefix}:user.created`;
    // Someone wrote an order event into the user stream.
    const stray = JSON.stringify({
      metadata: {
        id: 'e-1',
        event_type: 'order.created',
        timestamp: new Date().toISOString(),
        headers: {},
      },
      payload: {},
    });
    await ctx.redis.xadd(key, '*', 'event', stray);
    await t.publish(eventOf('user.created'));
    await eventually(() => expect(deliveries).toHaveLength(2));
    await eventually(async () => expect((await ctx.redis.xpending(key, 'g'))[0]).toBe(0));
    expect(deliveries.map((d) => (d.kind === 'event' ? d.event.type : d.kind))).toEqual([
      'order.created',
      'user.created',
    ]);
    expect(deliveries[0]?.origin).toBe(key);
  });

  it('starts a new group at the beginning of the stream with startFrom: earliest', async () => {
    const t = transport();
    await t.publish(eventOf('log.line', { n: 1 }));
    await t.publish(eventOf('log.line', { n: 2 }));
    const late = ackAll(await t.subscribe('log.line', { startFrom: 'earliest' }));
    const fresh = ackAll(await t.subscribe('log.line'));
    await t.publish(eventOf('log.line', { n: 3 }));
    await eventually(() => {
      expect(late.deliveries).toHaveLength(3);
      expect(fresh.deliveries).toHaveLength(1);
    });
  });

  it('starts a new group at a point in time with startFrom: { time }', async () => {
    const t = transport();
    await t.publish(eventOf('log.line', { n: 1 }));
    const [last] = await ctx.redis.xrevrange(`${ctx.prefix}:log.line`, '+', '-', 'COUNT', 1);
    const after = new Date(Number(last?.[0].split('-')[0]) + 1);
    // Entries are stamped with Redis' clock: wait until it has moved past `after`.
    await eventually(async () => {
      const [seconds, micros] = await ctx.redis.time();
      expect(Number(seconds) * 1000 + Number(micros) / 1000).toBeGreaterThan(after.getTime());
    });
    await t.publish(eventOf('log.line', { n: 2 }));
    const { deliveries } = ackAll(await t.subscribe('log.line', { startFrom: { time: after } }));
    await eventually(() => expect(deliveries).toHaveLength(1));
    expect(deliveries[0]?.kind === 'event' && deliveries[0].event.payload).toEqual({ n: 2 });
  });

  it('destroys its own group on every stream a wildcard subscription read', async () => {
    const t = transport();
    await t.publish(eventOf('cart.added'));
    const sub = await t.subscribe('cart.*');
    const { deliveries, done } = ackAll(sub);
    await t.publish(eventOf('cart.removed'));
    await eventually(() => expect(deliveries).toHaveLength(1));
    const keys = [`${ctx.prefix}:cart.added`, `${ctx.prefix}:cart.removed`];
    for (const key of keys) expect(await ctx.redis.xinfo('GROUPS', key)).toHaveLength(1);
    await sub.unsubscribe();
    await done;
    for (const key of keys) expect(await ctx.redis.xinfo('GROUPS', key)).toHaveLength(0);
  });

  it('removes its consumer from a named group when it leaves holding nothing', async () => {
    const t = transport();
    const sub = await t.subscribe('seat.booked', { group: 'booking' });
    const { deliveries, done } = ackAll(sub);
    await t.publish(eventOf('seat.booked'));
    await eventually(() => expect(deliveries).toHaveLength(1));
    const key = `${ctx.prefix}:seat.booked`;
    expect(await ctx.redis.xinfo('CONSUMERS', key, 'booking')).toHaveLength(1);
    await sub.unsubscribe();
    await done;
    await eventually(async () =>
      expect(await ctx.redis.xinfo('CONSUMERS', key, 'booking')).toHaveLength(0),
    );
    // The named group itself stays: it keeps the position for the next member.
    expect(await ctx.redis.xinfo('GROUPS', key)).toHaveLength(1);
  });

  it('gives entries it read but never handed out back to the group when a member unsubscribes', async () => {
    const t1 = transport();
    const t2 = transport();
    for (let i = 0; i < 20; i++) await t1.publish(eventOf('task.run', { i }));
    const first = await t1.subscribe('task.run', {
      group: 'g',
      startFrom: 'earliest',
      maxInFlight: 20,
    });
    const iterator = first[Symbol.asyncIterator]();
    const one = await iterator.next();
    await (one.value as { ack(): Promise<void> }).ack();
    await first.unsubscribe();
    // claimMinIdleMs is 30 s here: what arrives now came back through the hand-over, not a timeout.
    const second = ackAll(await t2.subscribe('task.run', { group: 'g' }));
    await eventually(() => expect(second.deliveries).toHaveLength(19));
    expect(second.deliveries.every((d) => d.attempt === 1)).toBe(true);
  });

  it('takes over an entry another consumer left unsettled once it has been idle for claimMinIdleMs', async () => {
    const dead = transport({ claimMinIdleMs: 400 });
    const sub = await dead.subscribe('mail.send', { group: 'mailers' });
    const crashed = record(sub);
    await dead.publish(eventOf('mail.send'));
    await eventually(() => expect(crashed.deliveries).toHaveLength(1));
    // The consumer goes away without settling its delivery (as a crashed process would).
    await dead.close({ timeoutMs: 0 });

    const heir = transport({ claimMinIdleMs: 400 });
    const { deliveries } = ackAll(await heir.subscribe('mail.send', { group: 'mailers' }));
    await eventually(() => expect(deliveries).toHaveLength(1));
    expect(deliveries[0]?.attempt).toBe(2);
    expect(deliveries[0]?.kind === 'event' && deliveries[0].event.id).toBe(
      crashed.deliveries[0]?.kind === 'event' && crashed.deliveries[0].event.id,
    );
  });

  it('claims, retries and hands over entries with ioredis auto-pipelining turned on', async () => {
    const config = { claimMinIdleMs: 400, redis: { enableAutoPipelining: true } };
    const dead = transport(config);
    const crashed = record(await dead.subscribe('ship.it', { group: 'g' }));
    await dead.publish(eventOf('ship.it'));
    await eventually(() => expect(crashed.deliveries).toHaveLength(1));
    await dead.close({ timeoutMs: 0 });

    const heir = transport(config);
    const { deliveries } = record(await heir.subscribe('ship.it', { group: 'g' }));
    await eventually(() => expect(deliveries).toHaveLength(1));
    expect(deliveries[0]?.attempt).toBe(2);
    await deliveries[0]?.nack({ delayMs: 50 });
    await eventually(() => expect(deliveries).toHaveLength(2));
    expect(deliveries[1]?.attempt).toBe(3);
    await deliveries[1]?.ack();
  });

  it('keeps an entry with its live consumer while a slow handler runs past claimMinIdleMs', async () => {
    const slow = transport({ claimMinIdleMs: 300 });
    const other = transport({ claimMinIdleMs: 300 });
    const held = record(await slow.subscribe('report.build', { group: 'g' }));
    const rival = record(await other.subscribe('report.build', { group: 'g' }));
    await slow.publish(eventOf('report.build'));
    await eventually(() => expect(held.deliveries.length + rival.deliveries.length).toBe(1));
    // Three times claimMinIdleMs: without refreshing, the other member would have taken it.
    const started = Date.now();
    await eventually(() => expect(Date.now() - started).toBeGreaterThan(900), 2000);
    expect(held.deliveries.length + rival.deliveries.length).toBe(1);
    await (held.deliveries[0] ?? rival.deliveries[0])?.ack();
  });

  it('yields entries that are not events as malformed deliveries and goes on', async () => {
    const t = transport();
    const sub = await t.subscribe('user.created');
    const { deliveries } = ackAll(sub);
    const key = `${ctx.prefix}:user.created`;
    await ctx.redis.xadd(key, '*', 'event', 'not json {');
    await ctx.redis.xadd(key, '*', 'body', 'no event field');
    await t.publish(eventOf('user.created'));
    await eventually(() => expect(deliveries).toHaveLength(3));
    expect(deliveries.map((d) => d.kind)).toEqual(['malformed', 'malformed', 'event']);
    const first = deliveries[0];
    if (first?.kind !== 'malformed') throw new Error('expected malformed');
    expect(Buffer.from(first.raw).toString()).toBe('not json {');
    expect(first.error.code).toBe(ErrorCode.SERIALIZATION);
  });

  it('rejects bad subscribe options with CONFIG errors naming the field', async () => {
    const t = transport();
    await expect(t.subscribe('a.b', { maxInFlight: 0 })).rejects.toThrow(/maxInFlight/);
    await expect(t.subscribe('a.b', { group: '' })).rejects.toThrow(/group/);
    await expect(t.subscribe('a..b')).rejects.toSatisfy((error) =>
      isWatchtowerError(error, ErrorCode.VALIDATION),
    );
    await expect(t.subscribe('a.b', { startFrom: { sequence: 3 } })).rejects.toSatisfy(
      (error) => isWatchtowerError(error, ErrorCode.CONFIG) && /`startFrom`/.test(error.message),
    );
  });
});

describe('RedisTransport and the own groups of stopped processes', () => {
  async function groupNames(key: string): Promise<string[]> {
    const groups = (await ctx.redis.xinfo('GROUPS', key)) as unknown[][];
    return groups.map((group) => String(group[group.indexOf('name') + 1])).sort();
  }

  it('destroys the own groups a crashed process left, keeping live, named and its own ones', async () => {
    const key = `${ctx.prefix}:stock.moved`;
    // A process that crashed: its own group and consumer, no mark of life.
    await ctx.redis.xgroup('CREATE', key, 'own:deadhost-1-aaaaaa-1', '$', 'MKSTREAM');
    await ctx.redis.xgroup('CREATECONSUMER', key, 'own:deadhost-1-aaaaaa-1', 'deadhost-1-aaaaaa-1');
    // Another live process, marked alive; and a named group, which no sweep touches.
    await ctx.redis.xgroup('CREATE', key, 'own:livehost-2-bbbbbb-1', '$');
    await ctx.redis.set(`${ctx.prefix}:alive:livehost-2-bbbbbb`, '1', 'PX', 60_000);
    await ctx.redis.xgroup('CREATE', key, 'workers', '$');

    const t = transport({ blockMs: 50, staleGroupMs: 400 });
    const sub = await t.subscribe('stock.moved');
    const mine = ackAll(sub);
    const own = (await groupNames(key)).find((name) => name.startsWith(`own:${ctx.prefix}`));
    expect(own).toBeDefined();

    await eventually(async () => {
      expect(await groupNames(key)).not.toContain('own:deadhost-1-aaaaaa-1');
    }, 5000);
    expect(await groupNames(key)).toEqual(
      ['own:livehost-2-bbbbbb-1', own as string, 'workers'].sort(),
    );
    // Its own subscription still receives.
    await t.publish(eventOf('stock.moved'));
    await eventually(() => expect(mine.deliveries).toHaveLength(1));
  });

  it('keeps the own groups of a live process from being swept by another, and removes its mark on close', async () => {
    const key = `${ctx.prefix}:stock.counted`;
    const live = transport({ blockMs: 50, staleGroupMs: 300 });
    const sweeper = transport({ blockMs: 50, staleGroupMs: 300 });
    await sweeper.connect();
    const sub = await live.subscribe('stock.counted');
    const received = ackAll(sub);
    const before = await groupNames(key);
    expect(before).toHaveLength(1);
    // Several sweeps of the other transport go by.
    const marks = async (): Promise<string[]> => ctx.redis.keys(`${ctx.prefix}:alive:*`);
    expect(await marks()).toHaveLength(2);
    await eventually(async () => {
      await sweeper.publish(eventOf('stock.counted', { n: 1 }));
      expect(received.deliveries.length).toBeGreaterThanOrEqual(3);
    }, 5000);
    expect(await groupNames(key)).toEqual(before);
    await live.close();
    expect(await marks()).toHaveLength(1);
  });

  it('with staleGroupMs 0 keeps no mark of life, so it runs no sweep', async () => {
    const t = transport({ staleGroupMs: 0 });
    await t.subscribe('stock.kept');
    expect(await ctx.redis.keys(`${ctx.prefix}:alive:*`)).toEqual([]);
  });
});

describe('RedisTransport and trimming', () => {
  it('reports an entry that MAXLEN trimmed while it waited for its retry instead of losing it silently', async () => {
    const t = transport({ maxLen: 2, approximateTrim: false });
    const errors: WatchtowerError[] = [];
    t.on('error', (error) => errors.push(error));
    const { deliveries } = record(await t.subscribe('feed.item', { group: 'g' }));
    await t.publish(eventOf('feed.item', { n: 0 }));
    await eventually(() => expect(deliveries).toHaveLength(1));
    const id = (await ctx.redis.xrange(`${ctx.prefix}:feed.item`, '-', '+'))[0]?.[0] as string;
    await deliveries[0]?.nack({ delayMs: 200 });
    for (let n = 1; n <= 3; n++) await t.publish(eventOf('feed.item', { n }));
    await eventually(() => expect(deliveries).toHaveLength(4));
    for (const delivery of deliveries.slice(1)) await delivery.ack();
    await eventually(() => {
      const lost = errors.find((error) => error.message.includes(id));
      expect(lost?.code).toBe(ErrorCode.TRANSPORT);
      expect(lost?.message).toMatch(/trimmed/);
    });
    expect(deliveries).toHaveLength(4);
  });

  it('reports the entries of a crashed consumer that MAXLEN trimmed before another member claimed them', async () => {
    const dead = transport({ maxLen: 2, approximateTrim: false, claimMinIdleMs: 300 });
    const crashed = record(await dead.subscribe('feed.post', { group: 'g' }));
    await dead.publish(eventOf('feed.post', { n: 0 }));
    await eventually(() => expect(crashed.deliveries).toHaveLength(1));
    const id = (await ctx.redis.xrange(`${ctx.prefix}:feed.post`, '-', '+'))[0]?.[0] as string;
    await dead.close({ timeoutMs: 0 });
    for (let n = 1; n <= 3; n++)
      await ctx.redis.xadd(`${ctx.prefix}:feed.post`, 'MAXLEN', 2, '*', 'event', 'x');

    const heir = transport({ claimMinIdleMs: 300 });
    const errors: WatchtowerError[] = [];
    heir.on('error', (error) => errors.push(error));
    ackAll(await heir.subscribe('feed.post', { group: 'g' }));
    await eventually(() => {
      const lost = errors.find((error) => error.message.includes(id));
      expect(lost?.code).toBe(ErrorCode.TRANSPORT);
      expect(lost?.message).toMatch(/trimmed/);
    });
  });
});

describe('RedisTransport health and dead letters', () => {
  it('reports healthy with a latency while connected and unhealthy once closed', async () => {
    const t = transport();
    expect((await t.healthCheck()).healthy).toBe(false);
    await t.connect();
    const health = await t.healthCheck();
    expect(health).toMatchObject({ healthy: true, state: 'connected' });
    expect(typeof health.latencyMs).toBe('number');
    await t.close();
    expect(await t.healthCheck()).toMatchObject({ healthy: false, state: 'closed' });
  });

  it('writes dead letters with the Rust fields plus the reason, and consumeDlq reads them back', async () => {
    const t = transport();
    const event = eventOf('invoice.issued', { total: 1 });
    const reason = {
      message: 'boom',
      code: ErrorCode.HANDLER_FAILED,
      attempts: 3,
      failedAt: new Date().toISOString(),
      originalType: 'invoice.issued',
      subscription: 'billing',
    };
    await t.publishToDlq(event, reason);
    await t.publishToDlq(
      { raw: Buffer.from([0xff, 0x00, 0x7b]), origin: `${ctx.prefix}:x` },
      { ...reason, code: ErrorCode.SERIALIZATION },
    );
    const letters: DeadLetter[] = [];
    const handle = await t.consumeDlq((letter) => {
      letters.push(letter);
    });
    await eventually(() => expect(letters).toHaveLength(2));
    expect(letters[0]).toEqual({ event, reason });
    expect(Buffer.from(letters[1]?.raw ?? []).equals(Buffer.from([0xff, 0x00, 0x7b]))).toBe(true);
    await handle.unsubscribe();

    // The default group kept the position: a later consumer sees only new letters.
    const later: DeadLetter[] = [];
    const again = await t.consumeDlq((letter) => {
      later.push(letter);
    });
    await t.publishToDlq(event, { ...reason, message: 'second' });
    await eventually(() => expect(later.map((l) => l.reason.message)).toEqual(['second']));
    await again.unsubscribe();
  });

  it('leaves a dead letter whose handler throws pending and hands it over again later', async () => {
    const t = transport({ claimMinIdleMs: 300 });
    await t.publishToDlq(eventOf('a.b'), {
      message: 'x',
      code: 'HANDLER_FAILED',
      attempts: 1,
      failedAt: new Date().toISOString(),
      originalType: 'a.b',
    });
    let calls = 0;
    const handle = await t.consumeDlq(
      () => {
        calls++;
        if (calls === 1) throw new Error('not yet');
      },
      { group: 'ops' },
    );
    await eventually(() => expect(calls).toBe(2));
    await eventually(async () =>
      expect((await ctx.redis.xpending(`${ctx.prefix}:dlq`, 'ops'))[0]).toBe(0),
    );
    await handle.unsubscribe();
  });

  it('reports a dead-letter handler that throws on the error listener, the thrown error as cause', async () => {
    const t = transport({ claimMinIdleMs: 300 });
    const errors: WatchtowerError[] = [];
    t.on('error', (error) => errors.push(error));
    await t.publishToDlq(eventOf('a.b'), {
      message: 'x',
      code: 'HANDLER_FAILED',
      attempts: 1,
      failedAt: new Date().toISOString(),
      originalType: 'a.b',
    });
    const thrown = new Error('the archive is down');
    const handle = await t.consumeDlq(() => {
      throw thrown;
    });
    await eventually(() => {
      expect(errors[0]?.code).toBe(ErrorCode.HANDLER_FAILED);
      expect(errors[0]?.cause).toBe(thrown);
    });
    await handle.unsubscribe();
  });

  it('rejects bad consumeDlq options with CONFIG errors naming the field', async () => {
    const t = transport();
    const handler = (): void => {};
    await expect(t.consumeDlq(handler, { group: '' })).rejects.toThrow(/`group`/);
    await expect(t.consumeDlq(handler, { fromStart: 'no' as unknown as boolean })).rejects.toThrow(
      /`fromStart`/,
    );
  });
});

import { jetstreamManager, type JetStreamManager } from '@nats-io/jetstream';
import {
  ErrorCode,
  NonRetryableError,
  createEvent,
  isWatchtowerError,
  type DeadLetter,
  type Delivery,
  type WatchtowerError,
} from '@watchtower/core';
import { waitFor } from '@watchtower/core/testing';
import { afterEach, describe, expect, it } from 'vitest';
import { NatsSubscriber, NatsTransport } from '../src/index.js';
import { TestResources, drain, testConfig, testNames, type TestNames } from './helpers.js';
import { PrivateNatsServer } from './nats-server.js';

const resources = new TestResources();
afterEach(() => resources.cleanup());

async function rejection(promise: Promise<unknown>): Promise<WatchtowerError> {
  try {
    await promise;
  } catch (error) {
    if (isWatchtowerError(error)) return error;
    throw error;
  }
  throw new Error('expected a rejection');
}

async function manager(): Promise<JetStreamManager> {
  return jetstreamManager(await resources.raw());
}

async function connected(overrides = {}): Promise<{ names: TestNames; transport: NatsTransport }> {
  const names = testNames();
  const transport = resources.transport('jetstream', names, overrides);
  await transport.connect();
  return { names, transport };
}

/** Subscribes and records deliveries; `settle` decides what happens to each (default: ack). */
async function record(
  transport: NatsTransport,
  pattern: string,
  options = {},
  settle: (d: Delivery, at: number) => Promise<void> = (d) => d.ack(),
): Promise<{ deliveries: { delivery: Delivery; at: number }[]; stop: () => Promise<void> }> {
  const sub = await transport.subscribe(pattern, options);
  const deliveries: { delivery: Delivery; at: number }[] = [];
  const loop = drain(sub, async (delivery) => {
    const at = Date.now();
    deliveries.push({ delivery, at });
    await settle(delivery, at);
  });
  const stop = async (): Promise<void> => {
    await sub.unsubscribe();
    await loop;
  };
  resources.onCleanup(stop);
  return { deliveries, stop };
}

function typeOf(d: { delivery: Delivery }): string | undefined {
  return d.delivery.kind === 'event' ? d.delivery.event.type : undefined;
}

describe('NatsTransport (jetstream)', () => {
  it('stores a republished event id once (Nats-Msg-Id deduplication)', async () => {
    const { names, transport } = await connected();
    const event = createEvent('pay.charged', { cents: 100 });
    await transport.publish(event);
    await transport.publish(event);
    await transport.publish(createEvent('pay.marker', {}));
    const jsm = await manager();
    expect((await jsm.streams.info(names.stream)).state.messages).toBe(2);

    const { deliveries } = await record(transport, 'pay.*', { startFrom: 'earliest' });
    await waitFor(() => deliveries.some((d) => typeOf(d) === 'pay.marker'));
    expect(deliveries.map(typeOf)).toEqual(['pay.charged', 'pay.marker']);
  });

  it('honours nack with a delay: attempt 2 arrives after the delay', async () => {
    const { transport } = await connected();
    const delayMs = 700;
    const { deliveries } = await record(transport, 'retry.me', {}, async (d) => {
      if (d.attempt === 1) await d.nack({ delayMs });
      else await d.ack();
    });
    await transport.publish(createEvent('retry.me', {}));
    await waitFor(() => deliveries.length === 2, { timeoutMs: 5000 });
    const [first, second] = deliveries as [
      { delivery: Delivery; at: number },
      { delivery: Delivery; at: number },
    ];
    expect(first.delivery.attempt).toBe(1);
    expect(second.delivery.attempt).toBe(2);
    expect(second.at - first.at).toBeGreaterThanOrEqual(delayMs - 50);
  });

  it('redelivers an event that was never acked once ackWaitMs passes, with the next attempt number', async () => {
    const { transport } = await connected({ consumer: { ackWaitMs: 400 } });
    const { deliveries } = await record(transport, 'slow.job', {}, async (d) => {
      if (d.attempt >= 2) await d.ack();
    });
    await transport.publish(createEvent('slow.job', {}));
    await waitFor(() => deliveries.length === 2, { timeoutMs: 5000 });
    expect(deliveries.map((d) => d.delivery.attempt)).toEqual([1, 2]);
  });

  it('never delivers again an event nacked with requeue: false', async () => {
    const { names, transport } = await connected({ consumer: { ackWaitMs: 300 } });
    const { deliveries } = await record(transport, 'drop.*', {}, async (d) => {
      if (typeOf({ delivery: d }) === 'drop.me') await d.nack({ requeue: false });
      else await d.ack();
    });
    await transport.publish(createEvent('drop.me', {}));
    await waitFor(() => deliveries.length === 1);
    const jsm = await manager();
    const [consumer] = await jsm.consumers.list(names.stream).next();
    // Terminated: nothing pending, nothing waiting for an ack, nothing redelivered.
    await waitFor(async () => {
      const info = await jsm.consumers.info(names.stream, consumer?.name ?? '');
      return info.num_ack_pending === 0 && info.num_redelivered === 0 && info.num_pending === 0;
    });
    await transport.publish(createEvent('drop.marker', {}));
    await waitFor(() => deliveries.length === 2);
    expect(deliveries.map(typeOf)).toEqual(['drop.me', 'drop.marker']);
  });

  it('replays from the start, from a sequence or from a time', async () => {
    const { transport } = await connected();
    await transport.publish(createEvent('log.line', { n: 1 }));
    await transport.publish(createEvent('log.line', { n: 2 }));
    // Start times have millisecond precision: keep a few clear milliseconds on either side.
    const stored = Date.now();
    await waitFor(() => Date.now() > stored + 5);
    const between = new Date();
    await waitFor(() => Date.now() > between.getTime() + 5);
    await transport.publish(createEvent('log.line', { n: 3 }));

    const all = await record(transport, 'log.line', { startFrom: 'earliest' });
    const fromSeq = await record(transport, 'log.line', { startFrom: { sequence: 2 } });
    const fromTime = await record(transport, 'log.line', { startFrom: { time: between } });
    const fresh = await record(transport, 'log.line');
    await transport.publish(createEvent('log.line', { n: 4 }));
    const ns = (r: { deliveries: { delivery: Delivery }[] }): unknown[] =>
      r.deliveries.map((d) =>
        d.delivery.kind === 'event' ? (d.delivery.event.payload as { n: number }).n : null,
      );
    await waitFor(() => all.deliveries.length === 4 && fromSeq.deliveries.length === 3);
    await waitFor(() => fromTime.deliveries.length >= 2 && fresh.deliveries.length === 1);
    expect(ns(all)).toEqual([1, 2, 3, 4]);
    expect(ns(fromSeq)).toEqual([2, 3, 4]);
    expect(ns(fromTime)).toEqual([3, 4]);
    expect(ns(fresh)).toEqual([4]);
  });

  it('keeps a group consumer after its members leave: a new member gets what was published meanwhile', async () => {
    const { transport } = await connected();
    const first = await record(transport, 'order.*', { group: 'billing' });
    await transport.publish(createEvent('order.placed', { n: 1 }));
    await waitFor(() => first.deliveries.length === 1);
    await first.stop();
    await transport.publish(createEvent('order.placed', { n: 2 }));
    await transport.publish(createEvent('order.paid', { n: 3 }));
    const second = await record(transport, 'order.*', { group: 'billing' });
    await waitFor(() => second.deliveries.length === 2);
    expect(second.deliveries.map(typeOf)).toEqual(['order.placed', 'order.paid']);
  });

  it('deletes the consumer of a subscription without a group when it unsubscribes', async () => {
    const { names, transport } = await connected();
    const sub = await record(transport, 'tmp.*');
    const jsm = await manager();
    expect((await jsm.streams.info(names.stream)).state.consumer_count).toBe(1);
    await sub.stop();
    await waitFor(async () => (await jsm.streams.info(names.stream)).state.consumer_count === 0);
  });

  it('creates the streams idempotently and updates limits a later config changes', async () => {
    const names = testNames();
    const a = resources.transport('jetstream', names);
    const b = resources.transport('jetstream', names, {
      stream: { name: names.stream, maxMsgs: 1000 },
    });
    await Promise.all([a.connect(), b.connect()]);
    const jsm = await manager();
    const info = await jsm.streams.info(names.stream);
    expect(info.config.subjects).toEqual([`${names.subjectPrefix}.>`]);
    expect(info.config.storage).toBe('file');
    expect([-1, 1000]).toContain(info.config.max_msgs);
    const c = resources.transport('jetstream', names, {
      stream: { name: names.stream, maxMsgs: 50 },
    });
    await c.connect();
    expect((await jsm.streams.info(names.stream)).config.max_msgs).toBe(50);
    expect((await jsm.streams.info(names.dlqStream)).config.subjects).toEqual([
      `${names.dlqPrefix}.>`,
    ]);
  });

  it('refuses with CONFIG to change the storage of an existing stream', async () => {
    const names = testNames();
    await resources.transport('jetstream', names).connect();
    const memory = resources.transport('jetstream', names, {
      stream: { name: names.stream, storage: 'memory' },
    });
    await expect(memory.connect()).rejects.toSatisfy(
      (e) => isWatchtowerError(e, ErrorCode.CONFIG) && e.message.includes('stream.storage'),
    );
  });

  it('says why the streams cannot be set up: the other stream that captures their subjects, or no JetStream on the server', async () => {
    const jsm = await manager();
    const hint = 'is JetStream enabled';
    const names = testNames();
    const other = `${names.stream}_OTHER`;
    resources.stream(other);
    await jsm.streams.add({ name: other, subjects: [`${names.subjectPrefix}.order.*`] });
    const created = await rejection(resources.transport('jetstream', names).connect());
    expect(created.code).toBe(ErrorCode.CONFIG);
    expect(created.message).toContain('`subjectPrefix`');
    expect(created.message).toContain(`stream ${other} captures ${names.subjectPrefix}.order.*`);
    expect(created.message).toContain(
      `${names.stream} would capture with ${names.subjectPrefix}.>`,
    );
    expect(created.message).not.toContain(hint);

    // A stream that exists and would take the new subjects in an update is refused alike.
    const renamed = testNames();
    resources.stream(renamed.stream);
    await jsm.streams.add({ name: renamed.stream, subjects: [`${renamed.subjectPrefix}.>`] });
    const updated = await rejection(
      resources.transport('jetstream', { ...names, stream: renamed.stream }).connect(),
    );
    expect(updated.code).toBe(ErrorCode.CONFIG);
    expect(updated.message).toContain(`stream ${other} captures ${names.subjectPrefix}.order.*`);
    expect(updated.message).not.toContain(hint);

    const bare = await PrivateNatsServer.start({ jetstream: false });
    try {
      const missing = await rejection(
        resources.transport('jetstream', testNames(), { servers: bare.url }).connect(),
      );
      expect(missing.message).toContain(hint);
    } finally {
      await bare.stop();
    }
  });

  it('puts back a stream that is gone and stores the publish that found it missing', async () => {
    const { names, transport } = await connected();
    const jsm = await manager();
    await jsm.streams.delete(names.stream);
    // No responders at first; the transport recreates the stream and tries again within
    // requestTimeoutMs, with the same message id.
    await transport.publish(createEvent('a.b', {}));
    expect((await jsm.streams.info(names.stream)).state.messages).toBe(1);
  });

  it('rejects a publish whose signal is already aborted with ABORTED', async () => {
    const { transport } = await connected();
    const controller = new AbortController();
    controller.abort(new Error('stop'));
    await expect(
      transport.publish(createEvent('a.b', {}), { signal: controller.signal }),
    ).rejects.toSatisfy((e) => isWatchtowerError(e, ErrorCode.ABORTED));
  });

  it('dead-letters an event after max attempts into the DLQ stream, readable by a later consumeDlq', async () => {
    const names = testNames();
    const bus = new NatsSubscriber({
      ...testConfig('jetstream', names),
      subscriptionDefaults: {
        retry: { maxAttempts: 3, minDelayMs: 20, maxDelayMs: 40, jitter: 0 },
      },
      logger: { warn: () => undefined, error: () => undefined },
    });
    resources.stream(names.stream);
    resources.stream(names.dlqStream);
    resources.onCleanup(() => bus.close({ timeoutMs: 2000 }));
    const attempts: number[] = [];
    await bus.subscribe('pay.>', (_event, context) => {
      attempts.push(context.attempt);
      throw new Error('card declined');
    });
    const event = createEvent('pay.card.charge', { cents: 5 });
    await bus.publish(event);
    await waitFor(() => bus.stats().deadLettered === 1, { timeoutMs: 5000 });
    expect(attempts).toEqual([1, 2, 3]);

    const jsm = await manager();
    const stored = await jsm.streams.getMessage(names.dlqStream, {
      last_by_subj: `${names.dlqPrefix}.pay.card.charge`,
    });
    expect(stored?.json()).toMatchObject({
      error: 'card declined',
      original_subject: `${names.subjectPrefix}.pay.card.charge`,
      event: { metadata: { id: event.id } },
      reason: { attempts: 3, originalType: 'pay.card.charge', subscription: 'pay.>' },
    });

    // A consumer started later still reads it: the DLQ is durable.
    const reader = resources.transport('jetstream', names);
    const letters: DeadLetter[] = [];
    const handle = await reader.consumeDlq((letter) => {
      letters.push(letter);
    });
    resources.onCleanup(() => handle.unsubscribe());
    await waitFor(() => letters.length === 1);
    expect(letters[0]?.event).toEqual(event);
    expect(letters[0]?.reason).toMatchObject({ message: 'card declined', attempts: 3 });
  });

  it('dead-letters at once on NonRetryableError', async () => {
    const names = testNames();
    const bus = new NatsSubscriber({
      ...testConfig('jetstream', names),
      logger: { warn: () => undefined, error: () => undefined },
    });
    resources.stream(names.stream);
    resources.stream(names.dlqStream);
    resources.onCleanup(() => bus.close({ timeoutMs: 2000 }));
    let calls = 0;
    await bus.subscribe('x.y', () => {
      calls++;
      throw new NonRetryableError('bad input');
    });
    await bus.publish(createEvent('x.y', {}));
    await waitFor(() => bus.stats().deadLettered === 1);
    expect(calls).toBe(1);
  });

  it('redelivers a dead letter whose consumeDlq handler threw', async () => {
    const { transport } = await connected();
    let calls = 0;
    const seen: number[] = [];
    const handle = await transport.consumeDlq(() => {
      calls++;
      seen.push(Date.now());
      if (calls === 1) throw new Error('not now');
    });
    resources.onCleanup(() => handle.unsubscribe());
    await transport.publishToDlq(createEvent('a.b', {}), {
      message: 'm',
      code: 'HANDLER_FAILED',
      attempts: 1,
      failedAt: new Date().toISOString(),
      originalType: 'a.b',
    });
    await waitFor(() => calls === 2, { timeoutMs: 5000 });
  });

  it('stores a publish that races the first connect: it waits for JetStream, never goes out as a plain NATS publish', async () => {
    const names = testNames();
    const transport = resources.transport('jetstream', names);
    const first = transport.publish(createEvent('race.first', {}));
    // The connection is up but JetStream (the stream) may not be set up yet.
    const deadline = Date.now() + 5000;
    while (transport.state !== 'connected' && Date.now() < deadline) {
      await new Promise((resolve) => setImmediate(resolve));
    }
    const second = transport.publish(createEvent('race.second', {}));
    await Promise.all([first, second]);
    const jsm = await manager();
    expect((await jsm.streams.info(names.stream)).state.messages).toBe(2);
  });

  it('dead-letters an event whose last delivery the server allows (consumer.maxDeliver) is nacked, instead of losing it', async () => {
    const { transport } = await connected({ consumer: { maxDeliver: 2 } });
    const letters: DeadLetter[] = [];
    const handle = await transport.consumeDlq((letter) => {
      letters.push(letter);
    });
    resources.onCleanup(() => handle.unsubscribe());
    const { deliveries } = await record(transport, 'pay.>', {}, (d) => d.nack({ delayMs: 10 }));
    const event = createEvent('pay.card.charge', { cents: 5 });
    await transport.publish(event);
    await waitFor(() => letters.length === 1, { message: 'the dead letter' });
    expect(deliveries.map((d) => d.delivery.attempt)).toEqual([1, 2]);
    expect(letters[0]?.event).toEqual(event);
    expect(letters[0]?.reason).toMatchObject({
      attempts: 2,
      originalType: 'pay.card.charge',
      code: ErrorCode.TRANSPORT,
    });
  });

  it('dead-letters an event whose last allowed delivery is never settled (a stopped or stuck consumer), once the server gives up on it', async () => {
    const { transport } = await connected({ consumer: { maxDeliver: 2, ackWaitMs: 300 } });
    const letters: DeadLetter[] = [];
    const handle = await transport.consumeDlq((letter) => {
      letters.push(letter);
    });
    resources.onCleanup(() => handle.unsubscribe());
    // Two members of a group that take deliveries and never settle them.
    const a = await record(transport, 'ship.*', { group: 'movers' }, () => Promise.resolve());
    const b = await record(transport, 'ship.*', { group: 'movers' }, () => Promise.resolve());
    const event = createEvent('ship.sent', { box: 7 }, { headers: { traceparent: '00-ab-01' } });
    await transport.publish(event);
    await waitFor(() => letters.length === 1, { message: 'the dead letter', timeoutMs: 5000 });
    const attempts = [...a.deliveries, ...b.deliveries].map((d) => d.delivery.attempt);
    expect(attempts.sort()).toEqual([1, 2]);
    expect(letters[0]?.event).toEqual(event);
    expect(letters[0]?.reason).toMatchObject({
      attempts: 2,
      originalType: 'ship.sent',
      code: ErrorCode.TIMEOUT,
      subscription: 'movers',
    });
    expect(letters[0]?.reason.message).toContain('consumer.maxDeliver');
    // One dead letter for the group, not one per member.
    await transport.publish(createEvent('ship.marker', {}));
    await waitFor(() => letters.length === 2, { message: 'the marker', timeoutMs: 5000 });
    expect(letters.map((l) => l.event?.type)).toEqual(['ship.sent', 'ship.marker']);
  });

  it('dead-letters an event redelivered past maxAttempts + 2 because its handler keeps outliving the ack wait, without running the handler once more', async () => {
    const names = testNames();
    const bus = resources.subscriber('jetstream', names, {
      consumer: { ackWaitMs: 300 },
      logger: { warn: () => undefined, error: () => undefined },
    });
    const letters: DeadLetter[] = [];
    bus.on('deadLetter', (letter) => letters.push(letter));
    const attempts: number[] = [];
    await bus.subscribe(
      'stuck.job',
      (_event, context) => {
        attempts.push(context.attempt);
        return new Promise(() => {}); // runs past the ack wait, for good
      },
      { concurrency: 4, timeoutMs: 0, retry: { maxAttempts: 1 } },
    );
    const event = createEvent('stuck.job', { n: 1 });
    await bus.publish(event);
    await waitFor(() => letters.length === 1, { message: 'the dead letter', timeoutMs: 8000 });
    // One attempt plus two deliveries of grace ran; the fourth delivery is dead-lettered.
    expect(attempts).toEqual([1, 2, 3]);
    expect(letters[0]?.event?.id).toBe(event.id);
    expect(letters[0]?.reason).toMatchObject({ code: ErrorCode.TIMEOUT, attempts: 4 });
  });

  it('applies changed consumer options to a group consumer that already exists', async () => {
    const { names, transport } = await connected();
    const first = await record(transport, 'conf.*', { group: 'svc' });
    await first.stop();
    const updated = resources.transport('jetstream', names, {
      consumer: { ackWaitMs: 1500, maxDeliver: 7, maxAckPending: 50 },
    });
    await updated.connect();
    await record(updated, 'conf.*', { group: 'svc' });
    const jsm = await manager();
    const [consumer] = await jsm.consumers.list(names.stream).next();
    expect(consumer?.config).toMatchObject({
      ack_wait: 1500 * 1_000_000,
      max_deliver: 7,
      max_ack_pending: 50,
    });
  });

  it('hands out at most maxInFlight unsettled deliveries, also below consumer.maxAckPending', async () => {
    const { names, transport } = await connected();
    const sub = await transport.subscribe('inflight.*', { maxInFlight: 2 });
    const held: Delivery[] = [];
    const loop = drain(sub, (delivery) => {
      held.push(delivery);
    });
    resources.onCleanup(async () => {
      await sub.unsubscribe();
      await loop;
    });
    for (let i = 0; i < 5; i++) await transport.publish(createEvent('inflight.job', { i }));
    const jsm = await manager();
    const [consumer] = await jsm.consumers.list(names.stream).next();
    await waitFor(async () => {
      const info = await jsm.consumers.info(names.stream, consumer?.name ?? '');
      return info.num_ack_pending === 2 && info.num_pending === 3;
    });
    expect(held).toHaveLength(2);
    await Promise.all(held.map((d) => d.ack()));
    await waitFor(() => held.length === 4);
  });

  it('does not let an event wait out its ack wait in the client buffer: it is not delivered again meanwhile', async () => {
    const { names, transport } = await connected({ consumer: { ackWaitMs: 300 } });
    const sub = await transport.subscribe('buffered.*');
    resources.onCleanup(() => sub.unsubscribe());
    await transport.publish(createEvent('buffered.job', {}));
    const jsm = await manager();
    const [consumer] = await jsm.consumers.list(names.stream).next();
    // Delivered to the client, not yet taken by anyone.
    await waitFor(async () => {
      const info = await jsm.consumers.info(names.stream, consumer?.name ?? '');
      return info.num_ack_pending === 1;
    });
    const since = Date.now();
    await waitFor(() => Date.now() > since + 1000, { intervalMs: 50 });
    const taken = sub.tryNext?.();
    expect(taken?.attempt).toBe(1);
    await taken?.ack();
    expect(sub.tryNext?.()).toBeUndefined();
    const info = await jsm.consumers.info(names.stream, consumer?.name ?? '');
    expect(info.num_redelivered).toBe(0);
  });
});

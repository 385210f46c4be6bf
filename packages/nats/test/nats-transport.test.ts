import { headers as natsHeaders } from '@nats-io/transport-node';
import {
  ErrorCode,
  createEvent,
  isWatchtowerError,
  type WatchtowerError,
  type DeadLetter,
  type Delivery,
  type Event,
} from '@watchtower/core';
import { waitFor } from '@watchtower/core/testing';
import { afterEach, describe, expect, it } from 'vitest';
import { NatsTransport, type NatsMode } from '../src/index.js';
import { TestResources, drain, testNames } from './helpers.js';

const resources = new TestResources();
afterEach(() => resources.cleanup());

const textEncoder = new TextEncoder();

function eventsOf(deliveries: Delivery[]): Event[] {
  return deliveries.flatMap((d) => (d.kind === 'event' ? [d.event] : []));
}

describe.each<NatsMode>(['core', 'jetstream'])('NatsTransport (%s)', (mode) => {
  async function connected(overrides = {}) {
    const names = testNames();
    const transport = resources.transport(mode, names, overrides);
    await transport.connect();
    return { names, transport };
  }

  async function collect(transport: NatsTransport, pattern: string, options = {}) {
    const sub = await transport.subscribe(pattern, options);
    const deliveries: Delivery[] = [];
    const loop = drain(sub, async (delivery) => {
      deliveries.push(delivery);
      await delivery.ack();
    });
    resources.onCleanup(async () => {
      await sub.unsubscribe();
      await loop;
    });
    return { sub, deliveries, loop };
  }

  it('delivers a published event with its id, type, payload and metadata intact', async () => {
    const { transport } = await connected();
    const { deliveries } = await collect(transport, 'user.created');
    const event = createEvent(
      'user.created',
      { id: 42, name: 'Zoë ✓' },
      {
        source: 'tests',
        correlationId: '7b0c4a52-2f1c-4f59-9d4e-1a2b3c4d5e6f',
        causationId: 'cause-1',
      },
    );
    await transport.publish(event);
    await waitFor(() => deliveries.length === 1);
    const delivery = deliveries[0] as Delivery;
    expect(delivery.kind).toBe('event');
    expect(delivery.attempt).toBe(1);
    expect(delivery.origin).toBe(`${transport.config.subjectPrefix}.user.created`);
    expect(eventsOf(deliveries)[0]).toEqual(event);
  });

  it('routes dotted types through * (one token) and > (one or more tokens)', async () => {
    const { transport } = await connected();
    const star = await collect(transport, 'user.*');
    const rest = await collect(transport, 'user.>');
    for (const type of ['user.created', 'user.profile.updated', 'user', 'order.created']) {
      await transport.publish(createEvent(type, {}));
    }
    await waitFor(() => rest.deliveries.length === 2 && star.deliveries.length === 1);
    // One more event proves nothing else was on its way.
    await transport.publish(createEvent('user.done', {}));
    await waitFor(() => rest.deliveries.length === 3 && star.deliveries.length === 2);
    expect(eventsOf(star.deliveries).map((e) => e.type)).toEqual(['user.created', 'user.done']);
    expect(eventsOf(rest.deliveries).map((e) => e.type)).toEqual([
      'user.created',
      'user.profile.updated',
      'user.done',
    ]);
  });

  it('gives each event of a group to one member while an independent subscriber gets them all', async () => {
    const { transport } = await connected();
    const a = await collect(transport, 'job.*', { group: 'workers' });
    const b = await collect(transport, 'job.*', { group: 'workers' });
    const solo = await collect(transport, 'job.*');
    const n = 40;
    for (let i = 0; i < n; i++) await transport.publish(createEvent('job.run', { i }));
    await waitFor(
      () => a.deliveries.length + b.deliveries.length === n && solo.deliveries.length === n,
    );
    const ids = new Set([...eventsOf(a.deliveries), ...eventsOf(b.deliveries)].map((e) => e.id));
    expect(ids.size).toBe(n);
    expect(solo.deliveries.length).toBe(n);
  });

  it('stops a subscription whose consumer leaves its iteration early: the rest of its group gets what follows', async () => {
    // A short ack wait: in mode jetstream, what the server had already sent to the member that
    // left comes back after it.
    const { transport } = await connected({ consumer: { ackWaitMs: 1000 } });
    const leaving = await transport.subscribe('job.*', { group: 'workers' });
    const staying = await collect(transport, 'job.*', { group: 'workers' });
    let left = false;
    const leaver = (async () => {
      for await (const delivery of leaving) {
        await delivery.ack();
        break;
      }
      left = true;
    })();
    let n = 0;
    await waitFor(async () => {
      await transport.publish(createEvent('job.run', { phase: 'before', n: n++ }));
      return left;
    });
    await leaver;
    for (let i = 0; i < 20; i++) {
      await transport.publish(createEvent('job.run', { phase: 'after', n: i }));
    }
    const after = (): number[] =>
      eventsOf(staying.deliveries)
        .map((e) => e.payload as { phase: string; n: number })
        .filter((p) => p.phase === 'after')
        .map((p) => p.n);
    await waitFor(() => new Set(after()).size === 20, { timeoutMs: 10_000 });
    await leaving.unsubscribe();
  });

  it('keeps publish order for one type', async () => {
    const { transport } = await connected();
    const { deliveries } = await collect(transport, 'seq.tick');
    const n = 200;
    await Promise.all(
      Array.from({ length: n }, (_, i) => transport.publish(createEvent('seq.tick', { i }))),
    );
    await waitFor(() => deliveries.length === n);
    expect(eventsOf(deliveries).map((e) => (e.payload as { i: number }).i)).toEqual(
      Array.from({ length: n }, (_, i) => i),
    );
  });

  it('writes the Rust wire format that a raw NATS client reads, with headers as NATS headers', async () => {
    const { transport, names } = await connected();
    const nc = await resources.raw();
    const raw = nc.subscribe(`${names.subjectPrefix}.>`, { max: 1 });
    await nc.flush();
    const event = createEvent(
      'user.created',
      { id: 1 },
      { headers: { traceparent: '00-abc-def-01' } },
    );
    await transport.publish(event);
    for await (const msg of raw) {
      expect(msg.subject).toBe(`${names.subjectPrefix}.user.created`);
      expect(msg.headers?.get('traceparent')).toBe('00-abc-def-01');
      expect(msg.json()).toEqual({
        metadata: {
          id: event.id,
          event_type: 'user.created',
          timestamp: event.timestamp,
          source: null,
          correlation_id: null,
          headers: { traceparent: '00-abc-def-01' },
        },
        payload: { id: 1 },
      });
    }
  });

  it('receives Rust-format JSON from a raw client as a typed event, with its NATS headers as event headers when the body has no headers map', async () => {
    const { transport, names } = await connected();
    const { deliveries } = await collect(transport, 'order.>');
    const nc = await resources.raw();
    const body = {
      metadata: {
        id: '0d6f1c2e-5a4b-4c3d-8e9f-0a1b2c3d4e5f',
        event_type: 'order.placed',
        timestamp: '2026-11-22T10:00:00.123456789Z',
        source: 'rust-service',
        correlation_id: null,
      },
      payload: { total: 99.5 },
    };
    const h = natsHeaders();
    h.set('traceparent', '00-rust-01');
    // A plain publish: in mode jetstream the stream captures it all the same.
    nc.publish(`${names.subjectPrefix}.order.placed`, JSON.stringify(body), { headers: h });
    await nc.flush();
    await waitFor(() => deliveries.length === 1);
    expect(eventsOf(deliveries)[0]).toEqual({
      id: body.metadata.id,
      type: 'order.placed',
      timestamp: body.metadata.timestamp,
      source: 'rust-service',
      headers: { traceparent: '00-rust-01' },
      payload: { total: 99.5 },
    });
  });

  it('takes event headers from NATS headers beside the server ones, and none from server headers alone, when the body has no headers map', async () => {
    const { transport, names } = await connected();
    const { deliveries } = await collect(transport, 'order.>');
    const nc = await resources.raw();
    const body = (id: string): string =>
      JSON.stringify({
        metadata: {
          id,
          event_type: 'order.placed',
          timestamp: '2026-11-22T10:00:00Z',
          source: null,
          correlation_id: null,
        },
        payload: 1,
      });
    const serverOnly = natsHeaders();
    serverOnly.set('Nats-Msg-Id', 'm-1');
    const mixed = natsHeaders();
    mixed.set('NATS-Msg-Id', 'm-2');
    mixed.set('traceparent', '00-mixed-01');
    mixed.set('nats-expected-stream', names.stream);
    nc.publish(`${names.subjectPrefix}.order.placed`, body('e-1'), { headers: serverOnly });
    nc.publish(`${names.subjectPrefix}.order.placed`, body('e-2'), { headers: mixed });
    await nc.flush();
    await waitFor(() => deliveries.length === 2);
    expect(eventsOf(deliveries).map((event) => event.headers)).toEqual([
      {},
      { traceparent: '00-mixed-01' },
    ]);
  });

  it('hands malformed bytes over as a malformed delivery and keeps the subscription running', async () => {
    const { transport, names } = await connected();
    const { deliveries } = await collect(transport, 'bad.*');
    const nc = await resources.raw();
    nc.publish(`${names.subjectPrefix}.bad.bytes`, textEncoder.encode('{not json'));
    nc.publish(`${names.subjectPrefix}.bad.bytes`, new Uint8Array([0xff, 0xfe, 0x00]));
    await nc.flush();
    await transport.publish(createEvent('bad.after', { ok: true }));
    await waitFor(() => deliveries.length === 3);
    const [first, second, third] = deliveries as [Delivery, Delivery, Delivery];
    expect(first.kind).toBe('malformed');
    expect(second.kind).toBe('malformed');
    if (first.kind === 'malformed') {
      expect(new TextDecoder().decode(first.raw)).toBe('{not json');
      expect(first.error.code).toBe(ErrorCode.SERIALIZATION);
      expect(first.origin).toBe(`${names.subjectPrefix}.bad.bytes`);
    }
    expect(third.kind === 'event' && third.event.type).toBe('bad.after');
  });

  it('publishes dead letters on dlq.{type} in the Rust body and consumeDlq receives them, dotted types included', async () => {
    const { transport, names } = await connected();
    const letters: DeadLetter[] = [];
    const handle = await transport.consumeDlq((letter) => {
      letters.push(letter);
    });
    resources.onCleanup(() => handle.unsubscribe());
    const nc = await resources.raw();
    const raw = nc.subscribe(`${names.dlqPrefix}.>`, { max: 2 });
    await nc.flush();

    const event = createEvent('billing.invoice.failed', { n: 1 });
    const reason = {
      message: 'boom',
      code: 'HANDLER_FAILED',
      attempts: 3,
      failedAt: new Date().toISOString(),
      originalType: 'billing.invoice.failed',
      subscription: 'billing.>',
    };
    await transport.publishToDlq(event, reason);
    await transport.publishToDlq(
      { raw: textEncoder.encode('garbage'), origin: `${names.subjectPrefix}.billing.raw` },
      { ...reason, code: 'SERIALIZATION', originalType: `${names.subjectPrefix}.billing.raw` },
    );

    const bodies: { subject: string; body: Record<string, unknown> }[] = [];
    for await (const msg of raw) bodies.push({ subject: msg.subject, body: msg.json() });
    expect(bodies[0]?.subject).toBe(`${names.dlqPrefix}.billing.invoice.failed`);
    expect(bodies[0]?.body).toMatchObject({
      error: 'boom',
      original_subject: `${names.subjectPrefix}.billing.invoice.failed`,
      event: {
        metadata: { id: event.id, event_type: 'billing.invoice.failed' },
        payload: { n: 1 },
      },
      reason,
    });
    expect(bodies[1]?.subject).toBe(`${names.dlqPrefix}.billing.raw`);
    expect(bodies[1]?.body).toMatchObject({
      event: 'garbage',
      original_subject: `${names.subjectPrefix}.billing.raw`,
    });

    await waitFor(() => letters.length === 2);
    expect(letters[0]).toEqual({ event, reason });
    expect(new TextDecoder().decode(letters[1]?.raw)).toBe('garbage');
    expect(letters[1]?.reason.code).toBe('SERIALIZATION');
  });

  it('rejects an invalid event type with VALIDATION before sending anything', async () => {
    const { transport } = await connected();
    const bad = { ...createEvent('ok.type', {}), type: 'bad type' };
    await expect(transport.publish(bad)).rejects.toSatisfy((e) =>
      isWatchtowerError(e, ErrorCode.VALIDATION),
    );
    await expect(transport.subscribe('a..b')).rejects.toSatisfy((e) =>
      isWatchtowerError(e, ErrorCode.VALIDATION),
    );
  });

  it('reports health, closes idempotently and refuses work after close with CLOSED', async () => {
    const { transport } = await connected();
    const health = await transport.healthCheck();
    expect(health).toMatchObject({ healthy: true, state: 'connected' });
    expect(health.latencyMs).toBeGreaterThanOrEqual(0);
    const sub = await transport.subscribe('x.y');
    const ended = drain(sub, () => undefined);
    await Promise.all([transport.close(), transport.close()]);
    await ended;
    expect(await transport.healthCheck()).toMatchObject({ healthy: false, state: 'closed' });
    await expect(transport.publish(createEvent('x.y', {}))).rejects.toSatisfy((e) =>
      isWatchtowerError(e, ErrorCode.CLOSED),
    );
    await expect(transport.connect()).rejects.toSatisfy((e) =>
      isWatchtowerError(e, ErrorCode.CLOSED),
    );
  });

  it('fails connect with CONNECTION when no server listens', async () => {
    const transport = new NatsTransport({
      mode,
      servers: 'nats://127.0.0.1:1',
      connectTimeoutMs: 1000,
    });
    await expect(transport.connect()).rejects.toSatisfy((e) =>
      isWatchtowerError(e, ErrorCode.CONNECTION),
    );
    expect(await transport.healthCheck()).toMatchObject({ healthy: false });
    await transport.close();
  });

  it('declares its capabilities for the mode, a durable DLQ once JetStream is found', async () => {
    const { transport } = await connected();
    const caps = transport.info.capabilities;
    expect(caps.persistence).toBe(mode === 'jetstream');
    expect(caps.redelivery).toBe(mode === 'jetstream');
    expect(caps.replay).toBe(mode === 'jetstream');
    expect(caps.delayedRetry).toBe(mode === 'jetstream');
    expect(caps.brokerAttemptCount).toBe(mode === 'jetstream');
    // Mode core defaults to dlq.durable 'auto': the test server has JetStream.
    expect(caps.nativeDlq).toBe(true);
    expect(new NatsTransport({ mode, dlq: { durable: false } }).info.capabilities.nativeDlq).toBe(
      false,
    );
    expect(caps.consumerGroups && caps.wildcards && caps.headers && caps.reconnect).toBe(true);
  });
});

describe('NatsTransport (core): a subscriber that falls behind', () => {
  async function setup(overrides = {}) {
    const transport = resources.transport('core', testNames(), overrides);
    await transport.connect();
    const errors: WatchtowerError[] = [];
    transport.on('error', (error) => errors.push(error));
    return { transport, errors };
  }

  /** The next `count` deliveries, leaving the iteration open (a for-await break would end it). */
  async function take(sub: AsyncIterable<Delivery>, count: number): Promise<Delivery[]> {
    const iterator = sub[Symbol.asyncIterator]();
    const taken: Delivery[] = [];
    while (taken.length < count) {
      const next = await iterator.next();
      if (next.done === true) break;
      taken.push(next.value);
    }
    return taken;
  }

  it('holds at most maxInFlight events, drops what arrives beyond and reports the count as BACKPRESSURE_DROPPED', async () => {
    const { transport, errors } = await setup();
    const sub = await transport.subscribe('load.tick', { maxInFlight: 10 });
    // Nobody takes deliveries while 100 events arrive.
    for (let i = 0; i < 100; i++) await transport.publish(createEvent('load.tick', { i }));
    // The first drop is reported at once and later ones at most once a second, so the 90 may
    // come in two reports when the events arrive in more than one read.
    const dropped = (): number =>
      errors.reduce(
        (sum, error) => sum + Number(/(\d+) event\(s\) dropped/.exec(error.message)?.[1] ?? 0),
        0,
      );
    await waitFor(() => dropped() >= 90);
    expect(dropped()).toBe(90);
    expect(errors.length).toBeLessThanOrEqual(2);
    for (const error of errors) {
      expect(isWatchtowerError(error, ErrorCode.BACKPRESSURE_DROPPED)).toBe(true);
      expect(error.message).toContain('maxInFlight');
    }

    const held = await take(sub, 10);
    expect(eventsOf(held).map((e) => (e.payload as { i: number }).i)).toEqual(
      Array.from({ length: 10 }, (_, i) => i),
    );
    // Taken: the subscription receives again.
    await transport.publish(createEvent('load.tick', { i: 100 }));
    expect(eventsOf(await take(sub, 1))[0]?.payload).toEqual({ i: 100 });
    await sub.unsubscribe();
  });

  it('bounds every core subscription by pendingLimit when maxInFlight is not given', async () => {
    const { transport, errors } = await setup({ pendingLimit: 5 });
    const sub = await transport.subscribe('load.tock');
    for (let i = 0; i < 20; i++) await transport.publish(createEvent('load.tock', { i }));
    await waitFor(() => errors.length > 0);
    expect((errors[0] as Error).message).toContain('15 event(s) dropped');
    expect((errors[0] as Error).message).toContain('pendingLimit');
    expect(await take(sub, 5)).toHaveLength(5);
    await sub.unsubscribe();
  });
});

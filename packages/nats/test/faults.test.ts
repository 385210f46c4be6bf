/**
 * Faults through the entry point a user writes (`NatsSubscriber`), on private servers: a
 * server restarted while publishes are under way, one that starts after the service, a dead
 * letter larger than the server takes, and an event on the subject of another type.
 */
import {
  ErrorCode,
  NonRetryableError,
  createEvent,
  encodeEvent,
  type DeadLetter,
} from '@watchtower/core';
import { waitFor } from '@watchtower/core/testing';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { NatsMode } from '../src/index.js';
import { TestResources, testNames } from './helpers.js';
import { PrivateNatsServer } from './nats-server.js';

const silent = { warn: (): void => undefined, error: (): void => undefined };
const resources = new TestResources();

describe.each<NatsMode>(['core', 'jetstream'])('NatsSubscriber under faults (%s)', (mode) => {
  let server: PrivateNatsServer;
  beforeAll(async () => {
    server = await PrivateNatsServer.start();
  });
  afterEach(async () => {
    if (!(await server.isUp())) await server.restart();
    await resources.cleanup(server.url);
  });
  afterAll(async () => {
    await server.stop();
  });

  it('holds publishes while the server restarts, confirms each after it, and never opens the circuit', async () => {
    const names = testNames();
    const bus = resources.subscriber(mode, names, { servers: server.url, logger: silent });
    const changes: string[] = [];
    bus.transport.on('connection', (change) => changes.push(change.state));
    const received = new Set<number>();
    await bus.subscribe('tick.*', (event) => {
      received.add((event.payload as { n: number }).n);
    });
    await bus.publish('tick.tock', { n: 0 });
    await waitFor(() => received.has(0));

    await server.kill();
    await waitFor(() => changes.includes('lost'));
    const during = Array.from({ length: 30 }, (_, i) => bus.publish('tick.tock', { n: i + 1 }));
    await server.restart();
    await Promise.all(during);
    expect(changes).toEqual(['lost', 'restored']);
    expect(bus.stats()).toMatchObject({ publishFailed: 0 });
    expect(bus.circuitBreakerStats()).toMatchObject({ state: 'closed', rejectedRequests: 0 });
    await waitFor(() => received.size === 31, { timeoutMs: 10_000 });
  });

  it('connects once a server that starts later is up, within connectWaitMs', async () => {
    const names = testNames();
    await server.kill();
    const bus = resources.subscriber(mode, names, {
      servers: server.url,
      connectWaitMs: 30_000,
      logger: silent,
    });
    const connected = bus.connect();
    const published = bus.publish('boot.done', { n: 1 });
    await server.restart();
    await connected;
    await published;
    expect(bus.stats().published).toBe(1);
  });

  it('fails the first connect at once with CONNECTION by default', async () => {
    const names = testNames();
    await server.kill();
    const bus = resources.subscriber(mode, names, { servers: server.url, logger: silent });
    await expect(bus.connect()).rejects.toMatchObject({ code: ErrorCode.CONNECTION });
  });

  it('dead-letters an event published on the subject of another type as MISROUTED', async () => {
    const names = testNames();
    const bus = resources.subscriber(mode, names, { servers: server.url, logger: silent });
    const handled: string[] = [];
    const letters: DeadLetter[] = [];
    bus.on('deadLetter', (letter) => letters.push(letter));
    await bus.subscribe('user.*', (event) => void handled.push(event.type));
    const nc = await resources.raw(server.url);
    const stray = encodeEvent(createEvent('order.placed', { id: 7 }));
    if (mode === 'jetstream') {
      const { jetstream } = await import('@nats-io/jetstream');
      await jetstream(nc).publish(`${names.subjectPrefix}.user.created`, stray);
    } else {
      nc.publish(`${names.subjectPrefix}.user.created`, stray);
      await nc.flush();
    }
    await waitFor(() => letters.length === 1);
    expect(letters[0]?.event?.type).toBe('order.placed');
    expect(letters[0]?.reason.code).toBe(ErrorCode.MISROUTED);
    expect(handled).toEqual([]);
    expect(bus.stats().misrouted).toBe(1);
  });
});

describe.each<NatsMode>(['core', 'jetstream'])(
  'NatsSubscriber and a dead letter larger than max_payload (%s)',
  (mode) => {
    let server: PrivateNatsServer;
    beforeAll(async () => {
      server = await PrivateNatsServer.start({ config: 'max_payload: 65536\n' });
    });
    afterEach(async () => {
      await resources.cleanup(server.url);
    });
    afterAll(async () => {
      await server.stop();
    });

    it('stores it reduced, once, instead of handing it back for ever', async () => {
      const names = testNames();
      const bus = resources.subscriber(mode, names, { servers: server.url, logger: silent });
      const letters: DeadLetter[] = [];
      bus.on('deadLetter', (letter) => letters.push(letter));
      const stored: DeadLetter[] = [];
      await bus.transport.consumeDlq((letter) => void stored.push(letter));
      let runs = 0;
      await bus.subscribe(
        'blob.put',
        () => {
          runs++;
          throw new NonRetryableError('no room for it');
        },
        { retry: { maxAttempts: 1 } },
      );
      // 200 bytes under max_payload as an event; its dead-letter record adds the reason and
      // the subject (~350 bytes): it fits the server as an event and not as a dead letter.
      const empty = encodeEvent(createEvent('blob.put', { data: '' })).length;
      const event = createEvent('blob.put', { data: 'x'.repeat(65_536 - 200 - empty) });
      expect(encodeEvent(event).length).toBe(65_336);
      await bus.publish(event);
      await waitFor(() => stored.length === 1, { timeoutMs: 10_000 });
      const letter = stored[0];
      expect(letter?.event).toBeUndefined();
      expect(letter?.raw?.byteLength).toBe(1024);
      expect(letter?.reason).toMatchObject({
        code: ErrorCode.NON_RETRYABLE,
        originalType: 'blob.put',
        reduced: { eventId: event.id, keptBytes: 1024 },
      });
      expect(letter?.reason.reduced?.why).toContain('max_payload');
      expect(runs).toBe(1);
      expect(bus.stats()).toMatchObject({ deadLettered: 1, deadLettersReduced: 1 });
      expect(letters).toHaveLength(1);
    });
  },
);

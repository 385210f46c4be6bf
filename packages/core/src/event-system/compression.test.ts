import { gunzipSync } from 'node:zlib';
import { afterEach, describe, expect, it } from 'vitest';
import { ErrorCode, NonRetryableError } from '../errors.js';
import { EventBus } from '../event-bus.js';
import type { Event } from '../event.js';
import { MemoryBroker, MemoryTransport } from '../memory-transport.js';
import { collectEvents, configErrorField, waitFor } from '../testing.js';
import type { CompressionOptions } from './compression.js';
import { createEventSystem, type EventSystem } from './event-system.js';
import { quiet } from './test-support.js';

const closers: { close(): Promise<void> }[] = [];
afterEach(async () => {
  await Promise.allSettled(closers.splice(0).map((one) => one.close()));
});

function shop(
  broker: MemoryBroker,
  compression: CompressionOptions,
  poisoned?: Event[],
): EventSystem {
  const made = createEventSystem({
    service: 'shop',
    transports: { m: new MemoryTransport({ broker }) },
    routes: [{ pattern: 'report.>', transport: 'm', compression }],
    ...(poisoned === undefined
      ? {}
      : { consumer: { poisonHandler: (event) => void (event && poisoned.push(event)) } }),
    logger: quiet,
  });
  closers.push(made);
  return made;
}

const big = { rows: Array.from({ length: 200 }, (_, i) => ({ i, name: `row ${i}` })) };

describe('route compression', () => {
  it.each([
    ['gzip', 'gzip'],
    ['brotli', 'br'],
  ] as const)(
    'compresses %s payloads over the threshold and hands them back as they were',
    async (algorithm, header) => {
      const broker = new MemoryBroker();
      const made = shop(broker, { algorithm, thresholdBytes: 100 });
      const raw = new EventBus({ transport: new MemoryTransport({ broker }), logger: quiet });
      closers.push(raw);
      const wire = collectEvents();
      await raw.subscribe('>', wire.handler);
      const got = collectEvents();
      await made.subscribe('report.>', got.handler);

      await made.publish('report.daily', big);
      await made.publish('report.small', { n: 1 });
      await got.waitForCount(2);
      await wire.waitForCount(2);

      expect(wire.events[0]?.headers['content-encoding']).toBe(header);
      expect(typeof wire.events[0]?.payload).toBe('string');
      expect((wire.events[0]?.payload as string).length).toBeLessThan(JSON.stringify(big).length);
      expect(wire.events[1]?.headers['content-encoding']).toBeUndefined();
      expect(got.events.map((event) => event.payload)).toEqual([big, { n: 1 }]);
      expect(got.events[0]?.headers['content-encoding']).toBeUndefined();
    },
  );

  it('writes gzip that plain zlib reads', async () => {
    const broker = new MemoryBroker();
    const made = shop(broker, { algorithm: 'gzip' });
    const raw = new EventBus({ transport: new MemoryTransport({ broker }), logger: quiet });
    closers.push(raw);
    const wire = collectEvents();
    await raw.subscribe('>', wire.handler);
    await made.publish('report.daily', big);
    await wire.waitForCount(1);
    const bytes = gunzipSync(Buffer.from(wire.events[0]?.payload as string, 'base64'));
    expect(JSON.parse(bytes.toString('utf8'))).toEqual(big);
  });

  it('dead-letters a payload that does not decompress with SERIALIZATION', async () => {
    const broker = new MemoryBroker();
    const transport = new MemoryTransport({ broker });
    const made = createEventSystem({ service: 's', transports: { m: transport }, logger: quiet });
    closers.push(made);
    const got = collectEvents();
    await made.subscribe('report.daily', got.handler);
    const raw = new EventBus({ transport: new MemoryTransport({ broker }), logger: quiet });
    closers.push(raw);
    await raw.publish('report.daily', 'bm90IGd6aXA=', { headers: { 'content-encoding': 'gzip' } });
    await raw.publish('report.daily', 'x', { headers: { 'content-encoding': 'zstd' } });
    await waitFor(() => transport.deadLetterQueue.size === 2);
    expect(transport.deadLetterQueue.list().map((letter) => letter.reason.code)).toEqual([
      ErrorCode.SERIALIZATION,
      ErrorCode.SERIALIZATION,
    ]);
    expect(got.events).toEqual([]);
  });

  it('shows the poison handler the payload decompressed', async () => {
    const broker = new MemoryBroker();
    const poisoned: Event[] = [];
    const made = shop(broker, { algorithm: 'gzip', thresholdBytes: 0 }, poisoned);
    await made.subscribe('report.daily', () => {
      throw new NonRetryableError('no');
    });
    await made.publish('report.daily', big);
    await waitFor(() => poisoned.length === 1);
    expect(poisoned[0]?.payload).toEqual(big);
  });

  it.each([
    [{ algorithm: 'zstd' }, 'routes[0].compression.algorithm'],
    [{ algorithm: 'gzip', thresholdBytes: -1 }, 'routes[0].compression.thresholdBytes'],
    [{ algorithm: 'gzip', level: 9 }, 'routes[0].compression.level'],
    ['gzip', 'routes[0].compression'],
  ])('refuses compression %o naming %s', (compression, field) => {
    expect(
      configErrorField(() =>
        createEventSystem({
          service: 's',
          transports: { m: new MemoryTransport() },
          routes: [{ pattern: 'a.>', transport: 'm', compression: compression as never }],
          logger: quiet,
        }),
      ),
    ).toBe(field);
  });
});

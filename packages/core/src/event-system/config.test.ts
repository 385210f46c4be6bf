/**
 * The event system's configuration as `build()` and `createEventSystem` judge it: what is
 * accepted, and each refusal with the field its `CONFIG` error names.
 */
import { describe, expect, it } from 'vitest';
import { ErrorCode, isWatchtowerError } from '../errors.js';
import { MemoryTransport } from '../memory-transport.js';
import { configErrorField, thrown } from '../testing.js';
import { createEventSystemBuilder } from './builder.js';
import type { EventSystemConfig } from './config.js';
import { EventSystem, createEventSystem } from './event-system.js';
import { quiet, withInfo } from './test-support.js';

function config(overrides: Partial<EventSystemConfig> = {}): EventSystemConfig {
  return {
    service: 'orders',
    transports: { main: new MemoryTransport() },
    logger: quiet,
    ...overrides,
  };
}

function refusal(fn: () => unknown): { field: string | undefined; message: string } {
  const error = thrown(fn);
  if (!isWatchtowerError(error, ErrorCode.CONFIG))
    throw new Error(`expected CONFIG, got ${String(error)}`);
  return { field: configErrorField(fn), message: error.message };
}

describe('event system configuration', () => {
  it('builds from the builder and from one object alike', async () => {
    const transport = new MemoryTransport();
    const built = createEventSystemBuilder()
      .withService('orders')
      .withTransport('main', transport)
      .withLogger(quiet)
      .build();
    expect(built.service).toBe('orders');
    const fromObject = createEventSystem(config());
    expect(fromObject.service).toBe('orders');
    await Promise.all([built.close(), fromObject.close()]);
  });

  it('refuses a route to an unknown transport, naming the route', () => {
    const { field, message } = refusal(() =>
      createEventSystemBuilder()
        .withService('orders')
        .withTransport('main', new MemoryTransport())
        .withRoute('order.>', { transport: 'jetstream' })
        .build(),
    );
    expect(field).toBe('routes[0].transport');
    expect(message).toContain('"order.>"');
    expect(message).toContain('"jetstream"');
  });

  it('refuses two overlapping routes of equal priority, naming both', () => {
    const { field, message } = refusal(() =>
      createEventSystem(
        config({
          routes: [
            { pattern: 'order.*', transport: 'main' },
            { pattern: '*.created', transport: 'main' },
          ],
        }),
      ),
    );
    expect(field).toBe('routes[1]');
    expect(message).toContain('"*.created"');
    expect(message).toContain('"order.*"');
  });

  it('accepts overlapping routes of different priorities', async () => {
    const system = createEventSystem(
      config({
        routes: [
          { pattern: 'order.*', transport: 'main' },
          { pattern: '*.created', transport: 'main', priority: 1 },
        ],
      }),
    );
    await system.close();
  });

  it('refuses consumer groups when a route goes to a transport without them, naming the route', () => {
    const plain = withInfo(new MemoryTransport(), { consumerGroups: false }, 'plain');
    const { field, message } = refusal(() =>
      createEventSystemBuilder()
        .withService('orders')
        .withTransport('main', new MemoryTransport())
        .withTransport('hooks', plain)
        .withDefaultTransport('main')
        .withRoute('notification.>', { transport: 'hooks' })
        .withConsumer({ groups: true })
        .build(),
    );
    expect(field).toBe('consumer.groups');
    expect(message).toContain('routes[0] ("notification.>")');
  });

  it('refuses batching on a transport that cannot publish a batch', () => {
    const hook = withInfo(new MemoryTransport(), {}, 'webhook');
    const { field, message } = refusal(() =>
      createEventSystem(
        config({ transports: { hook }, publisher: { batching: { maxSize: 10, maxWaitMs: 5 } } }),
      ),
    );
    expect(field).toBe('publisher.batching');
    expect(message).toContain('"hook"');
  });

  it('takes a transport at its word when it declares batchPublish', async () => {
    const hook = withInfo(new MemoryTransport(), { batchPublish: true } as never, 'webhook');
    const system = createEventSystem(
      config({ transports: { hook }, publisher: { batching: { maxSize: 10, maxWaitMs: 5 } } }),
    );
    await system.close();
  });

  it.each([
    ['an empty pattern', { routes: [{ pattern: '', transport: 'main' }] }, 'routes[0].pattern'],
    [
      'a pattern with an empty token',
      { routes: [{ pattern: 'a..b', transport: 'main' }] },
      'routes[0].pattern',
    ],
    [
      'a topic with a wildcard',
      { routes: [{ pattern: 'a.>', transport: 'main', topic: 'a.*' }] },
      'routes[0].topic',
    ],
    [
      'a priority that is not an integer',
      { routes: [{ pattern: 'a', transport: 'main', priority: 1.5 }] },
      'routes[0].priority',
    ],
    [
      'an unknown route key',
      { routes: [{ pattern: 'a', transport: 'main', topc: 'x' } as never] },
      'topc',
    ],
    ['an unknown key', { enableConsumerGroups: true } as never, 'enableConsumerGroups'],
    ['a missing service', { service: '' }, 'service'],
    ['an origin with a wildcard', { origin: 'eu.*' }, 'origin'],
    ['an origin prefix without an origin', { originAsTopicPrefix: true }, 'originAsTopicPrefix'],
    ['no transports', { transports: {} }, 'transports'],
    ['a transport that is not one', { transports: { main: {} as never } }, 'transports.main'],
    ['a bad validation mode', { validationMode: 'loose' as never }, 'validationMode'],
    [
      'retry.maxAttempts 0',
      { publisher: { retry: { maxAttempts: 0 } } },
      'publisher.retry.maxAttempts',
    ],
    [
      'an unknown publisher key',
      { publisher: { rateLimiting: {} } as never },
      'publisher.rateLimiting',
    ],
    [
      'batching without maxWaitMs',
      { publisher: { batching: { maxSize: 2 } as never } },
      'publisher.batching.maxWaitMs',
    ],
    [
      'batching.maxSize 0',
      { publisher: { batching: { maxSize: 0, maxWaitMs: 1 } } },
      'publisher.batching.maxSize',
    ],
    [
      'a rate limit without a limit',
      { publisher: { rateLimit: { strategy: 'token-bucket', intervalMs: 1000 } as never } },
      'publisher.rateLimit.limit',
    ],
    [
      'a rate limit of unknown strategy',
      { publisher: { rateLimit: { strategy: 'leaky', limit: 1, intervalMs: 1 } as never } },
      'publisher.rateLimit.strategy',
    ],
    [
      'burst on a sliding window',
      {
        publisher: { rateLimit: { strategy: 'sliding-window', limit: 1, intervalMs: 1, burst: 3 } },
      },
      'publisher.rateLimit.burst',
    ],
    [
      'a poison handler that is not a function',
      { consumer: { poisonHandler: 'alert' as never } },
      'consumer.poisonHandler',
    ],
    [
      'an unknown consumer key',
      { consumer: { enablePatternRouting: true } as never },
      'consumer.enablePatternRouting',
    ],
    ['an unknown bus key', { bus: { retry: {} } as never }, 'bus.retry'],
  ])('refuses %s', (_what, overrides, expected) => {
    expect(
      refusal(() => createEventSystem(config(overrides as Partial<EventSystemConfig>))).field,
    ).toBe(expected);
  });

  it('refuses a transport that no route uses', () => {
    const { field } = refusal(() =>
      createEventSystem(
        config({
          transports: { main: new MemoryTransport(), spare: new MemoryTransport() },
          defaultTransport: 'main',
        }),
      ),
    );
    expect(field).toBe('transports.spare');
  });

  it('refuses several transports without a default route', () => {
    const { field } = refusal(() =>
      createEventSystem(
        config({
          transports: { a: new MemoryTransport(), b: new MemoryTransport() },
          routes: [
            { pattern: 'order.>', transport: 'a' },
            { pattern: 'user.>', transport: 'b' },
          ],
        }),
      ),
    );
    expect(field).toBe('defaultTransport');
  });

  it('takes a ">" route as the default route', async () => {
    const system = createEventSystem(
      config({
        transports: { a: new MemoryTransport(), b: new MemoryTransport() },
        routes: [
          { pattern: 'order.>', transport: 'a', priority: 1 },
          { pattern: '>', transport: 'b' },
        ],
      }),
    );
    await system.close();
  });

  it('checks the configuration in the EventSystem constructor too', () => {
    expect(
      configErrorField(
        () =>
          new EventSystem({
            service: 's',
            transports: { m: new MemoryTransport() },
            routes: [{ pattern: '', transport: 'm' }],
          }),
      ),
    ).toBe('routes[0].pattern');
  });

  it('refuses a transport name given twice to the builder', () => {
    const builder = createEventSystemBuilder().withTransport('main', new MemoryTransport());
    expect(configErrorField(() => builder.withTransport('main', new MemoryTransport()))).toBe(
      'transports.main',
    );
  });
});

/**
 * Schema versions: publishing with the newest, consuming against the named version with
 * upcasts, and what is dead-lettered or refused.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { z } from 'zod';
import { ErrorCode } from '../errors.js';
import { EventBus } from '../event-bus.js';
import { MemoryBroker, MemoryTransport } from '../memory-transport.js';
import { defineEvents } from '../schema.js';
import { collectEvents, configErrorField, waitFor } from '../testing.js';
import { createEventSystem, type EventSystem } from './event-system.js';
import { versions } from './schema-versions.js';
import { quiet } from './test-support.js';

const v1 = z.object({ name: z.string() });
const v2 = z.object({ first: z.string(), last: z.string() });
const v3 = z.object({ first: z.string(), last: z.string(), vip: z.boolean() });

const events = defineEvents({
  'user.created': versions(
    { 1: v1, 2: v2, 3: v3 },
    {
      upcast: {
        1: (payload) => {
          const [first = '', last = ''] = (payload as z.infer<typeof v1>).name.split(' ');
          return { first, last };
        },
        2: (payload) => ({ ...(payload as z.infer<typeof v2>), vip: false }),
      },
    },
  ),
});

const closers: { close(): Promise<void> }[] = [];
afterEach(async () => {
  await Promise.allSettled(closers.splice(0).map((one) => one.close()));
});

function setup(): {
  system: EventSystem<typeof events>;
  raw: EventBus;
  transport: MemoryTransport;
} {
  const broker = new MemoryBroker();
  const transport = new MemoryTransport({ broker });
  const system = createEventSystem({
    service: 's',
    transports: { m: transport },
    events,
    logger: quiet,
  });
  const raw = new EventBus({ transport: new MemoryTransport({ broker }), logger: quiet });
  closers.push(system, raw);
  return { system, raw, transport };
}

describe('schema versions', () => {
  it('publishes with the newest version and names it in schema-version', async () => {
    const { system, raw } = setup();
    const wire = collectEvents();
    await raw.subscribe('>', wire.handler);
    await system.publish('user.created', { first: 'Ada', last: 'Lovelace', vip: true });
    await wire.waitForCount(1);
    expect(wire.events[0]?.headers['schema-version']).toBe('3');
  });

  it('validates a consumed event against the version it names and upcasts it to the newest', async () => {
    const { system, raw } = setup();
    const got = collectEvents();
    await system.subscribe('user.created', got.handler);
    await raw.publish(
      'user.created',
      { name: 'Ada Lovelace' },
      { headers: { 'schema-version': '1' } },
    );
    await raw.publish(
      'user.created',
      { first: 'Grace', last: 'Hopper' },
      { headers: { 'schema-version': '2' } },
    );
    // Without a header: the oldest version.
    await raw.publish('user.created', { name: 'Alan Turing' });
    await got.waitForCount(3);
    expect(got.events.map((event) => event.payload)).toEqual([
      { first: 'Ada', last: 'Lovelace', vip: false },
      { first: 'Grace', last: 'Hopper', vip: false },
      { first: 'Alan', last: 'Turing', vip: false },
    ]);
  });

  it('dead-letters an unknown version, and a payload that fails its own version, with VALIDATION', async () => {
    const { system, raw, transport } = setup();
    const got = collectEvents();
    await system.subscribe('user.created', got.handler);
    await raw.publish(
      'user.created',
      { first: 'A', last: 'B', vip: true },
      { headers: { 'schema-version': '7' } },
    );
    await raw.publish(
      'user.created',
      { first: 'A', last: 'B' },
      { headers: { 'schema-version': '1' } },
    );
    await waitFor(() => transport.deadLetterQueue.size === 2);
    expect(transport.deadLetterQueue.list().map((letter) => letter.reason.code)).toEqual([
      ErrorCode.VALIDATION,
      ErrorCode.VALIDATION,
    ]);
    expect(transport.deadLetterQueue.list()[0]?.reason.message).toContain('version 7');
    expect(got.events).toEqual([]);
  });

  it('dead-letters an event whose upcast throws with VALIDATION', async () => {
    const broker = new MemoryBroker();
    const transport = new MemoryTransport({ broker });
    const system = createEventSystem({
      service: 's',
      transports: { m: transport },
      events: defineEvents({
        'a.b': versions(
          { 1: v1, 2: v2 },
          {
            upcast: {
              1: () => {
                throw new Error('bug');
              },
            },
          },
        ),
      }),
      logger: quiet,
    });
    const raw = new EventBus({ transport: new MemoryTransport({ broker }), logger: quiet });
    closers.push(system, raw);
    await system.subscribe('a.b', () => undefined);
    await raw.publish('a.b', { name: 'x' }, { headers: { 'schema-version': '1' } });
    await waitFor(() => transport.deadLetterQueue.size === 1);
    expect(transport.deadLetterQueue.list()[0]?.reason).toMatchObject({
      code: ErrorCode.VALIDATION,
    });
  });

  it.each([
    ['a version that is not an integer', () => versions({ 1.5: v1 } as never), 'versions.1.5'],
    ['no versions', () => versions({}), 'versions'],
    ['a missing upcast', () => versions({ 1: v1, 2: v2 }), 'upcast.1'],
    ['an upcast of the newest', () => versions({ 1: v1 }, { upcast: { 1: (p) => p } }), 'upcast.1'],
    [
      'an upcast of an unlisted version',
      () => versions({ 2: v2 }, { upcast: { 1: (p) => p } }),
      'upcast.1',
    ],
    ['a version that is not a schema', () => versions({ 1: {} as never }), 'versions.1'],
  ])('refuses %s with CONFIG', (_what, make, field) => {
    expect(configErrorField(make)).toBe(field);
  });
});

/**
 * Middleware of the event system: publish and consume hooks, their order, keeping an event
 * back, and failures.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { ErrorCode, isWatchtowerError } from '../errors.js';
import { MemoryTransport } from '../memory-transport.js';
import { collectEvents, settlement, waitFor } from '../testing.js';
import { createEventSystem, type EventSystem } from './event-system.js';
import { quiet } from './test-support.js';

const open: EventSystem[] = [];
function system(transport = new MemoryTransport()): EventSystem {
  const made = createEventSystem({ service: 's', transports: { m: transport }, logger: quiet });
  open.push(made);
  return made;
}
afterEach(async () => {
  await Promise.allSettled(open.splice(0).map((made) => made.close()));
});

describe('EventSystem middleware', () => {
  it('enriches published events in the order the middleware was added', async () => {
    const made = system();
    const order: string[] = [];
    made.use({
      publish: async (event, next) => {
        order.push('outer');
        await next({ ...event, headers: { ...event.headers, tenant: 'acme' } });
      },
    });
    made.use({
      publish: (event, next) => {
        order.push('inner');
        return next({
          ...event,
          headers: { ...event.headers, seen: event.headers['tenant'] ?? '' },
        });
      },
    });
    const got = collectEvents();
    await made.subscribe('user.created', got.handler);
    await made.publish('user.created', {});
    await got.waitForCount(1);
    expect(order).toEqual(['outer', 'inner']);
    expect(got.events[0]?.headers).toMatchObject({ tenant: 'acme', seen: 'acme' });
  });

  it('does not send an event a publish middleware keeps back, and counts it', async () => {
    const made = system();
    made.use({
      publish: async (event, next) => {
        if (event.type !== 'debug.trace') await next(event);
      },
    });
    await made.publish('debug.trace', {});
    const outcomes = await made.publishBatch([
      { type: 'debug.trace', payload: {} },
      { type: 'user.created', payload: {} },
    ]);
    expect(outcomes.map((outcome) => outcome.ok && outcome.skipped)).toEqual([true, false]);
    expect(made.stats()).toMatchObject({ skipped: 2, published: 1 });
    expect(made.stats().transports.m?.published).toBe(1);
  });

  it('fails the publish when a publish middleware throws or hands on an invalid event', async () => {
    const made = system();
    const remove = made.use({
      publish: () => {
        throw new Error('no');
      },
    });
    expect(await settlement(made.publish('a.b', {}))).toBeInstanceOf(Error);
    remove();
    made.use({ publish: (event, next) => next({ ...event, type: 'bad..type' }) });
    const invalid = await settlement(made.publish('a.b', {}));
    expect(isWatchtowerError(invalid, ErrorCode.VALIDATION)).toBe(true);
  });

  it('transforms consumed events, system middleware before the subscription', async () => {
    const made = system();
    const order: string[] = [];
    made.use({
      consume: (event, next) => {
        order.push('system');
        return next({ ...event, payload: { ...(event.payload as object), system: true } });
      },
    });
    const got = collectEvents();
    await made.subscribe('user.created', got.handler, {
      middleware: [
        {
          consume: async (event, next, context) => {
            order.push(`subscription ${context.attempt}`);
            await next(event);
            order.push('after handler');
          },
        },
      ],
    });
    await made.publish('user.created', { id: 1 });
    await got.waitForCount(1);
    await waitFor(() => order.length === 3);
    expect(order).toEqual(['system', 'subscription 1', 'after handler']);
    expect(got.events[0]?.payload).toEqual({ id: 1, system: true });
  });

  it('acks a delivery a consume middleware keeps back without running the handler', async () => {
    const made = system();
    const got = collectEvents();
    await made.subscribe('user.created', got.handler, {
      middleware: [
        {
          consume: async (event, next) => {
            if ((event.payload as { keep: boolean }).keep) await next(event);
          },
        },
      ],
    });
    await made.publish('user.created', { keep: false });
    await made.publish('user.created', { keep: true });
    await got.waitForCount(1);
    await waitFor(() => made.stats().filtered === 1);
    expect(made.stats().transports.m?.handled).toBe(2);
  });

  it('dead-letters a delivery whose consume middleware throws, after its retries', async () => {
    const transport = new MemoryTransport();
    const made = system(transport);
    await made.subscribe('user.created', () => undefined, {
      retry: { maxAttempts: 2, minDelayMs: 0, jitter: 0 },
      middleware: [
        {
          consume: () => {
            throw new Error('enrichment service down');
          },
        },
      ],
    });
    await made.publish('user.created', {});
    await waitFor(() => transport.deadLetterQueue.size === 1);
    expect(transport.deadLetterQueue.list()[0]?.reason).toMatchObject({
      code: ErrorCode.HANDLER_FAILED,
      attempts: 2,
    });
  });

  it.each([
    ['a middleware without hooks', () => system().use({})],
    ['an unknown hook', () => system().use({ publsh: () => undefined } as never)],
    ['a hook that is not a function', () => system().use({ publish: 'x' } as never)],
  ])('refuses %s with CONFIG', (_what, use) => {
    let error: unknown;
    try {
      use();
    } catch (thrown) {
      error = thrown;
    }
    expect(isWatchtowerError(error, ErrorCode.CONFIG)).toBe(true);
  });

  it('refuses a publish hook on a subscription', async () => {
    const made = system();
    const error = await settlement(
      made.subscribe('a', () => undefined, {
        middleware: [{ publish: (event, next) => next(event) }],
      }),
    );
    expect(isWatchtowerError(error, ErrorCode.CONFIG)).toBe(true);
  });
});

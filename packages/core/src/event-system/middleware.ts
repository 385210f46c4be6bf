/**
 * Middleware of the event system: hooks around publish and consume, for enrichment,
 * transformation and content-based filters, and the chains that run them in order.
 */
import { WatchtowerError, ErrorCode, configError } from '../errors.js';
import { assertEvent, type Event } from '../event.js';
import type { HandlerContext } from '../event-bus.js';

/**
 * Hooks around publish and consume. Each receives the event and `next`; calling `next(event)`
 * hands the (possibly changed) event on, not calling it stops the event there: on publish it
 * is not sent (the publish resolves, counted in `stats().skipped`), on consume it is acked
 * without running the handler (counted in `stats().filtered`). A throw fails the publish, or
 * the delivery (which is then retried and dead-lettered as a handler failure is).
 */
export interface EventMiddleware {
  /**
   * Runs before the event's schema, route and rate limits. `next` resolves once the later
   * middleware has handed the event on (not when the broker has confirmed it).
   */
  publish?(event: Event, next: (event: Event) => Promise<void>): void | Promise<void>;
  /**
   * Runs after the event is read back under its own type and has passed its schema and the
   * subscription's `filter`. `next` resolves when the later middleware and the handler have
   * finished.
   */
  consume?(
    event: Event,
    next: (event: Event) => Promise<void>,
    context: HandlerContext,
  ): void | Promise<void>;
}

/** Checks a middleware object; `field` names it in the `CONFIG` error. */
export function checkMiddleware(
  field: string,
  value: unknown,
  consumeOnly: boolean,
): EventMiddleware {
  if (value === null || typeof value !== 'object' || Array.isArray(value)) {
    throw configError(field, 'must be an object with publish and/or consume functions');
  }
  const middleware = value as Record<string, unknown>;
  for (const key of Object.keys(middleware)) {
    if (key !== 'publish' && key !== 'consume') {
      throw configError(`${field}.${key}`, 'is not a middleware hook (known: publish, consume)');
    }
    if (typeof middleware[key] !== 'function') {
      throw configError(`${field}.${key}`, 'must be a function');
    }
  }
  if (consumeOnly && middleware['publish'] !== undefined) {
    throw configError(`${field}.publish`, 'a subscription has no publish side: use system.use()');
  }
  if (middleware['publish'] === undefined && middleware['consume'] === undefined) {
    throw configError(field, 'has neither a publish nor a consume hook');
  }
  return value;
}

function calledTwice(): WatchtowerError {
  return new WatchtowerError(ErrorCode.NON_RETRYABLE, 'a middleware called next() twice', {
    retryable: false,
  });
}

/**
 * Runs the publish hooks of `chain` in order; resolves with the event the last one handed on,
 * or undefined when one did not call `next`.
 */
export async function runPublishChain(
  chain: readonly EventMiddleware[],
  event: Event,
): Promise<Event | undefined> {
  let out: Event | undefined;
  const run = async (index: number, current: Event): Promise<void> => {
    let hook = chain[index];
    while (hook !== undefined && hook.publish === undefined) hook = chain[++index];
    if (hook?.publish === undefined) {
      out = current;
      return;
    }
    let called = false;
    await hook.publish(current, async (next) => {
      if (called) throw calledTwice();
      called = true;
      assertEvent(next);
      await run(index + 1, next);
    });
  };
  await run(0, event);
  return out;
}

/**
 * Runs the consume hooks of `chain` in order, then `last` with the event the last hook handed
 * on; resolves false when a hook did not call `next` (so `last` did not run).
 */
export async function runConsumeChain(
  chain: readonly EventMiddleware[],
  event: Event,
  context: HandlerContext,
  last: (event: Event) => Promise<void>,
): Promise<boolean> {
  let reached = false;
  const run = async (index: number, current: Event): Promise<void> => {
    let hook = chain[index];
    while (hook !== undefined && hook.consume === undefined) hook = chain[++index];
    if (hook?.consume === undefined) {
      reached = true;
      await last(current);
      return;
    }
    let called = false;
    await hook.consume(
      current,
      async (next) => {
        if (called) throw calledTwice();
        called = true;
        assertEvent(next);
        await run(index + 1, next);
      },
      context,
    );
  };
  await run(0, event);
  return reached;
}

/**
 * Watchtower quickstart on the in-memory transport (no broker needed): typed events, three
 * subscriptions, a failing handler whose event ends in the dead-letter queue, and the stats.
 * Swap MemoryTransport for NatsTransport, RedisTransport ... and nothing else changes.
 *
 * Every line it prints names the subscription that acted, and every number comes from the
 * run (handler context, dead-letter reasons, `bus.stats()`), never from this file.
 */
import {
  EventBus,
  MemoryTransport,
  NonRetryableError,
  defineEvents,
  type DeadLetter,
  type Event,
} from '@watchtower/core';
import { z } from 'zod';

const events = defineEvents({
  'user.created': z.object({ id: z.string(), email: z.email() }),
  'order.placed': z.object({ orderId: z.string(), amount: z.number().positive() }),
});

const transport = new MemoryTransport();
const bus = new EventBus({
  transport,
  events,
  source: 'quickstart',
  backpressure: { maxQueueSize: 100, strategy: 'block' },
  circuitBreaker: { failureThreshold: 5, resetTimeoutMs: 30_000 },
  // The bus logs every dead letter at warn (a pino logger or `console` fit too); here each
  // log line is printed on one line, without its details object.
  logger: {
    warn: (_details, message) => console.log(`  (bus log) ${message}`),
    error: (_details, message) => console.log(`  (bus log, error) ${message}`),
  },
});

/** Handler runs that returned, by subscription: `stats().handled` is their sum. */
const handledBy = new Map<string, number>();
const countHandled = (subscription: string): void => {
  handledBy.set(subscription, (handledBy.get(subscription) ?? 0) + 1);
};

/** Why a subscription gives up on an event, by dead-letter code. */
const GAVE_UP_BECAUSE: Record<string, string> = {
  NON_RETRYABLE: 'the handler threw NonRetryableError, so it is not retried',
  HANDLER_FAILED: 'it failed on every attempt its retry policy allows',
};

/** An event as the lines above name it: its type and the id in its payload. */
const label = (event: Event | undefined): string => {
  if (event === undefined) return 'undecodable bytes';
  const payload = (event.payload ?? {}) as { id?: unknown; orderId?: unknown };
  const id = payload.id ?? payload.orderId;
  return `${event.type} ${typeof id === 'string' ? id : event.id.slice(0, 8)}`;
};

bus.on('deadLetter', ({ event, reason }: DeadLetter) => {
  const what = label(event);
  const why = GAVE_UP_BECAUSE[reason.code] ?? reason.code;
  const attempts = `${reason.attempts} attempt${reason.attempts === 1 ? '' : 's'}`;
  console.log(
    `  [${reason.subscription ?? '?'}] ${what} -> dead-letter queue after ${attempts}: ${why}`,
  );
});

try {
  console.log('subscriptions (each one gets its own copy of every event it matches):');

  // 1. Prints users: `event.payload` is typed from the zod schema.
  console.log('  welcome-mail  user.created  greets every new user');
  await bus.subscribe(
    'user.created',
    (event, { subscription }) => {
      console.log(
        `  [${subscription}] ${event.type} ${event.payload.id}: welcome ${event.payload.email}`,
      );
      countHandled(subscription);
    },
    { name: 'welcome-mail' },
  );

  // 2. Rejects large orders: each failure is retried after a backoff, until the retry policy
  //    says stop; then the event goes to the dead-letter queue.
  console.log('  billing       order.*       charges orders, fails those over 1000 (retried)');
  await bus.subscribe(
    'order.*',
    (event, { attempt, subscription }) => {
      const { orderId, amount } = event.payload;
      if (amount > 1000) {
        console.log(
          `  [${subscription}] ${event.type} ${orderId}: attempt ${attempt} failed (amount ${amount} is over the limit)`,
        );
        throw new Error(`amount ${amount} is over the limit`);
      }
      console.log(
        `  [${subscription}] ${event.type} ${orderId}: charged ${amount} (attempt ${attempt})`,
      );
      countHandled(subscription);
    },
    { name: 'billing', retry: { maxAttempts: 3, minDelayMs: 50 } },
  );

  // 3. Knows that retrying cannot help: a NonRetryableError goes straight to the dead-letter
  //    queue. It gets the same user.created events as welcome-mail, independently of it.
  console.log('  domain-check  user.created  refuses @example.invalid addresses (not retried)');
  await bus.subscribe(
    'user.created',
    (event, { subscription }) => {
      if (event.payload.email.endsWith('@example.invalid')) {
        console.log(
          `  [${subscription}] ${event.type} ${event.payload.id}: blocked domain, no retry`,
        );
        throw new NonRetryableError('blocked domain');
      }
      console.log(`  [${subscription}] ${event.type} ${event.payload.id}: domain ok`);
      countHandled(subscription);
    },
    { name: 'domain-check' },
  );

  console.log('\npublishing ...');
  await bus.publish('user.created', { id: 'u-1', email: 'ada@example.com' });
  await bus.publish('user.created', { id: 'u-2', email: 'grace@example.com' });
  await bus.publish('order.placed', { orderId: 'o-1', amount: 42 });
  await bus.publish('order.placed', { orderId: 'o-2', amount: 5000 });
  await bus.publish('user.created', { id: 'u-3', email: 'mallory@example.invalid' });

  // 4. A payload that fails its schema is refused before anything is sent.
  try {
    await bus.publish('user.created', { id: 'u-4', email: 'not-an-email' });
  } catch (error) {
    console.log(`  [publish] user.created u-4 refused, nothing sent: ${(error as Error).message}`);
  }

  // 5. Wait for the two events that fail to reach the dead-letter queue (billing's retries
  //    wait for their backoff first).
  const deadline = Date.now() + 5000;
  while (transport.deadLetterQueue.size < 2 && Date.now() < deadline) {
    await new Promise((resolve) => setTimeout(resolve, 20));
  }

  const stats = bus.stats();
  const breaker = bus.circuitBreakerStats();
  const backpressure = bus.backpressureStats();
  const perSubscription = [...handledBy].map(([name, count]) => `${name} ${count}`).join(', ');

  console.log(`\ndead-letter queue: ${transport.deadLetterQueue.size} letters`);
  for (const { event, reason } of transport.deadLetterQueue.list()) {
    console.log(
      `  ${label(event)} from "${reason.subscription ?? '?'}": ${reason.code}, ${reason.message}`,
    );
  }

  console.log('\npublish side:');
  console.log(
    `  circuit breaker ${breaker.state}: ${breaker.totalRequests} publishes went through it, ` +
      `${breaker.rejectedRequests} refused`,
  );
  console.log(
    `  publish queue ${backpressure.currentQueueSize}/${backpressure.maxQueueSize}, ` +
      `${backpressure.droppedEvents} dropped`,
  );

  console.log('\nbus stats:');
  const row = (name: string, value: number, ...meaning: string[]): void => {
    const indent = ' '.repeat(25);
    const [first, ...more] = meaning;
    console.log(`  ${name.padEnd(19)} ${String(value).padEnd(3)} ${first ?? ''}`);
    for (const line of more) console.log(`${indent} ${line}`);
  };
  row('published', stats.published, 'events the transport accepted');
  row(
    'handled',
    stats.handled,
    `handler runs that succeeded: ${perSubscription}`,
    '(each subscription handles its own copy of an event, so one event can',
    'count several times, and handled can exceed published)',
  );
  row('retried', stats.retried, 'failed deliveries handed back for another attempt');
  row('deadLettered', stats.deadLettered, 'events a subscription gave up on');
  row('validationFailures', stats.validationFailures, 'payloads refused by their schema');
} finally {
  await bus.close();
}

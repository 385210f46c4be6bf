/**
 * Watchtower quickstart on the in-memory transport (no broker needed):
 * typed events, a subscriber, a failing handler whose event ends in the dead-letter queue,
 * and the circuit breaker and backpressure stats. Swap MemoryTransport for NatsTransport,
 * RedisTransport ... and nothing else changes.
 */
import { EventBus, MemoryTransport, NonRetryableError, defineEvents } from '@watchtower/core';
import { z } from 'zod';

const events = defineEvents({
  'user.created': z.object({ id: z.string(), email: z.email() }),
  'order.placed': z.object({ orderId: z.string(), amount: z.number().positive() }),
});

const transport = new MemoryTransport();
await using bus = new EventBus({
  transport,
  events,
  source: 'quickstart',
  backpressure: { maxQueueSize: 100, strategy: 'block' },
  circuitBreaker: { failureThreshold: 5, resetTimeoutMs: 30_000 },
});

// 1. A subscriber that prints users: `event.payload` is typed from the zod schema.
await bus.subscribe('user.created', (event) => {
  console.log(`  handled ${event.type}: ${event.payload.email} (id ${event.payload.id})`);
});

// 2. A handler that rejects large orders: retried twice, then dead-lettered.
await bus.subscribe(
  'order.*',
  (event, { attempt }) => {
    if (event.payload.amount > 1000) {
      console.log(`  order ${event.payload.orderId} failed (attempt ${attempt})`);
      throw new Error(`amount ${event.payload.amount} is over the limit`);
    }
    console.log(
      `  handled ${event.type}: order ${event.payload.orderId} for ${event.payload.amount}`,
    );
  },
  { retry: { maxAttempts: 2, minDelayMs: 50 } },
);

// 3. A handler that knows retrying cannot help goes straight to the dead-letter queue.
await bus.subscribe('user.created', (event) => {
  if (event.payload.email.endsWith('@example.invalid')) {
    throw new NonRetryableError('blocked domain');
  }
});

console.log('publishing ...');
await bus.publish('user.created', { id: 'u-1', email: 'ada@example.com' });
await bus.publish('user.created', { id: 'u-2', email: 'grace@example.com' });
await bus.publish('order.placed', { orderId: 'o-1', amount: 42 });
await bus.publish('order.placed', { orderId: 'o-2', amount: 5000 });
await bus.publish('user.created', { id: 'u-3', email: 'mallory@example.invalid' });

// 4. A payload that fails its schema is refused before anything is sent.
try {
  await bus.publish('user.created', { id: 'u-4', email: 'not-an-email' });
} catch (error) {
  console.log(`refused: ${(error as Error).message}`);
}

// 5. Wait for the dead letters (the retries of o-2 take ~150 ms).
const deadline = Date.now() + 5000;
while (transport.deadLetterQueue.size < 2 && Date.now() < deadline) {
  await new Promise((resolve) => setTimeout(resolve, 20));
}

console.log('\ndead-letter queue:');
for (const { event, reason } of transport.deadLetterQueue.list()) {
  const what = event === undefined ? 'undecodable bytes' : `${event.type} ${event.id.slice(0, 8)}`;
  console.log(
    `  ${what}: ${reason.code} after ${reason.attempts} attempt(s) in "${reason.subscription ?? '?'}": ${reason.message}`,
  );
}

const stats = bus.stats();
const breaker = bus.circuitBreakerStats();
const backpressure = bus.backpressureStats();
console.log('\ncircuit breaker:', {
  state: breaker.state,
  totalRequests: breaker.totalRequests,
  rejectedRequests: breaker.rejectedRequests,
});
console.log('backpressure:', {
  queue: `${backpressure.currentQueueSize}/${backpressure.maxQueueSize}`,
  fillRatio: backpressure.fillRatio(),
  droppedEvents: backpressure.droppedEvents,
});
console.log('bus:', {
  published: stats.published,
  handled: stats.handled,
  retried: stats.retried,
  deadLettered: stats.deadLettered,
  validationFailures: stats.validationFailures,
});

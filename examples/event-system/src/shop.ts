/**
 * The event-system example's shop, on whatever two transports it is given: orders go to one
 * (JetStream in `brokers.ts`) under the topic `orders`, notifications to the other (Redis),
 * and two regions (`eu.de`, `us.ca`) share both brokers without seeing each other's events,
 * except for an audit subscription that asks for every origin. Each order carries its id as
 * its ordering key (the `partition-key` header), and billing handles one order's events in order.
 *
 * Every number it prints comes from the run (handler calls, dead letters, `stats()`).
 */
import {
  MemoryIdempotencyStore,
  NonRetryableError,
  createEventSystemBuilder,
  defineEvents,
  type EventSystem,
  type Transport,
} from '@watchtower/core';
import { z } from 'zod';

export const events = defineEvents({
  'order.placed': z.object({ orderId: z.string(), amount: z.number().positive() }),
  'order.shipped': z.object({ orderId: z.string() }),
  'notification.email': z.object({ to: z.email(), subject: z.string() }),
});

type Shop = EventSystem<typeof events>;

/** One region's system over the two transports; `makeTransports` gives it its own clients. */
function region(origin: string, transports: { orders: Transport; notifications: Transport }): Shop {
  return createEventSystemBuilder()
    .withService('shop')
    .withOrigin(origin)
    .withEvents(events)
    .withTransport('orders', transports.orders)
    .withTransport('notifications', transports.notifications)
    .withRoute('order.>', {
      transport: 'orders',
      topic: 'orders',
      orderingKey: (event) => (event.payload as { orderId: string }).orderId,
    })
    .withRoute('notification.>', {
      transport: 'notifications',
      rateLimit: { strategy: 'token-bucket', limit: 100, intervalMs: 1000 },
    })
    .withDefaultTransport('notifications')
    .withPublisher({
      batching: { maxSize: 50, maxWaitMs: 5 },
      retry: { strategy: 'exponential', maxAttempts: 3, minDelayMs: 50 },
    })
    .withConsumer({
      groups: true,
      poisonHandler: (event, reason) => {
        console.log(
          `  [poison handler, ${origin}] ${event?.type ?? 'bytes'} ${event?.id.slice(0, 8) ?? ''}` +
            ` dead-lettered: ${reason.code} after ${reason.attempts} attempt(s)`,
        );
      },
    })
    .withLogger({
      warn: () => undefined,
      error: (_d, message) => console.log(`  (error) ${message}`),
    })
    .build();
}

/** Polls until `done()` or 10 s have passed. */
async function until(done: () => boolean): Promise<void> {
  const deadline = Date.now() + 10_000;
  while (!done() && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 20));
}

/** Runs the shop on the transports `make` returns (called once per region). */
export async function runShop(
  make: () => { orders: Transport; notifications: Transport },
): Promise<void> {
  const eu = region('eu.de', make());
  const us = region('us.ca', make());
  const seen = { euOrders: 0, audit: new Map<string, number>(), emails: 0, poisoned: 0 };
  try {
    await eu.subscribe(
      'order.*',
      (event) => {
        seen.euOrders++;
        if (event.type === 'order.placed' && event.payload.amount > 1000) {
          throw new NonRetryableError(`amount ${event.payload.amount} needs a manual check`);
        }
        console.log(
          `  [eu billing] ${event.type} ${event.payload.orderId} (origin ${event.headers['origin'] ?? '?'}, ` +
            `partition-key ${event.headers['partition-key'] ?? '?'})`,
        );
      },
      // One order's events one at a time, in order; other orders side by side.
      { orderingKey: (event) => event.headers['partition-key'], concurrency: 4 },
    );
    await eu.subscribe(
      'order.>',
      (event) => {
        const origin = event.headers['origin'] ?? '?';
        seen.audit.set(origin, (seen.audit.get(origin) ?? 0) + 1);
      },
      { origins: '*', name: 'audit' },
    );
    await eu.subscribe(
      'notification.email',
      (event) => {
        seen.emails++;
        console.log(`  [eu mailer] to ${event.payload.to}: ${event.payload.subject}`);
      },
      { idempotency: { store: new MemoryIdempotencyStore(), ttlMs: 60_000 } },
    );

    console.log('\npublishing: a batch of eu orders, one us order, two copies of one e-mail');
    const outcomes = await eu.publishBatch([
      { type: 'order.placed', payload: { orderId: 'eu-1', amount: 40 } },
      { type: 'order.placed', payload: { orderId: 'eu-2', amount: 4000 } },
      { type: 'order.shipped', payload: { orderId: 'eu-1' } },
      { type: 'order.placed', payload: { orderId: 'eu-3', amount: -5 } },
    ]);
    for (const outcome of outcomes) {
      if (!outcome.ok) console.log(`  [publish] ${outcome.type} refused: ${outcome.error.code}`);
    }
    await us.publish('order.placed', { orderId: 'us-1', amount: 12 });
    const mail = { to: 'ada@example.com', subject: 'your order eu-1 shipped' };
    await eu.publish('notification.email', mail, { headers: { 'idempotency-key': 'mail-eu-1' } });
    await eu.publish('notification.email', mail, { headers: { 'idempotency-key': 'mail-eu-1' } });

    await until(
      () => seen.euOrders >= 3 && (seen.audit.get('us.ca') ?? 0) >= 1 && eu.stats().duplicates >= 1,
    );
    const stats = eu.stats();
    console.log('\nwhat arrived:');
    console.log(`  eu billing handled ${seen.euOrders} eu orders (the us order is not its origin)`);
    console.log(
      `  audit saw ${[...seen.audit].map(([origin, n]) => `${n} from ${origin}`).join(', ')}`,
    );
    console.log(`  mailer sent ${seen.emails} e-mail, skipped ${stats.duplicates} duplicate`);
    console.log('\neu system stats:');
    console.log(
      `  published ${stats.published}, refused ${stats.publishFailed}, batches ${stats.batches}`,
    );
    for (const [name, bus] of Object.entries(stats.transports)) {
      console.log(`  ${name}: published ${bus.published}, dead-lettered ${bus.deadLettered}`);
    }
  } finally {
    await Promise.all([eu.close(), us.close()]);
  }
}

/**
 * Watchtower on Redis Streams (needs Redis 6.2+; URL from WATCHTOWER_REDIS_URL, default
 * redis://127.0.0.1:6379):
 *
 * 1. two workers share the consumer group `billing`: each invoice is handled by one of them;
 * 2. an audit subscriber without a group gets every event (`invoice.>` wildcard);
 * 3. a handler that fails is retried by redelivery (the attempt is Redis' delivery count),
 *    then the event lands in the dead-letter stream `{prefix}:dlq`, read back with consumeDlq;
 * 4. an event written by a Rust Watchtower service (a plain XADD) arrives like any other.
 *
 * It uses a prefix of its own and deletes its streams at the end.
 */
import { randomBytes } from 'node:crypto';
import { Redis } from 'ioredis';
import type { DeadLetter, Event } from '@watchtower/core';
import { RedisSubscriber } from '@watchtower/redis';

const url = process.env['WATCHTOWER_REDIS_URL'] ?? 'redis://127.0.0.1:6379';
const prefix = `example-${randomBytes(4).toString('hex')}`;
const invoices = 6;

/** Polls `condition` until it holds; fails after `timeoutMs`. */
async function waitUntil(
  condition: () => boolean,
  what: string,
  timeoutMs = 10_000,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

function worker(name: string): RedisSubscriber {
  return new RedisSubscriber({
    url,
    prefix,
    source: name,
    claimIntervalMs: 200,
    discoveryIntervalMs: 200,
  });
}

const names = ['worker-a', 'worker-b'];
const workers = names.map((name) => worker(name));
const audit = worker('audit');
const publisher = worker('publisher');

// Every invoice ends handled by a worker or, for the failing one, in the dead-letter stream.
let settled = 0;
let allSettled: () => void = () => {};
const done = new Promise<void>((resolve) => {
  allSettled = resolve;
});
const settle = (): void => {
  if (++settled === invoices) allSettled();
};

for (const [index, bus] of workers.entries()) {
  const name = names[index] ?? 'worker';
  await bus.subscribe(
    'invoice.issued',
    (event: Event, { attempt }) => {
      const { number } = event.payload as { number: number };
      if (number === 4) {
        console.log(`  ${name} failed invoice ${number} (attempt ${attempt})`);
        throw new Error('the payment provider rejected invoice 4');
      }
      console.log(`  ${name} handled invoice ${number}`);
      settle();
    },
    { group: 'billing', retry: { maxAttempts: 3, minDelayMs: 100 } },
  );
  bus.on('deadLetter', settle);
}

const audited: string[] = [];
await audit.subscribe('invoice.>', (event) => {
  audited.push(event.type);
});

console.log(`Publishing ${invoices} invoices to ${prefix}:invoice.issued`);
for (let number = 1; number <= invoices; number++) {
  await publisher.publish('invoice.issued', { number, amount: number * 10 });
}

// A Rust Watchtower service writes the same wire format with a plain XADD.
const redis = new Redis(url);
await redis.xadd(
  `${prefix}:invoice.voided`,
  '*',
  'event',
  JSON.stringify({
    metadata: {
      id: '7b0f6b1e-3f5e-4c1e-9d7a-2f4c8e1a9b3d',
      event_type: 'invoice.voided',
      timestamp: '2026-11-22T10:00:00.123456789Z',
      source: 'rust-billing',
      correlation_id: null,
    },
    payload: { number: 1 },
  }),
);

await done;
// The wildcard finds the stream invoice.voided on its next discovery pass.
await waitUntil(() => audited.length === invoices + 1, 'the audit subscriber');
console.log(`Audit saw: ${audited.length} events (${[...new Set(audited)].sort().join(', ')})`);

const letters: DeadLetter[] = [];
const reader = await publisher.transport.consumeDlq((letter) => {
  letters.push(letter);
});
await waitUntil(() => letters.length > 0, 'the dead letter');
await reader.unsubscribe();
for (const letter of letters) {
  console.log(
    `Dead letter: ${letter.event?.type ?? 'raw bytes'} after ${letter.reason.attempts} attempts: ${letter.reason.message}`,
  );
}
const [raw] = await redis.xrange(`${prefix}:dlq`, '-', '+');
console.log(
  `XRANGE ${prefix}:dlq fields: ${(raw?.[1] ?? []).filter((_, i) => i % 2 === 0).join(', ')}`,
);

await Promise.all([...workers, audit, publisher].map((bus) => bus.close()));
const keys = await redis.keys(`${prefix}:*`);
if (keys.length > 0) await redis.del(...keys);
await redis.quit();
console.log('Done.');

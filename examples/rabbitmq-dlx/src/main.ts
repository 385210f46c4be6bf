/**
 * Watchtower on RabbitMQ (URL from WATCHTOWER_AMQP_URL, default
 * amqp://guest:guest@127.0.0.1:5672):
 *
 * 1. two workers share the group queue `billing`: each invoice is handled by one of them;
 * 2. an audit subscriber without a group (an exclusive queue of its own) gets every event,
 *    through the `invoice.>` wildcard;
 * 3. a handler that fails is retried through a delay queue (the attempt travels in the
 *    message), then the event is dead-lettered to `{exchange}.dlx` with routing key
 *    `dlq.invoice.issued` into `{exchange}.dlq`, where a raw amqplib consumer reads it with the
 *    headers Rust Watchtower writes (`x-error`, `x-original-routing-key`);
 * 4. an event a Rust Watchtower service publishes (plain AMQP, its JSON) arrives like any other.
 *
 * It uses an exchange of its own and deletes what it declared at the end.
 */
import { randomBytes } from 'node:crypto';
import amqp from 'amqplib';
import type { Event } from '@watchtower/core';
import { RabbitMQSubscriber } from '@watchtower/rabbitmq';

const url = process.env['WATCHTOWER_AMQP_URL'] ?? 'amqp://guest:guest@127.0.0.1:5672';
const exchange = `example-${randomBytes(4).toString('hex')}`;
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

function service(name: string): RabbitMQSubscriber {
  return new RabbitMQSubscriber({
    url,
    exchange,
    connectionName: `${exchange}-${name}`,
    source: name,
  });
}

const names = ['worker-a', 'worker-b'];
const workers = names.map((name) => service(name));
const audit = service('audit');
const publisher = service('publisher');

// Every invoice ends handled by a worker or, for the failing one, in the dead-letter queue.
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
    { group: 'billing', concurrency: 2, retry: { maxAttempts: 3, minDelayMs: 100 } },
  );
  bus.on('deadLetter', settle);
}

const audited: string[] = [];
await audit.subscribe('invoice.>', (event) => {
  audited.push(event.type);
});

console.log(`Publishing ${invoices} invoices to exchange ${exchange}, routing key invoice.issued`);
for (let number = 1; number <= invoices; number++) {
  await publisher.publish('invoice.issued', { number, amount: number * 10 });
}

// A Rust Watchtower service publishes the same wire format with plain AMQP.
const raw = await amqp.connect(url);
const channel = await raw.createConfirmChannel();
channel.publish(
  exchange,
  'invoice.voided',
  Buffer.from(
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
  ),
  { persistent: true, contentType: 'application/json' },
);
await channel.waitForConfirms();

await done;
await waitUntil(() => audited.length === invoices + 1, 'the audit subscriber');
console.log(`Audit saw: ${audited.length} events (${[...new Set(audited)].sort().join(', ')})`);

// The dead letter, read from the DLQ as any AMQP client (or Rust Watchtower) reads it.
const dlq = `${exchange}.dlq`;
let letter: amqp.GetMessage | false = false;
for (let tries = 0; letter === false && tries < 100; tries++) {
  letter = await channel.get(dlq, { noAck: true });
  if (letter === false) await new Promise((resolve) => setTimeout(resolve, 50));
}
if (letter === false) throw new Error('no dead letter in the DLQ');
const headers = letter.properties.headers ?? {};
console.log(
  `Dead letter in ${dlq} via ${letter.fields.exchange}, routing key ${letter.fields.routingKey}`,
);
console.log(`  x-error: ${String(headers['x-error'])}`);
console.log(`  x-original-routing-key: ${String(headers['x-original-routing-key'])}`);
const reason = JSON.parse(String(headers['x-watchtower-reason'])) as { attempts: number };
console.log(`  attempts: ${reason.attempts}`);

await Promise.all([...workers, audit, publisher].map((bus) => bus.close()));
for (const queue of [`${exchange}.group.billing:invoice.issued`, dlq])
  await channel.deleteQueue(queue);
for (const name of [exchange, `${exchange}.dlx`]) await channel.deleteExchange(name);
await raw.close();
console.log('Done.');

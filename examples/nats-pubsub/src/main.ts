/**
 * Watchtower on NATS, against a local nats-server (JetStream on for mode `jetstream`):
 *
 *   pnpm --filter @watchtower/example-nats-pubsub start         # JetStream (default)
 *   pnpm --filter @watchtower/example-nats-pubsub start:core    # core NATS
 *
 * Server URL from WATCHTOWER_NATS_URL (default nats://127.0.0.1:4222). Shows wildcard
 * subscriptions over dotted types, a consumer group sharing the work, a failing handler whose
 * event is retried (by the broker in JetStream mode) and dead-lettered on `dlq.{type}`, the
 * dead letters read back with consumeDlq, and the health check.
 */
import { createEvent, type DeadLetter } from '@watchtower/core';
import { NatsSubscriber, type NatsMode } from '@watchtower/nats';

const mode: NatsMode = process.argv[2] === 'core' ? 'core' : 'jetstream';
const servers = process.env['WATCHTOWER_NATS_URL'] ?? 'nats://127.0.0.1:4222';

// Own subjects and streams, so the example never mixes with an application's events; the
// streams keep a minute of history, so repeated runs do not pile up.
const nats = {
  servers,
  mode,
  subjectPrefix: 'examples.nats-pubsub.events',
  dlqPrefix: 'examples.nats-pubsub.dlq',
  stream: { name: 'EXAMPLE_NATS_PUBSUB', maxAgeMs: 60_000 },
  dlq: { streamName: 'EXAMPLE_NATS_PUBSUB_DLQ', maxAgeMs: 60_000 },
  circuitBreaker: { failureThreshold: 5, resetTimeoutMs: 10_000 },
  backpressure: { maxQueueSize: 500, strategy: 'block' as const },
};

console.log(`NATS ${mode} on ${servers}`);
await using publisher = new NatsSubscriber({ ...nats, source: 'nats-pubsub-example' });
await using workerA = new NatsSubscriber(nats);
await using workerB = new NatsSubscriber(nats);
await using auditor = new NatsSubscriber(nats);

// 1. Wildcards: `*` is one token, `>` one or more.
const audited: string[] = [];
await auditor.subscribe('user.>', (event) => {
  audited.push(event.type);
});

// 2. A consumer group: each order goes to one of the two workers.
const handledBy = { a: 0, b: 0 };
const retry = { maxAttempts: 3, minDelayMs: 100, maxDelayMs: 200 };
const handleOrder =
  (worker: 'a' | 'b') =>
  (event: { payload: unknown }, { attempt }: { attempt: number }) => {
    const order = event.payload as { id: string; amount: number };
    if (order.amount > 1000) {
      console.log(`  worker ${worker}: order ${order.id} refused (attempt ${attempt})`);
      throw new Error(`amount ${order.amount} over the limit`);
    }
    handledBy[worker]++;
  };
await workerA.subscribe('order.*', handleOrder('a'), { group: 'orders', retry });
await workerB.subscribe('order.*', handleOrder('b'), { group: 'orders', retry });

// 3. Dead letters published from now on (they live in a JetStream stream when the server has it).
const letters: DeadLetter[] = [];
const dlq = await auditor.transport.consumeDlq(
  (letter) => {
    letters.push(letter);
  },
  { fromStart: false },
);

console.log('publishing ...');
await publisher.publish('user.created', { id: 'u-1' });
await publisher.publish('user.profile.updated', { id: 'u-1', name: 'Ada' });
for (let i = 1; i <= 20; i++) {
  await publisher.publish(
    createEvent('order.placed', { id: `o-${i}`, amount: i === 7 ? 5000 : i * 10 }),
  );
}

const deadline = Date.now() + 10_000;
while (
  (letters.length < 1 || handledBy.a + handledBy.b < 19 || audited.length < 2) &&
  Date.now() < deadline
) {
  await new Promise((resolve) => setTimeout(resolve, 20));
}
await dlq.unsubscribe();

console.log(`\naudited (user.>): ${audited.join(', ')}`);
console.log(`orders handled: worker a ${handledBy.a}, worker b ${handledBy.b}`);
for (const letter of letters) {
  const { code, attempts, message, subscription } = letter.reason;
  console.log(
    `dead letter: ${letter.event?.type ?? 'raw bytes'} ${JSON.stringify(letter.event?.payload)}: ${code} after ${attempts} attempts in "${subscription ?? '?'}": ${message}`,
  );
}
console.log('health:', await publisher.healthCheck());
console.log('publisher:', {
  published: publisher.stats().published,
  circuit: publisher.circuitBreakerStats().state,
});

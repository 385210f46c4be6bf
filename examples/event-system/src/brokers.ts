/**
 * The event-system example on real brokers: orders on NATS JetStream, notifications on Redis
 * Streams, two regions sharing both (`pnpm start:brokers`, with the local brokers up).
 * Subjects, streams and keys are the example's own; the JetStream streams keep a minute.
 */
import { NatsTransport } from '@watchtower/nats';
import { RedisTransport } from '@watchtower/redis';
import { runShop } from './shop.js';

const servers = process.env['WATCHTOWER_NATS_URL'] ?? 'nats://127.0.0.1:4222';
const url = process.env['WATCHTOWER_REDIS_URL'] ?? 'redis://127.0.0.1:6379';

console.log(
  `event system on NATS JetStream (${servers}) and Redis (${url}), regions eu.de and us.ca`,
);
await runShop(() => ({
  orders: new NatsTransport({
    servers,
    mode: 'jetstream',
    subjectPrefix: 'examples.event-system.events',
    dlqPrefix: 'examples.event-system.dlq',
    stream: { name: 'EXAMPLE_EVENT_SYSTEM', maxAgeMs: 60_000 },
    dlq: { streamName: 'EXAMPLE_EVENT_SYSTEM_DLQ', maxAgeMs: 60_000 },
  }),
  notifications: new RedisTransport({ url, prefix: 'examples:event-system' }),
}));

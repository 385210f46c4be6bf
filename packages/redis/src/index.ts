export { RedisTransport, REDIS_TRANSPORT_INFO } from './redis-transport.js';
export type { RedisTransportEvents } from './redis-transport.js';
export { DEFAULT_REDIS_CONFIG, DEFAULT_CLUSTER_PREFIX, resolveRedisConfig } from './config.js';
export type {
  RedisConfig,
  RedisClusterConfig,
  RedisStartFrom,
  ResolvedRedisConfig,
} from './config.js';
export { mapRedisError } from './map-error.js';
export { ReplicationTimeoutError } from './replication-error.js';
export { streamKey, defaultDlqKey } from './keys.js';
export { RedisSubscriber } from './redis-subscriber.js';
export type { RedisSubscriberOptions } from './redis-subscriber.js';
export { RedisIdempotencyStore } from './idempotency-store.js';
export type { RedisIdempotencyStoreOptions } from './idempotency-store.js';

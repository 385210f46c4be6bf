export {
  ErrorCode,
  WatchtowerError,
  ConnectionError,
  TimeoutError,
  ClosedError,
  CircuitOpenError,
  BackpressureError,
  ValidationError,
  SerializationError,
  NonRetryableError,
  configError,
  isWatchtowerError,
  toWatchtowerError,
  describeError,
} from './errors.js';
export type { WatchtowerErrorOptions, ValidationIssue } from './errors.js';

export { createEvent, isValidEventType, assertEventType } from './event.js';
export type { Event, EventMetadataInput } from './event.js';

export { encodeEvent, encodeEventBytes, decodeEvent, decodeEventFromValue } from './codec.js';

export {
  compilePattern,
  matchPattern,
  patternsOverlap,
  isValidPattern,
  assertPattern,
  PatternIndex,
  DEFAULT_PATTERN_INDEX_OPTIONS,
} from './pattern.js';
export type { CompiledPattern, PatternIndexOptions } from './pattern.js';

export { defineEvents, runSchema } from './schema.js';
export type {
  StandardSchemaV1,
  StandardSchemaResult,
  SchemaInput,
  SchemaOutput,
  SchemaOutcome,
  EventCatalog,
  MatchesPattern,
  TypesMatching,
} from './schema.js';

export type {
  Transport,
  TransportInfo,
  TransportCapabilities,
  TransportSubscription,
  TransportSubscribeOptions,
  HealthStatus,
  PublishOptions,
  PublishReceipt,
  StartPosition,
  NackOptions,
  Delivery,
  DeliveryReceiver,
  EventDelivery,
  MalformedDelivery,
  DeadLetter,
  DeadLetterReason,
  ReducedDeadLetter,
  DeadLetterHandler,
  MalformedMessage,
  ConsumeDlqOptions,
  SubscriptionHandle,
  CloseOptions,
  ConnectionChange,
} from './transport.js';

export { systemClock, sleep } from './clock.js';
export type { Clock, TimerHandle } from './clock.js';
export {
  CircuitBreaker,
  DEFAULT_CIRCUIT_BREAKER_OPTIONS,
  isCircuitFailure,
} from './circuit-breaker.js';
export type {
  CircuitBreakerOptions,
  CircuitBreakerStats,
  CircuitBreakerEvents,
  CircuitState,
} from './circuit-breaker.js';
export { BackpressureController, DEFAULT_BACKPRESSURE_OPTIONS } from './backpressure.js';
export type {
  BackpressureOptions,
  BackpressureStats,
  BackpressureStrategy,
  BackpressureEvents,
} from './backpressure.js';
export { RetryPolicy, DEFAULT_RETRY_OPTIONS, isRetryableError } from './retry-policy.js';
export type { RetryPolicyOptions, RetryStrategy, RetryExecuteOptions } from './retry-policy.js';
export { InMemoryDeadLetterQueue, DEFAULT_DEAD_LETTER_QUEUE_OPTIONS } from './dead-letter-queue.js';
export type {
  DeadLetterQueue,
  DeadLetterQueueStats,
  DeadLetterQueueEvents,
  InMemoryDeadLetterQueueOptions,
} from './dead-letter-queue.js';

export { consoleLogger } from './logger.js';
export type { Logger, LogMethod, LogLevel } from './logger.js';
export { EventBus, DEFAULT_EVENT_BUS_OPTIONS, EVENT_BUS_OPTION_KEYS } from './event-bus.js';
export type {
  EventBusOptions,
  EventBusStats,
  EventBusCounters,
  EventBusEvents,
  EventFor,
  EventHandler,
  HandlerContext,
  SubscribeOptions,
  ValidationMode,
} from './event-bus.js';

export {
  MemoryTransport,
  MemoryBroker,
  DEFAULT_MEMORY_TRANSPORT_OPTIONS,
} from './memory-transport.js';
export type { MemoryTransportOptions, MemoryBrokerOptions } from './memory-transport.js';

export {
  EventSystem,
  createEventSystem,
  ORIGIN_HEADER,
  EVENT_TYPE_HEADER,
  IDEMPOTENCY_KEY_HEADER,
  PARTITION_KEY_HEADER,
} from './event-system/event-system.js';
export type {
  SystemSubscribeOptions,
  BatchSubscribeOptions,
  BatchEvent,
  BatchOutcome,
  EventSystemStats,
  EventSystemHealth,
} from './event-system/event-system.js';
export { EventSystemBuilder, createEventSystemBuilder } from './event-system/builder.js';
export type { OriginOptions } from './event-system/builder.js';
export type { EventMiddleware } from './event-system/middleware.js';
export {
  CONTENT_ENCODING_HEADER,
  DEFAULT_COMPRESSION_OPTIONS,
  MAX_DECOMPRESSED_BYTES,
} from './event-system/compression.js';
export type { CompressionOptions } from './event-system/compression.js';
export { versions, SCHEMA_VERSION_HEADER } from './event-system/schema-versions.js';
export type { VersionedSchema, VersionsOptions } from './event-system/schema-versions.js';
export type { OrderingKey } from './event-system/ordering.js';
export type { BatchHandler, BatchResult } from './event-system/batch-consumer.js';
export { canPublishBatch } from './event-system/config.js';
export type {
  EventSystemConfig,
  RouteConfig,
  RouteOptions,
  BatchingOptions,
  PublisherOptions,
  ConsumerOptions,
  PoisonHandler,
  SystemBusOptions,
} from './event-system/config.js';
export { DEFAULT_RATE_LIMIT_OPTIONS } from './event-system/rate-limiter.js';
export type { RateLimitOptions, RateLimitStrategy } from './event-system/rate-limiter.js';
export {
  MemoryIdempotencyStore,
  DEFAULT_MEMORY_IDEMPOTENCY_OPTIONS,
} from './event-system/idempotency.js';
export type {
  IdempotencyStore,
  MemoryIdempotencyStoreOptions,
} from './event-system/idempotency.js';

export { DEFAULT_TELEMETRY_OPTIONS } from './telemetry/telemetry-options.js';
export type {
  TelemetryOptions,
  TelemetryTracerProvider,
  TelemetryMeterProvider,
} from './telemetry/telemetry-options.js';
export {
  ATTR as TELEMETRY_ATTRIBUTES,
  CIRCUIT_STATE_VALUE,
  INSTRUMENTATION_NAME,
  OTHER_DESTINATION,
} from './telemetry/bus-telemetry.js';
export { TRACEPARENT, TRACESTATE } from './telemetry/trace-context.js';

export { createHealthHandler, DEFAULT_HEALTH_HANDLER_OPTIONS } from './health.js';
export type {
  HealthHandler,
  HealthHandlerOptions,
  HealthRequest,
  HealthResponse,
  ReadinessReport,
  TransportReadiness,
} from './health.js';

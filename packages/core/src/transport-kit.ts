/**
 * `@watchtower/core/transport-kit`: what a transport needs and a user of the bus does not.
 * A transport imports from here and from `@watchtower/core`, never from deeper paths; what a
 * transport must do with these pieces is in docs/TRANSPORTS.md.
 */
export {
  DeliveryBuffer,
  type BufferReceiver,
  type DeliveryBufferOptions,
} from './transport-kit/delivery-buffer.js';
export {
  SourceSubscription,
  DEFAULT_UNSUBSCRIBE_TIMEOUT_MS,
  type DeliverySource,
  type SourceSubscriptionOptions,
} from './transport-kit/source-subscription.js';
export {
  DeadLetterConsumer,
  deadLetterRetryDelayMs,
  type DeadLetterConsumerOptions,
  type DeadLetterEntry,
  type DeadLetterSource,
} from './transport-kit/dead-letter-consumer.js';
export {
  deadLetterReason,
  readDeadLetterReason,
  fallbackReason,
  failureCode,
  isMalformedMessage,
  originalTypeOf,
  rawBytesToText,
  rawBytesFromText,
  type DeadLetterReasonInput,
  type RawBytesText,
} from './transport-kit/dead-letter-record.js';
export {
  TransportLifecycle,
  CLOSE_MARGIN_MS,
  type LifecyclePhase,
  type TransportLifecycleOptions,
  type TransportErrorEvents,
  type CloseSteps,
} from './transport-kit/lifecycle.js';
export {
  reduceDeadLetter,
  REDUCED_BODY_BYTES,
  type ReduceInput,
} from './transport-kit/reduced-dead-letter.js';
export {
  TIMED_OUT,
  within,
  withTimeout,
  abortError,
  throwIfAborted,
  raceAbort,
  Deadline,
  Pause,
  repeat,
  unrefTimer,
  Backoff,
  AbortScope,
  type BackoffOptions,
} from './transport-kit/timing.js';
export { TurnBatcher, type BatchSchedule } from './transport-kit/turn-batcher.js';
export { RESOLVED } from './transport-kit/resolved.js';
export {
  checkSubscribeOptions,
  checkGroup,
  checkStartFrom,
  checkConsumeDlqOptions,
  checkPublishOptions,
  checkNackOptions,
  rejection,
  type StartPositionKind,
  type SubscribeOptionRules,
  type CheckedSubscribeOptions,
  type CheckedConsumeDlqOptions,
} from './transport-kit/option-checks.js';
export {
  splitSubscriberOptions,
  type SplitSubscriberOptions,
} from './transport-kit/subscriber-options.js';
export { Fifo } from './transport-kit/fifo.js';
export { OrderedSlots } from './transport-kit/ordered-slots.js';
export { BoundedMemo } from './transport-kit/bounded-memo.js';
export { Emitter, type EventMap } from './emitter.js';
export {
  withDefaults,
  rejectUnknownOptions,
  checkOptionKeys,
  checkInteger,
  checkNumber,
  checkOneOf,
  checkFunction,
  checkClock,
  describeValue,
  objectOption,
  recordOption,
  integerOption,
  limitOption,
  numberOption,
  stringOption,
  booleanOption,
  oneOfOption,
  functionOption,
  clockOption,
  type IntegerBounds,
  type NumberBounds,
  type StringRule,
} from './options.js';
export { toNatsSubject, toAmqpBindingKey } from './pattern.js';
export { TRANSPORT_OPTION_KEYS } from './transport.js';

/**
 * Names and declarations of what the transport creates on the broker: the event exchange, its
 * dead-letter exchange and queue (named as Rust Watchtower names them), subscription queues and
 * their delay queues, and the binding of a pattern on each exchange type. Pure functions;
 * nothing here talks to a broker.
 */
import { compilePattern, configError, type CompiledPattern } from '@watchtower/core';
import { toAmqpBindingKey } from '@watchtower/core/transport-kit';
import type { Options } from 'amqplib';
import type { RabbitMQExchangeType, ResolvedRabbitMQConfig } from './config.js';

/** Header with the attempt number of a delivery, written when a delivery is sent again. */
export const ATTEMPT_HEADER = 'x-watchtower-attempt';
/** Header with the routing key a message was first published with, kept when it is sent again. */
export const ROUTING_KEY_HEADER = 'x-watchtower-routing-key';
/** Header with the event type, for routing on a headers exchange. */
export const TYPE_HEADER = 'x-watchtower-type';
/** Header of a dead letter: the reason's message (as Rust Watchtower writes it). */
export const ERROR_HEADER = 'x-error';
/** Header of a dead letter: the event type it was published under (as Rust writes it). */
export const ORIGINAL_ROUTING_KEY_HEADER = 'x-original-routing-key';
/** Header of a dead letter: the whole `DeadLetterReason` as JSON. */
export const REASON_HEADER = 'x-watchtower-reason';

/** The dead-letter exchange of `exchange`: `{exchange}.dlx`. */
export function dlxName(exchange: string): string {
  return `${exchange}.dlx`;
}

/** The dead-letter queue of `exchange`: `{exchange}.dlq`. */
export function dlqName(exchange: string): string {
  return `${exchange}.dlq`;
}

/**
 * The dead-letter queue: durable, and a quorum queue with `queueType` `'quorum'`, so that in a
 * cluster it does not live on one node (a durable classic queue whose node is down cannot be
 * declared, and the transport declares the DLQ on every connect).
 */
export function dlqQueueOptions(
  config: Pick<ResolvedRabbitMQConfig, 'queueType'>,
): Options.AssertQueue {
  return config.queueType === 'quorum'
    ? { durable: true, arguments: { 'x-queue-type': 'quorum' } }
    : { durable: true };
}

/** The routing key of a dead letter of `type` on the DLX: `dlq.{type}`. */
export function dlqRoutingKey(type: string): string {
  return `dlq.${type}`;
}

/**
 * The queue a group reads `pattern` from: one per group and pattern, shared by its members.
 * Neither a group name nor a pattern contains `:`, so no two pairs share a name.
 */
export function groupQueueName(exchange: string, group: string, pattern: string): string {
  return `${exchange}.group.${group}:${pattern}`;
}

/**
 * An exclusive queue of one subscription without a group: `instance` is random per transport,
 * so that two transports with one connection name (the default names the process) never ask
 * for the same exclusive queue.
 */
export function ownQueueName(
  exchange: string,
  connection: string,
  instance: string,
  seq: number,
): string {
  return `${exchange}.own.${connection}.${instance}.${seq}`;
}

/**
 * Delays are rounded up to the next step of the R10 series (1, 1.25, 1.6, 2, 2.5, 3.15, 4, 5,
 * 6.3, 8 per decade): one delay queue per step and queue, each with one TTL, so that a short
 * delay never waits behind a long one at the head of a queue. A delay is then at most 26%
 * longer than asked, never shorter.
 */
const R10 = [1, 1.25, 1.6, 2, 2.5, 3.15, 4, 5, 6.3, 8] as const;

/** The longest step: its TTL and expiry (step + a minute) stay within RabbitMQ's 32-bit limit. */
const MAX_STEP_MS = 2 ** 31 - 1 - 60_000;

/** The delay queue step `delayMs` is rounded up to, in milliseconds (at least 1). */
export function delayStepMs(delayMs: number): number {
  if (delayMs <= 1) return 1;
  if (delayMs >= MAX_STEP_MS) return MAX_STEP_MS;
  let decade = 10 ** Math.floor(Math.log10(delayMs));
  for (;;) {
    for (const step of R10) {
      const value = Math.ceil(step * decade);
      if (value >= delayMs) return Math.min(value, MAX_STEP_MS);
    }
    decade *= 10;
  }
}

/** The delay queue of `queue` for the step `stepMs`. */
export function delayQueueName(queue: string, stepMs: number): string {
  // `~` is in no pattern, group name or queue suffix: no delay queue is named as a queue.
  return `${queue}~delay.${stepMs}`;
}

/**
 * A delay queue: messages wait `stepMs`, then the broker dead-letters them through the default
 * exchange straight back to `queue` (not to the event exchange, which would hand the retry to
 * every other subscription bound for the type). It deletes itself after a minute unused.
 */
export function delayQueueOptions(
  queue: string,
  stepMs: number,
  durable: boolean,
): Options.AssertQueue {
  return {
    durable,
    arguments: {
      'x-queue-type': 'classic',
      'x-message-ttl': stepMs,
      'x-dead-letter-exchange': '',
      'x-dead-letter-routing-key': queue,
      'x-expires': stepMs + 60_000,
    },
  };
}

/** The arguments of a subscription queue: type, TTL, length bound, delivery limit, the DLX. */
export function subscriptionQueueOptions(
  config: ResolvedRabbitMQConfig,
  own: boolean,
): Options.AssertQueue {
  const args: Record<string, unknown> = {
    // What the broker dead-letters itself (TTL, overflow, delivery limit) lands in the DLQ.
    'x-dead-letter-exchange': dlxName(config.exchange),
    // Quorum queues cannot be exclusive: a subscription of its own keeps a classic queue.
    'x-queue-type': own ? 'classic' : config.queueType,
  };
  if (config.queueMessageTtlMs !== null) args['x-message-ttl'] = config.queueMessageTtlMs;
  if (config.maxLength !== null) {
    args['x-max-length'] = config.maxLength;
    args['x-overflow'] = config.overflow;
  }
  if (!own && config.deliveryLimit !== null) args['x-delivery-limit'] = config.deliveryLimit;
  return own
    ? { durable: false, exclusive: true, autoDelete: false, arguments: args }
    : { durable: config.durable, arguments: args };
}

/** How a subscription's queue is bound, and whether deliveries must be matched in process. */
export interface Binding {
  readonly pattern: CompiledPattern;
  readonly routingKey: string;
  readonly args: Record<string, unknown> | undefined;
  /** The broker's matching is wider than the pattern: check each delivered type. */
  readonly filter: boolean;
}

/**
 * The binding of `pattern` on an exchange of `type`.
 *
 * @throws `VALIDATION` for an invalid pattern, `CONFIG` for a wildcard on a direct exchange.
 */
export function bindingFor(pattern: string, type: RabbitMQExchangeType): Binding {
  const compiled = compilePattern(pattern);
  switch (type) {
    case 'topic':
      // AMQP `#` also matches no token at all (`a.#` matches `a`), `>` does not.
      return {
        pattern: compiled,
        routingKey: toAmqpBindingKey(pattern),
        args: undefined,
        filter: compiled.tokens.at(-1) === '>',
      };
    case 'direct':
      if (!compiled.literal) {
        throw configError(
          'pattern',
          `${JSON.stringify(pattern)} has wildcards, which a direct exchange cannot route: use exchangeType "topic"`,
        );
      }
      return { pattern: compiled, routingKey: pattern, args: undefined, filter: false };
    case 'fanout':
      return { pattern: compiled, routingKey: '', args: undefined, filter: true };
    case 'headers':
      return compiled.literal
        ? {
            pattern: compiled,
            routingKey: '',
            args: { 'x-match': 'all', [TYPE_HEADER]: pattern },
            filter: false,
          }
        : { pattern: compiled, routingKey: '', args: { 'x-match': 'all' }, filter: true };
  }
}

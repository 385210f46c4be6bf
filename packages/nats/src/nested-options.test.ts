import { configErrorField } from '@watchtower/core/testing';
import { describe, expect, it } from 'vitest';
import { resolveNatsConfig, type NatsConfig } from './config.js';
import { NatsSubscriber } from './nats-subscriber.js';

/*
 * An options object given as something else (a number, a string, an array, null) is a CONFIG
 * error naming the field, never read as "no options" and replaced by the defaults.
 */

const NOT_OBJECTS: [string, unknown][] = [
  ['a number', 5],
  ['a string', 'on'],
  ['true', true],
  ['null', null],
  ['an array', []],
];

describe('NATS config: nested options objects', () => {
  const fields = ['stream', 'dlq', 'consumer', 'auth', 'tls', 'connectionOptions'] as const;

  it.each(
    fields.flatMap((field) => NOT_OBJECTS.map(([what, value]) => [field, what, value] as const)),
  )('refuses %s given as %s, naming it', (field, _what, value) => {
    const config = { mode: 'jetstream', [field]: value } as Partial<NatsConfig>;
    expect(configErrorField(() => resolveNatsConfig(config))).toBe(field);
  });

  it.each(NOT_OBJECTS)('refuses a whole config given as %s with CONFIG', (_what, value) => {
    expect(configErrorField(() => resolveNatsConfig(value as Partial<NatsConfig>))).toBeDefined();
  });

  it.each([
    ['retry', { retry: 0 }],
    ['backpressure', { backpressure: 500 }],
    ['circuitBreaker', { circuitBreaker: 'off' }],
    ['subscriptionDefaults', { subscriptionDefaults: [] }],
  ])('NatsSubscriber refuses the bus option %s given as a non-object', (field, options) => {
    expect(configErrorField(() => new NatsSubscriber(options as never))).toBe(field);
  });
});

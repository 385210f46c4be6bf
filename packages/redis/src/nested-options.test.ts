import { configErrorField } from '@watchtower/core/testing';
import { describe, expect, it } from 'vitest';
import { resolveRedisConfig, type RedisConfig } from './config.js';
import { RedisSubscriber } from './redis-subscriber.js';

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

describe('Redis config: nested options objects', () => {
  it.each(
    (['redis', 'cluster'] as const).flatMap((field) =>
      NOT_OBJECTS.map(([what, value]) => [field, what, value] as const),
    ),
  )('refuses %s given as %s, naming it', (field, _what, value) => {
    expect(configErrorField(() => resolveRedisConfig({ [field]: value }))).toBe(field);
  });

  it.each(NOT_OBJECTS)('refuses cluster.options given as %s, naming it', (_what, value) => {
    expect(
      configErrorField(() => resolveRedisConfig({ cluster: { options: value } } as RedisConfig)),
    ).toBe('cluster.options');
  });

  it.each(NOT_OBJECTS)('refuses a whole config given as %s with CONFIG', (_what, value) => {
    expect(configErrorField(() => resolveRedisConfig(value as RedisConfig))).toBeDefined();
  });

  it.each([
    ['retry', { retry: 0 }],
    ['backpressure', { backpressure: 500 }],
    ['circuitBreaker', { circuitBreaker: 'off' }],
    ['subscriptionDefaults', { subscriptionDefaults: [] }],
  ])('RedisSubscriber refuses the bus option %s given as a non-object', (field, options) => {
    expect(configErrorField(() => new RedisSubscriber(options as never))).toBe(field);
  });
});

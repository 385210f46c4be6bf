import { ErrorCode, isWatchtowerError } from '@watchtower/core';
import { describe, expect, it } from 'vitest';
import { RedisSubscriber, type RedisSubscriberOptions } from './redis-subscriber.js';

describe('RedisSubscriber options', () => {
  it('lists the Redis and the EventBus options in the message of an unknown one', () => {
    let message = '';
    try {
      new RedisSubscriber({ prefx: 'orders' } as unknown as RedisSubscriberOptions);
    } catch (error) {
      if (isWatchtowerError(error, ErrorCode.CONFIG)) message = error.message;
    }
    expect(message).toContain('`prefx`');
    expect(message).toMatch(/\bprefix\b/);
    expect(message).toMatch(/\bcircuitBreaker\b/);
  });
});

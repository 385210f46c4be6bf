import { ErrorCode, isWatchtowerError } from '@watchtower/core';
import { configErrorField } from '@watchtower/core/testing';
import { describe, expect, it } from 'vitest';
import { NatsSubscriber, type NatsSubscriberOptions } from './nats-subscriber.js';

const quiet = { logger: { warn: () => undefined, error: () => undefined } };

describe('NatsSubscriber options', () => {
  it('refuses an option that is neither a NATS nor an EventBus option, naming it', () => {
    expect(
      configErrorField(
        () => new NatsSubscriber({ ...quiet, maxDeliver: 5 } as unknown as NatsSubscriberOptions),
      ),
    ).toBe('maxDeliver');
    expect(
      configErrorField(
        () => new NatsSubscriber({ ...quiet, transport: {} } as unknown as NatsSubscriberOptions),
      ),
    ).toBe('transport');
  });

  it('lists the NATS and the EventBus options in the message of an unknown one', () => {
    let message = '';
    try {
      new NatsSubscriber({ ...quiet, serverz: 'nats://x' } as unknown as NatsSubscriberOptions);
    } catch (error) {
      if (isWatchtowerError(error, ErrorCode.CONFIG)) message = error.message;
    }
    expect(message).toContain('`serverz`');
    expect(message).toMatch(/\bservers\b/);
    expect(message).toMatch(/\bcircuitBreaker\b/);
  });

  it('refuses a consumer.maxDeliver that would stop deliveries before the EventBus dead-letters', () => {
    // Default retry: 4 attempts in all, so 4 deliveries are needed.
    expect(
      configErrorField(
        () => new NatsSubscriber({ ...quiet, mode: 'jetstream', consumer: { maxDeliver: 3 } }),
      ),
    ).toBe('consumer.maxDeliver');
    expect(
      configErrorField(
        () =>
          new NatsSubscriber({
            ...quiet,
            mode: 'jetstream',
            consumer: { maxDeliver: 5 },
            subscriptionDefaults: { retry: { maxAttempts: 6 } },
          }),
      ),
    ).toBe('consumer.maxDeliver');
    expect(
      configErrorField(
        () =>
          new NatsSubscriber({
            ...quiet,
            mode: 'jetstream',
            consumer: { maxDeliver: 5 },
            subscriptionDefaults: { retry: { maxAttempts: 5 } },
          }),
      ),
    ).toBeUndefined();
    expect(
      configErrorField(
        () => new NatsSubscriber({ ...quiet, mode: 'jetstream', consumer: { maxDeliver: 4 } }),
      ),
    ).toBeUndefined();
  });

  it('refuses a subscription whose retry needs more deliveries than consumer.maxDeliver, before connecting', async () => {
    const bus = new NatsSubscriber({
      ...quiet,
      mode: 'jetstream',
      servers: 'nats://127.0.0.1:1',
      consumer: { maxDeliver: 4 },
    });
    await expect(
      bus.subscribe('a.b', () => undefined, { retry: { maxAttempts: 11 } }),
    ).rejects.toSatisfy(
      (e) => isWatchtowerError(e, ErrorCode.CONFIG) && e.message.includes('consumer.maxDeliver'),
    );
    await bus.close();
  });
});

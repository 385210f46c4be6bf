import { describe, expect, it } from 'vitest';
import { configErrorField } from '@watchtower/core/testing';
import {
  DEFAULT_RABBITMQ_CONFIG,
  FALLBACK_PREFETCH,
  prefetchFor,
  resolveRabbitMQConfig,
  type RabbitMQConfig,
} from './config.js';
import { RabbitMQSubscriber } from './rabbitmq-subscriber.js';

const resolve = (config: unknown) => () => resolveRabbitMQConfig(config as RabbitMQConfig);

describe('resolveRabbitMQConfig', () => {
  it('fills in the documented defaults', () => {
    const config = resolveRabbitMQConfig();
    expect(config).toMatchObject({
      urls: [DEFAULT_RABBITMQ_CONFIG.url],
      exchange: 'watchtower.events',
      exchangeType: 'topic',
      queueType: 'classic',
      durable: true,
      messageTtlMs: null,
      maxLength: null,
      deliveryLimit: null,
      mandatory: false,
      publishWindow: 1024,
      prefetch: null,
      heartbeatSeconds: 10,
      closeTimeoutMs: 10_000,
    });
    expect(config.connectionName).toMatch(/^watchtower-.+-\d+$/);
    expect(config.reconnectAttempts).toBe(Number.POSITIVE_INFINITY);
  });

  it.each([
    [{ exchnage: 'x' }, 'exchnage'],
    [{ url: 'http://localhost' }, 'url'],
    [{ url: [] }, 'url'],
    [{ url: ['amqp://a:5672', 'http://b'] }, 'url[1]'],
    [{ exchange: 'amq.topic' }, 'exchange'],
    [{ exchangeType: 'x-delayed' }, 'exchangeType'],
    [{ queueType: 'stream' }, 'queueType'],
    [{ prefetch: 0 }, 'prefetch'],
    [{ prefetch: 70_000 }, 'prefetch'],
    [{ publishWindow: 1.5 }, 'publishWindow'],
    [{ messageTtlMs: -1 }, 'messageTtlMs'],
    [{ maxLength: 0 }, 'maxLength'],
    [{ overflow: 'reject-publish' }, 'overflow'],
    [{ maxLength: 5, overflow: 'drop-tail' }, 'overflow'],
    [{ queueType: 'quorum', maxLength: 5, overflow: 'reject-publish-dlx' }, 'overflow'],
    [{ deliveryLimit: 3 }, 'deliveryLimit'],
    [{ queueType: 'quorum', durable: false }, 'durable'],
    [{ reconnectBaseMs: 500, reconnectMaxMs: 100 }, 'reconnectMaxMs'],
    [{ heartbeatSeconds: 70_000 }, 'heartbeatSeconds'],
    [{ socketOptions: 'tls' }, 'socketOptions'],
    [{ clock: {} }, 'clock'],
  ])('refuses %j with CONFIG naming %s', (config, field) => {
    expect(configErrorField(resolve(config))).toBe(field);
  });

  it('takes the URLs of a cluster in the order given', () => {
    const urls = ['amqp://a:5672', 'amqps://u:p@b:5671/%2F', 'amqp://c'];
    expect(resolveRabbitMQConfig({ url: urls }).urls).toEqual(urls);
  });

  it('takes quorum queues with a delivery limit, and a bounded queue with its overflow', () => {
    expect(
      resolveRabbitMQConfig({
        queueType: 'quorum',
        deliveryLimit: 5,
        maxLength: 10,
        overflow: 'reject-publish',
      }),
    ).toMatchObject({
      queueType: 'quorum',
      deliveryLimit: 5,
      maxLength: 10,
      overflow: 'reject-publish',
    });
  });
});

describe('prefetchFor', () => {
  const follow = { prefetch: null };
  it.each([
    ['the concurrency when only it is given', follow, { concurrency: 4 }, 4],
    ['maxInFlight over the concurrency', follow, { maxInFlight: 10, concurrency: 4 }, 10],
    ['the config prefetch over the concurrency', { prefetch: 32 }, { concurrency: 4 }, 32],
    ['maxInFlight over the config prefetch', { prefetch: 32 }, { maxInFlight: 3 }, 3],
    ['the fallback when neither is given', follow, {}, FALLBACK_PREFETCH],
    ['at most 65535', follow, { concurrency: 100_000 }, 65_535],
  ])('takes %s', (_, config, subscription, expected) => {
    expect(
      prefetchFor(config, { maxInFlight: undefined, concurrency: undefined, ...subscription }),
    ).toBe(expected);
  });
});

describe('RabbitMQSubscriber', () => {
  it('refuses a key that neither the transport nor the bus knows, naming it', () => {
    expect(configErrorField(() => new RabbitMQSubscriber({ exchnage: 'x' } as never))).toBe(
      'exchnage',
    );
  });

  it('passes transport options to the transport and bus options to the bus', () => {
    const bus = new RabbitMQSubscriber({
      exchange: 'shop',
      queueType: 'quorum',
      publishTimeoutMs: 1234,
    });
    expect(bus.transport.config).toMatchObject({ exchange: 'shop', queueType: 'quorum' });
    expect(bus.transport.config).not.toHaveProperty('publishTimeoutMs');
  });
});

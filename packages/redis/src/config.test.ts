import { describe, expect, it } from 'vitest';
import { ErrorCode, isWatchtowerError, systemClock } from '@watchtower/core';
import { FakeClock } from '@watchtower/core/testing';
import {
  DEFAULT_CLUSTER_PREFIX,
  DEFAULT_REDIS_CONFIG,
  resolveRedisConfig,
  type RedisConfig,
} from './config.js';

function configErrorFor(config: unknown): Error {
  try {
    resolveRedisConfig(config as RedisConfig);
  } catch (error) {
    expect(isWatchtowerError(error, ErrorCode.CONFIG)).toBe(true);
    return error as Error;
  }
  throw new Error('expected a CONFIG error');
}

describe('resolveRedisConfig', () => {
  it('fills in the documented defaults', () => {
    const config = resolveRedisConfig();
    expect(config).toMatchObject({
      url: DEFAULT_REDIS_CONFIG.url,
      prefix: 'watchtower',
      dlqStream: 'watchtower:dlq',
      maxLen: 100_000,
      dlqMaxLen: 100_000,
      approximateTrim: true,
      dedupeWindowMs: 0,
      blockMs: 2000,
      count: 100,
      maxInFlight: 256,
      discoveryIntervalMs: 1000,
      announceStreams: true,
      claimMinIdleMs: 30_000,
      claimIntervalMs: 1000,
      staleGroupMs: 600_000,
      startFrom: 'new',
      dlqGroup: 'watchtower-dlq',
      closeTimeoutMs: 10_000,
    });
    expect(config.cluster).toBeUndefined();
  });

  it('times everything on the system clock unless given one, and bounds unsubscribe by 5 s', () => {
    expect(resolveRedisConfig().clock).toBe(systemClock);
    expect(resolveRedisConfig().unsubscribeTimeoutMs).toBe(5000);
    const clock = new FakeClock();
    expect(resolveRedisConfig({ clock }).clock).toBe(clock);
  });

  it('derives the DLQ stream from the prefix', () => {
    expect(resolveRedisConfig({ prefix: 'orders' }).dlqStream).toBe('orders:dlq');
    expect(resolveRedisConfig({ prefix: 'orders', dlqStream: 'dead' }).dlqStream).toBe('dead');
  });

  it('accepts null to turn trimming off', () => {
    expect(resolveRedisConfig({ maxLen: null, dlqMaxLen: null })).toMatchObject({
      maxLen: null,
      dlqMaxLen: null,
    });
  });

  it('uses a hash-tagged prefix on a cluster and rejects a prefix without a hash tag there', () => {
    expect(resolveRedisConfig({ cluster: {} }).prefix).toBe(DEFAULT_CLUSTER_PREFIX);
    expect(resolveRedisConfig({ cluster: {}, prefix: 'app:{orders}' }).dlqStream).toBe(
      'app:{orders}:dlq',
    );
    expect(configErrorFor({ cluster: {}, prefix: 'orders' }).message).toMatch(/`prefix`.*hash tag/);
    expect(configErrorFor({ cluster: {}, prefix: 'orders{}' }).message).toMatch(/`prefix`/);
  });

  it.each([
    ['url', { url: 'http://localhost' }],
    ['url', { url: '' }],
    ['prefix', { prefix: '' }],
    ['prefix', { prefix: 'has space' }],
    ['maxLen', { maxLen: 0 }],
    ['maxLen', { maxLen: 1.5 }],
    ['dlqMaxLen', { dlqMaxLen: -1 }],
    ['blockMs', { blockMs: 0 }],
    ['count', { count: 0 }],
    ['maxInFlight', { maxInFlight: Number.NaN }],
    ['discoveryIntervalMs', { discoveryIntervalMs: 0 }],
    ['claimMinIdleMs', { claimMinIdleMs: 0 }],
    ['claimIntervalMs', { claimIntervalMs: 0 }],
    ['staleGroupMs', { staleGroupMs: -1 }],
    ['staleGroupMs', { staleGroupMs: 2000 }],
    ['claimMinIdle', { claimMinIdle: 5000 }],
    ['claimIntervalMs', { claimMinIdleMs: 1000, claimIntervalMs: 600 }],
    ['startFrom', { startFrom: 'latest' }],
    ['approximateTrim', { approximateTrim: 'yes' }],
    ['dedupeWindowMs', { dedupeWindowMs: -1 }],
    ['dedupeWindowMs', { dedupeWindowMs: 1.5 }],
    ['waitReplicas', { waitReplicas: -1 }],
    ['waitReplicas', { waitReplicas: 1.5 }],
    ['waitTimeoutMs', { waitReplicas: 1, waitTimeoutMs: 0 }],
    ['announceStreams', { announceStreams: 'off' }],
    ['consumerPrefix', { consumerPrefix: '' }],
    ['dlqGroup', { dlqGroup: '' }],
    ['closeTimeoutMs', { closeTimeoutMs: -5 }],
    ['healthCheckTimeoutMs', { healthCheckTimeoutMs: 0 }],
    ['unsubscribeTimeoutMs', { unsubscribeTimeoutMs: -1 }],
    ['clock', { clock: { now: () => 0 } }],
    ['redis', { redis: 'redis://x' }],
    ['cluster.nodes', { cluster: { nodes: [] } }],
    ['cluster.node', { cluster: { node: [] } }],
  ])('rejects a bad %s with a CONFIG error naming it', (field, config) => {
    expect(configErrorFor(config).message).toContain(`\`${field}\``);
  });
});

describe('resolveRedisConfig: settings the transport cannot honour', () => {
  it.each([
    ['redis.keyPrefix', { redis: { keyPrefix: 'app:' } }],
    ['cluster.options', { cluster: { options: 'x' } }],
    ['cluster.options.keyPrefix', { cluster: { options: { keyPrefix: 'app:' } } }],
    [
      'cluster.options.redisOptions.keyPrefix',
      { cluster: { options: { redisOptions: { keyPrefix: 'app:' } } } },
    ],
    ['url', { cluster: {}, url: 'redis://127.0.0.1:7000/2' }],
  ])('rejects %s with a CONFIG error naming it instead of ignoring it', (field, config) => {
    expect(configErrorFor(config).message).toContain(`\`${field}\``);
  });

  it('refuses waitTimeoutMs without waitReplicas, and one the ioredis commandTimeout would cut off', () => {
    expect(configErrorFor({ waitTimeoutMs: 500 }).message).toMatch(
      /`waitTimeoutMs`.*without waitReplicas/,
    );
    expect(
      configErrorFor({ waitReplicas: 1, waitTimeoutMs: 1000, redis: { commandTimeout: 1000 } })
        .message,
    ).toMatch(/`waitTimeoutMs`.*commandTimeout/);
    expect(
      configErrorFor({
        cluster: { options: { redisOptions: { commandTimeout: 200 } } },
        waitReplicas: 1,
      }).message,
    ).toMatch(/`waitTimeoutMs`.*commandTimeout \(200 ms\)/);
  });

  it('waits for no replica by default, and for waitReplicas within waitTimeoutMs when asked', () => {
    expect(resolveRedisConfig()).toMatchObject({ waitReplicas: 0, waitTimeoutMs: 1000 });
    expect(
      resolveRedisConfig({ waitReplicas: 2, waitTimeoutMs: 250, redis: { commandTimeout: 5000 } }),
    ).toMatchObject({ waitReplicas: 2, waitTimeoutMs: 250 });
  });

  it('accepts database 0 in the URL of a cluster', () => {
    expect(resolveRedisConfig({ cluster: {}, url: 'redis://127.0.0.1:7000/0' }).url).toBe(
      'redis://127.0.0.1:7000/0',
    );
  });
});

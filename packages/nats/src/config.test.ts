import { ErrorCode, isWatchtowerError, systemClock } from '@watchtower/core';
import { FakeClock } from '@watchtower/core/testing';
import { configErrorField as fieldOf } from '@watchtower/core/testing';
import { describe, expect, it } from 'vitest';
import {
  DEFAULT_NATS_CONSUMER_OPTIONS,
  DEFAULT_NATS_STREAM_OPTIONS,
  resolveNatsConfig,
  type NatsConfig,
} from './config.js';

const configErrorField = (config: unknown): string | undefined =>
  fieldOf(() => resolveNatsConfig(config as Partial<NatsConfig>));

describe('resolveNatsConfig', () => {
  it('applies the documented defaults', () => {
    const config = resolveNatsConfig();
    expect(config).toMatchObject({
      servers: ['nats://127.0.0.1:4222'],
      mode: 'core',
      subjectPrefix: 'watchtower.events',
      dlqPrefix: 'dlq',
      maxReconnectAttempts: -1,
      reconnectTimeWaitMs: 500,
      reconnectJitterMs: 100,
      requestTimeoutMs: 5000,
      pendingLimit: 65_536,
    });
    expect(config.stream).toEqual(DEFAULT_NATS_STREAM_OPTIONS);
    expect(config.consumer).toEqual(DEFAULT_NATS_CONSUMER_OPTIONS);
    expect(config.consumer.batchSize).toBeGreaterThanOrEqual(256);
    expect(config.dlq.durable).toBe('auto');
    expect(resolveNatsConfig({ mode: 'jetstream' }).dlq.durable).toBe(true);
  });

  it('merges partial nested options over the defaults, ignoring undefined fields', () => {
    const config = resolveNatsConfig({
      stream: { name: 'ORDERS', maxMsgs: 10, maxAgeMs: undefined as unknown as number },
      consumer: { ackWaitMs: 500 },
    });
    expect(config.stream).toEqual({ ...DEFAULT_NATS_STREAM_OPTIONS, name: 'ORDERS', maxMsgs: 10 });
    expect(config.consumer.ackWaitMs).toBe(500);
    expect(config.consumer.maxAckPending).toBe(DEFAULT_NATS_CONSUMER_OPTIONS.maxAckPending);
  });

  it('runs on systemClock unless given a Clock', () => {
    expect(resolveNatsConfig().clock).toBe(systemClock);
    const clock = new FakeClock();
    expect(resolveNatsConfig({ clock }).clock).toBe(clock);
  });

  it('splits a comma-separated server list', () => {
    expect(resolveNatsConfig({ servers: 'nats://a:4222, nats://b:4222' }).servers).toEqual([
      'nats://a:4222',
      'nats://b:4222',
    ]);
  });

  it('keeps the server forms the client reads, and requires TLS for tls:// servers', () => {
    const forms = ['nats://a:4222', 'b:4223', 'c', '[::1]:4222', '::1', 'nats://d:4222/'];
    const plain = resolveNatsConfig({ servers: forms });
    expect(plain.servers).toEqual(forms);
    expect(plain.tls).toBeUndefined();
    expect(resolveNatsConfig({ servers: 'tls://a:4443, TLS://b' }).tls).toEqual({});
    const ca = { ca: 'PEM' };
    expect(resolveNatsConfig({ servers: 'tls://a:4443', tls: ca }).tls).toBe(ca);
    expect(
      resolveNatsConfig({ servers: 'tls://a:4443', connectionOptions: { tls: ca } }).tls,
    ).toBeUndefined();
  });

  it('names servers without repeating the credentials of a server URL', () => {
    let message = '';
    try {
      resolveNatsConfig({ servers: 'nats://alice:s3cret@host:4222' });
    } catch (error) {
      if (isWatchtowerError(error, ErrorCode.CONFIG)) message = error.message;
    }
    expect(message).toContain('`servers`');
    expect(message).toContain('auth');
    expect(message).not.toContain('s3cret');
  });

  it('follows a shorter maxAgeMs with the duplicate window by default and refuses a longer explicit one', () => {
    expect(resolveNatsConfig({ stream: { maxAgeMs: 30_000 } }).stream.duplicateWindowMs).toBe(
      30_000,
    );
    expect(configErrorField({ stream: { maxAgeMs: 30_000, duplicateWindowMs: 60_000 } })).toBe(
      'stream.duplicateWindowMs',
    );
  });

  it.each<[string, unknown]>([
    ['mode', { mode: 'push' }],
    ['servers', { servers: [] }],
    ['servers', { servers: ['nats://a b'] }],
    ['servers', { servers: 'http://x' }],
    ['servers', { servers: 'nats://host:notaport' }],
    ['servers', { servers: 'host:notaport' }],
    ['servers', { servers: 'nats://host:99999' }],
    ['servers', { servers: 'nats://host:0' }],
    ['servers', { servers: 'ws://host:8080' }],
    ['servers', { servers: 'wss://host:443' }],
    ['servers', { servers: 'nats://:4222' }],
    ['servers', { servers: 'nats://host:4222/path' }],
    ['servers', { servers: 'nats://user:pass@host:4222' }],
    ['servers', { servers: ['nats://a:4222', 'tls://b:4443'] }],
    ['subjectPrefix', { subjectPrefix: 'events.>' }],
    ['subjectPrefix', { subjectPrefix: '' }],
    ['dlqPrefix', { dlqPrefix: 'a..b' }],
    ['dlqPrefix', { subjectPrefix: 'app', dlqPrefix: 'app.dlq' }],
    ['dlqPrefix', { subjectPrefix: 'app.events', dlqPrefix: 'app' }],
    ['name', { name: '' }],
    ['stream', { stream: 'x' }],
    ['stream.name', { stream: { name: 'has.dot' } }],
    ['stream.retention', { stream: { retention: 'forever' } }],
    ['stream.storage', { stream: { storage: 'disk' } }],
    ['stream.maxAgeMs', { stream: { maxAgeMs: -1 } }],
    ['stream.maxBytes', { stream: { maxBytes: 0 } }],
    ['stream.maxMsgs', { stream: { maxMsgs: 1.5 } }],
    ['stream.replicas', { stream: { replicas: 7 } }],
    ['dlq.durable', { dlq: { durable: 'yes' } }],
    ['dlq.streamName', { dlq: { streamName: 'a b' } }],
    [
      'dlq.streamName',
      { mode: 'jetstream', stream: { name: 'SAME' }, dlq: { streamName: 'SAME' } },
    ],
    ['consumer.ackWaitMs', { consumer: { ackWaitMs: 0 } }],
    ['consumer.maxAckPending', { consumer: { maxAckPending: 0 } }],
    ['consumer.batchSize', { consumer: { batchSize: 2.5 } }],
    ['consumer.maxDeliver', { consumer: { maxDeliver: 0 } }],
    ['consumer.inactiveThresholdMs', { consumer: { inactiveThresholdMs: Number.NaN } }],
    ['pendingLimit', { pendingLimit: 0 }],
    ['pendingLimit', { pendingLimit: 100.5 }],
    ['maxReconnectAttempts', { maxReconnectAttempts: -2 }],
    ['reconnectTimeWaitMs', { reconnectTimeWaitMs: -5 }],
    ['reconnectJitterMs', { reconnectJitterMs: Number.POSITIVE_INFINITY }],
    ['connectTimeoutMs', { connectTimeoutMs: 0 }],
    ['requestTimeoutMs', { requestTimeoutMs: '5s' }],
    ['auth', { auth: { token: 't', user: 'u' } }],
    ['auth.token', { auth: { token: '' } }],
    ['auth.user', { auth: { pass: 'secret' } }],
    ['auth.nkeySeed', { auth: { nkeySeed: 42 } }],
    ['tls', { tls: 'on' }],
    ['connectionOptions', { connectionOptions: null }],
    ['maxDeliver', { maxDeliver: 3 }],
    ['subjectprefix', { subjectprefix: 'orders' }],
    ['stream.maxAge', { stream: { maxAge: 1000 } }],
    ['dlq.stream', { dlq: { stream: 'DLQ' } }],
    ['consumer.ackWait', { consumer: { ackWait: 500 } }],
    ['auth.password', { auth: { user: 'u', password: 'p' } }],
    ['auth.pass', { auth: { user: 'u', pass: 42 } }],
    ['clock', { clock: { now: () => 0 } }],
  ])('refuses a bad %s with a CONFIG error naming it', (field, config) => {
    expect(configErrorField(config)).toBe(field);
  });
});

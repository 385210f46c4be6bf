import { describe, expect, it } from 'vitest';
import { InMemoryDeadLetterQueue } from '@watchtower/core';
import { configErrorField } from '@watchtower/core/testing';
import { DEFAULT_WEBSOCKET_CONFIG, WebSocketSubscriber, WebSocketTransport } from './index.js';
import { WebSocketHub } from './hub.js';

describe('WebSocketTransport options', () => {
  it('applies the documented defaults', () => {
    const { config } = new WebSocketTransport();
    expect(config).toMatchObject({
      url: DEFAULT_WEBSOCKET_CONFIG.url,
      protocol: 'hub',
      maxReconnectAttempts: -1,
      reconnectDelayMs: 1000,
      pingIntervalMs: 30_000,
      pongTimeoutMs: 10_000,
      maxMessageSize: 1_048_576,
    });
    expect(config.deadLetterQueue.stats().capacity).toBe(10_000);
  });

  it.each([
    [{ urll: 'ws://x' }, 'urll'],
    [{ url: 'http://127.0.0.1:8080' }, 'url'],
    [{ url: 'ws://' }, 'url'],
    [{ protocol: 'mqtt' }, 'protocol'],
    [{ maxReconnectAttempts: -2 }, 'maxReconnectAttempts'],
    [{ maxReconnectAttempts: 1.5 }, 'maxReconnectAttempts'],
    [{ reconnectDelayMs: -1 }, 'reconnectDelayMs'],
    [{ reconnectDelayMs: 5000, maxReconnectDelayMs: 1000 }, 'reconnectDelayMs'],
    [{ connectTimeoutMs: 0 }, 'connectTimeoutMs'],
    [{ pingIntervalMs: -5 }, 'pingIntervalMs'],
    [{ pongTimeoutMs: 0 }, 'pongTimeoutMs'],
    [{ maxMessageSize: 10 }, 'maxMessageSize'],
    [{ requestTimeoutMs: Number.NaN }, 'requestTimeoutMs'],
    [{ pendingLimit: 0 }, 'pendingLimit'],
    [{ authToken: '' }, 'authToken'],
    [{ dlqCapacity: 0 }, 'dlqCapacity'],
    [{ dlqCapacity: 5, deadLetterQueue: new InMemoryDeadLetterQueue() }, 'dlqCapacity'],
    [{ deadLetterQueue: {} }, 'deadLetterQueue'],
    [{ closeTimeoutMs: -1 }, 'closeTimeoutMs'],
    [{ clock: {} }, 'clock'],
    [{ headers: 'x' }, 'headers'],
    [{ headers: { 'x-a': 1 } }, 'headers.x-a'],
    [{ tls: { ca: 'x', verify: true } }, 'tls.verify'],
    [{ tls: { rejectUnauthorized: 'no' } }, 'tls.rejectUnauthorized'],
    [{ perMessageDeflate: 'yes' }, 'perMessageDeflate'],
  ])('refuses %j with CONFIG naming %s', (options, field) => {
    expect(configErrorField(() => new WebSocketTransport(options as never))).toBe(field);
  });

  it('refuses a group and a start position it cannot honour', async () => {
    const transport = new WebSocketTransport();
    await expect(transport.subscribe('a.b', { group: 'g' })).rejects.toMatchObject({
      code: 'CONFIG',
    });
    await expect(transport.subscribe('a.b', { startFrom: 'earliest' })).rejects.toMatchObject({
      code: 'CONFIG',
    });
    await transport.close();
  });

  it('splits WebSocketSubscriber options between the transport and the bus, refusing unknown keys', () => {
    const bus = new WebSocketSubscriber({ url: 'ws://127.0.0.1:1/x', publishTimeoutMs: 1000 });
    expect(bus.transport.config.url).toBe('ws://127.0.0.1:1/x');
    expect(configErrorField(() => new WebSocketSubscriber({ pingInterval: 5 } as never))).toBe(
      'pingInterval',
    );
  });
});

describe('WebSocketHub options', () => {
  it.each([
    [{ prot: 1 }, 'prot'],
    [{ port: 70_000 }, 'port'],
    [{ path: 'events' }, 'path'],
    [{ healthPath: '/events' }, 'healthPath'],
    [{ authenticate: 'yes' }, 'authenticate'],
    [{ authorize: 1 }, 'authorize'],
    [{ maxConnections: 0 }, 'maxConnections'],
    [{ maxPayload: 1 }, 'maxPayload'],
    [{ maxBufferedBytes: -1 }, 'maxBufferedBytes'],
    [{ slowConsumer: 'wait' }, 'slowConsumer'],
    [{ publishRate: { perSecond: 0 } }, 'publishRate.perSecond'],
    [{ publishRate: { perSecond: 5, burst: 0 } }, 'publishRate.burst'],
    [{ publishRate: { perSec: 5 } }, 'publishRate.perSec'],
    [{ maxSubscriptionsPerConnection: 0 }, 'maxSubscriptionsPerConnection'],
    [{ pingIntervalMs: -1 }, 'pingIntervalMs'],
    [{ perMessageDeflate: 1 }, 'perMessageDeflate'],
    [{ bridge: {} }, 'bridge.transport'],
    [{ bridge: { transport: {} } }, 'bridge.transport'],
    [{ server: {} }, 'server'],
    [{ closeTimeoutMs: -1 }, 'closeTimeoutMs'],
    [{ defaultSubscriptions: '>' }, 'defaultSubscriptions'],
    [{ defaultSubscriptions: ['a.*', 'a..b'] }, 'defaultSubscriptions[1]'],
    [
      { defaultSubscriptions: ['a.*', 'b.*'], maxSubscriptionsPerConnection: 1 },
      'defaultSubscriptions',
    ],
    [{ bridge: { transport: new WebSocketTransport(), patterns: [] } }, 'bridge.patterns'],
  ])('refuses %j with CONFIG naming %s', (options, field) => {
    expect(configErrorField(() => new WebSocketHub(options as never))).toBe(field);
  });
});

import { describe, expect, it } from 'vitest';
import { configErrorField } from '@watchtower/core/testing';
import { WebSocketSubscriber, WebSocketTransport } from './browser.js';

describe('the browser WebSocketTransport', () => {
  it('sends authToken as the access_token query parameter, since a browser cannot set headers', () => {
    const transport = new WebSocketTransport({
      url: 'ws://127.0.0.1:8080/events?x=1',
      authToken: 't k',
    });
    expect(new URL(transport.config.url).searchParams.get('access_token')).toBe('t k');
    expect(new URL(transport.config.url).searchParams.get('x')).toBe('1');
  });

  it('refuses the Node-only options headers, tls and perMessageDeflate', () => {
    for (const field of ['headers', 'tls', 'perMessageDeflate']) {
      expect(configErrorField(() => new WebSocketTransport({ [field]: {} }))).toBe(field);
    }
  });

  it("turns keepalive off with protocol 'plain' and refuses a ping interval there", () => {
    expect(new WebSocketTransport({ protocol: 'plain' }).config.pingIntervalMs).toBe(0);
    expect(new WebSocketTransport().config.pingIntervalMs).toBe(30_000);
    expect(
      configErrorField(() => new WebSocketTransport({ protocol: 'plain', pingIntervalMs: 1000 })),
    ).toBe('pingIntervalMs');
  });

  it('builds a WebSocketSubscriber on the browser transport', () => {
    const bus = new WebSocketSubscriber({ url: 'ws://127.0.0.1:1/events' });
    expect(bus.transport).toBeInstanceOf(WebSocketTransport);
  });
});

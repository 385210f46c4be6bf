import { describe, expect, it } from 'vitest';
import { resolveNatsConfig } from './config.js';
import { toConnectionOptions } from './connection-options.js';

describe('toConnectionOptions', () => {
  it('passes servers, name and the reconnect policy to the client', () => {
    const options = toConnectionOptions(
      resolveNatsConfig({
        servers: ['nats://a:1', 'nats://b:2'],
        name: 'orders',
        maxReconnectAttempts: 7,
        reconnectTimeWaitMs: 250,
        reconnectJitterMs: 30,
        connectTimeoutMs: 1500,
      }),
    );
    expect(options).toMatchObject({
      servers: ['nats://a:1', 'nats://b:2'],
      name: 'orders',
      reconnect: true,
      maxReconnectAttempts: 7,
      reconnectTimeWait: 250,
      reconnectJitter: 30,
      reconnectJitterTLS: 30,
      timeout: 1500,
      waitOnFirstConnect: false,
      noAsyncTraces: true,
    });
  });

  it('passes TLS, token and user/password through, over extra connection options', () => {
    const tls = { caFile: '/etc/ca.pem' };
    const options = toConnectionOptions(
      resolveNatsConfig({
        tls,
        auth: { user: 'u', pass: 'p' },
        connectionOptions: { pingInterval: 5000, name: 'overridden' },
      }),
    );
    expect(options).toMatchObject({
      tls,
      user: 'u',
      pass: 'p',
      pingInterval: 5000,
      name: 'watchtower',
    });
    expect(toConnectionOptions(resolveNatsConfig({ auth: { token: 's3cret' } })).token).toBe(
      's3cret',
    );
  });

  it('turns an nkey seed or creds into an authenticator', () => {
    // A syntactically valid user seed (test value from the nkeys spec, not a real credential).
    const seed = 'SUAMK2FG4MI6UE3ACF3FK3OIQBCEIEZV7NSWFFEW63UXMRLFM2XLAXK4GY';
    const withSeed = toConnectionOptions(resolveNatsConfig({ auth: { nkeySeed: seed } }));
    expect(typeof withSeed.authenticator).toBe('function');
    const withCreds = toConnectionOptions(
      resolveNatsConfig({ auth: { creds: 'creds file text' } }),
    );
    expect(typeof withCreds.authenticator).toBe('function');
  });
});

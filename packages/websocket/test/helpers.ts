import {
  WebSocketHub,
  WebSocketTransport,
  type WebSocketConfig,
  type WebSocketHubOptions,
} from '../src/index.js';

/** Quick timers, so reconnects and keepalive act within a test's time. */
export const FAST_CLIENT: WebSocketConfig = {
  reconnectDelayMs: 20,
  maxReconnectDelayMs: 200,
  pingIntervalMs: 1000,
  pongTimeoutMs: 1000,
  requestTimeoutMs: 3000,
  connectTimeoutMs: 3000,
};

/** A hub on a free port of 127.0.0.1, started. */
export async function startHub(options: WebSocketHubOptions = {}): Promise<WebSocketHub> {
  const hub = new WebSocketHub({ port: 0, ...options });
  await hub.start();
  return hub;
}

/** A connected client of `hub` with quick timers; `overrides` win. */
export async function connectClient(
  hub: WebSocketHub | string,
  overrides: WebSocketConfig = {},
): Promise<WebSocketTransport> {
  const url = typeof hub === 'string' ? hub : hub.url;
  const transport = new WebSocketTransport({ url, ...FAST_CLIENT, ...overrides });
  await transport.connect();
  return transport;
}

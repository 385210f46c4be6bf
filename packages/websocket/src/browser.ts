/**
 * `@watchtower/websocket/browser`: the same client on the browser's native `WebSocket`, so a
 * web page subscribes to a `WebSocketHub` with the API a Node service uses. The bundle holds
 * what it needs of `@watchtower/core` (the event factory, the codec, errors, patterns, the
 * `EventBus`), with Node built-ins replaced by browser equivalents; it never loads `ws` or a
 * Node module.
 *
 * What differs from Node, because browsers cannot do it: no custom headers (an `authToken`
 * goes as the `access_token` query parameter), no TLS options (the browser's trust store
 * applies), no choice of compression (the browser decides), and keepalive through `ping`
 * frames, which only the hub answers (so with `protocol: 'plain'` keepalive is off).
 */
import { EventBus, configError, type EventBusOptions, type EventCatalog } from '@watchtower/core';
import { rejectUnknownOptions, splitSubscriberOptions } from '@watchtower/core/transport-kit';
import {
  WebSocketClientTransport,
  type ClientSocket,
  type SocketHandlers,
} from './client-transport.js';
import { CLIENT_CONFIG_KEYS, resolveClientConfig, type WebSocketClientConfig } from './config.js';
import { HUB_SUBPROTOCOL } from './protocol.js';

/** The part of the browser's `WebSocket` the client uses (no DOM types needed to build). */
interface NativeWebSocket {
  binaryType: string;
  onopen: (() => void) | null;
  onmessage: ((event: { data: unknown }) => void) | null;
  onerror: (() => void) | null;
  onclose: ((event: { code: number; reason: string }) => void) | null;
  send(data: string): void;
  close(code?: number, reason?: string): void;
}

type NativeWebSocketConstructor = new (url: string, protocols: string[]) => NativeWebSocket;

/** Options of the browser {@link WebSocketTransport}. */
export type BrowserWebSocketConfig = WebSocketClientConfig;

/** The failure a browser reports for a socket: an `error` event that says nothing more. */
class BrowserSocketError extends Error {
  constructor(url: string) {
    super(`the browser reported a WebSocket error for ${url}`);
    this.name = 'WebSocketError';
  }
}

function nativeWebSocket(): NativeWebSocketConstructor {
  const constructor = (globalThis as { WebSocket?: NativeWebSocketConstructor }).WebSocket;
  if (constructor === undefined) {
    throw configError('WebSocket', 'this environment has no global WebSocket');
  }
  return constructor;
}

function openBrowserSocket(
  url: string,
  protocols: string[],
  handlers: SocketHandlers,
): ClientSocket {
  const NativeSocket = nativeWebSocket();
  const socket = new NativeSocket(url, protocols);
  socket.binaryType = 'arraybuffer';
  socket.onopen = () => handlers.open();
  socket.onmessage = (event) => {
    const data = event.data;
    handlers.message(typeof data === 'string' ? data : new Uint8Array(data as ArrayBuffer));
  };
  socket.onerror = () => handlers.error(new BrowserSocketError(url));
  socket.onclose = (event) => handlers.close(event.code, event.reason);
  const detach = (): void => {
    socket.onopen = socket.onmessage = socket.onerror = socket.onclose = null;
  };
  return {
    send: (text) => socket.send(text),
    // Browsers allow only 1000 and 3000-4999 here; other codes become 1000.
    close: (code, reason) => socket.close(code === 1000 || code >= 3000 ? code : 1000, reason),
    terminate: () => {
      detach();
      socket.close();
    },
    ping: () => false,
  };
}

/**
 * The WebSocket transport for browsers. Same contract and options as the Node one, less
 * `headers`, `tls` and `perMessageDeflate`.
 *
 * @throws a `CONFIG` error naming the field when an option is invalid.
 */
export class WebSocketTransport extends WebSocketClientTransport {
  constructor(config: BrowserWebSocketConfig = {}) {
    rejectUnknownOptions(config, CLIENT_CONFIG_KEYS, 'WebSocketTransport');
    const plain = config.protocol === 'plain';
    if (plain && config.pingIntervalMs !== undefined && config.pingIntervalMs !== 0) {
      throw configError(
        'pingIntervalMs',
        "must be 0 with protocol 'plain' in a browser: only a hub answers the ping frames a browser can send",
      );
    }
    const resolved = resolveClientConfig(plain ? { pingIntervalMs: 0, ...config } : config);
    let url = resolved.url;
    if (resolved.authToken !== undefined) {
      const withToken = new URL(url);
      withToken.searchParams.set('access_token', resolved.authToken);
      url = withToken.toString();
    }
    const protocols = plain ? [] : [HUB_SUBPROTOCOL];
    super(
      { ...resolved, url },
      (target, handlers) => openBrowserSocket(target, protocols, handlers),
      'the WebSocket transport',
    );
  }
}

/** Options of the browser {@link WebSocketSubscriber}. */
export interface BrowserWebSocketSubscriberOptions<C extends EventCatalog = EventCatalog>
  extends BrowserWebSocketConfig, Omit<EventBusOptions<C>, 'transport'> {}

/** The Watchtower Subscriber in a browser: an `EventBus` on the browser {@link WebSocketTransport}. */
export class WebSocketSubscriber<C extends EventCatalog = EventCatalog> extends EventBus<C> {
  declare readonly transport: WebSocketTransport;

  constructor(options: BrowserWebSocketSubscriberOptions<C> = {}) {
    const { transport, bus } = splitSubscriberOptions<BrowserWebSocketConfig, C>(
      options,
      CLIENT_CONFIG_KEYS,
      'WebSocketSubscriber',
    );
    super({ ...bus, transport: new WebSocketTransport(transport) });
  }
}

export { WEBSOCKET_TRANSPORT_INFO } from './client-transport.js';
export type { WebSocketClientStats, WebSocketTransportEvents } from './client-transport.js';
export { DEFAULT_WEBSOCKET_CONFIG } from './config.js';
export type { WebSocketClientConfig, WebSocketProtocol } from './config.js';
export { CLOSE_CODES, HUB_ERROR_CODES, HUB_SUBPROTOCOL } from './protocol.js';
// What a page needs of core, from the same bundle (core's Node entry loads Node built-ins).
export {
  createEvent,
  isValidEventType,
  matchPattern,
  isWatchtowerError,
  WatchtowerError,
  ErrorCode,
  InMemoryDeadLetterQueue,
} from '@watchtower/core';
export type {
  Event,
  EventHandler,
  DeadLetter,
  DeadLetterReason,
  HealthStatus,
  SubscriptionHandle,
} from '@watchtower/core';

/**
 * The Node client transport: {@link WebSocketClientTransport} on a `ws` socket, with what only
 * Node can do (custom headers, TLS options, permessage-deflate, protocol pings, refusing an
 * oversized frame before it is buffered).
 */
import { WebSocket, type ClientOptions } from 'ws';
import {
  booleanOption,
  objectOption,
  recordOption,
  rejectUnknownOptions,
  stringOption,
} from '@watchtower/core/transport-kit';
import {
  CLIENT_CONFIG_KEYS,
  resolveClientConfig,
  type ResolvedClientConfig,
  type WebSocketClientConfig,
} from './config.js';
import {
  WebSocketClientTransport,
  type ClientSocket,
  type SocketFactory,
  type SocketHandlers,
} from './client-transport.js';
import { sendCorked } from './corked-send.js';
import { UpgradeRefusedError } from './map-error.js';
import { HUB_SUBPROTOCOL } from './protocol.js';

/** TLS settings of a `wss://` connection, handed to Node's `tls.connect`. */
export interface WebSocketTlsOptions {
  /** Trusted CA certificates (PEM), replacing Node's list: for a private CA. */
  ca?: string | Buffer | (string | Buffer)[];
  /** Client certificate (PEM), for a server that asks for one. */
  cert?: string | Buffer;
  /** Private key of `cert` (PEM). */
  key?: string | Buffer;
  /** @defaultValue `true`; `false` accepts any certificate: for tests only. */
  rejectUnauthorized?: boolean;
  /** Name checked against the certificate. @defaultValue the URL's host */
  servername?: string;
}

/** Options of the Node {@link WebSocketTransport}. */
export interface WebSocketConfig extends WebSocketClientConfig {
  /** HTTP headers of the upgrade request (beside `Authorization` from `authToken`). @defaultValue `{}` */
  headers?: Record<string, string>;
  /** TLS settings for `wss://`. @defaultValue Node's defaults */
  tls?: WebSocketTlsOptions;
  /**
   * Offer permessage-deflate compression (used when the server agrees). Saves bandwidth on
   * large JSON, costs CPU per frame.
   * @defaultValue `false`
   */
  perMessageDeflate?: boolean;
}

/** The keys of {@link WebSocketConfig}. */
export const WEBSOCKET_CONFIG_KEYS: readonly string[] = [
  ...CLIENT_CONFIG_KEYS,
  ...Object.keys({
    headers: true,
    tls: true,
    perMessageDeflate: true,
  } satisfies Record<Exclude<keyof WebSocketConfig, keyof WebSocketClientConfig>, true>),
];

const TLS_KEYS = Object.keys({
  ca: true,
  cert: true,
  key: true,
  rejectUnauthorized: true,
  servername: true,
} satisfies Record<keyof WebSocketTlsOptions, true>);

/**
 * The WebSocket transport for Node, on `ws`: connects to a `WebSocketHub` (or, with
 * `protocol: 'plain'`, to any WebSocket server), reconnects with backoff, keeps the connection
 * alive with pings, and holds publishes while it is down.
 *
 * ```ts
 * const transport = new WebSocketTransport({ url: 'ws://127.0.0.1:8080/events' });
 * ```
 *
 * @throws a `CONFIG` error naming the field when an option is invalid.
 */
export class WebSocketTransport extends WebSocketClientTransport {
  constructor(config: WebSocketConfig = {}) {
    rejectUnknownOptions(config, WEBSOCKET_CONFIG_KEYS, 'WebSocketTransport');
    const resolved = resolveClientConfig(config);
    super(resolved, nodeSocketFactory(resolved, config), 'the WebSocket transport');
  }
}

function nodeSocketFactory(resolved: ResolvedClientConfig, config: WebSocketConfig): SocketFactory {
  const headers: Record<string, string> = {};
  const given = recordOption('headers', config.headers, 'an object of header names to strings');
  for (const [name, value] of Object.entries(given ?? {})) {
    headers[name] = stringOption(`headers.${name}`, value, { allowEmpty: true });
  }
  if (resolved.authToken !== undefined) headers.authorization = `Bearer ${resolved.authToken}`;
  const tls = objectOption('tls', config.tls, TLS_KEYS);
  if (tls.rejectUnauthorized !== undefined)
    booleanOption('tls.rejectUnauthorized', tls.rejectUnauthorized);
  if (tls.servername !== undefined) stringOption('tls.servername', tls.servername);
  const options: ClientOptions = {
    headers,
    maxPayload: resolved.maxMessageSize,
    perMessageDeflate:
      config.perMessageDeflate === undefined
        ? false
        : booleanOption('perMessageDeflate', config.perMessageDeflate),
    ...tls,
  };
  const protocols = resolved.protocol === 'hub' ? [HUB_SUBPROTOCOL] : [];
  return (url, handlers) => openNodeSocket(url, protocols, options, handlers);
}

function openNodeSocket(
  url: string,
  protocols: string[],
  options: ClientOptions,
  handlers: SocketHandlers,
): ClientSocket {
  const ws = new WebSocket(url, protocols, options);
  ws.on('open', handlers.open);
  ws.on('message', (data, isBinary) => {
    const bytes = data as Buffer;
    handlers.message(isBinary ? bytes : bytes.toString('utf8'));
  });
  ws.on('pong', handlers.pong);
  ws.on('error', handlers.error);
  ws.on('unexpected-response', (_request, response) => {
    handlers.error(new UpgradeRefusedError(response.statusCode ?? 0));
    ws.terminate();
  });
  ws.on('close', (code, reason) => handlers.close(code, reason.toString('utf8')));
  return {
    send: (text) => sendCorked(ws, text),
    close: (code, reason) => ws.close(code, reason),
    terminate: () => ws.terminate(),
    ping: () => {
      ws.ping();
      return true;
    },
  };
}

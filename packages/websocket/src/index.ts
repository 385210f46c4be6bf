export { WebSocketTransport, WEBSOCKET_CONFIG_KEYS } from './websocket-transport.js';
export type { WebSocketConfig, WebSocketTlsOptions } from './websocket-transport.js';
export { WebSocketSubscriber } from './websocket-subscriber.js';
export type { WebSocketSubscriberOptions } from './websocket-subscriber.js';
export { WEBSOCKET_TRANSPORT_INFO } from './client-transport.js';
export type { WebSocketClientStats, WebSocketTransportEvents } from './client-transport.js';
export { DEFAULT_WEBSOCKET_CONFIG, resolveClientConfig } from './config.js';
export type { WebSocketClientConfig, WebSocketProtocol, ResolvedClientConfig } from './config.js';
export { WebSocketHub } from './hub.js';
export type { WebSocketHubStats, WebSocketHubEvents } from './hub.js';
export { DEFAULT_HUB_OPTIONS, bearerToken } from './hub-config.js';
export type {
  WebSocketHubOptions,
  Authenticate,
  Authorize,
  PublishRate,
  HubBridge,
  ResolvedHubConfig,
} from './hub-config.js';
export { CLOSE_CODES, HUB_ERROR_CODES, HUB_SUBPROTOCOL } from './protocol.js';
export { mapSocketError } from './map-error.js';

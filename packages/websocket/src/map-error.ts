import {
  ClosedError,
  ConnectionError,
  ErrorCode,
  WatchtowerError,
  isWatchtowerError,
} from '@watchtower/core';
import { HUB_ERROR_CODES } from './protocol.js';

/*
 * The one place where socket failures and the hub's error frames become Watchtower errors.
 * Branches on what the platform gives as data (a Node error `code`, the HTTP status of a
 * refused upgrade, a close code), never on message text. No `ws` import: the browser build
 * uses it too.
 */

/** An upgrade the server answered with an HTTP status instead of 101. */
export class UpgradeRefusedError extends Error {
  constructor(readonly status: number) {
    super(`the server refused the WebSocket upgrade with HTTP ${status}`);
    this.name = 'UpgradeRefusedError';
  }
}

/**
 * Maps a socket failure to a `WatchtowerError`, keeping it as `cause`: a refused upgrade is
 * `CONNECTION`, not retryable for 401 and 403 (the same credentials will not pass later);
 * the socket already destroyed is `CLOSED`; anything else a socket reports (refused, reset,
 * TLS, DNS) is `CONNECTION`. Watchtower errors pass through.
 *
 * @param operation - what was being done (`connect to ws://...`); starts the message.
 */
export function mapSocketError(error: unknown, operation: string): WatchtowerError {
  if (isWatchtowerError(error)) return error;
  const text = error instanceof Error ? error.message : String(error);
  const message = `${operation}: ${text}`;
  const cause = { cause: error };
  if (error instanceof UpgradeRefusedError) {
    const refused = error.status === 401 || error.status === 403;
    return new ConnectionError(message, { ...cause, retryable: !refused });
  }
  const code = (error as { code?: unknown } | null)?.code;
  if (code === 'ERR_STREAM_DESTROYED' || code === 'ERR_SOCKET_CLOSED') {
    return new ClosedError(message, cause);
  }
  // Anything else a socket reports (refused, reset, TLS, DNS, a bare browser `error` event)
  // means the connection failed: retrying may pass.
  return new ConnectionError(message, cause);
}

/** The connection that was up is gone: `CONNECTION`, retryable (the client reconnects). */
export function lostConnection(
  url: string,
  code: number,
  reason: string,
  failure: unknown,
): WatchtowerError {
  const why = reason === '' ? '' : ` (${reason})`;
  return new ConnectionError(`the connection to ${url} closed with code ${code}${why}`, {
    ...(failure === undefined ? {} : { cause: failure }),
  });
}

const CORE_CODES: ReadonlySet<string> = new Set(Object.values(ErrorCode));

/**
 * The error a hub's `error` frame stands for: core's code as sent (`SERIALIZATION`,
 * `VALIDATION`, ...), `FORBIDDEN` as `TRANSPORT` not retryable, `RATE_LIMITED` as `TRANSPORT`
 * retryable; `retryable` from the frame where it says.
 */
export function frameError(frame: Record<string, unknown>): WatchtowerError {
  const sent = typeof frame.code === 'string' ? frame.code : 'TRANSPORT';
  const text = typeof frame.message === 'string' ? frame.message : 'the hub refused the request';
  const message = `the hub refused: ${text} (${sent})`;
  const retryable = typeof frame.retryable === 'boolean' ? frame.retryable : undefined;
  if (sent === HUB_ERROR_CODES.forbidden) {
    return new WatchtowerError(ErrorCode.TRANSPORT, message, { retryable: false });
  }
  if (sent === HUB_ERROR_CODES.rateLimited) {
    return new WatchtowerError(ErrorCode.TRANSPORT, message, { retryable: true });
  }
  const code = CORE_CODES.has(sent) ? (sent as ErrorCode) : ErrorCode.TRANSPORT;
  return new WatchtowerError(code, message, retryable === undefined ? {} : { retryable });
}

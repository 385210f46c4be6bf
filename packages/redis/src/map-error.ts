import {
  ClosedError,
  ConnectionError,
  ErrorCode,
  TimeoutError,
  WatchtowerError,
  isWatchtowerError,
} from '@watchtower/core';

/*
 * The one place where ioredis and Redis errors become Watchtower errors. Redis reports an error
 * as a reply whose first word is its code (`NOGROUP ...`, `BUSYGROUP ...`, `ERR ...`); that code
 * is a documented part of the protocol, so it is what we branch on, never the rest of the text.
 */

/** Reply codes meaning the server cannot serve right now but will (failover, loading, cluster). */
const UNAVAILABLE_REPLIES: ReadonlySet<string> = new Set([
  'LOADING',
  'READONLY',
  'MASTERDOWN',
  'CLUSTERDOWN',
  'TRYAGAIN',
  'BUSY',
]);

/** Reply codes of a rejected login or permission; retrying the same call cannot succeed. */
const AUTH_REPLIES: ReadonlySet<string> = new Set(['NOAUTH', 'WRONGPASS', 'NOPERM']);

/** Node socket error codes of a connection that failed or dropped. */
const SOCKET_CODES: ReadonlySet<string> = new Set([
  'ECONNREFUSED',
  'ECONNRESET',
  'ECONNABORTED',
  'EPIPE',
  'ETIMEDOUT',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'ENOTFOUND',
  'EAI_AGAIN',
  'ERR_SSL_WRONG_VERSION_NUMBER',
]);

/**
 * The Redis error code of a reply error (`NOGROUP`, `BUSYGROUP`, `ERR`, ...), or `undefined` when
 * `error` is not an error reply from the server.
 */
export function replyCode(error: unknown): string | undefined {
  if (!(error instanceof Error) || error.name !== 'ReplyError') return undefined;
  const space = error.message.indexOf(' ');
  const code = space < 0 ? error.message : error.message.slice(0, space);
  return /^[A-Z]+$/.test(code) ? code : undefined;
}

function nodeCode(error: unknown): string | undefined {
  const code = (error as { code?: unknown } | null)?.code;
  return typeof code === 'string' ? code : undefined;
}

/**
 * Maps anything ioredis throws or rejects with to a `WatchtowerError`, keeping the original as
 * `cause`. Watchtower errors pass through unchanged.
 *
 * - server replies: `LOADING`, `READONLY`, `MASTERDOWN`, `CLUSTERDOWN`, `TRYAGAIN`, `BUSY` ->
 *   `ConnectionError` (retryable); `NOAUTH`, `WRONGPASS`, `NOPERM` -> `CONNECTION`, not
 *   retryable; `OOM` -> `TRANSPORT`, retryable; any other reply -> `TRANSPORT`, not retryable
 *   (the command itself is wrong for this server: `WRONGTYPE`, `NOGROUP`, `ERR` ...);
 * - a connection that has ended (`Connection is closed.`: quit by `close()`, dropped, or
 *   given up by the `retryStrategy`) -> `ClosedError`;
 * - a failed connection, socket errors, `MaxRetriesPerRequestError`, the cluster failing on
 *   every node -> `ConnectionError`;
 * - ioredis' `commandTimeout` -> `TimeoutError`.
 *
 * @param context - what was being done, e.g. `XADD watchtower:user.created`; starts the message.
 */
export function mapRedisError(error: unknown, context: string): WatchtowerError {
  if (isWatchtowerError(error)) return error;
  const text = error instanceof Error ? error.message : String(error);
  const message = `${context}: ${text}`;
  const options = { cause: error };

  const reply = replyCode(error);
  if (reply !== undefined) {
    if (UNAVAILABLE_REPLIES.has(reply)) return new ConnectionError(message, options);
    if (AUTH_REPLIES.has(reply))
      return new ConnectionError(message, { ...options, retryable: false });
    if (reply === 'OOM')
      return new WatchtowerError(ErrorCode.TRANSPORT, message, { ...options, retryable: true });
    return new WatchtowerError(ErrorCode.TRANSPORT, message, { ...options, retryable: false });
  }

  if (error instanceof Error) {
    const name = error.name;
    if (name === 'MaxRetriesPerRequestError' || name === 'ClusterAllFailedError') {
      return new ConnectionError(message, options);
    }
    // ioredis rejects the commands of a connection that has ended (close() quit or dropped it,
    // or its retryStrategy gave up) with a plain Error whose only mark is this message; there
    // is no code to branch on. Nothing more will be done on that connection: CLOSED, as a
    // publish in flight at close() must report.
    if (text === 'Connection is closed.') return new ClosedError(message, options);
    // Same kind of mark: the connection is down for now and offline queueing is off.
    if (text === "Stream isn't writeable and enableOfflineQueue options is false") {
      return new ConnectionError(message, options);
    }
    if (text === 'Command timed out') return new TimeoutError(message, 0, options);
    const code = nodeCode(error);
    if (code !== undefined && SOCKET_CODES.has(code)) return new ConnectionError(message, options);
  }
  return new WatchtowerError(ErrorCode.TRANSPORT, message, options);
}

/**
 * {@link mapRedisError} for a write (an event, a dead letter) made while the transport is open
 * on a Redis Cluster. ioredis `Cluster` connects each node without a retryStrategy, so when a
 * node fails the commands in flight on it reject with "Connection is closed." although the
 * cluster goes on (a replica takes over): that is `CONNECTION`, retryable, not `CLOSED`.
 */
export function mapClusterWriteError(error: unknown, context: string): WatchtowerError {
  const mapped = mapRedisError(error, context);
  if (mapped.code !== ErrorCode.CLOSED) return mapped;
  return new ConnectionError(`${mapped.message} (a cluster node's connection ended)`, {
    cause: error,
  });
}

import {
  ClosedError,
  ConnectionError,
  ErrorCode,
  WatchtowerError,
  isWatchtowerError,
} from '@watchtower/core';

/*
 * The one place where amqplib and RabbitMQ errors become Watchtower errors. The broker closes a
 * channel or the connection with an AMQP reply code (amqplib puts it on `error.code` as a
 * number); those codes are part of the protocol, so they are what we branch on. amqplib's own
 * `IllegalOperationError` (a channel or connection already closed) is known by its name.
 */

/** AMQP reply codes of a connection the broker dropped or cannot serve now, but will. */
const UNAVAILABLE: ReadonlySet<number> = new Set([
  320, // CONNECTION_FORCED: closed by an operator or a broker shutdown
  506, // RESOURCE_ERROR: the broker ran short of a resource
  541, // INTERNAL_ERROR
]);

/** AMQP reply codes of a request that can never succeed as it is. */
const REFUSED: ReadonlySet<number> = new Set([
  311, // CONTENT_TOO_LARGE
  402, // INVALID_PATH: no such vhost
  403, // ACCESS_REFUSED
  404, // NOT_FOUND
  405, // RESOURCE_LOCKED: an exclusive queue of another connection
  406, // PRECONDITION_FAILED: declared before with other arguments
  530, // NOT_ALLOWED
  540, // NOT_IMPLEMENTED
]);

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
]);

/** The AMQP reply code of a broker error (320, 404, 406 ...), or undefined. */
export function amqpReplyCode(error: unknown): number | undefined {
  const code = (error as { code?: unknown } | null | undefined)?.code;
  return typeof code === 'number' ? code : undefined;
}

/**
 * Maps anything amqplib throws or rejects with to a `WatchtowerError`, keeping the original as
 * `cause`. Watchtower errors pass through unchanged.
 *
 * - a channel or connection already closed (`IllegalOperationError`) -> `CLOSED` when `closed`
 *   (the transport is closing), else `CONNECTION`;
 * - reply codes 320, 506, 541 and socket errors -> `CONNECTION` (retryable);
 * - 311 (content too large) -> `NON_RETRYABLE`; 402, 403, 404, 405, 406, 530, 540 ->
 *   `TRANSPORT`, not retryable: the request itself is wrong for this broker;
 * - anything else -> `TRANSPORT` (retryable).
 *
 * @param context - what was being done, e.g. `publish to watchtower.events`; starts the message.
 */
export function mapAmqpError(error: unknown, context: string, closed = false): WatchtowerError {
  if (isWatchtowerError(error)) return error;
  const text = error instanceof Error ? error.message : String(error);
  const message = `${context}: ${text}`;
  const options = { cause: error };
  if (error instanceof Error && error.name === 'IllegalOperationError') {
    return closed ? new ClosedError(message, options) : new ConnectionError(message, options);
  }
  const reply = amqpReplyCode(error);
  if (reply !== undefined) {
    if (UNAVAILABLE.has(reply)) return new ConnectionError(message, options);
    if (reply === 311) {
      return new WatchtowerError(ErrorCode.NON_RETRYABLE, message, {
        ...options,
        retryable: false,
      });
    }
    if (REFUSED.has(reply)) {
      return new WatchtowerError(ErrorCode.TRANSPORT, message, { ...options, retryable: false });
    }
    return new WatchtowerError(ErrorCode.TRANSPORT, message, options);
  }
  const code = (error as { code?: unknown } | null | undefined)?.code;
  if (typeof code === 'string' && SOCKET_CODES.has(code)) {
    return new ConnectionError(message, options);
  }
  if (closed) return new ClosedError(message, options);
  return new WatchtowerError(ErrorCode.TRANSPORT, message, options);
}

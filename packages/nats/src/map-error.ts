import { JetStreamApiError, JetStreamError } from '@nats-io/jetstream';
import {
  AuthorizationError,
  ClosedConnectionError,
  ConnectionError as NatsConnectionError,
  DrainingConnectionError,
  InvalidArgumentError,
  InvalidSubjectError,
  NoRespondersError,
  PermissionViolationError,
  ProtocolError,
  RequestError,
  TimeoutError as NatsTimeoutError,
  UserAuthenticationExpiredError,
} from '@nats-io/transport-node';
import {
  ClosedError,
  ConnectionError,
  ErrorCode,
  TimeoutError,
  ValidationError,
  WatchtowerError,
  isWatchtowerError,
} from '@watchtower/core';

/**
 * The one place where errors of the `@nats-io` client become Watchtower errors. The driver
 * error is kept as `cause`. `operation` ("publish to watchtower.events.user.created") goes into
 * the message so a log line says what failed. A request cut off because the connection closed
 * (a JetStream publish in flight at `close()`) is `CLOSED`, not a retryable failure.
 */
export function mapNatsError(error: unknown, operation: string, timeoutMs = 0): WatchtowerError {
  if (isWatchtowerError(error)) return error;
  const cause = { cause: error };
  const text = error instanceof Error ? error.message || error.name : String(error);
  const message = `${operation}: ${text}`;

  if (error instanceof ClosedConnectionError || error instanceof DrainingConnectionError) {
    return new ClosedError(`${operation}: the NATS connection is closed`, cause);
  }
  if (error instanceof AuthorizationError || error instanceof UserAuthenticationExpiredError) {
    return new ConnectionError(message, { ...cause, retryable: false });
  }
  if (error instanceof PermissionViolationError) {
    return new WatchtowerError(ErrorCode.TRANSPORT, message, { ...cause, retryable: false });
  }
  if (error instanceof NatsTimeoutError) {
    return new TimeoutError(message, timeoutMs, cause);
  }
  if (isNoResponders(error)) {
    // Nothing answered: for a JetStream publish no stream captures the subject; for an API
    // call JetStream is off. Retrying helps once the stream exists again.
    return new WatchtowerError(
      ErrorCode.TRANSPORT,
      `${operation}: no JetStream stream or API answered (no responders)`,
      cause,
    );
  }
  if (error instanceof RequestError) {
    const inner = error.cause;
    if (inner instanceof NatsTimeoutError) return new TimeoutError(message, timeoutMs, cause);
    if (
      inner instanceof ClosedConnectionError ||
      inner instanceof DrainingConnectionError ||
      isCutOffByClose(inner)
    ) {
      return new ClosedError(`${operation}: the NATS connection is closed`, cause);
    }
    return new WatchtowerError(ErrorCode.TRANSPORT, message, cause);
  }
  if (error instanceof InvalidSubjectError || error instanceof InvalidArgumentError) {
    return new ValidationError(message, [], cause);
  }
  if (error instanceof JetStreamApiError) {
    // 4xx from the JetStream API is a request the server will refuse again (bad config,
    // name in use); 5xx and others may pass later.
    const status = error.status;
    return new WatchtowerError(ErrorCode.TRANSPORT, `${message} (JetStream error ${error.code})`, {
      ...cause,
      retryable: !(status >= 400 && status < 500),
    });
  }
  if (error instanceof JetStreamError || error instanceof ProtocolError) {
    return new WatchtowerError(ErrorCode.TRANSPORT, message, cause);
  }
  if (error instanceof NatsConnectionError || hasSocketCode(error)) {
    return new ConnectionError(message, cause);
  }
  return new WatchtowerError(ErrorCode.TRANSPORT, message, cause);
}

/**
 * True for the error with which the client fails every request still pending when its
 * connection closes: its request multiplexer answers each with a `RequestError` of its own,
 * with no cause, which the request then wraps (every other failure a request wraps has a
 * cause or a type: a timeout, no responders). The client gives it no type of its own, so this
 * shape is what tells it apart; the integration tests pin it against the real client.
 */
function isCutOffByClose(inner: unknown): boolean {
  return inner instanceof RequestError && inner.cause === undefined;
}

/** True when nothing answered a request (no stream captures a subject, JetStream off). */
export function isNoResponders(error: unknown): boolean {
  if (error instanceof NoRespondersError) return true;
  if (error instanceof RequestError && error.isNoResponders()) return true;
  // jetstream().publish wraps "no responders" in a JetStreamNotEnabled error.
  if (error instanceof Error && error.cause !== undefined && error.cause !== error) {
    return isNoResponders(error.cause);
  }
  return false;
}

const SOCKET_CODES = new Set([
  'ECONNREFUSED',
  'ECONNRESET',
  'ETIMEDOUT',
  'EPIPE',
  'ENOTFOUND',
  'EHOSTUNREACH',
]);

function hasSocketCode(error: unknown): boolean {
  const code = (error as { code?: unknown } | null)?.code;
  return typeof code === 'string' && SOCKET_CODES.has(code);
}

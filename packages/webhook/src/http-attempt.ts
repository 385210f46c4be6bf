/**
 * One HTTP request of a delivery and what its outcome means: success, or a
 * `WebhookDeliveryError` that says whether to retry (network errors, timeouts, 408, 429, 5xx),
 * how long the endpoint asked to wait (`Retry-After`), or that the endpoint is gone (410).
 * The one place where undici's errors are mapped.
 *
 * The request goes to undici's `dispatch` with a handler of its own rather than through
 * `request()`: a delivery needs the status and two headers of the answer, never its body, so
 * the response stream, the async resource and the header parsing of `request()` would be work
 * done on every delivery for nothing. It must never leave a request's promise unsettled: a
 * timeout or an abort settles it at once, even while undici still waits for a connection.
 */
import {
  ErrorCode,
  WatchtowerError,
  isWatchtowerError,
  type Clock,
  type TimerHandle,
} from '@watchtower/core';
import type { Dispatcher } from 'undici';
import type { IncomingHttpHeaders } from 'node:http';
import { WebhookDeliveryError } from './errors.js';
import { HEADER_DUPLICATE } from './signature.js';

/** What one request needs. */
export interface AttemptRequest {
  /** The endpoint's URL, for messages. */
  readonly url: string;
  /** The URL's origin (`https://host:port`) and path with query, as undici's `dispatch` takes them. */
  readonly origin: string;
  readonly path: string;
  readonly body: Uint8Array;
  /** Flat `[name, value, name, value, ...]`. */
  readonly headers: string[];
  readonly timeoutMs: number;
  readonly dispatcher: Dispatcher;
  readonly clock: Clock;
  /** Aborts the request: the client is closing, or the caller gave up. */
  readonly abort: AttemptAbort;
}

/** Answer bytes read at most; a longer answer is cut off (its connection is not reused). */
const MAX_ANSWER_BYTES = 64 * 1024;

/**
 * The abort switch of one request: tripped by `close()` or the caller's signal, heard by the
 * request under way. A plain object with one listener: far cheaper to make than an
 * `AbortController` on every request, and nothing piles up on a shared signal.
 */
export class AttemptAbort {
  aborted = false;
  reason: unknown;
  #listener: ((reason: unknown) => void) | undefined;

  abort(reason: unknown): void {
    if (this.aborted) return;
    this.aborted = true;
    this.reason = reason;
    this.#listener?.(reason);
  }

  /** The one listener (the request under way); undefined removes it. */
  listen(listener: ((reason: unknown) => void) | undefined): void {
    this.#listener = listener;
  }
}

/** Why a request was cut off: its timeout, or an abort with this reason. */
type Cancel = { readonly timedOut: true } | { readonly timedOut: false; readonly reason: unknown };

const TIMED_OUT: Cancel = Object.freeze({ timedOut: true });

/**
 * Sends one POST; resolves with the 2xx status (or 409 from a receiver that says it handled
 * this id already), rejects with a mapped error.
 */
export function attempt(req: AttemptRequest): Promise<number> {
  return new Promise<number>((resolve, reject) => {
    new PostHandler(req, resolve, reject).start();
  });
}

/** undici's handler of one POST: keeps the status and the headers that matter, drops the body. */
class PostHandler implements Dispatcher.DispatchHandler {
  readonly #req: AttemptRequest;
  readonly #resolve: (status: number) => void;
  readonly #reject: (error: unknown) => void;
  #controller: Dispatcher.DispatchController | undefined;
  #timer: TimerHandle | undefined;
  #settled = false;
  #status = 0;
  #retryAfter: string | undefined;
  #duplicate = false;
  #received = 0;

  constructor(
    req: AttemptRequest,
    resolve: (status: number) => void,
    reject: (error: unknown) => void,
  ) {
    this.#req = req;
    this.#resolve = resolve;
    this.#reject = reject;
  }

  start(): void {
    const req = this.#req;
    if (req.abort.aborted) {
      this.#cancelWith({ timedOut: false, reason: req.abort.reason });
      return;
    }
    this.#timer = req.clock.setTimeout(() => this.#cancelWith(TIMED_OUT), req.timeoutMs);
    req.abort.listen((reason) => this.#cancelWith({ timedOut: false, reason }));
    // dispatch reports its own errors through onResponseError.
    req.dispatcher.dispatch(
      { origin: req.origin, path: req.path, method: 'POST', headers: req.headers, body: req.body },
      this,
    );
  }

  onRequestStart(controller: Dispatcher.DispatchController): void {
    this.#controller = controller;
    if (this.#settled) controller.abort(new Error('the delivery request was given up'));
  }

  onResponseStart(
    _controller: Dispatcher.DispatchController,
    statusCode: number,
    headers: IncomingHttpHeaders,
  ): void {
    if (statusCode < 200) return; // 1xx: the answer is still to come
    this.#status = statusCode;
    if (statusCode >= 300) {
      const retryAfter = headers['retry-after'];
      this.#retryAfter = typeof retryAfter === 'string' ? retryAfter : retryAfter?.[0];
      this.#duplicate = headers[HEADER_DUPLICATE] === '1';
    }
  }

  onResponseData(controller: Dispatcher.DispatchController, chunk: Buffer): void {
    this.#received += chunk.length;
    if (this.#received > MAX_ANSWER_BYTES && !this.#settled) {
      // The status is known: the rest of a long answer is not worth reading.
      this.#finish();
      controller.abort(new Error('the answer is longer than a delivery reads'));
    }
  }

  onResponseEnd(): void {
    this.#finish();
  }

  onResponseError(_controller: Dispatcher.DispatchController | undefined, error: Error): void {
    if (!this.#settle()) return;
    this.#reject(mapRequestError(this.#req, error, undefined));
  }

  /** Settles with the answer's outcome. */
  #finish(): void {
    if (!this.#settle()) return;
    const status = this.#status;
    if (status >= 200 && status < 300) this.#resolve(status);
    else if (status === 409 && this.#duplicate) this.#resolve(status);
    else this.#reject(statusError(this.#req, status, this.#retryAfter));
  }

  /** Cuts the request off and rejects at once, whether or not undici has started it. */
  #cancelWith(cancel: Cancel): void {
    if (!this.#settle()) return;
    const error = mapRequestError(this.#req, undefined, cancel);
    this.#controller?.abort(error);
    this.#reject(error);
  }

  /** Marks the request settled (false when it was already); clears its timer and listener. */
  #settle(): boolean {
    if (this.#settled) return false;
    this.#settled = true;
    if (this.#timer !== undefined) this.#req.clock.clearTimeout(this.#timer);
    this.#req.abort.listen(undefined);
    return true;
  }
}

function statusError(
  req: AttemptRequest,
  status: number,
  retryAfter: string | undefined,
): WebhookDeliveryError {
  const url = req.url;
  if (status === 410) {
    return new WebhookDeliveryError(
      ErrorCode.NON_RETRYABLE,
      `${url} answered 410 Gone: the endpoint is disabled`,
      { url, kind: 'gone', status },
    );
  }
  const retryable = status === 408 || status === 429 || status >= 500;
  const retryAfterMs = retryable ? parseRetryAfter(retryAfter, req.clock.now()) : undefined;
  return new WebhookDeliveryError(
    retryable ? ErrorCode.TRANSPORT : ErrorCode.NON_RETRYABLE,
    `${url} answered ${status}`,
    {
      url,
      kind: 'status',
      status,
      ...(retryAfterMs === undefined ? {} : { retryAfterMs }),
    },
    { retryable },
  );
}

/**
 * `Retry-After` in milliseconds from `now`: delta-seconds or an HTTP date; undefined when
 * absent or unreadable.
 */
export function parseRetryAfter(value: string | undefined, now: number): number | undefined {
  if (value === undefined) return undefined;
  const text = value.trim();
  if (/^\d+$/.test(text)) return Number(text) * 1000;
  const at = Date.parse(text);
  return Number.isNaN(at) ? undefined : Math.max(0, at - now);
}

/** The error of a request that failed (`error`) or was cut off (`cancel`). */
function mapRequestError(req: AttemptRequest, error: unknown, cancel: Cancel | undefined): Error {
  const url = req.url;
  if (cancel?.timedOut === true) {
    return new WebhookDeliveryError(
      ErrorCode.TIMEOUT,
      `${url} did not answer within ${req.timeoutMs} ms`,
      { url, kind: 'timeout' },
    );
  }
  if (cancel !== undefined) {
    // Cut off by close() (a CLOSED reason) or by the caller's signal.
    return isWatchtowerError(cancel.reason)
      ? cancel.reason
      : new WatchtowerError(ErrorCode.ABORTED, `the request to ${url} was aborted`, {
          cause: cancel.reason,
          retryable: false,
        });
  }
  // The guarded lookup fails the connection with our own error; undici wraps it or not.
  for (let cause: unknown = error; cause instanceof Error; cause = cause.cause) {
    if (cause instanceof WebhookDeliveryError && cause.kind === 'private-address') {
      return new WebhookDeliveryError(
        cause.code,
        cause.message.replace(/^[^ ]+/, url),
        {
          url,
          kind: 'private-address',
        },
        { retryable: false },
      );
    }
  }
  const code = (error as { code?: unknown }).code;
  return new WebhookDeliveryError(
    ErrorCode.CONNECTION,
    `cannot reach ${url}: ${typeof code === 'string' ? `${code} ` : ''}${(error as Error).message}`,
    { url, kind: 'network' },
    { cause: error },
  );
}

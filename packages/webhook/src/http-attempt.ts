/**
 * One HTTP request of a delivery and what its outcome means: success, or a
 * `WebhookDeliveryError` that says whether to retry (network errors, timeouts, 408, 429, 5xx),
 * how long the endpoint asked to wait (`Retry-After`), or that the endpoint is gone (410).
 * The one place where undici's errors are mapped.
 */
import { ErrorCode, WatchtowerError, isWatchtowerError, type Clock } from '@watchtower/core';
import { EventEmitter } from 'node:events';
import { request, type Dispatcher } from 'undici';
import { WebhookDeliveryError } from './errors.js';
import { HEADER_DUPLICATE } from './signature.js';

/** What one request needs. */
export interface AttemptRequest {
  readonly url: string;
  readonly body: Uint8Array;
  readonly headers: Record<string, string>;
  readonly timeoutMs: number;
  readonly dispatcher: Dispatcher;
  readonly clock: Clock;
  /** Aborts the request: the client is closing, or the caller gave up. */
  readonly abort: AttemptAbort;
}

const TIMED_OUT = Symbol('timed out');

/**
 * The abort switch of one request, in the form undici takes as `signal` (an emitter of
 * `abort` with `aborted` and `reason`): far cheaper to make than an `AbortController` on every
 * request, and one per request means no listeners pile up on a shared signal.
 */
export class AttemptAbort extends EventEmitter {
  aborted = false;
  reason: unknown;

  abort(reason: unknown): void {
    if (this.aborted) return;
    this.aborted = true;
    this.reason = reason;
    this.emit('abort');
  }
}

/**
 * Sends one POST; resolves with the 2xx status (or 409 from a receiver that says it handled
 * this id already), rejects with a mapped error.
 */
export async function attempt(req: AttemptRequest): Promise<number> {
  const abort = req.abort;
  const timer = req.clock.setTimeout(() => abort.abort(TIMED_OUT), req.timeoutMs);
  try {
    const res = await request(req.url, {
      method: 'POST',
      body: req.body,
      headers: req.headers,
      dispatcher: req.dispatcher,
      signal: abort,
    });
    // The answer's body is not needed; reading it to the end frees the connection for reuse.
    await res.body.dump({ limit: 64 * 1024 });
    const status = res.statusCode;
    if (status >= 200 && status < 300) return status;
    if (status === 409 && res.headers[HEADER_DUPLICATE] === '1') return status;
    throw statusError(req, status, retryAfterHeader(res.headers['retry-after']));
  } catch (error) {
    if (error instanceof WebhookDeliveryError) throw error;
    throw mapRequestError(req, error, abort);
  } finally {
    req.clock.clearTimeout(timer);
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

function retryAfterHeader(value: string | string[] | undefined): string | undefined {
  return Array.isArray(value) ? value[0] : value;
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

function mapRequestError(req: AttemptRequest, error: unknown, signal: AttemptAbort): Error {
  const url = req.url;
  if (signal.aborted && signal.reason === TIMED_OUT) {
    return new WebhookDeliveryError(
      ErrorCode.TIMEOUT,
      `${url} did not answer within ${req.timeoutMs} ms`,
      { url, kind: 'timeout' },
      { cause: error },
    );
  }
  if (signal.aborted) {
    // Cut off by close() (a CLOSED reason) or by the caller's signal.
    const reason: unknown = signal.reason;
    return isWatchtowerError(reason)
      ? reason
      : new WatchtowerError(ErrorCode.ABORTED, `the request to ${url} was aborted`, {
          cause: reason,
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

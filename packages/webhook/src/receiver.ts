/**
 * `createWebhookReceiver`: the receiving side of signed webhooks. One function that is a Node
 * `(req, res)` handler (node:http, Express, Fastify's `reply.raw`) with `verify()`, `on()` and
 * `forget()` on it.
 *
 * What it must never do: read a body it has not limited, compare a signature with `===`,
 * accept a request without a signature or with a timestamp outside the tolerance, run a
 * handler twice for one `webhook-id` within the window, or answer 2xx before the handler has
 * succeeded (a sender retries what failed only when it hears of the failure).
 */
import type { IncomingHttpHeaders, IncomingMessage, ServerResponse } from 'node:http';
import { Buffer } from 'node:buffer';
import {
  compilePattern,
  configError,
  decodeEvent,
  isWatchtowerError,
  ErrorCode,
  assertPattern,
  systemClock,
  type Clock,
  type CompiledPattern,
  type Event,
} from '@watchtower/core';
import {
  clockOption,
  functionOption,
  integerOption,
  rejectUnknownOptions,
} from '@watchtower/core/transport-kit';
import { WebhookVerificationError } from './errors.js';
import { parsePublicKey, parseWebhookSecret } from './keys.js';
import {
  HEADER_ID,
  HEADER_SIGNATURE,
  HEADER_TIMESTAMP,
  HEADER_DUPLICATE,
  hasValidSignature,
  type VerifyingKeys,
} from './signature.js';
import { listOption } from './list-option.js';

/** Options of {@link createWebhookReceiver}. At least one secret or public key is required. */
export interface WebhookReceiverOptions {
  /**
   * `whsec_` secrets whose `v1` signatures are accepted. Give the old and the new one while a
   * secret rotates.
   * @defaultValue none
   */
  secrets?: string | readonly string[];
  /**
   * `whpk_` ed25519 public keys whose `v1a` signatures are accepted (no shared secret needed).
   * @defaultValue none
   */
  publicKeys?: string | readonly string[];
  /**
   * How far `webhook-timestamp` may be from now, either way, in seconds; a request outside is
   * refused (a replay, or a clock far off). Integer >= 1.
   * @defaultValue 300
   */
  toleranceSeconds?: number;
  /**
   * Largest body read; a larger one is answered 413 without being read further. Integer >= 1.
   * @defaultValue 1048576 (1 MiB)
   */
  maxBodyBytes?: number;
  /**
   * Most `webhook-id`s remembered for replay protection. Ids are kept until their timestamp
   * leaves the tolerance (after that the timestamp check refuses them anyway); when this many
   * are held, expired ones are swept and, if none, the oldest is forgotten (counted in
   * `stats().evictedIds`). Integer >= 1.
   * @defaultValue 100000
   */
  maxRememberedIds?: number;
  /**
   * Told of every handler failure (the sender hears of it as a 500 or 422 and retries or
   * dead-letters it); for logs.
   * @defaultValue none
   */
  onError?: (error: unknown, event: Event) => void;
  /**
   * Time for the tolerance and the replay window.
   * @defaultValue `systemClock`
   */
  clock?: Clock;
}

/** The defaults of {@link WebhookReceiverOptions}. */
export const DEFAULT_WEBHOOK_RECEIVER_OPTIONS = Object.freeze({
  toleranceSeconds: 300,
  maxBodyBytes: 1_048_576,
  maxRememberedIds: 100_000,
});

const RECEIVER_OPTION_KEYS = [
  'secrets',
  'publicKeys',
  'toleranceSeconds',
  'maxBodyBytes',
  'maxRememberedIds',
  'onError',
  'clock',
] as const;

/** A request that passed {@link WebhookReceiver.verify}. */
export interface VerifiedWebhook {
  /** `webhook-id`: the event id, the same on every retry of one delivery. */
  readonly id: string;
  /** `webhook-timestamp`, seconds since the epoch. */
  readonly timestamp: number;
  /** The raw body that was signed. */
  readonly body: Buffer;
}

/** What a handler of {@link WebhookReceiver.on} gets beside the event. */
export interface WebhookContext {
  readonly id: string;
  readonly timestamp: number;
  readonly headers: IncomingHttpHeaders;
}

/**
 * Handles a verified event. Throwing answers 500 (the sender retries), or 422 for a
 * `NonRetryableError` (the sender dead-letters it at once).
 */
export type WebhookHandler = (event: Event, context: WebhookContext) => void | Promise<void>;

/** A plain snapshot of {@link WebhookReceiver.stats}. */
export interface WebhookReceiverStats {
  /** Requests answered 2xx. */
  accepted: number;
  /** Requests refused, by reason (`bad-signature`, `replayed`, ...). */
  rejected: Record<string, number>;
  /** Requests whose handlers threw (answered 500 or 422). */
  handlerFailures: number;
  /** Verified events no handler was subscribed to (answered 422). */
  unrouted: number;
  /** Ids remembered for replay protection now. */
  rememberedIds: number;
  /** Ids forgotten before their window ended because `maxRememberedIds` was reached. */
  evictedIds: number;
}

/** A request body as frameworks leave it on `req.body` when told to keep it raw. */
type RawBodyRequest = IncomingMessage & { body?: unknown; rawBody?: unknown };

/**
 * The receiver: call it as `(req, res)`, or use `verify` with a raw body of your own.
 */
export interface WebhookReceiver {
  /**
   * Reads the body (limited by `maxBodyBytes`, or takes `req.rawBody` / a raw `req.body` a
   * framework read already), verifies it, runs the handlers whose pattern matches the event's
   * type one after the other, and answers: 204 when they all succeeded, 422 when none matched
   * (so the sender dead-letters it rather than it being dropped unseen), 500 when one threw
   * (422 for a `NonRetryableError`), 400/401/409/413/503 when refused (see
   * `WebhookVerificationError`). Never rejects.
   */
  (req: IncomingMessage, res: ServerResponse): Promise<void>;
  /**
   * Checks `headers` and `rawBody` as the handler does and remembers the id, so the same id
   * is refused as `replayed` within the window; call `forget(id)` when your own handling of it
   * failed and the sender should be let in again.
   *
   * @throws {@link WebhookVerificationError} (code `VALIDATION`) with `status` and `reason`.
   */
  verify(headers: IncomingHttpHeaders | Headers, rawBody: Uint8Array | string): VerifiedWebhook;
  /** Runs `handler` for verified events whose type matches `pattern`; returns a remover. */
  on(pattern: string, handler: WebhookHandler): () => void;
  /** Forgets a remembered id: a request with it is accepted again. */
  forget(id: string): void;
  stats(): WebhookReceiverStats;
}

type IdState = { readonly state: 'handling' | 'handled'; readonly expiresAt: number };

/**
 * A verifying webhook receiver.
 *
 * ```ts
 * const receiver = createWebhookReceiver({ secrets: process.env.WEBHOOK_SECRET });
 * receiver.on('order.*', async (event) => { ... });
 * http.createServer(receiver).listen(8080);
 * ```
 *
 * @throws a `CONFIG` error naming the field when an option is invalid, or when neither
 * `secrets` nor `publicKeys` is given.
 */
export function createWebhookReceiver(options: WebhookReceiverOptions): WebhookReceiver {
  return buildReceiver(options, 'createWebhookReceiver', undefined);
}

/** What a dispatch did with a verified request: the status to answer, and whether it is done. */
export interface DispatchOutcome {
  readonly status: number;
  readonly text?: string;
  /** True: remember the id as handled (a replay is refused); false: let a retry in. */
  readonly handled: boolean;
  /** Nothing was subscribed to its type (counted apart from handler failures). */
  readonly unrouted?: boolean;
}

/** Takes a verified request in place of the handlers of `on()` (the webhook transport's way). */
export type Dispatch = (
  verified: VerifiedWebhook,
  req: IncomingMessage,
) => Promise<DispatchOutcome>;

/**
 * The receiver, with `dispatch` in place of the handlers of `on()` when given. `what` names
 * the options object in errors.
 */
export function buildReceiver(
  options: WebhookReceiverOptions,
  what: string,
  custom: Dispatch | undefined,
): WebhookReceiver {
  rejectUnknownOptions(options, RECEIVER_OPTION_KEYS, what);
  const keys: VerifyingKeys = {
    secrets: listOption('secrets', options.secrets).map((value, i) =>
      parseWebhookSecret(`secrets[${i}]`, value),
    ),
    publicKeys: listOption('publicKeys', options.publicKeys).map((value, i) =>
      parsePublicKey(`publicKeys[${i}]`, value),
    ),
  };
  if (keys.secrets.length === 0 && keys.publicKeys.length === 0) {
    throw configError('secrets', 'or `publicKeys` must hold at least one key');
  }
  const d = DEFAULT_WEBHOOK_RECEIVER_OPTIONS;
  const toleranceMs =
    integerOption('toleranceSeconds', options.toleranceSeconds ?? d.toleranceSeconds, 1) * 1000;
  const maxBodyBytes = integerOption('maxBodyBytes', options.maxBodyBytes ?? d.maxBodyBytes, 1);
  const maxIds = integerOption(
    'maxRememberedIds',
    options.maxRememberedIds ?? d.maxRememberedIds,
    1,
  );
  const clock = clockOption('clock', options.clock ?? systemClock);
  const onError =
    options.onError === undefined ? undefined : functionOption('onError', options.onError);

  const ids = new Map<string, IdState>();
  const handlers = new Set<{ pattern: CompiledPattern; handler: WebhookHandler }>();
  const stats = {
    accepted: 0,
    rejected: {} as Record<string, number>,
    handlerFailures: 0,
    unrouted: 0,
  };
  let evictedIds = 0;

  const runHandlers: Dispatch = async (verified, req) => {
    const event = decodeWebhookEvent(verified.body);
    const context: WebhookContext = {
      id: verified.id,
      timestamp: verified.timestamp,
      headers: req.headers,
    };
    const matching = [...handlers].filter(({ pattern }) => pattern.matches(event.type));
    if (matching.length === 0) {
      // Never acked silently: the sender dead-letters it, where it can be seen and replayed.
      return { status: 422, text: `no handler for ${event.type}`, handled: false, unrouted: true };
    }
    for (const { handler } of matching) {
      try {
        await handler(event, context);
      } catch (error) {
        onError?.(error, event);
        const final = isWatchtowerError(error, ErrorCode.NON_RETRYABLE);
        return {
          status: final ? 422 : 500,
          text: final ? 'not processable' : 'handler failed',
          handled: false,
        };
      }
    }
    return { status: 204, handled: true };
  };
  const dispatch = custom ?? runHandlers;

  const remember = (id: string, state: IdState['state'], timestamp: number): void => {
    if (!ids.has(id) && ids.size >= maxIds) {
      const now = clock.now();
      for (const [key, held] of ids) if (held.expiresAt <= now) ids.delete(key);
      if (ids.size >= maxIds) {
        const oldest = ids.keys().next().value as string;
        ids.delete(oldest);
        evictedIds++;
      }
    }
    ids.set(id, { state, expiresAt: timestamp * 1000 + toleranceMs });
  };

  const check = (
    headers: IncomingHttpHeaders | Headers,
    rawBody: Uint8Array | string,
  ): VerifiedWebhook => {
    const id = header(headers, HEADER_ID);
    const stamp = header(headers, HEADER_TIMESTAMP);
    const signature = header(headers, HEADER_SIGNATURE);
    if (id === undefined || stamp === undefined || signature === undefined) {
      throw new WebhookVerificationError(
        'missing-headers',
        `a signed webhook needs the headers ${HEADER_ID}, ${HEADER_TIMESTAMP} and ${HEADER_SIGNATURE}`,
      );
    }
    if (!/^\d{1,15}$/.test(stamp)) {
      throw new WebhookVerificationError(
        'malformed-headers',
        `${HEADER_TIMESTAMP} must be whole seconds since the epoch`,
      );
    }
    const timestamp = Number(stamp);
    const body = typeof rawBody === 'string' ? Buffer.from(rawBody) : Buffer.from(rawBody);
    if (!hasValidSignature(id, timestamp, body, signature, keys)) {
      throw new WebhookVerificationError(
        'bad-signature',
        'no signature matches the secrets or keys of this receiver',
      );
    }
    // Checked after the signature, so an unsigned request learns nothing about our clock.
    const skew = clock.now() - timestamp * 1000;
    if (skew > toleranceMs) {
      throw new WebhookVerificationError(
        'timestamp-too-old',
        `${HEADER_TIMESTAMP} is ${Math.round(skew / 1000)} s old, more than the tolerance of ${toleranceMs / 1000} s`,
      );
    }
    if (-skew > toleranceMs) {
      throw new WebhookVerificationError(
        'timestamp-in-future',
        `${HEADER_TIMESTAMP} is ${Math.round(-skew / 1000)} s ahead, more than the tolerance of ${toleranceMs / 1000} s`,
      );
    }
    const held = ids.get(id);
    if (held !== undefined && held.expiresAt > clock.now()) {
      throw held.state === 'handled'
        ? new WebhookVerificationError('replayed', `${HEADER_ID} ${id} was handled already`)
        : new WebhookVerificationError('in-progress', `${HEADER_ID} ${id} is being handled`);
    }
    return { id, timestamp, body };
  };

  const refuse = (res: ServerResponse, error: WebhookVerificationError): void => {
    stats.rejected[error.reason] = (stats.rejected[error.reason] ?? 0) + 1;
    const headers: Record<string, string> = { 'content-type': 'text/plain; charset=utf-8' };
    if (error.reason === 'in-progress') headers['retry-after'] = '1';
    if (error.reason === 'body-too-large') headers['connection'] = 'close';
    // Tells a Watchtower sender that this is a delivery already made, not a failure.
    if (error.reason === 'replayed') headers[HEADER_DUPLICATE] = '1';
    respond(res, error.status, error.message, headers);
  };

  const handle = async (req: IncomingMessage, res: ServerResponse): Promise<void> => {
    let claimed: string | undefined;
    try {
      const body = await readBody(req, maxBodyBytes);
      const verified = check(req.headers, body);
      remember(verified.id, 'handling', verified.timestamp);
      claimed = verified.id;
      const outcome = await dispatch(verified, req);
      if (outcome.handled) {
        remember(verified.id, 'handled', verified.timestamp);
        stats.accepted++;
      } else {
        ids.delete(verified.id);
        if (outcome.unrouted === true) stats.unrouted++;
        else stats.handlerFailures++;
      }
      claimed = undefined;
      respond(res, outcome.status, outcome.text ?? '');
    } catch (error) {
      if (claimed !== undefined) ids.delete(claimed);
      if (error instanceof WebhookVerificationError) refuse(res, error);
      else respond(res, 500, error instanceof WebhookConfigError ? error.message : 'error');
    }
  };

  const receiver = ((req: IncomingMessage, res: ServerResponse) =>
    handle(req, res)) as WebhookReceiver;
  receiver.verify = (headers, rawBody) => {
    const verified = check(headers, rawBody);
    remember(verified.id, 'handled', verified.timestamp);
    return verified;
  };
  receiver.on = (pattern, handler) => {
    assertPattern(pattern);
    functionOption('handler', handler);
    const entry = { pattern: compilePattern(pattern), handler };
    handlers.add(entry);
    return () => {
      handlers.delete(entry);
    };
  };
  receiver.forget = (id) => {
    ids.delete(id);
  };
  receiver.stats = () => ({
    accepted: stats.accepted,
    rejected: { ...stats.rejected },
    handlerFailures: stats.handlerFailures,
    unrouted: stats.unrouted,
    rememberedIds: ids.size,
    evictedIds,
  });
  return receiver;
}

/**
 * The event in a verified body.
 *
 * @throws {@link WebhookVerificationError} `not-an-event` (400) when it is not one.
 */
export function decodeWebhookEvent(body: Uint8Array): Event {
  try {
    return decodeEvent(body);
  } catch (error) {
    throw new WebhookVerificationError(
      'not-an-event',
      'the body is signed but is not a Watchtower event',
      { cause: error },
    );
  }
}

/** A server set up wrong (a parsed body where the raw one is needed): answered 500. */
class WebhookConfigError extends Error {
  constructor(field: string, problem: string) {
    super(`invalid option \`${field}\`: ${problem}`);
  }
}

function header(headers: IncomingHttpHeaders | Headers, name: string): string | undefined {
  const value =
    typeof (headers as Headers).get === 'function'
      ? (headers as Headers).get(name)
      : (headers as IncomingHttpHeaders)[name];
  if (Array.isArray(value)) return value.length === 1 ? value[0] : undefined;
  return value === null || value === undefined || value === '' ? undefined : value;
}

function respond(
  res: ServerResponse,
  status: number,
  text: string,
  headers: Record<string, string> = {},
): void {
  if (res.headersSent) return;
  res.writeHead(status, headers);
  res.end(text);
}

/**
 * The raw body: what a framework kept (`req.rawBody`, or `req.body` as a Buffer or string from
 * `express.raw()`), else read from the stream up to `max` bytes.
 */
async function readBody(req: RawBodyRequest, max: number): Promise<Buffer> {
  const kept = req.rawBody ?? req.body;
  if (kept !== undefined) {
    if (typeof kept === 'string' || kept instanceof Uint8Array) {
      const body = Buffer.from(kept);
      if (body.length > max) throw tooLarge(max);
      return body;
    }
    throw new WebhookConfigError(
      'req.body',
      'was parsed before the receiver saw it; a signature is checked over the raw body (use express.raw(), or keep the raw body in req.rawBody)',
    );
  }
  const declared = Number(req.headers['content-length']);
  if (Number.isFinite(declared) && declared > max) {
    req.resume();
    throw tooLarge(max);
  }
  return new Promise<Buffer>((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    const onData = (chunk: Buffer): void => {
      size += chunk.length;
      if (size <= max) {
        chunks.push(chunk);
        return;
      }
      // Stop keeping it; what else comes is read and dropped, so the answer can be sent.
      req.off('data', onData);
      req.off('end', onEnd);
      req.resume();
      reject(tooLarge(max));
    };
    const onEnd = (): void => {
      req.off('error', onError);
      resolve(Buffer.concat(chunks, size));
    };
    const onError = (error: Error): void => reject(error);
    req.on('data', onData);
    req.once('end', onEnd);
    req.once('error', onError);
  });
}

function tooLarge(max: number): WebhookVerificationError {
  return new WebhookVerificationError('body-too-large', `the body is larger than ${max} bytes`);
}

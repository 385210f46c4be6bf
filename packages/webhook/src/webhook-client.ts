/**
 * `WebhookClient`: signed delivery of events to endpoint subscriptions over undici, with the
 * fault tolerance each endpoint gets on its own: retries with exponential backoff and jitter
 * (network errors, timeouts, 408, 429 and 5xx; `Retry-After` honoured), a circuit breaker per
 * URL, a rate limit and a concurrency limit, stats; 410 disables the endpoint; what fails for
 * good goes to the dead-letter store, from which it can be replayed to the endpoint it failed at.
 *
 * Endpoints are delivered to in parallel, each under its own limits, never one after the other
 * under one lock. What must never happen here: a delivery given up without its dead letter
 * stored, a retry of a 4xx other than 408/429, or a wait that `close()` cannot end.
 */
import { Buffer } from 'node:buffer';
import { setMaxListeners } from 'node:events';
import {
  CircuitBreaker,
  ClosedError,
  ErrorCode,
  ValidationError,
  RetryPolicy,
  configError,
  encodeEvent,
  isCircuitFailure,
  isWatchtowerError,
  sleep,
  systemClock,
  toWatchtowerError,
  type CircuitBreakerOptions,
  type CircuitBreakerStats,
  type Clock,
  type CloseOptions,
  type CompiledPattern,
  type Event,
  type RetryPolicyOptions,
  type WatchtowerError,
} from '@watchtower/core';
import {
  TransportLifecycle,
  abortError,
  checkPublishOptions,
  booleanOption,
  clockOption,
  deadLetterReason,
  integerOption,
  numberOption,
  objectOption,
  rejectUnknownOptions,
  stringOption,
} from '@watchtower/core/transport-kit';
import { Agent } from 'undici';
import { guardedLookup } from './address-guard.js';
import {
  MemoryWebhookDeadLetterStore,
  type WebhookDeadLetter,
  type WebhookDeadLetterStore,
} from './dead-letters.js';
import { resolveEndpoint, type ResolvedEndpoint, type WebhookEndpoint } from './endpoint.js';
import { WebhookDeliveryError } from './errors.js';
import { AttemptAbort, attempt } from './http-attempt.js';
import { Semaphore, TokenBucket } from './limits.js';
import {
  HEADER_ID,
  HEADER_LEGACY,
  HEADER_SIGNATURE,
  HEADER_TIMESTAMP,
  legacySignatureValue,
  signatureValue,
} from './signature.js';

/** A per-endpoint rate limit. */
export interface WebhookRateLimit {
  /** Requests a second, on average (retries included). Finite, > 0. */
  perSecond: number;
  /**
   * Requests let through at once after a quiet spell. Integer >= 1.
   * @defaultValue `max(1, ceil(perSecond))`
   */
  burst?: number;
}

/** Options of {@link WebhookClient}. */
export interface WebhookClientOptions {
  /** The endpoint subscriptions; more can be added with `addEndpoint`. @defaultValue none */
  endpoints?: readonly WebhookEndpoint[];
  /**
   * Time limit of one request (connect, send, the answer's headers and body), in ms.
   * @defaultValue 10000
   */
  timeoutMs?: number;
  /**
   * Retries of a failed delivery: core's `RetryPolicyOptions` (`maxAttempts` counts every
   * request, the first included; `strategy`, `minDelayMs`, `maxDelayMs`, `factor`, `jitter`).
   * @defaultValue `{ maxAttempts: 5, minDelayMs: 1000, maxDelayMs: 60000, factor: 2, jitter: 0.5 }`
   */
  deliveryRetry?: Omit<RetryPolicyOptions, 'clock'>;
  /**
   * Longest `Retry-After` honoured, in ms. An endpoint that asks for a longer wait has the
   * event dead-lettered at once (replay it later) rather than holding it.
   * @defaultValue 120000
   */
  maxRetryAfterMs?: number;
  /**
   * The circuit breaker of each URL (core's `CircuitBreakerOptions` without `clock`, `name`,
   * `isFailure`): it opens after `failureThreshold` failed requests in a row, then rejects at
   * once with `CIRCUIT_OPEN` (no request made) until `resetTimeoutMs` has passed. 4xx answers
   * other than 408/429 do not count. `false`: no breaker.
   * @defaultValue core's defaults (5 failures, 60 s open, 2 trial successes)
   */
  endpointCircuitBreaker?: Omit<CircuitBreakerOptions, 'clock' | 'name' | 'isFailure'> | false;
  /** Rate limit of each endpoint. @defaultValue none */
  rateLimit?: WebhookRateLimit;
  /**
   * Requests in flight to one endpoint at most; further ones wait their turn.
   * @defaultValue 16
   */
  maxConcurrentPerEndpoint?: number;
  /**
   * Keep-alive connections per origin in undici's pool.
   * @defaultValue 16
   */
  connections?: number;
  /**
   * Deliver to private, loopback and link-local addresses (10/8, 127/8, 169.254/16, ::1,
   * fc00::/7, ...). Off, such URLs are refused when added (an address literal) or when
   * connecting (a name that resolves to one, checked after DNS on every connection). Turn it on
   * for local development and tests only.
   * @defaultValue false
   */
  allowPrivateAddresses?: boolean;
  /**
   * Where deliveries that failed for good are kept.
   * @defaultValue a `MemoryWebhookDeadLetterStore` of 10 000 letters
   */
  deadLetters?: WebhookDeadLetterStore;
  /** `user-agent` of every request. @defaultValue `'watchtower-webhook'` */
  userAgent?: string;
  /**
   * What `close()` without `timeoutMs` waits for deliveries in flight before cutting them off
   * (they go to the dead-letter store with code `CLOSED`).
   * @defaultValue 10000
   */
  closeTimeoutMs?: number;
  /** Timers (timeouts, backoff, rate limit, breakers) and timestamps. @defaultValue `systemClock` */
  clock?: Clock;
}

export const WEBHOOK_CLIENT_OPTION_KEYS = [
  'endpoints',
  'timeoutMs',
  'deliveryRetry',
  'maxRetryAfterMs',
  'endpointCircuitBreaker',
  'rateLimit',
  'maxConcurrentPerEndpoint',
  'connections',
  'allowPrivateAddresses',
  'deadLetters',
  'userAgent',
  'closeTimeoutMs',
  'clock',
] as const;

/** The defaults of {@link WebhookClientOptions}. */
export const DEFAULT_WEBHOOK_CLIENT_OPTIONS = Object.freeze({
  timeoutMs: 10_000,
  deliveryRetry: Object.freeze({
    maxAttempts: 5,
    minDelayMs: 1000,
    maxDelayMs: 60_000,
    factor: 2,
    jitter: 0.5,
  }),
  maxRetryAfterMs: 120_000,
  maxConcurrentPerEndpoint: 16,
  connections: 16,
  allowPrivateAddresses: false,
  userAgent: 'watchtower-webhook',
  closeTimeoutMs: 10_000,
});

/** A delivery that the endpoint accepted. */
export interface DeliveryReceipt {
  readonly endpointId: string;
  readonly url: string;
  /** The 2xx status answered. */
  readonly status: number;
  /** Requests made, the successful one included. */
  readonly attempts: number;
}

/** Options of {@link WebhookClient.deliver}. */
export interface DeliverOptions {
  /**
   * A delivery cut off by `close()` is not dead-lettered: `deliver` rejects with `CLOSED`
   * instead, once the other endpoints are done, and the caller keeps the event (as the durable
   * queue of `WebhookTransport` does: the event stays unacked in the broker).
   * @defaultValue false
   */
  keepOnClose?: boolean;
}

/** What {@link WebhookClient.deliver} did for one event. */
export interface DeliveryReport {
  readonly delivered: DeliveryReceipt[];
  /** Endpoints that failed for good: the letter's id in the store and the error. */
  readonly deadLettered: {
    endpointId: string;
    url: string;
    letterId: string;
    error: WatchtowerError;
  }[];
}

/** A plain snapshot of one endpoint. */
export interface WebhookEndpointStats {
  readonly id: string;
  readonly url: string;
  readonly enabled: boolean;
  /** `'gone'` when a 410 disabled it, `'config'` when `enabled: false` did. */
  readonly disabledBy: 'gone' | 'config' | undefined;
  /** Deliveries accepted by the endpoint. */
  readonly delivered: number;
  /** Deliveries given up (each went to the dead-letter store, or its caller was told). */
  readonly failed: number;
  /** Requests made. */
  readonly requests: number;
  /** Requests that were retries. */
  readonly retries: number;
  /** Requests in flight now. */
  readonly inFlight: number;
  /** Requests waiting for a concurrency slot or the rate limit now. */
  readonly waiting: number;
  readonly lastStatus: number | undefined;
  readonly lastError: string | undefined;
  /** The URL's circuit breaker; undefined with `endpointCircuitBreaker: false`. */
  readonly circuit: CircuitBreakerStats | undefined;
}

/** What {@link WebhookClient.replayDeadLetters} did. */
export interface ReplayReport {
  readonly delivered: number;
  readonly failed: number;
  /** Each letter replayed: its id, and the error when it failed again (it stays in the store). */
  readonly outcomes: { letterId: string; endpointId: string; error?: WatchtowerError }[];
}

interface EndpointState {
  readonly config: ResolvedEndpoint;
  /** The request headers that do not change: the endpoint's own, content type, user agent. */
  readonly fixedHeaders: readonly string[];
  readonly breaker: CircuitBreaker | undefined;
  readonly bucket: TokenBucket | undefined;
  readonly slots: Semaphore;
  delivered: number;
  failed: number;
  requests: number;
  retries: number;
  waitingForRate: number;
  lastStatus: number | undefined;
  lastError: string | undefined;
}

/**
 * For `WebhookTransport` only (not exported from the package): `deliver` with the event's body
 * encoded already, at the moment the bus hands the event over with its text at hand, so that
 * a publish that then waits for room does not encode the event a second time.
 */
export const deliverEncoded = Symbol('deliverEncoded');

/** True when one of `patterns` matches `type`. */
function matchesAny(patterns: readonly CompiledPattern[], type: string): boolean {
  for (const pattern of patterns) if (pattern.matches(type)) return true;
  return false;
}

/** 4xx answers (but 408, 429) say nothing about the health of the endpoint. */
function countsForCircuit(error: unknown): boolean {
  return isCircuitFailure(error);
}

/**
 * Delivers events to webhook endpoints. Use it alone (`deliver`, `send`) or through
 * `WebhookTransport`, which puts it behind the Transport contract.
 *
 * @throws a `CONFIG` error naming the field when an option is invalid.
 */
export class WebhookClient {
  readonly #endpoints = new Map<string, EndpointState>();
  readonly #life: TransportLifecycle;
  readonly #clock: Clock;
  readonly #retry: RetryPolicy;
  readonly #breakerOptions: Omit<CircuitBreakerOptions, 'clock' | 'name' | 'isFailure'> | false;
  readonly #rateLimit: { perSecond: number; burst: number } | undefined;
  readonly #maxConcurrent: number;
  readonly #timeoutMs: number;
  readonly #maxRetryAfterMs: number;
  readonly #allowPrivate: boolean;
  readonly #userAgent: string;
  readonly #agent: Agent;
  readonly #store: WebhookDeadLetterStore;
  /**
   * Aborted when close() cuts off what is still in flight: ends the waits (backoff, slots, rate
   * limit), which listen to it only while they wait.
   */
  readonly #closing = new AbortController();
  /** The requests under way, each with its own abort switch, cut off by close(). */
  readonly #attempts = new Set<AttemptAbort>();
  readonly #inFlight = new Set<Promise<unknown>>();

  constructor(options: WebhookClientOptions = {}) {
    rejectUnknownOptions(options, WEBHOOK_CLIENT_OPTION_KEYS, 'WebhookClient');
    const d = DEFAULT_WEBHOOK_CLIENT_OPTIONS;
    this.#clock = clockOption('clock', options.clock ?? systemClock);
    this.#timeoutMs = numberOption('timeoutMs', options.timeoutMs ?? d.timeoutMs, { above: 0 });
    const retry = objectOption('deliveryRetry', options.deliveryRetry, [
      'strategy',
      'maxAttempts',
      'minDelayMs',
      'maxDelayMs',
      'factor',
      'jitter',
      'random',
    ]);
    this.#retry = new RetryPolicy({ ...d.deliveryRetry, ...retry, clock: this.#clock });
    this.#maxRetryAfterMs = numberOption(
      'maxRetryAfterMs',
      options.maxRetryAfterMs ?? d.maxRetryAfterMs,
      {
        min: 0,
      },
    );
    if (options.endpointCircuitBreaker === false) this.#breakerOptions = false;
    else {
      this.#breakerOptions = objectOption(
        'endpointCircuitBreaker',
        options.endpointCircuitBreaker,
        ['failureThreshold', 'resetTimeoutMs', 'halfOpenMaxConcurrent', 'successThreshold'],
      );
      // Checked now, not at the first endpoint: CircuitBreaker names the field.
      new CircuitBreaker({ ...this.#breakerOptions, clock: this.#clock });
    }
    if (options.rateLimit !== undefined) {
      const rate = objectOption('rateLimit', options.rateLimit, ['perSecond', 'burst']);
      const perSecond = numberOption('rateLimit.perSecond', rate.perSecond, { above: 0 });
      const burst = integerOption(
        'rateLimit.burst',
        rate.burst ?? Math.max(1, Math.ceil(perSecond)),
        1,
      );
      this.#rateLimit = { perSecond, burst };
    }
    this.#maxConcurrent = integerOption(
      'maxConcurrentPerEndpoint',
      options.maxConcurrentPerEndpoint ?? d.maxConcurrentPerEndpoint,
      1,
    );
    const connections = integerOption('connections', options.connections ?? d.connections, 1);
    this.#allowPrivate = booleanOption(
      'allowPrivateAddresses',
      options.allowPrivateAddresses ?? d.allowPrivateAddresses,
    );
    this.#userAgent = stringOption('userAgent', options.userAgent ?? d.userAgent);
    const closeTimeoutMs = numberOption(
      'closeTimeoutMs',
      options.closeTimeoutMs ?? d.closeTimeoutMs,
      {
        min: 0,
      },
    );
    if (options.deadLetters !== undefined) {
      const store = options.deadLetters as Partial<WebhookDeadLetterStore> | null;
      for (const method of ['add', 'list', 'get', 'remove', 'size'] as const) {
        if (typeof store?.[method] !== 'function') {
          throw configError('deadLetters', `must be a WebhookDeadLetterStore (no ${method}())`);
        }
      }
    }
    this.#store = options.deadLetters ?? new MemoryWebhookDeadLetterStore();
    if (options.endpoints !== undefined && !Array.isArray(options.endpoints)) {
      throw configError('endpoints', 'must be an array of endpoints');
    }
    const endpoints: readonly WebhookEndpoint[] = options.endpoints ?? [];
    endpoints.forEach((endpoint, i) => this.#add(endpoint, `endpoints[${i}]`));
    this.#agent = new Agent({
      connections,
      pipelining: 1,
      ...(this.#allowPrivate ? {} : { connect: { lookup: guardedLookup } }),
    });
    // Waits listen to it only while they wait, but many may wait at once (one per delivery).
    setMaxListeners(0, this.#closing.signal);
    this.#life = new TransportLifecycle({
      name: 'the webhook client',
      clock: this.#clock,
      closeTimeoutMs,
      mapError: (error) => toWatchtowerError(error),
    });
  }

  /** The dead-letter store. */
  get deadLetters(): WebhookDeadLetterStore {
    return this.#store;
  }

  /** Adds an endpoint subscription. @throws `CONFIG` naming the field, or when its id is taken. */
  addEndpoint(endpoint: WebhookEndpoint): void {
    this.#add(endpoint, 'endpoint');
  }

  /** Removes an endpoint; false when there was none with this id. */
  removeEndpoint(id: string): boolean {
    return this.#endpoints.delete(id);
  }

  /** Enables an endpoint again (after a 410, or `enabled: false`). False when there is none. */
  enableEndpoint(id: string): boolean {
    const state = this.#endpoints.get(id);
    if (state === undefined) return false;
    state.config.enabled = true;
    state.config.disabledBy = undefined;
    return true;
  }

  /** The endpoints, with their patterns and state (keys left out). */
  endpoints(): { id: string; url: string; events: readonly string[]; enabled: boolean }[] {
    return [...this.#endpoints.values()].map(({ config }) => ({
      id: config.id,
      url: config.url,
      events: config.events,
      enabled: config.enabled,
    }));
  }

  /**
   * Delivers `event` to every enabled endpoint whose patterns match its type, all at once
   * (signed with `webhook-id` = the event id, so receivers can drop repeats).
   * Resolves when each endpoint has accepted it or its dead letter is stored; never rejects for
   * an endpoint's failure. Rejects with `CLOSED` after `close()`, and with the store's error
   * when a dead letter could not be stored (the delivery is then not given up silently: the
   * caller must keep the event).
   */
  deliver(event: Event, options: DeliverOptions = {}): Promise<DeliveryReport> {
    if (this.#life.closed) return Promise.reject(this.#life.closedError('deliver'));
    try {
      rejectUnknownOptions(options, ['keepOnClose'], 'deliver options');
      if (options.keepOnClose !== undefined) booleanOption('keepOnClose', options.keepOnClose);
    } catch (error) {
      return Promise.reject(error);
    }
    return this.#track(this.#deliver(event, options.keepOnClose === true));
  }

  /** {@link deliver} of an event whose body is encoded already (see `deliverEncoded`). */
  [deliverEncoded](event: Event, body: Buffer): Promise<DeliveryReport> {
    if (this.#life.closed) return Promise.reject(this.#life.closedError('deliver'));
    return this.#track(this.#deliver(event, false, body));
  }

  /**
   * Sends `event` to one endpoint (by id) with retries; resolves with the receipt, rejects with
   * the last error (`WebhookDeliveryError`, `CIRCUIT_OPEN`, `CLOSED`). Writes no dead letter.
   */
  send(
    endpointId: string,
    event: Event,
    options: { signal?: AbortSignal } = {},
  ): Promise<DeliveryReceipt> {
    if (this.#life.closed) return Promise.reject(this.#life.closedError('send'));
    try {
      checkPublishOptions(options);
    } catch (error) {
      return Promise.reject(error);
    }
    const state = this.#endpoints.get(endpointId);
    if (state === undefined)
      return Promise.reject(configError('endpointId', `is no endpoint: ${endpointId}`));
    return this.#track(this.#send(state, event, Buffer.from(encodeEvent(event)), options.signal));
  }

  /**
   * Sends a dead letter again to the endpoint it failed at (by its endpoint id); removes it
   * from the store when delivered. Resolves with the error when it failed again (the letter
   * stays), undefined when delivered; rejects `VALIDATION` for an id the store does not hold.
   */
  async replayDeadLetter(letterId: string): Promise<WatchtowerError | undefined> {
    this.#life.assertOpen('replay');
    const letter = await this.#store.get(letterId);
    if (letter === undefined) {
      throw new ValidationError(`the dead-letter store holds no letter ${letterId}`);
    }
    return this.#track(this.#replay(letter));
  }

  /**
   * Replays the dead letters held (of one endpoint, when given), oldest first: in order per
   * endpoint, endpoints in parallel. What fails again stays in the store.
   */
  async replayDeadLetters(options: { endpointId?: string } = {}): Promise<ReplayReport> {
    this.#life.assertOpen('replay');
    rejectUnknownOptions(options, ['endpointId'], 'replayDeadLetters options');
    const letters = (await this.#store.list()).filter(
      (letter) => options.endpointId === undefined || letter.endpointId === options.endpointId,
    );
    const byEndpoint = new Map<string, WebhookDeadLetter[]>();
    for (const letter of letters) {
      const list = byEndpoint.get(letter.endpointId) ?? [];
      list.push(letter);
      byEndpoint.set(letter.endpointId, list);
    }
    const outcomes: ReplayReport['outcomes'] = [];
    await Promise.all(
      [...byEndpoint.values()].map(async (list) => {
        for (const letter of list) {
          const error = await this.#track(this.#replay(letter));
          outcomes.push({
            letterId: letter.id,
            endpointId: letter.endpointId,
            ...(error === undefined ? {} : { error }),
          });
        }
      }),
    );
    const failed = outcomes.filter((o) => o.error !== undefined).length;
    return { delivered: outcomes.length - failed, failed, outcomes };
  }

  /** A snapshot per endpoint, by endpoint id. */
  stats(): Record<string, WebhookEndpointStats> {
    const out: Record<string, WebhookEndpointStats> = {};
    for (const [id, s] of this.#endpoints) {
      out[id] = {
        id,
        url: s.config.url,
        enabled: s.config.enabled,
        disabledBy: s.config.disabledBy,
        delivered: s.delivered,
        failed: s.failed,
        requests: s.requests,
        retries: s.retries,
        inFlight: s.slots.held,
        waiting: s.slots.waiting + s.waitingForRate,
        lastStatus: s.lastStatus,
        lastError: s.lastError,
        circuit: s.breaker?.stats(),
      };
    }
    return out;
  }

  /**
   * Stops accepting deliveries (`CLOSED`), waits for those in flight up to `timeoutMs`, then
   * cuts off the rest: each goes to the dead-letter store with code `CLOSED`. Resolves within
   * `timeoutMs` plus a short margin whatever the endpoints do; idempotent.
   */
  close(options?: CloseOptions): Promise<void> {
    return this.#life.close(
      options,
      async (deadline) => {
        await deadline.within(Promise.allSettled([...this.#inFlight]));
        this.#cutOff();
        await Promise.allSettled([...this.#inFlight]);
        for (const state of this.#endpoints.values()) state.bucket?.stop();
        await this.#agent.destroy();
      },
      () => {
        this.#cutOff();
        void this.#agent.destroy().catch(() => undefined);
      },
    );
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  /** Ends every wait and every request under way with `CLOSED`. */
  #cutOff(): void {
    const reason = this.#life.closedError();
    this.#closing.abort(reason);
    for (const abort of this.#attempts) abort.abort(reason);
  }

  /** True once `close()` has started. */
  get closed(): boolean {
    return this.#life.closed;
  }

  #add(endpoint: WebhookEndpoint, field: string): void {
    const config = resolveEndpoint(endpoint, field, this.#allowPrivate);
    if (this.#endpoints.has(config.id)) {
      throw configError(`${field}.id`, `is taken by another endpoint: ${config.id}`);
    }
    this.#endpoints.set(config.id, {
      config,
      fixedHeaders: this.#fixedHeaders(config),
      breaker:
        this.#breakerOptions === false
          ? undefined
          : new CircuitBreaker({
              ...this.#breakerOptions,
              clock: this.#clock,
              name: `the circuit of ${config.url}`,
              isFailure: countsForCircuit,
            }),
      bucket:
        this.#rateLimit === undefined
          ? undefined
          : new TokenBucket(this.#clock, this.#rateLimit.perSecond, this.#rateLimit.burst),
      slots: new Semaphore(this.#maxConcurrent),
      delivered: 0,
      failed: 0,
      requests: 0,
      retries: 0,
      waitingForRate: 0,
      lastStatus: undefined,
      lastError: undefined,
    });
  }

  /** The client's user agent replaces one the endpoint gives (as it always has). */
  #fixedHeaders(config: ResolvedEndpoint): string[] {
    const headers: string[] = [];
    for (const [name, value] of Object.entries(config.headers)) {
      if (name !== 'user-agent') headers.push(name, value);
    }
    headers.push('content-type', 'application/json', 'user-agent', this.#userAgent);
    return headers;
  }

  #track<T>(promise: Promise<T>): Promise<T> {
    this.#inFlight.add(promise);
    const done = (): void => {
      this.#inFlight.delete(promise);
    };
    promise.then(done, done);
    return promise;
  }

  async #deliver(
    event: Event,
    keepOnClose: boolean,
    body: Buffer = Buffer.from(encodeEvent(event)),
  ): Promise<DeliveryReport> {
    const report: DeliveryReport = { delivered: [], deadLettered: [] };
    const sends: Promise<WatchtowerError | undefined>[] = [];
    for (const state of this.#endpoints.values()) {
      if (state.config.enabled && matchesAny(state.config.patterns, event.type)) {
        sends.push(this.#deliverTo(state, event, body, keepOnClose, report));
      }
    }
    // One endpoint, the usual case, needs no Promise.all around it.
    const cutOff =
      sends.length === 1
        ? await sends[0]
        : (await Promise.all(sends)).find((error) => error !== undefined);
    if (cutOff !== undefined) throw cutOff;
    return report;
  }

  /**
   * Sends to one endpoint and writes the outcome into `report`: its receipt, or its dead
   * letter. Resolves with the `CLOSED` error instead of a dead letter when `keepOnClose` holds.
   */
  async #deliverTo(
    state: EndpointState,
    event: Event,
    body: Buffer,
    keepOnClose: boolean,
    report: DeliveryReport,
  ): Promise<WatchtowerError | undefined> {
    try {
      report.delivered.push(await this.#sendUntil(state, event, body, this.#closing.signal));
      return undefined;
    } catch (error) {
      const failure = toWatchtowerError(error);
      if (keepOnClose && failure.code === ErrorCode.CLOSED) return failure;
      const letterId = await this.#store.add(this.#letter(state, event, failure));
      report.deadLettered.push({
        endpointId: state.config.id,
        url: state.config.url,
        letterId,
        error: failure,
      });
      return undefined;
    }
  }

  async #replay(letter: WebhookDeadLetter): Promise<WatchtowerError | undefined> {
    const state = this.#endpoints.get(letter.endpointId);
    if (state === undefined) {
      return new WebhookDeliveryError(
        ErrorCode.NON_RETRYABLE,
        `the endpoint ${letter.endpointId} of dead letter ${letter.id} is no longer configured`,
        { url: letter.url, kind: 'disabled' },
      );
    }
    try {
      await this.#send(state, letter.event, Buffer.from(encodeEvent(letter.event)), undefined);
    } catch (error) {
      return toWatchtowerError(error);
    }
    await this.#store.remove(letter.id);
    return undefined;
  }

  #letter(
    state: EndpointState,
    event: Event,
    failure: WatchtowerError,
  ): Omit<WebhookDeadLetter, 'id'> {
    const attempts = failure instanceof WebhookDeliveryError ? failure.attempts : 1;
    const status = failure instanceof WebhookDeliveryError ? failure.status : undefined;
    return {
      event,
      url: state.config.url,
      endpointId: state.config.id,
      reason: deadLetterReason({
        failure,
        attempts,
        message: event,
        subscription: state.config.url,
        clock: this.#clock,
      }),
      ...(status === undefined ? {} : { status }),
    };
  }

  /** Sends with retries. Rejects with the last error, its `attempts` set. */
  #send(
    state: EndpointState,
    event: Event,
    body: Buffer,
    callerSignal: AbortSignal | undefined,
  ): Promise<DeliveryReceipt> {
    const closing = this.#closing.signal;
    return this.#sendUntil(
      state,
      event,
      body,
      callerSignal === undefined ? closing : AbortSignal.any([closing, callerSignal]),
    );
  }

  async #sendUntil(
    state: EndpointState,
    event: Event,
    body: Buffer,
    signal: AbortSignal,
  ): Promise<DeliveryReceipt> {
    const { config } = state;
    for (let n = 1; ; n++) {
      try {
        if (!config.enabled) {
          throw new WebhookDeliveryError(
            ErrorCode.NON_RETRYABLE,
            `${config.url} is disabled${config.disabledBy === 'gone' ? ' (it answered 410 Gone)' : ''}`,
            { url: config.url, kind: 'disabled' },
          );
        }
        const status = await this.#request(state, event, body, signal);
        state.delivered++;
        return { endpointId: config.id, url: config.url, status, attempts: n };
      } catch (error) {
        if (error instanceof WebhookDeliveryError) error.attempts = n;
        const wait = this.#retryWait(error, n);
        if (wait === undefined || signal.aborted) {
          state.failed++;
          state.lastError = error instanceof Error ? error.message : String(error);
          throw signal.aborted && !isWatchtowerError(error, ErrorCode.CLOSED)
            ? this.#cutOffError(signal, error)
            : error;
        }
        try {
          await sleep(this.#clock, wait, signal);
        } catch {
          state.failed++;
          throw this.#cutOffError(signal, error);
        }
        state.retries++;
      }
    }
  }

  /** The error of a delivery cut off by close() or its caller, with the last failure as cause. */
  #cutOffError(signal: AbortSignal, last: unknown): WatchtowerError {
    if (this.#closing.signal.aborted) {
      return new ClosedError(this.#life.closedError().message, { cause: last });
    }
    return abortError(signal, 'the delivery');
  }

  /** How long to wait before request `n + 1`, or undefined to give up. */
  #retryWait(error: unknown, n: number): number | undefined {
    if (!isWatchtowerError(error) || !error.retryable || !this.#retry.canRetry(n - 1))
      return undefined;
    if (error instanceof WebhookDeliveryError && error.retryAfterMs !== undefined) {
      return error.retryAfterMs <= this.#maxRetryAfterMs ? error.retryAfterMs : undefined;
    }
    return this.#retry.delayFor(n);
  }

  /** One request, under the breaker, the rate limit and the concurrency limit. */
  async #request(
    state: EndpointState,
    event: Event,
    body: Buffer,
    signal: AbortSignal,
  ): Promise<number> {
    const { config, breaker } = state;
    if (state.bucket !== undefined) {
      state.waitingForRate++;
      try {
        await state.bucket.take(signal);
      } finally {
        state.waitingForRate--;
      }
    }
    if (!state.slots.tryAcquire()) await state.slots.acquire(signal);
    try {
      breaker?.acquire();
      state.requests++;
      let status: number;
      const abort = new AttemptAbort();
      if (signal.aborted) abort.abort(signal.reason);
      const onAbort = (): void => abort.abort(signal.reason);
      // The client's own close signal reaches `abort` through #attempts; a caller's, here.
      const caller = signal === this.#closing.signal ? undefined : signal;
      caller?.addEventListener('abort', onAbort, { once: true });
      this.#attempts.add(abort);
      try {
        status = await attempt({
          url: config.url,
          origin: config.origin,
          path: config.path,
          body,
          headers: this.#headers(state, event.id, body),
          timeoutMs: this.#timeoutMs,
          dispatcher: this.#agent,
          clock: this.#clock,
          abort,
        });
      } catch (error) {
        breaker?.recordFailure(error);
        if (error instanceof WebhookDeliveryError) {
          state.lastStatus = error.status ?? state.lastStatus;
          if (error.kind === 'gone') {
            config.enabled = false;
            config.disabledBy = 'gone';
          }
        }
        throw error;
      } finally {
        this.#attempts.delete(abort);
        caller?.removeEventListener('abort', onAbort);
      }
      breaker?.recordSuccess();
      state.lastStatus = status;
      return status;
    } finally {
      state.slots.release();
    }
  }

  /**
   * The headers of one request, flat as undici takes them: the endpoint's own, content type and
   * user agent (made once per endpoint), then the signature of this id, time and body.
   */
  #headers(state: EndpointState, id: string, body: Buffer): string[] {
    const { keys } = state.config;
    const timestamp = Math.floor(this.#clock.now() / 1000);
    const headers = state.fixedHeaders.slice();
    headers.push(
      HEADER_ID,
      id,
      HEADER_TIMESTAMP,
      String(timestamp),
      HEADER_SIGNATURE,
      signatureValue(id, timestamp, body, keys),
    );
    if (keys.legacySecret !== undefined) {
      headers.push(HEADER_LEGACY, legacySignatureValue(body, keys.legacySecret));
    }
    return headers;
  }
}

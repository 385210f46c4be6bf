/**
 * Errors: one `WatchtowerError` class with a `code` from {@link ErrorCode}, subclasses only where
 * callers branch on the kind, and the helpers that wrap and describe unknown thrown values.
 * Callers branch on `code` (or `isWatchtowerError`), never on message text.
 */
/**
 * Every error code Watchtower raises. Callers branch on `error.code`, never on message text.
 */
export const ErrorCode = {
  /** A bad option value; the message names the field. */
  CONFIG: 'CONFIG',
  /** Event or payload failed validation (event type syntax, schema). */
  VALIDATION: 'VALIDATION',
  /** Bytes could not be decoded into an event, or an event could not be encoded. */
  SERIALIZATION: 'SERIALIZATION',
  /** The broker could not be reached or the connection was lost. */
  CONNECTION: 'CONNECTION',
  /** An operation did not finish within its time limit. */
  TIMEOUT: 'TIMEOUT',
  /** The component was closed; no further work is accepted. */
  CLOSED: 'CLOSED',
  /** The circuit breaker is open and rejected the call without trying it. */
  CIRCUIT_OPEN: 'CIRCUIT_OPEN',
  /** The publish queue was full and the `drop-newest` strategy rejected the event. */
  BACKPRESSURE_FULL: 'BACKPRESSURE_FULL',
  /** The event waited in the publish queue and was evicted by the `drop-oldest` strategy. */
  BACKPRESSURE_DROPPED: 'BACKPRESSURE_DROPPED',
  /** A handler failed; the failure is not worth retrying. */
  NON_RETRYABLE: 'NON_RETRYABLE',
  /** A handler threw; carried in dead-letter reasons. */
  HANDLER_FAILED: 'HANDLER_FAILED',
  /** The broker rejected an operation (publish refused, no route, protocol error). */
  TRANSPORT: 'TRANSPORT',
  /** The operation was cancelled through an `AbortSignal`. */
  ABORTED: 'ABORTED',
  /** The transport does not offer what was asked (see `info.capabilities`). */
  UNSUPPORTED: 'UNSUPPORTED',
  /**
   * An event arrived on a subject, stream or queue its type does not belong to (a producer's
   * mistake); carried in dead-letter reasons.
   */
  MISROUTED: 'MISROUTED',
} as const;

export type ErrorCode = (typeof ErrorCode)[keyof typeof ErrorCode];

const MARKER = Symbol.for('watchtower.error');

/** Options shared by every Watchtower error. */
export interface WatchtowerErrorOptions extends ErrorOptions {
  /** Whether repeating the same operation may succeed. Defaults by code. */
  retryable?: boolean;
}

const RETRYABLE_BY_DEFAULT: ReadonlySet<ErrorCode> = new Set<ErrorCode>([
  ErrorCode.CONNECTION,
  ErrorCode.TIMEOUT,
  ErrorCode.TRANSPORT,
  ErrorCode.HANDLER_FAILED,
]);

/**
 * The base of every error Watchtower throws or rejects with.
 *
 * `code` comes from {@link ErrorCode}; `cause` holds the driver error where there is one.
 */
export class WatchtowerError extends Error {
  readonly code: ErrorCode;
  /** Whether repeating the same operation may succeed. */
  readonly retryable: boolean;
  readonly [MARKER] = true;

  constructor(code: ErrorCode, message: string, options?: WatchtowerErrorOptions) {
    super(message, options?.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'WatchtowerError';
    this.code = code;
    this.retryable = options?.retryable ?? RETRYABLE_BY_DEFAULT.has(code);
  }
}

/** The broker is unreachable or the connection dropped. Retryable. */
export class ConnectionError extends WatchtowerError {
  constructor(message: string, options?: WatchtowerErrorOptions) {
    super(ErrorCode.CONNECTION, message, options);
    this.name = 'ConnectionError';
  }
}

/** An operation exceeded its time limit. Retryable. */
export class TimeoutError extends WatchtowerError {
  readonly timeoutMs: number;
  constructor(message: string, timeoutMs: number, options?: WatchtowerErrorOptions) {
    super(ErrorCode.TIMEOUT, message, options);
    this.name = 'TimeoutError';
    this.timeoutMs = timeoutMs;
  }
}

/** The component was closed. */
export class ClosedError extends WatchtowerError {
  constructor(message = 'closed', options?: WatchtowerErrorOptions) {
    super(ErrorCode.CLOSED, message, options);
    this.name = 'ClosedError';
  }
}

/** The circuit breaker is open; `retryAfterMs` says when a trial call will be let through. */
export class CircuitOpenError extends WatchtowerError {
  readonly retryAfterMs: number;
  constructor(message: string, retryAfterMs: number, options?: WatchtowerErrorOptions) {
    super(ErrorCode.CIRCUIT_OPEN, message, { retryable: false, ...options });
    this.name = 'CircuitOpenError';
    this.retryAfterMs = retryAfterMs;
  }
}

/** The publish queue refused or evicted the event. */
export class BackpressureError extends WatchtowerError {
  constructor(
    code: typeof ErrorCode.BACKPRESSURE_FULL | typeof ErrorCode.BACKPRESSURE_DROPPED,
    message: string,
    options?: WatchtowerErrorOptions,
  ) {
    super(code, message, options);
    this.name = 'BackpressureError';
  }
}

/** One problem found by validation. */
export interface ValidationIssue {
  message: string;
  path?: ReadonlyArray<PropertyKey>;
}

/** An event type or payload did not validate. Never retryable. */
export class ValidationError extends WatchtowerError {
  readonly issues: readonly ValidationIssue[];
  constructor(
    message: string,
    issues: readonly ValidationIssue[] = [],
    options?: WatchtowerErrorOptions,
  ) {
    super(ErrorCode.VALIDATION, message, { retryable: false, ...options });
    this.name = 'ValidationError';
    this.issues = issues;
  }
}

/** Bytes could not be decoded (or an event encoded). `raw` holds the bytes that failed. */
export class SerializationError extends WatchtowerError {
  readonly raw: Uint8Array | undefined;
  constructor(message: string, raw?: Uint8Array, options?: WatchtowerErrorOptions) {
    super(ErrorCode.SERIALIZATION, message, { retryable: false, ...options });
    this.name = 'SerializationError';
    this.raw = raw;
  }
}

/**
 * Throw this from a handler when retrying cannot help: the event goes to the dead-letter
 * queue at once.
 */
export class NonRetryableError extends WatchtowerError {
  constructor(message: string, options?: WatchtowerErrorOptions) {
    super(ErrorCode.NON_RETRYABLE, message, { ...options, retryable: false });
    this.name = 'NonRetryableError';
  }
}

/** A bad option. The message names the field. */
export function configError(field: string, problem: string): WatchtowerError {
  return new WatchtowerError(ErrorCode.CONFIG, `invalid option \`${field}\`: ${problem}`, {
    retryable: false,
  });
}

/**
 * True when `error` is a Watchtower error (optionally with the given code). Works across
 * duplicate installs of the package because it checks a registered symbol, not the class.
 */
export function isWatchtowerError(error: unknown, code?: ErrorCode): error is WatchtowerError {
  if (typeof error !== 'object' || error === null) return false;
  if ((error as Record<symbol, unknown>)[MARKER] !== true) return false;
  return code === undefined || (error as WatchtowerError).code === code;
}

/**
 * Wraps anything thrown into a `WatchtowerError`, keeping Watchtower errors as they are.
 */
export function toWatchtowerError(
  error: unknown,
  code: ErrorCode = ErrorCode.TRANSPORT,
  message?: string,
): WatchtowerError {
  if (isWatchtowerError(error)) return error;
  const text = message ?? (error instanceof Error ? error.message : String(error));
  return new WatchtowerError(code, text, { cause: error });
}

/** A short human-readable text of anything thrown, for logs and dead-letter reasons. */
export function describeError(error: unknown): string {
  if (error instanceof Error) return error.message || error.name;
  if (typeof error === 'string') return error;
  try {
    return JSON.stringify(error) ?? String(error);
  } catch {
    return String(error);
  }
}

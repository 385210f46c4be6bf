/**
 * The event model: the `Event` shape, `createEvent`, and the rules an event's fields must
 * follow so that every consumer, in any language, decodes it: a valid dotted type, string
 * ids, string-valued headers, an RFC 3339 UTC timestamp. `createEvent` and the bus's
 * `publish` refuse the rest with `VALIDATION` before anything is sent; the codec's decoder
 * accepts all of it (and more, from other writers). Nothing here encodes or sends.
 */
import { systemClock, type Clock } from './clock.js';
import { ValidationError } from './errors.js';
import { randomEventId } from './event-id.js';
import { describeValue, rejectUnknownOptions } from './options.js';

/**
 * An event: a plain, serialisable object. Create one with {@link createEvent}.
 *
 * On the wire it travels in the Rust Watchtower format (see `encodeEvent`).
 */
export interface Event<P = unknown, T extends string = string> {
  /** Unique id, UUID v4 by default. Brokers that deduplicate use it as the message id. */
  id: string;
  /** Dotted tokens of `[A-Za-z0-9_-]`, e.g. `user.created`. */
  type: T;
  /**
   * RFC 3339 timestamp in UTC: `2025-11-07T10:00:00.123Z` (a fraction of up to nine digits,
   * `Z` or `+00:00`).
   */
  timestamp: string;
  source?: string;
  correlationId?: string;
  causationId?: string;
  /** traceparent, tracestate, idempotency keys and user headers. */
  headers: Record<string, string>;
  payload: P;
}

/**
 * Optional fields for {@link createEvent}. Each is checked: a value of another type is a
 * `VALIDATION` error naming the field.
 */
export interface EventMetadataInput {
  /** A non-empty string. @defaultValue a new UUID v4 */
  id?: string;
  /**
   * An RFC 3339 UTC string (kept as written), or a `Date` of the years 0 to 9999 (written with
   * `toISOString()`).
   * @defaultValue now
   */
  timestamp?: string | Date;
  source?: string;
  correlationId?: string;
  causationId?: string;
  /** A plain object of string values; copied. @defaultValue `{}` */
  headers?: Record<string, string>;
}

const EVENT_TYPE = /^[A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]+)*$/;

/** True when `type` is a valid event type (dotted tokens of `[A-Za-z0-9_-]`, no wildcards). */
// Listed as a record so that a field added to EventMetadataInput and left out fails to compile.
const METADATA_KEYS = Object.keys({
  id: true,
  timestamp: true,
  source: true,
  correlationId: true,
  causationId: true,
  headers: true,
} satisfies Record<keyof EventMetadataInput, true>);

// Services publish a handful of types over and over: the last valid one skips the regex.
let lastValidType = '';

export function isValidEventType(type: unknown): type is string {
  if (type === lastValidType && type !== '') return true;
  if (typeof type !== 'string' || !EVENT_TYPE.test(type)) return false;
  lastValidType = type;
  return true;
}

/**
 * Throws a `VALIDATION` error unless `type` is one or more tokens of `[A-Za-z0-9_-]`
 * joined by dots.
 */
export function assertEventType(type: unknown): asserts type is string {
  if (isValidEventType(type)) return;
  throw new ValidationError(
    `invalid event type ${JSON.stringify(type)}: expected dotted tokens of [A-Za-z0-9_-], e.g. "user.created"`,
    [{ message: 'invalid event type', path: ['type'] }],
  );
}

/**
 * Builds an event with a fresh id and timestamp. Throws a `VALIDATION` error for an invalid
 * event type, before anything is sent anywhere.
 */
export function createEvent<P, T extends string>(
  type: T,
  payload: P,
  metadata?: EventMetadataInput,
): Event<P, T> {
  return createEventAt(type, payload, metadata, systemClock);
}

/**
 * {@link createEvent} with the timestamp taken from `clock` (the `EventBus` passes its own, so
 * that a fake clock reaches event timestamps too).
 */
export function createEventAt<P, T extends string>(
  type: T,
  payload: P,
  metadata: EventMetadataInput | undefined,
  clock: Clock,
): Event<P, T> {
  assertEventType(type);
  if (metadata === undefined) {
    return { id: randomEventId(), type, timestamp: nowIso(clock), headers: {}, payload };
  }
  rejectUnknownOptions(metadata, METADATA_KEYS, 'event metadata');
  const id = metadata.id ?? randomEventId();
  checkId(id);
  const headers = metadata.headers;
  if (headers !== undefined) checkHeaders(headers);
  const event: Event<P, T> = {
    id,
    type,
    timestamp: toTimestamp(metadata.timestamp, clock),
    headers: headers === undefined ? {} : { ...headers },
    payload,
  };
  const { source, correlationId, causationId } = metadata;
  if (source !== undefined) event.source = optionalString('source', source);
  if (correlationId !== undefined) {
    event.correlationId = optionalString('correlationId', correlationId);
  }
  if (causationId !== undefined) event.causationId = optionalString('causationId', causationId);
  return event;
}

/**
 * Throws a `VALIDATION` error naming the field unless `event` is an event every consumer can
 * decode: a valid type, a non-empty string id, an RFC 3339 UTC timestamp string, string
 * `source`/`correlationId`/`causationId` where present, and headers that are a plain object of
 * strings. The payload is not looked at here (the bus refuses one that cannot be JSON when it
 * encodes it).
 */
export function assertEvent(event: unknown): asserts event is Event {
  if (typeof event !== 'object' || event === null) {
    throw new ValidationError('publish() needs an Event (use createEvent) or (type, payload)');
  }
  const candidate = event as Partial<Record<keyof Event, unknown>>;
  assertEventType(candidate.type);
  checkId(candidate.id);
  if (!isRfc3339Utc(candidate.timestamp)) throw invalidTimestamp(candidate.timestamp);
  if (candidate.source !== undefined) optionalString('source', candidate.source);
  if (candidate.correlationId !== undefined) {
    optionalString('correlationId', candidate.correlationId);
  }
  if (candidate.causationId !== undefined) optionalString('causationId', candidate.causationId);
  checkHeaders(candidate.headers);
}

function checkId(id: unknown): asserts id is string {
  if (typeof id !== 'string' || id.length === 0) {
    throw new ValidationError(
      `invalid event id ${showValue(id)}: expected a non-empty string (a UUID by default)`,
      [{ message: 'invalid id', path: ['id'] }],
    );
  }
}

function optionalString(field: 'source' | 'correlationId' | 'causationId', value: unknown): string {
  if (typeof value !== 'string') {
    throw new ValidationError(`invalid event ${field} ${showValue(value)}: expected a string`, [
      { message: `invalid ${field}`, path: [field] },
    ]);
  }
  return value;
}

/** Headers are a plain object (no array, Map or class instance) whose own values are strings. */
function checkHeaders(headers: unknown): asserts headers is Record<string, string> {
  if (typeof headers !== 'object' || headers === null || !isPlain(headers)) {
    throw new ValidationError(
      `invalid event headers ${showValue(headers)}: expected an object of string values`,
      [{ message: 'invalid headers', path: ['headers'] }],
    );
  }
  for (const key of Object.keys(headers)) {
    const value = (headers as Record<string, unknown>)[key];
    if (typeof value !== 'string') {
      throw new ValidationError(
        `invalid event headers: the value of ${JSON.stringify(key)} is ${showValue(value)}, expected a string`,
        [{ message: 'header values must be strings', path: ['headers', key] }],
      );
    }
  }
}

function isPlain(value: object): boolean {
  const prototype = Object.getPrototypeOf(value) as unknown;
  return prototype === Object.prototype || prototype === null;
}

/** How a refused value is shown, in the style of option errors. */
function showValue(value: unknown): string {
  return value instanceof Date ? 'a Date' : describeValue(value);
}

// Events published together share a timestamp string: the last valid one skips the checks.
let lastValidTimestamp = '';

/** The number of the two digits at `at` of `value`, or -1 when they are not two digits. */
function twoDigits(value: string, at: number): number {
  const tens = value.charCodeAt(at) - 0x30;
  const ones = value.charCodeAt(at + 1) - 0x30;
  return tens >= 0 && tens <= 9 && ones >= 0 && ones <= 9 ? tens * 10 + ones : -1;
}

/**
 * True when `value` is an RFC 3339 timestamp in UTC, as every Watchtower consumer reads it
 * (Rust's chrono included): `YYYY-MM-DDTHH:MM:SS`, a fraction of one to nine digits or none,
 * then `Z` or `+00:00`; of a real calendar date and time (no February 30, no hour 24, no leap
 * second: `Date.parse` would roll those over, chrono refuses them). Read by its fixed layout,
 * character by character: this runs for every event published and every one decoded.
 */
export function isRfc3339Utc(value: unknown): value is string {
  if (value === lastValidTimestamp && value !== '') return true;
  if (typeof value !== 'string' || value.length < 20) return false;
  if (
    value.charCodeAt(4) !== 0x2d || // -
    value.charCodeAt(7) !== 0x2d ||
    value.charCodeAt(10) !== 0x54 || // T
    value.charCodeAt(13) !== 0x3a || // :
    value.charCodeAt(16) !== 0x3a
  ) {
    return false;
  }
  const century = twoDigits(value, 0);
  const yearOfCentury = twoDigits(value, 2);
  const month = twoDigits(value, 5);
  const day = twoDigits(value, 8);
  const hour = twoDigits(value, 11);
  const minute = twoDigits(value, 14);
  const second = twoDigits(value, 17);
  if (century < 0 || yearOfCentury < 0 || month < 1 || month > 12 || day < 1) return false;
  if (day > daysInMonth(century * 100 + yearOfCentury, month)) return false;
  if (hour < 0 || hour > 23 || minute < 0 || minute > 59 || second < 0 || second > 59) {
    return false;
  }
  let at = 19;
  if (value.charCodeAt(at) === 0x2e) {
    // .
    const first = ++at;
    while (at < value.length && at - first < 10) {
      const c = value.charCodeAt(at);
      if (c < 0x30 || c > 0x39) break;
      at++;
    }
    if (at === first || at - first > 9) return false;
  }
  const rest = value.length - at;
  const zone =
    rest === 1
      ? value.charCodeAt(at) === 0x5a // Z
      : rest === 6 && value.endsWith('+00:00');
  if (!zone) return false;
  lastValidTimestamp = value;
  return true;
}

function daysInMonth(year: number, month: number): number {
  if (month === 2) return year % 4 === 0 && (year % 100 !== 0 || year % 400 === 0) ? 29 : 28;
  return month === 4 || month === 6 || month === 9 || month === 11 ? 30 : 31;
}

function invalidTimestamp(value: unknown): ValidationError {
  return new ValidationError(
    `invalid event timestamp ${showValue(value)}: expected RFC 3339 in UTC, e.g. "2025-11-07T10:00:00.000Z", or a Date`,
    [{ message: 'invalid timestamp', path: ['timestamp'] }],
  );
}

// Formatting a Date costs more than the rest of createEvent; events created within the same
// millisecond share the string.
let lastMs = -1;
let lastIso = '';

function nowIso(clock: Clock): string {
  const ms = clock.now();
  if (ms !== lastMs) {
    lastMs = ms;
    lastIso = new Date(ms).toISOString();
  }
  return lastIso;
}

function toTimestamp(value: unknown, clock: Clock): string {
  if (value === undefined) return nowIso(clock);
  if (typeof value === 'string') {
    if (!isRfc3339Utc(value)) throw invalidTimestamp(value);
    return value;
  }
  if (!(value instanceof Date)) throw invalidTimestamp(value);
  if (Number.isNaN(value.getTime())) {
    throw new ValidationError('invalid event timestamp: the Date is not valid', [
      { message: 'invalid date', path: ['timestamp'] },
    ]);
  }
  // Outside these years toISOString() writes an extended year (+010000-...), not RFC 3339.
  const year = value.getUTCFullYear();
  if (year < 0 || year > 9999) throw invalidTimestamp(value);
  return value.toISOString();
}

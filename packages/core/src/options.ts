/**
 * Option validation for core and every transport, in one place and one message style.
 *
 * Each validator takes the field's name (a dotted path for nested options, `consumer.ackWaitMs`)
 * and the value, and returns the value typed or throws a `CONFIG` error worded
 * "invalid option `field`: must be ..., got <value>", the value shown by {@link describeValue}.
 * A transport writes only its broker's own rules, with these. Nothing here ever substitutes a
 * default for a bad value.
 */
import { configError } from './errors.js';
import type { Clock } from './clock.js';

/**
 * How an option error shows a value: a string quoted, a number, boolean, `null` or `undefined`
 * as written, anything else by its kind only (`an empty array`, `an array`, `an object`,
 * `a function`), since an options object may hold credentials.
 */
export function describeValue(value: unknown): string {
  if (typeof value === 'string') return JSON.stringify(value);
  if (typeof value === 'function') return 'a function';
  if (typeof value !== 'object' || value === null) return String(value);
  if (Array.isArray(value)) return value.length === 0 ? 'an empty array' : 'an array';
  return 'an object';
}

/**
 * Merges `options` over `defaults`: a field left out or set to `undefined` takes its default.
 * A field `defaults` does not have is a `CONFIG` error (a misspelt option must not be ignored
 * silently); `what` names the options object in that message.
 */
export function withDefaults<T extends object>(
  defaults: Readonly<Required<T>>,
  options: T | undefined,
  what: string,
): Required<T> {
  const merged = { ...defaults } as Required<T>;
  if (options === undefined) return merged;
  rejectUnknownOptions(options, Object.keys(defaults), what);
  for (const key of Object.keys(defaults) as (keyof T)[]) {
    const value = options[key];
    if (value !== undefined) merged[key] = value;
  }
  return merged;
}

/**
 * Throws a `CONFIG` error for the first own field of `options` that is not in `known` (and
 * not `undefined`), naming it and `what` it was given to. Options objects are checked this
 * way so that a typo (`failureTreshold`) fails loudly in JavaScript too. `options` itself must
 * be a non-array object: anything else is a `CONFIG` error naming `what`, never read as "no
 * options".
 */
export function rejectUnknownOptions(
  options: object,
  known: readonly string[],
  what: string,
): void {
  if (!isObject(options)) {
    throw configError(what, `must be an options object, got ${describeValue(options)}`);
  }
  const key = unknownKey(options, known);
  if (key !== undefined) {
    throw configError(key, `is not an option of ${what} (known: ${known.join(', ')})`);
  }
}

/** {@link rejectUnknownOptions} for an options argument that may be left out. */
export function checkOptionKeys(
  options: object | undefined,
  known: readonly string[],
  what: string,
): void {
  if (options !== undefined) rejectUnknownOptions(options, known, what);
}

/**
 * A nested options object (`consumer`, `stream`): `undefined` is `{}`; anything but a non-array
 * object is a `CONFIG` error, and so is a key not in `known`, named by its dotted path
 * (`consumer.ackWait`). Returns the fields that are not `undefined`, ready to spread over the
 * defaults without overwriting them.
 */
export function objectOption<T extends object>(
  field: string,
  value: T | undefined,
  known: readonly string[],
): Partial<T> {
  if (value === undefined) return {};
  if (!isObject(value)) {
    throw configError(field, `must be an options object, got ${describeValue(value)}`);
  }
  const key = unknownKey(value, known);
  if (key !== undefined) {
    throw configError(
      `${field}.${key}`,
      `is not an option of ${field} (known: ${known.join(', ')})`,
    );
  }
  const defined: Partial<T> = {};
  for (const [name, fieldValue] of Object.entries(value)) {
    if (fieldValue !== undefined) (defined as Record<string, unknown>)[name] = fieldValue;
  }
  return defined;
}

/**
 * An object handed on as it is (driver or TLS options, whose keys are the driver's business):
 * `undefined` stays `undefined`; anything but a non-array object is a `CONFIG` error saying it
 * must be `what`.
 */
export function recordOption<T extends object>(
  field: string,
  value: T | undefined,
  what = 'an object',
): T | undefined {
  if (value !== undefined && !isObject(value)) {
    throw configError(field, `must be ${what}, got ${describeValue(value)}`);
  }
  return value;
}

/** Bounds of {@link integerOption} beside its `min`. */
export interface IntegerBounds {
  /** The largest value allowed. */
  max?: number;
  /** Whether `Infinity` is allowed (meaning no limit). */
  allowInfinity?: boolean;
}

/**
 * Returns `value` if it is an integer >= `min` (and <= `bounds.max`, or `Infinity` with
 * `bounds.allowInfinity`); otherwise throws a `CONFIG` error naming `field`.
 */
export function integerOption(
  field: string,
  value: unknown,
  min: number,
  bounds: IntegerBounds = {},
): number {
  const allowInfinity = bounds.allowInfinity === true;
  if (
    typeof value !== 'number' ||
    value < min ||
    (bounds.max !== undefined && value > bounds.max) ||
    !(Number.isInteger(value) || (allowInfinity && value === Infinity))
  ) {
    const max = bounds.max === undefined ? '' : ` and <= ${bounds.max}`;
    const infinity = allowInfinity ? ' or Infinity' : '';
    throw configError(
      field,
      `must be an integer >= ${min}${max}${infinity}, got ${describeValue(value)}`,
    );
  }
  return value;
}

/**
 * Returns `value` if it is `-1` (no limit) or an integer >= `min`; otherwise throws a `CONFIG`
 * error naming `field`.
 */
export function limitOption(field: string, value: unknown, min = 1): number {
  if (typeof value !== 'number' || !Number.isInteger(value) || (value < min && value !== -1)) {
    throw configError(
      field,
      `must be -1 (no limit) or an integer >= ${min}, got ${describeValue(value)}`,
    );
  }
  return value;
}

/** Bounds of {@link numberOption}; `hint` is shown after them in the error. */
export interface NumberBounds {
  /** Inclusive lower bound. */
  min?: number;
  /** Inclusive upper bound. */
  max?: number;
  /** Exclusive lower bound. */
  above?: number;
  hint?: string;
}

/**
 * Returns `value` if it is a finite number within `bounds` (`{ min: 0 }` for a non-negative
 * one, `{ above: 0 }` for a positive one); otherwise throws a `CONFIG` error naming `field`.
 */
export function numberOption(field: string, value: unknown, bounds: NumberBounds): number {
  if (
    typeof value !== 'number' ||
    !Number.isFinite(value) ||
    (bounds.min !== undefined && value < bounds.min) ||
    (bounds.max !== undefined && value > bounds.max) ||
    (bounds.above !== undefined && value <= bounds.above)
  ) {
    const parts = [
      bounds.above === undefined ? undefined : `> ${bounds.above}`,
      bounds.min === undefined ? undefined : `>= ${bounds.min}`,
      bounds.max === undefined ? undefined : `<= ${bounds.max}`,
    ].filter((part) => part !== undefined);
    const hint = bounds.hint === undefined ? '' : ` (${bounds.hint})`;
    throw configError(
      field,
      `must be a finite number ${parts.join(' and ')}${hint}, got ${describeValue(value)}`,
    );
  }
  return value;
}

/** What {@link stringOption} asks of a string beside its type. */
export interface StringRule {
  /** Whether `''` is allowed. @defaultValue `false` */
  allowEmpty?: boolean;
  /** A pattern the whole string must match (without the `g` or `y` flag). */
  pattern?: RegExp;
  /** What the string must be, for the error ("dotted tokens of [A-Za-z0-9_-]"). */
  hint?: string;
}

/**
 * Returns `value` if it is a string, not empty unless `rule.allowEmpty`, matching
 * `rule.pattern` if given; otherwise throws a `CONFIG` error naming `field` that says it must
 * be `rule.hint`.
 */
export function stringOption(field: string, value: unknown, rule: StringRule = {}): string {
  if (
    typeof value !== 'string' ||
    (value === '' && rule.allowEmpty !== true) ||
    (rule.pattern !== undefined && !rule.pattern.test(value))
  ) {
    const what =
      rule.hint ??
      (rule.pattern === undefined
        ? `a${rule.allowEmpty === true ? '' : ' non-empty'} string`
        : `a string matching ${String(rule.pattern)}`);
    throw configError(field, `must be ${what}, got ${describeValue(value)}`);
  }
  return value;
}

/** Returns `value` if it is `true` or `false`; otherwise throws a `CONFIG` error naming `field`. */
export function booleanOption(field: string, value: unknown): boolean {
  if (typeof value !== 'boolean') {
    throw configError(field, `must be true or false, got ${describeValue(value)}`);
  }
  return value;
}

/**
 * Returns `value` if it is one of `allowed` (strings, numbers or booleans, compared with
 * `===`); otherwise throws a `CONFIG` error naming `field` that lists them.
 */
export function oneOfOption<const T extends string | number | boolean>(
  field: string,
  value: unknown,
  allowed: readonly T[],
): T {
  if (!allowed.includes(value as T)) {
    const shown = allowed.map(describeValue);
    const last = shown.pop() ?? '';
    const list = shown.length === 0 ? last : `${shown.join(', ')} or ${last}`;
    throw configError(field, `must be ${list}, got ${describeValue(value)}`);
  }
  return value as T;
}

/** Returns `value` if it is a function; otherwise throws a `CONFIG` error naming `field`. */
export function functionOption<T extends (...args: never[]) => unknown>(
  field: string,
  value: T,
): T {
  if (typeof value !== 'function') {
    throw configError(field, `must be a function, got ${describeValue(value)}`);
  }
  return value;
}

/**
 * Returns `value` if it looks like a {@link Clock} (has `now`, `setTimeout` and
 * `clearTimeout`); otherwise throws a `CONFIG` error naming `field`.
 */
export function clockOption(field: string, value: unknown): Clock {
  const clock = value as Partial<Record<keyof Clock, unknown>> | null;
  if (
    typeof clock !== 'object' ||
    clock === null ||
    typeof clock.now !== 'function' ||
    typeof clock.setTimeout !== 'function' ||
    typeof clock.clearTimeout !== 'function'
  ) {
    throw configError(
      field,
      `must be a Clock with now(), setTimeout() and clearTimeout(), got ${describeValue(value)}`,
    );
  }
  return value as Clock;
}

/** {@link integerOption} as an assertion. */
export function checkInteger(
  field: string,
  value: unknown,
  min: number,
  options: { allowInfinity?: boolean } = {},
): asserts value is number {
  integerOption(field, value, min, options);
}

/** {@link numberOption} as an assertion. */
export function checkNumber(
  field: string,
  value: unknown,
  bounds: NumberBounds,
): asserts value is number {
  numberOption(field, value, bounds);
}

/** {@link oneOfOption} as an assertion. */
export function checkOneOf<T extends string>(
  field: string,
  value: unknown,
  allowed: readonly T[],
): asserts value is T {
  oneOfOption(field, value, allowed);
}

/** Throws a `CONFIG` error naming `field` unless `value` is a function. */
export function checkFunction(field: string, value: unknown): void {
  functionOption(field, value as () => unknown);
}

/** {@link clockOption} as an assertion. */
export function checkClock(field: string, value: unknown): asserts value is Clock {
  clockOption(field, value);
}

function isObject(value: unknown): value is object {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/** The first own field of `options` that is not `undefined` and not in `known`. */
function unknownKey(options: object, known: readonly string[]): string | undefined {
  // for-in rather than Object.entries: some callers sit on a publish path.
  for (const key in options) {
    if (!Object.hasOwn(options, key) || known.includes(key)) continue;
    if ((options as Record<string, unknown>)[key] !== undefined) return key;
  }
  return undefined;
}

import { configError } from './errors.js';
import type { Clock } from './clock.js';

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
 * way so that a typo (`failureTreshold`) fails loudly in JavaScript too.
 */
export function rejectUnknownOptions(
  options: object,
  known: readonly string[],
  what: string,
): void {
  if (typeof options !== 'object' || options === null) {
    throw configError(what, 'must be an options object');
  }
  // for-in rather than Object.entries: some callers sit on a publish path.
  for (const key in options) {
    if (!Object.hasOwn(options, key) || known.includes(key)) continue;
    if ((options as Record<string, unknown>)[key] !== undefined) {
      throw configError(key, `is not an option of ${what} (known: ${known.join(', ')})`);
    }
  }
}

/**
 * {@link checkOptionKeys} for a call that answers with a promise: the `CONFIG` error as a
 * rejected promise to return, or `undefined` when every key is known.
 */
export function rejectedForUnknownKeys(
  options: object | undefined,
  known: readonly string[],
  what: string,
): Promise<never> | undefined {
  try {
    checkOptionKeys(options, known, what);
    return undefined;
  } catch (error) {
    return Promise.reject(error);
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

/** Throws a `CONFIG` error naming `field` unless `value` is an integer >= `min`. */
export function checkInteger(
  field: string,
  value: unknown,
  min: number,
  options: { allowInfinity?: boolean } = {},
): asserts value is number {
  const ok =
    typeof value === 'number' &&
    value >= min &&
    (Number.isInteger(value) || (options.allowInfinity === true && value === Infinity));
  if (!ok) {
    const extra = options.allowInfinity === true ? ' or Infinity' : '';
    throw configError(field, `must be an integer >= ${min}${extra}, got ${String(value)}`);
  }
}

/**
 * Throws a `CONFIG` error naming `field` unless `value` is a finite number within the bounds
 * (`min` and `max` inclusive, `above` exclusive).
 */
export function checkNumber(
  field: string,
  value: unknown,
  bounds: { min?: number; max?: number; above?: number; hint?: string },
): asserts value is number {
  const ok =
    typeof value === 'number' &&
    Number.isFinite(value) &&
    (bounds.min === undefined || value >= bounds.min) &&
    (bounds.max === undefined || value <= bounds.max) &&
    (bounds.above === undefined || value > bounds.above);
  if (!ok) {
    const parts = [
      bounds.above === undefined ? undefined : `> ${bounds.above}`,
      bounds.min === undefined ? undefined : `>= ${bounds.min}`,
      bounds.max === undefined ? undefined : `<= ${bounds.max}`,
    ].filter((part) => part !== undefined);
    const hint = bounds.hint === undefined ? '' : ` (${bounds.hint})`;
    throw configError(
      field,
      `must be a finite number ${parts.join(' and ')}${hint}, got ${String(value)}`,
    );
  }
}

/** Throws a `CONFIG` error naming `field` unless `value` is one of `allowed`. */
export function checkOneOf<T extends string>(
  field: string,
  value: unknown,
  allowed: readonly T[],
): asserts value is T {
  if (!allowed.includes(value as T)) {
    throw configError(
      field,
      `must be ${allowed.map((a) => `'${a}'`).join(', ')}, got ${JSON.stringify(value)}`,
    );
  }
}

/** Throws a `CONFIG` error naming `field` unless `value` is a function. */
export function checkFunction(field: string, value: unknown): void {
  if (typeof value !== 'function') throw configError(field, 'must be a function');
}

/** Throws a `CONFIG` error naming `field` unless `value` looks like a {@link Clock}. */
export function checkClock(field: string, value: unknown): asserts value is Clock {
  const clock = value as Partial<Record<keyof Clock, unknown>> | null;
  if (
    typeof clock !== 'object' ||
    clock === null ||
    typeof clock.now !== 'function' ||
    typeof clock.setTimeout !== 'function' ||
    typeof clock.clearTimeout !== 'function'
  ) {
    throw configError(field, 'must have now(), setTimeout() and clearTimeout()');
  }
}

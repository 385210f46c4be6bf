/**
 * The checks of the options every transport takes through the contract (`publish`,
 * `subscribe`, `nack`, `consumeDlq`), so that each transport refuses the same mistakes with
 * the same `CONFIG` errors: unknown keys, values of the wrong kind, and well-formed values the
 * transport cannot honour (a start position it keeps no history for), with why.
 */
import { configError } from '../errors.js';
import {
  checkFunction,
  checkInteger,
  checkNumber,
  describeValue,
  rejectUnknownOptions,
} from '../options.js';
import {
  TRANSPORT_OPTION_KEYS,
  type ConsumeDlqOptions,
  type DeadLetterHandler,
  type NackOptions,
  type PublishOptions,
  type StartPosition,
  type TransportSubscribeOptions,
} from '../transport.js';

/** The kinds of {@link StartPosition}. */
export type StartPositionKind = 'new' | 'earliest' | 'sequence' | 'time';

/** What a transport can honour of `subscribe` options. */
export interface SubscribeOptionRules {
  /** The start positions it supports. */
  readonly startFrom: readonly StartPositionKind[];
  /** Why others are not, for the error (`'core NATS keeps no history'`). */
  readonly startFromHint?: string;
  /** What a group name must also match beyond being a non-empty string, and how to say it. */
  readonly groupName?: { readonly pattern: RegExp; readonly hint: string };
}

/** `subscribe` options after {@link checkSubscribeOptions}. */
export interface CheckedSubscribeOptions {
  readonly group: string | undefined;
  readonly maxInFlight: number | undefined;
  readonly concurrency: number | undefined;
  readonly startFrom: StartPosition | undefined;
}

/**
 * Checks `subscribe` options: known keys only, `group` a non-empty string (matching
 * `rules.groupName`), `maxInFlight` and `concurrency` integers >= 1, `startFrom` a well-formed
 * position of a kind in `rules.startFrom`.
 *
 * @throws `CONFIG` naming the field.
 */
export function checkSubscribeOptions(
  options: TransportSubscribeOptions | undefined,
  rules: SubscribeOptionRules,
): CheckedSubscribeOptions {
  if (options === undefined)
    return {
      group: undefined,
      maxInFlight: undefined,
      concurrency: undefined,
      startFrom: undefined,
    };
  rejectUnknownOptions(options, TRANSPORT_OPTION_KEYS.subscribe, 'subscribe options');
  const { maxInFlight, concurrency } = options;
  if (maxInFlight !== undefined) checkInteger('maxInFlight', maxInFlight, 1);
  if (concurrency !== undefined) checkInteger('concurrency', concurrency, 1);
  return {
    group: checkGroup(options.group, 'group', rules.groupName),
    maxInFlight,
    concurrency,
    startFrom: checkStartFrom(options.startFrom, rules.startFrom, rules.startFromHint),
  };
}

/**
 * `undefined`, or a group name: a non-empty string (matching `name.pattern` when given).
 *
 * @throws `CONFIG` naming `field`.
 */
export function checkGroup(
  value: unknown,
  field: string,
  name?: { readonly pattern: RegExp; readonly hint: string },
): string | undefined {
  if (value === undefined) return undefined;
  if (typeof value !== 'string' || value.length === 0) {
    throw configError(field, `must be a non-empty string, got ${describeValue(value)}`);
  }
  if (name !== undefined && !name.pattern.test(value)) {
    throw configError(field, `must be ${name.hint}, got ${describeValue(value)}`);
  }
  return value;
}

/** The kind of a well-formed start position, or undefined. */
function kindOf(value: unknown): StartPositionKind | undefined {
  if (value === 'new' || value === 'earliest') return value;
  if (typeof value !== 'object' || value === null) return undefined;
  if ('sequence' in value) return 'sequence';
  if ('time' in value) return 'time';
  return undefined;
}

/**
 * `undefined`, or a start position of a kind in `supported`.
 *
 * @throws `CONFIG` naming `startFrom` (or `startFrom.sequence` / `startFrom.time`).
 */
export function checkStartFrom(
  value: unknown,
  supported: readonly StartPositionKind[],
  hint?: string,
): StartPosition | undefined {
  if (value === undefined) return undefined;
  const kind = kindOf(value);
  if (kind === undefined) {
    throw configError(
      'startFrom',
      `must be 'new', 'earliest', { sequence } or { time }, got ${describeValue(value)}`,
    );
  }
  if (kind === 'sequence') {
    const sequence = (value as { sequence: unknown }).sequence;
    checkInteger('startFrom.sequence', sequence, 1);
  } else if (kind === 'time') {
    const time = (value as { time: unknown }).time;
    if (!(time instanceof Date) || Number.isNaN(time.getTime())) {
      throw configError('startFrom.time', `must be a valid Date, got ${describeValue(time)}`);
    }
  }
  if (!supported.includes(kind)) {
    const shown = kind === 'new' || kind === 'earliest' ? `'${kind}'` : `{ ${kind} }`;
    const allowed = supported.map((k) => (k === 'new' || k === 'earliest' ? `'${k}'` : `{ ${k} }`));
    throw configError(
      'startFrom',
      `${shown} is not supported${hint === undefined ? '' : ` (${hint})`}; use ${allowed.join(' or ')}`,
    );
  }
  return value as StartPosition;
}

/** `consumeDlq` options after {@link checkConsumeDlqOptions}. */
export interface CheckedConsumeDlqOptions {
  readonly group: string | undefined;
  readonly fromStart: boolean;
}

/**
 * Checks the handler and options of `consumeDlq`: a function, known keys only, `group` a
 * non-empty string (refused with `groupUnsupported` as the reason when the transport has one
 * queue that every consumer competes for), `fromStart` a boolean (default true).
 *
 * @throws `CONFIG` naming the field.
 */
export function checkConsumeDlqOptions(
  handler: DeadLetterHandler,
  options: ConsumeDlqOptions | undefined,
  rules: {
    readonly groupUnsupported?: string;
    readonly groupName?: { readonly pattern: RegExp; readonly hint: string };
  } = {},
): CheckedConsumeDlqOptions {
  checkFunction('handler', handler);
  if (options === undefined) return { group: undefined, fromStart: true };
  rejectUnknownOptions(options, TRANSPORT_OPTION_KEYS.consumeDlq, 'consumeDlq options');
  const group = checkGroup(options.group, 'group', rules.groupName);
  if (group !== undefined && rules.groupUnsupported !== undefined) {
    throw configError('group', rules.groupUnsupported);
  }
  const fromStart = options.fromStart ?? true;
  if (typeof fromStart !== 'boolean') {
    throw configError('fromStart', `must be a boolean, got ${describeValue(fromStart)}`);
  }
  return { group, fromStart };
}

/**
 * Checks `publish` options: known keys only, `signal` an `AbortSignal`.
 *
 * @throws `CONFIG` naming the field.
 */
export function checkPublishOptions(options: PublishOptions | undefined): void {
  if (options === undefined) return;
  rejectUnknownOptions(options, TRANSPORT_OPTION_KEYS.publish, 'publish options');
  const { signal } = options;
  if (signal !== undefined && !(signal instanceof AbortSignal)) {
    throw configError('signal', 'must be an AbortSignal');
  }
}

/**
 * Checks `nack` options: known keys only, `requeue` a boolean, `delayMs` a finite number >= 0.
 *
 * @throws `CONFIG` naming the field.
 */
export function checkNackOptions(options: NackOptions | undefined): void {
  if (options === undefined) return;
  rejectUnknownOptions(options, TRANSPORT_OPTION_KEYS.nack, 'nack options');
  if (options.requeue !== undefined && typeof options.requeue !== 'boolean') {
    throw configError('requeue', `must be a boolean, got ${describeValue(options.requeue)}`);
  }
  if (options.delayMs !== undefined) checkNumber('delayMs', options.delayMs, { min: 0 });
}

/**
 * Runs `check`; returns its error as a rejected promise (to return from a method that answers
 * with a promise), or undefined when it passed.
 */
export function rejection(check: () => void): Promise<never> | undefined {
  try {
    check();
    return undefined;
  } catch (error) {
    return Promise.reject(error);
  }
}

/**
 * What the bus writes to a log: the `Logger` shape (pino's argument order, so a pino logger
 * fits as it is; the global `console` is accepted too), the default console logger, and a
 * limiter for warnings about a level that can repeat many times a second.
 */
import type { Clock } from './clock.js';
import { configError } from './errors.js';
import { describeValue } from './options.js';

/** One level of a {@link Logger}: details first, then the message, as pino takes them. */
export type LogMethod = (details: Record<string, unknown>, message: string) => void;

/**
 * Where the bus reports what it cannot throw to a caller: dead letters (warn), retries (debug),
 * background failures nobody listens to (error), warnings about the publish queue. A pino
 * logger fits as it is; so does the global `console` (written to with the message first); any
 * other logger must take pino's argument order. `debug` and `info` may be left out.
 */
export interface Logger {
  debug?: LogMethod;
  info?: LogMethod;
  warn: LogMethod;
  error: LogMethod;
}

/** The levels the bus writes at. */
export type LogLevel = 'debug' | 'info' | 'warn' | 'error';

/** A logger with every level, as the bus calls it. */
export type BusLog = Readonly<Record<LogLevel, LogMethod>>;

const LEVELS: readonly LogLevel[] = ['debug', 'info', 'warn', 'error'];

/** Writes warnings and errors to the console as `[watchtower] message` and the details. */
export const consoleLogger: Logger = {
  warn: (details, message) => console.warn(`[watchtower] ${message}`, details),
  error: (details, message) => console.error(`[watchtower] ${message}`, details),
};

const ignore: LogMethod = () => undefined;

/**
 * The bus's view of the `logger` option: every level present (a level the logger lacks is
 * dropped), each called on the logger itself (pino's methods need their `this`), the global
 * `console` written to with the message first.
 *
 * @throws `CONFIG` naming `logger` for anything without `warn` and `error` functions, or with a
 * `debug`/`info` that is not a function.
 */
export function toBusLog(value: unknown): BusLog {
  if (value === globalThis.console) {
    const output = value as Console;
    const write =
      (level: LogLevel): LogMethod =>
      (details, message) =>
        output[level](`[watchtower] ${message}`, details);
    return {
      debug: write('debug'),
      info: write('info'),
      warn: write('warn'),
      error: write('error'),
    };
  }
  const logger = value as Partial<Record<LogLevel, unknown>> | null;
  if (
    typeof logger !== 'object' ||
    logger === null ||
    typeof logger.warn !== 'function' ||
    typeof logger.error !== 'function'
  ) {
    throw configError(
      'logger',
      `must be a Logger with warn() and error() (pino, console, or (details, message) methods), got ${describeValue(value)}`,
    );
  }
  const methods = {} as Record<LogLevel, LogMethod>;
  for (const level of LEVELS) {
    const method = logger[level];
    if (method === undefined) {
      methods[level] = ignore;
      continue;
    }
    if (typeof method !== 'function') {
      throw configError(`logger.${level}`, `must be a function, got ${describeValue(method)}`);
    }
    methods[level] = (details, message) => {
      (method as LogMethod).call(logger, details, message);
    };
  }
  return methods;
}

/**
 * Lets a repeating warning through at most once per `intervalMs`, and says how many were held
 * back since the last one.
 */
export class WarningLimiter {
  #lastAt = Number.NEGATIVE_INFINITY;
  #suppressed = 0;

  constructor(
    private readonly clock: Clock,
    private readonly intervalMs: number,
  ) {}

  /**
   * Undefined when this warning is to be held back; else how many were held back before it
   * (0 for the first).
   */
  take(): number | undefined {
    const now = this.clock.now();
    if (now - this.#lastAt < this.intervalMs) {
      this.#suppressed++;
      return undefined;
    }
    this.#lastAt = now;
    const suppressed = this.#suppressed;
    this.#suppressed = 0;
    return suppressed;
  }
}

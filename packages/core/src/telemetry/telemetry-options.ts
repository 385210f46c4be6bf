/**
 * The bus's `telemetry` option: which tracer and meter providers it uses, checked once at
 * construction. Without the option the bus uses the providers registered with
 * `@opentelemetry/api` when it is installed and one is registered, and nothing otherwise.
 */
import { configError } from '../errors.js';
import { describeValue, integerOption, rejectUnknownOptions } from '../options.js';
import { loadOtelApi, type OtelApi } from './otel-api.js';

/** A tracer provider (`@opentelemetry/api`'s `TracerProvider`, from any SDK). */
export interface TelemetryTracerProvider {
  getTracer(name: string, version?: string, options?: { schemaUrl?: string }): object;
}

/** A meter provider (`@opentelemetry/api`'s `MeterProvider`, from any SDK). */
export interface TelemetryMeterProvider {
  getMeter(name: string, version?: string, options?: { schemaUrl?: string }): object;
}

/** Options of the bus's OpenTelemetry traces and metrics (docs/OBSERVABILITY.md). */
export interface TelemetryOptions {
  /**
   * Spans are made with this provider.
   * @defaultValue the provider registered with `@opentelemetry/api`, if one is; else no spans
   */
  tracerProvider?: TelemetryTracerProvider;
  /**
   * Metrics are recorded with this provider.
   * @defaultValue the provider registered with `@opentelemetry/api`, if one is; else no metrics
   */
  meterProvider?: TelemetryMeterProvider;
  /**
   * The `@opentelemetry/api` module (`import * as api from '@opentelemetry/api'`), for
   * bundles and platforms where core cannot `require` it.
   * @defaultValue the one installed beside `@watchtower/core`
   */
  api?: object;
  /**
   * How many distinct event types name the destination of publish metrics; the types first
   * published after that are counted under `_other`, so a type made from data cannot grow
   * the number of time series without bound.
   * @defaultValue 100
   */
  maxPublishDestinations?: number;
}

/** Defaults of {@link TelemetryOptions}. */
export const DEFAULT_TELEMETRY_OPTIONS = { maxPublishDestinations: 100 } as const;

const TELEMETRY_OPTION_KEYS = [
  'tracerProvider',
  'meterProvider',
  'api',
  'maxPublishDestinations',
] as const satisfies readonly (keyof TelemetryOptions)[];

/** The telemetry a bus runs with: the API, and a tracer and/or a meter provider. */
export interface ResolvedTelemetry {
  readonly api: OtelApi;
  readonly tracerProvider: TelemetryTracerProvider | undefined;
  readonly meterProvider: TelemetryMeterProvider | undefined;
  readonly maxPublishDestinations: number;
}

/**
 * Checks the `telemetry` option; undefined when there is nothing to record with (`false`,
 * no API installed and none given, or no provider given nor registered).
 * @throws a `CONFIG` error naming the field.
 */
export function resolveTelemetry(
  option: TelemetryOptions | false | undefined,
): ResolvedTelemetry | undefined {
  if (option === false) return undefined;
  const given: TelemetryOptions = option ?? {};
  if (option !== undefined) rejectUnknownOptions(option, TELEMETRY_OPTION_KEYS, 'telemetry');
  const { tracerProvider, meterProvider } = given;
  if (tracerProvider !== undefined && typeof tracerProvider.getTracer !== 'function') {
    throw configError(
      'telemetry.tracerProvider',
      `must be a TracerProvider (with getTracer()), got ${describeValue(tracerProvider)}`,
    );
  }
  if (meterProvider !== undefined && typeof meterProvider.getMeter !== 'function') {
    throw configError(
      'telemetry.meterProvider',
      `must be a MeterProvider (with getMeter()), got ${describeValue(meterProvider)}`,
    );
  }
  const maxPublishDestinations = integerOption(
    'telemetry.maxPublishDestinations',
    given.maxPublishDestinations ?? DEFAULT_TELEMETRY_OPTIONS.maxPublishDestinations,
    1,
  );
  const api = apiOf(given);
  if (api === undefined) return undefined;
  const tracer = tracerProvider ?? registeredTracerProvider(api);
  const meter = meterProvider ?? registeredMeterProvider(api);
  if (tracer === undefined && meter === undefined) return undefined;
  return { api, tracerProvider: tracer, meterProvider: meter, maxPublishDestinations };
}

/** The API given or installed; a `CONFIG` error when providers were given without one. */
function apiOf(given: TelemetryOptions): OtelApi | undefined {
  if (given.api !== undefined) {
    const api = given.api as Partial<OtelApi>;
    if (
      typeof api.trace?.getTracerProvider !== 'function' ||
      typeof api.context?.with !== 'function' ||
      typeof api.metrics?.getMeterProvider !== 'function'
    ) {
      throw configError(
        'telemetry.api',
        `must be the @opentelemetry/api module, got ${describeValue(given.api)}`,
      );
    }
    return api;
  }
  const loaded = loadOtelApi();
  if ('api' in loaded) return loaded.api;
  if (given.tracerProvider !== undefined || given.meterProvider !== undefined) {
    throw configError(
      'telemetry',
      `needs @opentelemetry/api, which could not be loaded (${loaded.missing}): install it ` +
        'beside @watchtower/core, or pass the module as telemetry.api',
    );
  }
  return undefined;
}

/** The global tracer provider, unless it is the API's no-op one (nothing registered). */
function registeredTracerProvider(api: OtelApi): TelemetryTracerProvider | undefined {
  const global = api.trace.getTracerProvider();
  const delegate = global instanceof api.ProxyTracerProvider ? global.getDelegate() : global;
  // A fresh proxy's delegate is the API's no-op provider, the one a proxy has until an SDK
  // registers another.
  return delegate === new api.ProxyTracerProvider().getDelegate() ? undefined : global;
}

/** The global meter provider, unless it is the API's no-op one (nothing registered). */
function registeredMeterProvider(api: OtelApi): TelemetryMeterProvider | undefined {
  const global = api.metrics.getMeterProvider();
  return global.getMeter('@watchtower/core') === api.createNoopMeter() ? undefined : global;
}

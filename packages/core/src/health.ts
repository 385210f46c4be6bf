/**
 * `createHealthHandler`: `/livez` and `/readyz` for `node:http` (and so for Express, Fastify's
 * `reply.raw`, Koa's `ctx.res`), from the `healthCheck()` of each transport and the state of
 * each publish circuit breaker. It reads only what the bus or the event system reports and
 * never changes it; a health check that hangs counts as unhealthy after `timeoutMs`.
 */
import type { CircuitState } from './circuit-breaker.js';
import { systemClock, type Clock } from './clock.js';
import { configError, describeError } from './errors.js';
import type { EventBus } from './event-bus.js';
import type { EventSystem } from './event-system/event-system.js';
import { clockOption, describeValue, numberOption, rejectUnknownOptions } from './options.js';
import { TIMED_OUT, within } from './transport-kit/timing.js';
import type { HealthStatus } from './transport.js';

/** Options of {@link createHealthHandler}. */
export interface HealthHandlerOptions {
  /**
   * How long `/readyz` waits for the transports' health checks; one that has not answered by
   * then is reported unhealthy.
   * @defaultValue 5000
   */
  timeoutMs?: number;
  /** @defaultValue `systemClock` */
  clock?: Clock;
}

/** Defaults of {@link HealthHandlerOptions}. */
export const DEFAULT_HEALTH_HANDLER_OPTIONS = { timeoutMs: 5000 } as const;

/** One transport in a `/readyz` report: its health check and its publish circuit. */
export interface TransportReadiness extends HealthStatus {
  /** The publish circuit breaker's state; `open` makes the service not ready. */
  circuit: CircuitState;
}

/** The body of `/readyz`. */
export interface ReadinessReport {
  /** `ready` (HTTP 200) when every transport is healthy and no circuit is open; else 503. */
  status: 'ready' | 'not ready';
  /** By transport name (the event system's names; a bus's transport `info.name`). */
  transports: Record<string, TransportReadiness>;
}

/** What the handler reads of a request: `node:http`'s `IncomingMessage` has it. */
export interface HealthRequest {
  readonly method?: string | undefined;
  readonly url?: string | undefined;
}

/** What the handler writes on a response: `node:http`'s `ServerResponse` has it. */
export interface HealthResponse {
  statusCode: number;
  setHeader(name: string, value: string): unknown;
  end(body?: string): unknown;
}

/** A `(req, res)` handler; it never throws and answers every request. */
export type HealthHandler = (request: HealthRequest, response: HealthResponse) => void;

/** What is checked: a bus or an event system, as the handler sees them. */
type Probe = () => Promise<Record<string, { health: HealthStatus; circuit: CircuitState }>>;

/**
 * A handler for `node:http` answering `GET`/`HEAD` on:
 *
 * - `/livez`: 200 `{ "status": "ok" }` while the process can answer (a broker outage must
 *   not make an orchestrator restart a service that would reconnect by itself);
 * - `/readyz`: a {@link ReadinessReport}, 200 when every transport's `healthCheck()` is
 *   healthy and no publish circuit is open, else 503.
 *
 * Other paths are 404 and other methods 405, so it can be mounted as a whole server or
 * behind a router.
 * @throws a `CONFIG` error when `target` is neither a bus nor an event system, or an option
 *   is invalid.
 */
export function createHealthHandler(
  target: EventBus<never> | EventSystem<never> | EventBus | EventSystem,
  options: HealthHandlerOptions = {},
): HealthHandler {
  rejectUnknownOptions(options, ['timeoutMs', 'clock'], 'createHealthHandler options');
  const timeoutMs = numberOption(
    'timeoutMs',
    options.timeoutMs ?? DEFAULT_HEALTH_HANDLER_OPTIONS.timeoutMs,
    { above: 0 },
  );
  const clock = clockOption('clock', options.clock ?? systemClock);
  const probe = probeOf(
    target,
    <R>(check: Promise<R>) => within(clock, timeoutMs, check),
    timeoutMs,
  );
  return (request, response) => {
    const path = (request.url ?? '/').split('?')[0] ?? '/';
    const method = request.method ?? 'GET';
    if (path !== '/livez' && path !== '/readyz') {
      send(response, method, 404, { error: `no health endpoint at ${path}` });
    } else if (method !== 'GET' && method !== 'HEAD') {
      response.setHeader('allow', 'GET, HEAD');
      send(response, method, 405, { error: `${method} is not allowed; use GET` });
    } else if (path === '/livez') {
      send(response, method, 200, { status: 'ok' });
    } else {
      void readiness(probe).then(
        (report) => send(response, method, report.status === 'ready' ? 200 : 503, report),
        (error: unknown) =>
          send(response, method, 503, { status: 'not ready', error: describeError(error) }),
      );
    }
  };
}

async function readiness(probe: Probe): Promise<ReadinessReport> {
  const checked = await probe();
  const transports: Record<string, TransportReadiness> = {};
  let ready = true;
  for (const [name, { health, circuit }] of Object.entries(checked)) {
    transports[name] = { ...health, circuit };
    if (!health.healthy || circuit === 'open') ready = false;
  }
  return { status: ready ? 'ready' : 'not ready', transports };
}

type SystemLike = Pick<EventSystem, 'health' | 'stats'>;
type BusLike = Pick<EventBus, 'healthCheck' | 'circuitBreakerStats' | 'transport'>;

/** Bounds a health check by the handler's `timeoutMs`. */
type Bound = <R>(check: Promise<R>) => Promise<R | typeof TIMED_OUT>;

/** How to read the health of `target`, by its shape (a duplicate install is no `instanceof`). */
function probeOf(target: unknown, bound: Bound, timeoutMs: number): Probe {
  const candidate = target as Partial<SystemLike & BusLike> | null;
  if (typeof candidate?.health === 'function' && typeof candidate.stats === 'function') {
    const system = candidate as SystemLike;
    return async () => {
      const health = await bound(system.health());
      const checked: Awaited<ReturnType<Probe>> = {};
      for (const [name, stats] of Object.entries(system.stats().transports)) {
        checked[name] = {
          health: (health === TIMED_OUT ? undefined : health.transports[name]) ?? late(timeoutMs),
          circuit: stats.circuitBreaker.state,
        };
      }
      return checked;
    };
  }
  if (
    typeof candidate?.healthCheck === 'function' &&
    typeof candidate.circuitBreakerStats === 'function'
  ) {
    const bus = candidate as BusLike;
    return async () => {
      const health = await bound(bus.healthCheck());
      return {
        [bus.transport.info.name]: {
          health: health === TIMED_OUT ? late(timeoutMs) : health,
          circuit: bus.circuitBreakerStats().state,
        },
      };
    };
  }
  throw configError(
    'target',
    `must be an EventBus or an EventSystem, got ${describeValue(target)}`,
  );
}

/** The status of a health check that has not answered within `ms`. */
function late(ms: number): HealthStatus {
  return { healthy: false, state: 'unknown', message: `the health check took more than ${ms} ms` };
}

function send(response: HealthResponse, method: string, status: number, body: object): void {
  response.statusCode = status;
  response.setHeader('content-type', 'application/json; charset=utf-8');
  response.setHeader('cache-control', 'no-store');
  response.end(method === 'HEAD' ? undefined : JSON.stringify(body));
}

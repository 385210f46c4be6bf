/**
 * `EventSystemBuilder`: the fluent way to write an {@link EventSystemConfig}. Each method sets
 * one part and returns the builder; `build()` judges the whole configuration at once (the same
 * checks as `createEventSystem`) and returns the system.
 */
import type { Clock } from '../clock.js';
import { configError } from '../errors.js';
import type { ValidationMode } from '../event-bus.js';
import type { Logger } from '../logger.js';
import type { EventCatalog } from '../schema.js';
import type { Transport } from '../transport.js';
import type {
  ConsumerOptions,
  EventSystemConfig,
  PublisherOptions,
  RouteConfig,
  RouteOptions,
  SystemBusOptions,
} from './config.js';
import { createEventSystem, type EventSystem } from './event-system.js';

/** Options of {@link EventSystemBuilder.withOrigin}. */
export interface OriginOptions {
  /** Also put the origin before the topic (`eu.de.user.created`). @defaultValue false */
  asTopicPrefix?: boolean;
}

/** Assembles an {@link EventSystem} step by step; see {@link createEventSystemBuilder}. */
export class EventSystemBuilder<C extends EventCatalog = EventCatalog> {
  readonly #config: Omit<EventSystemConfig<C>, 'service' | 'transports' | 'routes'> & {
    service?: string;
    transports: Record<string, Transport>;
    routes: RouteConfig[];
  } = { transports: {}, routes: [] };

  /** The service's name: the `source` of its events and the base of its group names. */
  withService(name: string): this {
    this.#config.service = name;
    return this;
  }

  /** The service's origin (`eu.de`): carried by its events, and the default of its subscribers. */
  withOrigin(origin: string, options: OriginOptions = {}): this {
    this.#config.origin = origin;
    if (options.asTopicPrefix !== undefined)
      this.#config.originAsTopicPrefix = options.asTopicPrefix;
    return this;
  }

  /** Adds a transport under `name`; routes name it. A name given twice is a `CONFIG` error. */
  withTransport(name: string, transport: Transport): this {
    if (typeof name !== 'string' || name.length === 0) {
      throw configError('withTransport', 'the transport name must be a non-empty string');
    }
    if (Object.hasOwn(this.#config.transports, name)) {
      throw configError(`transports.${name}`, 'is given twice');
    }
    this.#config.transports[name] = transport;
    return this;
  }

  /** The payload schemas by event type, from `defineEvents`. */
  withEvents<E extends EventCatalog>(catalog: E): EventSystemBuilder<E> {
    (this.#config as EventSystemConfig).events = catalog;
    return this as unknown as EventSystemBuilder<E>;
  }

  /** How payloads that fail their schema are treated. @defaultValue `'strict'` */
  withValidationMode(mode: ValidationMode): this {
    this.#config.validationMode = mode;
    return this;
  }

  /** Routes events matching `pattern` to a transport, optionally under a topic and priority. */
  withRoute(pattern: string, options: RouteOptions): this {
    this.#config.routes.push({ ...options, pattern });
    return this;
  }

  /** Where events no route matches go. @defaultValue the only transport, when there is one */
  withDefaultTransport(name: string): this {
    this.#config.defaultTransport = name;
    return this;
  }

  /** Batching, retries and rate limits of publishes. */
  withPublisher(options: PublisherOptions): this {
    this.#config.publisher = options;
    return this;
  }

  /** Consumer groups and the poison handler. */
  withConsumer(options: ConsumerOptions): this {
    this.#config.consumer = options;
    return this;
  }

  /** Options of every transport's `EventBus` (circuit breaker, backpressure, timeouts). */
  withBusOptions(options: SystemBusOptions): this {
    this.#config.bus = options;
    return this;
  }

  /** @defaultValue `consoleLogger` */
  withLogger(logger: Logger): this {
    this.#config.logger = logger;
    return this;
  }

  /** @defaultValue `systemClock` */
  withClock(clock: Clock): this {
    this.#config.clock = clock;
    return this;
  }

  /** The configuration as one object, as `createEventSystem` takes it. */
  toConfig(): EventSystemConfig<C> {
    return { ...this.#config, routes: [...this.#config.routes] } as EventSystemConfig<C>;
  }

  /**
   * Checks the whole configuration and returns the system. Throws a `CONFIG` error naming the
   * route or option at fault: a route to an unknown transport, two overlapping routes of equal
   * priority, consumer groups or batching on a transport without them, an empty pattern.
   */
  build(): EventSystem<C> {
    return createEventSystem(this.toConfig());
  }
}

/** A new {@link EventSystemBuilder}. */
export function createEventSystemBuilder(): EventSystemBuilder {
  return new EventSystemBuilder();
}

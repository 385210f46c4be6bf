/**
 * The types a conformance run is made of: the harness a transport supplies, the context each
 * case runs in, and the shape of a case. Kept apart from the cases and from the runner so that
 * a case file needs only these types, never vitest's registration functions.
 */
import type {
  EventBus,
  EventBusOptions,
  Transport,
  TransportCapabilities,
  WatchtowerError,
} from '@watchtower/core';

/** How a transport plugs into the conformance suite. */
export interface ConformanceHarness {
  /** Shown in the test names. */
  name: string;
  /**
   * A new client of the broker. Transports created with the same `namespace` share their
   * topics (prefix, stream, exchange); different namespaces never see each other. Each test
   * uses a fresh namespace. The suite connects and closes what it creates.
   */
  createTransport(namespace: string): Transport | Promise<Transport>;
  /**
   * Puts raw bytes on the wire as if published under `type`. Without it the malformed-bytes
   * case is skipped (say why in the transport's docs).
   */
  publishRaw?(namespace: string, type: string, bytes: Uint8Array): Promise<void>;
  /**
   * Stops the broker and starts it again (same address, same data). Without it, or without
   * the `reconnect` capability, the reconnect case is skipped.
   */
  restartBroker?(): Promise<void>;
  /** Removes what a test left on the broker (streams, queues, keys) for `namespace`. */
  cleanup?(namespace: string): Promise<void>;
  /**
   * Capabilities to test against.
   * @defaultValue the `info.capabilities` of a transport the suite creates
   */
  capabilities?: TransportCapabilities;
  /**
   * Longest wait for something to arrive.
   * @defaultValue 10000
   */
  timeoutMs?: number;
  /**
   * Longest wait for a delivery that a closed client never acked to be delivered again
   * (ack wait, claim idle time). Tests skip nothing for it; set the transport's own timers
   * short in `createTransport`.
   * @defaultValue `timeoutMs`
   */
  redeliveryTimeoutMs?: number;
}

/** An optional hook of {@link ConformanceHarness} that a case cannot run without. */
export type HarnessFeature = 'publishRaw' | 'restartBroker';

/** The harness features, each with the reason shown when a case is skipped for lacking it. */
export const HARNESS_FEATURES: Readonly<Record<HarnessFeature, string>> = {
  publishRaw: 'the harness cannot put raw bytes on the wire',
  restartBroker: 'the harness cannot restart its broker',
};

/**
 * What a case needs to run: a capability flag the transport must declare, or a hook the
 * harness must provide. A case missing one is reported as skipped, with the reason.
 */
export type ConformanceRequirement = keyof TransportCapabilities | HarnessFeature;

/** The waits of one run, from the harness with its defaults applied. */
export interface ConformanceTimeouts {
  /** Longest wait for something to arrive ({@link ConformanceHarness.timeoutMs}). */
  readonly timeoutMs: number;
  /** Longest wait for an unacked delivery to come again ({@link ConformanceHarness.redeliveryTimeoutMs}). */
  readonly redeliveryTimeoutMs: number;
}

/** A bus created for a test, with the errors it reported. */
export interface TestBus {
  bus: EventBus;
  transport: Transport;
  errors: WatchtowerError[];
}

/**
 * What a case runs with. One context per test: `namespace` is fresh, and what `newTransport`
 * and `newBus` create is closed, and the namespace cleaned up, after the test. The functions
 * are plain properties so a case may destructure them.
 */
export interface ConformanceContext extends ConformanceTimeouts {
  /** The harness under test. */
  readonly harness: ConformanceHarness;
  /** This test's own namespace, passed to every `createTransport`. */
  readonly namespace: string;
  /** A connected transport of this test's namespace. */
  readonly newTransport: () => Promise<Transport>;
  /**
   * An `EventBus` on a new transport, with short retry delays and a logger that prints
   * nothing; it records the errors it emits (see `expectNoBusErrors`).
   */
  readonly newBus: (options?: Omit<EventBusOptions, 'transport'>) => Promise<TestBus>;
  /** The event type for `suffix` that every case publishes under (`conf.<suffix>`). */
  readonly type: (suffix: string) => string;
  /** Asserts that none of `buses` emitted an `error` event. */
  readonly expectNoBusErrors: (...buses: TestBus[]) => void;
  /**
   * {@link ConformanceHarness.publishRaw} in this test's namespace. Rejects when the harness
   * has none; a case that calls it requires `publishRaw`.
   */
  readonly publishRaw: (type: string, bytes: Uint8Array) => Promise<void>;
  /**
   * {@link ConformanceHarness.restartBroker}. Rejects when the harness has none; a case that
   * calls it requires `restartBroker`.
   */
  readonly restartBroker: () => Promise<void>;
}

/** One contract test: named, gated by what it requires, runnable against any harness. */
export interface ConformanceCase {
  /** The test name; also the key for `only` and `skip`. Never reworded lightly: history keys on it. */
  readonly name: string;
  /** Capabilities and harness features the case needs; without one it is skipped. */
  readonly requires: readonly ConformanceRequirement[];
  /**
   * The vitest timeout of the case.
   * @defaultValue `timeoutMs * 3 + redeliveryTimeoutMs`
   */
  readonly testTimeoutMs?: (timeouts: ConformanceTimeouts) => number;
  /** The test body: resolves when every assertion has passed. */
  readonly run: (ctx: ConformanceContext) => Promise<void>;
}

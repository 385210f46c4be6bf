/**
 * Whether the transport can reach its Redis Cluster, for the `connection` reports of a
 * transport in cluster mode. ioredis `Cluster` is no guide: it emits `close` only once every
 * connection of its pool has ended, and it keeps connections to nodes it has not used yet, so
 * with every node down it stays `ready` until a command happens to try them all. Instead, each
 * sign of trouble (a node connection ended, ioredis ready again, a write failed on the
 * connection) starts a probe of the slot the transport works on, and the answer decides. A
 * drained pool (`close`: no node connection left) is lost at once: a probe would only wait
 * in ioredis' offline queue until its time-out.
 *
 * Apart from the transport because it is a small state machine with timers of its own; it
 * sends nothing but its probe, and it never reports after `stop()`.
 */
import { ConnectionError, ErrorCode, type Clock, type WatchtowerError } from '@watchtower/core';
import { repeat, withTimeout } from '@watchtower/core/transport-kit';
import type { Cluster } from 'ioredis';
import { mapRedisError, replyCode } from './map-error.js';

/** How often a lost cluster is probed again (besides at once when ioredis says it is ready). */
export const LOST_PROBE_INTERVAL_MS = 250;

/** What {@link ClusterReachability} needs from its transport. */
export interface ClusterReachabilityOptions {
  readonly cluster: Cluster;
  /**
   * A key in the transport's hash slot that no one writes ({@link probeKey}): the probe is
   * `PERSIST` of it, a write (so ioredis sends it to the slot's master whatever `scaleReads`
   * says) that changes nothing.
   */
  readonly probeKey: string;
  readonly clock: Clock;
  /** How long a probe may take before the cluster counts as unreachable. */
  readonly probeTimeoutMs: number;
  /** What the connection goes to, for messages. */
  readonly target: string;
  readonly lost: (error: WatchtowerError) => void;
  readonly restored: () => void;
}

/** Where the watch is: the slot answers, it does not (probed again until it does), or over. */
type ReachabilityPhase = 'reachable' | 'lost' | 'stopped';

/**
 * Reports a Redis Cluster lost when the master of the transport's slot does not answer (every
 * node down, the slot's master down and no replica promoted yet, the cluster refusing with
 * `CLUSTERDOWN`), and restored when it answers again.
 */
export class ClusterReachability {
  readonly #options: ClusterReachabilityOptions;
  #phase: ReachabilityPhase = 'reachable';
  #probing = false;
  /** A sign of trouble came while a probe was out: probe once more after it. */
  #again = false;
  #stopProbing: (() => void) | undefined;
  readonly #suspect = (): void => this.suspect();
  readonly #drained = (): void =>
    this.#unanswered(new ConnectionError('every node connection of the cluster has ended'));

  constructor(options: ClusterReachabilityOptions) {
    this.#options = options;
  }

  /** Listens to the cluster's node and status events. */
  start(): void {
    const { cluster } = this.#options;
    cluster.on('-node', this.#suspect);
    cluster.on('close', this.#drained);
    cluster.on('ready', this.#suspect);
  }

  /** Something failed in a way that may mean the cluster is gone: probes it (once at a time). */
  suspect(): void {
    if (this.#phase === 'stopped') return;
    if (this.#probing) {
      this.#again = true;
      return;
    }
    void this.#probe();
  }

  /** Stops listening and probing; nothing is reported from now on. Idempotent. */
  stop(): void {
    this.#phase = 'stopped';
    this.#stopProbing?.();
    this.#stopProbing = undefined;
    const { cluster } = this.#options;
    cluster.off('-node', this.#suspect);
    cluster.off('close', this.#drained);
    cluster.off('ready', this.#suspect);
  }

  /** One probe, and what follows from its answer. Never rejects. */
  async #probe(): Promise<void> {
    this.#probing = true;
    let failure: unknown;
    try {
      failure = await this.#unreachable();
    } finally {
      this.#probing = false;
    }
    if (this.#phase === 'stopped') return;
    const { probeKey } = this.#options;
    if (failure === undefined) this.#answered();
    else this.#unanswered(mapRedisError(failure, `PERSIST ${probeKey}`));
    if (this.#again) {
      this.#again = false;
      this.suspect();
    }
  }

  /** Resolves with why the slot's master did not answer, or `undefined` when it did. */
  async #unreachable(): Promise<unknown> {
    const { cluster, probeKey, clock, probeTimeoutMs } = this.#options;
    try {
      await withTimeout(clock, cluster.persist(probeKey), probeTimeoutMs, `PERSIST ${probeKey}`);
      return undefined;
    } catch (error) {
      return answeredAnyway(error) ? undefined : error;
    }
  }

  #answered(): void {
    if (this.#phase !== 'lost') return;
    this.#phase = 'reachable';
    this.#stopProbing?.();
    this.#stopProbing = undefined;
    this.#options.restored();
  }

  #unanswered(cause: WatchtowerError): void {
    if (this.#phase !== 'reachable') return;
    this.#phase = 'lost';
    const { clock, target } = this.#options;
    this.#options.lost(new ConnectionError(`${target} cannot be reached`, { cause }));
    this.#stopProbing = repeat(
      clock,
      LOST_PROBE_INTERVAL_MS,
      () => (this.#probing ? undefined : this.#probe()),
      () => {
        // The probe never rejects.
      },
    );
  }
}

/**
 * True when the server answered with a reply that says it is up (a refusal such as `NOPERM`
 * included: holding publishes would not make it pass), false for everything that means it is
 * down or busy failing over (`CLUSTERDOWN`, `TRYAGAIN`, a connection error, a time-out).
 */
function answeredAnyway(error: unknown): boolean {
  if (replyCode(error) === undefined) return false;
  const mapped = mapRedisError(error, 'probe');
  return !(mapped.code === ErrorCode.CONNECTION && mapped.retryable);
}

/**
 * One consumer of one consumer group over a set of streams: the engine behind a Redis
 * subscription and the dead-letter consumer, and everything it says to Redis (group creation,
 * blocking reads, claims, hand-back on stop). It is separate from the transport because each
 * subscription has one, with its own reading connection and its own timers; the transport only
 * creates, feeds (new streams) and stops them. It never acks an entry a handler has not settled,
 * never drops one (what it cannot hand out stays pending for the group), and never waits on
 * Redis where it does not have to: a stop gives up the blocked read at once.
 */
import type { Buffer } from 'node:buffer';
import {
  ClosedError,
  ErrorCode,
  WatchtowerError,
  type Clock,
  type NackOptions,
  type TimerHandle,
} from '@watchtower/core';
import {
  Backoff,
  DeliveryBuffer,
  Pause,
  RESOLVED,
  checkNackOptions,
  rejection,
  repeat,
} from '@watchtower/core/transport-kit';
import type { AckBatcher, AckItem } from './ack-batcher.js';
import { dropConnection, type RedisClient } from './connections.js';
import { mapRedisError, replyCode } from './map-error.js';
import {
  compareIds,
  parseAutoClaimReply,
  parseInfoReply,
  parseClaimReply,
  parsePendingReply,
  parseReadReply,
  type StreamEntry,
} from './stream-reply.js';

/** What a {@link GroupConsumer} needs from its transport. */
export interface ConsumerHost {
  /** The shared, non-blocking connection: acks, claims, group administration. */
  readonly command: RedisClient;
  readonly isCluster: boolean;
  readonly acks: AckBatcher;
  readonly clock: Clock;
  /** A new connection of its own for blocking reads (not yet connected). */
  createBlockingConnection(name: string): RedisClient;
  /** Failures of background work (they never stop a subscription). */
  report(error: WatchtowerError): void;
  /** Work nobody awaits, for `close()` to wait on; a rejection is reported as `operation`. */
  track(work: Promise<unknown>, operation: string): void;
}

/** Settings of one {@link GroupConsumer}. */
export interface GroupConsumerOptions {
  readonly group: string;
  readonly consumer: string;
  /** A group of this subscription alone: destroyed when it stops. */
  readonly ownGroup: boolean;
  /** Streams read from the start; more can be added with {@link GroupConsumer.addStreams}. */
  readonly streams: readonly string[];
  /** Create missing streams with the group (`MKSTREAM`): for streams named by the caller. */
  readonly mkstream: boolean;
  /** Where the group starts on the first streams (`$`, `0`, or an id). */
  readonly startId: string;
  /**
   * Where the group starts on streams added later, or re-created after the group vanished
   * (a Redis restart without persistence): an id just before the subscription started, so that
   * nothing published since is missed.
   */
  readonly laterStartId: string;
  readonly maxInFlight: number;
  readonly count: number;
  readonly blockMs: number;
  readonly claimMinIdleMs: number;
  readonly claimIntervalMs: number;
}

/** An entry as a subscription sees it. */
export interface ConsumedEntry {
  readonly key: string;
  readonly id: string;
  /** The entry's delivery count in the group: 1 on first delivery. */
  readonly attempt: number;
  readonly fields: readonly Buffer[];
}

/** Settles one consumed entry; each method acts once, later calls are no-ops. */
export interface EntryHandle {
  /**
   * `XACK`: the group forgets the entry. Resolves once the ack is queued (acks of one turn go
   * out as one command); an ack lost with the connection means the entry is delivered again.
   */
  ack(): Promise<void>;
  /**
   * Leaves the entry pending and claims it again after `delayMs` (attempt + 1); with
   * `requeue: false` acks it instead (dropped).
   */
  nack(options?: NackOptions): Promise<void>;
  /** Leaves the entry pending without a retry of its own: `XAUTOCLAIM` brings it back later. */
  leave(): void;
}

/** What a consumer yields: anything that carries the handle of its entry. */
export interface HandledItem {
  readonly handle: EntryHandle;
}

/**
 * Turns an entry into what the consumer yields, or `undefined` to ack it unseen (an event the
 * pattern does not match).
 */
export type ItemFactory<T> = (entry: ConsumedEntry, handle: EntryHandle) => T | undefined;

/** Where a consumer is in its life. */
type ConsumerPhase = 'created' | 'reading' | 'stopping' | 'stopped';

/** Where an entry the consumer holds is: buffered, with a handler, or done with. */
type HeldState = 'buffered' | 'handed' | 'settled';

/** An entry this consumer holds: read or claimed, not yet settled. */
class HeldEntry<T extends HandledItem> implements EntryHandle, AckItem {
  state: HeldState = 'buffered';
  touchedAt: number;
  /** What the consumer yields for this entry. */
  item: T | undefined;

  constructor(
    private readonly owner: GroupConsumer<T>,
    readonly key: string,
    readonly id: string,
    readonly attempt: number,
  ) {
    this.touchedAt = owner.now();
  }

  get group(): string {
    return this.owner.group;
  }

  ack(): Promise<void> {
    if (this.state === 'settled') return RESOLVED;
    this.owner.settled(this);
    return this.owner.ackEntry(this);
  }

  nack(options?: NackOptions): Promise<void> {
    if (options !== undefined) {
      const refused = rejection(() => checkNackOptions(options));
      if (refused !== undefined) return refused;
    }
    if (this.state === 'settled') return RESOLVED;
    this.owner.settled(this);
    if (options?.requeue === false) return this.owner.ackEntry(this);
    return this.owner.retryEntry(this, options?.delayMs ?? 0);
  }

  leave(): void {
    if (this.state === 'settled') return;
    this.owner.settled(this);
  }
}

/** What a command raced against stop() resolves with when stop() came first. */
const STOPPED: unique symbol = Symbol('stopped');

interface WaitingRetry {
  readonly key: string;
  readonly id: string;
  readonly dueAt: number;
  readonly timer: TimerHandle;
}

interface DueRetry {
  readonly key: string;
  readonly id: string;
  readonly delayMs: number;
}

interface Release {
  readonly key: string;
  readonly id: string;
  readonly idleMs: number;
  readonly retryCount?: number;
}

/** A claimed entry must have been idle this long; the retry delay (capped) in practice. */
function retryMinIdle(delayMs: number): number {
  // Half the delay: timers and Redis clocks differ by a few ms, and anything idle that long was
  // not just taken by another consumer.
  return Math.floor(delayMs / 2);
}

const entryKey = (key: string, id: string): string => `${key}\n${id}`;

/**
 * Values by stream key and entry id: a map per stream, so that the hot path (an entry read,
 * later settled) looks ids up as Redis gave them instead of building a combined key each time.
 */
class ByEntry<V> {
  readonly #streams = new Map<string, Map<string, V>>();
  #size = 0;

  get size(): number {
    return this.#size;
  }

  has(key: string, id: string): boolean {
    return this.#streams.get(key)?.has(id) === true;
  }

  set(key: string, id: string, value: V): void {
    let entries = this.#streams.get(key);
    if (entries === undefined) this.#streams.set(key, (entries = new Map<string, V>()));
    const before = entries.size;
    entries.set(id, value);
    this.#size += entries.size - before;
  }

  delete(key: string, id: string): void {
    const entries = this.#streams.get(key);
    if (entries?.delete(id) === true) this.#size--;
  }

  *values(): IterableIterator<V> {
    for (const entries of this.#streams.values()) yield* entries.values();
  }
}

/** The entry of an item a consumer yields: its factory got that HeldEntry as the handle. */
function heldOf<T extends HandledItem>(item: T): HeldEntry<T> {
  return item.handle as HeldEntry<T>;
}

/**
 * One consumer of one consumer group over a set of streams.
 *
 * - New entries: `XREADGROUP ... BLOCK ... STREAMS k1 k2 ... > > ...` on a connection of its
 *   own, never more than `maxInFlight` held at once.
 * - Retries: a nacked entry stays pending; after its delay this consumer `XCLAIM`s it back (the
 *   claim raises the delivery count, which is the attempt number).
 * - Crashed consumers: every `claimIntervalMs` an `XAUTOCLAIM` takes over entries idle longer
 *   than `claimMinIdleMs`, whoever held them; entries this consumer holds are refreshed
 *   (`XCLAIM ... JUSTID`) so that a slow live handler keeps its entry.
 * - Stop: entries read but never handed to a handler, and retries not yet due, are handed to
 *   another consumer of the group (or left idle so that any member claims them at once); an own
 *   group is destroyed.
 */
export class GroupConsumer<T extends HandledItem> {
  readonly #host: ConsumerHost;
  readonly #options: GroupConsumerOptions;
  readonly #toItem: ItemFactory<T>;
  readonly #buffer: DeliveryBuffer<T>;
  readonly #held = new ByEntry<HeldEntry<T>>();
  readonly #retries = new Map<string, WaitingRetry>();
  /** Retries that are due and wait for room. */
  readonly #due: DueRetry[] = [];
  /** XCLAIMs of due retries on their way; stop() waits for them. */
  readonly #claims = new Set<Promise<void>>();
  readonly #streams = new Set<string>();
  /** Wakes the read loop: room, new streams, stop. */
  readonly #pause: Pause;
  /** Gives up the command the read loop awaits now (see {@link GroupConsumer.#unlessStopped}). */
  #giveUpRead: (() => void) | undefined;
  #phase: ConsumerPhase = 'created';
  #readArgs: Array<string | number> | undefined;
  #blocking: RedisClient | undefined;
  #blockingClientId: number | undefined;
  #readLoop: Promise<void> | undefined;
  #stopClaims: (() => void) | undefined;
  #claimPass: Promise<void> | undefined;
  /**
   * Streams being added (by discovery and by announcements, which may overlap); stop() waits
   * for them so that it sees their groups.
   */
  readonly #adding = new Set<Promise<void>>();
  #stopped: Promise<void> | undefined;

  constructor(
    host: ConsumerHost,
    options: GroupConsumerOptions,
    toItem: ItemFactory<T>,
    onReturn: () => void,
  ) {
    this.#host = host;
    this.#options = options;
    this.#toItem = toItem;
    this.#pause = new Pause(host.clock);
    this.#buffer = new DeliveryBuffer<T>({ onTake: (item) => this.#onTake(item), onReturn });
    for (const key of options.streams) this.#streams.add(key);
  }

  get group(): string {
    return this.#options.group;
  }

  get consumer(): string {
    return this.#options.consumer;
  }

  /** The stream keys read now. */
  get streams(): readonly string[] {
    return [...this.#streams];
  }

  /** Entries handed out and not settled yet. */
  get handedOut(): number {
    return this.#buffer.handedOut;
  }

  /** Resolves when no handed-out entry is left unsettled. */
  whenIdle(): Promise<void> {
    return this.#buffer.whenIdle();
  }

  /** The clock's now, for the entries it holds. */
  now(): number {
    return this.#host.clock.now();
  }

  [Symbol.asyncIterator](): AsyncIterableIterator<T> {
    return this.#buffer;
  }

  /** A buffered item, handed out without waiting, or undefined. */
  tryNext(): T | undefined {
    return this.#buffer.tryNext();
  }

  #reading(): boolean {
    return this.#phase === 'reading';
  }

  #ended(): boolean {
    return this.#phase === 'stopping' || this.#phase === 'stopped';
  }

  /** Creates the group on the first streams, connects the reading connection, starts reading. */
  async start(): Promise<void> {
    await this.#ensureGroups([...this.#streams], this.#options.startId, this.#options.mkstream);
    const blocking = this.#host.createBlockingConnection(this.#options.consumer);
    this.#blocking = blocking;
    blocking.on('error', () => {
      // Reconnects are ioredis' job; a failed read is reported by the read loop.
    });
    blocking.on('ready', () => {
      this.#blockingClientId = undefined;
    });
    try {
      await blocking.connect();
    } catch (error) {
      dropConnection(blocking);
      throw mapRedisError(error, `connect the reading connection of ${this.#options.consumer}`);
    }
    if (this.#phase !== 'created') {
      // stop() ran while connecting (the transport closed during subscribe).
      dropConnection(blocking);
      throw new ClosedError('the subscription was stopped while it started');
    }
    this.#phase = 'reading';
    this.#readLoop = this.#runReadLoop(blocking);
    this.#stopClaims = repeat(
      this.#host.clock,
      this.#options.claimIntervalMs,
      () => {
        const pass = this.#runClaimPass();
        this.#claimPass = pass;
        return pass;
      },
      (error) => this.#host.report(mapRedisError(error, `XAUTOCLAIM ${this.#options.group}`)),
    );
  }

  /** Drops the reading connection at once (close() past its deadline); stop() still runs. */
  disconnect(): void {
    if (this.#blocking !== undefined) dropConnection(this.#blocking);
  }

  /**
   * Adds streams (found by discovery, or announced) to the read set, creating the group on them at
   * `laterStartId`. Streams that vanished before the group was created are skipped; they come
   * back with the next discovery.
   */
  async addStreams(keys: readonly string[]): Promise<void> {
    if (this.#ended()) return;
    const fresh = keys.filter((key) => !this.#streams.has(key));
    if (fresh.length === 0) return;
    const adding = this.#addStreams(fresh);
    const tracked = adding.catch(() => {});
    this.#adding.add(tracked);
    try {
      await adding;
    } finally {
      this.#adding.delete(tracked);
    }
  }

  async #addStreams(fresh: readonly string[]): Promise<void> {
    const created = await this.#ensureGroups(fresh, this.#options.laterStartId, false);
    // Kept even when stop() began meanwhile: it destroys an own group on these streams too.
    for (const key of created) this.#streams.add(key);
    if (this.#ended() || created.length === 0) return;
    this.#readArgs = undefined;
    this.#pause.wake();
    this.#unblockRead();
  }

  /** Adds streams at subscribe time, before `start()` (groups start at `startId`). */
  async addInitialStreams(keys: readonly string[]): Promise<void> {
    const created = await this.#ensureGroups(keys, this.#options.startId, false);
    for (const key of created) this.#streams.add(key);
    this.#readArgs = undefined;
  }

  // ---------------------------------------------------------------------------------------------
  // Groups

  /**
   * `XGROUP CREATE` on each key (BUSYGROUP: it exists, fine). Returns the keys that now have
   * the group; without `mkstream` a key that does not exist is left out.
   */
  async #ensureGroups(
    keys: readonly string[],
    startId: string,
    mkstream: boolean,
  ): Promise<string[]> {
    if (keys.length === 0) return [];
    const pipeline = this.#host.command.pipeline();
    for (const key of keys) {
      if (mkstream) pipeline.xgroup('CREATE', key, this.#options.group, startId, 'MKSTREAM');
      else pipeline.xgroup('CREATE', key, this.#options.group, startId);
    }
    let results: Array<[Error | null, unknown]> | null;
    try {
      results = await pipeline.exec();
    } catch (error) {
      throw mapRedisError(error, `XGROUP CREATE ${this.#options.group}`);
    }
    const ready: string[] = [];
    keys.forEach((key, index) => {
      const [error] = results?.[index] ?? [new Error('no reply')];
      if (error === null || replyCode(error) === 'BUSYGROUP') {
        ready.push(key);
        return;
      }
      // Without MKSTREAM Redis answers a generic `ERR` when the key is gone: skip the stream.
      if (!mkstream && replyCode(error) === 'ERR') return;
      throw mapRedisError(error, `XGROUP CREATE ${key} ${this.#options.group}`);
    });
    return ready;
  }

  /**
   * The group is gone on some stream (NOGROUP): Redis restarted without persistence, or the
   * stream was deleted. Re-create it where the stream exists (or on every stream with
   * `mkstream`), starting just before this subscription started; drop streams that are gone.
   */
  async #recoverGroups(): Promise<void> {
    const keys = [...this.#streams];
    let existing = keys;
    if (!this.#options.mkstream) {
      const pipeline = this.#host.command.pipeline();
      for (const key of keys) pipeline.exists(key);
      const results = await pipeline.exec();
      existing = keys.filter((_, index) => results?.[index]?.[1] === 1);
    }
    const created = await this.#ensureGroups(
      existing,
      this.#options.laterStartId,
      this.#options.mkstream,
    );
    const keep = new Set(created);
    for (const key of keys) if (!keep.has(key)) this.#streams.delete(key);
    this.#readArgs = undefined;
  }

  // ---------------------------------------------------------------------------------------------
  // Reading

  #room(): number {
    return this.#options.maxInFlight - this.#held.size - this.#due.length - this.#claims.size;
  }

  /** Ends a blocked XREADGROUP at once (standalone only) so that new streams are read. */
  #unblockRead(): void {
    const id = this.#blockingClientId;
    if (id === undefined || this.#host.isCluster) return;
    this.#host.track(
      this.#host.command.call('CLIENT', 'UNBLOCK', id).catch(() => {
        // Best effort: without it the read returns after blockMs anyway.
      }),
      'CLIENT UNBLOCK',
    );
  }

  /**
   * Reads while there is room. Each command is raced against stop(): a connection that is
   * waiting to reconnect keeps its commands queued, so a read on it may not settle for long;
   * whatever Redis delivered to a read given up is pending for this consumer, and stop() hands
   * it back.
   */
  async #runReadLoop(blocking: RedisClient): Promise<void> {
    const backoff = new Backoff({ baseMs: 100, maxMs: 1000 });
    // Read a full batch at a time: waking for every freed slot would mean one XREADGROUP per
    // entry. Only a consumer with nothing buffered reads whatever fits.
    const batch = Math.min(this.#options.count, Math.ceil(this.#options.maxInFlight / 2));
    while (this.#reading()) {
      const room = this.#room();
      if (room <= 0 || this.#streams.size === 0 || (room < batch && this.#buffer.size > 0)) {
        await this.#pause.sleep();
        continue;
      }
      try {
        if (this.#blockingClientId === undefined && !this.#host.isCluster) {
          const id = await this.#unlessStopped(blocking.call('CLIENT', 'ID'));
          if (id === STOPPED) break;
          this.#blockingClientId = Number(id);
        }
        const args = this.#readArgs ?? this.#buildReadArgs();
        // COUNT applies per stream: share the room out (at least one entry per stream).
        const count = Math.max(
          1,
          Math.min(this.#options.count, Math.floor(room / this.#streams.size)),
        );
        const reply = await this.#unlessStopped(
          blocking.callBuffer(
            'XREADGROUP',
            'GROUP',
            this.#options.group,
            this.#options.consumer,
            'COUNT',
            count,
            'BLOCK',
            this.#options.blockMs,
            ...args,
          ),
        );
        backoff.reset();
        if (reply === STOPPED || !this.#reading()) break;
        for (const batch of parseReadReply(reply)) {
          for (const entry of batch.entries) this.#accept(batch.key, entry, 1);
        }
      } catch (error) {
        if (!this.#reading()) break;
        if (replyCode(error) === 'NOGROUP') {
          try {
            await this.#recoverGroups();
            continue;
          } catch (recoverError) {
            this.#host.report(
              mapRedisError(recoverError, `re-create group ${this.#options.group}`),
            );
          }
        } else {
          this.#host.report(mapRedisError(error, `XREADGROUP ${this.#options.group}`));
        }
        await this.#pause.sleep(backoff.next());
      }
    }
  }

  /**
   * `command`, or {@link STOPPED} as soon as stop() begins. A connection that is waiting to
   * reconnect keeps its commands queued even after `disconnect()`, so a read on it may never
   * settle; what Redis delivered to a read given up here is pending for this consumer and is
   * handed back by stop(). A fresh promise per read, and a resolver in a field: cheaper than
   * an abort listener added and removed on every read of the hot path.
   */
  #unlessStopped<R>(command: Promise<R>): Promise<R | typeof STOPPED> {
    return new Promise<R | typeof STOPPED>((resolve, reject) => {
      this.#giveUpRead = () => resolve(STOPPED);
      command.then(resolve, reject);
      if (!this.#reading()) resolve(STOPPED);
    });
  }

  #buildReadArgs(): Array<string | number> {
    const keys = [...this.#streams];
    const args: Array<string | number> = ['STREAMS', ...keys];
    for (let i = 0; i < keys.length; i++) args.push('>');
    this.#readArgs = args;
    return args;
  }

  /** Holds a read or claimed entry and queues its item. */
  #accept(key: string, entry: StreamEntry, attempt: number): void {
    // A deleted entry (trimmed while pending) has no fields; Redis already dropped it.
    if (entry.fields === null) return;
    if (this.#held.has(key, entry.id)) return;
    const held = new HeldEntry<T>(this, key, entry.id, attempt);
    this.#held.set(key, entry.id, held);
    let item: T | undefined;
    try {
      item = this.#toItem({ key, id: entry.id, attempt, fields: entry.fields }, held);
    } catch (error) {
      // The factory never throws for bad input (that becomes a malformed item); be safe anyway.
      this.#host.report(mapRedisError(error, `read ${key} ${entry.id}`));
      held.leave();
      return;
    }
    if (item === undefined) {
      void held.ack();
      return;
    }
    held.item = item;
    if (!this.#buffer.push(item)) held.leave();
  }

  #onTake(item: T): void {
    const held = heldOf(item);
    if (held.state === 'buffered') held.state = 'handed';
  }

  // ---------------------------------------------------------------------------------------------
  // Settling

  /** Called by a {@link HeldEntry} as it settles: frees its room. */
  settled(held: HeldEntry<T>): void {
    if (held.state === 'handed') this.#buffer.settled(held.item as T);
    held.state = 'settled';
    this.#held.delete(held.key, held.id);
    if (this.#due.length > 0 && this.#reading()) this.#claimDue();
    this.#pause.wake();
  }

  ackEntry(held: HeldEntry<T>): Promise<void> {
    this.#host.acks.ack(held);
    return RESOLVED;
  }

  /**
   * A nack: refresh the entry's idle time (so no other consumer takes it over during the
   * delay), then claim it back after the delay. After stop, hand it to the group instead.
   */
  async retryEntry(held: HeldEntry<T>, delayMs: number): Promise<void> {
    const { key, id } = held;
    if (!this.#reading()) {
      await this.#releaseRetry(key, id, delayMs);
      return;
    }
    if (delayMs === 0) {
      this.#due.push({ key, id, delayMs });
      this.#claimDue();
      return;
    }
    try {
      await this.#host.command.xclaim(
        key,
        this.#options.group,
        this.#options.consumer,
        0,
        id,
        'JUSTID',
      );
    } catch (error) {
      throw mapRedisError(error, `XCLAIM ${key} ${id}`);
    }
    if (!this.#reading()) {
      await this.#releaseRetry(key, id, delayMs);
      return;
    }
    const mapKey = entryKey(key, id);
    const clock = this.#host.clock;
    const timer = clock.setTimeout(() => {
      this.#retries.delete(mapKey);
      this.#due.push({ key, id, delayMs });
      this.#claimDue();
    }, delayMs);
    this.#retries.set(mapKey, { key, id, dueAt: clock.now() + delayMs, timer });
  }

  /** Hands a retry to the group, claimable once its delay is over. */
  #releaseRetry(key: string, id: string, delayMs: number): Promise<void> {
    return this.#release([
      { key, id, idleMs: Math.max(0, this.#options.claimMinIdleMs - delayMs) },
    ]);
  }

  /** Forgets a waiting retry (it is due now, or its entry is gone). */
  #forgetRetry(mapKey: string): void {
    const waiting = this.#retries.get(mapKey);
    if (waiting === undefined) return;
    this.#host.clock.clearTimeout(waiting.timer);
    this.#retries.delete(mapKey);
  }

  /** Claims due retries back while there is room. */
  #claimDue(): void {
    while (
      this.#due.length > 0 &&
      this.#reading() &&
      this.#held.size + this.#claims.size < this.#options.maxInFlight
    ) {
      const next = this.#due.shift() as DueRetry;
      const claim: Promise<void> = this.#claimBack(next).finally(() => {
        this.#claims.delete(claim);
        this.#pause.wake();
      });
      this.#claims.add(claim);
    }
  }

  async #claimBack({ key, id, delayMs }: DueRetry): Promise<void> {
    const pipeline = this.#host.command.pipeline();
    // Whether the entry still exists, before XCLAIM drops a trimmed entry from the group.
    pipeline.xrange(key, id, id);
    pipeline.callBuffer(
      'XCLAIM',
      key,
      this.#options.group,
      this.#options.consumer,
      retryMinIdle(delayMs),
      id,
    );
    pipeline.xpending(key, this.#options.group, id, id, 1, this.#options.consumer);
    try {
      const results = await pipeline.exec();
      const [claimError, claimReply] = results?.[1] ?? [null, null];
      if (claimError !== null) throw claimError;
      const [rangeError, range] = results?.[0] ?? [null, null];
      if (rangeError === null && Array.isArray(range) && range.length === 0) {
        this.#reportTrimmed(key, [id], 'while waiting for a retry, so they were not handled');
        return;
      }
      const pending = parsePendingReply(results?.[2]?.[1]);
      if (!this.#reading()) {
        // Stopped while the claim was on its way: hand it to the group unseen.
        await this.#release([this.#unseen(key, id, pending[0]?.deliveries)]);
        return;
      }
      for (const entry of parseClaimReply(claimReply)) {
        this.#accept(key, entry, pending[0]?.deliveries ?? 2);
      }
    } catch (error) {
      this.#host.report(mapRedisError(error, `XCLAIM ${key} ${id}`));
      // Still pending: XAUTOCLAIM brings it back after claimMinIdleMs.
    }
  }

  // ---------------------------------------------------------------------------------------------
  // Claims of idle entries (crashed consumers) and refreshing held entries

  async #runClaimPass(): Promise<void> {
    try {
      await this.#refreshHeld();
      for (const key of [...this.#streams]) {
        if (!this.#reading()) return;
        await this.#autoClaim(key);
      }
    } catch (error) {
      if (this.#reading())
        this.#host.report(mapRedisError(error, `XAUTOCLAIM ${this.#options.group}`));
    }
  }

  /** `XCLAIM ... JUSTID` of held entries not touched for a third of claimMinIdleMs. */
  async #refreshHeld(): Promise<void> {
    const now = this.#host.clock.now();
    const threshold = now - this.#options.claimMinIdleMs / 3;
    const byKey = new Map<string, HeldEntry<T>[]>();
    for (const held of this.#held.values()) {
      if (held.touchedAt > threshold) continue;
      let list = byKey.get(held.key);
      if (list === undefined) byKey.set(held.key, (list = []));
      list.push(held);
    }
    if (byKey.size === 0) return;
    const pipeline = this.#host.command.pipeline();
    for (const [key, list] of byKey) {
      pipeline.xclaim(
        key,
        this.#options.group,
        this.#options.consumer,
        0,
        ...list.map((held) => held.id),
        'JUSTID',
      );
      for (const held of list) held.touchedAt = now;
    }
    await pipeline.exec();
  }

  async #autoClaim(key: string): Promise<void> {
    let cursor = '0-0';
    do {
      const room = this.#room();
      if (room <= 0 || !this.#reading()) return;
      const reply = parseAutoClaimReply(
        await this.#host.command.callBuffer(
          'XAUTOCLAIM',
          key,
          this.#options.group,
          this.#options.consumer,
          this.#options.claimMinIdleMs,
          cursor,
          'COUNT',
          Math.min(this.#options.count, room),
        ),
      );
      cursor = reply.cursor;
      if (reply.deleted.length > 0) this.#onDeleted(key, reply.deleted);
      const entries = reply.entries.filter((entry) => entry.fields !== null);
      if (entries.length === 0) continue;
      const ids = entries.map((entry) => entry.id).sort(compareIds);
      const rows = parsePendingReply(
        await this.#host.command.xpending(
          key,
          this.#options.group,
          ids[0] as string,
          ids[ids.length - 1] as string,
          entries.length + this.#held.size + this.#retries.size + 16,
          this.#options.consumer,
        ),
      );
      const counts = new Map(rows.map((row) => [row.id, row.deliveries]));
      for (const entry of entries) {
        const mapKey = entryKey(key, entry.id);
        // An own retry whose delay outlasted claimMinIdleMs: it is due now.
        this.#forgetRetry(mapKey);
        if (!this.#reading()) {
          await this.#release([this.#unseen(key, entry.id, counts.get(entry.id))]);
          continue;
        }
        this.#accept(key, entry, counts.get(entry.id) ?? 2);
      }
    } while (cursor !== '0-0');
  }

  /**
   * `XAUTOCLAIM` found pending entries that are gone from the stream and dropped them from the
   * group. Redis checks that before the idle time, so an entry a handler of this consumer holds
   * may be among them: that one is not lost (the handler has it; its ack is a no-op). A waiting
   * retry of this consumer is lost and forgotten here.
   */
  #onDeleted(key: string, ids: readonly string[]): void {
    const lost: string[] = [];
    for (const id of ids) {
      if (this.#held.has(key, id)) continue;
      this.#forgetRetry(entryKey(key, id));
      lost.push(id);
    }
    if (lost.length > 0) {
      this.#reportTrimmed(
        key,
        lost,
        'while pending; unless a handler of another consumer still holds one, they were not handled',
      );
    }
  }

  /**
   * Reports entries pending in the group (delivered, not acked) that are gone from the stream:
   * trimmed by `MAXLEN` or deleted. Their data is gone, so they can be neither handled nor
   * dead-lettered; Redis drops them from the group without a word, this says so.
   */
  #reportTrimmed(key: string, ids: readonly string[], what: string): void {
    const shown = ids.length > 10 ? `${ids.slice(0, 10).join(', ')} ...` : ids.join(', ');
    this.#host.report(
      new WatchtowerError(
        ErrorCode.TRANSPORT,
        `entries of ${key} in group ${this.#options.group} were trimmed (maxLen) or deleted ${what}: ${shown}; keep maxLen above the largest backlog`,
        { retryable: false },
      ),
    );
  }

  // ---------------------------------------------------------------------------------------------
  // Stopping

  /**
   * Stops reading and claiming, ends the iterator, and gives back what no handler has seen.
   * Handed-out deliveries may still be acked or nacked afterwards. Idempotent; never rejects.
   */
  stop(): Promise<void> {
    this.#stopped ??= this.#stop();
    return this.#stopped;
  }

  async #stop(): Promise<void> {
    this.#phase = 'stopping';
    this.#giveUpRead?.();
    this.#stopClaims?.();
    const waiting = new Map(this.#retries);
    for (const retry of waiting.values()) this.#host.clock.clearTimeout(retry.timer);
    this.#retries.clear();
    // Nobody has seen what is buffered: iteration ends now, and it goes back below.
    for (const item of this.#buffer.drain()) {
      const held = heldOf(item);
      held.state = 'settled';
      this.#held.delete(held.key, held.id);
    }
    this.#buffer.end();
    this.#pause.wake();
    // Ends a blocked read at once; Redis may already have delivered entries whose reply is now
    // lost: they are pending for this consumer and are given back below with the others.
    this.disconnect();
    await Promise.allSettled([this.#readLoop, this.#claimPass, ...this.#adding, ...this.#claims]);
    const due = new Set(this.#due.map((d) => entryKey(d.key, d.id)));
    this.#due.length = 0;
    try {
      if (this.#options.ownGroup) await this.#destroyGroup();
      else await this.#handBack(waiting, due);
    } catch (error) {
      this.#host.report(mapRedisError(error, `stop consumer ${this.#options.consumer}`));
    }
    this.#phase = 'stopped';
    if (!this.#options.ownGroup) {
      // Once nothing is handed out: forget this consumer if it holds no entries.
      void this.#buffer.whenIdle().then(() => {
        this.#host.track(this.#deleteConsumerIfIdle(), `XGROUP DELCONSUMER ${this.group}`);
      });
    }
  }

  /** An entry no handler saw, handed back with its delivery count lowered again. */
  #unseen(key: string, id: string, deliveries: number | undefined): Release {
    const release = { key, id, idleMs: this.#options.claimMinIdleMs };
    return deliveries === undefined
      ? release
      : { ...release, retryCount: Math.max(0, deliveries - 1) };
  }

  async #destroyGroup(): Promise<void> {
    if (this.#streams.size === 0) return;
    const pipeline = this.#host.command.pipeline();
    for (const key of this.#streams) pipeline.xgroup('DESTROY', key, this.#options.group);
    await pipeline.exec();
  }

  /**
   * Gives the entries pending for this consumer that no handler holds back to the group:
   * entries read but never handed out (their delivery count is lowered again, nobody saw them),
   * due retries, and waiting retries (idle so that they become claimable when their delay is
   * over). They go to the most recently active other consumer of the group, whose
   * `XAUTOCLAIM` picks them up on its next pass (as does any other member's).
   */
  async #handBack(waiting: Map<string, WaitingRetry>, due: Set<string>): Promise<void> {
    const now = this.#host.clock.now();
    for (const key of this.#streams) {
      const rows = parsePendingReply(
        await this.#host.command.xpending(
          key,
          this.#options.group,
          '-',
          '+',
          10_000,
          this.#options.consumer,
        ),
      );
      const releases: Release[] = [];
      for (const row of rows) {
        if (this.#held.has(key, row.id)) continue; // a handler has it
        const mapKey = entryKey(key, row.id);
        const retry = waiting.get(mapKey);
        if (retry !== undefined) {
          const remaining = Math.max(0, retry.dueAt - now);
          releases.push({
            key,
            id: row.id,
            idleMs: Math.max(0, this.#options.claimMinIdleMs - remaining),
          });
        } else if (due.has(mapKey)) {
          releases.push({ key, id: row.id, idleMs: this.#options.claimMinIdleMs });
        } else {
          releases.push(this.#unseen(key, row.id, row.deliveries));
        }
      }
      await this.#release(releases);
    }
  }

  /**
   * `XCLAIM key group <target> 0 id IDLE ms [RETRYCOUNT n] JUSTID`: moves entries to another
   * consumer (or keeps them here when there is none) and sets how long they count as idle.
   */
  async #release(releases: readonly Release[]): Promise<void> {
    if (releases.length === 0 || this.#options.ownGroup) return;
    const targets = new Map<string, string>();
    for (const release of releases) {
      if (!targets.has(release.key))
        targets.set(release.key, await this.#handOffTarget(release.key));
    }
    const pipeline = this.#host.command.pipeline();
    for (const release of releases) {
      const target = targets.get(release.key) as string;
      const args: Array<string | number> = [
        release.key,
        this.#options.group,
        target,
        0,
        release.id,
        'IDLE',
        release.idleMs,
      ];
      if (release.retryCount !== undefined) args.push('RETRYCOUNT', release.retryCount);
      args.push('JUSTID');
      pipeline.call('XCLAIM', ...args);
    }
    await pipeline.exec();
  }

  /** The other consumer of the group on `key` that was active most recently, or this one. */
  async #handOffTarget(key: string): Promise<string> {
    try {
      const reply = await this.#host.command.call('XINFO', 'CONSUMERS', key, this.#options.group);
      let best: { name: string; idle: number } | undefined;
      for (const info of parseInfoReply(reply)) {
        const name = String(info.get('name'));
        const idle = Number(info.get('idle'));
        if (name === this.#options.consumer) continue;
        if (best === undefined || idle < best.idle) best = { name, idle };
      }
      return best?.name ?? this.#options.consumer;
    } catch {
      return this.#options.consumer;
    }
  }

  async #deleteConsumerIfIdle(): Promise<void> {
    try {
      for (const key of this.#streams) {
        const rows = await this.#host.command.xpending(
          key,
          this.#options.group,
          '-',
          '+',
          1,
          this.#options.consumer,
        );
        if (Array.isArray(rows) && rows.length === 0) {
          await this.#host.command.xgroup(
            'DELCONSUMER',
            key,
            this.#options.group,
            this.#options.consumer,
          );
        }
      }
    } catch {
      // Only tidiness: an idle consumer name left behind holds nothing.
    }
  }
}

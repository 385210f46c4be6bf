import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { accessSync, constants, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { delimiter, join } from 'node:path';
import { vi } from 'vitest';
import { Redis } from 'ioredis';
import type { Delivery, TransportSubscription } from '@watchtower/core';
import { freePort, pauseProcess } from '@watchtower/core/testing';

/** The shared broker of the integration tests. */
export const REDIS_URL = process.env['WATCHTOWER_REDIS_URL'] ?? 'redis://127.0.0.1:6379';

/** A key prefix no other test uses. */
export function uniquePrefix(label = 'wt'): string {
  return `test-${label}-${randomBytes(5).toString('hex')}`;
}

/** A plain ioredis client for arranging and inspecting what a test needs. */
export function rawClient(url = REDIS_URL): Redis {
  return new Redis(url, { lazyConnect: false, maxRetriesPerRequest: 3 });
}

/** Deletes every key under `prefix:` (and the prefix itself), then quits `client`. */
export async function deleteKeysAndQuit(client: Redis, prefix: string): Promise<void> {
  try {
    const escaped = prefix.replace(/[*?[\]\\]/g, (c) => `\\${c}`);
    for await (const keys of client.scanStream({
      match: `${escaped}:*`,
      count: 1000,
    }) as AsyncIterable<string[]>) {
      if (keys.length > 0) await client.del(...keys);
    }
    await client.del(prefix);
  } finally {
    await client.quit().catch(() => client.disconnect());
  }
}

/** Polls `check` until it stops throwing or `timeout` ms pass (no fixed sleeps in tests). */
export function eventually<T>(check: () => T | Promise<T>, timeout = 10_000): Promise<T> {
  return vi.waitFor(check, { timeout, interval: 20 });
}

/** Iterates `subscription` in the background, keeping every delivery (settling is up to the test). */
export function record(subscription: TransportSubscription): {
  deliveries: Delivery[];
  done: Promise<void>;
} {
  const deliveries: Delivery[] = [];
  const done = (async () => {
    for await (const delivery of subscription) deliveries.push(delivery);
  })();
  return { deliveries, done };
}

/** Iterates `subscription` in the background and acks every delivery. */
export function ackAll(subscription: TransportSubscription): {
  deliveries: Delivery[];
  done: Promise<void>;
} {
  const deliveries: Delivery[] = [];
  const done = (async () => {
    for await (const delivery of subscription) {
      deliveries.push(delivery);
      await delivery.ack();
    }
  })();
  return { deliveries, done };
}

/**
 * The `redis-server` binary: `WATCHTOWER_REDIS_SERVER`, else the PATH, else the sbin directories
 * where packages put it (as scripts/ensure-brokers.sh looks for it). A missing binary fails the
 * tests that need it; they are never skipped.
 */
function redisServerBinary(): string {
  const explicit = process.env['WATCHTOWER_REDIS_SERVER'];
  if (explicit !== undefined && explicit !== '') return explicit;
  const dirs = [
    ...(process.env['PATH'] ?? '').split(delimiter),
    '/usr/sbin',
    '/usr/local/sbin',
    '/sbin',
  ];
  for (const dir of dirs) {
    if (dir === '') continue;
    const candidate = join(dir, 'redis-server');
    try {
      accessSync(candidate, constants.X_OK);
      return candidate;
    } catch {
      // not here
    }
  }
  throw new Error(
    'redis-server is not installed (needed for the private-broker tests); set WATCHTOWER_REDIS_SERVER',
  );
}

/**
 * A private `redis-server` on a random port, without persistence, that a test may kill and
 * start again on the same port. Only the process started here is ever signalled (by pid).
 */
export class PrivateRedisServer {
  #process: ChildProcess | undefined;
  readonly #dir: string;

  private constructor(
    readonly port: number,
    private readonly extraArgs: readonly string[],
  ) {
    this.#dir = mkdtempSync(join(tmpdir(), 'wt-redis-'));
  }

  get url(): string {
    return `redis://127.0.0.1:${this.port}`;
  }

  /** Starts a server on a free port; resolves once it answers PING. */
  static async start(extraArgs: readonly string[] = []): Promise<PrivateRedisServer> {
    const server = new PrivateRedisServer(await freePort(), extraArgs);
    await server.startProcess();
    return server;
  }

  /** Starts the process (again) on the same port; resolves once it answers PING. */
  async startProcess(): Promise<void> {
    if (this.#process !== undefined) throw new Error('redis-server is already running');
    const child = spawn(
      redisServerBinary(),
      [
        '--port',
        String(this.port),
        '--bind',
        '127.0.0.1',
        '--save',
        '',
        '--appendonly',
        'no',
        '--dir',
        this.#dir,
        ...this.extraArgs,
      ],
      { stdio: 'ignore' },
    );
    this.#process = child;
    child.once('exit', () => {
      if (this.#process === child) this.#process = undefined;
    });
    const probe = new Redis(this.url, {
      lazyConnect: true,
      retryStrategy: () => null,
      maxRetriesPerRequest: 0,
    });
    probe.on('error', () => {});
    try {
      await eventually(async () => {
        if (this.#process !== child) throw new Error('redis-server exited at start');
        if (probe.status !== 'ready')
          await probe.connect().catch(async (error: unknown) => {
            probe.disconnect();
            throw error;
          });
        await probe.ping();
      }, 10_000);
    } finally {
      probe.disconnect();
    }
  }

  /**
   * Stops the server process (SIGSTOP): connections stay open, and nothing is answered until
   * {@link PrivateRedisServer.resume}, as with a hung server.
   */
  pause(): void {
    const pid = this.#process?.pid;
    if (pid === undefined) throw new Error('redis-server is not running');
    pauseProcess(pid);
  }

  /** Lets a paused server go on (SIGCONT). */
  resume(): void {
    const pid = this.#process?.pid;
    if (pid !== undefined) process.kill(pid, 'SIGCONT');
  }

  /** Kills the server (SIGKILL, like a crash) and waits until it has exited. */
  async kill(): Promise<void> {
    const child = this.#process;
    if (child === undefined) return;
    const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
    if (child.pid !== undefined) process.kill(child.pid, 'SIGKILL');
    await exited;
    this.#process = undefined;
  }

  /** Kills the server and starts it again on the same port (empty: no persistence). */
  async restart(): Promise<void> {
    await this.kill();
    await this.startProcess();
  }

  /** Kills the server and removes its working directory. */
  async stop(): Promise<void> {
    await this.kill();
    rmSync(this.#dir, { recursive: true, force: true });
  }
}

/** Fast settings for tests: short blocks, quick discovery and claim passes. */
export const FAST = {
  blockMs: 200,
  discoveryIntervalMs: 100,
  claimIntervalMs: 100,
  claimMinIdleMs: 30_000,
} as const;

/**
 * Per-test resources: a unique prefix, transports that are closed and keys that are deleted
 * when the test ends. Call `cleanup()` in `afterEach`.
 */
export class TestContext {
  readonly prefix = uniquePrefix();
  readonly redis = rawClient();
  readonly #closers: Array<() => Promise<unknown>> = [];

  /** Registers something to close at the end of the test (in reverse order). */
  defer<T extends { close(): Promise<unknown> }>(resource: T): T {
    this.#closers.push(() => resource.close());
    return resource;
  }

  /**
   * Closes what the test registered, checks that no connection of a transport named after this
   * prefix (`consumerPrefix`) is still open, and deletes the test's keys.
   */
  async cleanup(): Promise<void> {
    for (const close of this.#closers.reverse()) {
      await close().catch(() => {});
    }
    try {
      await eventually(async () => {
        const clients = (await this.redis.client('LIST')) as string;
        if (clients.includes(`name=watchtower:${this.prefix}`)) {
          throw new Error(`a connection of ${this.prefix} is still open after close`);
        }
      }, 5000);
    } finally {
      await deleteKeysAndQuit(this.redis, this.prefix);
    }
  }
}

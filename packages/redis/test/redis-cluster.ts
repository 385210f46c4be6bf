/**
 * A private Redis Cluster for the cluster tests: six `redis-server --cluster-enabled yes`
 * processes on random ports (client and cluster-bus port each), each in its own folder,
 * joined by `redis-cli --cluster create --cluster-replicas 1`: three masters, each with one
 * replica. `start()` resolves once every node reports `cluster_state:ok` and knows all six.
 * A node can be killed (SIGKILL, a crash) and started again on its ports and folder (it keeps
 * its `nodes.conf`, so it rejoins; without persistence it comes back empty and resyncs as a
 * replica). Only the processes started here are ever signalled, by pid; `stop()` kills them all
 * and removes the folders, and a process exit hook does the same if a run ends without it.
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { freePorts, waitFor } from '@watchtower/core/testing';
import { Redis } from 'ioredis';

const run = promisify(execFile);
const REDIS_SERVER = process.env['WATCHTOWER_REDIS_SERVER'] ?? 'redis-server';
const REDIS_CLI = process.env['WATCHTOWER_REDIS_CLI'] ?? 'redis-cli';

/** The clusters of this process still running, for the exit hook. */
const running = new Set<PrivateRedisCluster>();
let exitHookInstalled = false;

function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.once('exit', () => {
    for (const cluster of running) {
      for (const node of cluster.nodes) node.killNow();
      cluster.removeFolders();
    }
  });
}

/** One `redis-server` of the cluster. */
export class RedisClusterNode {
  #process: ChildProcess | undefined;
  #exited: Promise<void> = Promise.resolve();

  constructor(
    readonly port: number,
    readonly busPort: number,
    readonly dir: string,
    private readonly nodeTimeoutMs: number,
  ) {}

  get address(): string {
    return `127.0.0.1:${this.port}`;
  }

  get running(): boolean {
    const child = this.#process;
    return child !== undefined && child.exitCode === null && child.signalCode === null;
  }

  /** A plain client of this node alone (the caller quits it). */
  client(): Redis {
    const client = new Redis(this.port, '127.0.0.1', {
      lazyConnect: true,
      maxRetriesPerRequest: 0,
      retryStrategy: () => null,
    });
    client.on('error', () => undefined);
    return client;
  }

  /** Runs one command on this node alone. */
  async command(...args: string[]): Promise<unknown> {
    const client = this.client();
    try {
      await client.connect();
      const [name, ...rest] = args as [string, ...string[]];
      return await client.call(name, ...rest);
    } finally {
      client.disconnect();
    }
  }

  /** Starts the process; resolves once it answers PING. */
  async start(): Promise<void> {
    if (this.running) throw new Error(`redis-server ${this.address} is already running`);
    const child = spawn(
      REDIS_SERVER,
      [
        '--port',
        String(this.port),
        '--bind',
        '127.0.0.1',
        '--cluster-enabled',
        'yes',
        '--cluster-port',
        String(this.busPort),
        '--cluster-config-file',
        'nodes.conf',
        '--cluster-node-timeout',
        String(this.nodeTimeoutMs),
        // A replica takes over however long ago it last heard from its master: the tests kill
        // a master seconds after the cluster formed, and the default (10 node timeouts of
        // data age) may keep a replica that is still syncing from standing in.
        '--cluster-replica-validity-factor',
        '0',
        '--cluster-announce-ip',
        '127.0.0.1',
        '--save',
        '',
        '--appendonly',
        'no',
        '--dir',
        this.dir,
      ],
      { stdio: 'ignore' },
    );
    this.#process = child;
    this.#exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
    await pollUntil(
      async () => {
        if (!this.running) throw new Error(`redis-server ${this.address} exited at start`);
        return (await this.command('PING')) === 'PONG';
      },
      10_000,
      `redis-server ${this.address} answering`,
    );
  }

  /** SIGKILL (a crash); resolves once the process has ended. */
  async kill(): Promise<void> {
    this.killNow();
    await this.#exited;
  }

  /** Sends SIGKILL without waiting (the exit hook). */
  killNow(): void {
    const child = this.#process;
    if (child?.pid !== undefined && this.running) process.kill(child.pid, 'SIGKILL');
  }

  /** `CLUSTER INFO` as fields. */
  async clusterInfo(): Promise<Record<string, string>> {
    const text = String(await this.command('CLUSTER', 'INFO'));
    return Object.fromEntries(
      text
        .split(/\r?\n/)
        .filter((line) => line.includes(':'))
        .map((line) => line.split(':', 2) as [string, string]),
    );
  }
}

/** One line of `CLUSTER NODES`. */
export interface ClusterNodeEntry {
  readonly id: string;
  readonly port: number;
  readonly role: 'master' | 'replica';
  readonly failed: boolean;
  /** The master's id, for a replica. */
  readonly masterId: string | undefined;
  /** Slot ranges, for a master: `[from, to]`. */
  readonly slots: readonly (readonly [number, number])[];
}

/** Six `redis-server` processes joined as 3 masters with a replica each. */
export class PrivateRedisCluster {
  private constructor(
    readonly nodes: readonly RedisClusterNode[],
    private readonly root: string,
  ) {}

  /** The startup nodes of a transport's `cluster.nodes`. */
  get startupNodes(): { host: string; port: number }[] {
    return this.nodes.map((node) => ({ host: '127.0.0.1', port: node.port }));
  }

  /**
   * Starts 3 masters and 3 replicas; resolves once the cluster is formed. `nodeTimeoutMs`
   * is how long a master may be unreachable before its replica takes over.
   */
  static async start(options: { nodeTimeoutMs?: number } = {}): Promise<PrivateRedisCluster> {
    const root = mkdtempSync(join(tmpdir(), 'wt-redis-cluster-'));
    const ports = await freePorts(12);
    const nodes = Array.from({ length: 6 }, (_, i) => {
      const dir = join(root, `node-${i + 1}`);
      mkdirSync(dir);
      return new RedisClusterNode(
        ports[i] as number,
        ports[6 + i] as number,
        dir,
        options.nodeTimeoutMs ?? 2000,
      );
    });
    const cluster = new PrivateRedisCluster(nodes, root);
    running.add(cluster);
    installExitHook();
    try {
      await Promise.all(nodes.map((node) => node.start()));
      await run(REDIS_CLI, [
        '--cluster',
        'create',
        ...nodes.map((node) => node.address),
        '--cluster-replicas',
        '1',
        '--cluster-yes',
      ]);
      await cluster.waitFormed();
    } catch (error) {
      await cluster.stop();
      throw error;
    }
    return cluster;
  }

  /**
   * Resolves once every running node reports `cluster_state:ok`, all 16384 slots served,
   * every other running node known and not failed, and every master it sees with slots (no
   * node still on its way to becoming a replica).
   */
  async waitFormed(timeoutMs = 30_000): Promise<void> {
    await pollUntil(
      async () => {
        const up = this.nodes.filter((node) => node.running);
        for (const node of up) {
          const info = await node.clusterInfo();
          if (info['cluster_state'] !== 'ok' || info['cluster_slots_ok'] !== '16384') return false;
          const entries = await this.entriesFrom(node);
          const seen = entries.filter((e) => !e.failed && up.some((n) => n.port === e.port));
          if (seen.length !== up.length) return false;
          // Each master's slots and each replica's master, agreed on by every node.
          const masters = seen.filter((e) => e.role === 'master');
          if (masters.some((m) => m.slots.length === 0)) return false;
          if (seen.some((e) => e.role === 'replica' && e.masterId === undefined)) return false;
        }
        // Every replica has finished its sync with its master (it can take over at once).
        for (const node of up) {
          const info = String(await node.command('INFO', 'replication'));
          if (info.includes('role:slave') && !info.includes('master_link_status:up')) return false;
        }
        return true;
      },
      timeoutMs,
      'the Redis Cluster formed (cluster_state:ok on every node)',
    );
  }

  /** `CLUSTER NODES` as seen by `node` (default: the first running one). */
  async entriesFrom(node?: RedisClusterNode): Promise<ClusterNodeEntry[]> {
    const from = node ?? this.nodes.find((n) => n.running);
    if (from === undefined) throw new Error('no node of the cluster is running');
    const text = String(await from.command('CLUSTER', 'NODES'));
    return text
      .trim()
      .split('\n')
      .map((line) => {
        const [id, address, flags, master, , , , , ...slots] = line.split(' ');
        const flagList = (flags ?? '').split(',');
        return {
          id: id ?? '',
          port: Number((address ?? '').split('@')[0]?.split(':')[1]),
          role: flagList.includes('master') ? 'master' : 'replica',
          failed: flagList.includes('fail') || flagList.includes('fail?'),
          masterId: master === '-' ? undefined : master,
          slots: slots
            .filter((s) => !s.startsWith('['))
            .map((s) => {
              const [a, b] = s.split('-');
              return [Number(a), Number(b ?? a)] as const;
            }),
        };
      });
  }

  /** The node running on `port`. */
  node(port: number): RedisClusterNode {
    const node = this.nodes.find((n) => n.port === port);
    if (node === undefined) throw new Error(`no node on port ${port}`);
    return node;
  }

  /** The live master serving `slot` as `from` (default: the first running node) sees it. */
  async masterOf(slot: number, from?: RedisClusterNode): Promise<ClusterNodeEntry | undefined> {
    return (await this.entriesFrom(from)).find(
      (e) => e.role === 'master' && !e.failed && e.slots.some(([a, b]) => slot >= a && slot <= b),
    );
  }

  /** The master serving `slot`, and its replica, as the cluster sees them now. */
  async ownerOf(slot: number): Promise<{ master: ClusterNodeEntry; replica: ClusterNodeEntry }> {
    const entries = await this.entriesFrom();
    const master = entries.find(
      (e) => e.role === 'master' && !e.failed && e.slots.some(([a, b]) => slot >= a && slot <= b),
    );
    const replica = entries.find((e) => e.masterId === master?.id && !e.failed);
    if (master === undefined || replica === undefined) {
      throw new Error(`slot ${slot} has no live master with a live replica`);
    }
    return { master, replica };
  }

  /** The running masters, with their slots. */
  async masters(): Promise<ClusterNodeEntry[]> {
    return (await this.entriesFrom()).filter((e) => e.role === 'master' && !e.failed);
  }

  /** Runs `redis-cli` with `args` (e.g. `--cluster reshard ...`). */
  async cli(args: readonly string[]): Promise<string> {
    const { stdout } = await run(REDIS_CLI, [...args], { maxBuffer: 16 * 1024 * 1024 });
    return stdout;
  }

  /** Kills every node and removes the folders. */
  async stop(): Promise<void> {
    await Promise.all(this.nodes.map((node) => node.kill()));
    running.delete(this);
    this.removeFolders();
  }

  /** Removes the nodes' folders (the exit hook, and `stop()`). */
  removeFolders(): void {
    rmSync(this.root, { recursive: true, force: true });
  }
}

/** Redis Cluster's hash slot of `key` (CRC16/XMODEM of its hash tag, mod 16384). */
export function keySlot(key: string): number {
  const open = key.indexOf('{');
  if (open >= 0) {
    const close = key.indexOf('}', open + 1);
    if (close > open + 1) key = key.slice(open + 1, close);
  }
  let crc = 0;
  for (const byte of Buffer.from(key)) {
    crc ^= byte << 8;
    for (let i = 0; i < 8; i++)
      crc = crc & 0x8000 ? ((crc << 1) ^ 0x1021) & 0xffff : (crc << 1) & 0xffff;
  }
  return crc % 16384;
}

/** A hash tag `{label-N}` whose slot is within `[from, to]`: places a prefix on a chosen node. */
export function hashTagInSlots(label: string, from: number, to: number): string {
  for (let n = 0; ; n++) {
    const tag = `{${label}-${n}}`;
    const slot = keySlot(tag);
    if (slot >= from && slot <= to) return tag;
  }
}

/** Polls `check` every 50 ms until it returns true; rejects after `timeoutMs`. */
export async function pollUntil(
  check: () => boolean | Promise<boolean>,
  timeoutMs: number,
  what: string,
): Promise<void> {
  await waitFor(check, { timeoutMs, intervalMs: 50, message: what });
}

/**
 * A private NATS cluster for the cluster tests: three `nats-server` processes with JetStream,
 * on random ports (client, route and monitoring port each), each with its own folder (store and
 * configuration file), routed to one another. `start()` resolves once the cluster is formed:
 * every node has its two routes and sees the same JetStream meta leader, and a stream of three
 * replicas can be created. A node can be killed
 * (SIGKILL, a crash) and started again on its ports with its store. Only the processes started
 * here are ever signalled, by pid; `stop()` kills them all and removes the folders, and a
 * process exit hook does the same if a test run ends without `stop()`.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePorts, waitFor } from '@watchtower/core/testing';
import { jetstreamManager } from '@nats-io/jetstream';
import { connect } from '@nats-io/transport-node';
import { NatsTransport, type NatsConfig } from '../src/index.js';

const NATS_SERVER_BIN = process.env['NATS_SERVER_BIN'] ?? '/usr/sbin/nats-server';
const CLUSTER_NAME = 'watchtower-test';

/** The clusters of this process still running, for the exit hook. */
const running = new Set<PrivateNatsCluster>();
let exitHookInstalled = false;

function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.once('exit', () => {
    for (const cluster of running) {
      cluster.killNow();
      cluster.removeFolders();
    }
  });
}

/** One `nats-server` of the cluster. */
export class NatsClusterNode {
  #process: ChildProcess | undefined;
  #exited: Promise<void> = Promise.resolve();
  #output = '';

  constructor(
    /** The server name (`n1` ...), as JetStream reports it for a stream leader. */
    readonly name: string,
    readonly port: number,
    readonly routePort: number,
    readonly monitorPort: number,
    readonly dir: string,
    private readonly configFile: string,
  ) {}

  get url(): string {
    return `nats://127.0.0.1:${this.port}`;
  }

  get running(): boolean {
    const child = this.#process;
    return child !== undefined && child.exitCode === null && child.signalCode === null;
  }

  /** Starts the process; resolves once it answers on its monitoring port. */
  async start(): Promise<void> {
    if (this.running) throw new Error(`nats-server ${this.name} is already running`);
    this.#output = '';
    const child = spawn(NATS_SERVER_BIN, ['-c', this.configFile], {
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    child.stderr?.on('data', (chunk: Buffer) => {
      if (this.#output.length < 20_000) this.#output += chunk.toString();
    });
    this.#process = child;
    this.#exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
    await pollUntil(
      async () => {
        if (!this.running) throw new Error(`nats-server ${this.name} exited:\n${this.#output}`);
        return (await this.monitor('/varz')) !== undefined;
      },
      10_000,
      `nats-server ${this.name} answering on port ${this.monitorPort}`,
    );
  }

  /** SIGKILL (a crash, not a shutdown); resolves once the process has ended. */
  async kill(): Promise<void> {
    this.killNow();
    await this.#exited;
  }

  /** Sends SIGKILL without waiting (the exit hook). */
  killNow(): void {
    const child = this.#process;
    if (child?.pid !== undefined && this.running) process.kill(child.pid, 'SIGKILL');
  }

  /** A monitoring endpoint's JSON (`/varz`, `/routez`, `/jsz`), or undefined when down. */
  async monitor(path: string): Promise<Record<string, unknown> | undefined> {
    try {
      const response = await fetch(`http://127.0.0.1:${this.monitorPort}${path}`, {
        signal: AbortSignal.timeout(2000),
      });
      if (!response.ok) return undefined;
      return (await response.json()) as Record<string, unknown>;
    } catch {
      return undefined;
    }
  }
}

/** Three routed `nats-server` processes with JetStream. */
export class PrivateNatsCluster {
  private constructor(
    readonly nodes: readonly NatsClusterNode[],
    private readonly root: string,
  ) {}

  /** Every client URL, as a transport's `servers`. */
  get urls(): string[] {
    return this.nodes.map((node) => node.url);
  }

  /** Starts `size` nodes (default 3); resolves once the cluster is formed. */
  static async start(size = 3): Promise<PrivateNatsCluster> {
    const root = mkdtempSync(join(tmpdir(), 'wt-nats-cluster-'));
    const ports = await freePorts(size * 3);
    const routePorts = ports.slice(size, size * 2);
    const nodes = Array.from({ length: size }, (_, i) => {
      const name = `n${i + 1}`;
      const dir = join(root, name);
      const port = ports[i] as number;
      const routePort = routePorts[i] as number;
      const monitorPort = ports[size * 2 + i] as number;
      const routes = routePorts.filter((_, j) => j !== i).map((p) => `nats-route://127.0.0.1:${p}`);
      const configFile = join(root, `${name}.conf`);
      writeFileSync(
        configFile,
        [
          `server_name: ${name}`,
          `listen: 127.0.0.1:${port}`,
          `http: 127.0.0.1:${monitorPort}`,
          `jetstream { store_dir: "${join(dir, 'store')}" }`,
          `cluster {`,
          `  name: ${CLUSTER_NAME}`,
          `  listen: 127.0.0.1:${routePort}`,
          `  routes: [${routes.join(', ')}]`,
          `}`,
          '',
        ].join('\n'),
      );
      return new NatsClusterNode(name, port, routePort, monitorPort, dir, configFile);
    });
    const cluster = new PrivateNatsCluster(nodes, root);
    running.add(cluster);
    installExitHook();
    try {
      await Promise.all(nodes.map((node) => node.start()));
      await cluster.waitFormed();
      await cluster.waitJetStreamReady();
    } catch (error) {
      await cluster.stop();
      throw error;
    }
    return cluster;
  }

  /** The node named `name` (as a stream's `cluster.leader` names it). */
  node(name: string): NatsClusterNode {
    const node = this.nodes.find((n) => n.name === name);
    if (node === undefined) throw new Error(`no node ${name} in the cluster`);
    return node;
  }

  /**
   * Resolves once every running node has a route to each other running node and all of them
   * name the same JetStream meta leader, itself running.
   */
  async waitFormed(timeoutMs = 30_000): Promise<void> {
    await pollUntil(
      async () => {
        const up = this.nodes.filter((node) => node.running);
        const leaders = new Set<string>();
        for (const node of up) {
          const routez = await node.monitor('/routez');
          if (routez === undefined || Number(routez['num_routes']) < up.length - 1) return false;
          const jsz = await node.monitor('/jsz');
          const meta = jsz?.['meta_cluster'] as { leader?: string } | undefined;
          if (meta?.leader === undefined || meta.leader === '') return false;
          leaders.add(meta.leader);
        }
        const [leader] = leaders;
        return leaders.size === 1 && up.some((node) => node.name === leader);
      },
      timeoutMs,
      'the NATS cluster formed (routes and one JetStream meta leader)',
    );
  }

  /**
   * Resolves once a stream of three replicas can be created and deleted: after a restart of
   * every node the meta leader is back seconds before JetStream takes such requests again.
   */
  async waitJetStreamReady(timeoutMs = 60_000): Promise<void> {
    const nc = await connect({ servers: this.urls, maxReconnectAttempts: -1 });
    try {
      const jsm = await jetstreamManager(nc, { timeout: 5000 });
      let probe = 0;
      await pollUntil(
        async () => {
          const name = `WT_CLUSTER_PROBE_${++probe}`;
          await jsm.streams.add({ name, subjects: [`wt_cluster_probe.${probe}`], num_replicas: 3 });
          await jsm.streams.delete(name);
          return true;
        },
        timeoutMs,
        'JetStream taking a stream of three replicas',
      );
    } finally {
      await nc.close();
    }
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

  /** SIGKILL to every node, without waiting (the exit hook). */
  killNow(): void {
    for (const node of this.nodes) node.killNow();
  }
}

/**
 * Creates the streams a transport with `config` uses, by connecting one and closing it, so
 * that transports started together afterwards find them instead of creating them at once
 * (nats-server 2.9.10 leaves one of several concurrent creations of the same replicated
 * stream unanswered now and then).
 */
export async function createStreams(config: Partial<NatsConfig>): Promise<void> {
  const transport = new NatsTransport(config);
  try {
    await transport.connect();
  } finally {
    await transport.close({ timeoutMs: 5000 });
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

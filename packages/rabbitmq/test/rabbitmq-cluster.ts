/**
 * A private RabbitMQ cluster for the cluster tests: three {@link PrivateRabbitMQ} nodes on this
 * machine (distinct node names and ports, a folder each, one Erlang cookie of their own), started
 * together and joined to the first (`rabbitmqctl -n <node> stop_app; join_cluster; start_app`,
 * one join after the other). `start()` resolves once every node lists all three as running: about
 * 30 s on two cores. A node can be killed (SIGKILL) and started again on its data; it rejoins
 * by itself. The system broker (`rabbit@localhost` on 5672) is never named, and its cookie is
 * not this cluster's, so no command here can reach it. `stop()` kills the nodes by pid and
 * removes the folder.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { waitFor } from '@watchtower/core/testing';
import { PrivateRabbitMQ } from './private-rabbitmq.js';

/** One queue as `rabbitmqctl list_queues name type leader members` reports it. */
export interface ClusterQueue {
  readonly name: string;
  readonly type: string;
  /** The node leading a quorum queue (`''` for a classic queue). */
  readonly leader: string;
  readonly members: readonly string[] | '';
}

export class RabbitMQCluster {
  private constructor(
    readonly nodes: readonly PrivateRabbitMQ[],
    private readonly root: string,
  ) {}

  /** Every node's AMQP URL, as a transport's `url`. */
  get urls(): string[] {
    return this.nodes.map((node) => node.url);
  }

  /** Starts `size` nodes (default 3) and joins them; resolves once the cluster is formed. */
  static async start(size = 3): Promise<RabbitMQCluster> {
    const root = mkdtempSync(join(tmpdir(), 'wt-rabbitmq-cluster-'));
    const nodes: PrivateRabbitMQ[] = [];
    for (let i = 0; i < size; i++) {
      nodes.push(
        await PrivateRabbitMQ.create({
          dir: join(root, `n${i + 1}`),
          home: root,
          label: 'watchtower-cluster',
        }),
      );
    }
    const cluster = new RabbitMQCluster(nodes, root);
    // The nodes' own exit hook kills them and removes their folders; this removes the rest.
    process.once('exit', () => cluster.removeFolder());
    try {
      await Promise.all(nodes.map((node) => node.startProcess()));
      const [first, ...others] = nodes as [PrivateRabbitMQ, ...PrivateRabbitMQ[]];
      // One join at a time: two nodes joining at once sometimes failed `start_app` with a
      // mnesia error (seen in a clean-clone CI run).
      for (const node of others) {
        await node.ctl(['stop_app']);
        await node.ctl(['join_cluster', first.name]);
        await node.ctl(['start_app']);
      }
      await cluster.waitFormed();
    } catch (error) {
      await cluster.stop();
      throw error;
    }
    return cluster;
  }

  /** The node named `name` (as a quorum queue's leader names it). */
  node(name: string): PrivateRabbitMQ {
    const node = this.nodes.find((n) => n.name === name);
    if (node === undefined) throw new Error(`no node ${name} in the cluster`);
    return node;
  }

  /** A node that is running, to ask about the cluster. */
  #anyRunning(): PrivateRabbitMQ {
    const node = this.nodes.find((n) => n.running);
    if (node === undefined) throw new Error('no node of the cluster is running');
    return node;
  }

  /**
   * Resolves once every running node takes connections and lists every running node of the
   * cluster as running (a restarted node is back in the cluster).
   */
  async waitFormed(timeoutMs = 60_000): Promise<void> {
    const up = this.nodes.filter((node) => node.running);
    await Promise.all(up.map((node) => node.waitAcceptingConnections()));
    await waitFor(
      async () => {
        for (const node of up) {
          const status = JSON.parse(
            await node.ctl(['cluster_status', '-q', '--formatter', 'json']),
          ) as { running_nodes?: string[] };
          if (!up.every((other) => status.running_nodes?.includes(other.name))) return false;
        }
        return true;
      },
      { timeoutMs, intervalMs: 500, message: 'every running RabbitMQ node in the cluster' },
    );
  }

  /** The queues of the cluster (vhost `/`), asked of a running node. */
  async queues(): Promise<ClusterQueue[]> {
    const out = await this.#anyRunning().ctl([
      'list_queues',
      '-q',
      '--formatter',
      'json',
      'name',
      'type',
      'leader',
      'members',
    ]);
    return JSON.parse(out) as ClusterQueue[];
  }

  /** The node leading the quorum queue `queue` now. */
  async leaderOf(queue: string): Promise<PrivateRabbitMQ> {
    const found = (await this.queues()).find((q) => q.name === queue);
    if (found === undefined || found.leader === '') throw new Error(`${queue} has no leader`);
    return this.node(found.leader);
  }

  /** Kills every node and removes the folders. */
  async stop(): Promise<void> {
    await Promise.all(this.nodes.map((node) => node.kill()));
    this.removeFolder();
  }

  /** Removes the cluster's folder, the nodes' folders in it. */
  removeFolder(): void {
    rmSync(this.root, { recursive: true, force: true, maxRetries: 3 });
  }
}

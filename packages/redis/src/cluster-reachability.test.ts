import { EventEmitter } from 'node:events';
import { describe, expect, it } from 'vitest';
import { FakeClock } from '@watchtower/core/testing';
import type { Cluster } from 'ioredis';
import { ClusterReachability, LOST_PROBE_INTERVAL_MS } from './cluster-reachability.js';

/** A reply error as ioredis makes them (`name` is what the transport reads). */
function replyError(message: string): Error {
  const error = new Error(message);
  error.name = 'ReplyError';
  return error;
}

/** A stand-in for ioredis `Cluster`: its events, and a `PERSIST` answered as the test says. */
class FakeCluster extends EventEmitter {
  probes = 0;
  answer: () => Promise<number> = () => Promise.resolve(0);

  persist(): Promise<number> {
    this.probes++;
    return this.answer();
  }
}

function watch(probeTimeoutMs = 1000) {
  const clock = new FakeClock();
  const cluster = new FakeCluster();
  const changes: string[] = [];
  const reachability = new ClusterReachability({
    cluster: cluster as unknown as Cluster,
    probeKey: '{app}:probe:reachable',
    clock,
    probeTimeoutMs,
    target: 'Redis Cluster (6 startup nodes)',
    lost: (error) => changes.push(`lost: ${error.code}`),
    restored: () => changes.push('restored'),
  });
  reachability.start();
  return { clock, cluster, changes, reachability };
}

/** Lets the probe's promise work run. */
async function settle(clock: FakeClock): Promise<void> {
  await clock.advanceAsync(0);
}

describe('ClusterReachability', () => {
  it('reports nothing when the slot answers after a node connection ended', async () => {
    const { clock, cluster, changes } = watch();
    cluster.emit('-node');
    await settle(clock);
    expect(cluster.probes).toBe(1);
    expect(changes).toEqual([]);
  });

  it('reports lost once when the slot does not answer, probes every interval, and reports restored on the first answer', async () => {
    const { clock, cluster, changes } = watch();
    cluster.answer = () => Promise.reject(replyError('CLUSTERDOWN The cluster is down'));
    cluster.emit('-node');
    cluster.emit('close');
    await settle(clock);
    expect(changes).toEqual(['lost: CONNECTION']);
    await clock.advanceAsync(LOST_PROBE_INTERVAL_MS * 3);
    expect(cluster.probes).toBeGreaterThanOrEqual(4);
    expect(changes).toEqual(['lost: CONNECTION']);
    cluster.answer = () => Promise.resolve(0);
    await clock.advanceAsync(LOST_PROBE_INTERVAL_MS);
    expect(changes).toEqual(['lost: CONNECTION', 'restored']);
    // Reachable again: no more probing until the next sign of trouble.
    const probes = cluster.probes;
    await clock.advanceAsync(LOST_PROBE_INTERVAL_MS * 4);
    expect(cluster.probes).toBe(probes);
  });

  it('reports lost at once, without waiting for a probe, when every node connection has ended', async () => {
    const { clock, cluster, changes } = watch();
    cluster.answer = () => new Promise<number>(() => {});
    cluster.emit('close');
    expect(changes).toEqual(['lost: CONNECTION']);
    cluster.answer = () => Promise.resolve(0);
    await clock.advanceAsync(LOST_PROBE_INTERVAL_MS);
    expect(changes).toEqual(['lost: CONNECTION', 'restored']);
  });

  it('counts a probe that takes longer than probeTimeoutMs as no answer', async () => {
    const { clock, cluster, changes } = watch(500);
    cluster.answer = () => new Promise<number>(() => {});
    cluster.emit('-node');
    await clock.advanceAsync(499);
    expect(changes).toEqual([]);
    await clock.advanceAsync(1);
    expect(changes).toEqual(['lost: CONNECTION']);
  });

  it('counts a refusal such as NOPERM as an answer: holding publishes would not make it pass', async () => {
    const { clock, cluster, changes } = watch();
    cluster.answer = () => Promise.reject(replyError('NOPERM this user has no permissions'));
    cluster.emit('-node');
    await settle(clock);
    expect(changes).toEqual([]);
  });

  it('probes once more after the one in flight when trouble is signalled meanwhile', async () => {
    const { clock, cluster } = watch();
    let answer: (() => void) | undefined;
    cluster.answer = () => new Promise<number>((resolve) => (answer = () => resolve(0)));
    cluster.emit('-node');
    cluster.emit('-node');
    cluster.emit('-node');
    expect(cluster.probes).toBe(1);
    answer?.();
    await settle(clock);
    expect(cluster.probes).toBe(2);
  });

  it('reports nothing and stops probing after stop()', async () => {
    const { clock, cluster, changes, reachability } = watch();
    cluster.answer = () => Promise.reject(new Error('Connection is closed.'));
    cluster.emit('-node');
    await settle(clock);
    expect(changes).toEqual(['lost: CONNECTION']);
    reachability.stop();
    cluster.answer = () => Promise.resolve(0);
    const probes = cluster.probes;
    cluster.emit('ready');
    await clock.advanceAsync(LOST_PROBE_INTERVAL_MS * 4);
    expect(cluster.probes).toBe(probes);
    expect(changes).toEqual(['lost: CONNECTION']);
    expect(clock.pendingTimers()).toBe(0);
  });
});

import { describeTransportConformance } from '@watchtower/conformance';
import { afterAll } from 'vitest';
import { InMemoryDeadLetterQueue } from '@watchtower/core';
import { WebSocketHub, WebSocketTransport } from '../src/index.js';
import { FAST_CLIENT } from './helpers.js';

/*
 * The contract suite with the client transport against a real hub. Each namespace gets a hub
 * of its own (so tests never see each other's events); the reconnect case closes every hub and
 * starts it again on the same port, and the malformed-bytes case has the hub send raw binary
 * frames to the matching subscriptions.
 */

const hubs = new Map<string, WebSocketHub>();
/** The dead-letter queue is in each client's memory: the clients of one namespace share one. */
const deadLetterQueues = new Map<string, InMemoryDeadLetterQueue>();

async function hubFor(namespace: string): Promise<WebSocketHub> {
  let hub = hubs.get(namespace);
  if (hub === undefined) {
    hub = new WebSocketHub({ port: 0, pingIntervalMs: 1000 });
    hubs.set(namespace, hub);
  }
  // start() is shared by concurrent callers.
  await hub.start();
  return hub;
}

function deadLetterQueueFor(namespace: string): InMemoryDeadLetterQueue {
  let queue = deadLetterQueues.get(namespace);
  if (queue === undefined) {
    queue = new InMemoryDeadLetterQueue();
    deadLetterQueues.set(namespace, queue);
  }
  return queue;
}

afterAll(async () => {
  await Promise.all([...hubs.values()].map((hub) => hub.close({ timeoutMs: 1000 })));
});

describeTransportConformance({
  name: 'websocket (client against the hub)',
  createTransport: async (namespace) => {
    const hub = await hubFor(namespace);
    return new WebSocketTransport({
      url: hub.url,
      deadLetterQueue: deadLetterQueueFor(namespace),
      ...FAST_CLIENT,
    });
  },
  publishRaw: async (namespace, type, bytes) => {
    (await hubFor(namespace)).sendRaw(type, bytes);
  },
  restartBroker: async () => {
    for (const [namespace, hub] of hubs) {
      const port = hub.port;
      await hub.close({ timeoutMs: 1000 });
      const again = new WebSocketHub({ port, pingIntervalMs: 1000 });
      hubs.set(namespace, again);
      await again.start();
    }
  },
  cleanup: async (namespace) => {
    await hubs.get(namespace)?.close({ timeoutMs: 1000 });
    hubs.delete(namespace);
    deadLetterQueues.delete(namespace);
  },
  timeoutMs: 5000,
});

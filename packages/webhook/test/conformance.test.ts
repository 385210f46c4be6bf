import { createServer } from 'node:net';
import { request } from 'undici';
import { MemoryBroker, MemoryTransport } from '@watchtower/core';
import { describeTransportConformance } from '@watchtower/conformance';
import { WebhookTransport, createWebhookSigner, generateWebhookSecret } from '../src/index.js';

/*
 * The contract suite with webhooks: each transport of a namespace listens on a port of its own
 * and delivers to the receivers of every transport of that namespace (its own included), as
 * services subscribed to each other's webhooks would. Dead letters of the receiving side go to
 * a memory DLQ shared by the namespace, as a broker's DLQ is shared by its clients.
 */

const secret = generateWebhookSecret();
const receivers = new Map<string, { url: string; transport: WebhookTransport }[]>();
/** The dead letters of a namespace's receivers, shared as a broker's DLQ would be. */
const dlqBrokers = new Map<string, MemoryBroker>();

function dlqBroker(namespace: string): MemoryBroker {
  let broker = dlqBrokers.get(namespace);
  if (broker === undefined) {
    broker = new MemoryBroker();
    dlqBrokers.set(namespace, broker);
  }
  return broker;
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.on('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      server.close(() => {
        if (address !== null && typeof address === 'object') resolve(address.port);
        else reject(new Error('no port'));
      });
    });
  });
}

describeTransportConformance(
  {
    name: 'webhook',
    createTransport: async (namespace) => {
      const port = await freePort();
      const url = `http://127.0.0.1:${port}/`;
      const group = receivers.get(namespace) ?? [];
      receivers.set(namespace, group);
      const transport = new WebhookTransport({
        allowPrivateAddresses: true,
        receiver: { port, secrets: secret },
        deadLetterTransport: new MemoryTransport({ broker: dlqBroker(namespace) }),
        deliveryRetry: { maxAttempts: 3, minDelayMs: 20, maxDelayMs: 100 },
        endpoints: [...group.map((r) => r.url), url].map((u) => ({ url: u, secret, id: u })),
      });
      for (const other of group) other.transport.client.addEndpoint({ url, secret, id: url });
      group.push({ url, transport });
      return transport;
    },
    publishRaw: async (namespace, _type, bytes) => {
      const signer = createWebhookSigner({ secret });
      for (const { url } of receivers.get(namespace) ?? []) {
        const id = `raw-${Math.random().toString(36).slice(2)}`;
        const headers = signer.sign(id, Math.floor(Date.now() / 1000), bytes);
        const res = await request(url, { method: 'POST', body: bytes, headers });
        await res.body.dump();
      }
    },
    cleanup: async (namespace) => {
      receivers.delete(namespace);
      dlqBrokers.delete(namespace);
    },
    timeoutMs: 5000,
  },
  {
    skip: {
      'dead-letters an event found where another type belongs as MISROUTED, and goes on':
        'a receiver routes each request by the type of the event it carries, so no event can arrive where another type belongs (publishRaw has no address of its own to put it at)',
    },
  },
);

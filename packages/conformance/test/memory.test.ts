import { MemoryBroker, MemoryTransport } from '@watchtower/core';
import { describeTransportConformance } from '../src/index.js';

const brokers = new Map<string, MemoryBroker>();

function brokerFor(namespace: string): MemoryBroker {
  let broker = brokers.get(namespace);
  if (broker === undefined) {
    broker = new MemoryBroker();
    brokers.set(namespace, broker);
  }
  return broker;
}

describeTransportConformance({
  name: 'memory',
  createTransport: (namespace) => new MemoryTransport({ broker: brokerFor(namespace) }),
  publishRaw: (namespace, type, bytes) =>
    new MemoryTransport({ broker: brokerFor(namespace) }).publishRaw(type, bytes),
  cleanup: (namespace) => {
    brokers.delete(namespace);
    return Promise.resolve();
  },
  timeoutMs: 5000,
});

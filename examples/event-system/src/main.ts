/**
 * The event-system example on two in-memory brokers (no broker needed): orders on one,
 * notifications on the other, two regions sharing both. `brokers.ts` runs the same shop with
 * orders on NATS JetStream and notifications on Redis.
 */
import { MemoryBroker, MemoryTransport } from '@watchtower/core';
import { runShop } from './shop.js';

const orders = new MemoryBroker();
const notifications = new MemoryBroker();

console.log('event system on two memory brokers (orders, notifications), regions eu.de and us.ca');
await runShop(() => ({
  orders: new MemoryTransport({ broker: orders }),
  notifications: new MemoryTransport({ broker: notifications }),
}));

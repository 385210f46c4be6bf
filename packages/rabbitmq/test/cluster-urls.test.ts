import { expect, it } from 'vitest';
import { freePort, waitFor } from '@watchtower/core/testing';
import { RabbitMQSubscriber } from '../src/index.js';
import { AMQP_URL, TcpProxy, perTest, rabbitmqctl } from './helpers.js';

/*
 * Several URLs, as for the nodes of a cluster, against the shared broker: each URL is a TCP
 * proxy of its own in front of it, so that one "node" can be made unreachable. The cluster
 * itself is in cluster-conformance.faults.ts and cluster-failover.faults.ts.
 */

const { newExchange, closers } = perTest('urls');
const silent = { warn: (): void => undefined, error: (): void => undefined };

async function proxies(count: number): Promise<TcpProxy[]> {
  const started = await Promise.all(Array.from({ length: count }, () => TcpProxy.start(AMQP_URL)));
  closers.push(async () => {
    await Promise.all(started.map((proxy) => proxy.stop()));
  });
  return started;
}

it('connects through the next URL when the first refuses connections', async () => {
  const dead = `amqp://guest:guest@127.0.0.1:${await freePort()}`;
  const [second] = (await proxies(1)) as [TcpProxy];
  const bus = new RabbitMQSubscriber({
    url: [dead, second.url(AMQP_URL)],
    exchange: newExchange(),
    logger: silent,
  });
  closers.unshift(() => bus.close({ timeoutMs: 2000 }));
  await bus.connect();
  expect(second.connections).toBe(1);
  await bus.publish('urls.first', { n: 1 });
});

it('fails over to another URL when the connection is lost and its node stays unreachable', async () => {
  const [first, second] = (await proxies(2)) as [TcpProxy, TcpProxy];
  const bus = new RabbitMQSubscriber({
    url: [first.url(AMQP_URL), second.url(AMQP_URL)],
    exchange: newExchange(),
    reconnectBaseMs: 20,
    reconnectMaxMs: 200,
    logger: silent,
  });
  closers.unshift(() => bus.close({ timeoutMs: 2000 }));
  const seen: number[] = [];
  await bus.subscribe(
    'urls.failover',
    (event) => {
      seen.push((event.payload as { n: number }).n);
    },
    { group: 'failover' },
  );
  await bus.publish('urls.failover', { n: 1 });
  await waitFor(() => seen.includes(1), { message: 'the event before the failover' });
  expect(first.connections).toBe(1);

  first.refusing = true;
  first.cut();
  await bus.publish('urls.failover', { n: 2 });
  await waitFor(() => seen.includes(2), { message: 'the event after the failover' });
  expect(second.connections).toBe(1);
  expect(first.connections).toBe(0);
});

it('declares the dead-letter queue as a quorum queue with queueType quorum', async () => {
  const exchange = newExchange();
  const bus = new RabbitMQSubscriber({
    url: AMQP_URL,
    exchange,
    queueType: 'quorum',
    logger: silent,
  });
  closers.unshift(() => bus.close({ timeoutMs: 2000 }));
  await bus.connect();
  const listed = await rabbitmqctl(['list_queues', '-q', '--no-table-headers', 'name', 'type']);
  const dlq = listed.split('\n').find((line) => line.startsWith(`${exchange}.dlq\t`));
  expect(dlq?.split('\t')[1]?.trim()).toBe('quorum');
});

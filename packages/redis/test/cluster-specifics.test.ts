/**
 * What only a Redis Cluster of several masters shows, on a private one of 3 masters and
 * 3 replicas: wildcard discovery scans every master (a prefix's streams may live on any of
 * them, and move); every key of a prefix (streams, DLQ, registry, alive key) follows the
 * documented hash-tag rule, while a custom dead-letter stream may live anywhere; and a slot
 * moved by `redis-cli --cluster reshard` while events are published and consumed (MOVED and
 * ASK redirections) loses none of them.
 */
import { describe, expect, it } from 'vitest';
import { createEvent, type DeadLetter, type Event } from '@watchtower/core';
import { RedisSubscriber } from '../src/index.js';
import { FAST, ackAll, eventually } from './helpers.js';
import { clusterTests } from './cluster-tests.js';
import { hashTagInSlots, keySlot, type ClusterNodeEntry } from './redis-cluster.js';

const { cluster, transport, closeAfterTest } = clusterTests();

/** A hash tag whose slot is served by `master` (within its first slot range). */
function tagOn(master: ClusterNodeEntry, label: string, first = 0, span?: number): string {
  const [from, to] = master.slots[0] as readonly [number, number];
  return hashTagInSlots(label, from + first, span === undefined ? to : from + first + span - 1);
}

/** The keys `master` itself holds that start with `prefix`. */
async function keysOn(master: ClusterNodeEntry, prefix: string): Promise<string[]> {
  const all = (await cluster().node(master.port).command('KEYS', '*')) as string[];
  return all.filter((key) => key.startsWith(prefix)).sort();
}

describe('RedisTransport on a Redis Cluster of 3 masters and 3 replicas', () => {
  it('finds a new stream by SCAN alone (announcements off) whichever master holds it', async () => {
    const masters = await cluster().masters();
    expect(masters).toHaveLength(3);
    for (const master of masters) {
      const prefix = tagOn(master, 'discovery');
      const sub = transport(prefix, { announceStreams: false });
      const received = ackAll(await sub.subscribe('news.*'));
      const pub = transport(prefix, { announceStreams: false });
      await pub.publish(createEvent('news.posted', { master: master.port }));
      await eventually(() => expect(received.deliveries).toHaveLength(1));
      // The stream is on that master: discovery did not only scan the first one.
      expect(await keysOn(master, prefix)).toContain(`${prefix}:news.posted`);
    }
  });

  it('keeps streams, the DLQ, the registry and the alive key of a prefix in the slot of its hash tag', async () => {
    const [master] = await cluster().masters();
    const prefix = tagOn(master as ClusterNodeEntry, 'keys');
    const t = transport(prefix);
    const received = ackAll(await t.subscribe('shop.>'));
    await t.publish(createEvent('shop.order.created', { n: 1 }));
    await t.publish(createEvent('shop.cart.emptied', { n: 2 }));
    await eventually(() => expect(received.deliveries).toHaveLength(2));
    const event = createEvent('shop.order.created', { n: 3 });
    await t.publishToDlq(event, {
      message: 'gave up',
      code: 'HANDLER_FAILED',
      attempts: 1,
      failedAt: new Date().toISOString(),
      originalType: event.type,
    });
    const keys = await keysOn(master as ClusterNodeEntry, prefix);
    expect(keys).toEqual(
      expect.arrayContaining([
        `${prefix}:dlq`,
        `${prefix}:registry:streams`,
        `${prefix}:shop.cart.emptied`,
        `${prefix}:shop.order.created`,
      ]),
    );
    expect(keys.some((key) => key.startsWith(`${prefix}:alive:`))).toBe(true);
    const slots = new Set(
      await Promise.all(
        keys.map(async (key) =>
          Number(await cluster().node(master!.port).command('CLUSTER', 'KEYSLOT', key)),
        ),
      ),
    );
    expect([...slots]).toEqual([keySlot(prefix)]);
  });

  it('writes and reads a custom dead-letter stream that lives on another master', async () => {
    const [first, second] = await cluster().masters();
    const prefix = tagOn(first as ClusterNodeEntry, 'dlq');
    const dlqStream = `${tagOn(second as ClusterNodeEntry, 'dead')}:letters`;
    const t = transport(prefix, { dlqStream });
    const event = createEvent('pay.made', { amount: 3 });
    await t.publishToDlq(event, {
      message: 'gave up',
      code: 'HANDLER_FAILED',
      attempts: 2,
      failedAt: new Date().toISOString(),
      originalType: event.type,
    });
    expect(await keysOn(second as ClusterNodeEntry, dlqStream)).toEqual([dlqStream]);
    const letters: DeadLetter[] = [];
    const handle = await t.consumeDlq((letter) => {
      letters.push(letter);
    });
    await eventually(() => expect(letters.map((l) => l.event?.id)).toEqual([event.id]));
    await handle.unsubscribe();
  });

  it('loses no event while reshard moves the slot of its streams to another master, and then finds new streams there', async () => {
    const [from, to] = await cluster().masters();
    // A tag in the first slots of `from`: reshard moves a master's slots from its first one.
    const prefix = tagOn(from as ClusterNodeEntry, 'reshard', 0, 5);
    const slot = keySlot(prefix);
    const config = {
      cluster: { nodes: cluster().startupNodes },
      prefix,
      ...FAST,
      announceStreams: false,
    };
    const silent = { warn: () => undefined, error: () => undefined };
    const consumer = new RedisSubscriber({ ...config, logger: silent });
    closeAfterTest(() => consumer.close({ timeoutMs: 2000 }));
    const handled = new Set<number>();
    await consumer.subscribe(
      'order.*',
      (e: Event) => {
        handled.add((e.payload as { n: number }).n);
      },
      { group: 'billing' },
    );
    const publisher = new RedisSubscriber({ ...config, logger: silent });
    closeAfterTest(() => publisher.close({ timeoutMs: 2000 }));
    // Other keys of the slot (strings, not streams: discovery skips them), so that moving it
    // takes long enough for publishes to meet it half moved (ASK) as well as moved (MOVED).
    const owner = cluster().node(from!.port);
    for (let batch = 0; batch < 20; batch++) {
      const args = Array.from({ length: 500 }, (_, i) => [
        `${prefix}:other:${batch * 500 + i}`,
        'x'.repeat(100),
      ]).flat();
      await owner.command('MSET', ...args);
    }

    // Published until the reshard has finished, and 500 more after it.
    const confirmed = new Set<number>();
    const rejected: unknown[] = [];
    const inFlight = new Set<Promise<void>>();
    let resharded = false;
    let resharding: Promise<string> | undefined;
    let events = 0;
    let duringReshard = 0;
    let last = Number.POSITIVE_INFINITY;
    for (let n = 0; n < last; n++, events++) {
      if (resharding !== undefined && !resharded) duringReshard++;
      const publish = publisher.publish('order.created', { n }).then(
        () => void confirmed.add(n),
        (error: unknown) => void rejected.push(error),
      );
      const tracked = publish.finally(() => inFlight.delete(tracked));
      inFlight.add(tracked);
      if (inFlight.size >= 50) await Promise.race(inFlight);
      if (n === 500) {
        resharding = cluster()
          .cli([
            '--cluster',
            'reshard',
            `127.0.0.1:${from!.port}`,
            '--cluster-from',
            from!.id,
            '--cluster-to',
            to!.id,
            '--cluster-slots',
            '50',
            '--cluster-yes',
          ])
          .finally(() => {
            resharded = true;
          });
      }
      if (resharded && last === Number.POSITIVE_INFINITY) last = n + 500;
    }
    await Promise.all(inFlight);
    await resharding;
    console.log(
      `reshard of 50 slots (10 000 other keys in the stream's slot): ${events} published, ` +
        `${duringReshard} while it ran, ${confirmed.size} confirmed`,
    );
    // The publishing spanned the move.
    expect(duringReshard).toBeGreaterThan(0);
    expect(rejected).toEqual([]);
    expect(confirmed.size).toBe(events);
    expect((await cluster().masterOf(slot))?.id).toBe(to!.id);
    await eventually(
      () => expect([...confirmed].filter((n) => !handled.has(n))).toEqual([]),
      20_000,
    );

    // A type first published after the move is found by SCAN on the master now holding it.
    await publisher.publish('order.refunded', { n: events });
    await eventually(() => expect(handled.has(events)).toBe(true));
    expect(await keysOn(to as ClusterNodeEntry, prefix)).toContain(`${prefix}:order.refunded`);
  }, 60_000);
});

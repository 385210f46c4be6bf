import { EventEmitter } from 'node:events';
import type { ConfirmChannel } from 'amqplib';
import { describe, expect, it } from 'vitest';
import { FakeClock, settlement } from '@watchtower/core/testing';
import {
  FIRST_REPLACEMENT_FLOOR_MS,
  NACKS_BEFORE_REPLACEMENT,
  Publisher,
  REPLACEMENT_FLOOR_MS,
  RETIRE_TIMEOUT_MS,
  type Outgoing,
} from './publisher.js';
import { WriteCork } from './write-cork.js';

/** A confirm channel that records what was published to it; the test sends its confirms. */
class FakeChannel extends EventEmitter {
  readonly sent: string[] = [];
  closed = false;
  publish(_exchange: string, routingKey: string): boolean {
    this.sent.push(routingKey);
    return true;
  }
  close(): Promise<void> {
    this.closed = true;
    this.emit('close');
    return Promise.resolve();
  }
  ack(tag: number, multiple = false): void {
    this.emit('ack', { deliveryTag: tag, multiple });
  }
  nack(tag: number, multiple = false): void {
    this.emit('nack', { deliveryTag: tag, multiple });
  }
}

const NO_CORK = new WriteCork(undefined);

function message(routingKey: string): Outgoing {
  return {
    exchange: 'x',
    routingKey,
    content: Buffer.from('{}'),
    options: { messageId: routingKey },
    what: `publish ${routingKey}`,
  };
}

/** A publisher on a fake clock whose replacement requests attach a fresh channel at once. */
function setup(): {
  publisher: Publisher;
  clock: FakeClock;
  channels: FakeChannel[];
  replacementsAsked: () => number;
  /** When each replacement was asked for (clock ms). */
  askedAt: number[];
} {
  const clock = new FakeClock(1_000_000);
  const channels: FakeChannel[] = [];
  const askedAt: number[] = [];
  let asked = 0;
  const attach = (): void => {
    const channel = new FakeChannel();
    channels.push(channel);
    publisher.attach(channel as unknown as ConfirmChannel, NO_CORK);
  };
  const publisher: Publisher = new Publisher({
    window: 100,
    clock,
    replaceChannel: () => {
      asked++;
      askedAt.push(clock.now());
      attach();
    },
  });
  attach();
  return { publisher, clock, channels, replacementsAsked: () => asked, askedAt };
}

/** Publishes `keys` and returns their settlements (observed, so none goes unhandled). */
function publishAll(publisher: Publisher, keys: readonly string[]) {
  return keys.map((key) => settlement(publisher.publish(message(key))));
}

describe('Publisher: replacing a channel that keeps nacking', () => {
  it(`asks for a new channel after ${NACKS_BEFORE_REPLACEMENT} nacks in a row and sends what follows on it`, async () => {
    const { publisher, channels, replacementsAsked } = setup();
    const first = channels[0] as FakeChannel;
    const nacked = publishAll(publisher, ['a', 'b', 'c', 'd']);
    for (let tag = 1; tag < NACKS_BEFORE_REPLACEMENT; tag++) first.nack(tag);
    expect(replacementsAsked()).toBe(0);
    first.nack(NACKS_BEFORE_REPLACEMENT);
    expect(replacementsAsked()).toBe(1);
    for (const outcome of nacked) {
      expect(await outcome).toMatchObject({ code: 'TRANSPORT', retryable: true });
    }
    const second = channels[1] as FakeChannel;
    const next = publisher.publish(message('e'));
    expect(second.sent).toEqual(['e']);
    second.ack(1);
    await expect(next).resolves.toBeUndefined();
    // Nothing was left on the first: it is closed.
    expect(first.closed).toBe(true);
    expect(publisher.replacements).toBe(1);
  });

  it('keeps a channel whose nacks are broken by an ack', () => {
    const { publisher, channels, replacementsAsked } = setup();
    const channel = channels[0] as FakeChannel;
    const outcomes = publishAll(
      publisher,
      Array.from({ length: 20 }, (_, i) => `k${String(i)}`),
    );
    for (let tag = 1; tag <= 20; tag++) {
      if (tag % NACKS_BEFORE_REPLACEMENT === 0) channel.ack(tag);
      else channel.nack(tag);
    }
    expect(replacementsAsked()).toBe(0);
    expect(outcomes).toHaveLength(20);
  });

  it(`replaces the channel at most once per ${REPLACEMENT_FLOOR_MS} ms while every publish is nacked (a full queue), after first floors of ${FIRST_REPLACEMENT_FLOOR_MS} ms doubling`, () => {
    const { publisher, clock, channels, askedAt } = setup();
    const seconds = 10;
    // 100 publishes a second for 10 s, every one nacked by whichever channel it went to.
    for (let ms = 0; ms < seconds * 1000; ms += 10) {
      void publishAll(publisher, [`at-${String(ms)}`]);
      const channel = channels.at(-1) as FakeChannel;
      channel.nack(channel.sent.length);
      clock.advance(10);
    }
    const gaps = askedAt.slice(1).map((at, i) => at - (askedAt[i] as number));
    expect(gaps.slice(0, 2)).toEqual([FIRST_REPLACEMENT_FLOOR_MS, 2 * FIRST_REPLACEMENT_FLOOR_MS]);
    expect(gaps.slice(2).every((gap) => gap >= REPLACEMENT_FLOOR_MS)).toBe(true);
    expect(askedAt.length).toBeLessThanOrEqual(seconds + 3);
    expect(publisher.outstanding).toBe(0);
  });

  it(`goes back to the first floor of ${FIRST_REPLACEMENT_FLOOR_MS} ms once a channel acks`, () => {
    const { publisher, clock, channels, askedAt } = setup();
    const nackAll = (): void => {
      const channel = channels.at(-1) as FakeChannel;
      void publishAll(publisher, ['a', 'b', 'c', 'd']);
      channel.nack(channel.sent.length, true);
    };
    for (let i = 0; i < 3; i++) {
      clock.advance(i === 0 ? 0 : REPLACEMENT_FLOOR_MS);
      nackAll();
    }
    expect(askedAt).toHaveLength(3);
    // The floor is a second now: not replaced 250 ms later while nacks go on ...
    clock.advance(FIRST_REPLACEMENT_FLOOR_MS);
    nackAll();
    expect(askedAt).toHaveLength(3);
    // ... but after an ack, nacks in a row again are stuck anew.
    const channel = channels.at(-1) as FakeChannel;
    void publishAll(publisher, ['ok']);
    channel.ack(channel.sent.length);
    nackAll();
    expect(askedAt).toHaveLength(4);
  });

  it('lets a replaced channel confirm what it was sent (its nacks reject retryably), then closes it', async () => {
    const { publisher, channels } = setup();
    const first = channels[0] as FakeChannel;
    const outcomes = publishAll(publisher, ['a', 'b', 'c', 'd', 'e', 'f']);
    for (let tag = 1; tag <= NACKS_BEFORE_REPLACEMENT; tag++) first.nack(tag);
    // Replaced with 'e' and 'f' still unconfirmed on the first channel.
    expect(channels).toHaveLength(2);
    expect(first.closed).toBe(false);
    expect(publisher.outstanding).toBe(2);
    first.ack(5);
    first.nack(6);
    expect(first.closed).toBe(true);
    expect(await outcomes[4]).toBe('resolved');
    expect(await outcomes[5]).toMatchObject({ code: 'TRANSPORT', retryable: true });
    expect((channels[1] as FakeChannel).sent).toEqual([]);
    expect(publisher.outstanding).toBe(0);
  });

  it(`sends again on the new channel what the replaced one has not confirmed after ${RETIRE_TIMEOUT_MS} ms, and closes it`, async () => {
    const { publisher, clock, channels } = setup();
    const first = channels[0] as FakeChannel;
    const outcomes = publishAll(publisher, ['a', 'b', 'c', 'd', 'e']);
    for (let tag = 1; tag <= NACKS_BEFORE_REPLACEMENT; tag++) first.nack(tag);
    const second = channels[1] as FakeChannel;
    clock.advance(RETIRE_TIMEOUT_MS - 1);
    expect(first.closed).toBe(false);
    clock.advance(1);
    expect(first.closed).toBe(true);
    expect(second.sent).toEqual(['e']);
    // A late confirm on the closed channel changes nothing; the new channel's ack settles it.
    first.nack(5);
    second.ack(1);
    expect(await outcomes[4]).toBe('resolved');
    expect(clock.pendingTimers()).toBe(0);
  });

  it('sends again, oldest first, what both the replaced and the current channel had not confirmed when the connection goes', () => {
    const { publisher, channels } = setup();
    const first = channels[0] as FakeChannel;
    void publishAll(publisher, ['a', 'b', 'c', 'd', 'old']);
    for (let tag = 1; tag <= NACKS_BEFORE_REPLACEMENT; tag++) first.nack(tag);
    void publishAll(publisher, ['new']);
    publisher.detach();
    const next = new FakeChannel();
    publisher.attach(next as unknown as ConfirmChannel, NO_CORK);
    expect(next.sent).toEqual(['old', 'new']);
    // A channel attached after a lost connection is no replacement.
    expect(publisher.replacements).toBe(1);
  });
});

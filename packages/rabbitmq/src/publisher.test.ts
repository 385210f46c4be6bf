import { EventEmitter } from 'node:events';
import type { ConfirmChannel } from 'amqplib';
import { describe, expect, it } from 'vitest';
import { ErrorCode, WatchtowerError } from '@watchtower/core';
import { FakeClock, settlement } from '@watchtower/core/testing';
import {
  FIRST_REPLACEMENT_FLOOR_MS,
  NACKS_BEFORE_REPLACEMENT,
  NACK_RIDE_OUT_MS,
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

/**
 * A publisher on a fake clock whose replacement requests attach a fresh channel at once (or
 * a microtask later, as the transport's open, with `attachLater`); nacks reject at once (as
 * with a `reject-publish` queue) unless `nackRideOutMs` says.
 */
function setup(
  nackRideOutMs = 0,
  attachLater = false,
): {
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
    nackRideOutMs,
    replaceChannel: () => {
      asked++;
      askedAt.push(clock.now());
      if (attachLater) queueMicrotask(attach);
      else attach();
    },
  });
  attach();
  return { publisher, clock, channels, replacementsAsked: () => asked, askedAt };
}

/** Publishes `keys` and returns their settlements (observed, so none goes unhandled). */
function publishAll(publisher: Publisher, keys: readonly string[]) {
  return keys.map((key) => settlement(publisher.publish(message(key))));
}

describe('Publisher: replacing a channel that keeps nacking, nacks rejected at once (reject-publish)', () => {
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

describe(`Publisher: riding out the nacks of a stuck channel for up to ${NACK_RIDE_OUT_MS} ms (the default)`, () => {
  it('rejects the nacks before the channel is found stuck, and sends the one that finds it stuck on the replacement', async () => {
    const { publisher, channels } = setup(NACK_RIDE_OUT_MS);
    const first = channels[0] as FakeChannel;
    const outcomes = publishAll(publisher, ['a', 'b', 'c', 'd']);
    for (let tag = 1; tag <= NACKS_BEFORE_REPLACEMENT; tag++) first.nack(tag);
    for (const outcome of outcomes.slice(0, NACKS_BEFORE_REPLACEMENT - 1)) {
      expect(await outcome).toMatchObject({ code: 'TRANSPORT', retryable: true });
    }
    const second = channels[1] as FakeChannel;
    expect(second.sent).toEqual(['d']);
    second.ack(1);
    expect(await outcomes[3]).toBe('resolved');
    expect(publisher.outstanding).toBe(0);
  });

  it('holds what a stuck replacement nacks too, asks for the next channel when the floor ends, and confirms every publish there', async () => {
    const { publisher, clock, channels, askedAt } = setup(NACK_RIDE_OUT_MS);
    const keys = Array.from({ length: 20 }, (_, i) => `k${String(i)}`);
    const outcomes = publishAll(publisher, keys);
    (channels[0] as FakeChannel).nack(20, true);
    const second = channels[1] as FakeChannel;
    expect(second.sent).toEqual(keys);
    second.nack(20, true);
    // Held for the next channel: nothing is sent back to the one that nacked it.
    expect(channels).toHaveLength(2);
    expect(publisher.outstanding).toBe(20);
    clock.advance(FIRST_REPLACEMENT_FLOOR_MS - 1);
    expect(channels).toHaveLength(2);
    clock.advance(1);
    const third = channels[2] as FakeChannel;
    expect(askedAt[1]! - askedAt[0]!).toBe(FIRST_REPLACEMENT_FLOOR_MS);
    expect(third.sent).toEqual(keys);
    third.ack(20, true);
    for (const outcome of outcomes) expect(await outcome).toBe('resolved');
    expect(publisher.outstanding).toBe(0);
    expect(clock.pendingTimers()).toBe(0);
  });

  it('sends again on the current channel what a replaced channel nacks during the ride-out', async () => {
    const { publisher, channels } = setup(NACK_RIDE_OUT_MS);
    const first = channels[0] as FakeChannel;
    const outcomes = publishAll(publisher, ['a', 'b', 'c', 'd', 'e', 'f']);
    first.nack(NACKS_BEFORE_REPLACEMENT, true);
    const second = channels[1] as FakeChannel;
    expect(second.sent).toEqual(['a', 'b', 'c', 'd']);
    first.nack(6, true);
    expect(first.closed).toBe(true);
    expect(second.sent).toEqual(['a', 'b', 'c', 'd', 'e', 'f']);
    second.ack(6, true);
    for (const outcome of outcomes) expect(await outcome).toBe('resolved');
  });

  it(`rejects what it holds once ${NACK_RIDE_OUT_MS} ms pass without an ack, then rejects nacks at once until a channel acks`, async () => {
    const { publisher, clock, channels } = setup(NACK_RIDE_OUT_MS);
    const held = publishAll(publisher, ['a', 'b', 'c', 'd']);
    // Every channel nacks whatever it is sent, as a queue without a leader would.
    const nackWhatIsSent = (): void => {
      const channel = channels.at(-1) as FakeChannel;
      if (channel.sent.length > 0) channel.nack(channel.sent.length, true);
    };
    nackWhatIsSent();
    for (let ms = 0; ms < NACK_RIDE_OUT_MS; ms += 50) {
      nackWhatIsSent();
      clock.advance(50);
    }
    for (const outcome of held) {
      expect(await outcome).toMatchObject({
        code: 'TRANSPORT',
        retryable: true,
        message: expect.stringContaining(
          `refused the message (nack), on every publish channel it was sent on for ${NACK_RIDE_OUT_MS} ms`,
        ) as unknown,
      });
    }
    expect(publisher.outstanding).toBe(0);
    // Spent: a stuck channel's nacks reject at once now.
    const later = publishAll(publisher, ['e', 'f', 'g', 'h', 'i']);
    nackWhatIsSent();
    for (const outcome of later) {
      expect(await outcome).toMatchObject({ code: 'TRANSPORT', retryable: true });
    }
    // An ack ends that: the next stuck channel is ridden out again.
    void publishAll(publisher, ['ok']);
    const channel = channels.at(-1) as FakeChannel;
    channel.ack(channel.sent.length);
    const again = publishAll(publisher, ['j', 'k', 'l', 'm']);
    clock.advance(REPLACEMENT_FLOOR_MS);
    nackWhatIsSent();
    expect(publisher.outstanding).toBe(4);
    (channels.at(-1) as FakeChannel).ack((channels.at(-1) as FakeChannel).sent.length, true);
    for (const outcome of again) expect(await outcome).toBe('resolved');
  });

  it('rides out a lone publish nacked by each channel opened, one after another, until one acks it', async () => {
    const { publisher, clock, channels, replacementsAsked } = setup(NACK_RIDE_OUT_MS, true);
    // The bus's first three attempts are rejected; the fourth finds the channel stuck.
    for (let attempt = 1; attempt < NACKS_BEFORE_REPLACEMENT; attempt++) {
      const rejected = settlement(publisher.publish(message('lone')));
      (channels[0] as FakeChannel).nack(attempt);
      expect(await rejected).toMatchObject({ code: 'TRANSPORT' });
    }
    const outcome = settlement(publisher.publish(message('lone')));
    (channels[0] as FakeChannel).nack(NACKS_BEFORE_REPLACEMENT);
    // Five more channels nack it once each; the replacement after each comes at the floor.
    for (let i = 1; i <= 5; i++) {
      await Promise.resolve();
      const channel = channels[i] as FakeChannel;
      expect(channel.sent).toEqual(['lone']);
      channel.nack(1);
      clock.advance(REPLACEMENT_FLOOR_MS);
    }
    await Promise.resolve();
    expect(replacementsAsked()).toBe(6);
    (channels[6] as FakeChannel).ack(1);
    expect(await outcome).toBe('resolved');
    expect(clock.pendingTimers()).toBe(0);
  });

  it('rejects a held publish whose signal aborts, and never sends it again', async () => {
    const { publisher, channels } = setup(NACK_RIDE_OUT_MS);
    const controller = new AbortController();
    const outcomes = publishAll(publisher, ['a', 'b', 'c']);
    const aborted = settlement(publisher.publish({ ...message('d'), signal: controller.signal }));
    (channels[0] as FakeChannel).nack(4, true);
    const second = channels[1] as FakeChannel;
    second.nack(4, true);
    controller.abort();
    expect(await aborted).toMatchObject({ code: 'ABORTED' });
    expect(publisher.outstanding).toBe(3);
    publisher.detach();
    const next = new FakeChannel();
    publisher.attach(next as unknown as ConfirmChannel, NO_CORK);
    expect(next.sent).toEqual(['a', 'b', 'c']);
    next.ack(3, true);
    for (const outcome of outcomes) expect(await outcome).toBe('resolved');
  });

  it('rejects what it holds with the error of failAll, and leaves no timer', async () => {
    const { publisher, clock, channels } = setup(NACK_RIDE_OUT_MS);
    const outcomes = publishAll(publisher, ['a', 'b', 'c', 'd']);
    (channels[0] as FakeChannel).nack(4, true);
    (channels[1] as FakeChannel).nack(4, true);
    expect(publisher.outstanding).toBe(4);
    publisher.failAll(new WatchtowerError(ErrorCode.CLOSED, 'closed'));
    for (const outcome of outcomes) expect(await outcome).toMatchObject({ code: 'CLOSED' });
    expect(clock.pendingTimers()).toBe(0);
  });
});

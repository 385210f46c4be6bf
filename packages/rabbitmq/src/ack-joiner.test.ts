import type { Channel, Message } from 'amqplib';
import { describe, expect, it } from 'vitest';
import { AckJoiner } from './ack-joiner.js';

/**
 * A channel that settles frames as RabbitMQ does: an ack or nack of a tag that is not
 * outstanding is a channel error (PRECONDITION_FAILED, "unknown delivery tag"), and a
 * `multiple` ack settles every outstanding tag up to its own.
 */
class BrokerChannel {
  readonly outstanding = new Set<number>();
  readonly frames: string[] = [];
  closed = false;

  deliver(tag: number): Message {
    this.outstanding.add(tag);
    return { fields: { deliveryTag: tag } } as unknown as Message;
  }

  ack(message: Message, multiple = false): void {
    const tag = this.#known(message, 'ack');
    this.frames.push(multiple ? `ack<=${tag}` : `ack ${tag}`);
    if (!multiple) {
      this.outstanding.delete(tag);
      return;
    }
    for (const outstanding of [...this.outstanding]) {
      if (outstanding <= tag) this.outstanding.delete(outstanding);
    }
  }

  nack(message: Message, multiple: boolean, requeue: boolean): void {
    expect(multiple).toBe(false);
    const tag = this.#known(message, 'nack');
    this.frames.push(`nack ${tag}${requeue ? ' requeue' : ''}`);
    this.outstanding.delete(tag);
  }

  #known(message: Message, what: string): number {
    if (this.closed) throw new Error('Channel closed');
    const tag = message.fields.deliveryTag;
    if (!this.outstanding.has(tag)) throw new Error(`${what} of unknown delivery tag ${tag}`);
    return tag;
  }
}

function setup(): { broker: BrokerChannel; acks: AckJoiner; held: { count: number } } {
  const broker = new BrokerChannel();
  const held = { count: 0 };
  const acks = new AckJoiner(broker as unknown as Channel, () => held.count++);
  return { broker, acks, held };
}

/** Delivers `tags` through `acks` and gives their messages by tag. */
function deliver(broker: BrokerChannel, acks: AckJoiner, tags: number[]): Map<number, Message> {
  const messages = new Map<number, Message>();
  for (const tag of tags) {
    const message = broker.deliver(tag);
    acks.delivered(message);
    messages.set(tag, message);
  }
  return messages;
}

const endOfTurn = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

describe('AckJoiner', () => {
  it('sends the acks of one turn, made in delivery order, as one multiple ack of the last', async () => {
    const { broker, acks, held } = setup();
    const messages = deliver(broker, acks, [1, 2, 3, 4, 5]);
    for (const message of messages.values()) acks.ack(message);
    expect(broker.frames).toEqual([]);
    await endOfTurn();
    expect(broker.frames).toEqual(['ack<=5']);
    expect(broker.outstanding.size).toBe(0);
    expect(held.count).toBe(1);
  });

  it('sends an ack out of delivery order at once and on its own, and never folds an unsettled delivery into a multiple ack', async () => {
    const { broker, acks } = setup();
    const m = deliver(broker, acks, [1, 2, 3]);
    acks.ack(m.get(1) as Message);
    acks.ack(m.get(3) as Message);
    expect(broker.frames).toEqual(['ack 3']);
    await endOfTurn();
    expect(broker.frames).toEqual(['ack 3', 'ack<=1']);
    expect([...broker.outstanding]).toEqual([2]);
    acks.ack(m.get(2) as Message);
    await endOfTurn();
    expect(broker.frames).toEqual(['ack 3', 'ack<=1', 'ack<=2']);
    expect(broker.outstanding.size).toBe(0);
  });

  it('joins acks past a delivery settled out of order once the deliveries before it are settled', async () => {
    const { broker, acks } = setup();
    const m = deliver(broker, acks, [1, 2, 3, 4]);
    acks.ack(m.get(2) as Message);
    acks.ack(m.get(1) as Message);
    acks.ack(m.get(3) as Message);
    acks.ack(m.get(4) as Message);
    await endOfTurn();
    expect(broker.frames).toEqual(['ack 2', 'ack<=4']);
    expect(broker.outstanding.size).toBe(0);
  });

  it('sends a nack at once, after the joined ack of the deliveries before it', async () => {
    const { broker, acks } = setup();
    const m = deliver(broker, acks, [1, 2, 3]);
    acks.ack(m.get(1) as Message);
    acks.nack(m.get(2) as Message, true);
    expect(broker.frames).toEqual(['ack<=1', 'nack 2 requeue']);
    acks.ack(m.get(3) as Message);
    await endOfTurn();
    expect(broker.frames).toEqual(['ack<=1', 'nack 2 requeue', 'ack<=3']);
    expect(broker.outstanding.size).toBe(0);
  });

  it('sends the joined ack at once on flush(), and only once', async () => {
    const { broker, acks } = setup();
    const m = deliver(broker, acks, [1, 2]);
    acks.ack(m.get(1) as Message);
    acks.ack(m.get(2) as Message);
    acks.flush();
    expect(broker.frames).toEqual(['ack<=2']);
    await endOfTurn();
    acks.flush();
    expect(broker.frames).toEqual(['ack<=2']);
  });

  it('drops the joined ack quietly when the channel closed before the turn ended', async () => {
    const { broker, acks } = setup();
    const m = deliver(broker, acks, [1]);
    acks.ack(m.get(1) as Message);
    broker.closed = true;
    await endOfTurn();
    expect(broker.frames).toEqual([]);
  });

  it('settles 20 000 deliveries acked and nacked in shuffled order, turn by turn, with no unknown tag and none left', async () => {
    const { broker, acks } = setup();
    let seed = 7;
    const random = (): number => {
      seed = (seed * 1103515245 + 12345) % 2 ** 31;
      return seed / 2 ** 31;
    };
    let nextTag = 1;
    const inHand: Message[] = [];
    let settled = 0;
    while (settled < 20_000) {
      // A read of up to 64 deliveries, then handlers finishing in a shuffled order.
      const room = 64 - inHand.length;
      const count = Math.min(room, Math.floor(random() * 16) + 1, 20_000 - settled - inHand.length);
      for (let i = 0; i < count; i++) {
        const message = broker.deliver(nextTag++);
        acks.delivered(message);
        inHand.push(message);
      }
      const finishing = Math.floor(random() * inHand.length) + 1;
      for (let i = 0; i < finishing && inHand.length > 0; i++) {
        // Mostly the oldest (a handler at concurrency 1), sometimes any (retries, concurrency).
        const index = random() < 0.8 ? 0 : Math.floor(random() * inHand.length);
        const [message] = inHand.splice(index, 1) as [Message];
        if (random() < 0.05) acks.nack(message, true);
        else acks.ack(message);
        settled++;
      }
      await endOfTurn();
      // Nothing settled by the broker that the handlers still hold.
      for (const message of inHand) {
        expect(broker.outstanding.has(message.fields.deliveryTag)).toBe(true);
      }
    }
    expect(broker.outstanding.size).toBe(0);
    const joined = broker.frames.filter((frame) => frame.startsWith('ack<=')).length;
    expect(broker.frames.length).toBeLessThan(20_000);
    expect(joined).toBeGreaterThan(0);
  });
});

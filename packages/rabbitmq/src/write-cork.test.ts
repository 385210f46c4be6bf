import { describe, expect, it } from 'vitest';
import { WriteCork } from './write-cork.js';

/** A socket that records its cork calls and the writes made while corked. */
class FakeSocket {
  corked = 0;
  readonly log: string[] = [];
  cork(): void {
    this.corked++;
    this.log.push('cork');
  }
  uncork(): void {
    this.corked--;
    this.log.push('uncork');
  }
  prependListener(): this {
    return this;
  }
  write(frame: string): void {
    this.log.push(this.corked > 0 ? `held ${frame}` : `sent ${frame}`);
  }
}

/** What amqplib's multiplexer does: write at a setImmediate scheduled from a nextTick. */
function writeLikeAmqplib(socket: FakeSocket, frames: string[]): void {
  process.nextTick(() => setImmediate(() => frames.forEach((frame) => socket.write(frame))));
}

const nextRound = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

describe('WriteCork', () => {
  it('holds the writes of one turn together and releases them right after', async () => {
    const socket = new FakeSocket();
    const cork = new WriteCork(socket);
    writeLikeAmqplib(socket, ['publish 1', 'publish 2', 'ack 1']);
    cork.hold();
    cork.hold();
    cork.hold();
    await nextRound();
    await nextRound();
    expect(socket.log).toEqual([
      'cork',
      'held publish 1',
      'held publish 2',
      'held ack 1',
      'uncork',
    ]);
    expect(socket.corked).toBe(0);
  });

  it('corks again in a later turn', async () => {
    const socket = new FakeSocket();
    const cork = new WriteCork(socket);
    for (const turn of [1, 2]) {
      writeLikeAmqplib(socket, [`publish ${turn}`]);
      cork.hold();
      await nextRound();
      await nextRound();
    }
    expect(socket.log).toEqual([
      'cork',
      'held publish 1',
      'uncork',
      'cork',
      'held publish 2',
      'uncork',
    ]);
  });

  it('does nothing without a socket to cork', () => {
    expect(() => new WriteCork(undefined).hold()).not.toThrow();
  });
});

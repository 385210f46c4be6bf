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

/**
 * One turn of frames written as amqplib's multiplexer writes them (at a setImmediate scheduled
 * from a nextTick), with `hold()` called `holds` times after handing them over.
 */
async function turn(
  socket: FakeSocket,
  cork: WriteCork,
  frames: string[],
  holds = 1,
): Promise<void> {
  process.nextTick(() => setImmediate(() => frames.forEach((frame) => socket.write(frame))));
  for (let i = 0; i < holds; i++) cork.hold();
  await new Promise((resolve) => setImmediate(resolve));
  await new Promise((resolve) => setImmediate(resolve));
}

describe('WriteCork', () => {
  it('holds the writes of one turn together and releases them right after', async () => {
    const socket = new FakeSocket();
    await turn(socket, new WriteCork(socket), ['publish 1', 'publish 2', 'ack 1'], 3);
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
    await turn(socket, cork, ['publish 1', 'publish 2'], 2);
    await turn(socket, cork, ['publish 3', 'publish 4'], 2);
    expect(socket.log).toEqual([
      'cork',
      'held publish 1',
      'held publish 2',
      'uncork',
      'cork',
      'held publish 3',
      'held publish 4',
      'uncork',
    ]);
  });

  it('leaves a frame alone in its turn uncorked', async () => {
    const socket = new FakeSocket();
    const cork = new WriteCork(socket);
    await turn(socket, cork, ['ack 1']);
    await turn(socket, cork, ['ack 2']);
    expect(socket.log).toEqual(['sent ack 1', 'sent ack 2']);
  });

  it('does nothing without a socket to cork', () => {
    expect(() => new WriteCork(undefined).hold()).not.toThrow();
  });
});

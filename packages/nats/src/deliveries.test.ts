import type { JsMsg } from '@nats-io/jetstream';
import { ClosedConnectionError } from '@nats-io/transport-node';
import { ErrorCode, type WatchtowerError } from '@watchtower/core';
import { describe, expect, it } from 'vitest';
import { deliveryCountOf, settleBatcher, toNatsHeaders } from './deliveries.js';

describe('toNatsHeaders', () => {
  it('sends event headers as NATS headers, leaving out what NATS cannot carry', () => {
    const headers = toNatsHeaders({
      traceparent: '00-abc-01',
      'x-unicode': 'ünï',
      'bad name': 'v',
      'x-newline': 'a\r\nb',
      'Nats-Msg-Id': 'spoofed',
    });
    expect(headers?.get('traceparent')).toBe('00-abc-01');
    expect(headers?.get('x-unicode')).toBe('ünï');
    expect(headers?.has('bad name')).toBe(false);
    expect(headers?.has('x-newline')).toBe(false);
    expect(headers?.has('Nats-Msg-Id')).toBe(false);
  });

  it('sends no header block for an event without headers', () => {
    expect(toNatsHeaders({})).toBeUndefined();
  });
});

describe('settleBatcher', () => {
  it('reports the acks of a batch that could not be written, once, and still sends the others', () => {
    const reported: WatchtowerError[] = [];
    const batcher = settleBatcher((error) => reported.push(error));
    const sent: string[] = [];
    const closed = (): void => {
      throw new ClosedConnectionError();
    };
    batcher.add({ write: () => sent.push('first') });
    batcher.add({ write: closed });
    batcher.add({ write: closed });
    batcher.add({ write: () => sent.push('last') });
    batcher.flush();

    expect(sent).toEqual(['first', 'last']);
    expect(reported).toHaveLength(1);
    expect(reported[0]).toMatchObject({ code: ErrorCode.CLOSED });
    expect(reported[0]?.message).toContain('2 of 4 acks');
  });

  it('reports a driver failure other than a closed connection as TRANSPORT', () => {
    const reported: WatchtowerError[] = [];
    const batcher = settleBatcher((error) => reported.push(error));
    batcher.add({
      write: () => {
        throw new Error('write failed');
      },
    });
    batcher.flush();
    expect(reported.map((error) => error.code)).toEqual([ErrorCode.TRANSPORT]);
  });

  it('sends the acks of one run of promise work together, after it and before the next I/O turn', async () => {
    const batcher = settleBatcher(() => undefined);
    const sent: number[] = [];
    const seenByLastStep: number[] = [];
    // Three deliveries settled one by one across awaits, as a consume loop does.
    const loop = (async () => {
      for (let i = 0; i < 3; i++) {
        batcher.add({ write: () => sent.push(i) });
        await Promise.resolve();
      }
      seenByLastStep.push(sent.length);
    })();
    await loop;
    // A tick queued now runs after the batcher's: no event-loop turn in between.
    await new Promise((resolve) => process.nextTick(resolve));
    expect(seenByLastStep).toEqual([0]);
    expect(sent).toEqual([0, 1, 2]);
  });

  it('reports nothing when every ack goes out', () => {
    const reported: WatchtowerError[] = [];
    const batcher = settleBatcher((error) => reported.push(error));
    batcher.add({ write: () => undefined });
    batcher.flush();
    expect(reported).toEqual([]);
  });
});

describe('deliveryCountOf', () => {
  const withReply = (reply: string, fromInfo = -1): JsMsg =>
    ({ reply, info: { deliveryCount: fromInfo } }) as unknown as JsMsg;

  it('reads the delivery count from both forms of the ack subject', () => {
    expect(
      deliveryCountOf(withReply('$JS.ACK.EVENTS.workers_ab12.3.1041.977.1763856000000000000.12')),
    ).toBe(3);
    expect(
      deliveryCountOf(
        withReply(
          '$JS.ACK.hub.ACCHASH.EVENTS.workers_ab12.17.1041.977.1763856000000000000.12.r4nd0m',
        ),
      ),
    ).toBe(17);
  });

  it("leaves any other subject to the client's own parse", () => {
    expect(deliveryCountOf(withReply('$JS.ACK.EVENTS.c.x.1.1.1.1', 5))).toBe(5);
    expect(deliveryCountOf(withReply('not.an.ack.subject', 6))).toBe(6);
    expect(deliveryCountOf(withReply('', 7))).toBe(7);
  });
});

import { describe, expect, it } from 'vitest';
import { maxDeliveriesSubject, parseMaxDeliveries } from './max-deliveries.js';

describe('max-deliveries advisories', () => {
  it('names the advisory subject of one consumer', () => {
    expect(maxDeliveriesSubject('EVENTS', 'workers_ab12')).toBe(
      '$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.EVENTS.workers_ab12',
    );
  });

  it('reads the stream sequence and the delivery count of an advisory as the server writes it', () => {
    const body =
      '{"type":"io.nats.jetstream.advisory.v1.max_deliver","id":"1cdA1UCwwatZwnrT08oy5T",' +
      '"timestamp":"2026-11-23T00:30:50.043309115Z","stream":"ADVTEST","consumer":"c",' +
      '"stream_seq":17,"deliveries":3}';
    expect(parseMaxDeliveries(body)).toEqual({ streamSeq: 17, deliveries: 3 });
  });

  it('refuses bodies that are not such an advisory', () => {
    for (const body of [
      '',
      'not json',
      'null',
      '[]',
      '{"stream_seq":1}',
      '{"stream_seq":0,"deliveries":2}',
      '{"stream_seq":"1","deliveries":2}',
    ]) {
      expect(parseMaxDeliveries(body)).toBeUndefined();
    }
  });
});

import { describe, expect, it } from 'vitest';
import { createEvent, encodeEvent } from '@watchtower/core';
import { claimedType, exceedsSize, parseFrame, publishFrameText } from './protocol.js';

describe('parseFrame', () => {
  const event = createEvent('order.created', { id: 1, note: 'ünïcode "quoted"' });
  const json = encodeEvent(event);

  it('reads a bare event and keeps its text to send on as it is', () => {
    const parsed = parseFrame(json);
    expect(parsed).toMatchObject({ kind: 'event', text: json });
    expect(parsed.kind === 'event' && parsed.event).toEqual(event);
  });

  it('cuts the event out of a publish frame in the layout publishFrameText writes', () => {
    const parsed = parseFrame(publishFrameText(7, json));
    expect(parsed).toMatchObject({ kind: 'publish', ref: 7, text: json });
    expect(parsed.kind === 'publish' && parsed.event).toEqual(event);
  });

  it('reads a publish frame in any other layout as a control frame', () => {
    const frame = JSON.stringify({ ref: 3, op: 'publish', event: JSON.parse(json) as unknown });
    expect(parseFrame(frame)).toMatchObject({ kind: 'control', op: 'publish', frame: { ref: 3 } });
  });

  it('reads an event whose keys come in another order through the general path', () => {
    const value = JSON.parse(json) as { metadata: unknown; payload: unknown };
    const reordered = JSON.stringify({ payload: value.payload, metadata: value.metadata });
    const parsed = parseFrame(reordered);
    expect(parsed.kind === 'event' && parsed.event).toEqual(event);
  });

  it.each([
    ['not json', 'the frame is not JSON'],
    ['[1]', 'the frame is not a JSON object'],
    ['{"metadata":{"id":1},"payload":{}}', 'metadata'],
  ])('calls %j malformed, saying why', (text, problem) => {
    const parsed = parseFrame(text);
    expect(parsed.kind).toBe('malformed');
    expect(parsed.kind === 'malformed' && parsed.problem).toContain(problem);
  });

  it('names the type a malformed event claims, when it claims one', () => {
    const parsed = parseFrame('{"metadata":{"id":"x","event_type":"a.b"},"payload":{}}');
    expect(parsed.kind === 'malformed' && claimedType(parsed.value)).toBe('a.b');
  });
});

describe('exceedsSize', () => {
  it('counts UTF-8 bytes only when the text could be over the limit', () => {
    expect(exceedsSize('abc', 9)).toBeUndefined();
    expect(exceedsSize('ééééé', 9)).toBe(10);
    expect(exceedsSize('éééé', 9)).toBeUndefined();
  });
});

import { describe, expect, it } from 'vitest';
import { toNatsHeaders } from './deliveries.js';

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

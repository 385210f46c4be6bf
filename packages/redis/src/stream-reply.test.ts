import { Buffer } from 'node:buffer';
import { describe, expect, it } from 'vitest';
import {
  compareIds,
  parseInfoReply,
  describeFields,
  fieldValue,
  parseAutoClaimReply,
  parsePendingReply,
  parseReadReply,
} from './stream-reply.js';

const b = (text: string): Buffer => Buffer.from(text);

describe('stream replies', () => {
  it('parses an XREADGROUP reply into batches per stream', () => {
    const reply = [
      [
        b('p:a'),
        [
          [b('1-0'), [b('event'), b('{}')]],
          [b('1-1'), [b('event'), b('[]')]],
        ],
      ],
      [b('p:b'), [[b('2-0'), [b('event'), b('x')]]]],
    ];
    const batches = parseReadReply(reply);
    expect(batches.map((batch) => [batch.key, batch.entries.map((e) => e.id)])).toEqual([
      ['p:a', ['1-0', '1-1']],
      ['p:b', ['2-0']],
    ]);
    expect(parseReadReply(null)).toEqual([]);
  });

  it('parses an XAUTOCLAIM reply with entries that were deleted meanwhile', () => {
    const reply = [b('5-0'), [[b('3-0'), [b('event'), b('{}')]], null], [b('4-0')]];
    expect(parseAutoClaimReply(reply)).toEqual({
      cursor: '5-0',
      entries: [{ id: '3-0', fields: [b('event'), b('{}')] }],
      deleted: ['4-0'],
    });
  });

  it('parses the extended XPENDING form', () => {
    expect(parsePendingReply([['1-0', 'c1', 1200, 3]])).toEqual([
      { id: '1-0', consumer: 'c1', idleMs: 1200, deliveries: 3 },
    ]);
  });

  it('finds a field by name and describes entries without an event field', () => {
    const fields = [b('error'), b('boom'), b('event'), b('{"a":1}')];
    expect(fieldValue(fields)?.toString()).toBe('{"a":1}');
    expect(fieldValue(fields, 'error')?.toString()).toBe('boom');
    expect(fieldValue(fields, 'missing')).toBeUndefined();
    expect(describeFields([b('body'), b('x'), b('n'), b('1')]).toString()).toBe('body=x n=1');
  });

  it('compares stream ids numerically, not as text', () => {
    expect(compareIds('10-0', '9-0')).toBe(1);
    expect(compareIds('9-10', '9-9')).toBe(1);
    expect(compareIds('9-9', '9-9')).toBe(0);
    expect(compareIds('1-0', '18446744073709551615-0')).toBe(-1);
  });
});

describe('parseInfoReply', () => {
  it('reads each row of an XINFO reply as a field map and skips what is not a row', () => {
    const rows = parseInfoReply([
      ['name', 'own:host-1-abc-1', 'consumers', 1, 'pending', 0],
      'stray',
      ['name', 'c1', 'idle', 1200],
    ]);
    expect(rows.map((row) => Object.fromEntries(row))).toEqual([
      { name: 'own:host-1-abc-1', consumers: 1, pending: 0 },
      { name: 'c1', idle: 1200 },
    ]);
    expect(parseInfoReply(null)).toEqual([]);
  });
});

import * as api from '@opentelemetry/api';
import { describe, expect, it } from 'vitest';
import { createEvent } from '../event.js';
import { formatTraceparent, parseTraceparent, withTraceHeaders } from './trace-context.js';

const TRACE = '4bf92f3577b34da6a3ce929d0e0e4736';
const SPAN = '00f067aa0ba902b7';

describe('W3C trace context in event headers', () => {
  it('reads a traceparent and tracestate written by another service as a remote parent', () => {
    const context = parseTraceparent(api, `00-${TRACE}-${SPAN}-01`, 'vendor=abc');
    expect(context).toMatchObject({ traceId: TRACE, spanId: SPAN, traceFlags: 1, isRemote: true });
    expect(context?.traceState?.get('vendor')).toBe('abc');
    expect(formatTraceparent(context as api.SpanContext)).toBe(`00-${TRACE}-${SPAN}-01`);
  });

  it.each([
    ['missing', undefined],
    ['not hex', `00-${TRACE.replace('4', 'x')}-${SPAN}-01`],
    ['an all-zero trace id', `00-${'0'.repeat(32)}-${SPAN}-01`],
    ['version ff', `ff-${TRACE}-${SPAN}-01`],
    ['version 00 with more fields', `00-${TRACE}-${SPAN}-01-extra`],
  ])('starts a new trace for a traceparent that is %s', (_why, header) => {
    expect(parseTraceparent(api, header, undefined)).toBeUndefined();
  });

  it('accepts a later version with fields it does not know', () => {
    expect(parseTraceparent(api, `01-${TRACE}-${SPAN}-00-more`, undefined)?.traceFlags).toBe(0);
  });

  it('writes the headers on a copy, dropping a stale tracestate', () => {
    const event = createEvent('a.b', {}, { headers: { tracestate: 'old=1', keep: 'yes' } });
    const traced = withTraceHeaders(event, {
      traceId: TRACE,
      spanId: SPAN,
      traceFlags: 1,
    });
    expect(traced.headers).toEqual({ keep: 'yes', traceparent: `00-${TRACE}-${SPAN}-01` });
    expect(event.headers).toEqual({ tracestate: 'old=1', keep: 'yes' });
  });
});

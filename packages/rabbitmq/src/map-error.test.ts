import { describe, expect, it } from 'vitest';
import { mapAmqpError } from './map-error.js';

function withCode(message: string, code: number | string): Error {
  return Object.assign(new Error(message), { code });
}

describe('mapAmqpError', () => {
  it.each([
    [withCode('CONNECTION_FORCED', 320), 'CONNECTION', true],
    [withCode('connect ECONNREFUSED', 'ECONNREFUSED'), 'CONNECTION', true],
    [withCode('NOT_FOUND - no exchange', 404), 'TRANSPORT', false],
    [withCode('PRECONDITION_FAILED - inequivalent arg', 406), 'TRANSPORT', false],
    [withCode('ACCESS_REFUSED', 403), 'TRANSPORT', false],
    [withCode('CONTENT_TOO_LARGE', 311), 'NON_RETRYABLE', false],
    [withCode('RESOURCE_ERROR', 506), 'CONNECTION', true],
    [new Error('something else'), 'TRANSPORT', true],
  ])('maps %s to %s (retryable %s), keeping the cause', (error, code, retryable) => {
    const mapped = mapAmqpError(error, 'publish a.b');
    expect(mapped).toMatchObject({ code, retryable });
    expect(mapped.cause).toBe(error);
    expect(mapped.message).toMatch(/^publish a\.b: /);
  });

  it('maps a closed channel to CONNECTION, or to CLOSED once the transport is closing', () => {
    const closed = Object.assign(new Error('Channel closed'), { name: 'IllegalOperationError' });
    expect(mapAmqpError(closed, 'ack').code).toBe('CONNECTION');
    expect(mapAmqpError(closed, 'ack', true).code).toBe('CLOSED');
  });
});

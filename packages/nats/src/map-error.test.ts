import { JetStreamApiError } from '@nats-io/jetstream';
import {
  AuthorizationError,
  ClosedConnectionError,
  InvalidSubjectError,
  NoRespondersError,
  PermissionViolationError,
  RequestError,
  TimeoutError as NatsTimeoutError,
} from '@nats-io/transport-node';
import { ClosedError, ErrorCode, isWatchtowerError } from '@watchtower/core';
import { describe, expect, it } from 'vitest';
import { mapNatsError } from './map-error.js';

describe('mapNatsError', () => {
  it.each<[string, unknown, string, boolean]>([
    ['a closed connection', new ClosedConnectionError(), ErrorCode.CLOSED, false],
    [
      // What a JetStream publish in flight rejects with when close() ends the connection: the
      // client's request multiplexer answers it with a bare RequestError, which it wraps.
      'a request cut off by a closing connection',
      new RequestError('connection closed', { cause: new RequestError('connection closed') }),
      ErrorCode.CLOSED,
      false,
    ],
    [
      'a request that failed for another reason',
      new RequestError('x', { cause: new Error('weird') }),
      ErrorCode.TRANSPORT,
      true,
    ],
    ['a cancelled request', new RequestError('cancelled'), ErrorCode.TRANSPORT, true],
    ['a client timeout', new NatsTimeoutError(), ErrorCode.TIMEOUT, true],
    [
      'a request that timed out',
      new RequestError('x', { cause: new NatsTimeoutError() }),
      ErrorCode.TIMEOUT,
      true,
    ],
    ['no responders', new NoRespondersError('s'), ErrorCode.TRANSPORT, true],
    [
      'a wrapped no responders',
      new Error('jetstream is not enabled', {
        cause: new RequestError('r', { cause: new NoRespondersError('s') }),
      }),
      ErrorCode.TRANSPORT,
      true,
    ],
    ['an authorization failure', new AuthorizationError('auth'), ErrorCode.CONNECTION, false],
    [
      'a permission violation',
      new PermissionViolationError('p', 'publish', 's'),
      ErrorCode.TRANSPORT,
      false,
    ],
    ['an invalid subject', new InvalidSubjectError('a b'), ErrorCode.VALIDATION, false],
    [
      'a refused socket',
      Object.assign(new Error('refused'), { code: 'ECONNREFUSED' }),
      ErrorCode.CONNECTION,
      true,
    ],
    [
      'a JetStream 400',
      new JetStreamApiError({ code: 400, err_code: 10058, description: 'name in use' }),
      ErrorCode.TRANSPORT,
      false,
    ],
    [
      'a JetStream 503',
      new JetStreamApiError({ code: 503, err_code: 10008, description: 'unavailable' }),
      ErrorCode.TRANSPORT,
      true,
    ],
    ['anything else', new Error('weird'), ErrorCode.TRANSPORT, true],
  ])('maps %s to its code and retryability, keeping the cause', (_name, error, code, retryable) => {
    const mapped = mapNatsError(error, 'publish to a.b', 100);
    expect(mapped.code).toBe(code);
    expect(mapped.retryable).toBe(retryable);
    expect(mapped.cause).toBe(error);
    expect(mapped.message).toContain('publish to a.b');
  });

  it('passes Watchtower errors through unchanged', () => {
    const error = new ClosedError('already');
    expect(mapNatsError(error, 'x')).toBe(error);
    expect(isWatchtowerError(mapNatsError('string thrown', 'x'), ErrorCode.TRANSPORT)).toBe(true);
  });
});

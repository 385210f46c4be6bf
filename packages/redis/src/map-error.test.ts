import { describe, expect, it } from 'vitest';
import { ReplyError } from 'ioredis';
import { MaxRetriesPerRequestError } from 'ioredis/built/errors/index.js';
import { ErrorCode, NonRetryableError, isWatchtowerError } from '@watchtower/core';
import { mapClusterWriteError, mapRedisError, replyCode } from './map-error.js';

function reply(message: string): Error {
  return new (ReplyError as new (message: string) => Error)(message);
}

describe('mapRedisError', () => {
  it('reads the code of a Redis error reply', () => {
    expect(replyCode(reply('NOGROUP No such key'))).toBe('NOGROUP');
    expect(replyCode(reply('BUSYGROUP Consumer Group name already exists'))).toBe('BUSYGROUP');
    expect(replyCode(new Error('NOGROUP but not a reply'))).toBeUndefined();
  });

  it.each([
    ['LOADING Redis is loading the dataset in memory', ErrorCode.CONNECTION, true],
    ["READONLY You can't write against a read only replica.", ErrorCode.CONNECTION, true],
    ['CLUSTERDOWN The cluster is down', ErrorCode.CONNECTION, true],
    ['NOAUTH Authentication required.', ErrorCode.CONNECTION, false],
    ['WRONGPASS invalid username-password pair', ErrorCode.CONNECTION, false],
    ['OOM command not allowed when used memory > maxmemory', ErrorCode.TRANSPORT, true],
    [
      'WRONGTYPE Operation against a key holding the wrong kind of value',
      ErrorCode.TRANSPORT,
      false,
    ],
    ['ERR syntax error', ErrorCode.TRANSPORT, false],
  ])('maps the reply %s to %s (retryable: %s)', (message, code, retryable) => {
    const mapped = mapRedisError(reply(message), 'XADD k');
    expect(mapped.code).toBe(code);
    expect(mapped.retryable).toBe(retryable);
    expect(mapped.message).toBe(`XADD k: ${message}`);
    expect(mapped.cause).toBeInstanceOf(Error);
  });

  it('maps a connection that has ended to CLOSED, not retryable', () => {
    const mapped = mapRedisError(new Error('Connection is closed.'), 'XADD k');
    expect(mapped.code).toBe(ErrorCode.CLOSED);
    expect(mapped.retryable).toBe(false);
  });

  it('maps lost connections, socket errors and exhausted retries to CONNECTION', () => {
    expect(
      mapRedisError(
        new Error("Stream isn't writeable and enableOfflineQueue options is false"),
        'x',
      ).code,
    ).toBe(ErrorCode.CONNECTION);
    const refused = Object.assign(new Error('connect ECONNREFUSED 127.0.0.1:1'), {
      code: 'ECONNREFUSED',
    });
    expect(mapRedisError(refused, 'x').code).toBe(ErrorCode.CONNECTION);
    expect(mapRedisError(new MaxRetriesPerRequestError(20), 'x').code).toBe(ErrorCode.CONNECTION);
  });

  it('maps a command timeout to TIMEOUT and anything else to TRANSPORT', () => {
    expect(mapRedisError(new Error('Command timed out'), 'x').code).toBe(ErrorCode.TIMEOUT);
    expect(mapRedisError(new Error('something odd'), 'x').code).toBe(ErrorCode.TRANSPORT);
    expect(mapRedisError('a string', 'x').code).toBe(ErrorCode.TRANSPORT);
  });

  it('passes Watchtower errors through unchanged', () => {
    const error = new NonRetryableError('no');
    expect(mapRedisError(error, 'x')).toBe(error);
    expect(isWatchtowerError(mapRedisError(new Error('e'), 'x'))).toBe(true);
  });
});

describe('mapClusterWriteError', () => {
  it('maps a cluster node connection that ended under an open transport to CONNECTION, retryable', () => {
    const cause = new Error('Connection is closed.');
    const mapped = mapClusterWriteError(cause, 'XADD k');
    expect(mapped.code).toBe(ErrorCode.CONNECTION);
    expect(mapped.retryable).toBe(true);
    expect(mapped.cause).toBe(cause);
  });

  it('maps every other error as mapRedisError does', () => {
    const wrongType = reply('WRONGTYPE Operation against a key holding the wrong kind of value');
    expect(mapClusterWriteError(wrongType, 'XADD k')).toMatchObject({
      code: ErrorCode.TRANSPORT,
      retryable: false,
    });
    expect(mapClusterWriteError(reply('CLUSTERDOWN The cluster is down'), 'XADD k').code).toBe(
      mapRedisError(reply('CLUSTERDOWN The cluster is down'), 'XADD k').code,
    );
  });
});

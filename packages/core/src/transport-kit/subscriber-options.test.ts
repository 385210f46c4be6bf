import { describe, expect, it } from 'vitest';
import { ErrorCode, isWatchtowerError } from '../errors.js';
import { thrown } from '../testing/thrown.js';
import { splitSubscriberOptions } from './subscriber-options.js';

const TRANSPORT_KEYS = ['url', 'prefix', 'closeTimeoutMs', 'clock'];

describe('splitSubscriberOptions', () => {
  it('gives bus keys to the bus, transport keys to the transport, shared keys to both', () => {
    const clock = { now: () => 0, setTimeout: () => 0, clearTimeout: () => undefined };
    const { transport, bus } = splitSubscriberOptions(
      {
        url: 'redis://x',
        prefix: 'p',
        closeTimeoutMs: 50,
        clock,
        source: 'svc',
        retry: { maxAttempts: 2 },
      },
      TRANSPORT_KEYS,
      'RedisSubscriber',
    );
    expect(transport).toEqual({ url: 'redis://x', prefix: 'p', closeTimeoutMs: 50, clock });
    expect(bus).toEqual({ closeTimeoutMs: 50, clock, source: 'svc', retry: { maxAttempts: 2 } });
  });

  it('leaves out keys set to undefined, so that defaults apply', () => {
    const { transport, bus } = splitSubscriberOptions(
      { url: undefined, source: undefined },
      TRANSPORT_KEYS,
      'X',
    );
    expect(transport).toEqual({});
    expect(bus).toEqual({});
  });

  it('refuses a key neither side knows with CONFIG naming it', () => {
    const error = thrown(() =>
      splitSubscriberOptions({ urll: 'redis://x' }, TRANSPORT_KEYS, 'RedisSubscriber'),
    );
    expect(isWatchtowerError(error, ErrorCode.CONFIG)).toBe(true);
    expect((error as Error).message).toMatch(
      /^invalid option `urll`: is not an option of RedisSubscriber \(known: url, prefix/,
    );
  });

  it('refuses options that are not an object', () => {
    expect(
      isWatchtowerError(
        thrown(() => splitSubscriberOptions(5 as never, TRANSPORT_KEYS, 'X')),
        ErrorCode.CONFIG,
      ),
    ).toBe(true);
  });
});

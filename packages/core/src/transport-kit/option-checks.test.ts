import { describe, expect, it } from 'vitest';
import { ErrorCode, isWatchtowerError } from '../errors.js';
import { configErrorField as configField } from '../testing/outcomes.js';
import { thrown } from '../testing/thrown.js';
import {
  checkConsumeDlqOptions,
  checkGroup,
  checkNackOptions,
  checkPublishOptions,
  checkStartFrom,
  checkSubscribeOptions,
  rejection,
} from './option-checks.js';

const ALL = ['new', 'earliest', 'sequence', 'time'] as const;

describe('checkSubscribeOptions', () => {
  it('returns the options it checked', () => {
    const time = new Date();
    expect(
      checkSubscribeOptions(
        { group: 'g', maxInFlight: 5, concurrency: 2, startFrom: { time } },
        { startFrom: ALL },
      ),
    ).toEqual({
      group: 'g',
      maxInFlight: 5,
      concurrency: 2,
      startFrom: { time },
    });
    expect(checkSubscribeOptions(undefined, { startFrom: ['new'] })).toEqual({
      group: undefined,
      maxInFlight: undefined,
      startFrom: undefined,
    });
  });

  it.each([
    ['an unknown key', { grup: 'g' }, 'grup'],
    ['an empty group', { group: '' }, 'group'],
    ['a group that is not a string', { group: 5 }, 'group'],
    ['maxInFlight 0', { maxInFlight: 0 }, 'maxInFlight'],
    ['maxInFlight 1.5', { maxInFlight: 1.5 }, 'maxInFlight'],
    ['concurrency 0', { concurrency: 0 }, 'concurrency'],
    ['startFrom latest', { startFrom: 'latest' }, 'startFrom'],
    ['startFrom sequence 0', { startFrom: { sequence: 0 } }, 'startFrom.sequence'],
    ['startFrom an invalid Date', { startFrom: { time: new Date('x') } }, 'startFrom.time'],
  ])('refuses %s with CONFIG naming the field', (_what, options, field) => {
    expect(configField(() => checkSubscribeOptions(options as never, { startFrom: ALL }))).toBe(
      field,
    );
  });

  it('refuses a non-object with CONFIG', () => {
    expect(
      isWatchtowerError(
        thrown(() => checkSubscribeOptions(5 as never, { startFrom: ALL })),
        ErrorCode.CONFIG,
      ),
    ).toBe(true);
  });

  it('refuses a start position the transport cannot honour, saying why and what it can', () => {
    const error = thrown(() => checkStartFrom('earliest', ['new'], 'core NATS keeps no history'));
    expect(isWatchtowerError(error, ErrorCode.CONFIG)).toBe(true);
    expect((error as Error).message).toBe(
      "invalid option `startFrom`: 'earliest' is not supported (core NATS keeps no history); use 'new'",
    );
    expect((thrown(() => checkStartFrom({ sequence: 3 }, ['new', 'time'])) as Error).message).toBe(
      "invalid option `startFrom`: { sequence } is not supported; use 'new' or { time }",
    );
  });

  it('checks group names against the transport rule', () => {
    const name = { pattern: /^\S+$/, hint: 'a name without whitespace' };
    expect(checkGroup('workers', 'group', name)).toBe('workers');
    expect((thrown(() => checkGroup('two words', 'group', name)) as Error).message).toBe(
      'invalid option `group`: must be a name without whitespace, got "two words"',
    );
  });
});

describe('checkConsumeDlqOptions', () => {
  const handler = (): void => undefined;

  it('defaults fromStart to true', () => {
    expect(checkConsumeDlqOptions(handler, undefined)).toEqual({
      group: undefined,
      fromStart: true,
    });
    expect(checkConsumeDlqOptions(handler, { group: 'ops', fromStart: false })).toEqual({
      group: 'ops',
      fromStart: false,
    });
  });

  it('refuses a handler that is not a function, unknown keys and bad values', () => {
    expect(configField(() => checkConsumeDlqOptions(5 as never, undefined))).toBe('handler');
    expect(configField(() => checkConsumeDlqOptions(handler, { from: true } as never))).toBe(
      'from',
    );
    expect(configField(() => checkConsumeDlqOptions(handler, { fromStart: 'yes' as never }))).toBe(
      'fromStart',
    );
    expect(configField(() => checkConsumeDlqOptions(handler, { group: '' }))).toBe('group');
  });

  it('refuses a group where the transport has one competing queue, with the reason', () => {
    const error = thrown(() =>
      checkConsumeDlqOptions(
        handler,
        { group: 'ops' },
        { groupUnsupported: 'one queue; omit group' },
      ),
    );
    expect((error as Error).message).toBe('invalid option `group`: one queue; omit group');
  });
});

describe('checkPublishOptions and checkNackOptions', () => {
  it('accept what the contract allows', () => {
    expect(() => checkPublishOptions({ signal: new AbortController().signal })).not.toThrow();
    expect(() => checkPublishOptions(undefined)).not.toThrow();
    expect(() => checkNackOptions({ requeue: false, delayMs: 0 })).not.toThrow();
    expect(() => checkNackOptions(undefined)).not.toThrow();
  });

  it('refuse unknown keys and bad values with CONFIG naming the field', () => {
    expect(configField(() => checkPublishOptions({ signl: 1 } as never))).toBe('signl');
    expect(configField(() => checkPublishOptions({ signal: {} as never }))).toBe('signal');
    expect(configField(() => checkNackOptions({ delay: 5 } as never))).toBe('delay');
    expect(configField(() => checkNackOptions({ delayMs: -1 }))).toBe('delayMs');
    expect(configField(() => checkNackOptions({ delayMs: Number.NaN }))).toBe('delayMs');
    expect(configField(() => checkNackOptions({ requeue: 'no' as never }))).toBe('requeue');
  });

  it('rejection turns a failed check into a rejected promise', async () => {
    expect(rejection(() => checkNackOptions(undefined))).toBeUndefined();
    await expect(rejection(() => checkNackOptions({ delayMs: -1 }))).rejects.toSatisfy((e) =>
      isWatchtowerError(e, ErrorCode.CONFIG),
    );
  });
});

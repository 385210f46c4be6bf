import { Writable } from 'node:stream';
import pino from 'pino';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { ErrorCode, isWatchtowerError } from './errors.js';
import { WarningLimiter, consoleLogger, toBusLog } from './logger.js';
import { FakeClock } from './testing/fake-clock.js';
import { thrown } from './testing/thrown.js';

afterEach(() => {
  vi.restoreAllMocks();
});

describe('toBusLog', () => {
  it('calls a pino logger with details first, on the logger itself', () => {
    const lines: Record<string, unknown>[] = [];
    const sink = new Writable({
      write(chunk: Buffer, _encoding, done) {
        lines.push(JSON.parse(chunk.toString()) as Record<string, unknown>);
        done();
      },
    });
    const log = toBusLog(pino({ level: 'debug' }, sink));
    log.warn({ type: 'order.placed', attempts: 3 }, 'dead-lettered');
    log.debug({ attempt: 1 }, 'retrying');
    expect(lines).toMatchObject([
      { level: 40, type: 'order.placed', attempts: 3, msg: 'dead-lettered' },
      { level: 20, attempt: 1, msg: 'retrying' },
    ]);
  });

  it('writes to the global console with the message first', () => {
    const warn = vi.spyOn(console, 'warn').mockImplementation(() => undefined);
    const debug = vi.spyOn(console, 'debug').mockImplementation(() => undefined);
    const log = toBusLog(console);
    log.warn({ eventId: 'e1' }, 'dead-lettered');
    log.debug({ attempt: 2 }, 'retrying');
    expect(warn).toHaveBeenCalledWith('[watchtower] dead-lettered', { eventId: 'e1' });
    expect(debug).toHaveBeenCalledWith('[watchtower] retrying', { attempt: 2 });
  });

  it('drops the levels a logger lacks; the default console logger has warn and error only', () => {
    const log = toBusLog({ warn: () => undefined, error: () => undefined });
    expect(() => log.debug({}, 'x')).not.toThrow();
    expect(() => log.info({}, 'x')).not.toThrow();
    expect(consoleLogger.debug).toBeUndefined();
    const warn = vi.spyOn(console, 'warn').mockImplementation(() => undefined);
    toBusLog(consoleLogger).warn({ n: 1 }, 'filling up');
    expect(warn).toHaveBeenCalledWith('[watchtower] filling up', { n: 1 });
  });

  it('refuses what is not a logger with CONFIG naming the field', () => {
    for (const value of [5, null, {}, { warn: () => undefined }]) {
      const error = thrown(() => toBusLog(value));
      expect(isWatchtowerError(error, ErrorCode.CONFIG)).toBe(true);
      expect((error as Error).message).toContain('`logger`');
    }
    const error = thrown(() =>
      toBusLog({ warn: () => undefined, error: () => undefined, debug: 1 }),
    );
    expect((error as Error).message).toContain('`logger.debug`');
  });
});

describe('WarningLimiter', () => {
  it('lets one warning through per interval and counts the ones held back', () => {
    const clock = new FakeClock();
    const limiter = new WarningLimiter(clock, 5000);
    expect(limiter.take()).toBe(0);
    clock.advance(1000);
    expect(limiter.take()).toBeUndefined();
    expect(limiter.take()).toBeUndefined();
    clock.advance(4000);
    expect(limiter.take()).toBe(2);
    expect(limiter.take()).toBeUndefined();
  });
});

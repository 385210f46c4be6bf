/**
 * What the bus writes to its logger while consuming: a dead letter at warn with what a reader
 * needs to find the event, a retry at debug; and that a pino logger fits the option.
 */
import { Writable } from 'node:stream';
import pino from 'pino';
import { describe, expect, it } from 'vitest';
import { ErrorCode, NonRetryableError } from './errors.js';
import { EventBus } from './event-bus.js';
import type { LogMethod, Logger } from './logger.js';
import { MemoryTransport } from './memory-transport.js';
import { waitFor } from './testing/wait-for.js';

interface Line {
  level: 'debug' | 'warn' | 'error';
  details: Record<string, unknown>;
  message: string;
}

function recorder(): { logger: Logger; lines: Line[] } {
  const lines: Line[] = [];
  const at =
    (level: Line['level']): LogMethod =>
    (details, message) =>
      void lines.push({ level, details, message });
  return { logger: { debug: at('debug'), warn: at('warn'), error: at('error') }, lines };
}

describe('EventBus logging', () => {
  it('logs every dead letter at warn with type, id, code, attempts and subscription', async () => {
    const { logger, lines } = recorder();
    const transport = new MemoryTransport();
    const bus = new EventBus({ transport, logger });
    await bus.subscribe(
      'order.*',
      () => {
        throw new NonRetryableError('card declined');
      },
      { name: 'billing' },
    );
    await bus.publish('order.placed', { id: 7 });
    await waitFor(() => lines.some((line) => line.level === 'warn'));
    const id = transport.deadLetterQueue.list()[0]?.event?.id;

    const warnings = lines.filter((line) => line.level === 'warn');
    expect(warnings).toHaveLength(1);
    expect(warnings[0]?.details).toEqual({
      type: 'order.placed',
      eventId: id,
      code: ErrorCode.NON_RETRYABLE,
      attempts: 1,
      subscription: 'billing',
    });
    expect(warnings[0]?.message).toBe(
      `dead-lettered order.placed ${String(id)} after 1 attempt(s): card declined`,
    );
    await bus.close();
  });

  it('logs each retry at debug and the dead letter after the last attempt at warn', async () => {
    const { logger, lines } = recorder();
    const transport = new MemoryTransport();
    const bus = new EventBus({ transport, logger });
    await bus.subscribe(
      'job.run',
      () => {
        throw new Error('flaky');
      },
      { retry: { maxAttempts: 3, strategy: 'fixed', minDelayMs: 1, jitter: 0 } },
    );
    await bus.publish('job.run', {});
    await waitFor(() => lines.some((line) => line.level === 'warn'));

    const retries = lines.filter((line) => line.level === 'debug');
    expect(retries.map((line) => line.details['attempt'])).toEqual([1, 2]);
    expect(retries[0]?.details).toMatchObject({
      type: 'job.run',
      code: ErrorCode.HANDLER_FAILED,
      delayMs: 1,
    });
    expect(lines.filter((line) => line.level === 'warn').map((l) => l.details['attempts'])).toEqual(
      [3],
    );
    await bus.close();
  });

  it('takes a pino logger as it is, details and message in their fields', async () => {
    const records: Record<string, unknown>[] = [];
    const sink = new Writable({
      write(chunk: Buffer, _encoding, done) {
        records.push(JSON.parse(chunk.toString()) as Record<string, unknown>);
        done();
      },
    });
    const transport = new MemoryTransport();
    const bus = new EventBus({ transport, logger: pino({ level: 'warn' }, sink) });
    await bus.subscribe(
      'mail.send',
      () => {
        throw new NonRetryableError('no address');
      },
      { name: 'mailer' },
    );
    await bus.publish('mail.send', {});
    await waitFor(() => records.length === 1);

    expect(records[0]).toMatchObject({
      level: 40,
      type: 'mail.send',
      code: ErrorCode.NON_RETRYABLE,
      attempts: 1,
      subscription: 'mailer',
    });
    expect(String(records[0]?.['msg'])).toContain('no address');
    await bus.close();
  });
});

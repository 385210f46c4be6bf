import { settlement } from '@watchtower/core/testing';
import {
  ErrorCode,
  createEvent,
  isWatchtowerError,
  type DeadLetterReason,
  type Logger,
} from '@watchtower/core';
import { CLOSE_MARGIN_MS } from '@watchtower/core/transport-kit';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { NatsSubscriber, NatsTransport } from '../src/index.js';
import { testConfig, testNames } from './helpers.js';
import { PrivateNatsServer } from './nats-server.js';

/*
 * A publish in flight when close() cuts it off settles with CLOSED (not a retryable TRANSPORT
 * error), on the transport and through the bus, by the end of close()'s deadline. The server
 * is paused (SIGSTOP) so that nothing it was sent is answered; each test has its own.
 */

const CLOSE_TIMEOUT_MS = 300;
/** Slack for a loaded CI machine (two shared cores). */
const SLACK_MS = 1500;
const silent: Logger = { warn: () => undefined, error: () => undefined };

let server: PrivateNatsServer;
const closers: (() => Promise<unknown>)[] = [];

beforeEach(async () => {
  server = await PrivateNatsServer.start();
});
afterEach(async () => {
  server.resume();
  await Promise.allSettled(closers.splice(0).map((close) => close()));
  await server.stop();
});

/** Lets pending I/O callbacks run once; waits for nothing in particular. */
const ioTurn = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

function expectClosed(error: unknown): void {
  expect(isWatchtowerError(error, ErrorCode.CLOSED)).toBe(true);
  expect((error as { retryable: boolean }).retryable).toBe(false);
}

const reason: DeadLetterReason = {
  message: 'boom',
  code: ErrorCode.HANDLER_FAILED,
  attempts: 1,
  failedAt: new Date().toISOString(),
  originalType: 'work.item',
};

describe('NATS: a publish in flight when close() cuts it off', () => {
  it('rejects with CLOSED on the transport (JetStream publish and dead letter)', async () => {
    const transport = new NatsTransport(
      testConfig('jetstream', testNames(), { servers: server.url, requestTimeoutMs: 10_000 }),
    );
    closers.push(() => transport.close({ timeoutMs: CLOSE_TIMEOUT_MS }));
    await transport.connect();
    await transport.publish(createEvent('work.item', { n: 0 }));

    server.pause();
    const published = settlement(transport.publish(createEvent('work.item', { n: 1 })));
    const deadLettered = settlement(transport.publishToDlq(createEvent('work.item', {}), reason));
    await ioTurn();
    await transport.close({ timeoutMs: CLOSE_TIMEOUT_MS });

    expectClosed(await published);
    expectClosed(await deadLettered);
  });

  it('rejects with CLOSED through the bus by the end of close()’s deadline', async () => {
    const bus = new NatsSubscriber({
      ...testConfig('jetstream', testNames(), { servers: server.url, requestTimeoutMs: 10_000 }),
      logger: silent,
    });
    closers.push(() => bus.close({ timeoutMs: CLOSE_TIMEOUT_MS }));
    await bus.publish('work.item', { n: 0 });

    server.pause();
    const publishes = [1, 2, 3].map((n) => settlement(bus.publish('work.item', { n })));
    await ioTurn();
    const started = performance.now();
    await bus.close({ timeoutMs: CLOSE_TIMEOUT_MS });
    expect(performance.now() - started).toBeLessThan(CLOSE_TIMEOUT_MS + CLOSE_MARGIN_MS + SLACK_MS);

    for (const result of await Promise.all(publishes)) expectClosed(result);
    expect(bus.stats()).toMatchObject({ publishFailed: 3, publishesInFlight: 0 });
  });
});

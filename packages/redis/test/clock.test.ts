import { afterEach, describe, expect, it } from 'vitest';
import { FakeClock } from '@watchtower/core/testing';
import { CLOSE_MARGIN_MS } from '@watchtower/core/transport-kit';
import { RedisTransport } from '../src/index.js';
import { PrivateRedisServer, uniquePrefix } from './helpers.js';

/*
 * The transport's time limits run on the `clock` option: against a private redis-server that
 * stops answering (SIGSTOP), they end when a FakeClock is stepped past them, not before.
 */

let server: PrivateRedisServer | undefined;
let transport: RedisTransport | undefined;

afterEach(async () => {
  server?.resume();
  await transport?.close({ timeoutMs: 0 }).catch(() => {});
  transport = undefined;
  await server?.stop();
  server = undefined;
});

async function hungTransport(clock: FakeClock): Promise<RedisTransport> {
  server = await PrivateRedisServer.start();
  transport = new RedisTransport({
    url: server.url,
    prefix: uniquePrefix('clock'),
    clock,
    staleGroupMs: 0,
    unsubscribeTimeoutMs: 3000,
  });
  await transport.connect();
  return transport;
}

/** Tells whether `promise` has settled, without waiting for it. */
function watch(promise: Promise<unknown>): { settled: () => boolean } {
  let settled = false;
  void promise.then(
    () => (settled = true),
    () => (settled = true),
  );
  return { settled: () => settled };
}

describe('RedisTransport on an injected clock', () => {
  it('reports unhealthy once healthCheckTimeoutMs have passed on the clock while PING goes unanswered', async () => {
    const clock = new FakeClock(Date.now());
    const t = await hungTransport(clock);
    server?.pause();
    const health = t.healthCheck();
    await clock.advanceAsync(2000);
    expect(await health).toMatchObject({
      healthy: false,
      message: 'PING took longer than 2000 ms',
    });
  });

  it('resolves unsubscribe() once unsubscribeTimeoutMs have passed on the clock while Redis hangs', async () => {
    const clock = new FakeClock(Date.now());
    const t = await hungTransport(clock);
    const subscription = await t.subscribe('tick.tock', { group: 'g' });
    server?.pause();
    const unsubscribing = watch(subscription.unsubscribe());
    await clock.advanceAsync(2999);
    expect(unsubscribing.settled()).toBe(false);
    await clock.advanceAsync(1);
    expect(unsubscribing.settled()).toBe(true);
  });

  it('resolves close() once its timeoutMs and CLOSE_MARGIN_MS have passed on the clock while Redis hangs', async () => {
    const clock = new FakeClock(Date.now());
    const t = await hungTransport(clock);
    await t.subscribe('tick.tock', { group: 'g' });
    await t.subscribe('tick.tock');
    server?.pause();
    const closing = watch(t.close({ timeoutMs: 60_000 }));
    await clock.advanceAsync(59_999);
    expect(closing.settled()).toBe(false);
    await clock.advanceAsync(1 + CLOSE_MARGIN_MS);
    expect(closing.settled()).toBe(true);
  });
});

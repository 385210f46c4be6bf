import { jetstreamManager, type JetStreamManager } from '@nats-io/jetstream';
import { PermissionViolationError } from '@nats-io/transport-node';
import {
  ErrorCode,
  createEvent,
  type DeadLetterReason,
  type Delivery,
  type WatchtowerError,
} from '@watchtower/core';
import { waitFor } from '@watchtower/core/testing';
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import type { NatsSubscriber } from '../src/index.js';
import { TestResources, drain, testNames, uniqueName } from './helpers.js';
import { PrivateNatsServer } from './nats-server.js';

const resources = new TestResources();
afterEach(() => resources.cleanup());

const quiet = { logger: { warn: () => undefined, error: () => undefined } };

/** What the subscriber's `error` listeners receive, as it arrives. */
function errorsOf(bus: NatsSubscriber): WatchtowerError[] {
  const errors: WatchtowerError[] = [];
  bus.on('error', (error) => {
    errors.push(error);
  });
  return errors;
}

function reason(message: string): DeadLetterReason {
  return {
    message,
    code: ErrorCode.HANDLER_FAILED,
    attempts: 3,
    failedAt: new Date().toISOString(),
    originalType: 'pay.failed',
  };
}

async function manager(): Promise<JetStreamManager> {
  return jetstreamManager(await resources.raw());
}

describe('background errors (jetstream)', () => {
  it('reports a dead-letter handler that throws as HANDLER_FAILED, and the consumer goes on', async () => {
    const names = testNames();
    const bus = resources.subscriber('jetstream', names, quiet);
    const errors = errorsOf(bus);
    await bus.connect();
    await bus.transport.publishToDlq(createEvent('pay.failed', { n: 1 }), reason('first'));
    await bus.transport.publishToDlq(createEvent('pay.failed', { n: 2 }), reason('second'));
    const handled: number[] = [];
    await bus.transport.consumeDlq((letter) => {
      const n = (letter.event?.payload as { n: number }).n;
      if (n === 1) throw new Error('the archive is down');
      handled.push(n);
    });
    await waitFor(() => handled.includes(2));
    await waitFor(() => errors.length === 1);
    expect(errors[0]).toMatchObject({ code: ErrorCode.HANDLER_FAILED });
    expect(errors[0]?.message).toContain('the archive is down');
  });

  it('keeps reporting to the other listeners when one throws', async () => {
    const names = testNames();
    const bus = resources.subscriber('jetstream', names, quiet);
    const warn = vi.spyOn(process, 'emitWarning').mockImplementation(() => undefined);
    resources.onCleanup(async () => warn.mockRestore());
    const removeThrowing = bus.transport.on('error', () => {
      throw new Error('a broken listener');
    });
    resources.onCleanup(async () => removeThrowing());
    const errors = errorsOf(bus);
    await bus.connect();
    await bus.transport.publishToDlq(createEvent('pay.failed', { n: 1 }), reason('first'));
    await bus.transport.publishToDlq(createEvent('pay.failed', { n: 2 }), reason('second'));
    const handled: number[] = [];
    await bus.transport.consumeDlq((letter) => {
      const n = (letter.event?.payload as { n: number }).n;
      if (n === 1) throw new Error('the archive is down');
      handled.push(n);
    });
    await waitFor(() => errors.length === 1 && handled.includes(2));
    expect(errors[0]).toMatchObject({ code: ErrorCode.HANDLER_FAILED });
    expect(warn).toHaveBeenCalled();
  });

  it('reports a consumer that cannot be recreated after it was deleted, and recreates it once it can', async () => {
    const names = testNames();
    const bus = resources.subscriber('jetstream', names, quiet);
    const errors = errorsOf(bus);
    const seen: number[] = [];
    await bus.subscribe('job.*', (event) => {
      seen.push((event.payload as { n: number }).n);
    });
    await bus.publish(createEvent('job.run', { n: 1 }));
    await waitFor(() => seen.includes(1));

    // The stream stops capturing the subscription's subjects, then its consumer disappears:
    // the server refuses to create it again.
    const jsm = await manager();
    const { config } = await jsm.streams.info(names.stream);
    await jsm.streams.update(names.stream, { ...config, subjects: [`${names.subjectPrefix}_x.>`] });
    const [consumer] = await jsm.consumers.list(names.stream).next();
    await waitFor(() =>
      jsm.consumers.delete(names.stream, consumer?.name ?? '').then(
        () => true,
        () => false,
      ),
    );
    await waitFor(() => errors.length > 0, { message: 'a reported recreation failure' });
    expect(errors[0]).toMatchObject({ code: ErrorCode.TRANSPORT, retryable: false });
    expect(errors[0]?.message).toContain(`consumer ${consumer?.name ?? ''}`);

    await jsm.streams.update(names.stream, config);
    let n = 2;
    await waitFor(
      async () => {
        await bus.publish(createEvent('job.run', { n: n++ }));
        return seen.some((value) => value >= 2);
      },
      { timeoutMs: 10_000, intervalMs: 200, message: 'an event after the consumer came back' },
    );
    expect(errors.every((error) => error.code === ErrorCode.TRANSPORT)).toBe(true);
  });

  it('reports streams that cannot be put back after a publish found none', async () => {
    const names = testNames();
    const bus = resources.subscriber('jetstream', names, quiet);
    const errors = errorsOf(bus);
    await bus.connect();
    const jsm = await manager();
    await jsm.streams.delete(names.stream);
    // Another stream now captures part of the subjects: ours cannot be created again.
    const rogue = uniqueName('WT_ROGUE');
    resources.stream(rogue);
    await jsm.streams.add({ name: rogue, subjects: [`${names.subjectPrefix}.rogue.>`] });

    await expect(bus.transport.publish(createEvent('order.placed', {}))).rejects.toMatchObject({
      code: ErrorCode.TRANSPORT,
    });
    await waitFor(() => errors.length > 0, { message: 'a reported stream failure' });
    expect(errors[0]).toMatchObject({ code: ErrorCode.TRANSPORT });
    expect(errors[0]?.message).toContain('recreate the streams');
    expect(errors[0]?.message).toContain(`stream ${rogue} captures ${names.subjectPrefix}.rogue.>`);
    expect(errors[0]?.message).not.toContain('is JetStream enabled');
  });

  it('reports a dead letter that could not be written for a delivery handed back at its last attempt', async () => {
    const names = testNames();
    const bus = resources.subscriber('jetstream', names, {
      ...quiet,
      consumer: { maxDeliver: 1 },
      subscriptionDefaults: { retry: { maxAttempts: 1 } },
    });
    const errors = errorsOf(bus);
    const transport = bus.transport;
    await bus.connect();
    // Pulled into the subscription's buffer and never taken: unsubscribe hands it back.
    const sub = await transport.subscribe('task.*');
    await transport.publish(createEvent('task.run', {}));
    const jsm = await manager();
    await waitFor(async () => {
      const [info] = await jsm.consumers.list(names.stream).next();
      return info?.num_ack_pending === 1;
    });
    await jsm.streams.delete(names.dlqStream);
    await sub.unsubscribe();

    await waitFor(() => errors.length > 0, { message: 'a reported dead-letter failure' });
    expect(errors[0]).toMatchObject({ code: ErrorCode.TRANSPORT });
    expect(errors[0]?.message).toContain('dead letter');
  });

  it('dead-letters a delivery at its last attempt that close() hands back', async () => {
    const names = testNames();
    const transport = resources.transport('jetstream', names, { consumer: { maxDeliver: 1 } });
    const errors: WatchtowerError[] = [];
    transport.on('error', (error) => errors.push(error));
    await transport.connect();
    const sub = await transport.subscribe('task.*');
    const taken: Delivery[] = [];
    const loop = drain(sub, (delivery) => {
      taken.push(delivery);
    });
    await transport.publish(createEvent('task.run', {}));
    await waitFor(() => taken.length === 1);

    await transport.close();
    await loop;
    const jsm = await manager();
    expect((await jsm.streams.info(names.dlqStream)).state.messages).toBe(1);
    expect(errors).toEqual([]);
  });

  it('reports nothing when it closes normally', async () => {
    const names = testNames();
    const bus = resources.subscriber('jetstream', names, quiet);
    const errors = errorsOf(bus);
    const seen: string[] = [];
    await bus.subscribe('a.*', (event) => {
      seen.push(event.type);
    });
    await bus.subscribe('b.*', () => undefined, { group: 'workers' });
    await bus.transport.consumeDlq(() => undefined);
    await bus.publish(createEvent('a.one', {}));
    await bus.publish(createEvent('b.one', {}));
    await waitFor(() => seen.length === 1);
    await bus.close();
    expect(errors).toEqual([]);
  });
});

describe('background errors (server refusals)', () => {
  let server: PrivateNatsServer;
  const refused = new TestResources();

  beforeAll(async () => {
    server = await PrivateNatsServer.start({
      jetstream: false,
      config: `
        authorization {
          users = [{
            user: "watchtower", password: "secret",
            permissions: {
              publish: { allow: [">"], deny: ["*.events.forbidden.>"] },
              subscribe: { allow: [">"], deny: ["*.dlq.>"] }
            }
          }]
        }
      `,
    });
  });
  afterEach(() => refused.cleanup(server.url));
  afterAll(() => server.stop());

  // Publishing to `forbidden.*` events and reading dead letters is refused.
  function subscriber(): NatsSubscriber {
    return refused.subscriber('core', testNames(), {
      ...quiet,
      servers: server.url,
      auth: { user: 'watchtower', pass: 'secret' },
      dlq: { durable: false },
    });
  }

  it('reports a core publish the server refused', async () => {
    const bus = subscriber();
    const errors = errorsOf(bus);
    // Core NATS does not wait for the server: the publish resolves, the refusal comes later.
    await bus.publish(createEvent('forbidden.thing', {}));
    await waitFor(() => errors.length > 0, { message: 'a reported refusal' });
    expect(errors[0]).toMatchObject({ code: ErrorCode.TRANSPORT, retryable: false });
    expect(errors[0]?.cause).toBeInstanceOf(PermissionViolationError);
  });

  it('reports a dead-letter consumer the server refused, once', async () => {
    const bus = subscriber();
    const errors = errorsOf(bus);
    const prefix = bus.transport.config.dlqPrefix;
    await bus.transport.consumeDlq(() => undefined);
    await waitFor(() => errors.length > 0, { message: 'a reported refusal' });
    // A round trip later, every error of the server's refusal has been processed.
    await bus.healthCheck();
    expect(errors).toHaveLength(1);
    expect(errors[0]).toMatchObject({ code: ErrorCode.TRANSPORT, retryable: false });
    expect(errors[0]?.message).toContain(`${prefix}.>`);
  });
});

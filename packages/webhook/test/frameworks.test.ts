import type { AddressInfo } from 'node:net';
import { describe, expect, it } from 'vitest';
import express from 'express';
import Fastify from 'fastify';
import { request } from 'undici';
import { createEvent, encodeEvent, type Event } from '@watchtower/core';
import { createWebhookReceiver, createWebhookSigner, generateWebhookSecret } from '../src/index.js';
import { nowSeconds, testResources } from './helpers.js';

/* The receiver mounted as the README shows it, in Express and in Fastify. */

const secret = generateWebhookSecret();
const { defer } = testResources();

async function post(url: string, event: Event, tamper = false): Promise<number> {
  const body = encodeEvent(event);
  const headers = {
    'content-type': 'application/json',
    ...createWebhookSigner({ secret }).sign(event.id, nowSeconds(), body),
  };
  const res = await request(url, {
    method: 'POST',
    body: tamper ? body.replace('1', '2') : body,
    headers,
  });
  await res.body.dump();
  return res.statusCode;
}

function receiverSeeing(seen: Event[]) {
  const receiver = createWebhookReceiver({ secrets: secret });
  receiver.on('>', (event) => void seen.push(event));
  return receiver;
}

describe('the receiver in web frameworks', () => {
  it('verifies and dispatches behind express.raw()', async () => {
    const seen: Event[] = [];
    const receiver = receiverSeeing(seen);
    const app = express();
    app.post(
      '/hooks',
      express.raw({ type: 'application/json' }),
      (req, res) => void receiver(req, res),
    );
    const server = app.listen(0, '127.0.0.1');
    await new Promise((resolve) => server.once('listening', resolve));
    defer(() => new Promise((resolve) => server.close(resolve)));
    const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/hooks`;
    const event = createEvent('order.created', { n: 1 });
    expect(await post(url, event)).toBe(204);
    expect(await post(url, createEvent('order.created', { n: 1 }), true)).toBe(401);
    expect(seen).toEqual([event]);
  });

  it('verifies and dispatches in Fastify with the body kept as a Buffer', async () => {
    const seen: Event[] = [];
    const receiver = receiverSeeing(seen);
    const app = Fastify();
    app.addContentTypeParser('application/json', { parseAs: 'buffer' }, (_req, body, done) =>
      done(null, body),
    );
    app.post('/hooks', async (req, reply) => {
      reply.hijack();
      await receiver(Object.assign(req.raw, { rawBody: req.body }), reply.raw);
    });
    defer(() => app.close());
    const address = await app.listen({ port: 0, host: '127.0.0.1' });
    const event = createEvent('order.created', { n: 1 });
    expect(await post(`${address}/hooks`, event)).toBe(204);
    expect(await post(`${address}/hooks`, createEvent('order.created', { n: 1 }), true)).toBe(401);
    expect(seen).toEqual([event]);
  });
});

import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { EventBus } from './event-bus.js';
import { createEventSystem } from './event-system/event-system.js';
import { createHealthHandler, type HealthHandler } from './health.js';
import { MemoryTransport } from './memory-transport.js';
import { configErrorField } from './testing/outcomes.js';
import type { HealthStatus, Transport } from './transport.js';

const quiet = { warn: () => undefined, error: () => undefined };
const closing: (() => Promise<void>)[] = [];
afterEach(async () => {
  await Promise.all(closing.splice(0).map((close) => close()));
});

async function serve(handler: HealthHandler): Promise<string> {
  const server: Server = createServer(handler);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  closing.push(() => new Promise<void>((resolve) => server.close(() => resolve())));
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
}

/** The memory transport, with its health check and publishes replaced. */
function memoryWith(overrides: Partial<Transport>): Transport {
  const memory = new MemoryTransport();
  return {
    info: memory.info,
    connect: () => memory.connect(),
    publish: (event, options) => memory.publish(event, options),
    subscribe: (pattern, options) => memory.subscribe(pattern, options),
    healthCheck: () => memory.healthCheck(),
    publishToDlq: (message, reason) => memory.publishToDlq(message, reason),
    consumeDlq: (handler, options) => memory.consumeDlq(handler, options),
    close: (options) => memory.close(options),
    ...overrides,
  };
}

function busOver(transport: Transport, failureThreshold = 5): EventBus {
  const bus = new EventBus({
    transport,
    logger: quiet,
    retry: { maxAttempts: 1 },
    circuitBreaker: { failureThreshold },
  });
  closing.push(() => bus.close());
  return bus;
}

async function get(url: string): Promise<{ status: number; body: Record<string, unknown> }> {
  const response = await fetch(url);
  return { status: response.status, body: (await response.json()) as Record<string, unknown> };
}

describe('createHealthHandler', () => {
  it('answers /livez 200 and /readyz 200 with each transport’s health and circuit', async () => {
    const bus = busOver(new MemoryTransport());
    await bus.connect();
    const url = await serve(createHealthHandler(bus));

    expect(await get(`${url}/livez`)).toEqual({ status: 200, body: { status: 'ok' } });
    const ready = await get(`${url}/readyz?verbose=1`);
    expect(ready.status).toBe(200);
    expect(ready.body).toMatchObject({
      status: 'ready',
      transports: { memory: { healthy: true, circuit: 'closed' } },
    });
  });

  it('answers /readyz 503 when a transport is unhealthy, while /livez stays 200', async () => {
    const down: HealthStatus = { healthy: false, state: 'reconnecting', message: 'broker away' };
    const bus = busOver(memoryWith({ healthCheck: () => Promise.resolve(down) }));
    const url = await serve(createHealthHandler(bus));

    const ready = await get(`${url}/readyz`);
    expect(ready.status).toBe(503);
    expect(ready.body).toMatchObject({
      status: 'not ready',
      transports: { memory: { healthy: false, state: 'reconnecting', message: 'broker away' } },
    });
    expect((await get(`${url}/livez`)).status).toBe(200);
  });

  it('answers /readyz 503 while the publish circuit is open', async () => {
    const bus = busOver(memoryWith({ publish: () => Promise.reject(new Error('refused')) }), 1);
    await expect(bus.publish('a.b', {})).rejects.toThrow();
    const ready = await get(`${await serve(createHealthHandler(bus))}/readyz`);
    expect(ready.status).toBe(503);
    expect(ready.body).toMatchObject({
      transports: { memory: { healthy: true, circuit: 'open' } },
    });
  });

  it('reports a health check that does not answer within timeoutMs as unhealthy', async () => {
    const bus = busOver(
      memoryWith({ healthCheck: () => new Promise<HealthStatus>(() => undefined) }),
    );
    const ready = await get(`${await serve(createHealthHandler(bus, { timeoutMs: 30 }))}/readyz`);
    expect(ready.status).toBe(503);
    expect(ready.body).toMatchObject({
      transports: { memory: { healthy: false, message: 'the health check took more than 30 ms' } },
    });
  });

  it('reports every transport of an event system by its name', async () => {
    const down: HealthStatus = { healthy: false, state: 'closed' };
    const system = createEventSystem({
      service: 'shop',
      transports: {
        orders: new MemoryTransport(),
        audit: memoryWith({ healthCheck: () => Promise.resolve(down) }),
      },
      routes: [{ pattern: 'audit.>', transport: 'audit' }],
      defaultTransport: 'orders',
      logger: quiet,
    });
    closing.push(() => system.close());
    const ready = await get(`${await serve(createHealthHandler(system))}/readyz`);
    expect(ready.status).toBe(503);
    expect(ready.body).toMatchObject({
      status: 'not ready',
      transports: {
        orders: { healthy: true, circuit: 'closed' },
        audit: { healthy: false, state: 'closed', circuit: 'closed' },
      },
    });
  });

  it('answers 404 for other paths, 405 for other methods, and HEAD without a body', async () => {
    const url = await serve(createHealthHandler(busOver(new MemoryTransport())));
    expect((await fetch(`${url}/metrics`)).status).toBe(404);
    const post = await fetch(`${url}/livez`, { method: 'POST' });
    expect([post.status, post.headers.get('allow')]).toEqual([405, 'GET, HEAD']);
    const head = await fetch(`${url}/livez`, { method: 'HEAD' });
    expect([head.status, await head.text()]).toEqual([200, '']);
  });

  it('refuses what is neither a bus nor an event system, and bad options, naming the field', () => {
    const bus = busOver(new MemoryTransport());
    expect(configErrorField(() => createHealthHandler({} as EventBus))).toBe('target');
    expect(configErrorField(() => createHealthHandler(bus, { timeoutMs: 0 }))).toBe('timeoutMs');
    expect(configErrorField(() => createHealthHandler(bus, { timeout: 5 } as never))).toBe(
      'timeout',
    );
  });
});

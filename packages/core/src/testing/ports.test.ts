import { createServer } from 'node:net';
import { describe, expect, it } from 'vitest';
import { acceptsConnections, freePort, freePorts } from './ports.js';

describe('test ports', () => {
  it('hands out distinct free ports, and tells whether one accepts connections', async () => {
    const ports = await freePorts(5);
    expect(new Set(ports).size).toBe(5);
    const port = await freePort();
    expect(await acceptsConnections(port)).toBe(false);
    const server = createServer();
    await new Promise<void>((resolve) => server.listen(port, '127.0.0.1', resolve));
    try {
      expect(await acceptsConnections(port)).toBe(true);
    } finally {
      await new Promise((resolve) => server.close(resolve));
    }
  });
});

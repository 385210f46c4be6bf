import { randomUUID } from 'node:crypto';
import { WebSocket, type ClientOptions } from 'ws';
import { waitFor } from '@watchtower/core/testing';
import {
  WebSocketHub,
  WebSocketTransport,
  type WebSocketConfig,
  type WebSocketHubOptions,
} from '../src/index.js';

/** Quick timers, so reconnects and keepalive act within a test's time. */
export const FAST_CLIENT: WebSocketConfig = {
  reconnectDelayMs: 20,
  maxReconnectDelayMs: 200,
  pingIntervalMs: 1000,
  pongTimeoutMs: 1000,
  requestTimeoutMs: 3000,
  connectTimeoutMs: 3000,
};

/** A hub on a free port of 127.0.0.1, started. */
export async function startHub(options: WebSocketHubOptions = {}): Promise<WebSocketHub> {
  const hub = new WebSocketHub({ port: 0, ...options });
  await hub.start();
  return hub;
}

/** A connected client of `hub` with quick timers; `overrides` win. */
export async function connectClient(
  hub: WebSocketHub | string,
  overrides: WebSocketConfig = {},
): Promise<WebSocketTransport> {
  const url = typeof hub === 'string' ? hub : hub.url;
  const transport = new WebSocketTransport({ url, ...FAST_CLIENT, ...overrides });
  await transport.connect();
  return transport;
}

/** A raw `ws` client, as a non-Watchtower peer (the Rust client, a script) would be. */
export class RawClient {
  readonly frames: string[] = [];
  closeCode: number | undefined;
  constructor(readonly socket: WebSocket) {
    socket.on('message', (data) => this.frames.push((data as Buffer).toString('utf8')));
    socket.on('close', (code) => (this.closeCode = code));
    socket.on('error', () => undefined);
  }

  static async open(
    url: string,
    options: ClientOptions = {},
    protocols: string[] = [],
  ): Promise<RawClient> {
    const socket = new WebSocket(url, protocols, options);
    const client = new RawClient(socket);
    await new Promise<void>((resolve, reject) => {
      socket.once('open', () => resolve());
      socket.once('error', reject);
    });
    return client;
  }

  send(frame: unknown): void {
    this.socket.send(typeof frame === 'string' ? frame : JSON.stringify(frame));
  }

  /** The parsed frames that have `op` equal to `op`. */
  controls(op: string): Record<string, unknown>[] {
    return this.frames
      .map((text) => JSON.parse(text) as Record<string, unknown>)
      .filter((frame) => frame.op === op);
  }

  async subscribe(id: string, pattern: string): Promise<void> {
    this.send({ op: 'subscribe', id, pattern });
    await waitFor(() => this.controls('subscribed').some((frame) => frame.id === id), {
      message: `the hub confirming ${pattern}`,
    });
  }

  close(): void {
    this.socket.terminate();
  }
}

/** A Rust-format event frame, as the Rust client writes it. */
export function rustEventJson(type: string, payload: unknown, id = randomUUID()): string {
  return JSON.stringify({
    metadata: {
      id,
      event_type: type,
      timestamp: new Date().toISOString(),
      source: 'rust-service',
      correlation_id: null,
    },
    payload,
  });
}

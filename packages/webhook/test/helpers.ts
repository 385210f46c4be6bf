import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterEach } from 'vitest';
import { WebhookClient, type WebhookClientOptions } from '../src/index.js';

/** A node:http server on a random port of 127.0.0.1, closed by `close()`. */
export interface TestServer {
  readonly url: string;
  readonly server: Server;
  close(): Promise<void>;
}

/** Starts `handler` on 127.0.0.1 at a port the OS picks. */
export async function listen(
  handler: (req: IncomingMessage, res: ServerResponse) => void | Promise<void>,
): Promise<TestServer> {
  const server = createServer((req, res) => {
    void handler(req, res);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    server,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

/** Reads a request body whole. */
export async function bodyOf(req: IncomingMessage): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of req as AsyncIterable<Buffer>) chunks.push(chunk);
  return Buffer.concat(chunks);
}

/** Now in whole seconds, as `webhook-timestamp` carries it. */
export function nowSeconds(): number {
  return Math.floor(Date.now() / 1000);
}

/** One request a {@link ScriptedEndpoint} received. */
export interface ReceivedRequest {
  readonly headers: Record<string, string | string[] | undefined>;
  readonly body: string;
}

/** What a scripted endpoint answers: a status, a status with headers, or no answer at all. */
export type ScriptedAnswer = number | { status: number; headers?: Record<string, string> } | 'hang';

/**
 * A local endpoint that answers each request as `script` says (given the request and how many
 * came before it), recording what it received. `hung` holds the responses never answered;
 * `release()` answers them all with 200.
 */
export class ScriptedEndpoint {
  readonly requests: ReceivedRequest[] = [];
  readonly hung: import('node:http').ServerResponse[] = [];
  inFlight = 0;
  maxInFlight = 0;
  script: (request: ReceivedRequest, index: number) => ScriptedAnswer;
  #server: TestServer | undefined;

  constructor(script: (request: ReceivedRequest, index: number) => ScriptedAnswer = () => 200) {
    this.script = script;
  }

  get url(): string {
    return `${(this.#server as TestServer).url}/hook`;
  }

  async start(): Promise<this> {
    this.#server = await listen(async (req, res) => {
      const request = { headers: req.headers, body: (await bodyOf(req)).toString() };
      const index = this.requests.length;
      this.requests.push(request);
      const answer = this.script(request, index);
      if (answer === 'hang') {
        this.inFlight++;
        this.maxInFlight = Math.max(this.maxInFlight, this.inFlight);
        this.hung.push(res);
        return;
      }
      const { status, headers } =
        typeof answer === 'number' ? { status: answer, headers: {} } : answer;
      res.writeHead(status, headers ?? {});
      res.end();
    });
    return this;
  }

  /** Answers every hung request with 200. */
  release(): void {
    for (const res of this.hung.splice(0)) {
      this.inFlight--;
      res.writeHead(200);
      res.end();
    }
  }

  async close(): Promise<void> {
    await this.#server?.close();
  }
}

/** The shared Redis of the integration tests. */
export const REDIS_URL = process.env['WATCHTOWER_REDIS_URL'] ?? 'redis://127.0.0.1:6379';

/** The event id in a request body of the Watchtower wire format. */
export const idOf = (body: string): string =>
  (JSON.parse(body) as { metadata: { id: string } }).metadata.id;

/**
 * What a test file's tests start and must stop: `defer` a cleanup, or start a
 * {@link ScriptedEndpoint} that is closed after the test. Cleanups run after each test, last
 * first.
 */
export function testResources(): {
  defer: (cleanup: () => Promise<unknown>) => void;
  /** A client for local endpoints with retries 1-5 ms apart, closed after the test. */
  client: (options: WebhookClientOptions) => WebhookClient;
  endpoint: (
    script?: (r: ReceivedRequest, i: number) => ScriptedAnswer,
  ) => Promise<ScriptedEndpoint>;
} {
  const cleanups: (() => Promise<unknown>)[] = [];
  afterEach(async () => {
    for (const cleanup of cleanups.splice(0).reverse()) await cleanup().catch(() => undefined);
  });
  return {
    defer: (cleanup) => void cleanups.push(cleanup),
    client: (options) => {
      const client = new WebhookClient({
        allowPrivateAddresses: true,
        deliveryRetry: { minDelayMs: 1, maxDelayMs: 5, jitter: 0 },
        ...options,
      });
      cleanups.push(() => client.close({ timeoutMs: 1000 }));
      return client;
    },
    endpoint: async (script) => {
      const ep = await new ScriptedEndpoint(script).start();
      cleanups.push(() => ep.close());
      return ep;
    },
  };
}

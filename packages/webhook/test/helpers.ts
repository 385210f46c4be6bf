import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';

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

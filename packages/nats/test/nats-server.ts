import { spawn, type ChildProcess } from 'node:child_process';
import { acceptsConnections, freePort, pauseProcess } from '@watchtower/core/testing';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const NATS_SERVER_BIN = process.env['NATS_SERVER_BIN'] ?? '/usr/sbin/nats-server';

/** How a {@link PrivateNatsServer} runs. */
export interface PrivateNatsServerOptions {
  /** Contents of a nats-server configuration file (users, permissions ...). */
  readonly config?: string;
  /**
   * Runs with JetStream.
   * @defaultValue true
   */
  readonly jetstream?: boolean;
}

/**
 * A private nats-server with JetStream, on a random free port and its own storage directory,
 * that a test may kill and restart on the same port. Only the process it started is ever
 * signalled, by pid.
 */
export class PrivateNatsServer {
  #process: ChildProcess | undefined;
  #exited: Promise<void> | undefined;
  #jetstream: boolean;

  private constructor(
    readonly port: number,
    readonly storeDir: string,
    private readonly configFile: string | undefined,
    private readonly jetstream: boolean,
  ) {
    this.#jetstream = jetstream;
  }

  get url(): string {
    return `nats://127.0.0.1:${this.port}`;
  }

  /** Starts a server on a free port; resolves once it accepts connections. */
  static async start(options: PrivateNatsServerOptions = {}): Promise<PrivateNatsServer> {
    const storeDir = await mkdtemp(join(tmpdir(), 'watchtower-nats-'));
    let configFile: string | undefined;
    if (options.config !== undefined) {
      configFile = join(storeDir, 'nats-server.conf');
      await writeFile(configFile, options.config);
    }
    const server = new PrivateNatsServer(
      await freePort(),
      storeDir,
      configFile,
      options.jetstream ?? true,
    );
    await server.#spawn();
    return server;
  }

  /** True while the process runs and accepts connections. */
  async isUp(): Promise<boolean> {
    const child = this.#process;
    if (child === undefined || child.exitCode !== null || child.signalCode !== null) return false;
    return acceptsConnections(this.port);
  }

  /**
   * Stops the process without ending it (SIGSTOP): connections stay open and nothing answers,
   * as with a hung server or a dropped link. `resume()` lets it go on.
   */
  pause(): void {
    const child = this.#process;
    if (child?.pid !== undefined && child.exitCode === null && child.signalCode === null) {
      pauseProcess(child.pid);
    }
  }

  /** Lets a paused server go on (SIGCONT). */
  resume(): void {
    this.#signal('SIGCONT');
  }

  #signal(signal: NodeJS.Signals): void {
    const child = this.#process;
    if (child?.pid !== undefined && child.exitCode === null && child.signalCode === null) {
      process.kill(child.pid, signal);
    }
  }

  /** Kills the server (SIGKILL: a crash, not a shutdown) and waits for the process to end. */
  async kill(): Promise<void> {
    const child = this.#process;
    if (child === undefined) return;
    this.#process = undefined;
    if (child.exitCode === null && child.signalCode === null && child.pid !== undefined) {
      process.kill(child.pid, 'SIGKILL');
    }
    await this.#exited;
  }

  /**
   * Starts the server again on the same port with the same storage; `jetstream` turns
   * JetStream on or off (default: as at start).
   */
  async restart(options: { jetstream?: boolean } = {}): Promise<void> {
    await this.kill();
    this.#jetstream = options.jetstream ?? this.jetstream;
    await this.#spawn();
  }

  /** Kills the server and removes its storage. */
  async stop(): Promise<void> {
    await this.kill();
    await rm(this.storeDir, { recursive: true, force: true });
  }

  async #spawn(): Promise<void> {
    const args = ['-a', '127.0.0.1', '-p', String(this.port), '-sd', this.storeDir];
    if (this.#jetstream) args.push('-js');
    if (this.configFile !== undefined) args.push('-c', this.configFile);
    const child = spawn(NATS_SERVER_BIN, args, { stdio: ['ignore', 'ignore', 'pipe'] });
    let output = '';
    child.stderr?.on('data', (chunk: Buffer) => {
      if (output.length < 10_000) output += chunk.toString();
    });
    this.#process = child;
    this.#exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
    const deadline = Date.now() + 10_000;
    // The port may still be held by the previous process for a moment after a restart.
    while (!(await acceptsConnections(this.port))) {
      if (child.exitCode !== null || Date.now() > deadline) {
        await this.kill();
        throw new Error(`nats-server on port ${this.port} did not start:\n${output}`);
      }
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
  }
}

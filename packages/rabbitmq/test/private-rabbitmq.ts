/**
 * A private RabbitMQ node on random ports with its own data directory, that a test may kill
 * (SIGKILL, a crash) and start again with the same data. It shares the machine's epmd with
 * the local broker and touches nothing else of it; only the process it started is signalled,
 * by pid. A node takes several seconds to start.
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { acceptsConnections, freePort, waitFor } from '@watchtower/core/testing';

const RABBITMQ_SERVER =
  process.env['RABBITMQ_SERVER_BIN'] ?? '/usr/lib/rabbitmq/bin/rabbitmq-server';
const START_TIMEOUT_MS = 60_000;

export class PrivateRabbitMQ {
  readonly #dir: string;
  #pid: number | undefined;

  private constructor(
    readonly port: number,
    private readonly distPort: number,
  ) {
    this.#dir = mkdtempSync(join(tmpdir(), 'wt-rabbitmq-'));
    writeFileSync(join(this.#dir, 'enabled_plugins'), '[].\n');
  }

  get url(): string {
    return `amqp://guest:guest@127.0.0.1:${this.port}`;
  }

  static async start(): Promise<PrivateRabbitMQ> {
    const node = new PrivateRabbitMQ(await freePort(), await freePort());
    await node.startProcess();
    return node;
  }

  /** Starts the node (again, on the same ports and data); resolves once it takes connections. */
  async startProcess(): Promise<void> {
    const pidFile = join(this.#dir, 'pid');
    rmSync(pidFile, { force: true });
    const child = spawn(RABBITMQ_SERVER, [], {
      cwd: this.#dir,
      detached: false,
      stdio: 'ignore',
      env: {
        ...process.env,
        RABBITMQ_NODENAME: `watchtower-faults-${this.port}@localhost`,
        RABBITMQ_NODE_PORT: String(this.port),
        RABBITMQ_DIST_PORT: String(this.distPort),
        RABBITMQ_MNESIA_BASE: join(this.#dir, 'mnesia'),
        RABBITMQ_LOG_BASE: join(this.#dir, 'log'),
        RABBITMQ_ENABLED_PLUGINS_FILE: join(this.#dir, 'enabled_plugins'),
        RABBITMQ_CONFIG_FILE: join(this.#dir, 'rabbitmq'),
        RABBITMQ_ADVANCED_CONFIG_FILE: join(this.#dir, 'advanced.config'),
        RABBITMQ_PID_FILE: pidFile,
      },
    });
    child.unref();
    await waitFor(() => acceptsConnections(this.port), {
      timeoutMs: START_TIMEOUT_MS,
      intervalMs: 200,
      message: `RabbitMQ accepting connections on port ${this.port}`,
    });
    // The node writes its own pid (the Erlang VM's, not the start script's).
    await waitFor(() => existsSync(pidFile) && readFileSync(pidFile, 'utf8').trim() !== '', {
      timeoutMs: START_TIMEOUT_MS,
      message: 'the RabbitMQ pid file',
    });
    this.#pid = Number(readFileSync(pidFile, 'utf8').trim());
  }

  /** SIGKILLs the node and waits until its port is closed. */
  async kill(): Promise<void> {
    const pid = this.#pid;
    if (pid === undefined) return;
    this.#pid = undefined;
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      return;
    }
    await waitFor(async () => !(await acceptsConnections(this.port)), {
      timeoutMs: START_TIMEOUT_MS,
      message: `RabbitMQ on port ${this.port} gone`,
    });
  }

  /** Kills the node and removes its data. */
  async stop(): Promise<void> {
    await this.kill();
    rmSync(this.#dir, { recursive: true, force: true });
  }
}

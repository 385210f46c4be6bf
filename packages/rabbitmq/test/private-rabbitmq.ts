/**
 * A private RabbitMQ node on random ports (AMQP and distribution) with its own folder (data,
 * logs, an empty plugin list, no configuration file), that a test may kill (SIGKILL, a crash)
 * and start again with the same data; the fault suite runs one, the cluster tests three
 * (rabbitmq-cluster.ts). It shares the machine's epmd with the local broker and touches
 * nothing else of it: its Erlang cookie is its own (in the `home` it runs with, which
 * `rabbitmqctl` here is given too), `rabbitmqctl` always names the node, and only the process
 * it started is signalled, by pid. `stop()` kills it and removes its folder, and a process
 * exit hook does the same for a node still running when a test run ends. A node takes several
 * seconds to start.
 */
import { execFile, spawn } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { acceptsConnections, freePorts, waitFor } from '@watchtower/core/testing';

const run = promisify(execFile);
const RABBITMQ_BIN = process.env['RABBITMQ_BIN_DIR'] ?? '/usr/lib/rabbitmq/bin';
const START_TIMEOUT_MS = 60_000;

/** Where a node keeps its files and which cookie it runs with. */
export interface PrivateRabbitMQOptions {
  /** The node's folder (data, logs, pid file); a new temporary folder when not given. */
  readonly dir?: string;
  /**
   * The `HOME` of the node and of `rabbitmqctl`: its `.erlang.cookie` is the node's cookie,
   * which the nodes of one cluster share. The node's folder when not given.
   */
  readonly home?: string;
  /** The node name's first part, before the AMQP port. @defaultValue `'watchtower-faults'` */
  readonly label?: string;
}

/** The nodes of this process still running, for the exit hook. */
const running = new Set<PrivateRabbitMQ>();
let exitHookInstalled = false;

function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.once('exit', () => {
    for (const node of running) {
      node.killNow();
      node.removeFolder();
    }
  });
}

/** Writes an Erlang cookie (a random one) into `home`, unless one is there. */
export function writeErlangCookie(home: string): void {
  const file = join(home, '.erlang.cookie');
  if (existsSync(file)) return;
  const cookie = Array.from({ length: 20 }, () =>
    String.fromCharCode(65 + Math.floor(Math.random() * 26)),
  ).join('');
  // Erlang refuses a cookie file that others can read.
  writeFileSync(file, cookie, { mode: 0o400 });
}

export class PrivateRabbitMQ {
  readonly #dir: string;
  readonly #home: string;
  #pid: number | undefined;

  private constructor(
    readonly port: number,
    private readonly distPort: number,
    options: PrivateRabbitMQOptions,
  ) {
    this.#dir = options.dir ?? mkdtempSync(join(tmpdir(), 'wt-rabbitmq-'));
    mkdirSync(this.#dir, { recursive: true });
    this.#home = options.home ?? this.#dir;
    writeErlangCookie(this.#home);
    writeFileSync(join(this.#dir, 'enabled_plugins'), '[].\n');
    this.name = `${options.label ?? 'watchtower-faults'}-${port}@localhost`;
  }

  /** The Erlang node name, as RabbitMQ reports it (a quorum queue's leader, cluster members). */
  readonly name: string;

  get url(): string {
    return `amqp://guest:guest@127.0.0.1:${this.port}`;
  }

  /** True while the node's process is meant to run (started and not killed). */
  get running(): boolean {
    return this.#pid !== undefined;
  }

  /** A node on free ports, not started yet. */
  static async create(options: PrivateRabbitMQOptions = {}): Promise<PrivateRabbitMQ> {
    const [port, distPort] = (await freePorts(2)) as [number, number];
    return new PrivateRabbitMQ(port, distPort, options);
  }

  /** A node with a folder of its own, started. */
  static async start(): Promise<PrivateRabbitMQ> {
    const node = await PrivateRabbitMQ.create();
    await node.startProcess();
    return node;
  }

  /** Starts the node (again, on the same ports and data); resolves once it takes connections. */
  async startProcess(): Promise<void> {
    const pidFile = join(this.#dir, 'pid');
    rmSync(pidFile, { force: true });
    const child = spawn(join(RABBITMQ_BIN, 'rabbitmq-server'), [], {
      cwd: this.#dir,
      detached: false,
      stdio: 'ignore',
      env: {
        ...process.env,
        HOME: this.#home,
        RABBITMQ_NODENAME: this.name,
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
    running.add(this);
    installExitHook();
    // The node writes its own pid (the Erlang VM's, not the start script's) early in its boot.
    await waitFor(() => existsSync(pidFile) && readFileSync(pidFile, 'utf8').trim() !== '', {
      timeoutMs: START_TIMEOUT_MS,
      message: `the pid file of RabbitMQ node ${this.name}`,
    });
    this.#pid = Number(readFileSync(pidFile, 'utf8').trim());
    await this.waitAcceptingConnections();
  }

  /** Resolves once the node takes AMQP connections (after a start, or a `start_app`). */
  async waitAcceptingConnections(): Promise<void> {
    await waitFor(() => acceptsConnections(this.port), {
      timeoutMs: START_TIMEOUT_MS,
      intervalMs: 200,
      message: `RabbitMQ accepting connections on port ${this.port}`,
    });
  }

  /** Runs `rabbitmqctl` against this node (and only it); resolves with its output. */
  async ctl(args: readonly string[], timeoutMs = START_TIMEOUT_MS): Promise<string> {
    const { stdout } = await run(join(RABBITMQ_BIN, 'rabbitmqctl'), ['-n', this.name, ...args], {
      env: { ...process.env, HOME: this.#home },
      timeout: timeoutMs,
    });
    return stdout;
  }

  /** SIGKILLs the node and waits until its process is gone and its port closed. */
  async kill(): Promise<void> {
    const pid = this.#pid;
    if (pid === undefined) return;
    this.killNow();
    await waitFor(async () => !isAlive(pid) && !(await acceptsConnections(this.port)), {
      timeoutMs: START_TIMEOUT_MS,
      message: `RabbitMQ on port ${this.port} gone`,
    });
  }

  /** Sends SIGKILL without waiting (the exit hook). */
  killNow(): void {
    const pid = this.#pid;
    this.#pid = undefined;
    running.delete(this);
    if (pid === undefined) return;
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // Gone already.
    }
  }

  /** Kills the node and removes its data. */
  async stop(): Promise<void> {
    await this.kill();
    this.removeFolder();
  }

  /** Removes the node's folder (`stop()`, and the exit hook). */
  removeFolder(): void {
    rmSync(this.#dir, { recursive: true, force: true, maxRetries: 3 });
  }
}

/** True while a process with `pid` exists (signal 0 checks without signalling). */
function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

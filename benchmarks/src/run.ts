import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  measureScenario,
  printSlowest,
  reportRows,
  startOutput,
  type ResultRow,
  type RoundOptions,
  type Scenario,
} from './harness.js';

/**
 * `pnpm bench [memory nats redis ...]`: runs the scenarios of the named groups (all by
 * default). BENCH_SCALE (default 1) scales every count, e.g. 0.1 for a quick run;
 * BENCH_ROUNDS (default 5) is how often each side of a scenario runs at most: after 4 rounds a
 * scenario that has taken more than BENCH_SECONDS (default 2) stops, so that a whole run stays
 * within minutes (a scenario that names its own `rounds` runs at least those); BENCH_ONLY keeps
 * the scenarios whose name contains it.
 *
 * Each scenario runs in a process of its own (both of its sides, alternating), as a service
 * runs its one bus: run after forty others in one process, a scenario measured the JIT and
 * heap those left (the WebSocket user-level row ran at 0.77x raw there and at 1.00x alone).
 * The clusters group shares one process, which starts each broker's cluster once.
 * `BENCH_ISOLATE=0` runs everything in this process instead.
 */
const scale = Number(process.env['BENCH_SCALE'] ?? '1');
if (!Number.isFinite(scale) || scale <= 0) throw new Error('BENCH_SCALE must be a positive number');
const rounds = Number(process.env['BENCH_ROUNDS'] ?? '5');
if (!Number.isInteger(rounds) || rounds < 1) {
  throw new Error('BENCH_ROUNDS must be a positive integer');
}
const secondsPerScenario = Number(process.env['BENCH_SECONDS'] ?? '2');
if (!(secondsPerScenario > 0)) throw new Error('BENCH_SECONDS must be a positive number');
const isolate = process.env['BENCH_ISOLATE'] !== '0';
const roundOptions: RoundOptions = { rounds, secondsPerScenario };

interface Group {
  /** The group's scenarios (its module is loaded only when asked for). */
  scenarios: () => Promise<Scenario[]>;
  /** Run once per `pnpm bench`, before the group's first scenario. */
  prepare?: () => Promise<void>;
  /** Run once in the process that ran the group's scenarios, after the last. */
  finish?: () => Promise<void>;
  /** All scenarios in one process (they share what `prepare` or the first one started). */
  oneProcess?: boolean;
}

const removeLeftovers = async (): Promise<void> => {
  await (await import('./nats.js')).removeNatsLeftovers();
  await (await import('./redis.js')).removeRedisLeftovers();
};

const registry: Record<string, Group> = {
  memory: { scenarios: async () => (await import('./memory.js')).memoryScenarios(scale) },
  // The EventSystem layer beside the plain EventBus, on memory.
  'event-system': {
    scenarios: async () => (await import('./event-system.js')).eventSystemScenarios(scale),
  },
  nats: {
    prepare: async () => (await import('./nats.js')).removeNatsLeftovers(),
    scenarios: async () => (await import('./nats.js')).natsScenarios(scale),
  },
  redis: {
    prepare: async () => (await import('./redis.js')).removeRedisLeftovers(),
    scenarios: async () => (await import('./redis.js')).redisScenarios(scale),
  },
  // Transport-level and user-level RabbitMQ scenarios, beside raw amqplib.
  rabbitmq: { scenarios: async () => (await import('./rabbitmq.js')).rabbitmqScenarios(scale) },
  // WebSocketHub and WebhookClient, beside raw `ws` (a relay) and raw undici; no broker needed.
  websocket: {
    scenarios: async () => (await import('./websocket.js')).websocketScenarios(scale),
  },
  webhook: { scenarios: async () => (await import('./webhook.js')).webhookScenarios(scale) },
  // What a user gets: the README's code with defaults beside the raw clients.
  user: {
    prepare: removeLeftovers,
    scenarios: async () => (await import('./user-level.js')).userLevelScenarios(scale),
  },
  // Against private 3-node clusters, started once for the group, beside the single local node.
  clusters: {
    scenarios: async () => (await import('./clusters.js')).clusterScenarios(scale),
    finish: async () => (await import('./clusters.js')).stopClusters(),
    oneProcess: true,
  },
  // OpenTelemetry: the memory and NATS core user-level rows with no provider and with the SDK
  // on, each beside the same bus with telemetry: false.
  telemetry: {
    prepare: async () => (await import('./nats.js')).removeNatsLeftovers(),
    scenarios: async () => (await import('./telemetry.js')).telemetryScenarios(scale),
  },
};

const only = process.env['BENCH_ONLY'];
const keep = (scenario: Scenario): boolean => only === undefined || scenario.name.includes(only);

/** Runs the scenarios of `group` at `indices` (of its list) here; gives each one's rows. */
async function measureHere(group: Group, indices: readonly number[]): Promise<ResultRow[][]> {
  const scenarios = await group.scenarios();
  const rows: ResultRow[][] = [];
  for (const index of indices) {
    rows.push(await measureScenario(scenarios[index] as Scenario, roundOptions));
  }
  return rows;
}

/** {@link measureHere} in a child process of this script. */
async function measureInChild(
  groupName: string,
  indices: readonly number[],
): Promise<ResultRow[][]> {
  const folder = mkdtempSync(join(tmpdir(), 'watchtower-bench-'));
  const rowsFile = join(folder, 'rows.json');
  try {
    const code = await new Promise<number | null>((resolve, reject) => {
      const child = spawn(
        process.execPath,
        [...process.execArgv, fileURLToPath(import.meta.url), '--child'],
        {
          stdio: 'inherit',
          env: {
            ...process.env,
            BENCH_CHILD: JSON.stringify({ group: groupName, indices, rowsFile }),
          },
        },
      );
      child.once('error', reject);
      child.once('exit', resolve);
    });
    if (code !== 0) {
      throw new Error(
        `the benchmark process of ${groupName} [${indices.join(', ')}] exited with ${String(code)}`,
      );
    }
    return JSON.parse(readFileSync(rowsFile, 'utf8')) as ResultRow[][];
  } finally {
    rmSync(folder, { recursive: true, force: true });
  }
}

const childTask = process.env['BENCH_CHILD'];
if (childTask !== undefined) {
  const { group, indices, rowsFile } = JSON.parse(childTask) as {
    group: string;
    indices: number[];
    rowsFile: string;
  };
  const chosen = registry[group] as Group;
  try {
    writeFileSync(rowsFile, JSON.stringify(await measureHere(chosen, indices)));
  } finally {
    await chosen.finish?.();
  }
} else {
  const wanted = process.argv.slice(2).filter((arg) => !arg.startsWith('-'));
  const groupNames = wanted.length > 0 ? wanted : Object.keys(registry);
  const unknown = groupNames.filter((name) => registry[name] === undefined);
  if (unknown.length > 0) {
    throw new Error(
      `unknown benchmark group(s): ${unknown.join(', ')}; known: ${Object.keys(registry).join(', ')}`,
    );
  }
  const outputFile = fileURLToPath(new URL('../results/latest.jsonl', import.meta.url));
  startOutput(outputFile);
  const started = performance.now();
  const all: ResultRow[] = [];
  for (const groupName of groupNames) {
    const group = registry[groupName] as Group;
    const indices = (await group.scenarios()).flatMap((scenario, i) => (keep(scenario) ? [i] : []));
    if (indices.length === 0) continue;
    await group.prepare?.();
    const units = group.oneProcess === true ? [indices] : indices.map((index) => [index]);
    for (const unit of units) {
      const measured = isolate
        ? await measureInChild(groupName, unit)
        : await measureHere(group, unit).finally(() => group.finish?.());
      for (const rows of measured) {
        reportRows(rows, outputFile);
        all.push(...rows);
      }
    }
  }
  printSlowest(all);
  const seconds = Math.round((performance.now() - started) / 1000);
  console.log(`\nresults written to ${outputFile} (${seconds} s)`);
}

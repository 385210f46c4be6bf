import { fileURLToPath } from 'node:url';
import { clusterScenarios, stopClusters } from './clusters.js';
import { eventSystemScenarios } from './event-system.js';
import { runScenarios, type Scenario } from './harness.js';
import { memoryScenarios } from './memory.js';
import { natsScenarios, removeNatsLeftovers } from './nats.js';
import { rabbitmqScenarios } from './rabbitmq.js';
import { redisScenarios, removeRedisLeftovers } from './redis.js';
import { telemetryScenarios } from './telemetry.js';
import { userLevelScenarios } from './user-level.js';
import { webhookScenarios } from './webhook.js';
import { websocketScenarios } from './websocket.js';

/**
 * `pnpm bench [memory nats redis ...]`: runs the scenarios of the named transports (all that
 * exist by default). BENCH_SCALE (default 1) scales every count, e.g. 0.1 for a quick run;
 * BENCH_ROUNDS (default 5) is how often each side of a scenario runs at most: after 3 rounds a
 * scenario that has taken more than BENCH_SECONDS (default 2) stops, so that a whole run stays
 * within minutes; BENCH_ONLY keeps the scenarios whose name contains it.
 */
const scale = Number(process.env['BENCH_SCALE'] ?? '1');
if (!Number.isFinite(scale) || scale <= 0) throw new Error('BENCH_SCALE must be a positive number');
const rounds = Number(process.env['BENCH_ROUNDS'] ?? '5');
if (!Number.isInteger(rounds) || rounds < 1) {
  throw new Error('BENCH_ROUNDS must be a positive integer');
}
const secondsPerScenario = Number(process.env['BENCH_SECONDS'] ?? '2');
if (!(secondsPerScenario > 0)) throw new Error('BENCH_SECONDS must be a positive number');

const registry: Record<string, () => Promise<Scenario[]>> = {
  memory: () => Promise.resolve(memoryScenarios(scale)),
  // The EventSystem layer beside the plain EventBus, on memory.
  'event-system': () => Promise.resolve(eventSystemScenarios(scale)),
  nats: async () => {
    await removeNatsLeftovers();
    return natsScenarios(scale);
  },
  redis: async () => {
    await removeRedisLeftovers();
    return redisScenarios(scale);
  },
  // Transport-level and user-level RabbitMQ scenarios, beside raw amqplib.
  rabbitmq: () => Promise.resolve(rabbitmqScenarios(scale)),
  // WebSocketHub and WebhookClient, beside raw `ws` (a relay) and raw undici; no broker needed.
  websocket: () => Promise.resolve(websocketScenarios(scale)),
  webhook: () => Promise.resolve(webhookScenarios(scale)),
  // What a user gets: the README's code with defaults beside the raw clients (NATS and Redis).
  user: async () => {
    await removeNatsLeftovers();
    await removeRedisLeftovers();
    return userLevelScenarios(scale);
  },
  // Against private 3-node clusters started per run, beside the single local node.
  clusters: () => Promise.resolve(clusterScenarios(scale)),
  // OpenTelemetry: the memory and NATS core user-level rows with no provider and with the SDK
  // on, each beside the same bus with telemetry: false.
  telemetry: async () => {
    await removeNatsLeftovers();
    return telemetryScenarios(scale);
  },
};

const wanted = process.argv.slice(2).filter((arg) => !arg.startsWith('-'));
const names = wanted.length > 0 ? wanted : Object.keys(registry);
const unknown = names.filter((name) => registry[name] === undefined);
if (unknown.length > 0) {
  throw new Error(
    `unknown benchmark group(s): ${unknown.join(', ')}; known: ${Object.keys(registry).join(', ')}`,
  );
}

const scenarios: Scenario[] = [];
for (const name of names)
  scenarios.push(...(await (registry[name] as () => Promise<Scenario[]>)()));
const only = process.env['BENCH_ONLY'];
const chosen = only === undefined ? scenarios : scenarios.filter((s) => s.name.includes(only));
const outputFile = fileURLToPath(new URL('../results/latest.jsonl', import.meta.url));
const started = performance.now();
try {
  await runScenarios(chosen, { outputFile, rounds, secondsPerScenario });
} finally {
  await stopClusters();
}
const seconds = Math.round((performance.now() - started) / 1000);
console.log(`\nresults written to ${outputFile} (${seconds} s)`);

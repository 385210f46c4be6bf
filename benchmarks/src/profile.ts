/**
 * `pnpm profile <scenario substring> [raw|watchtower] [rounds]`: runs one side of the matching
 * scenarios (of every group) a few times, for `node --cpu-prof`; prints each run's CPU per event.
 */
import { memoryScenarios } from './memory.js';
import { natsScenarios } from './nats.js';
import { redisScenarios } from './redis.js';
import { userLevelScenarios } from './user-level.js';

const [match = '', side = 'watchtower', roundsArg = '3'] = process.argv.slice(2);
const scale = Number(process.env['BENCH_SCALE'] ?? '1');
const all = [
  ...userLevelScenarios(scale),
  ...memoryScenarios(scale),
  ...natsScenarios(scale),
  ...redisScenarios(scale),
];
const chosen = all.filter((scenario) => scenario.name.includes(match));
if (chosen.length === 0) throw new Error(`no scenario matches ${JSON.stringify(match)}`);
for (const scenario of chosen) {
  const run = side === 'raw' ? scenario.raw : scenario.watchtower;
  if (run === undefined) continue;
  for (let round = 0; round < Number(roundsArg); round++) {
    const measured = await run();
    const cpu = measured.cpuUs === undefined ? '-' : (measured.cpuUs / measured.n).toFixed(2);
    console.log(
      `${scenario.name} [${side}] ${Math.round((measured.n / measured.elapsedMs) * 1000)}/s ${cpu} µs/ev`,
    );
  }
}

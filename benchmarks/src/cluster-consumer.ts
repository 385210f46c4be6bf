import { NatsSubscriber } from '@watchtower/nats';
import { RedisSubscriber } from '@watchtower/redis';

/*
 * A consumer process of the cluster benchmark (clusters.ts): joins the group `bench` on
 * `user.created` with the bus options of BENCH_CONFIG, prints `ready` once subscribed, then its
 * count of handled events every 50 ms while it changes, and closes on SIGTERM.
 */

const broker = process.env['BENCH_BROKER'];
const config = JSON.parse(process.env['BENCH_CONFIG'] ?? '{}') as Record<string, unknown>;
const quiet = { warn: () => undefined, error: () => undefined };
const options = { ...config, logger: quiet };
const bus = broker === 'nats' ? new NatsSubscriber(options) : new RedisSubscriber(options);

let handled = 0;
let reported = 0;
await bus.subscribe(
  'user.created',
  () => {
    handled++;
  },
  { group: 'bench' },
);
process.stdout.write('ready\n');
const timer = setInterval(() => {
  if (handled === reported) return;
  reported = handled;
  process.stdout.write(`${handled}\n`);
}, 50);
process.once('SIGTERM', () => {
  clearInterval(timer);
  void bus.close().finally(() => process.exit(0));
});

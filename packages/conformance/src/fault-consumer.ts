/**
 * A consumer process of the fault suite: the transport's subscriber entry point in a group, as
 * a service runs it, writing each handled event's number to `WATCHTOWER_FAULT_OUT` before its
 * handler returns. The entry point is the export `WATCHTOWER_FAULT_EXPORT` of the module at
 * `WATCHTOWER_FAULT_MODULE`, built with the options in `WATCHTOWER_FAULT_CONFIG` (JSON). Run
 * with `node --import tsx`; see {@link faultConsumerCommand}.
 */
import { appendFileSync } from 'node:fs';
import { pathToFileURL } from 'node:url';
import type { EventBus } from '@watchtower/core';

const env = (name: string): string => {
  const value = process.env[name];
  if (value === undefined) throw new Error(`${name} is not set`);
  return value;
};

const out = env('WATCHTOWER_FAULT_OUT');
const module = (await import(pathToFileURL(env('WATCHTOWER_FAULT_MODULE')).href)) as Record<
  string,
  new (options: Record<string, unknown>) => EventBus
>;
const Subscriber = module[env('WATCHTOWER_FAULT_EXPORT')];
if (Subscriber === undefined) throw new Error('the subscriber export was not found');
const options = JSON.parse(env('WATCHTOWER_FAULT_CONFIG')) as Record<string, unknown>;
const bus = new Subscriber({
  ...options,
  logger: { warn: () => undefined, error: () => undefined },
});

await bus.subscribe(
  'fault.event',
  (event) => {
    appendFileSync(out, `${(event.payload as { n: number }).n}\n`);
  },
  { group: 'fault-workers', concurrency: 16 },
);
process.stdout.write('ready\n');
process.once('SIGTERM', () => {
  void bus.close({ timeoutMs: 5000 }).finally(() => process.exit(0));
});

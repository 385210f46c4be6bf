/**
 * The telemetry group: what OpenTelemetry costs per event, on the user-level memory and NATS
 * core scenarios (the README's code with defaults, a synchronous handler). Each scenario's
 * `raw` side is the same bus with `telemetry: false`, so the table's ratio is the cost of the
 * variant alone:
 *
 * - `no provider`: the default, with `@opentelemetry/api` installed and nothing registered;
 *   the bus holds no telemetry, so this must match `telemetry: false` within noise;
 * - `SDK on`: the real SDK, every span sampled (a batch span processor with an exporter that
 *   drops what it gets) and every metric recorded (a reader that is never collected).
 *
 * The CPU µs per event column (`process.cpuUsage`) is the figure to read: the SDK's cost is
 * CPU in this process.
 */
import {
  AlwaysOnSampler,
  BasicTracerProvider,
  BatchSpanProcessor,
  type ReadableSpan,
  type SpanExporter,
} from '@opentelemetry/sdk-trace-base';
import { MeterProvider, MetricReader } from '@opentelemetry/sdk-metrics';
import { EventBus, MemoryTransport, type Event, type TelemetryOptions } from '@watchtower/core';
import { NatsSubscriber } from '@watchtower/nats';
import type { Measurement, Scenario } from './harness.js';
import { names as natsNames } from './nats.js';
import {
  NATS_URL,
  Probe,
  TYPE,
  drive,
  quietLogger,
  userPayload,
  type UserCreated,
} from './user-level.js';

/** Publishes outstanding at most, as in the user-level group. */
const WINDOW = 100;

/** Exports nothing: the cost measured is the SDK's, not an exporter's I/O. */
const dropSpans: SpanExporter = {
  export: (_spans: ReadableSpan[], done) => done({ code: 0 }),
  shutdown: () => Promise.resolve(),
};

class IdleReader extends MetricReader {
  protected override onShutdown(): Promise<void> {
    return Promise.resolve();
  }
  protected override onForceFlush(): Promise<void> {
    return Promise.resolve();
  }
}

type Variant = 'off' | 'no provider' | 'SDK on';

/** The bus's `telemetry` option for `variant`, and what to shut down after the run. */
function telemetryOf(variant: Variant): {
  option: TelemetryOptions | false | undefined;
  shutdown: () => Promise<void>;
} {
  if (variant === 'off') return { option: false, shutdown: () => Promise.resolve() };
  if (variant === 'no provider') return { option: undefined, shutdown: () => Promise.resolve() };
  const tracerProvider = new BasicTracerProvider({
    sampler: new AlwaysOnSampler(),
    spanProcessors: [new BatchSpanProcessor(dropSpans)],
  });
  const meterProvider = new MeterProvider({ readers: [new IdleReader()] });
  return {
    option: { tracerProvider, meterProvider },
    shutdown: async () => {
      await tracerProvider.shutdown();
      await meterProvider.shutdown();
    },
  };
}

async function memory(count: number, variant: Variant): Promise<Measurement> {
  const { option, shutdown } = telemetryOf(variant);
  const bus = new EventBus({
    transport: new MemoryTransport(),
    logger: quietLogger,
    ...(option === undefined ? {} : { telemetry: option }),
  });
  const probe = new Probe(count, `memory events (telemetry ${variant})`);
  await bus.subscribe(TYPE, (event: Event) => probe.handle(event.payload as UserCreated));
  const measured = await drive(probe, (i) => bus.publish(TYPE, userPayload(i)));
  await bus.close();
  await shutdown();
  return measured;
}

async function natsCore(count: number, variant: Variant): Promise<Measurement> {
  const { option, shutdown } = telemetryOf(variant);
  const n = natsNames();
  const bus = (): NatsSubscriber =>
    new NatsSubscriber({
      servers: NATS_URL,
      mode: 'core',
      subjectPrefix: n.prefix,
      dlqPrefix: `${n.prefix}_dlq`,
      logger: quietLogger,
      ...(option === undefined ? {} : { telemetry: option }),
    });
  const [pub, sub] = [bus(), bus()];
  const probe = new Probe(count, `NATS core events (telemetry ${variant})`);
  await sub.subscribe(TYPE, (event: Event) => probe.handle(event.payload as UserCreated));
  await pub.connect();
  const measured = await drive(probe, (i) => pub.publish(TYPE, userPayload(i)));
  await Promise.all([pub.close(), sub.close()]);
  await shutdown();
  return measured;
}

export function telemetryScenarios(scale: number): Scenario[] {
  const at = (count: number): number => Math.max(WINDOW, Math.round(count * scale));
  const rows: [
    string,
    string,
    (count: number, variant: Variant) => Promise<Measurement>,
    number,
  ][] = [
    ['memory', 'EventBus on memory', memory, 40_000],
    ['nats', 'NatsSubscriber core', natsCore, 40_000],
  ];
  // With the SDK on a run is several times slower: half the events give as many rounds.
  return rows.flatMap(([transport, what, run, count]) =>
    (['no provider', 'SDK on'] as const).map((variant) => {
      const events = variant === 'SDK on' ? count / 2 : count;
      return {
        name: `telemetry: ${what}, ${variant} (raw: telemetry false)`,
        transport,
        raw: () => run(at(events), 'off'),
        watchtower: () => run(at(events), variant),
      };
    }),
  );
}

/**
 * The OpenTelemetry SDK as the telemetry tests use it: a metric reader collected on demand,
 * a counter's total, and the shape of spans a publisher process prints.
 */
import { MetricReader, type ResourceMetrics } from '@opentelemetry/sdk-metrics';

/** A reader the test collects when it wants (`await reader.collect()`). */
export class PullReader extends MetricReader {
  protected override onShutdown(): Promise<void> {
    return Promise.resolve();
  }
  protected override onForceFlush(): Promise<void> {
    return Promise.resolve();
  }
}

/** The sum of a counter's points over all attributes. */
export function counterTotal(metrics: ResourceMetrics, name: string): number {
  let sum = 0;
  for (const scope of metrics.scopeMetrics) {
    for (const metric of scope.metrics) {
      if (metric.descriptor.name !== name) continue;
      for (const point of metric.dataPoints) sum += point.value as number;
    }
  }
  return sum;
}

/** A span as a publisher process prints it. */
export interface PrintedSpan {
  name: string;
  kind: number;
  traceId: string;
  spanId: string;
  parentSpanId: string | undefined;
  attributes: Record<string, unknown>;
}

/** What a publisher process prints. */
export interface PublisherReport {
  spans: PrintedSpan[];
  published: number;
}

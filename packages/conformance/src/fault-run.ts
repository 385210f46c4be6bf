/**
 * The fault suite's one run: N events published through a bus while a group of consumer
 * processes handles them, with faults injected on a schedule (the broker killed and started
 * again, a consumer SIGKILLed and started again). It counts what a user cares about: publishes
 * confirmed, publishes rejected (by code), events handled, confirmed events never handled
 * (lost) and deliveries beyond the first (duplicates). A transport's fault test gives it the
 * broker, the publisher and the consumer command, and fails on any loss.
 *
 * A consumer process is told where to write by the environment (`WATCHTOWER_FAULT_OUT`, one
 * line per handled event: its number, appended synchronously before the handler returns, so
 * a handled event is on record even when the process is killed right after), prints `ready`
 * once subscribed, and closes on SIGTERM.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { isWatchtowerError } from '@watchtower/core';
import { expect } from 'vitest';

/** A broker the run may kill and start again. */
export interface FaultBroker {
  kill(): Promise<void>;
  start(): Promise<void>;
}

/** What publishes event number `n` and resolves once the broker confirmed it. */
export interface FaultPublisher {
  publish(n: number): Promise<void>;
  close(): Promise<void>;
}

/** One fault, injected once `at` (a share of the events) have been published. */
export type FaultStep =
  | { readonly at: number; readonly kind: 'restart-broker'; readonly downMs: number }
  | { readonly at: number; readonly kind: 'kill-consumer'; readonly consumer: number };

export interface FaultRunOptions {
  readonly name: string;
  readonly events: number;
  readonly consumers: number;
  readonly broker: FaultBroker;
  /** Called once the consumers are ready. */
  readonly publisher: () => Promise<FaultPublisher>;
  /** The command of consumer `index`; the run adds `WATCHTOWER_FAULT_OUT` to its environment. */
  readonly consumer: (index: number) => {
    command: string;
    args: readonly string[];
    env?: Record<string, string>;
  };
  readonly faults: readonly FaultStep[];
  /** Publishes outstanding at most. @defaultValue 500 */
  readonly window?: number;
  /**
   * Publishes started per second, at most: the run spans its faults instead of finishing
   * before the first one lands. @defaultValue 2000
   */
  readonly ratePerSecond?: number;
  /** How long to wait, after the last publish settled, for every confirmed event. */
  readonly drainTimeoutMs: number;
  /** How many events the broker holds at the end, where it can tell (stream length). */
  readonly countStored?: () => Promise<number>;
}

/** What a run counted. */
export interface FaultRunResult {
  readonly name: string;
  readonly events: number;
  readonly confirmed: number;
  /** Publishes that rejected, by error code: none vanished (confirmed + rejected = events). */
  readonly rejected: Readonly<Record<string, number>>;
  /** Distinct events handled. */
  readonly handled: number;
  /** Handler runs beyond the first of an event (at-least-once after faults). */
  readonly duplicates: number;
  /** Confirmed events no consumer handled: must be empty. */
  readonly lost: readonly number[];
  /** Handled events that were never confirmed (their publish rejected, yet they arrived). */
  readonly handledUnconfirmed: number;
  /**
   * Events the broker holds beyond the ones published (a write stored twice after a fault),
   * where `countStored` was given.
   */
  readonly storedDuplicates: number | undefined;
  /** Per broker restart: how long it was down, and from its start to the next confirmation. */
  readonly outages: readonly { downMs: number; resumeMs: number | undefined }[];
  readonly elapsedMs: number;
}

/** Runs the scenario; never throws for a loss (the caller asserts on the result). */
export async function runFaultRun(options: FaultRunOptions): Promise<FaultRunResult> {
  const dir = mkdtempSync(join(tmpdir(), 'watchtower-faults-'));
  const consumers = new ConsumerProcesses(options, dir);
  const started = performance.now();
  const outages: { downMs: number; resumeMs: number | undefined }[] = [];
  let publisher: FaultPublisher | undefined;
  try {
    await consumers.startAll();
    publisher = await options.publisher();
    const confirmed = new Set<number>();
    const rejected: Record<string, number> = {};
    const pendingFaults = [...options.faults].sort((a, b) => a.at - b.at);
    const window = options.window ?? 500;
    const inFlight = new Set<Promise<void>>();
    let restartedAt: number | undefined;
    let outage: { downMs: number; resumeMs: number | undefined } | undefined;
    let faultWork: Promise<void> = Promise.resolve();

    const rate = options.ratePerSecond ?? 2000;
    const publishStart = performance.now();
    for (let n = 0; n < options.events; n++) {
      if (n % 100 === 0) {
        const ahead = (n / rate) * 1000 - (performance.now() - publishStart);
        if (ahead > 0) await sleep(ahead);
      }
      const next = pendingFaults[0];
      if (next !== undefined && n >= next.at * options.events) {
        pendingFaults.shift();
        // Faults run beside the publishing, one after the other.
        faultWork = faultWork.then(async () => {
          if (next.kind === 'kill-consumer') {
            await consumers.kill(next.consumer);
            await consumers.start(next.consumer);
            return;
          }
          await options.broker.kill();
          const down = performance.now();
          await sleep(next.downMs);
          await options.broker.start();
          restartedAt = performance.now();
          outage = { downMs: Math.round(restartedAt - down), resumeMs: undefined };
          outages.push(outage);
        });
      }
      const publish = publisher.publish(n).then(
        () => {
          confirmed.add(n);
          if (restartedAt !== undefined && outage !== undefined && outage.resumeMs === undefined) {
            outage.resumeMs = Math.round(performance.now() - restartedAt);
          }
        },
        (error: unknown) => {
          const code = isWatchtowerError(error) ? error.code : 'UNKNOWN';
          rejected[code] = (rejected[code] ?? 0) + 1;
        },
      );
      const tracked = publish.finally(() => inFlight.delete(tracked));
      inFlight.add(tracked);
      if (inFlight.size >= window) await Promise.race(inFlight);
    }
    await Promise.all(inFlight);
    await faultWork;

    const deadline = performance.now() + options.drainTimeoutMs;
    let counts = consumers.counts();
    while (performance.now() < deadline && [...confirmed].some((n) => !counts.seen.has(n))) {
      await sleep(100);
      counts = consumers.counts();
    }
    const lost = [...confirmed].filter((n) => !counts.seen.has(n)).sort((a, b) => a - b);
    let handledUnconfirmed = 0;
    for (const n of counts.seen) if (!confirmed.has(n)) handledUnconfirmed++;
    const stored = await options.countStored?.();
    return {
      name: options.name,
      events: options.events,
      confirmed: confirmed.size,
      rejected,
      handled: counts.seen.size,
      duplicates: counts.runs - counts.seen.size,
      lost,
      handledUnconfirmed,
      storedDuplicates: stored === undefined ? undefined : stored - counts.seen.size,
      outages,
      elapsedMs: Math.round(performance.now() - started),
    };
  } finally {
    await publisher?.close().catch(() => undefined);
    await consumers.stopAll();
    rmSync(dir, { recursive: true, force: true });
  }
}

/** The events of one run of the suite. */
export const FAULT_RUN_EVENTS = 20_000;

/** The broker killed at 30 % and 65 % of the events, and started again 1.5 s later. */
export const BROKER_KILLED_TWICE: readonly FaultStep[] = Object.freeze([
  { at: 0.3, kind: 'restart-broker', downMs: 1500 },
  { at: 0.65, kind: 'restart-broker', downMs: 1500 },
]);

/** The first consumer SIGKILLed at half of the events, and started again. */
export const CONSUMER_KILLED: readonly FaultStep[] = Object.freeze([
  { at: 0.5, kind: 'kill-consumer', consumer: 0 },
]);

/** The longest time between two consecutive instants of `times` (ms), rounded. */
export function longestGap(times: readonly number[]): number {
  const sorted = [...times].sort((a, b) => a - b);
  let gap = 0;
  for (let i = 1; i < sorted.length; i++) {
    gap = Math.max(gap, (sorted[i] as number) - (sorted[i - 1] as number));
  }
  return Math.round(gap);
}

/**
 * What a node failure cost the publisher, for a failover test's log line: when the first
 * publish after `killedAt` was confirmed (performance.now() instants), and the longest pause
 * between two confirmations.
 */
export function pauseAround(confirmedAt: readonly number[], killedAt: number): string {
  const resumed = confirmedAt.find((t) => t > killedAt);
  return (
    `first confirmation after the kill ` +
    `${resumed === undefined ? '-' : Math.round(resumed - killedAt)} ms after it; ` +
    `longest pause between confirmations ${longestGap(confirmedAt)} ms`
  );
}

/**
 * Prints the run's counts and fails on any loss: every confirmed event handled, every publish
 * settled (confirmed or rejected with a typed error).
 */
export function expectNothingLost(result: FaultRunResult): void {
  console.log(describeFaultRun(result));
  expect(result.lost).toEqual([]);
  const rejected = Object.values(result.rejected).reduce((sum, count) => sum + count, 0);
  expect(result.confirmed + rejected).toBe(result.events);
  expect(result.handled).toBeGreaterThanOrEqual(result.confirmed);
}

/**
 * The command of a consumer process running `fault-consumer.ts`: the export `exportName` of
 * the module at `modulePath` (a subscriber class), built with `config`.
 */
export function faultConsumerCommand(
  modulePath: string,
  exportName: string,
  config: Record<string, unknown>,
): { command: string; args: readonly string[]; env: Record<string, string> } {
  return {
    command: process.execPath,
    args: ['--import', 'tsx', fileURLToPath(new URL('./fault-consumer.ts', import.meta.url))],
    env: {
      WATCHTOWER_FAULT_MODULE: modulePath,
      WATCHTOWER_FAULT_EXPORT: exportName,
      WATCHTOWER_FAULT_CONFIG: JSON.stringify(config),
    },
  };
}

/** One line for a report: the counts of a run. */
export function describeFaultRun(result: FaultRunResult): string {
  const rejected = Object.entries(result.rejected)
    .map(([code, count]) => `${code} ${count}`)
    .join(', ');
  const outages = result.outages
    .map((o) => `down ${o.downMs} ms, first confirm ${o.resumeMs ?? '-'} ms after restart`)
    .join('; ');
  return (
    `${result.name}: ${result.events} published, ${result.confirmed} confirmed` +
    (rejected === '' ? '' : `, rejected: ${rejected}`) +
    `, ${result.handled} handled, ${result.lost.length} lost, ${result.duplicates} duplicates` +
    (result.storedDuplicates === undefined ? '' : ` (${result.storedDuplicates} stored twice)`) +
    (result.handledUnconfirmed === 0 ? '' : `, ${result.handledUnconfirmed} handled unconfirmed`) +
    (outages === '' ? '' : ` (${outages})`) +
    `, ${result.elapsedMs} ms`
  );
}

/** The consumer processes of a run, each appending to its own file. */
class ConsumerProcesses {
  readonly #children = new Map<number, ChildProcess>();
  readonly #files: string[] = [];

  constructor(
    private readonly options: FaultRunOptions,
    private readonly dir: string,
  ) {}

  async startAll(): Promise<void> {
    await Promise.all(
      Array.from({ length: this.options.consumers }, (_, index) => this.start(index)),
    );
  }

  /** Starts consumer `index` (again); resolves once it printed `ready`. */
  async start(index: number): Promise<void> {
    const out = join(this.dir, `consumer-${index}-${this.#files.length}.log`);
    this.#files.push(out);
    const { command, args, env } = this.options.consumer(index);
    const child = spawn(command, args, {
      env: { ...process.env, ...env, WATCHTOWER_FAULT_OUT: out },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    this.#children.set(index, child);
    let errors = '';
    child.stderr?.on('data', (chunk: Buffer) => {
      if (errors.length < 20_000) errors += chunk.toString();
    });
    await new Promise<void>((resolve, reject) => {
      let output = '';
      const timer = setTimeout(
        () => reject(new Error(`consumer ${index} not ready:\n${errors}`)),
        30_000,
      );
      child.stdout?.on('data', (chunk: Buffer) => {
        output += chunk.toString();
        if (output.includes('ready')) {
          clearTimeout(timer);
          resolve();
        }
      });
      child.once('exit', (code) => {
        clearTimeout(timer);
        reject(
          new Error(`consumer ${index} exited (${String(code)}) before it was ready:\n${errors}`),
        );
      });
    });
  }

  /** SIGKILLs consumer `index` and waits until it is gone. */
  async kill(index: number): Promise<void> {
    const child = this.#children.get(index);
    if (child?.pid === undefined || child.exitCode !== null) return;
    const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
    process.kill(child.pid, 'SIGKILL');
    await exited;
    this.#children.delete(index);
  }

  /** SIGTERM to every consumer (they close), SIGKILL to any still there after 10 s. */
  async stopAll(): Promise<void> {
    await Promise.all(
      [...this.#children.values()].map(async (child) => {
        if (child.pid === undefined || child.exitCode !== null || child.signalCode !== null) return;
        const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
        process.kill(child.pid, 'SIGTERM');
        const timer = setTimeout(() => {
          if (child.pid !== undefined && child.exitCode === null)
            process.kill(child.pid, 'SIGKILL');
        }, 10_000);
        await exited;
        clearTimeout(timer);
      }),
    );
    this.#children.clear();
  }

  /** The events handled so far, and handler runs in all. */
  counts(): { seen: Set<number>; runs: number } {
    const seen = new Set<number>();
    let runs = 0;
    for (const file of this.#files) {
      if (!existsSync(file)) continue;
      for (const line of readFileSync(file, 'utf8').split('\n')) {
        if (line === '') continue;
        runs++;
        seen.add(Number(line));
      }
    }
    return { seen, runs };
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

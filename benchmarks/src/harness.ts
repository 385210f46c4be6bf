import { randomBytes } from 'node:crypto';
import { appendFileSync, mkdirSync, writeFileSync } from 'node:fs';
import { dirname } from 'node:path';

/**
 * A name part unique to one scenario run that says which process made it: `p<pid>x<8 hex>`.
 * Streams and keys named with it are removed as leftovers only once that process is gone, so
 * one benchmark never deletes what another, running beside it, is using.
 */
export function runId(): string {
  return `p${process.pid}x${randomBytes(4).toString('hex')}`;
}

/** The {@link runId} part of a name, as an expression to embed in a leftover pattern. */
export const RUN_ID = 'p(\\d+)x[0-9a-f]{8}';

/**
 * True when `name` matches `pattern` (whose first group is the pid of a {@link runId}) and
 * that process is not running: what an interrupted run of an earlier process left behind.
 */
export function isLeftover(name: string, pattern: RegExp): boolean {
  const pid = pattern.exec(name)?.[1];
  if (pid === undefined) return false;
  try {
    process.kill(Number(pid), 0);
    return Number(pid) === process.pid;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'ESRCH';
  }
}

/** What one run of one side of a scenario measured. */
export interface Measurement {
  /** Events (or operations) done. */
  n: number;
  /** Wall time of the measured part. */
  elapsedMs: number;
  /** Per-event latencies in microseconds, where the scenario measures latency. */
  latenciesUs?: number[];
  /** CPU time (user + system) this process spent in the measured part, in microseconds. */
  cpuUs?: number;
}

/** One benchmark: the same work done by the raw client and through watchtower. */
export interface Scenario {
  name: string;
  transport: string;
  /** The raw client doing the same work; omitted where no raw client exists. */
  raw?: () => Promise<Measurement>;
  watchtower: () => Promise<Measurement>;
  /**
   * Rounds per side this scenario runs at least, whatever `BENCH_ROUNDS` and the time budget:
   * for a row whose CPU figure is a goal and moves between runs of the same code by more than
   * the goal's margin, so that its median rests on more runs.
   */
  rounds?: number;
}

/** A row of the results table and of `results/latest.jsonl`. */
export interface ResultRow {
  scenario: string;
  transport: string;
  impl: 'raw' | 'watchtower';
  n: number;
  /** Throughput of the side's best run. */
  msgsPerSec: number;
  /**
   * Median throughput of the runs after the first: with the best, it shows how much of a
   * ratio is one lucky or unlucky run.
   */
  msgsPerSecMedian: number;
  p50Us: number | null;
  p99Us: number | null;
  /**
   * CPU time of this process (the client: the broker runs apart) per event, median over the
   * runs after the first. What a user pays per event on their own cores.
   */
  cpuUsPerEvent: number | null;
  rssMb: number;
  /** Wall time of the whole scenario (both sides, every round), in seconds. */
  seconds: number;
}

/** Options of {@link runScenarios}. */
export interface RunOptions {
  /**
   * Runs of each side, alternating raw and watchtower. The first of a side warms the JIT up
   * and counts only for throughput. @defaultValue 5
   */
  rounds?: number;
  /** Where the JSON lines go. */
  outputFile: string;
  /**
   * A scenario that has run `minRounds` rounds and taken longer than this in all stops there
   * (slow scenarios get fewer rounds, so that a whole run stays within minutes).
   * @defaultValue no limit
   */
  secondsPerScenario?: number;
  /**
   * Rounds every scenario runs, whatever its time: the first warms up, and the median of the
   * three after it is not decided by a second round still warming up. @defaultValue 4 (or
   * `rounds` if fewer)
   */
  minRounds?: number;
}

function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return Number.NaN;
  const index = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[index] as number;
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 === 1
    ? (sorted[mid] as number)
    : ((sorted[mid - 1] as number) + (sorted[mid] as number)) / 2;
}

/**
 * One side's row from all its runs: the best throughput (the run least disturbed by the rest
 * of the machine) and the median of the runs after the first, and p50/p99 as the median over
 * those runs of each run's own percentile, so that one run hit by a pause elsewhere does not
 * decide the tail.
 */
function toRow(
  scenario: Scenario,
  impl: ResultRow['impl'],
  runs: Measurement[],
  seconds: number,
): ResultRow {
  const best = runs.reduce((a, b) => (b.n / b.elapsedMs > a.n / a.elapsedMs ? b : a));
  const warm = runs.length > 1 ? runs.slice(1) : runs;
  const timed = warm.filter((run) => run.latenciesUs !== undefined && run.latenciesUs.length > 0);
  const percentiles = timed.map((run) => {
    const sorted = [...(run.latenciesUs as number[])].sort((a, b) => a - b);
    return { p50: percentile(sorted, 50), p99: percentile(sorted, 99) };
  });
  return {
    scenario: scenario.name,
    transport: scenario.transport,
    impl,
    n: best.n,
    msgsPerSec: Math.round((best.n / best.elapsedMs) * 1000),
    msgsPerSecMedian: Math.round(median(warm.map((run) => (run.n / run.elapsedMs) * 1000))),
    p50Us: percentiles.length > 0 ? Math.round(median(percentiles.map((p) => p.p50))) : null,
    p99Us: percentiles.length > 0 ? Math.round(median(percentiles.map((p) => p.p99))) : null,
    cpuUsPerEvent: cpuPerEvent(warm),
    rssMb: Math.round((process.memoryUsage.rss() / 1024 / 1024) * 10) / 10,
    seconds,
  };
}

/** Median CPU µs per event over the runs that measured CPU, to two decimals; null if none did. */
function cpuPerEvent(runs: Measurement[]): number | null {
  const measured = runs.filter((run) => run.cpuUs !== undefined && run.n > 0);
  if (measured.length === 0) return null;
  return Math.round(median(measured.map((run) => (run.cpuUs as number) / run.n)) * 100) / 100;
}

/** How often and how long {@link measureScenario} runs a scenario. */
export type RoundOptions = Pick<RunOptions, 'rounds' | 'secondsPerScenario' | 'minRounds'>;

/**
 * Runs one scenario `rounds` times per side, alternating raw and watchtower so that both see
 * the same machine state, and reduces each side's runs to one row (see `toRow`).
 */
export async function measureScenario(
  scenario: Scenario,
  options: RoundOptions,
): Promise<ResultRow[]> {
  const rounds = Math.max(options.rounds ?? 5, scenario.rounds ?? 0);
  const minRounds = Math.min(rounds, Math.max(options.minRounds ?? 4, scenario.rounds ?? 0));
  const budgetMs = (options.secondsPerScenario ?? Number.POSITIVE_INFINITY) * 1000;
  const raw: Measurement[] = [];
  const wt: Measurement[] = [];
  const started = now();
  for (let round = 0; round < rounds; round++) {
    if (round >= minRounds && now() - started > budgetMs) break;
    if (scenario.raw !== undefined) raw.push(await scenario.raw());
    wt.push(await scenario.watchtower());
  }
  const seconds = Math.round((now() - started) / 100) / 10;
  return [
    ...(raw.length > 0 ? [toRow(scenario, 'raw', raw, seconds)] : []),
    toRow(scenario, 'watchtower', wt, seconds),
  ];
}

/** Starts `outputFile` empty (and its folder, where missing). */
export function startOutput(outputFile: string): void {
  mkdirSync(dirname(outputFile), { recursive: true });
  writeFileSync(outputFile, '');
}

/** Prints one scenario's rows (with the watchtower/raw ratios) and appends them as JSON lines. */
export function reportRows(rows: ResultRow[], outputFile: string): void {
  for (const row of rows) appendFileSync(outputFile, `${JSON.stringify(row)}\n`);
  printRows(rows);
}

/**
 * Runs each scenario in this process ({@link measureScenario}), prints a table with the
 * watchtower/raw ratios and writes every row as a JSON line.
 */
export async function runScenarios(
  scenarios: Scenario[],
  options: RunOptions,
): Promise<ResultRow[]> {
  startOutput(options.outputFile);
  const kept: ResultRow[] = [];
  for (const scenario of scenarios) {
    const rows = await measureScenario(scenario, options);
    reportRows(rows, options.outputFile);
    kept.push(...rows);
  }
  printSlowest(kept);
  return kept;
}

/** The scenarios that took longest, to see where the time of a whole run goes. */
export function printSlowest(rows: ResultRow[]): void {
  const slowest = rows
    .filter((row) => row.impl === 'watchtower')
    .sort((a, b) => b.seconds - a.seconds)
    .slice(0, 8);
  if (slowest.length === 0) return;
  console.log('\nslowest scenarios (both sides, every round):');
  for (const row of slowest) console.log(`  ${String(row.seconds).padStart(6)} s  ${row.scenario}`);
}

let headerPrinted = false;

function printRows(rows: ResultRow[]): void {
  const columns = [
    'scenario',
    'transport',
    'impl',
    'n',
    'msgs/s',
    'p50 µs',
    'p99 µs',
    'cpu µs/ev',
    'rss MB',
    'vs raw',
  ];
  const widths = [44, 10, 11, 9, 11, 9, 9, 10, 8, 56];
  const line = (cells: string[]): string =>
    cells.map((cell, i) => cell.padEnd(widths[i] ?? 10)).join(' ');
  if (!headerPrinted) {
    console.log(line(columns));
    console.log(line(widths.map((w) => '-'.repeat(w))));
    headerPrinted = true;
  }
  const raw = rows.find((row) => row.impl === 'raw');
  for (const row of rows) {
    let ratio = '';
    if (row.impl === 'watchtower' && raw !== undefined) {
      ratio =
        `${(row.msgsPerSec / raw.msgsPerSec).toFixed(2)}x tput ` +
        `(median ${(row.msgsPerSecMedian / raw.msgsPerSecMedian).toFixed(2)}x)`;
      if (row.p99Us !== null && raw.p99Us !== null && raw.p99Us > 0) {
        ratio += ` ${(row.p99Us / raw.p99Us).toFixed(2)}x p99`;
      }
      if (row.cpuUsPerEvent !== null && raw.cpuUsPerEvent !== null && raw.cpuUsPerEvent > 0) {
        const over = row.cpuUsPerEvent - raw.cpuUsPerEvent;
        ratio += ` ${(row.cpuUsPerEvent / raw.cpuUsPerEvent).toFixed(2)}x cpu`;
        ratio += ` (${over >= 0 ? '+' : ''}${over.toFixed(2)} µs)`;
      }
    }
    console.log(
      line([
        row.scenario,
        row.transport,
        row.impl,
        String(row.n),
        row.msgsPerSec.toLocaleString('en-US'),
        row.p50Us === null ? '-' : String(row.p50Us),
        row.p99Us === null ? '-' : String(row.p99Us),
        row.cpuUsPerEvent === null ? '-' : row.cpuUsPerEvent.toFixed(2),
        String(row.rssMb),
        ratio,
      ]),
    );
  }
}

/** Milliseconds since an arbitrary origin, with sub-microsecond resolution. */
export const now = (): number => performance.now();

/**
 * Starts timing the measured part of a run; the returned function gives its wall time and the
 * CPU time this process spent meanwhile (user + system, every thread of the process).
 */
export function startTimer(): () => { elapsedMs: number; cpuUs: number } {
  const wall = now();
  const cpu = process.cpuUsage();
  return () => {
    const used = process.cpuUsage(cpu);
    return { elapsedMs: now() - wall, cpuUs: used.user + used.system };
  };
}

/** Counts arrivals; see {@link countdown}. */
export interface Countdown {
  /** Counts one arrival. */
  tick(): void;
  /** Resolves once `count` arrived; rejects after the timeout. */
  readonly done: Promise<void>;
}

/**
 * Waits for `count` arrivals without polling: the waiting side costs no CPU, which on a small
 * machine would otherwise be taken from the broker under test. Rejects after `timeoutMs`.
 */
export function countdown(count: number, timeoutMs: number, what: string): Countdown {
  let seen = 0;
  let finish: () => void = () => undefined;
  const done = new Promise<void>((resolve, reject) => {
    const timer = setTimeout(
      () => reject(new Error(`benchmark timed out waiting for ${what} (${seen} of ${count})`)),
      timeoutMs,
    );
    finish = () => {
      clearTimeout(timer);
      resolve();
    };
  });
  if (count <= 0) finish();
  return {
    tick: () => {
      if (++seen === count) finish();
    },
    done,
  };
}

/** What {@link runWindowed} records per event: nothing, each call's own latency, or its window's. */
export type LatencyMode = 'none' | 'each' | 'window';

/**
 * Calls `send(i)` for each `i < count`, keeping at most `window` unsettled (it awaits each
 * full window and yields to I/O), as a service publishing with a bounded number of outstanding
 * confirms does.
 *
 * `latency` says what is recorded per event, in microseconds: `each` times every call on its
 * own; `window` gives every event of a window the time from the window's first call until all
 * of it settled, which is what a raw pipeline of the same size can measure (one reply for all),
 * so the two sides pay the same for being measured.
 */
export async function runWindowed(
  count: number,
  window: number,
  send: (i: number) => Promise<unknown>,
  latency: LatencyMode = 'none',
): Promise<Measurement> {
  const latenciesUs: number[] = [];
  const one =
    latency === 'each'
      ? async (i: number): Promise<void> => {
          const sent = now();
          await send(i);
          latenciesUs.push((now() - sent) * 1000);
        }
      : send;
  const stop = startTimer();
  let batch: Promise<unknown>[] = [];
  let windowStart = now();
  for (let i = 0; i < count; i++) {
    batch.push(one(i));
    if (batch.length >= window) {
      await Promise.all(batch);
      if (latency === 'window') record(latenciesUs, batch.length, windowStart);
      batch = [];
      // Let I/O in between windows, as a service does: otherwise a transport whose publish
      // resolves before the bytes leave (NATS core) would buffer the whole run. One at a time,
      // each publish already waits for its round trip, as the raw side's loop does.
      if (window > 1) await new Promise((resolve) => setImmediate(resolve));
      windowStart = now();
    }
  }
  await Promise.all(batch);
  if (latency === 'window') record(latenciesUs, batch.length, windowStart);
  const { elapsedMs, cpuUs } = stop();
  return latency === 'none'
    ? { n: count, elapsedMs, cpuUs }
    : { n: count, elapsedMs, cpuUs, latenciesUs };
}

/** Records the latency of a window that started at `since` once for each of its `size` events. */
export function record(latenciesUs: number[], size: number, since: number): void {
  const us = (now() - since) * 1000;
  for (let j = 0; j < size; j++) latenciesUs.push(us);
}

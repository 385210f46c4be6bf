import { appendFileSync, mkdirSync, writeFileSync } from 'node:fs';
import { dirname } from 'node:path';

/** What one run of one side of a scenario measured. */
export interface Measurement {
  /** Events (or operations) done. */
  n: number;
  /** Wall time of the measured part. */
  elapsedMs: number;
  /** Per-event latencies in microseconds, where the scenario measures latency. */
  latenciesUs?: number[];
}

/** One benchmark: the same work done by the raw client and through watchtower. */
export interface Scenario {
  name: string;
  transport: string;
  /** The raw client doing the same work; omitted where no raw client exists. */
  raw?: () => Promise<Measurement>;
  watchtower: () => Promise<Measurement>;
}

/** A row of the results table and of `results/latest.jsonl`. */
export interface ResultRow {
  scenario: string;
  transport: string;
  impl: 'raw' | 'watchtower';
  n: number;
  msgsPerSec: number;
  p50Us: number | null;
  p99Us: number | null;
  rssMb: number;
}

/** Options of {@link runScenarios}. */
export interface RunOptions {
  /** Runs of each side, alternating raw and watchtower; the first warms the JIT up. @defaultValue 3 */
  rounds?: number;
  /** Where the JSON lines go. */
  outputFile: string;
}

function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return Number.NaN;
  const index = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[index] as number;
}

function toRow(scenario: Scenario, impl: ResultRow['impl'], m: Measurement): ResultRow {
  const sorted = m.latenciesUs === undefined ? [] : [...m.latenciesUs].sort((a, b) => a - b);
  return {
    scenario: scenario.name,
    transport: scenario.transport,
    impl,
    n: m.n,
    msgsPerSec: Math.round((m.n / m.elapsedMs) * 1000),
    p50Us: sorted.length > 0 ? Math.round(percentile(sorted, 50)) : null,
    p99Us: sorted.length > 0 ? Math.round(percentile(sorted, 99)) : null,
    rssMb: Math.round((process.memoryUsage.rss() / 1024 / 1024) * 10) / 10,
  };
}

/** Of several runs, the one with the highest throughput. */
function best(rows: ResultRow[]): ResultRow | undefined {
  return rows.reduce<ResultRow | undefined>(
    (a, b) => (a === undefined || b.msgsPerSec > a.msgsPerSec ? b : a),
    undefined,
  );
}

/**
 * Runs each scenario `rounds` times per side, alternating raw and watchtower so that both see
 * the same machine state, and keeps the best run of each side. Prints a table with the
 * watchtower/raw ratios and writes every kept row as a JSON line.
 */
export async function runScenarios(
  scenarios: Scenario[],
  options: RunOptions,
): Promise<ResultRow[]> {
  const rounds = options.rounds ?? 3;
  mkdirSync(dirname(options.outputFile), { recursive: true });
  writeFileSync(options.outputFile, '');
  const kept: ResultRow[] = [];
  for (const scenario of scenarios) {
    const raw: ResultRow[] = [];
    const wt: ResultRow[] = [];
    for (let round = 0; round < rounds; round++) {
      if (scenario.raw !== undefined) raw.push(toRow(scenario, 'raw', await scenario.raw()));
      wt.push(toRow(scenario, 'watchtower', await scenario.watchtower()));
    }
    const rows = [best(raw), best(wt)].filter((row): row is ResultRow => row !== undefined);
    for (const row of rows) appendFileSync(options.outputFile, `${JSON.stringify(row)}\n`);
    kept.push(...rows);
    printRows(rows);
  }
  return kept;
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
    'rss MB',
    'vs raw',
  ];
  const widths = [44, 10, 11, 9, 11, 9, 9, 8, 14];
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
      ratio = `${(row.msgsPerSec / raw.msgsPerSec).toFixed(2)}x tput`;
      if (row.p99Us !== null && raw.p99Us !== null && raw.p99Us > 0) {
        ratio += ` ${(row.p99Us / raw.p99Us).toFixed(2)}x p99`;
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
        String(row.rssMb),
        ratio,
      ]),
    );
  }
}

/** Milliseconds since an arbitrary origin, with sub-microsecond resolution. */
export const now = (): number => performance.now();

/** Resolves when `check()` is true, polling on every macrotask turn; rejects after `timeoutMs`. */
export async function until(check: () => boolean, timeoutMs: number, what: string): Promise<void> {
  const deadline = now() + timeoutMs;
  while (!check()) {
    if (now() > deadline) throw new Error(`benchmark timed out waiting for ${what}`);
    await new Promise((resolve) => setImmediate(resolve));
  }
}

/**
 * Calls `send(i)` for each `i < count`, keeping at most `window` unsettled (it awaits each
 * full window and yields to I/O), as a service publishing with a bounded number of outstanding
 * confirms does.
 * With `timed`, each call's latency is recorded in microseconds.
 */
export async function runWindowed(
  count: number,
  window: number,
  send: (i: number) => Promise<unknown>,
  timed = false,
): Promise<Measurement> {
  const latenciesUs: number[] = [];
  const one = timed
    ? async (i: number): Promise<void> => {
        const sent = now();
        await send(i);
        latenciesUs.push((now() - sent) * 1000);
      }
    : send;
  const start = now();
  let batch: Promise<unknown>[] = [];
  for (let i = 0; i < count; i++) {
    batch.push(one(i));
    if (batch.length >= window) {
      await Promise.all(batch);
      batch = [];
      // Let I/O in between windows, as a service does: otherwise a transport whose publish
      // resolves before the bytes leave (NATS core) would buffer the whole run. One at a time,
      // each publish already waits for its round trip, as the raw side's loop does.
      if (window > 1) await new Promise((resolve) => setImmediate(resolve));
    }
  }
  await Promise.all(batch);
  const elapsedMs = now() - start;
  return timed ? { n: count, elapsedMs, latenciesUs } : { n: count, elapsedMs };
}

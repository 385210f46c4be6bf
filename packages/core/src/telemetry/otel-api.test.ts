/**
 * Core without `@opentelemetry/api`: a child process in which the package cannot be resolved
 * (as when it is not installed) runs a bus with no telemetry and no error, and refuses
 * providers given without the API.
 */
import { execFile } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

const run = promisify(execFile);
const root = fileURLToPath(new URL('../../../..', import.meta.url));
const core = pathToFileURL(fileURLToPath(new URL('../index.ts', import.meta.url))).href;

/** Makes `@opentelemetry/api` unresolvable, as when it is not installed. */
const BLOCK = `
const Module = require('node:module');
const resolve = Module._resolveFilename;
Module._resolveFilename = function (request, ...rest) {
  if (request === '@opentelemetry/api' || request.startsWith('@opentelemetry/api/')) {
    throw Object.assign(new Error("Cannot find module '" + request + "'"), { code: 'MODULE_NOT_FOUND' });
  }
  return resolve.call(this, request, ...rest);
};
`;

const SCRIPT = `
import { EventBus, MemoryTransport, isWatchtowerError } from ${JSON.stringify(core)};
const bus = new EventBus({ transport: new MemoryTransport() });
const headers = [];
await bus.subscribe('user.created', (event) => void headers.push(event.headers));
await bus.publish('user.created', { id: 1 });
while (headers.length === 0) await new Promise((resolve) => setImmediate(resolve));
await bus.close();
let refused;
try {
  new EventBus({ transport: new MemoryTransport(), telemetry: { tracerProvider: { getTracer: () => ({}) } } });
} catch (error) {
  refused = isWatchtowerError(error, 'CONFIG') ? error.message : String(error);
}
console.log(JSON.stringify({ headers, refused }));
`;

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'wt-no-otel-'));
  await writeFile(join(dir, 'block.cjs'), BLOCK);
  await writeFile(join(dir, 'script.mts'), SCRIPT);
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe('core without @opentelemetry/api installed', () => {
  it('publishes and consumes without telemetry and without an error, and refuses providers', async () => {
    const { stdout } = await run(
      process.execPath,
      ['--require', join(dir, 'block.cjs'), '--import', 'tsx', join(dir, 'script.mts')],
      { cwd: root, timeout: 60_000 },
    );
    const result = JSON.parse(stdout.trim().split('\n').pop() ?? '{}') as {
      headers: Record<string, string>[];
      refused?: string;
    };
    expect(result.headers).toEqual([{}]);
    expect(result.refused).toMatch(/`telemetry`.*@opentelemetry\/api/);
  }, 60_000);
});

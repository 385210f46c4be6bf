/**
 * The runner: registers the case table as vitest tests for one harness. It owns what the cases
 * share (a fresh namespace per test, the transports and buses to close afterwards, the
 * capability probe) and the gating, so that a case body holds only its assertions. A case it
 * does not run is reported as a vitest skip with the reason, never as a pass.
 */
import { randomUUID } from 'node:crypto';
import { afterEach, describe, expect, it } from 'vitest';
import {
  EventBus,
  configError,
  type EventBusOptions,
  type Logger,
  type Transport,
  type TransportCapabilities,
} from '@watchtower/core';
import { conformanceCases } from './conformance-cases.js';
import {
  HARNESS_FEATURES,
  type ConformanceCase,
  type ConformanceContext,
  type ConformanceHarness,
  type ConformanceRequirement,
  type ConformanceTimeouts,
  type HarnessFeature,
  type TestBus,
} from './harness.js';

/** Which cases of the table a run registers, and which it reports as skipped. */
export interface ConformanceOptions {
  /**
   * Names of the cases to register; the others are left out of the run altogether (as with
   * vitest's `-t`). A name that is no case is a `CONFIG` error.
   * @defaultValue every case of {@link conformanceCases}
   */
  only?: readonly string[];
  /**
   * Cases to report as skipped, by name, each with the reason shown in the report: for a
   * known broker limitation that no capability flag describes. A name that is no case, or an
   * empty reason, is a `CONFIG` error.
   * @defaultValue no case is skipped by name
   */
  skip?: Readonly<Record<string, string>>;
}

const OPTION_KEYS = ['only', 'skip'] as const;

const quietLogger: Logger = { warn: () => undefined, error: () => undefined };

function defaultTestTimeoutMs({ timeoutMs, redeliveryTimeoutMs }: ConformanceTimeouts): number {
  return timeoutMs * 3 + redeliveryTimeoutMs;
}

function isHarnessFeature(requirement: ConformanceRequirement): requirement is HarnessFeature {
  return Object.hasOwn(HARNESS_FEATURES, requirement);
}

function isListOfStrings(value: unknown): value is readonly string[] {
  return Array.isArray(value) && value.every((item) => typeof item === 'string');
}

/** The cases `options` selects, in table order, each with the reason it is skipped by name. */
function selectCases(
  options: ConformanceOptions,
): { testCase: ConformanceCase; skipReason: string | undefined }[] {
  if (typeof options !== 'object' || options === null)
    throw configError('options', 'must be an options object');
  for (const key of Object.keys(options)) {
    if (!(OPTION_KEYS as readonly string[]).includes(key))
      throw configError(
        key,
        `is not an option of describeTransportConformance (known: ${OPTION_KEYS.join(', ')})`,
      );
  }
  const names = new Set(conformanceCases.map((testCase) => testCase.name));
  const only = options.only;
  if (only !== undefined) {
    if (!isListOfStrings(only)) throw configError('only', 'must be an array of case names');
    for (const name of only) {
      if (!names.has(name))
        throw configError('only', `names no conformance case: ${JSON.stringify(name)}`);
    }
  }
  const skip = options.skip ?? {};
  if (typeof skip !== 'object' || skip === null)
    throw configError('skip', 'must be an object of case names to reasons');
  for (const [name, reason] of Object.entries(skip)) {
    if (!names.has(name))
      throw configError('skip', `names no conformance case: ${JSON.stringify(name)}`);
    if (typeof reason !== 'string' || reason.trim() === '')
      throw configError('skip', `gives no reason for ${JSON.stringify(name)}`);
  }
  return conformanceCases
    .filter((testCase) => only === undefined || only.includes(testCase.name))
    .map((testCase) => ({
      testCase,
      skipReason: Object.hasOwn(skip, testCase.name) ? skip[testCase.name] : undefined,
    }));
}

/**
 * Registers the contract tests for one transport (vitest `describe`/`it`), one test per case of
 * {@link conformanceCases}. Cases a transport cannot pass by design are skipped by its declared
 * capabilities, by a harness hook it lacks, or by name through `options.skip`; each skip shows
 * its reason. Throws a `CONFIG` error, before registering anything, for options that name no
 * case.
 */
export function describeTransportConformance(
  harness: ConformanceHarness,
  options: ConformanceOptions = {},
): void {
  const selected = selectCases(options);
  const timeoutMs = harness.timeoutMs ?? 10_000;
  const redeliveryTimeoutMs = harness.redeliveryTimeoutMs ?? timeoutMs;
  const timeouts: ConformanceTimeouts = { timeoutMs, redeliveryTimeoutMs };

  describe(`transport conformance: ${harness.name}`, () => {
    let namespace = '';
    let created: TestBus[] = [];
    let transports: Transport[] = [];
    let capabilities: TransportCapabilities | undefined = harness.capabilities;

    async function newTransport(): Promise<Transport> {
      const transport = await harness.createTransport(namespace);
      transports.push(transport);
      await transport.connect();
      capabilities ??= transport.info.capabilities;
      return transport;
    }

    async function newBus(options: Omit<EventBusOptions, 'transport'> = {}): Promise<TestBus> {
      const transport = await newTransport();
      const bus = new EventBus({
        transport,
        logger: quietLogger,
        subscriptionDefaults: { retry: { minDelayMs: 20, maxDelayMs: 200, maxAttempts: 4 } },
        retry: { minDelayMs: 50, maxDelayMs: 1000, maxAttempts: 6 },
        ...options,
      });
      const entry: TestBus = { bus, transport, errors: [] };
      bus.on('error', (error) => entry.errors.push(error));
      created.push(entry);
      return entry;
    }

    function type(suffix: string): string {
      return `conf.${suffix}`;
    }

    function expectNoBusErrors(...buses: TestBus[]): void {
      for (const { errors } of buses)
        expect(errors.map((e) => `${e.code}: ${e.message}`)).toEqual([]);
    }

    /**
     * Why the case cannot run here, or `undefined` when it can. Checked before the case runs,
     * so that a skip is visible as a skip: missing capabilities first, then harness hooks.
     */
    async function unmet(requires: readonly ConformanceRequirement[]): Promise<string | undefined> {
      const flags = requires.filter((r): r is keyof TransportCapabilities => !isHarnessFeature(r));
      if (flags.length > 0) {
        if (capabilities === undefined) {
          const probe = await harness.createTransport(`${namespace}probe`);
          capabilities = probe.info.capabilities;
          await probe.close({ timeoutMs: 1000 });
        }
        const missing = flags.filter((flag) => !(capabilities as TransportCapabilities)[flag]);
        if (missing.length > 0) return `${harness.name} does not declare ${missing.join(', ')}`;
      }
      const lacking = requires.filter(isHarnessFeature).filter((f) => harness[f] === undefined);
      if (lacking.length > 0) return lacking.map((f) => HARNESS_FEATURES[f]).join('; ');
      return undefined;
    }

    function context(): ConformanceContext {
      const own = namespace;
      return {
        harness,
        namespace: own,
        timeoutMs,
        redeliveryTimeoutMs,
        newTransport,
        newBus,
        type,
        expectNoBusErrors,
        publishRaw: async (eventType, bytes) => {
          if (harness.publishRaw === undefined) throw new Error(HARNESS_FEATURES.publishRaw);
          await harness.publishRaw(own, eventType, bytes);
        },
        restartBroker: async () => {
          if (harness.restartBroker === undefined) throw new Error(HARNESS_FEATURES.restartBroker);
          await harness.restartBroker();
        },
      };
    }

    afterEach(async () => {
      await Promise.allSettled(created.map(({ bus }) => bus.close({ timeoutMs: 2000 })));
      await Promise.allSettled(transports.map((transport) => transport.close({ timeoutMs: 2000 })));
      created = [];
      transports = [];
      if (harness.cleanup !== undefined) await harness.cleanup(namespace);
    });

    function fresh(): void {
      namespace = `wt${randomUUID().replaceAll('-', '').slice(0, 12)}`;
    }

    for (const { testCase, skipReason } of selected) {
      it(
        testCase.name,
        async (ctx) => {
          fresh();
          if (skipReason !== undefined) ctx.skip(skipReason);
          const reason = await unmet(testCase.requires);
          if (reason !== undefined) ctx.skip(reason);
          await testCase.run(context());
        },
        (testCase.testTimeoutMs ?? defaultTestTimeoutMs)(timeouts),
      );
    }
  });
}

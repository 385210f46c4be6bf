/**
 * The case table and the runner's selection: unique names, every exported case in the table,
 * and `only`, `skip` and the capability gate checked on the tests they actually register
 * (each `describeTransportConformance` below runs against MemoryTransport, then a test after
 * it reads what vitest recorded for its suite).
 */
import { describe, expect, it, type RunnerTask, type RunnerTestSuite } from 'vitest';
import { MemoryBroker, MemoryTransport, type TransportCapabilities } from '@watchtower/core';
import * as conformance from './index.js';
import {
  conformanceCases,
  deadLettersMalformedBytes,
  deliversOneTypeInPublishOrder,
  describeTransportConformance,
  publishesAndDeliversEachEventIntact,
  reportsHealthAndRefusesWorkAfterClose,
  routesEachTypeToItsOwnSubscriber,
  type ConformanceCase,
  type ConformanceHarness,
} from './index.js';

function memoryHarness(name: string, overrides: Partial<ConformanceHarness> = {}) {
  const brokers = new Map<string, MemoryBroker>();
  const brokerFor = (namespace: string): MemoryBroker => {
    let broker = brokers.get(namespace);
    if (broker === undefined) {
      broker = new MemoryBroker();
      brokers.set(namespace, broker);
    }
    return broker;
  };
  return {
    name,
    createTransport: (namespace: string) => new MemoryTransport({ broker: brokerFor(namespace) }),
    publishRaw: (namespace: string, type: string, bytes: Uint8Array) =>
      new MemoryTransport({ broker: brokerFor(namespace) }).publishRaw(type, bytes),
    cleanup: (namespace: string) => {
      brokers.delete(namespace);
      return Promise.resolve();
    },
    timeoutMs: 5000,
    ...overrides,
  } satisfies ConformanceHarness;
}

/** The tests `describeTransportConformance` registered for `harnessName`, beside the current test. */
function registered(suite: RunnerTestSuite | undefined, harnessName: string): RunnerTask[] {
  const conformanceSuite = suite?.tasks.find(
    (task) => task.type === 'suite' && task.name === `transport conformance: ${harnessName}`,
  );
  if (conformanceSuite?.type !== 'suite') throw new Error(`no suite for ${harnessName}`);
  return conformanceSuite.tasks;
}

function outcomes(tasks: RunnerTask[]) {
  return tasks.map((task) => ({
    name: task.name,
    state: task.result?.state,
    // The runner keeps the reason of `ctx.skip(reason)` here; its result type leaves it out.
    note: (task.result as { note?: string } | undefined)?.note,
  }));
}

function isConformanceCase(value: unknown): value is ConformanceCase {
  return (
    typeof value === 'object' &&
    value !== null &&
    typeof (value as ConformanceCase).name === 'string' &&
    typeof (value as ConformanceCase).run === 'function'
  );
}

describe('the conformance case table', () => {
  it('gives every case a distinct name', () => {
    const names = conformanceCases.map((testCase) => testCase.name);
    expect(new Set(names).size).toBe(names.length);
  });

  it('lists every exported case exactly once, and nothing else', () => {
    const exported = Object.values(conformance).filter(isConformanceCase);
    expect(exported.length).toBe(conformanceCases.length);
    for (const testCase of exported) expect(conformanceCases).toContain(testCase);
  });

  it('requires only capability flags the transport contract has, or harness hooks', () => {
    const flags = Object.keys(new MemoryTransport().info.capabilities);
    const known = [...flags, 'publishRaw', 'restartBroker'];
    for (const testCase of conformanceCases) {
      for (const requirement of testCase.requires) expect(known).toContain(requirement);
    }
  });
});

describe('describeTransportConformance with only', () => {
  const only = [routesEachTypeToItsOwnSubscriber.name, reportsHealthAndRefusesWorkAfterClose.name];
  describeTransportConformance(memoryHarness('memory, two cases'), { only });

  it('registers and runs just the named cases, in table order', ({ task }) => {
    expect(outcomes(registered(task.suite, 'memory, two cases'))).toEqual([
      { name: routesEachTypeToItsOwnSubscriber.name, state: 'pass', note: undefined },
      { name: reportsHealthAndRefusesWorkAfterClose.name, state: 'pass', note: undefined },
    ]);
  });
});

describe('describeTransportConformance with skip and an unmet requirement', () => {
  const capabilities: TransportCapabilities = {
    ...new MemoryTransport().info.capabilities,
    ordering: false,
  };
  const { publishRaw: _publishRaw, ...withoutRaw } = memoryHarness('memory, gated');
  describeTransportConformance(
    { ...withoutRaw, capabilities },
    {
      only: [
        publishesAndDeliversEachEventIntact.name,
        deliversOneTypeInPublishOrder.name,
        deadLettersMalformedBytes.name,
      ],
      skip: { [publishesAndDeliversEachEventIntact.name]: 'known broker limitation' },
    },
  );

  it('reports each case it does not run as a skip with the reason', ({ task }) => {
    expect(outcomes(registered(task.suite, 'memory, gated'))).toEqual([
      {
        name: publishesAndDeliversEachEventIntact.name,
        state: 'skip',
        note: 'known broker limitation',
      },
      {
        name: deliversOneTypeInPublishOrder.name,
        state: 'skip',
        note: 'memory, gated does not declare ordering',
      },
      {
        name: deadLettersMalformedBytes.name,
        state: 'skip',
        note: 'the harness cannot put raw bytes on the wire',
      },
    ]);
  });
});

describe('describeTransportConformance options', () => {
  const harness = memoryHarness('memory, refused');

  it('refuses a name in only that is no case, with CONFIG naming the field', () => {
    expect(() => describeTransportConformance(harness, { only: ['no such case'] })).toThrow(
      expect.objectContaining({ code: 'CONFIG', message: expect.stringContaining('`only`') }),
    );
  });

  it('refuses a skip that names no case or gives no reason, with CONFIG', () => {
    expect(() => describeTransportConformance(harness, { skip: { 'no such case': 'x' } })).toThrow(
      expect.objectContaining({ code: 'CONFIG', message: expect.stringContaining('`skip`') }),
    );
    expect(() =>
      describeTransportConformance(harness, {
        skip: { [publishesAndDeliversEachEventIntact.name]: ' ' },
      }),
    ).toThrow(
      expect.objectContaining({ code: 'CONFIG', message: expect.stringContaining('`skip`') }),
    );
  });

  it('refuses a misspelt option with CONFIG naming it', () => {
    const misspelt = { onyl: [] } as never;
    expect(() => describeTransportConformance(harness, misspelt)).toThrow(
      expect.objectContaining({ code: 'CONFIG', message: expect.stringContaining('`onyl`') }),
    );
  });
});

/**
 * Cases about competing consumers: one member of a group per event, every group gets every
 * event, and members may leave without events being lost.
 */
import { expect } from 'vitest';
import { createEvent } from '@watchtower/core';
import { waitFor } from '@watchtower/core/testing';
import type { ConformanceCase } from '../harness.js';

/** A member leaving mid-stream hands its share to the one that stays: all 100 arrive. */
export const keepsDeliveringToAGroupAfterAMemberLeaves: ConformanceCase = {
  name: 'keeps delivering to a group after one member unsubscribes, losing nothing',
  requires: ['consumerGroups'],
  run: async ({ newBus, type, namespace, timeoutMs, redeliveryTimeoutMs, expectNoBusErrors }) => {
    const group = `g-${namespace}`;
    const first = await newBus();
    const second = await newBus();
    const seen = new Set<string>();
    let firstCount = 0;
    const firstHandle = await first.bus.subscribe(
      type('leave'),
      (event) => {
        firstCount++;
        seen.add(event.id);
      },
      { group },
    );
    await second.bus.subscribe(
      type('leave'),
      (event) => {
        seen.add(event.id);
      },
      { group },
    );
    const pub = await newBus();
    const ids: string[] = [];
    for (let i = 0; i < 100; i++) {
      const event = createEvent(type('leave'), { i });
      ids.push(event.id);
      await pub.bus.publish(event);
      if (i === 30) {
        await waitFor(() => seen.size >= 10, { timeoutMs });
        await first.bus.unsubscribe(firstHandle);
      }
    }
    await waitFor(() => seen.size >= 100, {
      timeoutMs: Math.max(timeoutMs, redeliveryTimeoutMs),
      message: `all 100 events (got ${seen.size})`,
    });
    expect(ids.every((id) => seen.has(id))).toBe(true);
    expect(firstCount).toBeGreaterThan(0);
    expectNoBusErrors(first, second, pub);
  },
};

/** Two members of group a share the events without overlap; group b alone gets them all. */
export const givesEachEventToOneMemberOfEachGroup: ConformanceCase = {
  name: 'gives each event to one member of a group and every event to each group',
  requires: ['consumerGroups'],
  run: async ({ newBus, type, namespace, timeoutMs, expectNoBusErrors }) => {
    const members = await Promise.all([newBus(), newBus(), newBus()]);
    const seen = members.map(() => [] as string[]);
    const groups = [`a-${namespace}`, `a-${namespace}`, `b-${namespace}`];
    for (const [i, member] of members.entries()) {
      await member.bus.subscribe(
        type('groups'),
        (event) => {
          seen[i]?.push(event.id);
        },
        { group: groups[i] as string },
      );
    }
    const pub = await newBus();
    const ids: string[] = [];
    for (let i = 0; i < 60; i++) {
      const event = createEvent(type('groups'), { i });
      ids.push(event.id);
      await pub.bus.publish(event);
    }
    const [a1, a2, b] = seen as [string[], string[], string[]];
    await waitFor(() => a1.length + a2.length >= 60 && b.length >= 60, { timeoutMs });
    expect(a1.filter((id) => a2.includes(id))).toEqual([]);
    expect([...a1, ...a2].sort()).toEqual([...ids].sort());
    expect([...b].sort()).toEqual([...ids].sort());
    expectNoBusErrors(pub, ...members);
  },
};

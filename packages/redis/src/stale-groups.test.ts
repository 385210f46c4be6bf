import { describe, expect, it } from 'vitest';
import { aliveKey, ownGroupBase, ownGroupName } from './stale-groups.js';

describe('own groups and marks of life', () => {
  it('names an own group after its consumer and reads the transport base back from it', () => {
    const group = ownGroupName('host-42-a1b2c3-7');
    expect(group).toBe('own:host-42-a1b2c3-7');
    expect(ownGroupBase(group)).toBe('host-42-a1b2c3');
    expect(aliveKey('{orders}', 'host-42-a1b2c3')).toBe('{orders}:alive:host-42-a1b2c3');
  });

  it('takes no other group for an own group', () => {
    for (const group of [
      'workers',
      'own:',
      'own:-1',
      'own:host',
      'own:host-x',
      'billing:own:a-1',
    ]) {
      expect(ownGroupBase(group)).toBeUndefined();
    }
  });
});

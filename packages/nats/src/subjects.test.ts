import { describe, expect, it } from 'vitest';
import { eventSubject, groupConsumerName, patternSubject, typeFromSubject } from './subjects.js';

describe('subjects', () => {
  it('puts events under the prefix and maps patterns to NATS wildcards', () => {
    expect(eventSubject('watchtower.events', 'user.created')).toBe(
      'watchtower.events.user.created',
    );
    expect(patternSubject('p', 'user.*')).toBe('p.user.*');
    expect(patternSubject('p', 'user.>')).toBe('p.user.>');
    expect(patternSubject('p', 'user.#')).toBe('p.user.>');
    expect(() => patternSubject('p', 'user.>.x')).toThrow(/last token/);
  });

  it('reads the type back from a subject under the prefix only', () => {
    expect(typeFromSubject('dlq', 'dlq.user.created')).toBe('user.created');
    expect(typeFromSubject('dlq', 'dlqx.user')).toBeUndefined();
    expect(typeFromSubject('dlq', 'dlq')).toBeUndefined();
  });

  it('names a group consumer by group and filter, with only characters JetStream accepts', () => {
    const a = groupConsumerName('billing', 'p.order.*');
    expect(a).toMatch(/^billing_[0-9a-f]{12}$/);
    expect(groupConsumerName('billing', 'p.order.*')).toBe(a);
    expect(groupConsumerName('billing', 'p.order.>')).not.toBe(a);
    expect(groupConsumerName('team.a/b*>', 'p.x')).toMatch(/^team_a_b___[0-9a-f]{12}$/);
    // Sanitising must not make two groups collide.
    expect(groupConsumerName('a.b', 'p.x')).not.toBe(groupConsumerName('a_b', 'p.x'));
  });
});

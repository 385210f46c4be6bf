import { createHash } from 'node:crypto';
import { toNatsSubject } from '@watchtower/core/transport-kit';

/** `{prefix}.{type}`: where an event of `type` is published. */
export function eventSubject(prefix: string, type: string): string {
  return `${prefix}.${type}`;
}

/** The NATS subject filter for a pattern under `prefix`. Throws `VALIDATION` for a bad pattern. */
export function patternSubject(prefix: string, pattern: string): string {
  return `${prefix}.${toNatsSubject(pattern)}`;
}

/**
 * The part of `subject` after `{prefix}.`, i.e. the event type a message was published as, or
 * `undefined` when the subject is not under the prefix.
 */
export function typeFromSubject(prefix: string, subject: string): string | undefined {
  return subject.length > prefix.length + 1 && subject.startsWith(`${prefix}.`)
    ? subject.slice(prefix.length + 1)
    : undefined;
}

/** Tokens of a subject outside our prefix, made safe for a DLQ subject. */
export function sanitizeSubject(subject: string): string {
  const cleaned = subject
    .replace(/[^A-Za-z0-9_.-]/g, '_')
    .replace(/\.{2,}/g, '.')
    .replace(/^\.|\.$/g, '');
  return cleaned.length === 0 ? 'unknown' : cleaned;
}

// JetStream consumer names: no `.`, `*`, `>`, whitespace, path separators; keep it readable.
const UNSAFE_NAME_CHARS = /[^A-Za-z0-9_-]/g;

/**
 * The durable consumer name of a group reading `filter`. A group is keyed by its name and its
 * subject filter (as in the in-memory transport), so the same group name on two patterns gives
 * two consumers; the hash keeps names short and free of characters JetStream refuses.
 */
export function groupConsumerName(group: string, filter: string): string {
  const readable = group.replace(UNSAFE_NAME_CHARS, '_').slice(0, 64);
  return `${readable}_${shortHash(`${group}\u0000${filter}`)}`;
}

function shortHash(text: string): string {
  return createHash('sha256').update(text).digest('hex').slice(0, 12);
}

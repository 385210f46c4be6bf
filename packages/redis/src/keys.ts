import { isValidEventType } from '@watchtower/core';

/*
 * Key naming, Rust Watchtower compatible: the stream of event type `t` is `{prefix}:{t}` and the
 * dead-letter stream is `{prefix}:dlq`. (The braces here are placeholders; a Redis hash tag is
 * the literal `{...}` inside the prefix itself, e.g. the prefix `{watchtower}`.)
 *
 * On a Redis Cluster an `XREADGROUP` over several streams needs all of them in one hash slot.
 * A prefix that contains a hash tag puts every stream of the transport (and the default DLQ
 * stream) in the slot of that tag, because Redis hashes only the text between the first `{`
 * and the next `}` when there is one.
 */

/** The key of the stream that holds events of `type`. */
export function streamKey(prefix: string, type: string): string {
  return `${prefix}:${type}`;
}

/**
 * The sorted set of event ids lately written to the stream of `type`, when publishes are
 * deduplicated (`dedupeWindowMs`). No event type holds a `:`, so no stream can take this key;
 * it carries the prefix's hash tag, so it lives in the stream's slot.
 */
export function dedupeKey(prefix: string, type: string): string {
  return `${prefix}:${type}:ids`;
}

/** The default dead-letter stream of a prefix. */
export function defaultDlqKey(prefix: string): string {
  return `${prefix}:dlq`;
}

/**
 * The key of the set of stream keys publishers have announced, which is also the name of the
 * channel they announce new ones on (channels and keys are apart in Redis). No event type
 * holds a `:`, so no event stream can take this key; it carries the prefix's hash tag.
 */
export function streamRegistryKey(prefix: string): string {
  return `${prefix}:registry:streams`;
}

/**
 * The event type a stream key stands for, or `undefined` when the key is not one of this
 * prefix's event streams (another prefix, the DLQ stream, or not a valid event type).
 */
export function typeOfKey(prefix: string, dlqKey: string, key: string): string | undefined {
  if (key === dlqKey || key.length <= prefix.length + 1) return undefined;
  if (!key.startsWith(prefix) || key.charCodeAt(prefix.length) !== 0x3a /* ':' */) return undefined;
  const type = key.slice(prefix.length + 1);
  return isValidEventType(type) ? type : undefined;
}

/** A `SCAN MATCH` glob for every key under `prefix:`, with glob characters in the prefix escaped. */
export function scanPattern(prefix: string): string {
  return `${prefix.replace(/[*?[\]\\]/g, (c) => `\\${c}`)}:*`;
}

/**
 * The hash tag of a key (the text Redis Cluster hashes), or `undefined` when the key has none:
 * the text between the first `{` and the first `}` after it, when that text is not empty.
 */
export function hashTagOf(key: string): string | undefined {
  const open = key.indexOf('{');
  if (open < 0) return undefined;
  const close = key.indexOf('}', open + 1);
  if (close < 0 || close === open + 1) return undefined;
  return key.slice(open + 1, close);
}

/**
 * A key no one writes, in the prefix's hash slot, that a transport on a Redis Cluster probes
 * (`PERSIST`, which changes nothing) to learn whether the slot's master answers. No event
 * type holds a `:`, so no stream can take it.
 */
export function probeKey(prefix: string): string {
  return `${prefix}:probe:reachable`;
}

import { describe, expect, it } from 'vitest';
import {
  defaultDlqKey,
  hashTagOf,
  scanPattern,
  streamKey,
  streamRegistryKey,
  typeOfKey,
} from './keys.js';

describe('key naming', () => {
  it('names streams {prefix}:{type} and the DLQ {prefix}:dlq, as Rust Watchtower does', () => {
    expect(streamKey('watchtower', 'user.created')).toBe('watchtower:user.created');
    expect(defaultDlqKey('watchtower')).toBe('watchtower:dlq');
  });

  it('reads the event type back from a stream key of the prefix only', () => {
    expect(typeOfKey('wt', 'wt:dlq', 'wt:user.profile.updated')).toBe('user.profile.updated');
    expect(typeOfKey('wt', 'wt:dlq', 'wt:dlq')).toBeUndefined();
    expect(typeOfKey('wt', 'wt:dlq', 'wtx:user.created')).toBeUndefined();
    expect(typeOfKey('wt', 'wt:dlq', 'other:user.created')).toBeUndefined();
    expect(typeOfKey('wt', 'wt:dlq', 'wt:')).toBeUndefined();
    expect(typeOfKey('wt', 'wt:dlq', 'wt:not a type')).toBeUndefined();
    expect(typeOfKey('{wt}', '{wt}:dlq', '{wt}:a.b')).toBe('a.b');
  });

  it('keeps the stream registry where no event stream can be, in the hash slot of the prefix', () => {
    expect(streamRegistryKey('wt')).toBe('wt:registry:streams');
    expect(typeOfKey('wt', 'wt:dlq', streamRegistryKey('wt'))).toBeUndefined();
    expect(hashTagOf(streamRegistryKey('{wt}'))).toBe('wt');
  });

  it('escapes glob characters of the prefix in the SCAN pattern', () => {
    expect(scanPattern('watchtower')).toBe('watchtower:*');
    expect(scanPattern('a*b?[c]\\')).toBe('a\\*b\\?\\[c\\]\\\\:*');
  });

  it('finds the hash tag Redis Cluster hashes', () => {
    expect(hashTagOf('{watchtower}:user.created')).toBe('watchtower');
    expect(hashTagOf('app:{orders}:dlq')).toBe('orders');
    expect(hashTagOf('watchtower:user.created')).toBeUndefined();
    expect(hashTagOf('{}:x')).toBeUndefined();
    expect(hashTagOf('{open')).toBeUndefined();
  });
});

/**
 * What the browser build gives core in place of `node:crypto`: Web Crypto's `randomUUID` and
 * `getRandomValues`.
 */
export function randomUUID(): string {
  return globalThis.crypto.randomUUID();
}

/** Fills `bytes` with cryptographically strong random values (at most 65 536 bytes). */
export function randomFillSync<T extends ArrayBufferView>(bytes: T): T {
  globalThis.crypto.getRandomValues(bytes as unknown as Uint8Array);
  return bytes;
}

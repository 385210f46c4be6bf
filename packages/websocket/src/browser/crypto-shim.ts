/** What the browser build gives core in place of `node:crypto`: the Web Crypto `randomUUID`. */
export function randomUUID(): string {
  return globalThis.crypto.randomUUID();
}

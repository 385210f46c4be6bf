/**
 * Remembers `derive(key)` for up to `limit` keys, then forgets them all and starts over, so a
 * stream of distinct keys cannot grow it without bound.
 *
 * For the per-type strings a transport builds on every publish (a subject, a stream key): a
 * remembered string is flat and already hashed, which the clients check, hash and encode
 * faster than a fresh concatenation.
 */
export class BoundedMemo<V> {
  readonly #values = new Map<string, V>();

  constructor(
    private readonly derive: (key: string) => V,
    private readonly limit = 1024,
  ) {}

  get(key: string): V {
    let value = this.#values.get(key);
    if (value === undefined) {
      if (this.#values.size >= this.limit) this.#values.clear();
      value = this.derive(key);
      this.#values.set(key, value);
    }
    return value;
  }
}

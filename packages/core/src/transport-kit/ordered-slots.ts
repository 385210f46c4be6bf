/**
 * A set of objects in the order they were added, for what is added once and removed mostly in
 * that order (deliveries handed to handlers, publishes awaiting the broker's confirm): an
 * array whose slot is cleared on removal, the cleared front dropped as it goes.
 *
 * Why not a `Set` or a `Map`: when every event adds one entry and removes one, the hash table
 * behind them is rebuilt every few hundred events, and V8 leaves each table it replaces
 * pointing to its successor, with its old entries still in it (so that a running iterator can
 * follow). Once one of those tables has lived long enough to be promoted, the dead chain keeps
 * every later table, and all that their entries hold (messages, promises, events), alive
 * through each scavenge, and promotes it in turn. Measured on RabbitMQ confirmed publishes:
 * 0.7-1.0 MB copied per scavenge instead of 0.35-0.4 MB, and several µs more CPU per event,
 * in the runs that fell into that state (about half). An array leaves no such chain.
 *
 * Removal scans from the oldest entry, so it is O(1) when entries go in order and O(n) at
 * worst; holes left by entries removed out of order are packed away before they outnumber
 * the entries, so an entry that stays (a handler that never returns) costs no growth.
 */
export class OrderedSlots<T> {
  #items: (T | undefined)[] = [];
  #head = 0;
  #size = 0;

  /** Entries held. */
  get size(): number {
    return this.#size;
  }

  /** Adds `item` after every entry held (each object is added at most once). */
  add(item: T): void {
    this.#items.push(item);
    this.#size++;
  }

  /** Removes `item`; false when it is not held. */
  delete(item: T): boolean {
    return this.deleteFirst(isSame, item) !== undefined;
  }

  /** Removes and returns the oldest entry for which `matches(entry, key)` holds. */
  deleteFirst<K>(matches: (item: T, key: K) => boolean, key: K): T | undefined {
    const items = this.#items;
    for (let i = this.#head; i < items.length; i++) {
      const item = items[i];
      if (item !== undefined && matches(item, key)) {
        items[i] = undefined;
        this.#size--;
        this.#afterRemoval();
        return item;
      }
    }
    return undefined;
  }

  /** Removes and returns the oldest entries while `matches(entry, key)` holds, oldest first. */
  takeWhile<K>(matches: (item: T, key: K) => boolean, key: K): T[] {
    const taken: T[] = [];
    const items = this.#items;
    while (this.#head < items.length) {
      const item = items[this.#head];
      if (item !== undefined) {
        if (!matches(item, key)) break;
        taken.push(item);
        this.#size--;
      }
      items[this.#head] = undefined;
      this.#head++;
    }
    this.#afterRemoval();
    return taken;
  }

  /** Removes and returns every entry, oldest first. */
  takeAll(): T[] {
    const all = [...this.values()];
    this.#items = [];
    this.#head = 0;
    this.#size = 0;
    return all;
  }

  /** The entries, oldest first, left in place. */
  *values(): IterableIterator<T> {
    const items = this.#items;
    for (let i = this.#head; i < items.length; i++) {
      const item = items[i];
      if (item !== undefined) yield item;
    }
  }

  #afterRemoval(): void {
    const items = this.#items;
    while (this.#head < items.length && items[this.#head] === undefined) this.#head++;
    const span = items.length - this.#head;
    if (span === 0) {
      this.#items = [];
      this.#head = 0;
    } else if (span > 2 * this.#size + 32) {
      // Holes left by out-of-order removals: keep the entries only.
      this.#items = [...this.values()];
      this.#head = 0;
    } else if (this.#head > 1024 && this.#head * 2 > items.length) {
      this.#items = items.slice(this.#head);
      this.#head = 0;
    }
  }
}

const isSame = <T>(item: T, other: T): boolean => item === other;

/** A listener map: event name to the listener's argument tuple. */
export type EventMap = Record<string, unknown[]>;

/**
 * A minimal typed emitter. `on` returns a function that removes the listener. A listener that
 * throws is reported to `onListenerError` and never breaks the emitter or other listeners.
 */
export class Emitter<Events extends EventMap> {
  readonly #listeners = new Map<keyof Events, Set<(...args: unknown[]) => void>>();

  constructor(private readonly onListenerError: (error: unknown) => void = reportListenerError) {}

  on<K extends keyof Events>(name: K, listener: (...args: Events[K]) => void): () => void {
    let set = this.#listeners.get(name);
    if (set === undefined) {
      set = new Set();
      this.#listeners.set(name, set);
    }
    set.add(listener as unknown as (...args: unknown[]) => void);
    return () => {
      set.delete(listener as unknown as (...args: unknown[]) => void);
    };
  }

  emit<K extends keyof Events>(name: K, ...args: Events[K]): void {
    const set = this.#listeners.get(name);
    if (set === undefined || set.size === 0) return;
    for (const listener of set) {
      try {
        listener(...args);
      } catch (error) {
        this.onListenerError(error);
      }
    }
  }

  hasListeners(name: keyof Events): boolean {
    return (this.#listeners.get(name)?.size ?? 0) > 0;
  }

  removeAll(): void {
    this.#listeners.clear();
  }
}

function reportListenerError(error: unknown): void {
  const text = error instanceof Error ? (error.stack ?? error.message) : String(error);
  process.emitWarning(`a Watchtower listener threw: ${text}`, 'WatchtowerListenerWarning');
}

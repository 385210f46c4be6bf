/** Options of {@link waitFor}. */
export interface WaitForOptions {
  /** @defaultValue 5000 */
  timeoutMs?: number;
  /** @defaultValue 10 */
  intervalMs?: number;
  /** Shown in the error when the deadline passes. */
  message?: string;
}

/**
 * Polls `condition` until it returns a truthy value (or a promise of one) and resolves with
 * that value; rejects when `timeoutMs` passes first. The one way tests wait for something.
 */
export async function waitFor<T>(
  condition: () => T | Promise<T>,
  options: WaitForOptions = {},
): Promise<NonNullable<T>> {
  const timeoutMs = options.timeoutMs ?? 5000;
  const intervalMs = options.intervalMs ?? 10;
  const deadline = Date.now() + timeoutMs;
  let lastError: unknown;
  for (;;) {
    try {
      const value = await condition();
      if (value) return value;
    } catch (error) {
      lastError = error;
    }
    if (Date.now() >= deadline) {
      const detail =
        lastError === undefined
          ? ''
          : ` (last error: ${lastError instanceof Error ? lastError.message : JSON.stringify(lastError)})`;
      throw new Error(
        `waitFor: ${options.message ?? 'condition not met'} within ${timeoutMs} ms${detail}`,
      );
    }
    await new Promise((resolve) => setTimeout(resolve, intervalMs));
  }
}

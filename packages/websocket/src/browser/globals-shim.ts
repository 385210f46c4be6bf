/**
 * The Node globals core touches, for the browser build (injected by the bundler where core
 * names them): `process.nextTick` and `setImmediate` run the callback on a later turn,
 * `process.emitWarning` logs.
 */
export const process = {
  nextTick(callback: (...args: unknown[]) => void, ...args: unknown[]): void {
    queueMicrotask(() => callback(...args));
  },
  emitWarning(warning: string | Error): void {
    console.warn(warning);
  },
  env: {} as Record<string, string | undefined>,
};

export function setImmediate(callback: () => void): ReturnType<typeof setTimeout> {
  return setTimeout(callback, 0);
}

import { ErrorCode, isWatchtowerError } from '../errors.js';

/**
 * The field a `CONFIG` error thrown by `fn` names (the text between the first backquotes of its
 * message), or undefined when `fn` returns. Any other error is thrown on.
 */
export function configErrorField(fn: () => unknown): string | undefined {
  try {
    fn();
  } catch (error) {
    if (isWatchtowerError(error, ErrorCode.CONFIG)) return /`([^`]+)`/.exec(error.message)?.[1];
    throw error;
  }
  return undefined;
}

/** How `promise` settles: `'resolved'`, or what it rejected with. Never rejects. */
export function settlement(promise: Promise<unknown>): Promise<unknown> {
  return promise.then(
    () => 'resolved',
    (error: unknown) => error,
  );
}

import type { Delivery } from '@watchtower/core';

/**
 * The next delivery of `iterator`. Rejects when none comes within `timeoutMs` or the
 * subscription ends first; the timer is cleared either way.
 */
export async function nextWithin(
  iterator: AsyncIterator<Delivery>,
  timeoutMs: number,
): Promise<Delivery> {
  let timer: NodeJS.Timeout | undefined;
  try {
    const result = await Promise.race([
      iterator.next(),
      new Promise<never>((_, reject) => {
        timer = setTimeout(
          () => reject(new Error(`no delivery within ${timeoutMs} ms`)),
          timeoutMs,
        );
      }),
    ]);
    if (result.done === true) throw new Error('the subscription ended');
    return result.value;
  } finally {
    clearTimeout(timer);
  }
}

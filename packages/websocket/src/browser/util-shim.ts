/** What the browser build gives core in place of `node:util`: `promisify` of callback calls. */
export function promisify<A, R>(
  fn: (input: A, callback: (error: Error | null, result?: R) => void) => void,
): (input: A) => Promise<R> {
  return (input) =>
    new Promise<R>((resolve, reject) => {
      fn(input, (error, result) => (error === null ? resolve(result as R) : reject(error)));
    });
}

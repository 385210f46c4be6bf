/**
 * What the browser build gives core in place of `node:zlib`: the event system's payload
 * compression is a Node feature, so each call fails with an `UNSUPPORTED` error.
 */
import { WatchtowerError } from '@watchtower/core';

type Callback = (error: Error | null, result?: Uint8Array) => void;

function unsupported(name: string): (input: unknown, callback: Callback) => void {
  return (_input, callback) => {
    callback(
      new WatchtowerError(
        'UNSUPPORTED',
        `${name}: payload compression is not available in the browser build`,
        {
          retryable: false,
        },
      ),
    );
  };
}

export const gzip = unsupported('gzip');
export const gunzip = unsupported('gunzip');
export const brotliCompress = unsupported('brotliCompress');
export const brotliDecompress = unsupported('brotliDecompress');

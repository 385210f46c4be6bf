/**
 * What the browser build gives core in place of `node:buffer`: the few `Buffer` calls core makes
 * (UTF-8 and base64 from and to bytes, latin1 to text, `alloc`), on `TextEncoder`, `TextDecoder`
 * and `atob`/`btoa`.
 * Only the browser bundle uses it; it is not part of the Node package's code.
 */
const encoder = new TextEncoder();
const decoder = new TextDecoder();

type Encoding = 'utf8' | 'utf-8' | 'base64' | 'latin1';

/** Bytes whose `toString` speaks `'utf8'`, `'base64'` and `'latin1'`, as a Node `Buffer` does. */
class BrowserBytes extends Uint8Array {
  override toString(encoding: Encoding = 'utf8', start = 0, end = this.length): string {
    const bytes = this.subarray(start, end);
    if (encoding === 'latin1') return String.fromCharCode(...bytes);
    if (encoding === 'base64') {
      let binary = '';
      for (let i = 0; i < bytes.length; i++) binary += String.fromCharCode(bytes[i] as number);
      return btoa(binary);
    }
    return decoder.decode(bytes);
  }
}

function fromText(text: string, encoding: Encoding): BrowserBytes {
  if (encoding === 'base64') {
    const binary = atob(text);
    const bytes = new BrowserBytes(binary.length);
    for (let i = 0; i < binary.length; i++) bytes[i] = binary.charCodeAt(i);
    return bytes;
  }
  const encoded = encoder.encode(text);
  return new BrowserBytes(encoded.buffer, encoded.byteOffset, encoded.byteLength);
}

/** The `Buffer` of the browser build. */
export const Buffer = {
  from(
    value: string | ArrayBuffer | ArrayLike<number>,
    encodingOrOffset?: Encoding | number,
    length?: number,
  ): BrowserBytes {
    if (typeof value === 'string') {
      return fromText(value, typeof encodingOrOffset === 'string' ? encodingOrOffset : 'utf8');
    }
    if (value instanceof ArrayBuffer) {
      const offset = typeof encodingOrOffset === 'number' ? encodingOrOffset : 0;
      return new BrowserBytes(value, offset, length ?? value.byteLength - offset);
    }
    return BrowserBytes.from(value);
  },
  alloc(size: number): BrowserBytes {
    return new BrowserBytes(size);
  },
  byteLength(text: string): number {
    return encoder.encode(text).byteLength;
  },
  isBuffer(value: unknown): boolean {
    return value instanceof BrowserBytes;
  },
};

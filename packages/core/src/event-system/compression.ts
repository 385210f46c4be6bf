/**
 * Payload compression of the event system: a route may compress payloads over a threshold
 * (gzip or brotli from `node:zlib`); the payload then travels as a base64 string with a
 * `content-encoding` header, and subscribers get it back decompressed. Only the payload is
 * compressed, so the envelope stays readable; a Rust service sees the base64 string.
 */
import { promisify } from 'node:util';
import { brotliCompress, brotliDecompress, gunzip, gzip } from 'node:zlib';
import { SerializationError, configError } from '../errors.js';
import type { Event } from '../event.js';
import { integerOption, objectOption, oneOfOption } from '../options.js';

/** The header that names a compressed payload's encoding. */
export const CONTENT_ENCODING_HEADER = 'content-encoding';

/** A route's `compression`. */
export interface CompressionOptions {
  /** `gzip` or `brotli` (header value `br`). */
  algorithm: 'gzip' | 'brotli';
  /**
   * Payloads whose JSON is at least this many bytes are compressed; smaller ones travel as
   * they are.
   * @defaultValue 1024
   */
  thresholdBytes?: number;
}

/** Defaults of {@link CompressionOptions}. */
export const DEFAULT_COMPRESSION_OPTIONS = { thresholdBytes: 1024 } as const;

/** A decompressed payload larger than this is refused (a compressed bomb), in bytes. */
export const MAX_DECOMPRESSED_BYTES = 64 * 1024 * 1024;

/** {@link CompressionOptions} checked. */
export interface ResolvedCompression {
  readonly encoding: 'gzip' | 'br';
  readonly thresholdBytes: number;
}

const gzipAsync = promisify(gzip);
const gunzipAsync = promisify(gunzip);
const brotliAsync = promisify(brotliCompress);
const unbrotliAsync = promisify(brotliDecompress);

/** Checks a route's `compression`, named `field`. */
export function resolveCompression(field: string, value: unknown): ResolvedCompression {
  if (value === null || typeof value !== 'object') {
    throw configError(field, 'must be an options object with an algorithm');
  }
  const options = objectOption<CompressionOptions>(field, value as CompressionOptions, [
    'algorithm',
    'thresholdBytes',
  ]);
  const algorithm = oneOfOption(`${field}.algorithm`, options.algorithm, ['gzip', 'brotli']);
  return {
    encoding: algorithm === 'gzip' ? 'gzip' : 'br',
    thresholdBytes: integerOption(
      `${field}.thresholdBytes`,
      options.thresholdBytes ?? DEFAULT_COMPRESSION_OPTIONS.thresholdBytes,
      0,
    ),
  };
}

/**
 * `event` with its payload compressed when its JSON reaches the threshold; the event itself
 * otherwise. A payload that cannot be JSON is a `SERIALIZATION` error.
 */
export async function compressPayload(
  event: Event,
  compression: ResolvedCompression,
): Promise<Event> {
  let json: string | undefined;
  try {
    json = JSON.stringify(event.payload);
  } catch (error) {
    throw new SerializationError(`the payload of ${event.type} cannot be JSON`, undefined, {
      cause: error,
    });
  }
  // `undefined` payloads write no JSON: nothing to compress.
  if (json === undefined) return event;
  const bytes = Buffer.from(json, 'utf8');
  if (bytes.length < compression.thresholdBytes) return event;
  const packed =
    compression.encoding === 'gzip' ? await gzipAsync(bytes) : await brotliAsync(bytes);
  return {
    ...event,
    headers: { ...event.headers, [CONTENT_ENCODING_HEADER]: compression.encoding },
    payload: packed.toString('base64'),
  };
}

/**
 * `event` with a compressed payload restored (and its `content-encoding` header gone); the
 * event itself when it carries none. An unknown encoding or bytes that do not decompress to
 * JSON are a `SERIALIZATION` error (the bus dead-letters the delivery at once).
 */
export async function decompressPayload(event: Event): Promise<Event> {
  const encoding = event.headers[CONTENT_ENCODING_HEADER];
  if (encoding === undefined) return event;
  const { [CONTENT_ENCODING_HEADER]: _removed, ...headers } = event.headers;
  if ((encoding !== 'gzip' && encoding !== 'br') || typeof event.payload !== 'string') {
    throw new SerializationError(
      `the payload of ${event.type} has content-encoding "${encoding}", which cannot be read`,
    );
  }
  const packed = Buffer.from(event.payload, 'base64');
  try {
    const options = { maxOutputLength: MAX_DECOMPRESSED_BYTES };
    const bytes =
      encoding === 'gzip'
        ? await gunzipAsync(packed, options)
        : await unbrotliAsync(packed, options);
    return { ...event, headers, payload: JSON.parse(bytes.toString('utf8')) as unknown };
  } catch (error) {
    throw new SerializationError(
      `the ${encoding} payload of ${event.type} does not decompress to JSON`,
      new Uint8Array(packed),
      { cause: error },
    );
  }
}

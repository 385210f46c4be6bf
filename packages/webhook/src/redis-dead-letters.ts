/**
 * `RedisWebhookDeadLetterStore`: webhook dead letters in a Redis stream, so they survive a
 * restart of the process. One entry per letter, with the fields of the Redis transport's
 * dead-letter stream (`event`, `error`, `original_type`, `reason`) plus `url`, `endpoint` and
 * `status`; the entry id is the letter's id. The ioredis client is the caller's: the store
 * never connects or quits it.
 */
import {
  ConnectionError,
  configError,
  SerializationError,
  decodeEvent,
  encodeEvent,
  isWatchtowerError,
} from '@watchtower/core';
import {
  integerOption,
  readDeadLetterReason,
  rejectUnknownOptions,
  stringOption,
} from '@watchtower/core/transport-kit';
import type { Redis } from 'ioredis';
import type {
  NewWebhookDeadLetter,
  WebhookDeadLetter,
  WebhookDeadLetterStore,
} from './dead-letters.js';

/** Options of {@link RedisWebhookDeadLetterStore}. */
export interface RedisWebhookDeadLetterStoreOptions {
  /** A connected ioredis client (`new Redis(url)`); the store does not close it. */
  client: Redis;
  /**
   * The stream key.
   * @defaultValue `'watchtower:webhook-dlq'`
   */
  key?: string;
  /**
   * Trim the stream to about this many letters (`XADD MAXLEN ~`); `null` keeps all.
   * @defaultValue 100000
   */
  maxLen?: number | null;
}

type Fields = Record<string, string>;

const STREAM_ID = /^\d+-\d+$/;

function fieldsOf(flat: string[]): Fields {
  const fields: Fields = {};
  for (let i = 0; i + 1 < flat.length; i += 2) fields[flat[i] as string] = flat[i + 1] as string;
  return fields;
}

/** ioredis failures: the store may work again later (retryable `CONNECTION`). */
function storeError(error: unknown, what: string): Error {
  if (isWatchtowerError(error)) return error;
  return new ConnectionError(
    `cannot ${what} the webhook dead-letter stream: ${(error as Error).message}`,
    { cause: error },
  );
}

/**
 * Dead letters in a Redis stream.
 *
 * @throws `CONFIG` naming the field when an option is invalid.
 */
export class RedisWebhookDeadLetterStore implements WebhookDeadLetterStore {
  readonly #client: Redis;
  readonly #key: string;
  readonly #maxLen: number | null;

  constructor(options: RedisWebhookDeadLetterStoreOptions) {
    rejectUnknownOptions(options, ['client', 'key', 'maxLen'], 'RedisWebhookDeadLetterStore');
    const client = options.client as Partial<Redis> | undefined;
    if (typeof client?.xadd !== 'function' || typeof client.xrange !== 'function') {
      throw configError('client', 'must be an ioredis client (new Redis(url))');
    }
    this.#client = options.client;
    this.#key = stringOption('key', options.key ?? 'watchtower:webhook-dlq');
    this.#maxLen =
      options.maxLen === null ? null : integerOption('maxLen', options.maxLen ?? 100_000, 1);
  }

  /** The stream key. */
  get key(): string {
    return this.#key;
  }

  async add(letter: NewWebhookDeadLetter): Promise<string> {
    const fields = [
      'event',
      encodeEvent(letter.event),
      'error',
      letter.reason.message,
      'original_type',
      letter.reason.originalType,
      'reason',
      JSON.stringify(letter.reason),
      'url',
      letter.url,
      'endpoint',
      letter.endpointId,
      ...(letter.status === undefined ? [] : ['status', String(letter.status)]),
    ];
    try {
      const id =
        this.#maxLen === null
          ? await this.#client.xadd(this.#key, '*', ...fields)
          : await this.#client.xadd(this.#key, 'MAXLEN', '~', this.#maxLen, '*', ...fields);
      return id as string;
    } catch (error) {
      throw storeError(error, 'write to');
    }
  }

  async list(options: { limit?: number } = {}): Promise<WebhookDeadLetter[]> {
    const limit = integerOption('limit', options.limit ?? Infinity, 0, { allowInfinity: true });
    if (limit === 0) return [];
    let entries: [string, string[]][];
    try {
      entries =
        limit === Infinity
          ? await this.#client.xrange(this.#key, '-', '+')
          : await this.#client.xrange(this.#key, '-', '+', 'COUNT', limit);
    } catch (error) {
      throw storeError(error, 'read');
    }
    return entries.map(([id, flat]) => this.#letter(id, fieldsOf(flat)));
  }

  async get(id: string): Promise<WebhookDeadLetter | undefined> {
    // An id that is no stream id cannot be held.
    if (!STREAM_ID.test(id)) return undefined;
    let entries: [string, string[]][];
    try {
      entries = await this.#client.xrange(this.#key, id, id);
    } catch (error) {
      throw storeError(error, 'read');
    }
    const [entry] = entries;
    return entry === undefined ? undefined : this.#letter(entry[0], fieldsOf(entry[1]));
  }

  async remove(id: string): Promise<boolean> {
    if (!STREAM_ID.test(id)) return false;
    try {
      return (await this.#client.xdel(this.#key, id)) === 1;
    } catch (error) {
      throw storeError(error, 'delete from');
    }
  }

  async size(): Promise<number> {
    try {
      return await this.#client.xlen(this.#key);
    } catch (error) {
      throw storeError(error, 'read');
    }
  }

  /** @throws `SERIALIZATION` for an entry that does not hold a webhook dead letter. */
  #letter(id: string, fields: Fields): WebhookDeadLetter {
    const { event, reason, url, endpoint, status } = fields;
    const parsedReason = readDeadLetterReason(reason === undefined ? undefined : safeParse(reason));
    if (event === undefined || parsedReason === undefined || url === undefined) {
      throw new SerializationError(
        `entry ${id} of ${this.#key} is not a webhook dead letter (event, reason or url missing)`,
      );
    }
    return {
      id,
      event: decodeEvent(event),
      url,
      endpointId: endpoint ?? url,
      reason: parsedReason,
      ...(status === undefined ? {} : { status: Number(status) }),
    };
  }
}

function safeParse(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}

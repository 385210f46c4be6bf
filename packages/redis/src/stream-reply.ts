import { Buffer } from 'node:buffer';

/*
 * Parsers of the raw (Buffer) replies of the stream commands. Reads use ioredis' `callBuffer`
 * so that the bytes of an entry reach the codec exactly as they were written, invalid UTF-8
 * included, and a malformed entry can be dead-lettered byte for byte.
 */

/** One stream entry: its id and its field/value list (`null` when the entry was deleted). */
export interface StreamEntry {
  readonly id: string;
  readonly fields: readonly Buffer[] | null;
}

/** The entries read from one stream. */
export interface StreamBatch {
  readonly key: string;
  readonly entries: StreamEntry[];
}

function text(value: unknown): string {
  if (Buffer.isBuffer(value)) return value.toString('utf8');
  if (typeof value === 'string') return value;
  if (typeof value === 'number') return String(value);
  throw new TypeError(`unexpected Redis reply element: ${typeof value}`);
}

function parseEntries(value: unknown): StreamEntry[] {
  if (!Array.isArray(value)) return [];
  const entries: StreamEntry[] = [];
  for (const item of value) {
    // XCLAIM and XAUTOCLAIM return null in place of an entry that no longer exists.
    if (!Array.isArray(item)) continue;
    const fields: unknown = item[1];
    entries.push({
      id: text(item[0]),
      fields: Array.isArray(fields) ? (fields as Buffer[]) : null,
    });
  }
  return entries;
}

/** Parses an `XREADGROUP`/`XREAD` reply (`null` when the block timed out). */
export function parseReadReply(reply: unknown): StreamBatch[] {
  if (!Array.isArray(reply)) return [];
  const batches: StreamBatch[] = [];
  for (const stream of reply) {
    if (!Array.isArray(stream)) continue;
    batches.push({ key: text(stream[0]), entries: parseEntries(stream[1]) });
  }
  return batches;
}

/** A parsed `XAUTOCLAIM` reply. */
export interface AutoClaimReply {
  /** Where the next call continues; `0-0` when the scan of the PEL is complete. */
  readonly cursor: string;
  readonly entries: StreamEntry[];
  /** Ids that were pending but no longer exist in the stream (trimmed or deleted). */
  readonly deleted: string[];
}

/** Parses an `XAUTOCLAIM` reply (Redis 7: cursor, entries, deleted ids). */
export function parseAutoClaimReply(reply: unknown): AutoClaimReply {
  if (!Array.isArray(reply)) return { cursor: '0-0', entries: [], deleted: [] };
  const deleted = Array.isArray(reply[2]) ? (reply[2] as unknown[]).map(text) : [];
  return { cursor: text(reply[0]), entries: parseEntries(reply[1]), deleted };
}

/** Parses an `XCLAIM` reply (entries, without the ones that no longer exist). */
export function parseClaimReply(reply: unknown): StreamEntry[] {
  return parseEntries(reply);
}

/** One row of the extended `XPENDING` form. */
export interface PendingEntry {
  readonly id: string;
  readonly consumer: string;
  readonly idleMs: number;
  readonly deliveries: number;
}

/** Parses an extended `XPENDING key group [IDLE ms] start end count [consumer]` reply. */
export function parsePendingReply(reply: unknown): PendingEntry[] {
  if (!Array.isArray(reply)) return [];
  const rows: PendingEntry[] = [];
  for (const row of reply) {
    if (!Array.isArray(row) || row.length < 4) continue;
    rows.push({
      id: text(row[0]),
      consumer: text(row[1]),
      idleMs: Number(text(row[2])),
      deliveries: Number(text(row[3])),
    });
  }
  return rows;
}

/** An `XINFO GROUPS` or `XINFO CONSUMERS` reply: one field map per row (group or consumer). */
export function parseInfoReply(reply: unknown): Map<string, unknown>[] {
  if (!Array.isArray(reply)) return [];
  const rows: Map<string, unknown>[] = [];
  for (const row of reply) {
    if (!Array.isArray(row)) continue;
    const info = new Map<string, unknown>();
    for (let i = 0; i + 1 < row.length; i += 2) info.set(String(row[i]), row[i + 1]);
    rows.push(info);
  }
  return rows;
}

const EVENT_FIELD = Buffer.from('event');

/** The value of field `name` in a field/value list, or `undefined`. */
export function fieldValue(
  fields: readonly Buffer[],
  name: Buffer | string = EVENT_FIELD,
): Buffer | undefined {
  const wanted = typeof name === 'string' ? Buffer.from(name) : name;
  for (let i = 0; i + 1 < fields.length; i += 2) {
    if (sameBytes(fields[i] as Buffer, wanted)) return fields[i + 1];
  }
  return undefined;
}

/** `a.equals(b)` for field names: a few bytes, compared without a call into C++. */
function sameBytes(a: Buffer, b: Buffer): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

/** The field/value list as readable text, for entries that have no `event` field. */
export function describeFields(fields: readonly Buffer[]): Buffer {
  const parts: string[] = [];
  for (let i = 0; i + 1 < fields.length; i += 2) {
    parts.push(`${text(fields[i])}=${text(fields[i + 1])}`);
  }
  return Buffer.from(parts.join(' '), 'utf8');
}

/** Compares two stream ids (`ms-seq`) numerically. */
export function compareIds(a: string, b: string): number {
  const [aMs = '0', aSeq = '0'] = a.split('-');
  const [bMs = '0', bSeq = '0'] = b.split('-');
  const ms = BigInt(aMs) - BigInt(bMs);
  if (ms !== 0n) return ms < 0n ? -1 : 1;
  const seq = BigInt(aSeq) - BigInt(bSeq);
  return seq === 0n ? 0 : seq < 0n ? -1 : 1;
}

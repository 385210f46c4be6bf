/**
 * The JetStream streams of the transport: the configs it wants for the event and dead-letter
 * streams, `ensureStream` that creates or updates them, and what a refused set-up means
 * (JetStream missing, subjects another stream captures). It never deletes a stream or drops
 * subjects a stream already captures: other processes may rely on them.
 */
import {
  DiscardPolicy,
  JetStreamApiCodes,
  RetentionPolicy,
  StorageType,
  type JetStreamManager,
  type StreamConfig,
  type StreamInfo,
} from '@nats-io/jetstream';
import { nanos } from '@nats-io/transport-node';
import { configError, type WatchtowerError } from '@watchtower/core';
import { describeValue } from '@watchtower/core/transport-kit';
import type { ResolvedNatsConfig } from './config.js';
import { isNoResponders } from './map-error.js';
import { isApiError } from './message-source.js';

/**
 * A stream as we want it, plus the config fields that shape it (for CONFIG errors): `field`
 * for its own options, `prefix` for the subject prefix its subjects come from.
 */
export interface StreamSpec {
  readonly field: string;
  readonly prefix: { readonly field: string; readonly value: string };
  readonly config: Partial<StreamConfig> & { name: string; subjects: string[] };
}

// The server's code for a stream whose subjects another stream captures; the client has no
// constant for it.
const STREAM_SUBJECT_OVERLAP = 10065;

/** The event stream: captures `{subjectPrefix}.>`. */
export function eventStreamSpec(config: ResolvedNatsConfig): StreamSpec {
  const s = config.stream;
  return {
    field: 'stream',
    prefix: { field: 'subjectPrefix', value: config.subjectPrefix },
    config: {
      name: s.name,
      subjects: [`${config.subjectPrefix}.>`],
      retention: RETENTION[s.retention],
      storage: s.storage === 'memory' ? StorageType.Memory : StorageType.File,
      discard: DiscardPolicy.Old,
      max_age: nanos(s.maxAgeMs),
      max_bytes: s.maxBytes,
      max_msgs: s.maxMsgs,
      num_replicas: s.replicas,
      duplicate_window: nanos(s.duplicateWindowMs),
    },
  };
}

/** The dead-letter stream: captures `{dlqPrefix}.>`. */
export function dlqStreamSpec(config: ResolvedNatsConfig): StreamSpec {
  const d = config.dlq;
  return {
    field: 'dlq',
    prefix: { field: 'dlqPrefix', value: config.dlqPrefix },
    config: {
      name: d.streamName,
      subjects: [`${config.dlqPrefix}.>`],
      retention: RetentionPolicy.Limits,
      storage: d.storage === 'memory' ? StorageType.Memory : StorageType.File,
      discard: DiscardPolicy.Old,
      max_age: nanos(d.maxAgeMs),
      max_bytes: d.maxBytes,
      max_msgs: d.maxMsgs,
      num_replicas: d.replicas,
    },
  };
}

const RETENTION = {
  limits: RetentionPolicy.Limits,
  interest: RetentionPolicy.Interest,
  workqueue: RetentionPolicy.Workqueue,
} as const;

// Limits we own; an update sets them to what the config says.
const MANAGED_LIMITS = [
  'max_age',
  'max_bytes',
  'max_msgs',
  'num_replicas',
  'duplicate_window',
] as const;

/**
 * Creates the stream, or updates an existing one so that it captures our subjects and has our
 * limits. Idempotent and safe to run from many processes at once. Subjects the stream already
 * captures are kept (a changed prefix does not orphan stored events).
 *
 * @throws `CONFIG` when the stream exists with a storage or retention that cannot change.
 */
export async function ensureStream(jsm: JetStreamManager, spec: StreamSpec): Promise<StreamInfo> {
  let info = await findStream(jsm, spec.config.name);
  if (info === undefined) {
    try {
      return await jsm.streams.add(spec.config);
    } catch (error) {
      // Created by another process in the meantime: fall through to the update check.
      info = await findStream(jsm, spec.config.name);
      if (info === undefined) throw await explainOverlap(jsm, spec, spec.config.subjects, error);
    }
  }
  const current = info.config;
  if (spec.config.storage !== undefined && current.storage !== spec.config.storage) {
    throw configError(
      `${spec.field}.storage`,
      `stream ${spec.config.name} exists with storage '${current.storage}', which cannot change to '${spec.config.storage}'`,
    );
  }
  if (spec.config.retention !== undefined && current.retention !== spec.config.retention) {
    throw configError(
      `${spec.field}.retention`,
      `stream ${spec.config.name} exists with retention '${current.retention}', which cannot change to '${spec.config.retention}'`,
    );
  }
  const subjects = [...new Set([...(current.subjects ?? []), ...spec.config.subjects])];
  const changed =
    subjects.length !== (current.subjects ?? []).length ||
    MANAGED_LIMITS.some(
      (key) => spec.config[key] !== undefined && spec.config[key] !== current[key],
    );
  if (!changed) return info;
  const update: Partial<StreamConfig> = { ...current, subjects };
  for (const key of MANAGED_LIMITS) {
    if (spec.config[key] !== undefined) (update as Record<string, unknown>)[key] = spec.config[key];
  }
  try {
    return await jsm.streams.update(spec.config.name, update);
  } catch (error) {
    throw await explainOverlap(jsm, spec, subjects, error);
  }
}

/**
 * `' (is JetStream enabled on the server?)'` when `error` (of reaching the JetStream API or
 * setting up the streams) says that JetStream is not there: nothing answers its API, or the
 * account has none; otherwise `''`, so that other causes are not blamed on it.
 */
export function jetStreamHint(error: unknown): string {
  return isJetStreamMissing(error) ? ' (is JetStream enabled on the server?)' : '';
}

function isJetStreamMissing(error: unknown): boolean {
  for (let e = error; e instanceof Error; e = e.cause === e ? undefined : e.cause) {
    if (isApiError(e, JetStreamApiCodes.JetStreamNotEnabledForAccount)) return true;
  }
  return isNoResponders(error);
}

/**
 * A refusal because another stream captures some of `subjects` becomes a `CONFIG` error that
 * names that stream and the subjects both capture; any other error is returned as it is.
 */
async function explainOverlap(
  jsm: JetStreamManager,
  spec: StreamSpec,
  subjects: readonly string[],
  error: unknown,
): Promise<unknown> {
  if (!isApiError(error, STREAM_SUBJECT_OVERLAP)) return error;
  try {
    const clashes: string[] = [];
    for (const other of await overlappingStreams(jsm, spec.config.name, subjects)) {
      const theirs = (other.config.subjects ?? []).filter((subject) =>
        subjects.some((ours) => subjectsCollide(ours, subject)),
      );
      if (theirs.length > 0) {
        clashes.push(`stream ${other.config.name} captures ${theirs.join(', ')}`);
      }
    }
    if (clashes.length === 0) return error;
    return overlapError(spec, subjects, clashes);
  } catch {
    // The other streams could not be looked up: the server's own refusal says what it can.
    return error;
  }
}

async function overlappingStreams(
  jsm: JetStreamManager,
  own: string,
  subjects: readonly string[],
): Promise<StreamInfo[]> {
  const names = new Set<string>();
  for (const subject of subjects) {
    // The server lists the streams whose subjects collide with the filter.
    for await (const name of jsm.streams.names(subject)) if (name !== own) names.add(name);
  }
  const infos: StreamInfo[] = [];
  for (const name of names) {
    const info = await findStream(jsm, name);
    if (info !== undefined) infos.push(info);
  }
  return infos;
}

function overlapError(
  spec: StreamSpec,
  subjects: readonly string[],
  clashes: readonly string[],
): WatchtowerError {
  return configError(
    spec.prefix.field,
    `must not overlap the subjects of another stream: ${clashes.join(' and ')}, which ` +
      `stream ${spec.config.name} would capture with ${subjects.join(', ')} (a subject is ` +
      `stored by one stream only); choose another ${spec.prefix.field} or change the other ` +
      `stream, got ${describeValue(spec.prefix.value)}`,
  );
}

/**
 * True when some subject matches both `a` and `b` (NATS subjects, `*` for one token, `>` for
 * one or more at the end).
 */
function subjectsCollide(a: string, b: string): boolean {
  const x = a.split('.');
  const y = b.split('.');
  for (let i = 0; ; i++) {
    const p = x[i];
    const q = y[i];
    if (p === undefined || q === undefined) return p === q;
    if (p === '>' || q === '>') return true;
    if (p !== '*' && q !== '*' && p !== q) return false;
  }
}

async function findStream(jsm: JetStreamManager, name: string): Promise<StreamInfo | undefined> {
  try {
    return await jsm.streams.info(name);
  } catch (error) {
    if (isApiError(error, JetStreamApiCodes.StreamNotFound)) return undefined;
    throw error;
  }
}

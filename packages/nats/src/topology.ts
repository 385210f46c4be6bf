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
import { configError } from '@watchtower/core';
import type { ResolvedNatsConfig } from './config.js';
import { isApiError } from './message-source.js';

/** A stream as we want it, plus the config field that names it (for CONFIG errors). */
export interface StreamSpec {
  readonly field: string;
  readonly config: Partial<StreamConfig> & { name: string; subjects: string[] };
}

/** The event stream: captures `{subjectPrefix}.>`. */
export function eventStreamSpec(config: ResolvedNatsConfig): StreamSpec {
  const s = config.stream;
  return {
    field: 'stream',
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
      if (info === undefined) throw error;
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
  return jsm.streams.update(spec.config.name, update);
}

async function findStream(jsm: JetStreamManager, name: string): Promise<StreamInfo | undefined> {
  try {
    return await jsm.streams.info(name);
  } catch (error) {
    if (isApiError(error, JetStreamApiCodes.StreamNotFound)) return undefined;
    throw error;
  }
}

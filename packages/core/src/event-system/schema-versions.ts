/**
 * Schema versions of catalog entries: `versions({ 1: v1, 2: v2 }, { upcast: { 1: toV2 } })`
 * is a schema (the newest version's) that also carries its older versions and the functions
 * that carry a payload from one version to the next. The event system publishes with the
 * newest and a `schema-version` header; on consume it validates against the version an event
 * names and hands it on upcast to the newest. A plain `EventBus` sees only the newest.
 */
import { ValidationError, configError, describeError } from '../errors.js';
import type { Event } from '../event.js';
import { runPayloadSchema, type SchemaOutcome, type StandardSchemaV1 } from '../schema.js';

/** The header that names the schema version of an event's payload. */
export const SCHEMA_VERSION_HEADER = 'schema-version';

const VERSIONS = Symbol.for('watchtower.schema-versions');

/** Options of {@link versions}. */
export interface VersionsOptions {
  /**
   * For each version but the newest, a function from a payload of that version (after its
   * schema) to one of the next listed version.
   */
  upcast?: Record<number, (payload: unknown) => unknown>;
}

interface VersionTable {
  /** Listed versions, oldest first. */
  readonly order: readonly number[];
  readonly schemas: ReadonlyMap<number, StandardSchemaV1>;
  readonly upcast: ReadonlyMap<number, (payload: unknown) => unknown>;
  readonly latest: number;
}

type Descending = [16, 15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1];
type HighestIn<K, L extends readonly number[] = Descending> = L extends readonly [
  infer H extends number,
  ...infer R extends number[],
]
  ? H extends K
    ? H
    : HighestIn<K, R>
  : never;
/** The schema of the highest version listed (1 to 16; above, the union of them all). */
type LatestOf<V extends Record<number, StandardSchemaV1>> = Extract<
  [HighestIn<keyof V>] extends [never] ? V[keyof V] : V[HighestIn<keyof V> & keyof V],
  StandardSchemaV1
>;

/** A schema with versions: it validates as its newest version. */
export type VersionedSchema<S extends StandardSchemaV1 = StandardSchemaV1> = S & {
  readonly [VERSIONS]: VersionTable;
};

/**
 * A catalog entry with versions. Every version but the newest needs an `upcast` to the next
 * listed one. Throws a `CONFIG` error naming what is wrong.
 */
export function versions<const V extends Record<number, StandardSchemaV1>>(
  schemas: V,
  options: VersionsOptions = {},
): VersionedSchema<LatestOf<V>> {
  if (schemas === null || typeof schemas !== 'object') {
    throw configError('versions', 'must be an object of schemas by version number');
  }
  const order = Object.keys(schemas)
    .map((key) => {
      const version = Number(key);
      if (!Number.isInteger(version) || version < 1 || String(version) !== key) {
        throw configError(`versions.${key}`, 'a version must be an integer >= 1');
      }
      return version;
    })
    .sort((a, b) => a - b);
  if (order.length === 0) throw configError('versions', 'give at least one version');
  const table = new Map<number, StandardSchemaV1>();
  for (const version of order) {
    const schema = (schemas as Record<number, StandardSchemaV1>)[version];
    if (typeof schema?.['~standard']?.validate !== 'function') {
      throw configError(`versions.${version}`, 'must be a Standard Schema (zod 4, valibot ...)');
    }
    table.set(version, schema);
  }
  const upcast = new Map<number, (payload: unknown) => unknown>();
  const given = options.upcast ?? {};
  for (const [key, fn] of Object.entries(given)) {
    const version = Number(key);
    if (!table.has(version) || version === order[order.length - 1]) {
      throw configError(`upcast.${key}`, 'must be a listed version below the newest');
    }
    if (typeof fn !== 'function') throw configError(`upcast.${key}`, 'must be a function');
    upcast.set(version, fn);
  }
  for (const version of order.slice(0, -1)) {
    if (!upcast.has(version)) {
      throw configError(
        `upcast.${version}`,
        `version ${version} needs an upcast to the next version`,
      );
    }
  }
  const latest = order[order.length - 1] as number;
  const newest = table.get(latest) as StandardSchemaV1;
  const versioned: VersionedSchema = {
    '~standard': newest['~standard'],
    [VERSIONS]: { order, schemas: table, upcast, latest },
  };
  return versioned as unknown as VersionedSchema<LatestOf<V>>;
}

/** The versions of `schema`, when it came from {@link versions}. */
function versionsOf(schema: StandardSchemaV1): VersionTable | undefined {
  return (schema as Partial<VersionedSchema>)[VERSIONS];
}

/** The `schema-version` header an event published under `schema` carries; undefined without versions. */
export function publishedVersion(schema: StandardSchemaV1 | undefined): string | undefined {
  if (schema === undefined) return undefined;
  const table = versionsOf(schema);
  return table === undefined ? undefined : String(table.latest);
}

/**
 * Validates a consumed payload against the version its event names (the oldest when it names
 * none) and upcasts it to the newest, which validates it last. A version not listed, a
 * failing schema or a throwing upcast is a failed outcome (`VALIDATION`).
 */
export async function checkVersioned(
  schema: StandardSchemaV1,
  event: Event,
): Promise<SchemaOutcome | undefined> {
  const table = versionsOf(schema);
  if (table === undefined) return undefined;
  const named = event.headers[SCHEMA_VERSION_HEADER];
  const version = named === undefined ? table.order[0] : Number(named);
  const own = version === undefined ? undefined : table.schemas.get(version);
  if (own === undefined) {
    return {
      ok: false,
      error: new ValidationError(
        `${event.type} names schema version ${String(named)}, which is not listed ` +
          `(listed: ${table.order.join(', ')})`,
      ),
    };
  }
  let outcome = await runPayloadSchema(own, event.payload, event.type);
  let at = version as number;
  while (outcome.ok && at !== table.latest) {
    const next = table.order[table.order.indexOf(at) + 1] as number;
    let payload: unknown;
    try {
      payload = (table.upcast.get(at) as (payload: unknown) => unknown)(outcome.value);
    } catch (error) {
      return {
        ok: false,
        error: new ValidationError(
          `the upcast of ${event.type} from version ${at} to ${next} threw: ${describeError(error)}`,
        ),
      };
    }
    outcome = await runPayloadSchema(
      table.schemas.get(next) as StandardSchemaV1,
      payload,
      event.type,
    );
    at = next;
  }
  return outcome;
}

import { ValidationError, type ValidationIssue } from './errors.js';
import { assertEventType } from './event.js';

/**
 * The Standard Schema interface (standardschema.dev), which zod 4, valibot and arktype
 * implement. Core depends on this shape only, so any of them can describe payloads.
 */
export interface StandardSchemaV1<Input = unknown, Output = Input> {
  readonly '~standard': {
    readonly version: 1;
    readonly vendor: string;
    readonly validate: (
      value: unknown,
    ) => StandardSchemaResult<Output> | Promise<StandardSchemaResult<Output>>;
    readonly types?: { readonly input: Input; readonly output: Output } | undefined;
  };
}

/** What a Standard Schema's `validate` returns. */
export type StandardSchemaResult<Output> =
  | { readonly value: Output; readonly issues?: undefined }
  | {
      readonly issues: ReadonlyArray<{
        readonly message: string;
        readonly path?: ReadonlyArray<PropertyKey | { readonly key: PropertyKey }> | undefined;
      }>;
    };

/** The input type a schema accepts. */
export type SchemaInput<S> = S extends StandardSchemaV1<infer I, unknown> ? I : unknown;
/** The output type a schema produces. */
export type SchemaOutput<S> = S extends StandardSchemaV1<unknown, infer O> ? O : unknown;

/** A typed event catalog: event type to payload schema. */
export type EventCatalog = Record<string, StandardSchemaV1>;

/**
 * Declares the event types of an application with a payload schema each, e.g.
 * `defineEvents({ 'user.created': z.object({ id: z.string() }) })`. An `EventBus` given the
 * catalog infers payload types in `publish` and `subscribe` and validates payloads.
 * Throws a `VALIDATION` error for a key that is not a valid event type.
 */
export function defineEvents<C extends EventCatalog>(catalog: C): C {
  for (const [type, schema] of Object.entries(catalog)) {
    assertEventType(type);
    if (typeof (schema as Partial<StandardSchemaV1>)?.['~standard']?.validate !== 'function') {
      throw new ValidationError(
        `the schema of "${type}" is not a Standard Schema (zod 4, valibot, arktype ...)`,
      );
    }
  }
  return catalog;
}

/** The outcome of {@link runSchema}. */
export type SchemaOutcome = { ok: true; value: unknown } | { ok: false; error: ValidationError };

/**
 * Runs a schema: the validated (possibly transformed) value, or a `VALIDATION` error listing
 * the issues. Synchronous schemas answer without a promise, so the hot path does not wait a
 * microtask for them.
 */
export function runSchema(
  schema: StandardSchemaV1,
  value: unknown,
  what: string,
): SchemaOutcome | Promise<SchemaOutcome> {
  return run(schema, value, what, undefined);
}

/**
 * {@link runSchema} of the payload of an event of type `type`, for the `EventBus`: the name in
 * its error (`payload of "type"`) is written only when the payload fails, not for every event.
 */
export function runPayloadSchema(
  schema: StandardSchemaV1,
  value: unknown,
  type: string,
): SchemaOutcome | Promise<SchemaOutcome> {
  return run(schema, value, undefined, type);
}

/** What an error calls the value: `what`, or else the payload of an event of type `type`. */
function nameOf(what: string | undefined, type: string | undefined): string {
  return what ?? `payload of "${String(type)}"`;
}

function run(
  schema: StandardSchemaV1,
  value: unknown,
  what: string | undefined,
  type: string | undefined,
): SchemaOutcome | Promise<SchemaOutcome> {
  const result = schema['~standard'].validate(value);
  return result instanceof Promise
    ? result.then((settled) => toOutcome(settled, what, type))
    : toOutcome(result, what, type);
}

function toOutcome(
  result: StandardSchemaResult<unknown>,
  what: string | undefined,
  type: string | undefined,
): SchemaOutcome {
  return result.issues === undefined
    ? { ok: true, value: result.value }
    : { ok: false, error: toValidationError(result.issues, nameOf(what, type)) };
}

function toValidationError(
  issues: Extract<StandardSchemaResult<unknown>, { issues: unknown }>['issues'],
  what: string,
): ValidationError {
  const list: ValidationIssue[] = issues.map((issue) => {
    const entry: ValidationIssue = { message: issue.message };
    if (issue.path !== undefined) {
      entry.path = issue.path.map((part) => (typeof part === 'object' ? part.key : part));
    }
    return entry;
  });
  const summary = list
    .slice(0, 3)
    .map((issue) =>
      issue.path?.length ? `${issue.path.join('.')}: ${issue.message}` : issue.message,
    )
    .join('; ');
  return new ValidationError(`${what} failed schema validation: ${summary}`, list);
}

/**
 * True when event type `Type` matches pattern `Pattern` (`*` one token, `>`/`#` the rest),
 * evaluated by the type checker so that `subscribe('user.*', ...)` infers its payloads.
 */
export type MatchesPattern<Type extends string, Pattern extends string> = Pattern extends '>' | '#'
  ? true
  : Pattern extends `${infer PHead}.${infer PRest}`
    ? Type extends `${infer THead}.${infer TRest}`
      ? PHead extends '*' | THead
        ? MatchesPattern<TRest, PRest>
        : false
      : false
    : Type extends `${string}.${string}`
      ? false
      : Pattern extends '*' | Type
        ? true
        : false;

/**
 * The catalog types a pattern matches; for a union of patterns (`subscribe(['a.*', 'b.c'])`),
 * the types any of them matches.
 */
export type TypesMatching<C extends EventCatalog, Pattern extends string> = {
  // MatchesPattern distributes over a union of patterns: `boolean` means some pattern matched.
  [K in keyof C & string]: true extends MatchesPattern<K, Pattern> ? K : never;
}[keyof C & string];

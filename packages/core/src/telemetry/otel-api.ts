/**
 * Finding `@opentelemetry/api`, an optional peer dependency: core never imports it statically
 * (a static import would make it required, and would pull it into browser bundles of core).
 * It is required lazily, once per process, from where core is installed; when it is not
 * installed, telemetry is off and nothing fails. Types come from the package at build time
 * only (`import type`).
 */
import type * as Api from '@opentelemetry/api';

/** The `@opentelemetry/api` module. */
export type OtelApi = typeof Api;

/** What `require()` of the API gave: the module, or why there is none. */
type Loaded = { readonly api: OtelApi } | { readonly missing: string };

let loaded: Loaded | undefined;

/**
 * The installed `@opentelemetry/api`, or `{ missing }` saying why there is none (not
 * installed, or no `require` on this platform). Tried once; the answer is kept.
 */
export function loadOtelApi(): Loaded {
  loaded ??= requireApi();
  return loaded;
}

/** Only for tests: the next {@link loadOtelApi} answers `result` (undefined: try again). */
export function setOtelApiForTesting(result: Loaded | undefined): void {
  loaded = result;
}

function requireApi(): Loaded {
  try {
    const load = nodeRequire();
    if (load === undefined) return { missing: 'this platform has no require()' };
    return { api: load('@opentelemetry/api') as OtelApi };
  } catch (error) {
    return { missing: error instanceof Error ? error.message : String(error) };
  }
}

/**
 * A `require` that resolves from this file, made with `node:module` (reached through
 * `process.getBuiltinModule`, Node >= 20.16, so that neither build imports a Node built-in).
 * The CommonJS build names this file by `__filename`, the ESM build by `import.meta.url`; a
 * bare `require` would be the bundler's stub in the ESM build.
 */
function nodeRequire(): ((id: string) => unknown) | undefined {
  const getBuiltin = (globalThis as { process?: { getBuiltinModule?: (id: string) => unknown } })
    .process?.getBuiltinModule;
  const nodeModule = getBuiltin?.('node:module') as
    { createRequire(from: string): (id: string) => unknown } | undefined;
  return nodeModule?.createRequire(typeof __filename === 'string' ? __filename : import.meta.url);
}

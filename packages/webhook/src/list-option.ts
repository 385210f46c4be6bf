import { describeValue } from '@watchtower/core/transport-kit';
import { configError } from '@watchtower/core';

/**
 * An option that takes one string or a list of them (`secrets`, `publicKeys`): always a list,
 * empty for `undefined`.
 *
 * @throws `CONFIG` naming `field` for anything else.
 */
export function listOption(field: string, value: unknown): string[] {
  if (value === undefined) return [];
  if (typeof value === 'string') return [value];
  if (Array.isArray(value) && value.every((item) => typeof item === 'string')) return [...value];
  throw configError(field, `must be a string or an array of strings, got ${describeValue(value)}`);
}

/**
 * Endpoint subscriptions: URL, keys, event-type patterns, extra headers and the enabled flag,
 * checked once into what a delivery needs (compiled patterns, parsed keys, the URL's origin).
 */
import { assertPattern, compilePattern, configError, type CompiledPattern } from '@watchtower/core';
import {
  booleanOption,
  describeValue,
  rejectUnknownOptions,
  stringOption,
} from '@watchtower/core/transport-kit';
import { isIP } from 'node:net';
import { isPrivateAddress } from './address-guard.js';
import { listOption } from './list-option.js';
import { SIGNING_OPTION_KEYS, resolveSigningKeys, type WebhookSigningOptions } from './signer.js';
import type { SigningKeys } from './signature.js';

/** One endpoint subscription. */
export interface WebhookEndpoint extends WebhookSigningOptions {
  /** Where events are POSTed: an `http:` or `https:` URL. */
  url: string;
  /**
   * The endpoint's name in stats, dead letters and `removeEndpoint`.
   * @defaultValue the URL
   */
  id?: string;
  /**
   * Event-type patterns delivered here (`*` one token, `>` the rest).
   * @defaultValue `'>'`: every event
   */
  events?: string | readonly string[];
  /** Extra request headers (not `webhook-*` nor `content-type`, which the client sets). */
  headers?: Record<string, string>;
  /**
   * A disabled endpoint gets nothing; a 410 answer disables it.
   * @defaultValue true
   */
  enabled?: boolean;
}

const ENDPOINT_KEYS = ['url', 'id', 'events', 'headers', 'enabled', ...SIGNING_OPTION_KEYS];
const RESERVED_HEADER =
  /^(webhook-(id|timestamp|signature)|content-type|content-length|x-watchtower-signature|host)$/i;

/** An endpoint checked and parsed. */
export interface ResolvedEndpoint {
  readonly id: string;
  readonly url: string;
  /** The URL's origin and its path with the query, as undici's `dispatch` takes them. */
  readonly origin: string;
  readonly path: string;
  readonly events: readonly string[];
  readonly patterns: readonly CompiledPattern[];
  readonly headers: Readonly<Record<string, string>>;
  readonly keys: SigningKeys;
  enabled: boolean;
  /** Why it was disabled, when a 410 did it. */
  disabledBy: 'gone' | 'config' | undefined;
}

/**
 * Checks `value` as an endpoint; `field` names it in errors (`endpoints[2]`).
 *
 * @throws `CONFIG` naming the field (`endpoints[2].url`).
 */
export function resolveEndpoint(
  value: WebhookEndpoint,
  field: string,
  allowPrivateAddresses: boolean,
): ResolvedEndpoint {
  rejectUnknownOptions(value, ENDPOINT_KEYS, field);
  const urlText = stringOption(`${field}.url`, value.url);
  let url: URL;
  try {
    url = new URL(urlText);
  } catch {
    throw configError(
      `${field}.url`,
      `must be an absolute http: or https: URL, got ${describeValue(urlText)}`,
    );
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') {
    throw configError(
      `${field}.url`,
      `must be an http: or https: URL, got ${describeValue(urlText)}`,
    );
  }
  const host = url.hostname.replace(/^\[|\]$/g, '');
  if (!allowPrivateAddresses && isIP(host) !== 0 && isPrivateAddress(host)) {
    throw configError(
      `${field}.url`,
      `points at ${host}, a private, loopback or link-local address; set allowPrivateAddresses: true to deliver there (local development)`,
    );
  }
  const events = value.events === undefined ? ['>'] : listOption(`${field}.events`, value.events);
  if (events.length === 0) throw configError(`${field}.events`, 'must hold at least one pattern');
  const patterns = events.map((pattern, i) => {
    try {
      assertPattern(pattern);
    } catch (error) {
      throw configError(`${field}.events[${i}]`, (error as Error).message);
    }
    return compilePattern(pattern);
  });
  const headers: Record<string, string> = {};
  if (value.headers !== undefined) {
    if (
      typeof value.headers !== 'object' ||
      value.headers === null ||
      Array.isArray(value.headers)
    ) {
      throw configError(
        `${field}.headers`,
        `must be an object of strings, got ${describeValue(value.headers)}`,
      );
    }
    for (const [name, text] of Object.entries(value.headers)) {
      if (typeof text !== 'string') {
        throw configError(
          `${field}.headers.${name}`,
          `must be a string, got ${describeValue(text)}`,
        );
      }
      if (RESERVED_HEADER.test(name)) {
        throw configError(`${field}.headers.${name}`, 'is set by the client and cannot be given');
      }
      headers[name.toLowerCase()] = text;
    }
  }
  const enabled =
    value.enabled === undefined ? true : booleanOption(`${field}.enabled`, value.enabled);
  return {
    id: value.id === undefined ? url.href : stringOption(`${field}.id`, value.id),
    url: url.href,
    origin: url.origin,
    path: `${url.pathname}${url.search}`,
    events,
    patterns,
    headers,
    keys: resolveSigningKeys(value, `${field}.`),
    enabled,
    disabledBy: enabled ? undefined : 'config',
  };
}

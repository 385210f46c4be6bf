/**
 * Subscription patterns, one syntax for every transport: tokens separated by `.`;
 * `*` matches exactly one token; `>` matches one or more trailing tokens and may only be the
 * last token; `#` is an alias of `>`. Literal tokens are `[A-Za-z0-9_-]+`, as in event types.
 *
 * Matching runs for every published and every delivered event, so nothing here compiles a
 * regular expression or splits a string per call.
 */
import { configError, ValidationError } from './errors.js';

const DOT = 0x2e;

/** 1 for the character codes allowed in a literal token: `[A-Za-z0-9_-]`. */
const TOKEN_CHAR = (() => {
  const table = new Uint8Array(128);
  const set = (from: string, to: string): void => {
    for (let c = from.charCodeAt(0); c <= to.charCodeAt(0); c++) table[c] = 1;
  };
  set('A', 'Z');
  set('a', 'z');
  set('0', '9');
  set('_', '_');
  set('-', '-');
  return table;
})();

function isTokenChar(code: number): boolean {
  return code < 128 && TOKEN_CHAR[code] === 1;
}

/** What is wrong with `pattern`, or `undefined` when it is valid. */
function patternProblem(pattern: unknown): string | undefined {
  if (typeof pattern !== 'string') return `expected a string, got ${typeof pattern}`;
  if (pattern.length === 0) return 'the pattern is empty';
  const length = pattern.length;
  let start = 0;
  let index = 0;
  while (start <= length) {
    let end = start;
    while (end < length && pattern.charCodeAt(end) !== DOT) end++;
    const isLast = end === length;
    if (end === start) {
      return `token ${index + 1} is empty (patterns are tokens joined by single dots)`;
    }
    if (end - start === 1) {
      const c = pattern[start];
      if (c === '*') {
        start = end + 1;
        index++;
        continue;
      }
      if (c === '>' || c === '#') {
        if (!isLast) return `\`${c}\` may only be the last token`;
        return undefined;
      }
    }
    for (let i = start; i < end; i++) {
      const code = pattern.charCodeAt(i);
      if (!isTokenChar(code)) {
        const c = pattern[i] as string;
        const token = pattern.slice(start, end);
        return c === '*' || c === '>' || c === '#'
          ? `token "${token}" mixes the wildcard \`${c}\` with other characters; a wildcard must be a whole token`
          : `token "${token}" has the character ${JSON.stringify(c)}; literal tokens are [A-Za-z0-9_-]`;
      }
    }
    start = end + 1;
    index++;
  }
  return undefined;
}

/** True when `pattern` is a valid subscription pattern (see {@link assertPattern}). */
export function isValidPattern(pattern: unknown): pattern is string {
  return patternProblem(pattern) === undefined;
}

/**
 * Throws a `VALIDATION` error, saying what is wrong, unless `pattern` is one or more tokens
 * joined by single dots, each a literal of `[A-Za-z0-9_-]`, `*` (exactly one token), or, as the
 * last token only, `>` or its alias `#` (one or more tokens).
 */
export function assertPattern(pattern: unknown): asserts pattern is string {
  const problem = patternProblem(pattern);
  if (problem === undefined) return;
  throw new ValidationError(`invalid pattern ${JSON.stringify(pattern)}: ${problem}`, [
    { message: problem, path: ['pattern'] },
  ]);
}

/** A pattern compiled once for repeated matching. Immutable. */
export interface CompiledPattern {
  /** The pattern as given. */
  readonly source: string;
  /** The tokens, with `#` written as `>`. */
  readonly tokens: readonly string[];
  /** True when the pattern has no wildcard: it matches exactly one event type, itself. */
  readonly literal: boolean;
  /**
   * True when the event type `type` matches. Never throws; anything that is not a valid event
   * type (empty, empty token, characters outside `[A-Za-z0-9_-]`) matches nothing.
   */
  matches(type: string): boolean;
}

/** Splits a valid pattern into tokens, with `#` normalised to `>`. */
function patternTokens(pattern: string): string[] {
  const tokens = pattern.split('.');
  const last = tokens.length - 1;
  if (tokens[last] === '#') tokens[last] = '>';
  return tokens;
}

/** True when `type[from..]` is one or more valid event-type tokens. */
function isValidTail(type: string, from: number): boolean {
  const length = type.length;
  if (from >= length) return false;
  let tokenLength = 0;
  for (let i = from; i < length; i++) {
    const code = type.charCodeAt(i);
    if (code === DOT) {
      if (tokenLength === 0) return false;
      tokenLength = 0;
    } else if (isTokenChar(code)) {
      tokenLength++;
    } else {
      return false;
    }
  }
  return tokenLength > 0;
}

/** Walks `type` against wildcard `tokens` without allocating. */
function matchTokens(tokens: readonly string[], type: string): boolean {
  const length = type.length;
  let position = 0;
  for (const token of tokens) {
    // `position > length` means the type ran out of tokens.
    if (position > length) return false;
    if (token === '>') return isValidTail(type, position);
    let end: number;
    if (token === '*') {
      end = position;
      while (end < length) {
        const code = type.charCodeAt(end);
        if (code === DOT) break;
        if (!isTokenChar(code)) return false;
        end++;
      }
      if (end === position) return false;
    } else {
      if (!type.startsWith(token, position)) return false;
      end = position + token.length;
      if (end < length && type.charCodeAt(end) !== DOT) return false;
    }
    position = end + 1;
  }
  // The last token ended exactly at the end of the type (not before a trailing dot).
  return position === length + 1;
}

/**
 * Compiles `pattern` for repeated matching. A literal pattern compares strings; a wildcard
 * pattern walks the type once, without allocating.
 *
 * @throws `ValidationError` (code `VALIDATION`) for an invalid pattern.
 */
export function compilePattern(pattern: string): CompiledPattern {
  assertPattern(pattern);
  const tokens = Object.freeze(patternTokens(pattern));
  const literal = !tokens.some((token) => token === '*' || token === '>');
  const matches = literal
    ? (type: string): boolean => type === pattern
    : (type: string): boolean => typeof type === 'string' && matchTokens(tokens, type);
  return Object.freeze({ source: pattern, tokens, literal, matches });
}

/**
 * True when some event type matches both patterns (`user.*` and `*.created` overlap on
 * `user.created`; `user.*` and `order.>` never do).
 */
export function patternsOverlap(a: CompiledPattern, b: CompiledPattern): boolean {
  const x = a.tokens;
  const y = b.tokens;
  const overlap = (i: number, j: number): boolean => {
    if (i === x.length || j === y.length) return i === x.length && j === y.length;
    // `>` takes one or more tokens: whatever the other side still needs, as long as it needs one.
    if (x[i] === '>' || y[j] === '>') return true;
    return (x[i] === '*' || y[j] === '*' || x[i] === y[j]) && overlap(i + 1, j + 1);
  };
  return overlap(0, 0);
}

const COMPILED_CACHE_SIZE = 1024;
const compiledCache = new Map<string, CompiledPattern>();

/**
 * True when event type `type` matches `pattern`. Compiled patterns are cached (the 1024 most
 * recently compiled), so calling this in a loop is cheap; hold a {@link compilePattern} result
 * or use a {@link PatternIndex} where you can.
 *
 * @throws `ValidationError` (code `VALIDATION`) for an invalid pattern; an invalid `type`
 * simply does not match.
 */
export function matchPattern(pattern: string, type: string): boolean {
  let compiled = compiledCache.get(pattern);
  if (compiled === undefined) {
    compiled = compilePattern(pattern);
    if (compiledCache.size >= COMPILED_CACHE_SIZE) {
      // Maps iterate in insertion order: drop the oldest entry.
      const oldest = compiledCache.keys().next();
      if (oldest.done !== true) compiledCache.delete(oldest.value);
    }
    compiledCache.set(pattern, compiled);
  }
  return compiled.matches(type);
}

/**
 * Maps a pattern to a NATS subject filter. NATS wildcards mean what ours mean (`*` one token,
 * `>` one or more trailing tokens), so only the alias `#` becomes `>`. Adding a subject prefix
 * is up to the transport.
 *
 * @throws `ValidationError` (code `VALIDATION`) for an invalid pattern.
 */
export function toNatsSubject(pattern: string): string {
  assertPattern(pattern);
  return pattern.endsWith('#') ? `${pattern.slice(0, -1)}>` : pattern;
}

/**
 * Maps a pattern to an AMQP topic-exchange binding key: `*` stays `*`, a trailing `>` or `#`
 * becomes `#`.
 *
 * Caution: AMQP `#` matches ZERO or more words, ours one or more. The binding `user.#` also
 * routes the type `user` itself, which `user.>` must not receive. A transport that binds with
 * this key must therefore post-filter every delivery with
 * `compilePattern(pattern).matches(type)` (or a {@link PatternIndex}) and ack, without
 * handling, what does not match.
 *
 * @throws `ValidationError` (code `VALIDATION`) for an invalid pattern.
 */
export function toAmqpBindingKey(pattern: string): string {
  assertPattern(pattern);
  return pattern.endsWith('>') ? `${pattern.slice(0, -1)}#` : pattern;
}

/** Options of {@link PatternIndex}. */
export interface PatternIndexOptions {
  /**
   * How many event types keep their `match` result cached. The cache is emptied by every
   * `add`, `remove` and `clear`. `0` turns the cache off.
   * @defaultValue 1024
   */
  cacheSize?: number;
}

/** The defaults of {@link PatternIndexOptions}. */
export const DEFAULT_PATTERN_INDEX_OPTIONS: Readonly<Required<PatternIndexOptions>> = Object.freeze(
  { cacheSize: 1024 },
);

class TrieNode<V> {
  /** Children by literal token. */
  literal: Map<string, TrieNode<V>> | undefined;
  /** The child for `*`. */
  star: TrieNode<V> | undefined;
  /** Values whose pattern ends at this node. */
  exact: Set<V> | undefined;
  /** Values whose pattern has `>` right after this node. */
  tail: Set<V> | undefined;

  isEmpty(): boolean {
    return (
      (this.literal === undefined || this.literal.size === 0) &&
      this.star === undefined &&
      (this.exact === undefined || this.exact.size === 0) &&
      (this.tail === undefined || this.tail.size === 0)
    );
  }
}

const EMPTY: readonly never[] = Object.freeze([]);

/**
 * Splits a valid event type into its tokens, or returns `undefined` for an invalid one.
 * One scan, no regular expression.
 */
function eventTypeTokens(type: string): string[] | undefined {
  if (typeof type !== 'string') return undefined;
  const tokens: string[] = [];
  const length = type.length;
  let start = 0;
  for (let i = 0; i <= length; i++) {
    const code = i === length ? DOT : type.charCodeAt(i);
    if (code === DOT) {
      if (i === start) return undefined;
      tokens.push(type.slice(start, i));
      start = i + 1;
    } else if (!isTokenChar(code)) {
      return undefined;
    }
  }
  return tokens;
}

/**
 * Values (subscriptions) filed under patterns, found by event type.
 *
 * A token trie: `match` costs O(tokens of the type) (times the few `*` branches that exist),
 * not O(number of patterns), and results are cached per type until the next change.
 *
 * A (pattern, value) pair is stored once: adding it again changes nothing. `user.#` and
 * `user.>` are the same pattern.
 *
 * @typeParam V - the values filed; compared by identity (`Set` semantics).
 */
export class PatternIndex<V> {
  #root = new TrieNode<V>();
  #size = 0;
  readonly #cacheSize: number;
  readonly #cache = new Map<string, readonly V[]>();

  /**
   * @throws a `CONFIG` error when `cacheSize` is not a non-negative integer.
   */
  constructor(options?: PatternIndexOptions) {
    const { cacheSize } = { ...DEFAULT_PATTERN_INDEX_OPTIONS, ...options };
    if (!Number.isSafeInteger(cacheSize) || cacheSize < 0) {
      throw configError('cacheSize', `expected a non-negative integer, got ${String(cacheSize)}`);
    }
    this.#cacheSize = cacheSize;
  }

  /** How many (pattern, value) pairs are stored. */
  get size(): number {
    return this.#size;
  }

  /**
   * Files `value` under `pattern`. Adding a pair that is already stored changes nothing.
   *
   * @throws `ValidationError` (code `VALIDATION`) for an invalid pattern.
   */
  add(pattern: string, value: V): void {
    assertPattern(pattern);
    const tokens = patternTokens(pattern);
    const tail = tokens[tokens.length - 1] === '>';
    const depth = tail ? tokens.length - 1 : tokens.length;
    let node = this.#root;
    for (let i = 0; i < depth; i++) {
      const token = tokens[i] as string;
      if (token === '*') {
        node = node.star ??= new TrieNode<V>();
      } else {
        const children = (node.literal ??= new Map<string, TrieNode<V>>());
        let child = children.get(token);
        if (child === undefined) {
          child = new TrieNode<V>();
          children.set(token, child);
        }
        node = child;
      }
    }
    const values = tail ? (node.tail ??= new Set()) : (node.exact ??= new Set());
    if (values.has(value)) return;
    values.add(value);
    this.#size++;
    this.#invalidate();
  }

  /**
   * Removes the pair (`pattern`, `value`). Returns whether it was stored; an invalid pattern
   * was never stored, so it returns `false` rather than throwing.
   */
  remove(pattern: string, value: V): boolean {
    if (!isValidPattern(pattern)) return false;
    const tokens = patternTokens(pattern);
    const tail = tokens[tokens.length - 1] === '>';
    const depth = tail ? tokens.length - 1 : tokens.length;
    const path: TrieNode<V>[] = [this.#root];
    let node = this.#root;
    for (let i = 0; i < depth; i++) {
      const token = tokens[i] as string;
      const child = token === '*' ? node.star : node.literal?.get(token);
      if (child === undefined) return false;
      path.push(child);
      node = child;
    }
    const values = tail ? node.tail : node.exact;
    if (values === undefined || !values.delete(value)) return false;
    this.#size--;
    this.#invalidate();
    // Prune the nodes left empty, deepest first, so removed patterns leave no garbage.
    for (let i = depth; i > 0; i--) {
      const current = path[i] as TrieNode<V>;
      if (!current.isEmpty()) break;
      const parent = path[i - 1] as TrieNode<V>;
      const token = tokens[i - 1] as string;
      if (token === '*') parent.star = undefined;
      else parent.literal?.delete(token);
    }
    return true;
  }

  /**
   * The values filed under every pattern that matches event type `type`, each value once,
   * in a stable order. An invalid type matches nothing.
   *
   * The result is frozen and may be shared with later calls for the same type (it is cached
   * until the next change), so it is cheap to call for every event; copy it to modify it.
   */
  match(type: string): readonly V[] {
    const cached = this.#cache.get(type);
    if (cached !== undefined) return cached;
    const result = this.#lookup(type);
    if (this.#cacheSize > 0) {
      if (this.#cache.size >= this.#cacheSize) {
        const oldest = this.#cache.keys().next();
        if (oldest.done !== true) this.#cache.delete(oldest.value);
      }
      this.#cache.set(type, result);
    }
    return result;
  }

  /** Removes every pair. */
  clear(): void {
    this.#root = new TrieNode<V>();
    this.#size = 0;
    this.#invalidate();
  }

  #invalidate(): void {
    if (this.#cache.size > 0) this.#cache.clear();
  }

  #lookup(type: string): readonly V[] {
    if (this.#size === 0) return EMPTY;
    const tokens = eventTypeTokens(type);
    if (tokens === undefined) return EMPTY;
    const found: Set<V>[] = [];
    collect(this.#root, tokens, 0, found);
    if (found.length === 0) return EMPTY;
    if (found.length === 1) return Object.freeze(Array.from(found[0] as Set<V>));
    // Several patterns matched: a value filed under more than one of them appears once.
    const unique = new Set<V>();
    for (const values of found) for (const value of values) unique.add(value);
    return Object.freeze(Array.from(unique));
  }
}

/** Gathers the non-empty value sets of every node that matches `tokens[index..]`. */
function collect<V>(
  node: TrieNode<V>,
  tokens: readonly string[],
  index: number,
  found: Set<V>[],
): void {
  if (index === tokens.length) {
    if (node.exact !== undefined && node.exact.size > 0) found.push(node.exact);
    return;
  }
  // At least one token is left, which is what `>` needs.
  if (node.tail !== undefined && node.tail.size > 0) found.push(node.tail);
  const child = node.literal?.get(tokens[index] as string);
  if (child !== undefined) collect(child, tokens, index + 1, found);
  if (node.star !== undefined) collect(node.star, tokens, index + 1, found);
}

// Small predicates for the options an embedder passes to the constructors: each throws an
// InvalidArgumentError whose message names the option (`options.hooks.pause must be a function`), so a
// wrong option fails at construction, not as a Node TypeError somewhere inside a migration.
import { isIP } from 'node:net';
import { createSecureContext, type SecureContextOptions } from 'node:tls';
import { InvalidArgumentError } from './errors.js';

/** How a received value reads in a message: short, and typed where its type is the problem. */
export function shown(value: unknown): string {
  if (typeof value === 'string') return `'${value.length > 60 ? `${value.slice(0, 60)}…` : value}'`;
  if (typeof value === 'function') return 'a function';
  if (value === null || value === undefined || typeof value !== 'object') return String(value);
  return Array.isArray(value) ? 'an array' : `an object (${value.constructor?.name ?? 'no prototype'})`;
}

export function invalid(name: string, expected: string, value: unknown): InvalidArgumentError {
  return new InvalidArgumentError(`${name} must be ${expected}, got ${shown(value)}`);
}

export function checkObject(name: string, value: unknown): void {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) throw invalid(name, 'an object', value);
}

export function checkFunction(name: string, value: unknown): void {
  if (typeof value !== 'function') throw invalid(name, 'a function', value);
}

export function checkOptionalFunction(name: string, value: unknown): void {
  if (value !== undefined) checkFunction(name, value);
}

export function checkOptionalBoolean(name: string, value: unknown): void {
  if (value !== undefined && typeof value !== 'boolean') throw invalid(name, 'true or false', value);
}

// `Function`, not a constructor type: MemoryRegion's constructor is private.
export function checkInstance(name: string, value: unknown, type: Function, what: string): void {
  if (!(value instanceof type)) throw invalid(name, what, value);
}

/** A finite number >= 0 (> 0 unless `zeroAllowed`), whole when `whole`. */
export function checkNumber(name: string, value: unknown, { zeroAllowed = false, whole = false } = {}): void {
  const ok = typeof value === 'number' && Number.isFinite(value) && value >= 0 && (zeroAllowed || value > 0) &&
    (!whole || Number.isSafeInteger(value));
  if (!ok) throw invalid(name, `a ${zeroAllowed ? 'non-negative' : 'positive'} ${whole ? 'whole number' : 'number'}`, value);
}

/** A whole number in [min, max]. */
export function checkRange(name: string, value: unknown, min: number, max: number): void {
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < min || value > max) {
    throw invalid(name, `a whole number from ${min} to ${max}`, value);
  }
}

export function checkOneOf(name: string, value: unknown, allowed: readonly string[]): void {
  if (typeof value !== 'string' || !allowed.includes(value)) throw invalid(name, allowed.map((a) => `'${a}'`).join(', or '), value);
}

/**
 * An IP address or a DNS name. A Unix socket path, a URL or `host:port` is refused here: Node would
 * otherwise look it up as a name and fail later with a bare ENOTFOUND.
 */
export function checkHost(name: string, value: unknown): void {
  const hostName = /^(?=.{1,253}$)[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,62})(?:\.[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,62}))*\.?$/;
  if (typeof value !== 'string' || (isIP(value) === 0 && !hostName.test(value))) {
    throw invalid(name, 'an IP address or a host name (not a Unix socket path, URL or host:port; IPv6 without brackets)', value);
  }
}

/** A Unix domain socket's path: a non-empty string. */
export function checkSocketPath(name: string, value: unknown): void {
  if (typeof value !== 'string' || value === '') throw invalid(name, 'the Unix socket\'s path', value);
}

/** Longest delay setTimeout keeps: a longer one would fire at once. */
const MAX_TIMER_MS = 2 ** 31 - 1;

/** A positive number of milliseconds a timer can wait (zero too when `zeroAllowed`). */
export function checkMs(name: string, value: unknown, zeroAllowed = false): void {
  checkNumber(name, value, { zeroAllowed });
  if ((value as number) > MAX_TIMER_MS) throw invalid(name, `at most ${MAX_TIMER_MS} ms`, value);
}

export function checkOptionalBytes(name: string, value: unknown): void {
  if (value !== undefined && !(value instanceof Uint8Array)) throw invalid(name, 'a Uint8Array (or Buffer)', value);
}

export function checkSignal(name: string, value: unknown): void {
  if (value !== undefined && !(value instanceof AbortSignal)) throw invalid(name, 'an AbortSignal', value);
}

/** PEM that OpenSSL can load: a bad certificate or key fails here, not as a raw error at listen or connect. */
export function checkTlsContext(name: string, options: SecureContextOptions): void {
  try {
    createSecureContext(options);
  } catch (cause) {
    throw new InvalidArgumentError(`${name}: ${(cause as Error).message}`, { cause });
  }
}

/** The options object without its undefined entries, so that defaults fill them. */
export function definedEntries<T extends object>(value: T): Partial<T> {
  return Object.fromEntries(Object.entries(value).filter(([, v]) => v !== undefined)) as Partial<T>;
}

// A small, strict option parser: every flag is declared, anything else is a one-line usage error.
import { InvalidArgumentError } from '../errors.js';

/** 'strings': a flag that may be given several times, each with a value (`--disk A --disk B`). */
export type FlagKind = 'string' | 'strings' | 'boolean';
export type Flags = Map<string, string | true | string[]>;

export function parseFlags(argv: string[], declared: Record<string, FlagKind>): Flags {
  const flags: Flags = new Map();
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    if (!arg.startsWith('--')) throw new InvalidArgumentError(`unexpected argument '${arg}'`);
    const eq = arg.indexOf('=');
    const name = eq > 0 ? arg.slice(2, eq) : arg.slice(2);
    const kind = declared[name];
    if (!kind) throw new InvalidArgumentError(`unknown option --${name}`);
    if (flags.has(name) && kind !== 'strings') throw new InvalidArgumentError(`--${name} given twice`);
    if (kind === 'boolean') {
      if (eq > 0) throw new InvalidArgumentError(`--${name} takes no value`);
      flags.set(name, true);
    } else {
      const value = eq > 0 ? arg.slice(eq + 1) : argv[++i];
      if (value === undefined || value === '') throw new InvalidArgumentError(`--${name} needs a value`);
      if (kind === 'strings') flags.set(name, [...(flags.get(name) as string[] | undefined) ?? [], value]);
      else flags.set(name, value);
    }
  }
  return flags;
}

/** The arguments before the first flag (files a command names), and the flags from there on. */
export function splitPositional(argv: string[]): { positional: string[]; flags: string[] } {
  const firstFlag = argv.findIndex((arg) => arg.startsWith('--'));
  return firstFlag < 0 ? { positional: argv, flags: [] } : { positional: argv.slice(0, firstFlag), flags: argv.slice(firstFlag) };
}

/** The one file a command names first (`pagewire restore SNAP --out FILE`), and its flags. */
export function oneFileThenFlags(argv: string[], what: string, usage: string): { file: string; flags: string[] } {
  const { positional, flags } = splitPositional(argv);
  if (positional.length !== 1) throw new InvalidArgumentError(`name one ${what}: ${usage}`);
  return { file: positional[0]!, flags };
}

export function requireString(flags: Flags, name: string): string {
  const value = flags.get(name);
  if (typeof value !== 'string') throw new InvalidArgumentError(`--${name} is required`);
  return value;
}

/** Every value of a repeatable flag, in the order given (none: empty). */
export function repeatedStrings(flags: Flags, name: string): string[] {
  const value = flags.get(name);
  return Array.isArray(value) ? value : [];
}

export function optionalString(flags: Flags, name: string): string | undefined {
  const value = flags.get(name);
  return typeof value === 'string' ? value : undefined;
}

/** "HOST:PORT" (IPv6 as [addr]:port). */
export function parseHostPort(text: string, flag: string): { host: string; port: number } {
  const match = /^(?:\[([^\]]+)\]|([^:]+)):(\d+)$/.exec(text);
  const port = match ? Number(match[3]) : NaN;
  if (!match || !(port >= 0 && port <= 65535)) {
    throw new InvalidArgumentError(`--${flag}: expected HOST:PORT such as 127.0.0.1:7000 (or unix:PATH), got '${text}'`);
  }
  return { host: (match[1] ?? match[2])!, port };
}

/** HOST:PORT, or unix:PATH for a Unix domain socket. */
export function parseEndpoint(text: string, flag: string): { host: string; port: number } | { path: string } {
  if (text.startsWith('unix:')) {
    const path = text.slice('unix:'.length);
    if (path === '') throw new InvalidArgumentError(`--${flag}: expected unix:PATH, got '${text}'`);
    return { path };
  }
  return parseHostPort(text, flag);
}

/** "256MiB", "1GiB", "4096", "64G" as bytes. */
export function parseSize(text: string, flag: string): number {
  const match = /^(\d+(?:\.\d+)?)\s*([KMGT]i?B?|B)?$/i.exec(text.trim());
  if (!match) throw new InvalidArgumentError(`--${flag}: expected a size like 256MiB or 1GiB, got '${text}'`);
  const unit = (match[2] ?? 'B').toUpperCase().replace(/I?B$/, '');
  const scale = { '': 1, K: 2 ** 10, M: 2 ** 20, G: 2 ** 30, T: 2 ** 40 }[unit];
  const bytes = Number(match[1]) * (scale ?? NaN);
  if (!Number.isSafeInteger(bytes) || bytes <= 0) throw new InvalidArgumentError(`--${flag}: '${text}' is not a usable size`);
  return bytes;
}

export function parsePositiveNumber(text: string, flag: string, integer = false): number {
  const value = Number(text);
  if (!Number.isFinite(value) || value <= 0 || (integer && !Number.isInteger(value))) {
    throw new InvalidArgumentError(`--${flag}: expected a positive ${integer ? 'whole ' : ''}number, got '${text}'`);
  }
  return value;
}

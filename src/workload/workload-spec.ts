// The synthetic workload's spec, as the CLI takes it: rate=200MB/s,hot=0.05,seed=1.
// rate is a dirty rate in MB/s of pages, as QEMU reports it: rate/pageSize page writes per second.
import { InvalidArgumentError } from '../errors.js';

export interface WorkloadSpec {
  /** Bytes of pages dirtied per second (1 MB = 1e6 bytes). */
  rateBytesPerSec: number;
  /** Fraction of pages that receive 90% of the writes. */
  hot: number;
  seed: number;
}

export const DEFAULT_WORKLOAD: WorkloadSpec = { rateBytesPerSec: 100e6, hot: 0.05, seed: 1 };

export function parseWorkloadSpec(text: string): WorkloadSpec {
  const spec = { ...DEFAULT_WORKLOAD };
  for (const part of text.split(',')) {
    const [key, value, extra] = part.split('=');
    if (!key || value === undefined || extra !== undefined) {
      throw new InvalidArgumentError(`--workload: expected key=value pairs like rate=200MB/s,hot=0.05,seed=1, got '${part}'`);
    }
    if (key === 'rate') spec.rateBytesPerSec = parseRate(value);
    else if (key === 'hot') {
      const hot = Number(value);
      if (!(hot > 0 && hot <= 1)) throw new InvalidArgumentError(`--workload: hot must be in (0, 1], got '${value}'`);
      spec.hot = hot;
    } else if (key === 'seed') {
      const seed = Number(value);
      if (!Number.isSafeInteger(seed) || seed < 0) throw new InvalidArgumentError(`--workload: seed must be a whole number, got '${value}'`);
      spec.seed = seed;
    } else {
      throw new InvalidArgumentError(`--workload: unknown key '${key}' (known: rate, hot, seed)`);
    }
  }
  return spec;
}

/** "200MB/s", "200MB", "200" (MB/s) or "1.5GB/s" as bytes per second. */
export function parseRate(text: string): number {
  const match = /^(\d+(?:\.\d+)?)\s*(KB|MB|GB)?(?:\/s)?$/i.exec(text.trim());
  if (!match) throw new InvalidArgumentError(`expected a rate like 200MB/s, got '${text}'`);
  const unit = (match[2] ?? 'MB').toUpperCase();
  const scale = unit === 'KB' ? 1e3 : unit === 'GB' ? 1e9 : 1e6;
  return Number(match[1]) * scale;
}

// The bench's scenarios by name: <image or workload>-<target>[-budget<MS>|-budget-default][-psk|-tls].
import type { MixedImageOptions } from '../src/workload/mixed-image.js';
import type { FileStorage } from './storage.js';

export type ImageKind = 'random' | 'mixed';

export const IMAGES: Record<ImageKind, Omit<MixedImageOptions, 'size'>> = {
  random: { zero: 0, text: 0, dup: 0, structured: 0, seed: 12345 },
  mixed: { zero: 0.35, dup: 0.1, structured: 0.15, text: 0.2, seed: 12345 },
};

/** The synthetic writer's hot set: 5% of the pages take 90% of the writes. */
export const HOT = 0.05;

/**
 * Where a migration lands. 'shm' and 'disk': the real `pagewire receive` writing --out on that storage
 * (the CLI path, as users run it). 'mem': the library path into a pre-faulted buffer in a long-lived
 * agent process.
 */
export type Target = FileStorage | 'mem';

export interface Scenario {
  name: string;
  image: ImageKind;
  /** Dirty rate in bytes/s, or 0 for no workload. */
  rateBytesPerSec: number;
  target: Target;
  /** Where the source image lives: with the --out file, or in /dev/shm for the memory target. */
  imageStorage: FileStorage;
  /**
   * The key made for the run, on both ends: -psk without TLS (every frame tagged with ChaCha20-Poly1305),
   * -tls inside TLS 1.2 PSK (TLS authenticates and encrypts, no tags of our own); none without.
   */
  security: 'none' | 'psk' | 'tls';
  /** undefined: send's default budget (300 ms). */
  maxDowntimeMs: number | undefined;
}

export const DEFAULT_SCENARIOS = 'cold-random-shm,cold-mixed-shm,cold-random-disk,cold-mixed-disk,workload200-disk,workload200-disk-budget-default';

export const SCENARIO_HELP = `scenarios: <what>-<target>[-budget<MS>|-budget-default][-psk|-tls], comma-separated
  what:    cold-random     an all-random image, nothing writing to it
           cold-mixed      35% zero, 10% duplicate, 15% structured, 20% text, 20% random pages, nothing writing
           workload<MB/s>  the mixed image under the synthetic writer at that rate, 5% hot (e.g. workload200)
  target:  shm   pagewire receive/send processes, --out (and the image) in /dev/shm (tmpfs)
           disk  pagewire receive/send processes, --out (and the image) on disk (--disk-dir, default: the
                 temp directory if it is on a disk)
           mem   the library path into pre-faulted memory (two long-lived agent processes; compared with the
                 TCP copy only)
  budget:  --max-downtime for send: workload scenarios take --max-downtime (default 50), cold ones send's
           default (300 ms); -budget<MS> sets it, -budget-default leaves send's default
  psk:     a pre-shared key made for the run on both ends, no TLS: every frame carries an authentication tag
  tls:     TLS-PSK on every connection, with a key made for the run
  default: ${DEFAULT_SCENARIOS}`;

export function parseScenario(given: string, workloadMaxDowntimeMs: number): Scenario {
  const match = /^(cold-random|cold-mixed|workload(\d+(?:\.\d+)?))-(shm|disk|mem)(?:-budget(?:(\d+(?:\.\d+)?)|(-default)))?(?:-(psk|tls))?$/.exec(given);
  const rate = match?.[2] === undefined ? 0 : Number(match[2]);
  const budget = match?.[4] === undefined ? undefined : Number(match[4]);
  if (!match || (match[2] !== undefined && !(rate > 0)) || (budget !== undefined && !(budget > 0))) {
    throw new Error(`--scenarios: unknown scenario '${given}' (every name says its target: what was cold-mixed is ` +
      `cold-mixed-mem, what was cold-mixed-file is cold-mixed-disk)\n${SCENARIO_HELP}`);
  }
  const target = match[3] as Target;
  const defaultBudget = match[5] !== undefined || rate === 0 ? undefined : workloadMaxDowntimeMs;
  return {
    name: given, image: match[1] === 'cold-random' ? 'random' : 'mixed', rateBytesPerSec: rate * 1e6, target,
    imageStorage: target === 'mem' ? 'shm' : target, security: (match[6] as 'psk' | 'tls' | undefined) ?? 'none', maxDowntimeMs: budget ?? defaultBudget,
  };
}

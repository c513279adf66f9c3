// What the embedder hands a MigrationSource, checked before anything starts: every option (type,
// range, enum, the hooks it needs), filled with its default, and the device state its hook returns.
// A wrong value is an InvalidArgumentError naming it, never a TypeError from deep inside a migration.
import { availableParallelism } from 'node:os';
import { InvalidArgumentError } from '../errors.js';
import { DEFAULT_PAGE_CACHE_BYTES, defaultBatchPages } from '../codec/page-batch-encoder.js';
import { LZ4_MODES } from '../codec/lz4-policy.js';
import { DirtyBitmap } from '../memory/dirty-bitmap.js';
import { MemoryRegion } from '../memory/region.js';
import { endpointOf, type Endpoint, type EndpointOptions } from '../transport/connect.js';
import { checkPsk } from '../transport/psk-auth.js';
import { tlsClientOptions } from '../transport/tls-certs.js';
import { MAX_PAYLOAD_BYTES, MAX_REGIONS } from '../wire/messages.js';
import { MAX_STREAMS } from '../wire/streams.js';
import { STALL_POLICIES } from './convergence.js';
import {
  checkFunction, checkHost, checkSocketPath, checkInstance, checkMs, checkNumber, checkObject, checkOneOf, checkOptionalBoolean,
  checkOptionalBytes, checkOptionalFunction, checkRange, checkSignal, checkTlsContext, definedEntries, shown,
} from '../option-checks.js';
import type { MigrationSourceOptions, SourceHooks, SourceRegion } from './source.js';

// batchPages: each region's own, in `regions` (the default depends on its page size).
type Optional = 'dirtyBitmap' | 'dirtyTracker' | 'batchPages' | 'signal' | 'psk' | 'tls' | 'tlsCertificates';

/** A region to move, checked, with the pages per PAGES frame its page size allows. */
export interface RegionSettings extends SourceRegion {
  batchPages: number;
}

/** The options with every default filled in, where to connect, and every region in wire order. */
export type SourceSettings = Required<Omit<MigrationSourceOptions, Optional | keyof EndpointOptions>> & Pick<MigrationSourceOptions, Optional> &
  { endpoint: Endpoint; host?: string; regions: RegionSettings[] };

/** Checks every option and returns them with the defaults filled in; throws InvalidArgumentError naming the option. */
/** The workload's hooks, as a migration's source and a snapshot take them. */
export function checkSourceHooks(hooks: SourceHooks): void {
  checkObject('options.hooks', hooks);
  checkFunction('options.hooks.pause', hooks.pause);
  checkFunction('options.hooks.resume', hooks.resume);
  checkOptionalFunction('options.hooks.deviceState', hooks.deviceState);
  checkOptionalFunction('options.hooks.throttle', hooks.throttle);
}

export function sourceSettings(options: MigrationSourceOptions): SourceSettings {
  checkObject('options', options);
  checkInstance('options.region', options.region, MemoryRegion, 'a MemoryRegion');
  const { hooks } = options;
  checkSourceHooks(hooks);
  const endpoint = endpointOf(options);
  if ('host' in endpoint) {
    checkHost('options.host', options.host);
    checkRange('options.port', options.port, 1, 65535);
  } else if ('path' in endpoint) {
    checkSocketPath('options.path', options.path);
  } else {
    checkFunction('options.connect', options.connect);
  }
  const filled: SourceSettings = {
    maxDowntimeMs: 300, maxRounds: 30, maxBandwidthBytesPerSec: 0, timeoutMs: 30_000, persistTimeoutMs: 600_000,
    hookTimeoutMs: 30_000,
    pageCacheBytes: DEFAULT_PAGE_CACHE_BYTES,
    streams: Math.min(MAX_STREAMS, availableParallelism()), onStall: hooks.throttle ? 'throttle' : 'stop',
    lz4: 'adaptive', maxResumeAttempts: 3, resumeBackoffMs: 200, extraRegions: [],
    ...definedEntries(options),
    endpoint,
  } as SourceSettings;
  checkMs('options.maxDowntimeMs', filled.maxDowntimeMs, true);
  checkNumber('options.maxRounds', filled.maxRounds, { whole: true });
  checkNumber('options.maxBandwidthBytesPerSec', filled.maxBandwidthBytesPerSec, { zeroAllowed: true });
  checkRange('options.streams', filled.streams, 1, MAX_STREAMS);
  checkOneOf('options.lz4', filled.lz4, LZ4_MODES);
  checkOneOf('options.onStall', filled.onStall, STALL_POLICIES);
  if (filled.onStall === 'throttle' && !hooks.throttle) {
    throw new InvalidArgumentError("options.onStall 'throttle' needs options.hooks.throttle");
  }
  checkNumber('options.maxResumeAttempts', filled.maxResumeAttempts, { zeroAllowed: true, whole: true });
  checkMs('options.resumeBackoffMs', filled.resumeBackoffMs, true);
  checkMs('options.timeoutMs', filled.timeoutMs);
  checkMs('options.persistTimeoutMs', filled.persistTimeoutMs);
  checkMs('options.hookTimeoutMs', filled.hookTimeoutMs);
  if (filled.batchPages !== undefined) checkNumber('options.batchPages', filled.batchPages, { whole: true });
  checkNumber('options.pageCacheBytes', filled.pageCacheBytes, { zeroAllowed: true, whole: true });
  filled.regions = regionSettings(filled, filled.batchPages);
  checkOptionalBytes('options.psk', filled.psk);
  if (filled.psk) checkPsk(filled.psk);
  checkOptionalBoolean('options.tls', filled.tls);
  if (filled.tls && !filled.psk) throw new InvalidArgumentError('options.tls needs a pre-shared key (options.psk): TLS-PSK encrypts with it');
  if (filled.tlsCertificates !== undefined) {
    checkObject('options.tlsCertificates', filled.tlsCertificates);
    if (filled.tls) throw new InvalidArgumentError('options.tls (TLS-PSK) and options.tlsCertificates exclude each other');
    // Checks what is given now rather than at connect.
    checkTlsContext('options.tlsCertificates', tlsClientOptions(filled.tlsCertificates, filled.host ?? 'localhost'));
  }
  checkSignal('options.signal', filled.signal);
  return filled;
}

/**
 * `region` and `extraRegions`, each checked with its bitmap; an explicit batchPages holds for every
 * region, else each gets the default of its page size.
 */
export function regionSettings(filled: Pick<MigrationSourceOptions, 'region' | 'dirtyBitmap' | 'dirtyTracker'> & { extraRegions: SourceRegion[] },
  batchPages: number | undefined): RegionSettings[] {
  if (!Array.isArray(filled.extraRegions)) throw new InvalidArgumentError(`options.extraRegions must be an array, got ${shown(filled.extraRegions)}`);
  if (filled.extraRegions.length > MAX_REGIONS - 1) {
    throw new InvalidArgumentError(`options.extraRegions has ${filled.extraRegions.length} regions; a migration moves at most ${MAX_REGIONS} in all`);
  }
  const given: Array<[string, SourceRegion]> = [['options', filled],
    ...filled.extraRegions.map((extra, i): [string, SourceRegion] => [`options.extraRegions[${i}]`, extra])];
  // Each tracker takes (clears) its bitmap's bits: a bitmap or region given twice would lose pages.
  const seen = new Set<unknown>();
  return given.map(([name, extra]) => {
    checkObject(name, extra);
    const { region, dirtyBitmap, dirtyTracker } = extra;
    checkInstance(`${name}.region`, region, MemoryRegion, 'a MemoryRegion');
    for (const [what, value] of [['region', region], ['dirtyBitmap', dirtyBitmap], ['dirtyTracker', dirtyTracker]] as const) {
      if (value === undefined) continue;
      if (seen.has(value)) throw new InvalidArgumentError(`${name}.${what} is given for another region too; each region needs its own`);
      seen.add(value);
    }
    const pages = batchPages ?? defaultBatchPages(region.pageSize);
    if (pages * (region.pageSize + 20) > MAX_PAYLOAD_BYTES / 2) {
      throw new InvalidArgumentError(`options.batchPages ${pages} makes frames of ${name}.region larger than the protocol allows`);
    }
    if (dirtyBitmap !== undefined) {
      checkInstance(`${name}.dirtyBitmap`, dirtyBitmap, DirtyBitmap, 'a DirtyBitmap');
      if (dirtyBitmap.pageCount !== region.pageCount) {
        throw new InvalidArgumentError(`${name}.dirtyBitmap covers ${dirtyBitmap.pageCount} pages, the region has ${region.pageCount}`);
      }
    }
    if (dirtyTracker !== undefined) {
      if (dirtyBitmap !== undefined) throw new InvalidArgumentError(`${name}.dirtyBitmap and ${name}.dirtyTracker exclude each other`);
      checkObject(`${name}.dirtyTracker`, dirtyTracker);
      checkFunction(`${name}.dirtyTracker.start`, dirtyTracker.start);
      checkFunction(`${name}.dirtyTracker.scan`, dirtyTracker.scan);
      return { region, dirtyTracker, batchPages: pages };
    }
    return dirtyBitmap ? { region, dirtyBitmap, batchPages: pages } : { region, batchPages: pages };
  });
}

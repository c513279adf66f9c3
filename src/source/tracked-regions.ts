// The regions one source moves, in wire order: `region` first, then `extraRegions`. Each keeps its own
// page size, its own tracker (its dirty bitmap, or hashing) and the hashes of its pages as last sent.
import { newPageHashes } from '../codec/page-hashes.js';
import { BitmapTracker, HashTracker, type DirtyTracker } from '../memory/dirty-tracker.js';
import type { MemoryRegion } from '../memory/region.js';
import type { SourceSettings } from '../migration/source-options.js';

export interface TrackedRegion {
  /** Its index on the wire (PAGES, HELD). */
  index: number;
  region: MemoryRegion;
  tracker: DirtyTracker;
  /** The xxHash64 of each page as last sent: the encoders write it, a hash tracker and FINAL read it. */
  sentHashes: BigUint64Array;
  /** Pages per PAGES frame for this region's page size. */
  batchPages: number;
}

export function trackRegions(settings: SourceSettings): TrackedRegion[] {
  return settings.regions.map(({ region, dirtyBitmap, batchPages }, index) => {
    const sentHashes = newPageHashes(region.pageCount, region.pageSize);
    const tracker = dirtyBitmap ? new BitmapTracker(dirtyBitmap) : new HashTracker(region, sentHashes);
    return { index, region, tracker, sentHashes, batchPages };
  });
}

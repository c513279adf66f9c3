// The regions one source moves, in wire order: `region` first, then `extraRegions`. Each keeps its own
// page size, its own tracker (its dirty bitmap, the embedder's tracker, or hashing) and the hashes of
// its pages as last sent.
import { InvalidArgumentError } from '../errors.js';
import { newPageHashes } from '../codec/page-hashes.js';
import { BitmapTracker, HashTracker, pageListOf, type DirtyScan, type ScanContext, type DirtyTracker, type PageList } from '../memory/dirty-tracker.js';
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

export function trackRegions(settings: Pick<SourceSettings, 'regions'>): TrackedRegion[] {
  return settings.regions.map(({ region, dirtyBitmap, dirtyTracker, batchPages }, index) => {
    const sentHashes = newPageHashes(region.pageCount, region.pageSize);
    const tracker = dirtyTracker ? new CheckedTracker(dirtyTracker, region.pageCount, index)
      : dirtyBitmap ? new BitmapTracker(dirtyBitmap) : new HashTracker(region, sentHashes);
    return { index, region, tracker, sentHashes, batchPages };
  });
}

/**
 * An embedder's tracker, its lists checked as they are taken: a page out of the region, listed twice or
 * out of order would make the round's announced count wrong or send a page the target must refuse.
 */
class CheckedTracker implements DirtyTracker {
  constructor(private readonly tracker: DirtyTracker, private readonly pageCount: number, private readonly region: number) {}

  start(): void {
    this.tracker.start();
  }

  async scan(context?: ScanContext): Promise<DirtyScan> {
    const scan = await this.tracker.scan(context);
    return { count: scan.count, durationMs: scan.durationMs, take: () => this.checked(scan.take(), scan.count) };
  }

  private checked(list: PageList, count: number): PageList {
    const pages = new Uint32Array(count);
    let n = 0;
    let previous = -1;
    for (const batch of list.batches(65_536)) {
      for (const page of batch) {
        if (n === count || !(page > previous && page < this.pageCount)) {
          throw new InvalidArgumentError(`region ${this.region}'s dirtyTracker listed page ${page} ` +
            `(${n === count ? `beyond the ${count} its scan counted` : `after ${previous}, in a region of ${this.pageCount} pages`}); ` +
            'a scan lists each changed page once, ascending');
        }
        pages[n++] = page;
        previous = page;
      }
    }
    if (n !== count) throw new InvalidArgumentError(`region ${this.region}'s dirtyTracker counted ${count} pages but listed ${n}`);
    return pageListOf(pages);
  }
}

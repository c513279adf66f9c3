// Which pages of a round go on which stream. Pages travel in whole stripes of STRIPE_PAGES, dealt to the
// streams in turn (src/wire/streams.ts), so a page always takes the same connection and the target can
// refuse a record that arrives on another.
import type { MemoryRegion } from '../memory/region.js';
import { pageListOf, type DirtyScan, type PageList } from '../memory/dirty-tracker.js';
import { STRIPE_PAGES, pagesOnStream, splitByStream } from '../wire/streams.js';

/** The streams to ask the target for: a stream carries whole stripes, so more streams than stripes would idle. */
export function streamsWanted(asked: number, pageCount: number): number {
  return Math.max(1, Math.min(asked, Math.ceil(pageCount / STRIPE_PAGES)));
}

/**
 * Round 1's lists. Into a zeroed image, a sparse file's round 1 reads only its data: its holes are zero
 * pages, which round 1 would skip anyway, after reading them.
 */
export function firstRoundByStream(region: MemoryRegion, streams: number, targetZeroed: boolean): PageList[] {
  const data = targetZeroed ? region.dataPages() : undefined;
  return data ? byStream(pageListOf(data), streams) : allPagesByStream(region.pageCount, streams);
}

/** Every page, each stream its own stripes, in order. */
function allPagesByStream(pageCount: number, streams: number): PageList[] {
  return Array.from({ length: streams }, (_, index) => ({
    count: pagesOnStream(index, streams, pageCount),
    *batches(batchPages: number) {
      const out = new Uint32Array(batchPages);
      let n = 0;
      for (let stripe = index * STRIPE_PAGES; stripe < pageCount; stripe += streams * STRIPE_PAGES) {
        const end = Math.min(pageCount, stripe + STRIPE_PAGES);
        for (let page = stripe; page < end; page++) {
          out[n++] = page;
          if (n === batchPages) {
            yield out;
            n = 0;
          }
        }
      }
      if (n > 0) yield out.subarray(0, n);
    },
  }));
}

/** A round's dirty pages, split by the stream that carries each. */
export function byStream(pages: PageList, streams: number): PageList[] {
  if (streams === 1) return [pages];
  const all = new Uint32Array(pages.count);
  let n = 0;
  for (const batch of pages.batches(STRIPE_PAGES)) {
    all.set(batch, n);
    n += batch.length;
  }
  return splitByStream(all.subarray(0, n), streams).map(pageListOf);
}

/** Each region's dirty pages (in region order), split by stream: [region][stream]. */
export function byStreamPerRegion(dirty: DirtyScan[], streams: number): PageList[][] {
  return dirty.map((pages) => byStream(pages.take(), streams));
}

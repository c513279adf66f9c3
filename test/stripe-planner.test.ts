// The stripe planner alone: whatever the page and stream counts, each stream's lists hold exactly the
// pages of its own stripes, ascending, each once, and in batches of at most the size asked for.
import { describe, expect, it } from 'vitest';
import { byStream, firstRoundByStream, streamsWanted } from '../dist/src/source/stripe-planner.js';
import { pageListOf, type PageList } from '../dist/src/memory/dirty-tracker.js';
import { MemoryRegion } from '../dist/src/memory/region.js';
import { STRIPE_PAGES, streamOfPage } from '../dist/src/wire/streams.js';

/** Every page a list yields, in order, checking that no batch is larger than asked. */
function pagesOf(list: PageList, batchPages: number): number[] {
  const pages: number[] = [];
  for (const batch of list.batches(batchPages)) {
    expect(batch.length).toBeLessThanOrEqual(batchPages);
    pages.push(...batch);
  }
  expect(pages).toHaveLength(list.count);
  return pages;
}

/** Checks that `lists` split `expected` by stream: each page on streamOfPage's stream, in order. */
function expectSplit(lists: PageList[], expected: number[], streams: number, batchPages: number): void {
  expect(lists).toHaveLength(streams);
  lists.forEach((list, stream) => {
    expect(pagesOf(list, batchPages)).toEqual(expected.filter((page) => streamOfPage(page, streams) === stream));
  });
}

const cases = [
  // pages, streams, batch pages
  { pages: 1, streams: 1, batch: 256 },
  { pages: STRIPE_PAGES * 3 + 17, streams: 1, batch: 100 },
  { pages: STRIPE_PAGES * 3 + 17, streams: 2, batch: 256 },
  { pages: STRIPE_PAGES * 7 + 1, streams: 3, batch: 7 },
  { pages: STRIPE_PAGES * 8, streams: 4, batch: 1000 },
  { pages: STRIPE_PAGES * 2 - 1, streams: 5, batch: 64 },
];

describe('stripe planner', () => {
  it.each(cases)('round 1 of $pages pages on $streams streams, batches of $batch: every page once, on its stream', ({ pages, streams, batch }) => {
    const region = MemoryRegion.fromMemory(new Uint8Array(pages * 4096), { pageSize: 4096 });
    expectSplit(firstRoundByStream(region, streams, false), Array.from({ length: pages }, (_, page) => page), streams, batch);
  });

  it.each(cases)('a dirty set of $pages pages on $streams streams, batches of $batch: split by stream, in order', ({ pages, streams, batch }) => {
    // Every third page and every page of the second stripe: stripes partly, wholly and not at all dirty.
    const dirty = Array.from({ length: pages }, (_, page) => page)
      .filter((page) => page % 3 === 0 || Math.floor(page / STRIPE_PAGES) === 1);
    expectSplit(byStream(pageListOf(Uint32Array.from(dirty)), streams), dirty, streams, batch);
  });

  it.each([
    { asked: 8, pages: 1, wanted: 1 },
    { asked: 8, pages: STRIPE_PAGES * 3, wanted: 3 },
    { asked: 8, pages: STRIPE_PAGES * 3 + 1, wanted: 4 },
    { asked: 2, pages: STRIPE_PAGES * 100, wanted: 2 },
  ])('asks for $wanted streams when $asked are allowed for $pages pages', ({ asked, pages, wanted }) => {
    expect(streamsWanted(asked, pages)).toBe(wanted);
  });
});

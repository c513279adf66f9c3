// Parallel streams (docs/PROTOCOL.md, "Parallel streams"): which connection carries which page. Pages
// go in stripes of STRIPE_PAGES, dealt round-robin to the streams, and a page always travels on the
// same stream. Each stream has its own encoder and decoder, so a page's versions are applied in the
// order they were sent, and the DELTA and DUP bases a stream uses are pages only it writes; the target's
// decoder (applyPages, given the stream) refuses a batch that writes or copies another stream's page.
import { STRIPE_PAGES, streamOfPage } from '../native/twin/stream-ownership.js';

// The twin judges ownership as the addon does, so its stripe rule is the protocol's.
export { STRIPE_PAGES, streamOfPage };

/** Connections per migration, the one that sent HELLO included. */
export const MAX_STREAMS = 64;

/** How many of a region's pages a stream carries. */
export function pagesOnStream(stream: number, streams: number, pageCount: number): number {
  const fullCycles = Math.floor(pageCount / (STRIPE_PAGES * streams));
  const rest = pageCount - fullCycles * STRIPE_PAGES * streams;
  return fullCycles * STRIPE_PAGES + Math.min(STRIPE_PAGES, Math.max(0, rest - stream * STRIPE_PAGES));
}

/** Splits ascending page indices by stream, keeping each stream's share ascending. */
export function splitByStream(pages: Uint32Array, streams: number): Uint32Array[] {
  if (streams === 1) return [pages];
  const counts = new Array<number>(streams).fill(0);
  for (const page of pages) counts[streamOfPage(page, streams)]! += 1;
  const parts = counts.map((n) => new Uint32Array(n));
  const filled = new Array<number>(streams).fill(0);
  for (const page of pages) {
    const s = streamOfPage(page, streams);
    parts[s]![filled[s]!++] = page;
  }
  return parts;
}

// Parallel streams (docs/PROTOCOL.md, "Parallel streams"): which connection carries which page. Pages
// go in stripes of STRIPE_PAGES, dealt round-robin to the streams, and a page always travels on the
// same stream. Each stream has its own encoder and decoder, so a page's versions are applied in the
// order they were sent, and the DELTA and DUP bases a stream uses are pages only it writes.
import { ProtocolError } from '../errors.js';
import { DUP_PAYLOAD_BYTES, Encoding, RECORD_HEADER_BYTES } from '../codec/page-records.js';

export const STRIPE_PAGES = 256;
/** Connections per migration, the one that sent HELLO included. */
export const MAX_STREAMS = 64;

export function streamOfPage(page: number, streams: number): number {
  return Math.floor(page / STRIPE_PAGES) % streams;
}

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

/**
 * Refuses a batch that writes, or copies from, a page of another stream. Two streams writing one page
 * could interleave their writes into a torn page whose hash the target still records as verified.
 * Malformed records are left to the decoder, which rejects them with a precise reason.
 */
export function checkRecordsOnStream(records: Uint8Array, recordCount: number, stream: number, streams: number): void {
  if (streams === 1) return;
  const view = new DataView(records.buffer, records.byteOffset, records.byteLength);
  let pos = 0;
  for (let i = 0; i < recordCount && records.byteLength - pos >= RECORD_HEADER_BYTES; i++) {
    const page = view.getUint32(pos, true);
    if (streamOfPage(page, streams) !== stream) {
      throw new ProtocolError(`page ${page} arrived on stream ${stream}; it belongs to stream ${streamOfPage(page, streams)}`);
    }
    const payloadLength = view.getUint32(pos + 8, true);
    const payloadAt = pos + RECORD_HEADER_BYTES;
    if (view.getUint8(pos + 4) === Encoding.Dup && payloadLength === DUP_PAYLOAD_BYTES && records.byteLength - payloadAt >= DUP_PAYLOAD_BYTES) {
      const base = view.getUint32(payloadAt, true);
      if (streamOfPage(base, streams) !== stream) {
        throw new ProtocolError(`page ${page} on stream ${stream} copies page ${base} of stream ${streamOfPage(base, streams)}`);
      }
    }
    pos = payloadAt + payloadLength;
  }
}

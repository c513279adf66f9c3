// Parallel streams (docs/PROTOCOL.md section 2): pages go in stripes of STRIPE_PAGES, dealt round-robin
// to the streams, and a stream may write and copy only its own pages, as native/codec.cc checks them.
import { DUP_PAYLOAD_BYTES, Encoding, RECORD_HEADER_BYTES } from './records.js';

export const STRIPE_PAGES = 256;

/** The stream of `streams` that carries page `page`. */
export function streamOfPage(page: number, streams: number): number {
  return Math.floor(page / STRIPE_PAGES) % streams;
}

/**
 * The ownership pass, over the headers only and before any record is applied: the byte offset of the
 * first record (as far as headers are intact) that writes a page of another stream, or whose DUP copies
 * one; records.length when there is none. Two streams writing one page could tear it while its hash
 * reads as verified. Malformed records are left to the decoding pass, which names what is wrong.
 */
export function firstRecordOffStream(view: DataView, recordCount: number, stream: number, streams: number): number {
  const length = view.byteLength;
  let pos = 0;
  for (let record = 0; record < recordCount && length - pos >= RECORD_HEADER_BYTES; record++) {
    const payloadLength = view.getUint32(pos + 8, true);
    if (streamOfPage(view.getUint32(pos, true), streams) !== stream) return pos;
    const payloadAt = pos + RECORD_HEADER_BYTES;
    if (view.getUint8(pos + 4) === Encoding.Dup && payloadLength === DUP_PAYLOAD_BYTES && length - payloadAt >= DUP_PAYLOAD_BYTES &&
      streamOfPage(view.getUint32(payloadAt, true), streams) !== stream) {
      return pos;
    }
    pos = payloadAt + payloadLength;
  }
  return length;
}

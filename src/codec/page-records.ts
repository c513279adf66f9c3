// The per-page record as the addon writes and reads it (docs/PROTOCOL.md, "Page records").
import { DUP_PAYLOAD_BYTES, Encoding, RECORD_HEADER_BYTES } from '../native/twin/records.js';

// The twin writes records byte for byte as the addon does, so its layout constants are the layout's.
export { DUP_PAYLOAD_BYTES, Encoding, RECORD_HEADER_BYTES };

/** The most bytes a batch of `pages` records can take. */
export function maxRecordBytes(pages: number, pageSize: number): number {
  return pages * (RECORD_HEADER_BYTES + pageSize);
}

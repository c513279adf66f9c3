// The per-page record as the addon writes and reads it (docs/PROTOCOL.md, "Page records").
export const RECORD_HEADER_BYTES = 20;

/** The most bytes a batch of `pages` records can take. */
export function maxRecordBytes(pages: number, pageSize: number): number {
  return pages * (RECORD_HEADER_BYTES + pageSize);
}

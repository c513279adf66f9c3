// The wire record (docs/PROTOCOL.md section 4): a 20-byte little-endian header, then the payload.
//   0 u32 pageIndex | 4 u8 encoding | 5 u8 reserved = 0 | 6 u16 reserved = 0 | 8 u32 payloadLength |
//   12 u64 XXH64 of the page's pageSize bytes once the record is applied | 20 payload

export const RECORD_HEADER_BYTES = 20;
/** A DUP payload: the u32 index of the page to copy. */
export const DUP_PAYLOAD_BYTES = 4;

export enum Encoding {
  Zero = 0,
  Raw = 1,
  Delta = 2,
  Dup = 3,
  Lz4 = 4,
}

export function writeRecordHeader(view: DataView, at: number, pageIndex: number, encoding: Encoding,
  payloadLength: number, hash: bigint): void {
  view.setUint32(at, pageIndex, true);
  view.setUint8(at + 4, encoding);
  view.setUint8(at + 5, 0);
  view.setUint16(at + 6, 0, true);
  view.setUint32(at + 8, payloadLength, true);
  view.setBigUint64(at + 12, hash, true);
}

/** The payload lengths the decoder accepts for each encoding. */
export function payloadLengthAllowed(encoding: Encoding, length: number, pageSize: number): boolean {
  switch (encoding) {
    case Encoding.Zero: return length === 0;
    case Encoding.Raw: return length === pageSize;
    case Encoding.Delta: return length <= pageSize;
    case Encoding.Dup: return length === DUP_PAYLOAD_BYTES;
    case Encoding.Lz4: return length >= 1 && length < pageSize;
  }
}

// LZ4 blocks (the block format, no frame). Compression is the lz4 package's greedy JS compressor (ported
// in lz4-block-compressor.ts), which the addon ports to C++ so that both emit the same bytes.
// Decompression is a bounded decoder of our own: the package's uncompress() follows hostile lengths and
// offsets unchecked.
import { compressBlock, compressBound, HASH_TABLE_SIZE, MF_LIMIT, MIN_MATCH } from './lz4-block-compressor.js';

/** The last 5 bytes of a block are literals. */
const LAST_LITERALS = 5;

/** Compresses pages of one size, reusing its hash table and output buffer. */
export class Lz4PageCompressor {
  // compress() fills a new 65536-entry Array per call, which measured 250 times slower than the whole
  // compression; a typed table zeroed before each page is the same fresh table, so the same output.
  // It holds positions + 1, below 2^16 in pages of up to 64 KiB: half the bytes to zero.
  private readonly hashTable: Uint16Array | Uint32Array;
  private readonly block: Uint8Array;

  constructor(pageSize: number) {
    this.hashTable = pageSize <= 2 ** 16 ? new Uint16Array(HASH_TABLE_SIZE) : new Uint32Array(HASH_TABLE_SIZE);
    this.block = new Uint8Array(compressBound(pageSize));
  }

  /**
   * The page as one LZ4 block: a view of this compressor's buffer, valid until the next call. Empty when
   * the compressor found no match (or the page is beyond the largest input it takes).
   */
  compress(page: Uint8Array): Uint8Array {
    if (this.block.length === 0) return this.block;
    this.hashTable.fill(0);
    const length = compressBlock(page, this.block, 0, this.hashTable, 0, this.block.length);
    return this.block.subarray(0, length);
  }
}

/** Reads a literal or match length's extra bytes (each 255 continues); -1 when the block ends inside them. */
function extendLength(block: Uint8Array, cursor: { at: number }, length: number): number {
  for (;;) {
    if (cursor.at >= block.length) return -1;
    const byte = block[cursor.at++];
    length += byte;
    if (byte !== 255) return length;
  }
}

/**
 * Decodes one LZ4 block into out, which it must fill exactly. Returns false for a block the LZ4 block
 * format does not allow: a length or offset past the block, an offset of 0 or before the output's start,
 * output past out.length, a last sequence that is not literals only, a match within the last 5 bytes or
 * starting in the last 12, or fewer than out.length bytes. (LZ4_decompress_safe 1.9.2, the addon's
 * decoder, lets an offset of 0 through as zeros and misses some end-of-block violations on its fast
 * paths; no compressor emits such blocks.) Never writes past out, never reads past block; out may be
 * partly written when it fails.
 */
export function lz4Decompress(block: Uint8Array, out: Uint8Array): boolean {
  const size = out.length;
  const cursor = { at: 0 };
  let op = 0;
  for (;;) {
    if (cursor.at >= block.length) return false;
    const token = block[cursor.at++];

    let literals = token >>> 4;
    if (literals === 15) literals = extendLength(block, cursor, literals);
    if (literals < 0 || literals > block.length - cursor.at || literals > size - op) return false;
    copyLiterals(block, cursor.at, out, op, literals);
    cursor.at += literals;
    op += literals;
    if (cursor.at === block.length) return op === size;

    if (op > size - MF_LIMIT || block.length - cursor.at < 2) return false;
    const offset = block[cursor.at] | (block[cursor.at + 1] << 8);
    cursor.at += 2;
    if (offset === 0 || offset > op) return false;
    let length = token & 15;
    if (length === 15) length = extendLength(block, cursor, length);
    if (length < 0) return false;
    length += MIN_MATCH;
    if (length > size - LAST_LITERALS - op) return false;
    copyMatch(out, op, offset, length);
    op += length;
  }
}

/** Below this many bytes a loop copies faster than a native call on a new view. */
const SHORT_COPY = 64;

function copyLiterals(block: Uint8Array, at: number, out: Uint8Array, op: number, length: number): void {
  if (length >= SHORT_COPY) {
    out.set(block.subarray(at, at + length), op);
    return;
  }
  for (let i = 0; i < length; i++) out[op + i] = block[at + i];
}

/** Copies length bytes from offset back; an overlapping match repeats its bytes, as LZ4 means. */
function copyMatch(out: Uint8Array, op: number, offset: number, length: number): void {
  if (length >= SHORT_COPY && offset >= length) {
    out.copyWithin(op, op - offset, op - offset + length);
    return;
  }
  for (let i = 0; i < length; i++) out[op + i] = out[op - offset + i];
}

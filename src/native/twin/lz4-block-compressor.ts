// The lz4 npm package's greedy LZ4 block compressor (lz4@0.6.5, lib/binding.js: compressBound and
// compressBlock), ported to TypeScript unchanged in behaviour, so that pagewire does not depend on that
// package (its install script builds a native addon we never load). native/page_lz4.cc ports the same
// function to C++; test/vectors/codec.json pins the bytes all three emit.
//
// Copyright (c) 2012 Pierre Curto
//
// Permission is hereby granted, free of charge, to any person obtaining a copy
// of this software and associated documentation files (the "Software"), to deal
// in the Software without restriction, including without limitation the rights
// to use, copy, modify, merge, publish, distribute, sublicense, and/or sell
// copies of the Software, and to permit persons to whom the Software is
// furnished to do so, subject to the following conditions:
//
// The above copyright notice and this permission notice shall be included in
// all copies or substantial portions of the Software.
//
// THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR
// IMPLIED, INCLUDING BUT NOT LIMITED TO THE WARRANTIES OF MERCHANTABILITY,
// FITNESS FOR A PARTICULAR PURPOSE AND NONINFRINGEMENT. IN NO EVENT SHALL THE
// AUTHORS OR COPYRIGHT HOLDERS BE LIABLE FOR ANY CLAIM, DAMAGES OR OTHER
// LIABILITY, WHETHER IN AN ACTION OF CONTRACT, TORT OR OTHERWISE, ARISING FROM,
// OUT OF OR IN CONNECTION WITH THE SOFTWARE OR THE USE OR OTHER DEALINGS IN
// THE SOFTWARE.

const MAX_INPUT_SIZE = 0x7e000000;
export const MIN_MATCH = 4;
const HASH_LOG = 16;
/** Entries of the compressor's hash table. */
export const HASH_TABLE_SIZE = 1 << HASH_LOG;
const HASH_SHIFT = MIN_MATCH * 8 - HASH_LOG;
const COPY_LENGTH = 8;
/** The last match starts at least 12 bytes before the end of the block. */
export const MF_LIMIT = COPY_LENGTH + MIN_MATCH;
const SKIP_STRENGTH = 6;
const ML_BITS = 4;
const ML_MASK = (1 << ML_BITS) - 1;
const RUN_BITS = 8 - ML_BITS;
const RUN_MASK = (1 << RUN_BITS) - 1;
const HASHER = 2654435761;

/** The room an LZ4 block of length input bytes may need; 0 past the largest input compressBlock takes. */
export function compressBound(length: number): number {
  return length > MAX_INPUT_SIZE ? 0 : (length + length / 255 + 16) | 0;
}

/**
 * Compresses src from pos as one LZ4 block into dst[sIdx, eIdx). hashTable (1 << 16 entries, zeroed
 * for a fresh block) holds positions + 1. Returns the end offset in dst, or 0 when no match was found.
 */
export function compressBlock(src: Uint8Array, dst: Uint8Array, pos: number, hashTable: Uint16Array | Uint32Array,
  sIdx: number, eIdx: number): number {
  let dpos = sIdx;
  const dlen = eIdx - sIdx;
  let anchor = 0;

  if (src.length >= MAX_INPUT_SIZE) throw new Error('input too large');

  if (src.length > MF_LIMIT) {
    const n = compressBound(src.length);
    if (dlen < n) throw Error(`output too small: ${dlen} < ${n}`);

    let findMatchAttempts = (1 << SKIP_STRENGTH) + 3;
    // The last 5 bytes are literals.
    const srcLength = src.length - MF_LIMIT;

    while (pos + MIN_MATCH < srcLength) {
      const sequenceLowBits = (src[pos + 1] << 8) | src[pos];
      const sequenceHighBits = (src[pos + 3] << 8) | src[pos + 2];
      const hash = Math.imul(sequenceLowBits | (sequenceHighBits << 16), HASHER) >>> HASH_SHIFT;
      // Entries are positions + 1, so that 0 means none; two sequences may share a hash, hence the check.
      let ref = hashTable[hash] - 1;
      hashTable[hash] = pos + 1;

      if (ref < 0 || ((pos - ref) >>> 16) > 0
        || ((src[ref + 3] << 8) | src[ref + 2]) !== sequenceHighBits
        || ((src[ref + 1] << 8) | src[ref]) !== sequenceLowBits) {
        // The step grows while nothing matches.
        const step = findMatchAttempts++ >> SKIP_STRENGTH;
        pos += step;
        continue;
      }

      findMatchAttempts = (1 << SKIP_STRENGTH) + 3;

      const literalsLength = pos - anchor;
      const offset = pos - ref;

      pos += MIN_MATCH;
      ref += MIN_MATCH;
      let matchLength = pos;
      while (pos < srcLength && src[pos] === src[ref]) {
        pos++;
        ref++;
      }
      matchLength = pos - matchLength;

      const token = matchLength < ML_MASK ? matchLength : ML_MASK;
      if (literalsLength >= RUN_MASK) {
        dst[dpos++] = (RUN_MASK << ML_BITS) + token;
        let len = literalsLength - RUN_MASK;
        for (; len > 254; len -= 255) dst[dpos++] = 255;
        dst[dpos++] = len;
      } else {
        dst[dpos++] = (literalsLength << ML_BITS) + token;
      }

      for (let i = 0; i < literalsLength; i++) dst[dpos++] = src[anchor + i];

      dst[dpos++] = offset;
      dst[dpos++] = offset >> 8;

      if (matchLength >= ML_MASK) {
        matchLength -= ML_MASK;
        while (matchLength >= 255) {
          matchLength -= 255;
          dst[dpos++] = 255;
        }
        dst[dpos++] = matchLength;
      }

      anchor = pos;
    }
  }

  if (anchor === 0) return 0;

  // The last literals.
  const literalsLength = src.length - anchor;
  if (literalsLength >= RUN_MASK) {
    dst[dpos++] = RUN_MASK << ML_BITS;
    let len = literalsLength - RUN_MASK;
    for (; len > 254; len -= 255) dst[dpos++] = 255;
    dst[dpos++] = len;
  } else {
    dst[dpos++] = literalsLength << ML_BITS;
  }

  pos = anchor;
  while (pos < src.length) dst[dpos++] = src[pos++];

  return dpos;
}

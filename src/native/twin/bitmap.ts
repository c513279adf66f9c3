// The dirty-page bitmap's native half (as native/bitmap.cc): atomic fetch-and-clear of the shared
// words into a snapshot, population counts, and the scan of a snapshot into page indices.
import { types } from 'node:util';
import { toIndex, toU32 } from './args.js';

/** Page indices are u32, so a scanned bitmap covers at most 2^32 pages = 2^27 words. */
const MAX_SCAN_WORDS = 2 ** 27;
const BITS_PER_WORD = 32;

/** Int32Array (the contract) or Uint32Array: both are Atomics targets with 4-byte words. */
function toBitmap(value: unknown): Int32Array | Uint32Array {
  if (types.isInt32Array(value) || types.isUint32Array(value)) return value;
  throw new TypeError('bitmap must be a Int32Array');
}

function checkWordRange(start: number, end: number, length: number, what: string): void {
  if (start > end) throw new RangeError('wordStart must be <= wordEnd');
  if (end > length) throw new RangeError(`wordEnd ${end} is beyond ${what}'s ${length} words`);
}

function popcount(word: number): number {
  word -= (word >>> 1) & 0x55555555;
  word = (word & 0x33333333) + ((word >>> 2) & 0x33333333);
  return Math.imul((word + (word >>> 4)) & 0x0f0f0f0f, 0x01010101) >>> 24;
}

export function dirtySync(bitmap: Int32Array, snapshot: Uint32Array, wordStart: number, wordEnd: number): number {
  const words = toBitmap(bitmap);
  const snap = toU32(snapshot, 'snapshot');
  const start = toIndex(wordStart, 'wordStart');
  const end = toIndex(wordEnd, 'wordEnd');
  checkWordRange(start, end, words.length, 'bitmap');
  checkWordRange(start, end, snap.length, 'snapshot');
  let bits = 0;
  for (let w = start; w < end; w++) {
    // A word that loads as zero is left alone (an exchange would store the zero it read), which keeps
    // clean cache lines shared with the writers. A bit set after the load waits for the next sync.
    let word = Atomics.load(words, w);
    if (word !== 0) word = Atomics.exchange(words, w, 0);
    snap[w] = word;
    bits += popcount(word);
  }
  return bits;
}

export function dirtyCount(bitmap: Int32Array, wordStart: number, wordEnd: number): number {
  const words = toBitmap(bitmap);
  const start = toIndex(wordStart, 'wordStart');
  const end = toIndex(wordEnd, 'wordEnd');
  checkWordRange(start, end, words.length, 'bitmap');
  let bits = 0;
  for (let w = start; w < end; w++) bits += popcount(Atomics.load(words, w));
  return bits;
}

export function dirtyScan(snapshot: Uint32Array, wordStart: number, wordEnd: number, out: Uint32Array): [number, number] {
  const snap = toU32(snapshot, 'snapshot');
  const start = toIndex(wordStart, 'wordStart');
  const end = toIndex(wordEnd, 'wordEnd');
  const indices = toU32(out, 'out');
  checkWordRange(start, end, snap.length, 'snapshot');
  if (end > MAX_SCAN_WORDS) throw new RangeError('wordEnd must be <= 2^27 (page indices are u32)');
  let n = 0;
  let w = start;
  // Never split a word: stop before one whose bits might not fit.
  for (; w < end && indices.length - n >= BITS_PER_WORD; w++) {
    const base = w * BITS_PER_WORD;
    for (let word = snap[w]; word !== 0; word &= word - 1) {
      indices[n++] = base + 31 - Math.clz32(word & -word);
    }
  }
  return [n, w];
}

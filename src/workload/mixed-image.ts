// A seeded image of mixed content, for the demo, tests and benchmarks, in the proportions asked for:
//   zero        all-zero pages
//   text        JSON lines, as an in-memory store holds them (LZ4: about 2-4x)
//   dup         exact copies of a pool of DUP_POOL_PAGES distinct random pages
//   structured  little-endian u64 words that look like a heap: records of pointers (a base plus small
//               increasing offsets), counters and flags (LZ4: about 2.5x, never all zero)
//   the rest    random pages (incompressible)
// Which kind each page is, and the content of text, dup-choice and structured pages, follow from the
// seed; random page bytes (and the dup pool's) come from crypto and differ between runs. With
// dup = structured = 0 the seeded sequence is the one earlier versions drew, so callers that pass only
// zero/text get the same pages as before. An all-random image is zero: 0, text: 0.
import { randomFillSync } from 'node:crypto';
import { closeSync, fsyncSync, openSync, writeSync } from 'node:fs';
import { InvalidArgumentError } from '../errors.js';

export interface MixedImageOptions {
  size: number;
  pageSize?: number;
  /** Fractions of each kind of page (defaults: zero 0.4, text 0.3, dup 0, structured 0); the rest is random. */
  zero?: number;
  text?: number;
  dup?: number;
  structured?: number;
  seed?: number;
}

const CHUNK_PAGES = 256;
/** Distinct random pages that the dup pages copy. */
const DUP_POOL_PAGES = 64;
/** Distinct type pointers in a structured page. */
const STRUCT_TYPES = 4;
const WORDS = ['alpha', 'bravo', 'charlie', 'delta', 'echo', 'foxtrot', 'golf', 'hotel', 'india', 'juliet', 'kilo', 'lima'];

type Random = () => number;
type Fill = (page: Buffer, index: number) => void;

/** The image as bytes in memory. */
export function mixedImage(options: MixedImageOptions): Buffer {
  const bytes = Buffer.alloc(options.size);
  forEachMixedChunk(options, (first, chunk) => chunk.copy(bytes, first * (options.pageSize ?? 4096)));
  return bytes;
}

/** The image written to a new file at path (fsynced). */
export function writeMixedImage(path: string, options: MixedImageOptions): void {
  const fd = openSync(path, 'w');
  try {
    forEachMixedChunk(options, (_, chunk) => writeSync(fd, chunk));
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

/** Generates the image a chunk of pages at a time; the chunk buffer is reused between calls. */
function forEachMixedChunk(options: MixedImageOptions, take: (firstPage: number, chunk: Buffer) => void): void {
  const pageSize = options.pageSize ?? 4096;
  if (options.size <= 0 || options.size % pageSize !== 0) {
    throw new InvalidArgumentError(`image size must be a positive multiple of ${pageSize}, got ${options.size}`);
  }
  let seed = (options.seed ?? 12345) >>> 0;
  const random: Random = () => (seed = (Math.imul(seed, 1103515245) + 12345) >>> 0) / 2 ** 32;
  const pickFill = pageKinds(options, pageSize, random);
  const pages = options.size / pageSize;
  const chunk = Buffer.alloc(CHUNK_PAGES * pageSize);
  for (let first = 0; first < pages; first += CHUNK_PAGES) {
    const n = Math.min(CHUNK_PAGES, pages - first);
    for (let i = 0; i < n; i++) {
      pickFill(random())(chunk.subarray(i * pageSize, (i + 1) * pageSize), first + i);
    }
    take(first, chunk.subarray(0, n * pageSize));
  }
}

/** Maps a uniform draw in [0, 1) to the fill of its kind: zero, text, dup, structured, then random. */
function pageKinds(options: MixedImageOptions, pageSize: number, random: Random): (r: number) => Fill {
  const zero = fraction(options.zero, 0.4, 'zero');
  const text = fraction(options.text, 0.3, 'text');
  const dup = fraction(options.dup, 0, 'dup');
  const structured = fraction(options.structured, 0, 'structured');
  if (zero + text + dup + structured > 1 + 1e-9) {
    throw new InvalidArgumentError(`image fractions add up to more than 1: zero ${zero}, text ${text}, dup ${dup}, structured ${structured}`);
  }
  const fillZero: Fill = (page) => page.fill(0);
  const fillText: Fill = (page, index) => fillTextPage(page, index, random);
  const fillDup = dup > 0 ? dupFill(pageSize, random) : fillZero;
  const fillStructured: Fill = (page) => fillStructuredPage(page, random);
  const fillRandom: Fill = (page) => randomFillSync(page);
  return (r) => {
    if (r < zero) return fillZero;
    if (r < zero + text) return fillText;
    if (r < zero + text + dup) return fillDup;
    if (r < zero + text + dup + structured) return fillStructured;
    return fillRandom;
  };
}

function fraction(value: number | undefined, fallback: number, name: string): number {
  const v = value ?? fallback;
  if (!(v >= 0 && v <= 1)) throw new InvalidArgumentError(`image fraction ${name} must be in [0, 1], got ${v}`);
  return v;
}

/** JSON lines with a running id, a few words and numbers: compresses about 2-4x, like real records. */
function fillTextPage(page: Buffer, index: number, random: Random): void {
  let at = 0;
  for (let line = 0; at < page.length; line++) {
    const word = WORDS[Math.floor(random() * WORDS.length)]!;
    const text = `{"id":${index * 64 + line},"name":"${word}-${Math.floor(random() * 1e6)}","score":${(random() * 100).toFixed(2)},"ok":${random() < 0.5}}\n`;
    at += page.write(text, at, 'latin1');
  }
}

/** Copies of one of DUP_POOL_PAGES random pages, the pool made once, the choice seeded. */
function dupFill(pageSize: number, random: Random): Fill {
  const pool = randomFillSync(Buffer.alloc(DUP_POOL_PAGES * pageSize));
  return (page) => {
    const k = Math.floor(random() * DUP_POOL_PAGES);
    pool.copy(page, 0, k * pageSize, (k + 1) * pageSize);
  };
}

/**
 * A heap page: 32-byte records of little-endian u64 words, all pointers in one 47-bit area - a type
 * pointer (one of STRUCT_TYPES per page), a link pointer ascending by 8 to 120 bytes, a counter (0-255)
 * and a flag (0 or 1). LZ4 takes it down about 2.5x.
 */
function fillStructuredPage(page: Buffer, random: Random): void {
  const high = 0x7f00 + Math.floor(random() * 0x100);
  const types = Array.from({ length: STRUCT_TYPES }, () => Math.floor(random() * 0x10000) * 0x10);
  let link = Math.floor(random() * 0x100000) * 0x1000;
  page.fill(0);
  for (let at = 0; at + 32 <= page.length; at += 32) {
    page.writeUInt32LE(types[Math.floor(random() * STRUCT_TYPES)]!, at);
    page.writeUInt32LE(high, at + 4);
    link = (link + 8 * (1 + Math.floor(random() * 15))) >>> 0;
    page.writeUInt32LE(link, at + 8);
    page.writeUInt32LE(high, at + 12);
    page.writeUInt32LE(Math.floor(random() * 256), at + 16);
    page.writeUInt32LE(random() < 0.5 ? 0 : 1, at + 24);
  }
}

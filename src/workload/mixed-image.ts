// A deterministic image of mixed content, for the demo, tests and benchmarks: zero pages, text-like
// pages (JSON lines, as an in-memory store holds them) and random pages, in the proportions asked for.
import { randomFillSync } from 'node:crypto';
import { closeSync, fsyncSync, openSync, writeSync } from 'node:fs';
import { InvalidArgumentError } from '../errors.js';

export interface MixedImageOptions {
  size: number;
  pageSize?: number;
  /** Fractions of zero and text-like pages; the rest is random. */
  zero?: number;
  text?: number;
  seed?: number;
}

const CHUNK_PAGES = 256;
const WORDS = ['alpha', 'bravo', 'charlie', 'delta', 'echo', 'foxtrot', 'golf', 'hotel', 'india', 'juliet', 'kilo', 'lima'];

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
  const zero = options.zero ?? 0.4;
  const text = options.text ?? 0.3;
  if (options.size <= 0 || options.size % pageSize !== 0) {
    throw new InvalidArgumentError(`image size must be a positive multiple of ${pageSize}, got ${options.size}`);
  }
  let seed = (options.seed ?? 12345) >>> 0;
  const random = () => (seed = (Math.imul(seed, 1103515245) + 12345) >>> 0) / 2 ** 32;
  const pages = options.size / pageSize;
  const chunk = Buffer.alloc(CHUNK_PAGES * pageSize);
  for (let first = 0; first < pages; first += CHUNK_PAGES) {
    const n = Math.min(CHUNK_PAGES, pages - first);
    for (let i = 0; i < n; i++) {
      const page = chunk.subarray(i * pageSize, (i + 1) * pageSize);
      const r = random();
      if (r < zero) page.fill(0);
      else if (r < zero + text) fillTextPage(page, first + i, random);
      else randomFillSync(page);
    }
    take(first, chunk.subarray(0, n * pageSize));
  }
}

/** JSON lines with a running id, a few words and numbers: compresses about 2-4x, like real records. */
function fillTextPage(page: Buffer, index: number, random: () => number): void {
  let at = 0;
  for (let line = 0; at < page.length; line++) {
    const word = WORDS[Math.floor(random() * WORDS.length)]!;
    const text = `{"id":${index * 64 + line},"name":"${word}-${Math.floor(random() * 1e6)}","score":${(random() * 100).toFixed(2)},"ok":${random() < 0.5}}\n`;
    at += page.write(text, at, 'latin1');
  }
}

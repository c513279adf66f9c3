// A deterministic image of mixed content, for the demo, tests and benchmarks: zero pages, text-like
// pages (JSON lines) and random pages, in the proportions asked for.
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

export function writeMixedImage(path: string, options: MixedImageOptions): void {
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
  const fd = openSync(path, 'w');
  try {
    for (let first = 0; first < pages; first += CHUNK_PAGES) {
      const n = Math.min(CHUNK_PAGES, pages - first);
      for (let i = 0; i < n; i++) {
        const page = chunk.subarray(i * pageSize, (i + 1) * pageSize);
        const r = random();
        if (r < zero) page.fill(0);
        else if (r < zero + text) {
          const index = first + i;
          page.fill(`{"id":${index},"name":"item-${index % 97}","ok":true}\n`);
        } else randomFillSync(page);
      }
      writeSync(fd, chunk, 0, n * pageSize);
    }
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

import { createHash } from 'node:crypto';
import type { MemoryRegion } from './region.js';

const WINDOW_BYTES = 64 * 1024 * 1024;

/** SHA-256 of the whole region, read in windows (regions can be far larger than one JS buffer). */
export function regionSha256(region: MemoryRegion): string {
  const hash = createHash('sha256');
  for (const window of region.windows(WINDOW_BYTES)) hash.update(window);
  return hash.digest('hex');
}

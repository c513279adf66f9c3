// XXH64 of pages in place: hashPages fills a hash per page, changedPages (the hash tracker's pass) lists
// the pages whose hash differs from the one last sent, as native/codec.cc does.
import type { NativeRegion } from '../binding.js';
import { MAX_PAGE_COUNT, overlaps, toBigU64, toIndex, toPageSize, toU32 } from './args.js';
import { regionBytes } from './regions.js';
import { settleLater } from './settle.js';
import { xxh64 } from './xxh64.js';

/** The region's bytes, with pages [firstPage, +count) checked to lie inside it. */
function checkedPages(region: NativeRegion, pageSize: number, firstPage: number, count: number):
  { bytes: Uint8Array; size: number; first: number; pages: number } {
  const bytes = regionBytes(region);
  const size = toPageSize(pageSize);
  const first = toIndex(firstPage, 'firstPage');
  const pages = toIndex(count, 'count');
  const regionPages = Math.floor(bytes.length / size);
  if (first > regionPages || pages > regionPages - first) {
    throw new RangeError(`pages [${first}, +${pages}) are beyond the region's ${regionPages} pages`);
  }
  return { bytes, size, first, pages };
}

export function hashPages(region: NativeRegion, pageSize: number, firstPage: number, count: number,
  out: BigUint64Array, outOffset: number): void {
  const { bytes, size, first, pages } = checkedPages(region, pageSize, firstPage, count);
  const hashes = toBigU64(out, 'out');
  const offset = toIndex(outOffset, 'outOffset');
  if (offset > hashes.length || pages > hashes.length - offset) {
    throw new RangeError(`out has ${hashes.length} slots, fewer than outOffset + count = ${offset} + ${pages}`);
  }
  for (let i = 0; i < pages; i++) {
    const at = (first + i) * size;
    hashes[offset + i] = xxh64(bytes.subarray(at, at + size));
  }
}

export function changedPages(region: NativeRegion, pageSize: number, firstPage: number, count: number,
  sentHashes: BigUint64Array, out: Uint32Array): Promise<number> {
  const { bytes, size, first, pages } = checkedPages(region, pageSize, firstPage, count);
  const sent = toBigU64(sentHashes, 'sentHashes');
  const indices = toU32(out, 'out');
  if (first + pages > MAX_PAGE_COUNT) throw new RangeError('page indices must fit in u32');
  if (sent.length < first + pages) {
    throw new RangeError(`sentHashes has ${sent.length} slots, fewer than firstPage + count = ${first + pages}`);
  }
  if (indices.length < pages) throw new RangeError(`out has ${indices.length} slots, fewer than count ${pages}`);
  const written = indices.subarray(0, pages);
  if (overlaps(written, bytes.subarray(first * size, (first + pages) * size))) {
    throw new RangeError('out must not overlap the pages hashed');
  }
  if (overlaps(written, sent.subarray(first, first + pages))) throw new RangeError('out must not overlap sentHashes');
  return settleLater(() => {
    let n = 0;
    for (let page = first; page < first + pages; page++) {
      if (xxh64(bytes.subarray(page * size, (page + 1) * size)) !== sent[page]) indices[n++] = page;
    }
    return n;
  });
}

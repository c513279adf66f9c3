// Batch-shaped kernels over whole buffers of pages, for the micro-benchmarks and the shared test
// vectors. Page k of a buffer is bytes [k * pageSize, (k + 1) * pageSize).
import { overlaps, toI32, toIndex, toPageSize, toU8 } from './args.js';
import { lz4Decompress, Lz4PageCompressor } from './lz4.js';
import { isZeroPage } from './page-bytes.js';
import { xbzrleDecode, xbzrleEncode } from './xbzrle.js';

/** Largest XBZRLE limit: lengths are Int32Array entries. */
const MAX_LIMIT = 2 ** 31 - 1;

function pageAt(pages: Uint8Array, pageSize: number, k: number): Uint8Array {
  return pages.subarray(k * pageSize, (k + 1) * pageSize);
}

function checkNoOverlap(message: string, pairs: [ArrayBufferView, ArrayBufferView][]): void {
  if (pairs.some(([a, b]) => overlaps(a, b))) throw new RangeError(message);
}

function checkLengthsCover(lengths: Int32Array, pages: number): void {
  if (lengths.length < pages) {
    throw new RangeError(`lengths has ${lengths.length} entries, fewer than the ${pages} pages`);
  }
}

/**
 * Every encoding used (length > 0) must lie inside encoded, checked before any page changes. A negative
 * length means "not encoded" where negativeSkips, and is an error elsewhere.
 */
function checkEncodedRanges(encoded: Uint8Array, stride: number, lengths: Int32Array, pages: number,
  negativeSkips: boolean): void {
  checkLengthsCover(lengths, pages);
  for (let k = 0; k < pages; k++) {
    const length = lengths[k];
    if (length < 0 && !negativeSkips) throw new RangeError(`lengths[${k}] is negative`);
    if (length > 0 && k * stride + length > encoded.length) {
      throw new RangeError(`encoding ${k} (${length} bytes at ${k} * stride ${stride}) is beyond encoded's ` +
        `${encoded.length} bytes`);
    }
  }
}

/** How many of the pages are all zero bytes. */
export function zeroPageCount(pages: Uint8Array, pageSize: number): number {
  const bytes = toU8(pages, 'pages');
  const size = toPageSize(pageSize);
  let zero = 0;
  for (let k = 0; k < Math.floor(bytes.length / size); k++) if (isZeroPage(pageAt(bytes, size, k))) zero++;
  return zero;
}

/** XBZRLE of each (oldPages[k] -> newPages[k]) into out at k * limit; pages = those of newPages. */
export function xbzrleEncodePages(oldPages: Uint8Array, newPages: Uint8Array, pageSize: number, limit: number,
  out: Uint8Array, lengths: Int32Array): number {
  const older = toU8(oldPages, 'oldPages');
  const newer = toU8(newPages, 'newPages');
  const size = toPageSize(pageSize);
  const room = toIndex(limit, 'limit', MAX_LIMIT);
  const encoded = toU8(out, 'out');
  const lengthOf = toI32(lengths, 'lengths');
  const pages = Math.floor(newer.length / size);
  if (Math.floor(older.length / size) < pages) throw new RangeError(`oldPages has fewer pages than newPages (${pages})`);
  if (encoded.length < pages * room) throw new RangeError(`out (${encoded.length} bytes) is smaller than pages * limit`);
  checkLengthsCover(lengthOf, pages);
  checkNoOverlap('out and lengths must not overlap each other or the pages', [
    [encoded, older], [encoded, newer], [encoded, lengthOf], [lengthOf, older], [lengthOf, newer]]);
  let total = 0;
  for (let k = 0; k < pages; k++) {
    const length = xbzrleEncode(pageAt(older, size, k), pageAt(newer, size, k), encoded, k * room, room);
    lengthOf[k] = length;
    if (length >= 0) total += length;
  }
  return total;
}

/** The LZ4 block of each page into out at k * stride; lengths[k] = 0 when none or longer than stride. */
export function lz4CompressPages(pages: Uint8Array, pageSize: number, out: Uint8Array, stride: number,
  lengths: Int32Array): number {
  const source = toU8(pages, 'pages');
  const size = toPageSize(pageSize);
  const encoded = toU8(out, 'out');
  const step = toIndex(stride, 'stride');
  const lengthOf = toI32(lengths, 'lengths');
  const count = Math.floor(source.length / size);
  if (encoded.length < count * step) throw new RangeError(`out (${encoded.length} bytes) is smaller than pages * stride`);
  checkLengthsCover(lengthOf, count);
  checkNoOverlap('out and lengths must not overlap each other or the pages', [
    [encoded, source], [encoded, lengthOf], [lengthOf, source]]);
  const compressor = new Lz4PageCompressor(size);
  let total = 0;
  for (let k = 0; k < count; k++) {
    const block = compressor.compress(pageAt(source, size, k));
    const fits = block.length <= step;
    if (fits) encoded.set(block, k * step);
    lengthOf[k] = fits ? block.length : 0;
    total += lengthOf[k];
  }
  return total;
}

type DecodeOne = (payload: Uint8Array, page: Uint8Array) => boolean;

/**
 * The two decode kernels: block k (encoded[k * stride, + lengths[k])) decodes into pages[k] in place.
 * Returns -1, or the first k that does not decode. XBZRLE skips negative lengths (did not fit; 0 is an
 * unchanged page) and leaves a bad page as it was; LZ4 skips 0 (not compressed) and may leave a bad page
 * partly written. The pages after a bad one are left as they were.
 */
function decodePages(encoded: Uint8Array, stride: number, lengths: Int32Array, pages: Uint8Array, pageSize: number,
  negativeSkips: boolean, decode: DecodeOne): number {
  const source = toU8(encoded, 'encoded');
  const step = toIndex(stride, 'stride');
  const lengthOf = toI32(lengths, 'lengths');
  const target = toU8(pages, 'pages');
  const size = toPageSize(pageSize);
  const count = Math.floor(target.length / size);
  checkNoOverlap('pages must not overlap encoded or lengths', [[target, source], [target, lengthOf]]);
  checkEncodedRanges(source, step, lengthOf, count, negativeSkips);
  for (let k = 0; k < count; k++) {
    if (negativeSkips ? lengthOf[k]! < 0 : lengthOf[k] === 0) continue;
    if (!decode(source.subarray(k * step, k * step + lengthOf[k]!), pageAt(target, size, k))) return k;
  }
  return -1;
}

export function xbzrleDecodePages(encoded: Uint8Array, stride: number, lengths: Int32Array, pages: Uint8Array,
  pageSize: number): number {
  let scratch: Uint8Array | undefined;
  // Decoded into a copy first, so that a malformed payload leaves the page as it was.
  const decodeWhole: DecodeOne = (payload, page) => {
    scratch ??= new Uint8Array(page.length);
    scratch.set(page);
    if (!xbzrleDecode(payload, scratch)) return false;
    page.set(scratch);
    return true;
  };
  return decodePages(encoded, stride, lengths, pages, pageSize, true, decodeWhole);
}

export function lz4DecompressPages(encoded: Uint8Array, stride: number, lengths: Int32Array, pages: Uint8Array,
  pageSize: number): number {
  return decodePages(encoded, stride, lengths, pages, pageSize, false, lz4Decompress);
}

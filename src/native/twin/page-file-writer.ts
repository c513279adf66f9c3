// writePagesToFile as native/page_file_writer.cc does it: pages into a file at fileOffset + page * pageSize,
// hashes[page] = what the file holds there. Node has no fallocate, so a page the addon would punch out
// is written as zeros here: the file reads the same, but keeps its blocks.
import { writeSync } from 'node:fs';
import type { NativeRegion } from '../binding.js';
import { MAX_FD, overlaps, toBigU64, toIndex, toPageSize, toU32 } from './args.js';
import { isZeroPage } from './page-bytes.js';
import { regionBytes } from './regions.js';
import { settleLater } from './settle.js';
import { xxh64, zeroPageHash } from './xxh64.js';

/** A run written is at most this long, as the addon's. */
const RUN_BYTES = 2 ** 20;

interface WritePagesJob {
  bytes: Uint8Array;
  pageSize: number;
  indices: Uint32Array;
  fd: number;
  fileOffset: number;
  hashes: BigUint64Array;
}

export function writePagesToFile(region: NativeRegion, pageSize: number, indices: Uint32Array, fd: number,
  fileOffset: number, hashes: BigUint64Array): Promise<[written: number, zero: number, punched: number]> {
  const bytes = regionBytes(region);
  const size = toPageSize(pageSize);
  const list = toU32(indices, 'indices');
  const file = toIndex(fd, 'fd', MAX_FD);
  const offset = toIndex(fileOffset, 'fileOffset');
  const held = toBigU64(hashes, 'hashes');
  const pageCount = Math.floor(bytes.length / size);
  if (held.length < pageCount) {
    throw new RangeError(`hashes has ${held.length} slots, fewer than the region's ${pageCount} pages`);
  }
  if (overlaps(held, bytes.subarray(0, pageCount * size))) {
    throw new RangeError('hashes must not overlap the region\'s pages');
  }
  const copy = list.slice(); // checked once, it cannot change under the work
  for (let k = 0; k < copy.length; k++) {
    const page = copy[k]!;
    if (page >= pageCount) {
      throw new RangeError(`indices[${k}] = ${page} is not below the region's ${pageCount} pages`);
    }
    if (k > 0 && page <= copy[k - 1]!) {
      throw new RangeError(`indices must ascend: indices[${k}] = ${page} follows ${copy[k - 1]}`);
    }
  }
  if (copy.length > 0) {
    const end = offset + (copy[copy.length - 1]! + 1) * size;
    if (end > Number.MAX_SAFE_INTEGER) {
      throw new RangeError(`the pages would end at byte ${end} of the file, beyond 2^53 - 1`);
    }
  }
  const job: WritePagesJob = { bytes, pageSize: size, indices: copy, fd: file, fileOffset: offset, hashes: held };
  return settleLater(() => writePages(job));
}

/** Runs of consecutive pages, all written or all punched; a run's hashes are recorded once it is in the file. */
function writePages(job: WritePagesJob): [number, number, number] {
  const { bytes, pageSize, indices, hashes } = job;
  const zeroHash = zeroPageHash(pageSize);
  const runMax = Math.max(1, Math.floor(RUN_BYTES / pageSize));
  let written = 0;
  let zero = 0;
  let punched = 0;
  let first = 0;
  let count = 0;
  let punch = false;
  const flush = () => {
    if (count === 0) return;
    if (punch) {
      writeRun(job, first, count);
      hashes.fill(zeroHash, first, first + count);
      punched += count;
    } else {
      // A copy, as the addon stages each run: a worker may write the region meanwhile, and the hash
      // recorded must be of the bytes written.
      const run = bytes.slice(first * pageSize, (first + count) * pageSize);
      const runHashes = Array.from({ length: count }, (_, i) => xxh64(run.subarray(i * pageSize, (i + 1) * pageSize)));
      writeRun(job, first, count, run);
      hashes.set(runHashes, first);
      written += count;
    }
    count = 0;
  };
  for (const page of indices) {
    const isZero = isZeroPage(bytes.subarray(page * pageSize, (page + 1) * pageSize));
    // A zero page the file already reads as zeros needs nothing.
    const nothing = isZero && hashes[page] === zeroHash;
    const joins = count > 0 && !nothing && punch === isZero && page === first + count && (isZero || count < runMax);
    if (!joins) flush();
    if (isZero) zero++;
    if (nothing) continue;
    if (count === 0) {
      first = page;
      punch = isZero;
    }
    count++;
  }
  flush();
  return [written, zero, punched];
}

/**
 * The run's pages at their place in the file, again after a short write; without `run`, zeros. An error
 * names the call as the addon's does, with Node's code and errno.
 */
function writeRun(job: WritePagesJob, first: number, count: number, run?: Uint8Array): void {
  const at = job.fileOffset + first * job.pageSize;
  const length = count * job.pageSize;
  const zeros = run ? undefined : new Uint8Array(Math.min(length, RUN_BYTES));
  const failed = `pwrite(fd ${job.fd}, ${length} bytes at ${at}) failed`;
  for (let done = 0; done < length;) {
    const data = run ? run.subarray(done) : zeros!.subarray(0, Math.min(zeros!.length, length - done));
    let n: number;
    try {
      n = writeSync(job.fd, data, 0, data.length, at + done);
    } catch (cause) {
      const { code, errno, message } = cause as NodeJS.ErrnoException;
      throw Object.assign(new Error(`${failed}: ${message}`, { cause }), { code, errno });
    }
    if (n === 0) throw new Error(`${failed}: the file took no bytes`);
    done += n;
  }
}

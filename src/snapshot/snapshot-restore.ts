// Reading a snapshot's state back, every page checked against its hash: an eager restore into new
// files (each a temp beside its name, renamed into place only once every page of every region checked
// out, so a bad snapshot leaves the names untouched), the SHA-256 of the state, and the full check of
// one file that `pagewire inspect` runs on each file of a chain.
import { createHash } from 'node:crypto';
import { randomBytes } from 'node:crypto';
import { closeSync, fsyncSync, ftruncateSync, openSync, renameSync, unlinkSync, write } from 'node:fs';
import { promisify } from 'node:util';
import { basename, dirname, join } from 'node:path';
import { InvalidArgumentError, SnapshotCorruptError, StorageError } from '../errors.js';
import { zeroPageHash } from '../codec/page-hashes.js';
import { binding } from '../native/engine.js';
import { applyCommitManifest, writeCommitManifest } from '../target/commit-manifest.js';
import { fsyncDirectory } from '../target/durable-files.js';
import { readExactly } from './snapshot-digest.js';
import type { SnapshotChain, SnapshotFile } from './snapshot-file.js';
import { isPresent } from './snapshot-format.js';

const WINDOW_BYTES = 8 * 1024 * 1024;
const writeAsync = promisify(write);
/** Zero pages in a row that a restore leaves as a hole rather than writing them (256 KiB of 4 KiB pages). */
const HOLE_MIN_PAGES = 64;

/** What a restore wrote for one region. */
export interface RestoredRegion {
  path: string;
  /** Pages written (the others are zero and left as holes). */
  pagesWritten: number;
  sha256?: string;
}

/** One window of a region's state, verified: its bytes, its first page, and its pages' hashes. */
export interface VerifiedWindow {
  window: Buffer;
  firstPage: number;
  hashes: BigUint64Array;
}

/**
 * Region `index` of the chain's state in windows of whole pages, each read from the layer that holds it
 * and checked against the top's hash table; a page that does not match is SnapshotCorruptError naming
 * the file it came from. Window k is read into buffers[k % buffers.length] (default: one of its own)
 * when it is asked for, so a consumer may still use the others (writing them out) meanwhile.
 */
export function* verifiedWindows(chain: SnapshotChain, index: number, buffers?: Buffer[]): Generator<VerifiedWindow> {
  const { top, layers } = chain;
  const { pageSize, pageCount } = top.header.regions[index]!;
  // A full snapshot alone holds every page: one read per window, no owner to look up.
  const owners = layers.length > 1 ? chain.owners(index) : undefined;
  const windowPages = windowPagesOf(pageSize);
  const pool = buffers ?? [Buffer.allocUnsafe(Math.min(pageCount, windowPages) * pageSize)];
  // Hashes compared as 32-bit halves: no BigInt per page.
  const expected = halves(top.hashes[index]!);
  for (let first = 0, k = 0; first < pageCount; first += windowPages, k++) {
    const count = Math.min(windowPages, pageCount - first);
    const buffer = pool[k % pool.length]!;
    // One read per run of pages held by the same layer.
    for (let page = first; page < first + count;) {
      let end = owners ? page + 1 : first + count;
      while (end < first + count && owners![end] === owners![page]) end++;
      const layer = layers[owners?.[page] ?? 0]!;
      const area = layer.header.regions[index]!;
      readExactly(layer.fd, (end - page) * pageSize, area.pagesOffset + page * pageSize, layer.path,
        buffer.subarray((page - first) * pageSize));
      page = end;
    }
    const window = buffer.subarray(0, count * pageSize);
    const hashes = new BigUint64Array(count);
    binding().hashPages(window, pageSize, 0, count, hashes, 0);
    const bad = firstMismatch(halves(hashes), expected, 2 * first);
    if (bad >= 0) {
      const page = first + (bad >>> 1);
      throw new SnapshotCorruptError(`${layers[owners?.[page] ?? 0]!.path}: page ${page} of region ${index} does not match its hash ` +
        '(the file was changed or damaged after it was written)');
    }
    yield { window, firstPage: first, hashes };
  }
}

/**
 * Checks that no file of the chain holds data where it holds no page (an incremental file's pages
 * inherited from its parent are holes): a damaged byte there would not change the state, but it is
 * damage all the same. Only data extents are read, so a healthy chain costs nothing here.
 */
export function checkStrayData(chain: SnapshotChain): void {
  for (const layer of chain.layers) {
    if (!layer.incremental) continue;
    forEachDataPage(layer, (index, page, hash) => {
      if (!isPresent(layer.present[index]!, page) && hash !== zeroPageHash(layer.header.regions[index]!.pageSize)) {
        throw new SnapshotCorruptError(`${layer.path}: page ${page} of region ${index} holds data, but the snapshot holds no such page ` +
          '(the file was changed or damaged after it was written)');
      }
    });
  }
}

/**
 * Checks the pages each file of the chain holds but a later file replaces: they do not make the state,
 * but damage to them is damage all the same, and a restore refuses a damaged chain whole. Only those
 * pages are read (for an incremental chain, about what its later files hold).
 */
export function checkShadowedPages(chain: SnapshotChain): void {
  const { layers } = chain;
  for (const [index, region] of chain.top.header.regions.entries()) {
    const owners = chain.owners(index);
    const { pageSize, pageCount } = region;
    const windowPages = Math.max(1, Math.floor(WINDOW_BYTES / pageSize));
    const buffer = Buffer.allocUnsafe(Math.min(pageCount, windowPages) * pageSize);
    const hashes = new BigUint64Array(windowPages);
    for (const [layerIndex, layer] of layers.entries()) {
      const present = layer.present[index]!;
      const shadowed = (page: number) => owners[page]! > layerIndex && isPresent(present, page);
      for (let page = 0; page < pageCount;) {
        if (!shadowed(page)) { page++; continue; }
        let end = page + 1;
        while (end < pageCount && end - page < windowPages && shadowed(end)) end++;
        const count = end - page;
        const window = readExactly(layer.fd, count * pageSize, layer.header.regions[index]!.pagesOffset + page * pageSize, layer.path, buffer)
          .subarray(0, count * pageSize);
        binding().hashPages(window, pageSize, 0, count, hashes, 0);
        for (let i = 0; i < count; i++) {
          if (hashes[i] !== layer.hashes[index]![page + i]) {
            throw new SnapshotCorruptError(`${layer.path}: page ${page + i} of region ${index} does not match its hash (the file was ` +
              'changed or damaged after it was written)');
          }
        }
        page = end;
      }
    }
  }
}

/**
 * The full check of one file on its own: each page present in it matches the file's own hash table
 * (pages it inherits are checked with the file that holds them), and it holds no data elsewhere.
 */
export function verifyFile(file: SnapshotFile): number {
  let checked = 0;
  const seen = file.header.regions.map((r) => new Uint8Array(r.pageCount));
  forEachDataPage(file, (index, page, hash) => {
    seen[index]![page] = 1;
    const present = isPresent(file.present[index]!, page);
    if (hash !== (present ? file.hashes[index]![page] : zeroPageHash(file.header.regions[index]!.pageSize))) {
      throw new SnapshotCorruptError(`${file.path}: page ${page} of region ${index} ${present ? 'does not match its hash' : 'holds data, but the snapshot holds no such page'} ` +
        '(the file was changed or damaged after it was written)');
    }
    if (present) checked++;
  });
  // Present pages in holes read as zeros: their hashes must say so.
  for (const [index, region] of file.header.regions.entries()) {
    const zero = zeroPageHash(region.pageSize);
    for (let page = 0; page < region.pageCount; page++) {
      if (seen[index]![page] || !isPresent(file.present[index]!, page)) continue;
      if (file.hashes[index]![page] !== zero) {
        throw new SnapshotCorruptError(`${file.path}: page ${page} of region ${index} is a hole, but its hash says it holds data (damaged)`);
      }
      checked++;
    }
  }
  return checked;
}

/** Restores the chain's state into new files, one per region, each verified; returns what each got. */
export async function restoreChain(chain: SnapshotChain, outPaths: string[], options: { sha256?: boolean } = {}): Promise<RestoredRegion[]> {
  const regions = chain.top.header.regions;
  if (outPaths.length !== regions.length) {
    throw new InvalidArgumentError(`the snapshot holds ${regions.length} regions; give ${regions.length} files to restore them to, got ${outPaths.length}`);
  }
  checkStrayData(chain);
  checkShadowedPages(chain);
  const temps = outPaths.map((out) => join(dirname(out), `.${basename(out)}.pagewire-restore-${randomBytes(8).toString('hex')}.tmp`));
  let made = 0;
  try {
    const restored: RestoredRegion[] = [];
    for (const [index, temp] of temps.entries()) {
      made = index + 1;
      restored.push({ ...await restoreRegionInto(chain, index, temp, options), path: outPaths[index]! });
    }
    // Every region checked out: only now do the names change. Several change as one, through the
    // migration's commit manifest (a crash part-way is rolled forward by the next receive of the first).
    const renames = temps.map((from, index) => ({ from, to: outPaths[index]! }));
    if (renames.length === 1) {
      try {
        renameSync(renames[0]!.from, renames[0]!.to);
      } catch (cause) {
        throw new StorageError(`cannot put the restored image at ${renames[0]!.to}: ${(cause as Error).message}`, { cause });
      }
      await fsyncDirectory(dirname(renames[0]!.to));
    } else {
      // The temps' own entries are durable before the manifest names them: a roll-forward must find them.
      for (const dir of new Set(temps.map((temp) => dirname(temp)))) await fsyncDirectory(dir);
      const manifest = await writeCommitManifest(renames);
      temps.fill('');
      await applyCommitManifest(manifest, renames);
    }
    temps.fill('');
    return restored;
  } catch (error) {
    for (const temp of temps.slice(0, made)) if (temp) try { unlinkSync(temp); } catch { /* never made */ }
    throw error;
  }
}

/**
 * Restores region `index` of the chain's state into a new file at `path`, every page verified, and makes
 * it durable; on any failure the file is removed again. Long runs of zero pages stay holes. Each window
 * is written on the thread pool while the next is read and verified here, in a second buffer.
 */
export async function restoreRegionInto(chain: SnapshotChain, index: number, path: string, options: { sha256?: boolean } = {}): Promise<RestoredRegion> {
  const region = chain.top.header.regions[index]!;
  const { pageSize } = region;
  let fd: number | undefined;
  const writing: Array<Promise<void>> = [Promise.resolve(), Promise.resolve()];
  try {
    fd = openSync(path, 'wx');
    const out = fd;
    ftruncateSync(out, region.byteLength);
    const sha = options.sha256 ? createHash('sha256') : undefined;
    const zero = zeroPageHash(pageSize);
    const size = Math.min(region.pageCount, windowPagesOf(pageSize)) * pageSize;
    const windows = verifiedWindows(chain, index, [Buffer.allocUnsafe(size), Buffer.allocUnsafe(size)]);
    let pagesWritten = 0;
    for (let k = 0; ; k++) {
      // Window k goes into the buffer window k - 2 was written from: that write must be done.
      await writing[k % 2];
      const next = windows.next();
      if (next.done) break;
      const { window, firstPage, hashes } = next.value;
      sha?.update(window);
      const runs = dataRuns(window, hashes, pageSize, zero);
      for (const [start, end] of runs) pagesWritten += end - start;
      const written = (async () => {
        for (const [start, end] of runs) await writeAllAsync(out, window.subarray(start * pageSize, end * pageSize), (firstPage + start) * pageSize);
      })();
      // Awaited two windows on (or at the end): until then a failure must not count as unhandled.
      written.catch(() => undefined);
      writing[k % 2] = written;
    }
    await Promise.all(writing);
    fsyncSync(out);
    closeSync(out);
    fd = undefined;
    return { path, pagesWritten, ...(sha ? { sha256: sha.digest('hex') } : {}) };
  } catch (error) {
    if (fd !== undefined) {
      // No write may still be using the descriptor when it closes.
      await Promise.allSettled(writing);
      closeSync(fd);
      try { unlinkSync(path); } catch { /* already gone */ }
    }
    if (error instanceof SnapshotCorruptError || error instanceof StorageError) throw error;
    throw new StorageError(`cannot restore to ${path}: ${(error as Error).message}`, { cause: error });
  }
}

/**
 * The stretches of a window to write, as [start, end) pages: runs of at least HOLE_MIN_PAGES zero pages
 * stay holes; the rest is written whole (a scattered zero page costs less written than a call of its
 * own). A run is taken for zeros by its hashes, then confirmed by its bytes in one call.
 */
function dataRuns(window: Buffer, hashes: BigUint64Array, pageSize: number, zero: bigint): Array<[number, number]> {
  const runs: Array<[number, number]> = [];
  const got = halves(hashes);
  const zeroLow = Number(zero & 0xffffffffn);
  const zeroHigh = Number(zero >> 32n);
  const zeroHashed = (i: number) => got[2 * i] === zeroLow && got[2 * i + 1] === zeroHigh;
  let start = 0;
  for (let i = 0; i < hashes.length;) {
    if (!zeroHashed(i)) { i++; continue; }
    let end = i + 1;
    while (end < hashes.length && zeroHashed(end)) end++;
    const bytes = window.subarray(i * pageSize, end * pageSize);
    if (end - i >= HOLE_MIN_PAGES && binding().zeroPageCount(bytes, pageSize) === end - i) {
      if (i > start) runs.push([start, i]);
      start = end;
    }
    i = end;
  }
  if (start < hashes.length) runs.push([start, hashes.length]);
  return runs;
}

/** SHA-256 of each region of the chain's state, every page verified on the way. */
export function chainSha256(chain: SnapshotChain): string[] {
  return chain.top.header.regions.map((_, index) => {
    const sha = createHash('sha256');
    for (const { window } of verifiedWindows(chain, index)) sha.update(window);
    return sha.digest('hex');
  });
}

/**
 * Calls `visit` for every page of the file's page areas that lies in a data extent, with its hash (a page
 * that must be zero is checked by its hash too: any damage to a zero page changes it).
 */
function forEachDataPage(file: SnapshotFile, visit: (index: number, page: number, hash: bigint) => void): void {
  const extents = binding().dataExtents(file.path);
  for (const [index, region] of file.header.regions.entries()) {
    const { pageSize, pagesOffset, byteLength } = region;
    const windowPages = Math.max(1, Math.floor(WINDOW_BYTES / pageSize));
    const buffer = Buffer.allocUnsafe(windowPages * pageSize);
    const hashes = new BigUint64Array(windowPages);
    let next = 0;
    for (let e = 0; e < extents.length; e += 2) {
      const start = Math.max(extents[e]!, pagesOffset) - pagesOffset;
      const end = Math.min(extents[e + 1]!, pagesOffset + byteLength) - pagesOffset;
      if (start >= end) continue;
      // An extent may begin or end inside a page: the whole page is read; none is read twice.
      const firstPage = Math.max(next, Math.floor(start / pageSize));
      const endPage = Math.ceil(end / pageSize);
      for (let page = firstPage; page < endPage; page += windowPages) {
        const count = Math.min(windowPages, endPage - page);
        const window = readExactly(file.fd, count * pageSize, pagesOffset + page * pageSize, file.path, buffer).subarray(0, count * pageSize);
        binding().hashPages(window, pageSize, 0, count, hashes, 0);
        for (let i = 0; i < count; i++) visit(index, page + i, hashes[i]!);
      }
      next = endPage;
    }
  }
}

/** The first index at which got differs from expected[offset...], or -1. */
function firstMismatch(got: Uint32Array, expected: Uint32Array, offset: number): number {
  for (let i = 0; i < got.length; i++) if (got[i] !== expected[offset + i]) return i;
  return -1;
}

/** The u64 hashes as little-endian 32-bit halves, in place. */
function halves(hashes: BigUint64Array): Uint32Array {
  return new Uint32Array(hashes.buffer, hashes.byteOffset, hashes.length * 2);
}

async function writeAllAsync(fd: number, bytes: Uint8Array, position: number): Promise<void> {
  for (let at = 0; at < bytes.byteLength;) at += (await writeAsync(fd, bytes, at, bytes.byteLength - at, position + at)).bytesWritten;
}

function windowPagesOf(pageSize: number): number {
  return Math.max(1, Math.floor(WINDOW_BYTES / pageSize));
}

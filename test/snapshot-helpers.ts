// Shared by the snapshot tests: a seeded guest whose region the test writes itself (the truth of each
// pause copied by its pause hook, never read back from a snapshot), a seeded PRNG, temp dirs on tmpfs,
// and a snapshot's state as restoreChain and openSnapshot give it back.
import { createCipheriv, createHash } from 'node:crypto';
import {
  closeSync, existsSync, fstatSync, mkdirSync, mkdtempSync, openSync, readFileSync, readSync, readdirSync, renameSync, rmSync, writeSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DirtyBitmap, MemoryRegion, SnapshotChain, SnapshotFile, Snapshotter, openSnapshot, restoreChain } from '../dist/src/index.js';
import { regionDigest } from '../dist/src/codec/page-hashes.js';
import { binding } from '../dist/src/native/engine.js';
import { digestOfFile } from '../dist/src/snapshot/snapshot-digest.js';
import { HEADER_BYTES, TRAILER_BYTES, decodeHeader, encodeHeader, encodeTrailer, isPresent } from '../dist/src/snapshot/snapshot-format.js';

export const PAGE = 4096;
export const MiB = 2 ** 20;

export function sha256(bytes: Uint8Array): string {
  return createHash('sha256').update(bytes).digest('hex');
}

export interface Prng {
  /** A whole number in [0, n). */
  int(n: number): number;
  /** Fills `bytes` with pseudo-random bytes. */
  fill(bytes: Uint8Array): void;
}

/**
 * The same sequence for the same seed on every run: whole numbers from mulberry32, bytes from an AES-CTR
 * key stream keyed by the seed (fast enough to fill megabytes).
 */
export function prng(seed: number): Prng {
  let state = seed >>> 0;
  const next = () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return (t ^ (t >>> 14)) >>> 0;
  };
  const stream = createCipheriv('aes-128-ctr', createHash('sha256').update(`prng ${seed}`).digest().subarray(0, 16), Buffer.alloc(16));
  let zeros = Buffer.alloc(0);
  return {
    int: (n) => Math.floor((next() / 2 ** 32) * n),
    fill(bytes) {
      if (zeros.length < bytes.byteLength) zeros = Buffer.alloc(bytes.byteLength);
      bytes.set(stream.update(zeros.subarray(0, bytes.byteLength)));
    },
  };
}

/**
 * A guest's memory the test writes itself: a Buffer in which about three pages of four hold random data
 * (the others zero), every write marked in each dirty bitmap handed out. Its pause hook copies the
 * region: `atPause` is the truth a snapshot taken with these hooks must restore to.
 */
export class Guest {
  readonly memory: Buffer;
  readonly region: MemoryRegion;
  readonly random: Prng;
  /** The region's bytes when the last pause hook ran. */
  atPause: Buffer | undefined;
  paused = false;
  pauses = 0;
  private readonly bitmaps: DirtyBitmap[] = [];

  constructor(bytes: number, seed: number, readonly pageSize = PAGE) {
    this.memory = Buffer.alloc(bytes);
    this.random = prng(seed);
    for (let page = 0; page < bytes / pageSize; page++) {
      if (this.random.int(4) !== 0) this.random.fill(this.page(page));
    }
    this.region = MemoryRegion.fromMemory(this.memory, { pageSize });
  }

  /** A new dirty bitmap over the region; every later write is marked in it. */
  bitmap(): DirtyBitmap {
    const bitmap = new DirtyBitmap(this.region.pageCount);
    this.bitmaps.push(bitmap);
    return bitmap;
  }

  page(page: number): Buffer {
    return this.memory.subarray(page * this.pageSize, (page + 1) * this.pageSize);
  }

  /** Writes `count` random pages: new random data, zeros, a few bytes changed, or another page's copy. */
  scribble(count: number): void {
    if (this.paused) throw new Error('the test wrote its guest while paused');
    const pages = this.region.pageCount;
    for (let k = 0; k < count; k++) {
      const page = this.random.int(pages);
      const bytes = this.page(page);
      switch (this.random.int(4)) {
        case 0: this.random.fill(bytes); break;
        case 1: bytes.fill(0); break;
        case 2: {
          const at = this.random.int(this.pageSize - 64);
          this.random.fill(bytes.subarray(at, at + 1 + this.random.int(64)));
          break;
        }
        default: bytes.set(Buffer.from(this.page(this.random.int(pages))));
      }
      for (const bitmap of this.bitmaps) bitmap.mark(page);
    }
  }

  /** The workload's hooks: pause copies the region (the truth of this pause point). */
  hooks() {
    return {
      pause: () => {
        this.paused = true;
        this.pauses += 1;
        this.atPause = Buffer.from(this.memory);
      },
      resume: () => { this.paused = false; },
    };
  }
}

/** A temp dir on tmpfs (/dev/shm) when there is one, else in the OS temp dir. */
export function shmDir(prefix = 'pagewire-snap-'): { dir: string; cleanup(): void } {
  const dir = mkdtempSync(join(existsSync('/dev/shm') ? '/dev/shm' : tmpdir(), prefix));
  return { dir, cleanup: () => rmSync(dir, { recursive: true, force: true }) };
}

/** The names a failed write or restore could have left behind in `dir`. */
export function tempFilesIn(dir: string): string[] {
  return readdirSync(dir).filter((name) => name.includes('.pagewire-'));
}

let restores = 0;

/**
 * The state of the snapshot at `path` as restoreChain writes it, one Buffer per region, read back from
 * the files it wrote into `dir` (removed again); each restore's own sha256 must be that of its file.
 */
export async function restoredState(path: string, dir: string): Promise<Buffer[]> {
  const chain = SnapshotChain.open(path);
  try {
    const outs = chain.top.header.regions.map((_, i) => join(dir, `restored-${++restores}-${i}.img`));
    const restored = await restoreChain(chain, outs, { sha256: true });
    const bytes = outs.map((out) => readFileSync(out));
    for (const [i, region] of restored.entries()) {
      const actual = sha256(bytes[i]!);
      if (region.sha256 !== actual) throw new Error(`restoreChain reported sha256 ${region.sha256} for ${outs[i]}, which holds ${actual}`);
    }
    for (const out of outs) rmSync(out);
    return bytes;
  } finally {
    chain.close();
  }
}

/** Runs `action`; returns what it threw (undefined if it returned). */
export async function thrown(action: () => unknown): Promise<unknown> {
  try {
    await action();
    return undefined;
  } catch (error) {
    return error;
  }
}

/** A copy of a region's bytes. */
export function regionBytes(region: MemoryRegion): Buffer {
  return Buffer.concat([...region.windows()].map((window) => Buffer.from(window)));
}

/** The state of the snapshot at `path` as openSnapshot maps it (copied out, then unmapped), every page verified. */
export function lazyState(path: string): { regions: Buffer[]; deviceState: Buffer; lazy: boolean; id: string } {
  const snapshot = openSnapshot(path);
  try {
    snapshot.verify();
    return { regions: snapshot.regions.map(regionBytes), deviceState: Buffer.from(snapshot.deviceState), lazy: snapshot.lazy, id: snapshot.id };
  } finally {
    snapshot.close();
  }
}

/** Where `actual` first differs from `expected`, as a page number, for a readable failure (-1: equal). */
export function firstDifferentPage(actual: Uint8Array, expected: Uint8Array, pageSize = PAGE): number {
  if (actual.byteLength !== expected.byteLength) return -2;
  for (let at = 0; at < actual.byteLength; at += pageSize) {
    if (Buffer.compare(actual.subarray(at, at + pageSize), expected.subarray(at, at + pageSize)) !== 0) return at / pageSize;
  }
  return -1;
}

/**
 * Rewrites page `page` of a one-region snapshot file with `bytes`, and its hash, the region digest and
 * the trailer's digest to match: a whole snapshot again, with the same id, of another state.
 */
function resealWithPage(path: string, page: number, bytes: Buffer): void {
  const fd = openSync(path, 'r+');
  try {
    const size = fstatSync(fd).size;
    const block = Buffer.alloc(HEADER_BYTES);
    readSync(fd, block, 0, HEADER_BYTES, 0);
    const header = decodeHeader(block, size, path);
    const region = header.regions[0]!;
    writeSync(fd, bytes, 0, region.pageSize, region.pagesOffset + page * region.pageSize);
    const table = Buffer.alloc(region.pageCount * 8);
    readSync(fd, table, 0, table.length, region.hashesOffset);
    const hashes = new BigUint64Array(table.buffer, table.byteOffset, region.pageCount);
    binding().hashPages(bytes, region.pageSize, 0, 1, hashes, page);
    writeSync(fd, table, 0, table.length, region.hashesOffset);
    region.digest = regionDigest(hashes);
    writeSync(fd, encodeHeader(header), 0, HEADER_BYTES, 0);
    const trailerOffset = size - TRAILER_BYTES;
    const layout = { regions: header.regions, tablesOffset: region.hashesOffset, deviceStateOffset: region.presentOffset + region.presentBytes };
    const digest = digestOfFile(fd, layout, trailerOffset, path);
    writeSync(fd, encodeTrailer({ offset: trailerOffset, id: header.id, digest }), 0, TRAILER_BYTES, trailerOffset);
  } finally {
    closeSync(fd);
  }
}

/** An incremental snapshot whose parent was taken away, swapped for another snapshot, or changed. */
export interface BrokenChain {
  name: string;
  dir: string;
  parent: string;
  child: string;
  /** What the refusal says beyond the parent's path. */
  reason: RegExp;
  /** The state the parent file now holds, when there is one that restores on its own. */
  parentState?: Buffer;
}

/**
 * A chain of two files in `dir`: base.snap, a full snapshot of a guest (1 MiB unless told), and inc.snap
 * on it (`changes` page writes between), each with a few hundred bytes of device state; and the truth of
 * each pause.
 */
export async function smallChain(dir: string, seed: number, { bytes = MiB, changes = 20 } = {}) {
  const guest = new Guest(bytes, seed);
  const snapshotter = new Snapshotter({
    region: guest.region, dirtyBitmap: guest.bitmap(),
    hooks: { ...guest.hooks(), deviceState: () => Buffer.from(`registers at pause ${guest.pauses};`.repeat(12)) },
  });
  const parent = join(dir, 'base.snap');
  const child = join(dir, 'inc.snap');
  const parentSummary = await snapshotter.take(parent);
  const parentTruth = guest.atPause!;
  guest.scribble(changes);
  const childSummary = await snapshotter.take(child, { base: parent });
  return { guest, snapshotter, parent, child, parentTruth, childTruth: guest.atPause!, parentSummary, childSummary };
}

/** Three broken chains under `root`, each a small chain whose parent was then taken away, replaced or changed. */
export async function brokenChains(root: string, seed: number): Promise<BrokenChain[]> {
  const cases: BrokenChain[] = [];
  for (const [k, name] of ['parent missing', 'parent replaced', 'parent altered'].entries()) {
    const dir = join(root, name.replace(' ', '-'));
    mkdirSync(dir);
    const { guest, parent, child, parentTruth } = await smallChain(dir, seed + k);
    if (name === 'parent missing') {
      rmSync(parent);
      cases.push({ name, dir, parent, child, reason: /ENOENT/ });
    } else if (name === 'parent replaced') {
      // Another full snapshot of the same shape, moved to the parent's name.
      guest.scribble(20);
      await new Snapshotter({ region: guest.region, hooks: guest.hooks() }).take(join(dir, 'other.snap'));
      renameSync(join(dir, 'other.snap'), parent);
      cases.push({ name, dir, parent, child, reason: /snapshot [0-9a-f]{32}, not snapshot [0-9a-f]{32}/, parentState: guest.atPause! });
    } else {
      // A data page the child does not hold, changed in the parent, which is sealed again under its id:
      // were the link not checked, the child's state would come out with that page changed.
      const inc = SnapshotFile.open(child);
      let page = 0;
      while (isPresent(inc.present[0]!, page) || parentTruth.subarray(page * PAGE, (page + 1) * PAGE).every((b) => b === 0)) page++;
      inc.close();
      const bytes = Buffer.alloc(PAGE, 0x5a);
      resealWithPage(parent, page, bytes);
      const parentState = Buffer.from(parentTruth);
      bytes.copy(parentState, page * PAGE);
      cases.push({ name, dir, parent, child, reason: /digest differs/, parentState });
    }
  }
  return cases;
}

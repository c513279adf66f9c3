// Where the target puts what it receives. A file target writes into a sparse temp file beside --out
// (pwritev, through the page cache), makes each pre-copy round durable, and on GO makes the last one
// durable and renames the file over --out, so the previous --out is untouched by any failure before the
// switch-over commits. Its fsyncs and the rename run on the thread pool, not on the event loop.
import { randomBytes } from 'node:crypto';
import { renameSync, unlinkSync } from 'node:fs';
import { rename, statfs } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { setImmediate as setImmediatePromise } from 'node:timers/promises';
import { CapacityError, InvalidArgumentError, StorageError } from '../errors.js';
import type { PageStore } from '../codec/page-store.js';
import type { MemoryRegion } from '../memory/region.js';
import { binding } from '../native/engine.js';
import { checkObject, checkOptionalBoolean } from '../option-checks.js';
import { applyCommitManifest, rollForward, writeCommitManifest } from './commit-manifest.js';
import { fsyncDirectory } from './durable-files.js';
import { FilePageStore, RegionPageStore } from './page-stores.js';
import { SnapshotChain } from '../snapshot/snapshot-file.js';
import { checkShadowedPages, checkStrayData, restoreRegionInto } from '../snapshot/snapshot-restore.js';

export interface RegionOffer {
  regionSize: number;
  pageSize: number;
  migrationId: string;
  /** Which of the migration's regions this is (0 ..< regions): an image is made and opened for each, in order. */
  region: number;
  /** How many regions the migration carries (1 unless the source sends several, e.g. RAM and a disk). */
  regions: number;
}

export interface TargetImage {
  /** Refuses (CapacityError) or returns where verified pages go. */
  open(offer: RegionOffer): Promise<PageStore> | PageStore;
  /** True when the opened region starts all zeros, so the source may skip zero pages in round 1. */
  readonly zeroed: boolean;
  /**
   * The hashes of the pages the opened region starts with, when it starts from a seed (a snapshot): the
   * source then sends only the pages that differ. Read after open().
   */
  readonly seedHashes?: BigUint64Array;
  /**
   * The file the image is received into, if it is one: a workload may map it from the prepare hook on
   * (before GO); commit() renames it into place, which leaves a mapping intact.
   */
  readonly workingPath?: string;
  /** Pages were written (bytes of page data): a chance to start making them durable, so persist() is short. */
  noteWritten(bytes: number): void;
  /** Makes the received image durable, not yet visible. Called at the end of each pre-copy round. */
  persist(): Promise<void> | void;
  /** Makes the image, which persist() made durable, the committed one, atomically. Called on GO after persist(). */
  commit(): Promise<void> | void;
  /** Drops everything received; the previous image stays. */
  discard(): void;
  /** After READY without GO: makes the verified image durable and keeps it aside for an operator; returns where it is. */
  keepInDoubt(): Promise<string> | string;
}

/** How much page data the target writes between two background writeback starts. */
const WRITEBACK_EVERY_BYTES = 32 * 1024 * 1024;

export interface FileTargetImageOptions {
  /** Refuse regions above this many bytes (default: no limit beyond free disk space). */
  maxRegionBytes?: number;
  /**
   * Refuse a region larger than the free space of --out's file system (default true). False for sparse
   * images (a disk that is mostly holes takes only its data): a disk that fills up later fails a write
   * with PW_ERR_STORAGE, before the switch-over, and the previous image stays.
   */
  checkFreeSpace?: boolean;
  /**
   * Start from this snapshot (its chain resolved, every page verified): the source then sends only the
   * pages whose hashes differ from it. The region this image is for must have the snapshot's region's shape.
   */
  seed?: string;
}

export class FileTargetImage implements TargetImage {
  private seeded: BigUint64Array | undefined;
  /** The seed's region restored ahead of an offer (prepareSeed), not yet taken by open(). */
  private prepared: RestoredSeed | undefined;
  private preparing = false;
  private store: FilePageStore | undefined;
  private tempPath: string | undefined;
  /** The manifest of a commitAll() that failed after it was made durable. */
  private committingVia: string | undefined;
  private migrationId = '';
  private unsynced = 0;

  constructor(readonly outPath: string, private readonly options: FileTargetImageOptions = {}) {}

  get zeroed(): boolean {
    return this.options.seed === undefined;
  }

  get seedHashes(): BigUint64Array | undefined {
    return this.seeded;
  }

  /** The temp file beside --out the image is received into, from open() until commit() or discard(). */
  get workingPath(): string | undefined {
    return this.tempPath;
  }

  async open(offer: RegionOffer): Promise<PageStore> {
    // A commit of several files that a crash interrupted is completed before anything new is received.
    await rollForward(this.outPath);
    const { maxRegionBytes } = this.options;
    if (maxRegionBytes !== undefined && offer.regionSize > maxRegionBytes) {
      throw new CapacityError(`region of ${offer.regionSize} bytes exceeds this target's limit of ${maxRegionBytes} bytes`);
    }
    const dir = dirname(this.outPath);
    // A seed restored ahead already holds the region's space: the image is received into it.
    if (this.options.checkFreeSpace !== false && this.prepared?.region !== offer.region) {
      let free: number;
      try {
        const fs = await statfs(dir);
        free = Number(fs.bavail) * Number(fs.bsize);
      } catch (cause) {
        throw new StorageError(`cannot inspect ${dir}: ${(cause as Error).message}`, { cause });
      }
      if (offer.regionSize > free) {
        throw new CapacityError(`region of ${offer.regionSize} bytes does not fit: ${free} bytes free in ${dir}`);
      }
    }
    // Beside --out, so the final rename stays within one file system and is atomic.
    this.migrationId = offer.migrationId;
    const temp = join(dir, `.${basename(this.outPath)}.pagewire-${offer.migrationId}.tmp`);
    const { seed } = this.options;
    if (seed === undefined) {
      this.store = await FilePageStore.create(temp, offer.regionSize, offer.pageSize);
      this.tempPath = temp;
      return this.store;
    }
    const prepared = this.prepared?.region === offer.region ? this.prepared : await restoreSeed(seed, offer.region, this.seedPath());
    // From here this offer owns the restored file: a refusal removes it, and a later offer restores afresh.
    if (prepared === this.prepared) this.prepared = undefined;
    checkSeedShape(seed, prepared, offer);
    try {
      renameSync(prepared.path, temp);
    } catch (cause) {
      try { unlinkSync(prepared.path); } catch { /* nothing to remove */ }
      throw new StorageError(`cannot take the seed restored at ${prepared.path}: ${(cause as Error).message}`, { cause });
    }
    this.tempPath = temp;
    this.seeded = prepared.hashes;
    this.store = await FilePageStore.openExisting(temp, offer.regionSize, offer.pageSize);
    return this.store;
  }

  /**
   * Restores region `region` of the seed (options.seed) now, before any migration is offered, so that
   * open() only renames it into place. Without it, open() restores the seed itself, inside the
   * handshake, whose round trip the source's stop rule takes as what each switch-over round trip costs.
   */
  async prepareSeed(region = 0): Promise<void> {
    if (this.options.seed === undefined) throw new InvalidArgumentError('prepareSeed() needs options.seed');
    if (this.preparing) throw new InvalidArgumentError('prepareSeed() is already running for this image');
    this.discardPrepared();
    this.preparing = true;
    try {
      this.prepared = await restoreSeed(this.options.seed, region, this.seedPath());
    } finally {
      this.preparing = false;
    }
  }

  noteWritten(bytes: number): void {
    // Writeback overlaps the pre-copy instead of landing in the downtime window, where persist()
    // would otherwise have to write the whole image at once.
    this.unsynced += bytes;
    if (this.unsynced >= WRITEBACK_EVERY_BYTES) {
      this.unsynced = 0;
      this.store?.startWriteback();
    }
  }

  async persist(): Promise<void> {
    this.unsynced = 0;
    await this.store?.sync();
    // The temp file's own directory entry must be durable too, or the image is not.
    await fsyncDirectory(dirname(this.outPath));
  }

  async commit(): Promise<void> {
    const temp = this.requireTemp();
    try {
      this.closeStore();
      await rename(temp, this.outPath);
      this.tempPath = undefined;
      await fsyncDirectory(dirname(this.outPath));
    } catch (cause) {
      throw new StorageError(`cannot commit ${this.outPath}: ${(cause as Error).message}`, { cause });
    }
  }

  /**
   * Commits several images as one: every file is renamed, or after a crash part-way every one is once
   * `rollForward(firstOut)` runs (src/target/commit-manifest.ts). Each must be persisted first.
   */
  static async commitAll(images: FileTargetImage[]): Promise<void> {
    const renames = images.map((image) => ({ from: image.requireTemp(), to: image.outPath }));
    for (const image of images) image.closeStore();
    // Until the manifest is durable nothing is decided: a failure keeps the temps, as for one image.
    const manifest = await writeCommitManifest(renames);
    for (const image of images) {
      // From here the temps belong to the manifest: a failure must not discard or move one.
      image.tempPath = undefined;
      image.committingVia = manifest;
    }
    await applyCommitManifest(manifest, renames);
    for (const image of images) image.committingVia = undefined;
  }

  discard(): void {
    this.closeStore();
    if (this.tempPath) {
      try { unlinkSync(this.tempPath); } catch { /* already gone */ }
      this.tempPath = undefined;
    }
  }

  async keepInDoubt(): Promise<string> {
    // A commit of several files that is decided but not done: a roll-forward completes it.
    if (this.committingVia) return `${this.outPath} once the commit manifest ${this.committingVia} is rolled forward (pagewire receive does it at start)`;
    // Already renamed over --out: the failure came after the rename itself.
    if (!this.tempPath) return this.outPath;
    // READY came before the last round was durable; an operator may start a workload from this image.
    await this.store?.sync();
    this.closeStore();
    // Named by migration id, so an earlier in-doubt image is never overwritten.
    const kept = `${this.outPath}.pagewire-in-doubt-${this.migrationId}`;
    await rename(this.tempPath, kept);
    this.tempPath = undefined;
    try {
      await fsyncDirectory(dirname(this.outPath));
    } catch {
      // The image is at `kept` either way; what matters to the operator is where to find it.
    }
    return kept;
  }

  private seedPath(): string {
    return join(dirname(this.outPath), `.${basename(this.outPath)}.pagewire-seed-${randomBytes(8).toString('hex')}.tmp`);
  }

  /**
   * Removes a seed restored ahead (prepareSeed) that no offer took. discard() keeps it, for the next
   * offer after a refused one; whoever called prepareSeed() calls this once it serves no more.
   */
  releaseSeed(): void {
    this.discardPrepared();
  }

  private discardPrepared(): void {
    if (!this.prepared) return;
    try { unlinkSync(this.prepared.path); } catch { /* already gone */ }
    this.prepared = undefined;
  }

  private closeStore(): void {
    this.store?.close();
    this.store = undefined;
  }

  private requireTemp(): string {
    if (!this.tempPath) throw new StorageError('no image was opened');
    return this.tempPath;
  }
}

/** A seed's region restored into a file of its own, with its page hashes and the seed's shape. */
interface RestoredSeed {
  path: string;
  region: number;
  hashes: BigUint64Array;
  shapes: Array<{ byteLength: number; pageSize: number }>;
}

/** Restores region `region` of the snapshot into a new file at path, every page verified. */
async function restoreSeed(snapshot: string, region: number, path: string): Promise<RestoredSeed> {
  const chain = SnapshotChain.open(snapshot);
  try {
    const shapes = chain.top.header.regions.map(({ byteLength, pageSize }) => ({ byteLength, pageSize }));
    if (region >= shapes.length) return { path, region, hashes: new BigUint64Array(0), shapes };
    // As strict as `pagewire restore`: damage anywhere in the chain refuses it, not only in the pages used.
    checkStrayData(chain);
    checkShadowedPages(chain);
    await restoreRegionInto(chain, region, path);
    return { path, region, hashes: chain.top.hashes[region]!, shapes };
  } finally {
    chain.close();
  }
}

/** Refuses an offer the seed does not fit (its restored file, if any, is removed). */
function checkSeedShape(snapshot: string, seed: RestoredSeed, offer: RegionOffer): void {
  const region = seed.shapes[offer.region];
  if (seed.shapes.length === offer.regions && region && region.byteLength === offer.regionSize && region.pageSize === offer.pageSize) return;
  try { unlinkSync(seed.path); } catch { /* never made: the region is not in the seed */ }
  throw new CapacityError(`the seed ${snapshot} holds ${seed.shapes.map((r) => `${r.byteLength} bytes in pages of ${r.pageSize}`).join(', ')}; ` +
    `the source offers ${offer.regions} region(s), region ${offer.region} of ${offer.regionSize} bytes in pages of ${offer.pageSize}`);
}

export interface MemoryTargetImageOptions {
  /**
   * Whether the region holds only zero bytes, so that the source may leave zero pages out of round 1.
   * Left out, open() finds out by reading the region (natively, stopping at the first page that is not
   * zero): skipping is then as fast as promising it and never wrong. `true` skips that read, and must
   * be true: a page the source leaves out would keep its old bytes here, and the region digest, which
   * counts it as zero, would not notice. `false` has every page sent.
   */
  zeroed?: boolean;
}

/** Bytes of the region open() checks for zeros between two turns of the event loop (whole pages of any size). */
const ZERO_CHECK_BYTES = 64 * 1024 * 1024;

/** The embedder's own memory as the target. It is written in place: on failure it holds a partial copy. */
export class MemoryTargetImage implements TargetImage {
  private zeroedRegion: boolean;

  constructor(private readonly region: MemoryRegion, private readonly options: MemoryTargetImageOptions = {}) {
    checkObject('options', options);
    checkOptionalBoolean('options.zeroed', options.zeroed);
    this.zeroedRegion = options.zeroed ?? false;
  }

  /** As given, or, when left out, what open() found. */
  get zeroed(): boolean {
    return this.zeroedRegion;
  }

  async open(offer: RegionOffer): Promise<PageStore> {
    const { region } = this;
    if (offer.regionSize !== region.byteLength || offer.pageSize !== region.pageSize) {
      throw new CapacityError(
        `source offers ${offer.regionSize} bytes in pages of ${offer.pageSize}; this target holds ` +
        `${region.byteLength} bytes in pages of ${region.pageSize}`);
    }
    if (this.options.zeroed === undefined) this.zeroedRegion = await allZero(region);
    return new RegionPageStore(region);
  }

  noteWritten(): void {}
  persist(): void {}
  commit(): void {}
  discard(): void {}
  keepInDoubt(): string {
    return 'the target region in memory';
  }
}

/** Whether every byte of the region is zero; yields to the event loop between chunks of a large region. */
async function allZero(region: MemoryRegion): Promise<boolean> {
  const { pageSize } = region;
  let first = true;
  for (const window of region.windows(ZERO_CHECK_BYTES)) {
    if (!first) await setImmediatePromise();
    first = false;
    if (binding().zeroPageCount(window, pageSize) !== window.length / pageSize) return false;
  }
  return true;
}


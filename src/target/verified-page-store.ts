// The storage an embedder writes for a target: pages that pagewire has already decoded and verified,
// by index, in batches. StoreTargetImage (store-target-image.ts) adapts it to the target.
import type { MemoryRegion } from '../memory/region.js';
import type { RegionOffer } from './target-image.js';

/**
 * Where a target keeps the pages it receives, at the level of page bytes: pagewire decodes every wire
 * record (ZERO, RAW, DELTA, DUP, LZ4), checks its xxHash64, and hands the store only pages that passed
 * (docs/PROTOCOL.md section 4, "Verify-before-write"). A record whose check fails reaches the store
 * never; pages verified before it in the same batch are written, and the migration then fails.
 *
 * The store is asked to read pages back, because a DELTA record is a difference against the page as the
 * target holds it, and a DUP record copies another page the target holds: which pages those will be is
 * the source's choice (its page cache), so pagewire could avoid asking only by keeping a second copy of
 * the whole image. Reads are batched as writes are, one call per batch of records, and only for pages
 * a batch reads before writing. A store that returns wrong bytes cannot corrupt the image: the page built
 * from them fails its xxHash64 check, and the migration fails with PW_ERR_CHECKSUM.
 *
 * Calls for one stream come one at a time, in order, each after the previous one settled. With parallel
 * streams (`streams` on the source), calls for different streams may overlap, but they never touch the
 * same page. Whatever a call throws (or rejects with) fails the migration with a StorageError
 * (PW_ERR_STORAGE) whose `cause` it is.
 */
export interface VerifiedPageStore {
  /**
   * True when every page reads back as zeros until written (a fresh store): the source may then skip
   * zero pages in its first round.
   */
  readonly zeroed: boolean;
  /**
   * Copies the current contents of page `indices[i]` to `into.subarray(i * pageSize, (i + 1) * pageSize)`
   * for every i. `into` is reused once the call settles.
   */
  readPages(indices: Uint32Array, into: Uint8Array): Promise<void> | void;
  /**
   * Stores verified pages: page `indices[i]` becomes `pages.subarray(i * pageSize, (i + 1) * pageSize)`.
   * Each index occurs once per call. Both buffers are reused once the call settles: copy what you keep.
   */
  writePages(indices: Uint32Array, pages: Uint8Array): Promise<void> | void;
  /**
   * Makes what was written durable, not yet visible, at the end of each pre-copy round (in the
   * background, one call at a time, while the next round arrives) and on GO before commit().
   */
  persist?(): Promise<void> | void;
  /** Makes the image that persist() made durable the committed one, atomically. Called once, on GO. */
  commit?(): Promise<void> | void;
  /** Drops what was received: the migration failed before the switch-over, and the source runs on. */
  discard?(): void;
  /**
   * READY was sent but GO never came, so the source may have handed over: keep the verified image aside
   * for an operator, and say where it is.
   */
  keepInDoubt?(): Promise<string> | string;
}

/** A region in memory the target writes in place (no staging, no read-backs), as MemoryTargetImage does. */
export interface RegionAllocation {
  region: MemoryRegion;
  /** True when the region is all zeros, so the source may skip zero pages in its first round. */
  zeroed: boolean;
}

/**
 * Sizes or allocates the target's storage from the source's offer (`regionSize` bytes in pages of
 * `pageSize`), before anything of the migration is accepted. Throw CapacityError (PW_ERR_CAPACITY) to
 * refuse; anything else thrown is refused as a CapacityError with it as `cause`. A region's size and page
 * size must be the offer's.
 */
export type AllocateTarget = (offer: RegionOffer) =>
  VerifiedPageStore | RegionAllocation | Promise<VerifiedPageStore | RegionAllocation>;

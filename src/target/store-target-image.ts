// A target image from an embedder's allocation hook: its own VerifiedPageStore, or a region in memory
// sized from the source's offer.
import { CapacityError, PagewireError } from '../errors.js';
import type { PageStore } from '../codec/page-store.js';
import { RegionPageStore } from './page-stores.js';
import type { RegionOffer, TargetImage } from './target-image.js';
import { StagedPageStore } from './staged-page-store.js';
import { messageOf, storeCall } from './store-call.js';
import type { AllocateTarget, RegionAllocation, VerifiedPageStore } from './verified-page-store.js';

/**
 * Calls `allocate` with each source's offer and keeps the pages there: a VerifiedPageStore receives
 * verified pages by index, in batches (decoded and checked by the same kernel as every target), and a
 * RegionAllocation is written in place, as MemoryTargetImage does. persist, commit, discard and
 * keepInDoubt go to the store, where it has them.
 */
export class StoreTargetImage implements TargetImage {
  private store: VerifiedPageStore | undefined;
  private allocated: RegionAllocation | undefined;

  constructor(private readonly allocate: AllocateTarget) {}

  get zeroed(): boolean {
    return (this.store ?? this.allocated)?.zeroed ?? false;
  }

  async open(offer: RegionOffer): Promise<PageStore> {
    let storage: VerifiedPageStore | RegionAllocation;
    try {
      storage = await this.allocate(offer);
    } catch (cause) {
      if (cause instanceof PagewireError) throw cause;
      throw new CapacityError(`the target's allocate hook refused ${offer.regionSize} bytes in pages of ${offer.pageSize}: ` +
        `${messageOf(cause)}`, { cause });
    }
    if ('region' in storage) {
      const { region } = storage;
      if (region.byteLength !== offer.regionSize || region.pageSize !== offer.pageSize) {
        throw new CapacityError(`source offers ${offer.regionSize} bytes in pages of ${offer.pageSize}; the allocated ` +
          `region holds ${region.byteLength} bytes in pages of ${region.pageSize}`);
      }
      this.allocated = storage;
      return new RegionPageStore(region);
    }
    this.store = storage;
    return new StagedPageStore(storage, offer.pageSize, offer.regionSize / offer.pageSize);
  }

  noteWritten(): void {}

  async persist(): Promise<void> {
    const { store } = this;
    if (store?.persist) await storeCall('persist the image', () => store.persist!());
  }

  async commit(): Promise<void> {
    const { store } = this;
    if (store?.commit) await storeCall('commit the image', () => store.commit!());
  }

  discard(): void {
    const store = this.store;
    this.store = undefined;
    this.allocated = undefined;
    try {
      store?.discard?.();
    } catch (error) {
      // discard() runs while a failure is being reported, which must not be replaced by this one.
      process.emitWarning(`the page store failed to discard the image: ${messageOf(error)}`, { code: 'PAGEWIRE_DISCARD_FAILED' });
    }
  }

  async keepInDoubt(): Promise<string> {
    const { store } = this;
    if (!store) return this.allocated ? 'the target region in memory' : 'nowhere: nothing was allocated';
    if (!store.keepInDoubt) return 'the embedder\'s page store, as written';
    return await storeCall('keep the image aside', () => store.keepInDoubt!());
  }
}

// A migration's regions on the target (docs/PROTOCOL.md, "Several regions"): each region's image, the
// store it opened and the hashes of the pages it holds; the images are made durable, committed and
// discarded together, so the switch-over treats them as one.
import { CapacityError } from '../errors.js';
import { migrationDigest, newPageHashes, regionDigest } from '../codec/page-hashes.js';
import type { PageStore } from '../codec/page-store.js';
import type { MigrationTargetOptions } from '../migration/target.js';
import type { Hello, RegionShape } from '../wire/messages.js';
import { FileTargetImage, type TargetImage } from './target-image.js';

/** Every region a HELLO offers, region 0 first. */
export function regionShapes(hello: Hello): RegionShape[] {
  return [{ pageSize: hello.pageSize, regionSize: hello.regionSize }, ...hello.extraRegions];
}

/** A region's verified image, as the prepare hook sees it. */
export interface PreparedRegion {
  region: number;
  image: TargetImage;
  /** The file it is in (its workingPath), renamed into place on commit; undefined for an image that is no file. */
  path: string | undefined;
}

export interface TargetRegion {
  image: TargetImage;
  store: PageStore;
  /** The xxHash64 of each page the store holds: what FINAL is checked against, and what a resume's HELD reports. */
  heldHashes: BigUint64Array;
}

export class RegionImages {
  private constructor(readonly regions: TargetRegion[]) {}

  /**
   * Makes and opens each region's image, in region order. Refuses (throws) when one cannot be opened,
   * after discarding every image made so far, which keeps its previous state.
   */
  static async open(given: MigrationTargetOptions['image'], hello: Hello): Promise<RegionImages> {
    const shapes = regionShapes(hello);
    const opened: TargetImage[] = [];
    const regions: TargetRegion[] = [];
    try {
      if (typeof given !== 'function' && shapes.length > 1) {
        throw new CapacityError(`the source offers ${shapes.length} regions; this target takes one region: pass image as a ` +
          `function of the offer to take ${shapes.length}`);
      }
      for (const [region, shape] of shapes.entries()) {
        const offer = { ...shape, migrationId: hello.migrationId.toString('hex'), region, regions: shapes.length };
        const image = typeof given === 'function' ? await given(offer) : given;
        opened.push(image);
        const store = await image.open(offer);
        regions.push({ image, store, heldHashes: image.seedHashes ?? newPageHashes(store.pageCount, store.pageSize) });
      }
    } catch (error) {
      for (const image of opened) image.discard();
      throw error;
    }
    return new RegionImages(regions);
  }

  /** True when every region starts all zeros (WELCOME's one TARGET_ZEROED flag covers them all). */
  get zeroed(): boolean {
    return this.regions.every((r) => r.image.zeroed);
  }

  /**
   * True when the images start from a seed that HELD can describe: some region is seeded, and every
   * other one starts all zeros (as its zero pages' hashes in HELD say).
   */
  get seeded(): boolean {
    return this.regions.some((r) => r.image.seedHashes) && this.regions.every((r) => r.image.seedHashes || r.image.zeroed);
  }

  /** FINAL's digest over the pages held (one region: its own region digest). */
  digest(): bigint {
    return migrationDigest(this.regions.map((r) => regionDigest(r.heldHashes)));
  }

  async persist(): Promise<void> {
    await Promise.all(this.regions.map((r) => r.image.persist()));
  }

  /**
   * Commits every image. Files (FileTargetImage) commit as one through a manifest that survives a crash;
   * an embedder's images are committed in region order.
   */
  async commit(): Promise<void> {
    const images = this.regions.map((r) => r.image);
    if (images.length > 1 && images.every((image) => image instanceof FileTargetImage)) {
      await FileTargetImage.commitAll(images as FileTargetImage[]);
      return;
    }
    for (const image of images) await image.commit();
  }

  /** What the prepare hook is handed of each region, in region order. */
  handover(): PreparedRegion[] {
    return this.regions.map(({ image }, region) => ({ region, image, path: image.workingPath }));
  }

  discard(): void {
    for (const { image } of this.regions) image.discard();
  }

  /** Keeps every verified image aside; says where each is (or why it is nowhere), in region order. */
  async keepInDoubt(): Promise<string> {
    const kept = await Promise.all(this.regions.map(async ({ image }) => {
      try { return await image.keepInDoubt(); } catch (keepError) { return `nowhere (${(keepError as Error).message})`; }
    }));
    return kept.join(', ');
  }
}

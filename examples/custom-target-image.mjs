// An embedder's own target storage: a double-buffered image in memory, behind StoreTargetImage. Readers
// keep using the committed image (`live`) for the whole migration; verified pages land in a staging
// buffer, and commit() makes it the live one by swapping a reference, so readers see the old image or
// the new one, never a mix. A source that offers more than the image accepts is refused before any page
// moves.
//
//   node examples/custom-target-image.mjs
import { CapacityError, MemoryRegion, MigrationSource, MigrationTarget, StoreTargetImage } from 'pagewire';

/** What the application reads: one committed image at a time. */
class Served {
  /** @param {Uint8Array} live */
  constructor(live) { this.live = live; }
  /** A verified image whose hand-over was left in doubt (READY sent, GO never came), for an operator. */
  inDoubt;
}

/**
 * pagewire decodes every record and checks its xxHash64 before this store sees a page: it only keeps
 * page bytes by index.
 * @implements {import('pagewire').VerifiedPageStore}
 */
class DoubleBufferedStore {
  /** A fresh staging buffer reads as zeros, so the source may leave zero pages out of round 1. */
  zeroed = true;
  #served;
  #staging;
  #pageSize;

  constructor(served, offer) {
    this.#served = served;
    this.#staging = new Uint8Array(offer.regionSize);
    this.#pageSize = offer.pageSize;
  }

  // DELTA and DUP records build on pages the target holds: pagewire reads them back in batches.
  readPages(indices, into) {
    const size = this.#pageSize;
    indices.forEach((page, i) => into.set(this.#staging.subarray(page * size, (page + 1) * size), i * size));
  }

  // Verified pages, by index. Both buffers are reused once this returns: copy what we keep.
  writePages(indices, pages) {
    const size = this.#pageSize;
    indices.forEach((page, i) => this.#staging.set(pages.subarray(i * size, (i + 1) * size), page * size));
  }

  // After each round, and before commit(): make what arrived durable, not yet visible. Memory is as
  // durable as it gets; a store on disk would fsync here.
  persist() {}

  // On GO: the received image becomes the committed one, atomically.
  commit() {
    this.#served.live = this.#staging;
  }

  // A failure before the switch-over: drop what arrived; `live` was never touched.
  discard() {
    this.#staging = undefined;
  }

  // READY was sent but GO never came: the source may or may not have resumed. Keep the image for an
  // operator to decide, and say where it is.
  keepInDoubt() {
    this.#served.inDoubt = this.#staging;
    return 'Served.inDoubt';
  }
}

const SIZE = 4 * 1024 * 1024;
const oldImage = new Uint8Array(SIZE).fill(0xaa);
const served = new Served(oldImage);
const image = new StoreTargetImage((offer) => {
  // Called with each source's offer, before anything is accepted. Refusing here fails that source with
  // PW_ERR_PEER (remoteCode PW_ERR_CAPACITY), and the target keeps listening for another.
  if (offer.regionSize > SIZE) throw new CapacityError(`${offer.regionSize} bytes offered, this image holds at most ${SIZE}`);
  return new DoubleBufferedStore(served, offer);
});
const target = await MigrationTarget.listen({ host: '127.0.0.1', port: 0, image });
const { port } = target.address;
const hooks = { pause: () => {}, resume: () => {} };

// A region twice as large as the image accepts: refused at the handshake.
const tooLarge = new MigrationSource({ region: MemoryRegion.fromMemory(new SharedArrayBuffer(2 * SIZE)), host: '127.0.0.1', port, hooks });
const refusal = await tooLarge.run().then(() => undefined, (error) => error);
if (refusal?.code !== 'PW_ERR_PEER' || refusal.remoteCode !== 'PW_ERR_CAPACITY') {
  throw new Error(`expected a refusal with remoteCode PW_ERR_CAPACITY, got ${refusal}`);
}

// The same target, still listening, takes a region that fits.
const memory = new SharedArrayBuffer(SIZE);
const bytes = new Uint8Array(memory);
for (let i = 0; i < SIZE; i += 64) bytes[i] = (i >>> 12) & 0xff; // a byte per 64, varying by page
let liveDuringMigration = true;
target.on('round', () => { liveDuringMigration &&= served.live === oldImage && oldImage.every((b) => b === 0xaa); });
const source = new MigrationSource({ region: MemoryRegion.fromMemory(memory), host: '127.0.0.1', port, hooks });
const [summary] = await Promise.all([source.run(), target.result]);

if (!liveDuringMigration) throw new Error('the live image changed before the commit');
if (!Buffer.from(served.live).equals(Buffer.from(memory))) throw new Error('the committed image differs from the source');
console.log(`custom-target-image: refused an oversized source (${refusal.remoteCode}), then committed ` +
  `${SIZE >> 20} MiB by swapping buffers after ${summary.rounds} rounds; target identical`);

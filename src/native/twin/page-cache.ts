// The source's page cache (docs/PROTOCOL.md section 4, "Encoder"): the bytes the target holds for
// recently sent pages, the bases of DELTA records and the sources of DUP records. The state and every
// step are those of the spec, which native/codec.cc follows too: the same calls must give the same
// batches byte for byte.
import { bytesEqual } from './page-bytes.js';

/** An empty entry of slotOf and dupIndex, and the page of an empty slot. */
const NONE = 0xffffffff;

export class PageCache {
  /** C = min(pageCount, floor(cacheBytes / pageSize)); 0 turns DELTA and DUP off. */
  readonly slotCount: number;
  private readonly pageSize: number;
  /** Slot s holds bytes [s * pageSize, (s + 1) * pageSize). */
  private readonly slotBytes: Uint8Array;
  private readonly slotPage: Uint32Array;
  private readonly slotHash: BigUint64Array;
  private readonly slotReferenced: Uint8Array;
  /** Per page: the slot holding what the target holds for it, or NONE. */
  private readonly slotOf: Uint32Array;
  /** Direct-mapped and lossy, indexed by the hash's low bits: a later entry overwrites. */
  private readonly dupIndex: Uint32Array;
  private readonly dupMask: bigint;
  /** The CLOCK hand. */
  private hand = 0;

  constructor(pageSize: number, pageCount: number, cacheBytes: number) {
    this.pageSize = pageSize;
    this.slotCount = Math.min(pageCount, Math.floor(cacheBytes / pageSize));
    const slots = this.slotCount;
    this.slotBytes = new Uint8Array(slots * pageSize);
    this.slotPage = new Uint32Array(slots).fill(NONE);
    this.slotHash = new BigUint64Array(slots);
    this.slotReferenced = new Uint8Array(slots);
    this.slotOf = new Uint32Array(slots > 0 ? pageCount : 0).fill(NONE);
    const dupSize = slots > 0 ? powerOfTwoAtLeast(2 * slots) : 0;
    this.dupIndex = new Uint32Array(dupSize).fill(NONE);
    this.dupMask = BigInt(Math.max(dupSize - 1, 0));
  }

  get enabled(): boolean {
    return this.slotCount > 0;
  }

  /** The bytes the target holds for page (marking its slot referenced), or undefined when not cached. */
  deltaBase(page: number): Uint8Array | undefined {
    if (!this.enabled) return undefined;
    const slot = this.slotOf[page];
    if (slot === NONE) return undefined;
    this.slotReferenced[slot] = 1;
    return this.bytesOf(slot);
  }

  /**
   * A page whose cached bytes are exactly `bytes` (hash `hash`), marking its slot referenced; or -1.
   * The bytes are compared, not only the hashes: a collision must never make the target copy the wrong page.
   */
  duplicateOf(bytes: Uint8Array, hash: bigint): number {
    if (!this.enabled) return -1;
    const slot = this.dupIndex[this.dupEntry(hash)];
    if (slot === NONE || this.slotPage[slot] === NONE || this.slotHash[slot] !== hash ||
      !bytesEqual(this.bytesOf(slot), bytes)) {
      return -1;
    }
    this.slotReferenced[slot] = 1;
    return this.slotPage[slot];
  }

  /** Forgets page (it became zero: the target holds zeros, which the cache does not keep). */
  drop(page: number): void {
    if (!this.enabled) return;
    const slot = this.slotOf[page];
    if (slot === NONE) return;
    this.slotPage[slot] = NONE;
    this.slotReferenced[slot] = 0;
    this.slotOf[page] = NONE;
  }

  /**
   * Records bytes (hash `hash`) as what the target holds for page once this batch is applied. In bulk
   * mode a page not cached yet enters only an empty slot under the hand: nothing is evicted.
   */
  remember(page: number, bytes: Uint8Array, hash: bigint, bulk: boolean): void {
    if (!this.enabled) return;
    let slot = this.slotOf[page];
    if (bulk && slot === NONE && this.slotPage[this.hand] !== NONE) return;
    if (slot === NONE) {
      slot = this.allocate();
      this.slotPage[slot] = page;
      this.slotReferenced[slot] = 0;
      this.slotOf[page] = slot;
    }
    this.slotBytes.set(bytes, slot * this.pageSize);
    this.slotHash[slot] = hash;
    this.dupIndex[this.dupEntry(hash)] = slot;
  }

  /**
   * CLOCK: new pages enter unreferenced, so that one pass over a large region does not flush the pages
   * that are being re-sent; a slot used as a base or source since the hand last passed gets one more turn.
   */
  private allocate(): number {
    for (;;) {
      const slot = this.hand;
      this.hand = (this.hand + 1) % this.slotCount;
      const page = this.slotPage[slot];
      if (page === NONE) return slot;
      if (this.slotReferenced[slot]) {
        this.slotReferenced[slot] = 0;
        continue;
      }
      this.slotOf[page] = NONE;
      this.slotPage[slot] = NONE;
      return slot;
    }
  }

  private bytesOf(slot: number): Uint8Array {
    return this.slotBytes.subarray(slot * this.pageSize, (slot + 1) * this.pageSize);
  }

  private dupEntry(hash: bigint): number {
    return Number(hash & this.dupMask);
  }
}

function powerOfTwoAtLeast(n: number): number {
  let power = 1;
  while (power < n) power *= 2;
  return power;
}

// StoreTargetImage: an embedder's VerifiedPageStore receives exactly the pages, hashes and statuses that
// the in-place decoder produces, batch for batch, on genuine and hostile batches alike.
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import {
  ApplyStatus, CapacityError, MemoryRegion, PageBatchDecoder, StoreTargetImage, type PageStore, type VerifiedPageStore,
} from '../dist/src/index.js';
import { binding } from '../dist/src/native/engine.js';
import { randomWorkload } from './helpers.js';

const OFFER = { migrationId: '00' };
/** Batches applied as one stream of several (test/vectors/generate.mjs), with the addon's results. */
const ownershipVectors = (JSON.parse(readFileSync(new URL('./vectors/codec.json', import.meta.url), 'utf8')) as {
  ownership: { pageSize: number; pageCount: number; cases: { name: string; stream: number; streams: number; records: string; recordCount: number; result: number[] }[] };
}).ownership;

/** A VerifiedPageStore over a Map, counting its calls and checking their shape. */
class MapStore implements VerifiedPageStore {
  readonly zeroed = true;
  readonly pages: Map<number, Uint8Array>;
  reads = 0;
  writes = 0;
  constructor(readonly pageSize: number, pages: Map<number, Uint8Array> = new Map()) {
    this.pages = new Map([...pages].map(([i, page]) => [i, page.slice()]));
  }
  readPages(indices: Uint32Array, into: Uint8Array): void {
    this.reads++;
    expect(into.length).toBe(indices.length * this.pageSize);
    indices.forEach((index, i) => into.set(this.pages.get(index) ?? new Uint8Array(this.pageSize), i * this.pageSize));
  }
  writePages(indices: Uint32Array, pages: Uint8Array): void {
    this.writes++;
    expect(pages.length).toBe(indices.length * this.pageSize);
    expect(new Set(indices).size).toBe(indices.length);
    indices.forEach((index, i) => this.pages.set(index, pages.slice(i * this.pageSize, (i + 1) * this.pageSize)));
  }
  /** The image this store holds, as one buffer. */
  image(pageCount: number): Uint8Array {
    const image = new Uint8Array(pageCount * this.pageSize);
    for (const [i, page] of this.pages) image.set(page, i * this.pageSize);
    return image;
  }
}

/** Both targets of one comparison: memory written in place by applyPages, and a MapStore through StoreTargetImage. */
class Targets {
  readonly memory: Uint8Array;
  readonly memoryHeld: BigUint64Array;
  readonly storeHeld: BigUint64Array;
  readonly store: MapStore;
  private staged: PageStore | undefined;

  constructor(readonly pageSize: number, readonly pageCount: number, from?: Targets) {
    this.memory = from ? from.memory.slice() : new Uint8Array(pageSize * pageCount);
    this.memoryHeld = from ? from.memoryHeld.slice() : new BigUint64Array(pageCount);
    this.storeHeld = from ? from.storeHeld.slice() : new BigUint64Array(pageCount);
    this.store = new MapStore(pageSize, from?.store.pages);
  }

  async apply(records: Uint8Array, recordCount: number, stream = 0, streams = 1) {
    this.staged ??= await new StoreTargetImage(() => this.store).open({ ...OFFER, regionSize: this.memory.length, pageSize: this.pageSize });
    const inPlace = await binding().applyPages(this.memory, this.pageSize, this.pageCount, records.slice(), recordCount, this.memoryHeld,
      stream, streams);
    const reads = this.store.reads;
    const writes = this.store.writes;
    const staged = await this.staged.applyRecords(records, recordCount, this.storeHeld, stream, streams);
    expect(staged).toEqual(inPlace);
    expect(Buffer.from(this.store.image(this.pageCount)).equals(this.memory)).toBe(true);
    expect(this.storeHeld).toEqual(this.memoryHeld);
    // One call of each at most per batch: the store sees batches, not records.
    expect(this.store.reads - reads).toBeLessThanOrEqual(1);
    expect(this.store.writes - writes).toBeLessThanOrEqual(1);
    return inPlace;
  }
}

interface Record { at: number; index: number; encoding: number; payloadLength: number }

function recordsOf(records: Uint8Array, count: number): Record[] {
  const view = new DataView(records.buffer, records.byteOffset, records.byteLength);
  const out: Record[] = [];
  for (let i = 0, at = 0; i < count; i++) {
    const payloadLength = view.getUint32(at + 8, true);
    out.push({ at, index: view.getUint32(at, true), encoding: view.getUint8(at + 4), payloadLength });
    at += 20 + payloadLength;
  }
  return out;
}

/** Hostile copies of a genuine batch: each breaks one record (or the end) in a way the decoder must refuse. */
function hostileVariants(records: Uint8Array, count: number, pageCount: number, pick: (n: number) => number) {
  const list = recordsOf(records, count);
  const some = (filter: (r: Record) => boolean) => {
    const matching = list.filter(filter);
    return matching.length > 0 ? matching[pick(matching.length)] : undefined;
  };
  const variants: [string, Uint8Array][] = [];
  const edit = (name: string, record: Record | undefined, change: (bytes: Uint8Array, view: DataView, r: Record) => void) => {
    if (!record) return;
    const bytes = records.slice();
    change(bytes, new DataView(bytes.buffer), record);
    variants.push([name, bytes]);
  };
  edit('wrong hash', some(() => true), (b, _, r) => { b[r.at + 12]! ^= 1; });
  edit('index out of range', some(() => true), (_, v, r) => v.setUint32(r.at, pageCount + 7, true));
  edit('bad encoding', some(() => true), (b, _, r) => { b[r.at + 4] = 9; });
  edit('bad length', some((r) => r.encoding === 0), (_, v, r) => v.setUint32(r.at + 8, 1, true));
  edit('DUP from out of range', some((r) => r.encoding === 3), (_, v, r) => v.setUint32(r.at + 20, pageCount, true));
  edit('DUP of another page', some((r) => r.encoding === 3), (_, v, r) => v.setUint32(r.at + 20, (v.getUint32(r.at + 20, true) + 1) % pageCount, true));
  edit('malformed DELTA', some((r) => r.encoding === 2 && r.payloadLength > 2), (b, _, r) => b.fill(0xff, r.at + 20, r.at + 20 + r.payloadLength));
  edit('DELTA on another page', some((r) => r.encoding === 2), (_, v, r) => v.setUint32(r.at, (r.index + 1) % pageCount, true));
  if (records.length > 1) variants.push(['truncated', records.slice(0, 1 + pick(records.length - 1))]);
  variants.push(['trailing bytes', Buffer.concat([records, Buffer.alloc(3)])]);
  return variants;
}

describe('StoreTargetImage with a VerifiedPageStore', () => {
  it('stores what the in-place decoder stores, for genuine batches and for every hostile variant of them', async () => {
    const seen = new Set<number>();
    const statuses = new Set<number>();
    for (const [pageSize, pageCount, cacheSlots, seed] of [[4096, 96, 32, 1], [512, 200, 50, 2], [1024, 80, 200, 4]] as const) {
      const work = randomWorkload(seed, pageSize, pageCount);
      const encoder = new (binding().PageEncoder)(pageSize, pageCount, cacheSlots * pageSize);
      const sent = new BigUint64Array(pageCount);
      const targets = new Targets(pageSize, pageCount);
      for (let p = 0; p < 4; p++) work.edit(p, 4);
      work.region.copyWithin(5 * pageSize, 0, pageSize);
      for (let round = 0; round < 12; round++) {
        for (let e = 0; e < 1 + work.rnd(40); e++) work.edit();
        const indices = round === 0 ? Uint32Array.from({ length: pageCount }, (_, i) => i) : work.someIndices();
        const out = new Uint8Array(indices.length * (pageSize + 20));
        encoder.bulk = round === 0;
        const [bytes, count] = encoder.encodeSync(new DataView(work.region.buffer), indices, round === 0, out, sent);
        const records = out.subarray(0, bytes);
        for (const r of recordsOf(records, count)) seen.add(r.encoding);
        for (const [name, hostile] of hostileVariants(records, count, pageCount, work.rnd)) {
          const [status] = await new Targets(pageSize, pageCount, targets).apply(hostile, count).catch((error: Error) => {
            throw new Error(`seed ${seed} round ${round}, ${name}: ${error.message}`);
          });
          statuses.add(status);
        }
        const [status] = await targets.apply(records, count);
        expect(status, `seed ${seed} round ${round}`).toBe(0);
        for (const p of indices) {
          expect(Buffer.from(targets.store.pages.get(p) ?? new Uint8Array(pageSize)).equals(work.region.subarray(p * pageSize, (p + 1) * pageSize))).toBe(true);
        }
      }
    }
    expect([...seen].sort()).toEqual([0, 1, 2, 3, 4]);
    // Every refusal the decoder has: truncated, index, encoding, length, checksum, trailing bytes, payload.
    expect([...statuses].sort()).toEqual([1, 2, 3, 4, 5, 6, 7]);
  });

  it('refuses a record of another stream\'s page, or a DUP of one, as the in-place decoder does (the shared ownership vectors)', async () => {
    const { pageSize, pageCount, cases } = ownershipVectors;
    for (const v of cases) {
      const targets = new Targets(pageSize, pageCount);
      const reads = targets.store.reads;
      expect(await targets.apply(Buffer.from(v.records, 'hex'), v.recordCount, v.stream, v.streams), v.name).toEqual(v.result);
      // A refused batch reaches the store not at all.
      if (v.result[0] === ApplyStatus.WrongStream) expect([targets.store.reads - reads, targets.store.pages.size], v.name).toEqual([0, 0]);
    }
    expect(cases.some((v) => v.result[0] === ApplyStatus.WrongStream)).toBe(true);
  });

  it('fails the batch with PW_ERR_STORAGE, the store\'s error as cause, when the store throws', async () => {
    const pageSize = 4096;
    const failure = new Error('disk full');
    const store: VerifiedPageStore = { zeroed: true, readPages: () => {}, writePages: () => Promise.reject(failure) };
    const pageStore = await new StoreTargetImage(() => store).open({ ...OFFER, regionSize: 4 * pageSize, pageSize });
    const page = new Uint8Array(pageSize).fill(7);
    const encoder = new (binding().PageEncoder)(pageSize, 4, 0);
    const out = new Uint8Array(4 * (pageSize + 20));
    const source = new Uint8Array(4 * pageSize);
    source.set(page, pageSize);
    const [bytes, count] = encoder.encodeSync(new DataView(source.buffer), Uint32Array.of(1), false, out, new BigUint64Array(4));
    const decoder = new PageBatchDecoder(pageStore);
    decoder.enqueue(out.subarray(0, bytes), count);
    await expect(decoder.settled()).rejects.toMatchObject({ code: 'PW_ERR_STORAGE', cause: failure, message: expect.stringMatching(/disk full/) });
  });

  it('sizes the target from the offer, and refuses with PW_ERR_CAPACITY what the allocate hook refuses', async () => {
    const offer = { ...OFFER, regionSize: 1 << 20, pageSize: 4096 };
    const offers: unknown[] = [];
    const image = new StoreTargetImage((o) => {
      offers.push(o);
      return { region: MemoryRegion.fromMemory(new SharedArrayBuffer(o.regionSize), { pageSize: o.pageSize }), zeroed: true };
    });
    const store = await image.open(offer);
    expect(offers).toEqual([offer]);
    expect([store.pageCount, store.pageSize, image.zeroed]).toEqual([256, 4096, true]);

    const thrown = new Error('no memory for that');
    await expect(new StoreTargetImage(() => { throw thrown; }).open(offer))
      .rejects.toMatchObject({ code: 'PW_ERR_CAPACITY', cause: thrown, message: expect.stringMatching(/no memory for that/) });
    const refusal = new CapacityError('too big');
    await expect(new StoreTargetImage(() => Promise.reject(refusal)).open(offer)).rejects.toBe(refusal);
    await expect(new StoreTargetImage(() => ({ region: MemoryRegion.fromMemory(new SharedArrayBuffer(1 << 19)), zeroed: true })).open(offer))
      .rejects.toMatchObject({ code: 'PW_ERR_CAPACITY', message: expect.stringMatching(/region holds 524288 bytes/) });
  });
});

// Applies wire records for a VerifiedPageStore with the same kernel as every other target (applyPages,
// native or twin): each batch is decoded and verified into a staging region that holds only the pages
// the batch touches, and the store receives the pages that passed, by index, in one call.
import { ApplyStatus, type ApplyResult } from '../native/binding.js';
import { binding } from '../native/engine.js';
import { firstRecordOffStream } from '../native/twin/stream-ownership.js';
import { DUP_PAYLOAD_BYTES, Encoding, RECORD_HEADER_BYTES } from '../codec/page-records.js';
import type { PageStore } from '../codec/page-store.js';
import { storeCall } from './store-call.js';
import type { VerifiedPageStore } from './verified-page-store.js';

/**
 * A batch rewritten for its staging region: every in-range page index (of a record, or of a DUP's
 * source) becomes a slot. Slots are numbered in order of first appearance as a record's page, so the
 * pages written by the first n applied records are slots [0, writtenSlots[n - 1]); DUP sources the
 * batch does not write come after them.
 */
interface StagedBatch {
  /** The records with slot numbers in place of page indices (a copy: the caller's buffer is the frame's). */
  records: Uint8Array;
  /** slot -> page index. */
  pages: Uint32Array;
  /** Distinct pages written by records 0..i (slots [0, writtenSlots[i])). */
  writtenSlots: Uint32Array;
  /** Slots whose current contents the kernel reads before the batch writes them (DELTA bases, DUP sources). */
  readBack: number[];
  /** Whether a Truncated status at the walk's end is a payload's (value: page index) or a header's (record number). */
  payloadTruncated: boolean;
}

export class StagedPageStore implements PageStore {
  constructor(private readonly store: VerifiedPageStore, readonly pageSize: number, readonly pageCount: number) {}

  async applyRecords(records: Uint8Array, recordCount: number, heldHashes: BigUint64Array, stream = 0,
    streams = 1): Promise<ApplyResult> {
    const { pageSize } = this;
    // The kernel sees slots, not pages, so it cannot tell whose a page is: the headers are checked here
    // first (staging walks them in JavaScript anyway), before anything is read or written.
    if (streams > 1) {
      const off = firstRecordOffStream(new DataView(records.buffer, records.byteOffset, records.byteLength), recordCount, stream, streams);
      if (off !== records.length) return [ApplyStatus.WrongStream, off, 0];
    }
    const batch = stageBatch(records, recordCount, this.pageCount);
    const slots = batch.pages.length;
    // Per call, not per store: the decoders of parallel streams share this store and apply concurrently.
    const staging = new Uint8Array(Math.max(1, slots) * pageSize);
    if (batch.readBack.length > 0) {
      const indices = Uint32Array.from(batch.readBack, (slot) => batch.pages[slot]!);
      const read = new Uint8Array(indices.length * pageSize);
      await storeCall('read pages', () => this.store.readPages(indices, read));
      batch.readBack.forEach((slot, i) => staging.set(read.subarray(i * pageSize, (i + 1) * pageSize), slot * pageSize));
    }
    const held = BigUint64Array.from(batch.pages, (page) => heldHashes[page]!);
    const [status, where, applied] = await binding().applyPages(staging, pageSize, slots, batch.records, recordCount, held);
    const written = applied > 0 ? batch.writtenSlots[applied - 1]! : 0;
    if (written > 0) {
      const pages = batch.pages.subarray(0, written);
      await storeCall('write pages', () => this.store.writePages(pages, staging.subarray(0, written * pageSize)));
      for (let slot = 0; slot < written; slot++) heldHashes[batch.pages[slot]!] = held[slot]!;
    }
    return [status, pageOf(batch, status, where), applied];
  }
}

/** The kernel reports slots; the caller expects page indices. Out-of-range indices were never slotted. */
function pageOf(batch: StagedBatch, status: ApplyStatus, where: number): number {
  switch (status) {
    case ApplyStatus.BadEncoding:
    case ApplyStatus.BadLength:
    case ApplyStatus.BadPayload:
    case ApplyStatus.ChecksumMismatch:
      return batch.pages[where]!;
    case ApplyStatus.Truncated:
      return batch.payloadTruncated ? batch.pages[where]! : where;
    default:
      return where;
  }
}

/**
 * Walks the record headers as far as they are intact, slotting every page index below pageCount. The
 * kernel still judges every record: an index left alone is out of range there too (slots < pageCount),
 * and it stops at the first bad record whatever this walk saw past it.
 */
function stageBatch(source: Uint8Array, recordCount: number, pageCount: number): StagedBatch {
  const records = source.slice();
  const view = new DataView(records.buffer, records.byteOffset, records.byteLength);
  const slotOf = new Map<number, number>();
  const pages: number[] = [];
  const slot = (page: number) => {
    let s = slotOf.get(page);
    if (s === undefined) {
      s = pages.length;
      slotOf.set(page, s);
      pages.push(page);
    }
    return s;
  };
  /** Per record walked: its page's slot (-1: out of range), and its read's page (-1: none). */
  const targets: number[] = [];
  const reads: number[] = [];
  const dupAt: number[] = [];
  let pos = 0;
  let payloadTruncated = false;
  for (let i = 0; i < recordCount && records.length - pos >= RECORD_HEADER_BYTES; i++) {
    const page = view.getUint32(pos, true);
    const encoding = view.getUint8(pos + 4);
    const payloadLength = view.getUint32(pos + 8, true);
    const payloadAt = pos + RECORD_HEADER_BYTES;
    targets.push(page < pageCount ? slot(page) : -1);
    if (page < pageCount) view.setUint32(pos, targets[i]!, true);
    if (records.length - payloadAt < payloadLength) {
      payloadTruncated = true;
      break;
    }
    let read = -1;
    if (encoding === Encoding.Delta && page < pageCount) read = page;
    if (encoding === Encoding.Dup && payloadLength === DUP_PAYLOAD_BYTES) {
      const from = view.getUint32(payloadAt, true);
      if (from < pageCount) {
        read = from;
        dupAt.push(payloadAt);
      }
    }
    reads.push(read);
    pos = payloadAt + payloadLength;
  }
  const writtenSlots = new Uint32Array(targets.length);
  let written = 0;
  targets.forEach((target, i) => {
    written = Math.max(written, target + 1);
    writtenSlots[i] = written;
  });
  // DUP sources slotted after every written page, so the written slots stay a prefix.
  for (const at of dupAt) view.setUint32(at, slot(view.getUint32(at, true)), true);
  // A page read before any record of the batch wrote it must come from the store.
  const defined = new Set<number>();
  const readBack = new Set<number>();
  reads.forEach((page, i) => {
    if (page >= 0 && !defined.has(page)) readBack.add(slotOf.get(page)!);
    if (targets[i]! >= 0) defined.add(pages[targets[i]!]!);
  });
  return { records, pages: Uint32Array.from(pages), writtenSlots, readBack: [...readBack], payloadTruncated };
}

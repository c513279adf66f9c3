// Hash tracking: the addon's changedPages and its twin against a reference built from hashPages, the
// HashTracker's pass split over pool threads, and that pass running as the addon's async work.
import { createHook } from 'node:async_hooks';
import { execFileSync } from 'node:child_process';
import { randomFillSync } from 'node:crypto';
import { closeSync, ftruncateSync, mkdtempSync, openSync, rmSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { HashTracker, MemoryRegion } from '../dist/src/index.js';
import { newPageHashes } from '../dist/src/codec/page-hashes.js';
import { loadAddon, type NativeBinding } from '../dist/src/native/binding.js';
import { twin } from '../dist/src/native/twin/index.js';

const addon = loadAddon();
const PAGE = 4096;

/** A region of random pages, sentHashes equal to its pages' hashes, and a small LCG for the edits. */
function hashedRegion(pageCount: number, seed: number) {
  const bytes = randomFillSync(new Uint8Array(pageCount * PAGE));
  const sentHashes = new BigUint64Array(pageCount);
  addon.hashPages(bytes, PAGE, 0, pageCount, sentHashes, 0);
  let state = seed >>> 0;
  const rnd = (n: number) => Math.floor(((state = (Math.imul(state, 1664525) + 1013904223) >>> 0) / 2 ** 32) * n);
  return { bytes, sentHashes, rnd };
}

function listed(pages: { batches(batchPages: number): Iterable<Uint32Array> }, batchPages: number): number[] {
  const all: number[] = [];
  for (const batch of pages.batches(batchPages)) all.push(...batch);
  return all;
}

describe.each([['addon', addon], ['twin', twin]] as [string, NativeBinding][])('%s changedPages', (_, engine) => {
  it('lists, ascending, exactly the pages whose hash differs from the one sent, in any split', async () => {
    const seed = 20260412;
    console.log(`changedPages seed ${seed}`);
    const pageCount = 777;
    const { bytes, sentHashes, rnd } = hashedRegion(pageCount, seed);
    const changed = new Set<number>();
    for (let i = 0; i < 120; i++) {
      const page = rnd(pageCount);
      bytes[page * PAGE + rnd(PAGE)]! ^= 1 + rnd(255);
      changed.add(page);
    }
    sentHashes[5] = 0n; // a page never sent
    changed.add(5);
    const expected = [...changed].sort((a, b) => a - b);
    for (let split = 0; split < 20; split++) {
      const cut = rnd(pageCount + 1);
      const out = new Uint32Array(pageCount);
      const head = await engine.changedPages(bytes, PAGE, 0, cut, sentHashes, out);
      const tail = await engine.changedPages(bytes, PAGE, cut, pageCount - cut, sentHashes, out.subarray(cut));
      expect([...out.subarray(0, head), ...out.subarray(cut, cut + tail)], `split at ${cut}`).toEqual(expected);
    }
  });

  it('agrees with hashPages at every page size and page count (pages hashed several at a time where the CPU allows)', async () => {
    for (const pageSize of [512, 4096, 65536]) {
      const bytes = randomFillSync(new Uint8Array(pageSize * 19));
      const sentHashes = new BigUint64Array(19);
      addon.hashPages(bytes, pageSize, 0, 19, sentHashes, 0);
      for (let count = 1; count <= 19; count++) {
        const out = new Uint32Array(count);
        expect(await engine.changedPages(bytes, pageSize, 0, count, sentHashes, out), `${count} pages of ${pageSize}`).toBe(0);
        // One byte of the last page changed: only that page.
        bytes[count * pageSize - 1]! ^= 0x80;
        expect(await engine.changedPages(bytes, pageSize, 0, count, sentHashes, out)).toBe(1);
        expect(out[0]).toBe(count - 1);
        bytes[count * pageSize - 1]! ^= 0x80;
      }
    }
  });

  it('checks its arguments before any work starts', () => {
    const { bytes, sentHashes } = hashedRegion(8, 1);
    expect(() => engine.changedPages(bytes, PAGE, 4, 5, sentHashes, new Uint32Array(8))).toThrow(/beyond the region's 8 pages/);
    expect(() => engine.changedPages(bytes, PAGE, 0, 8, sentHashes.subarray(0, 7), new Uint32Array(8))).toThrow(/sentHashes has 7 slots/);
    expect(() => engine.changedPages(bytes, PAGE, 0, 8, sentHashes, new Uint32Array(7))).toThrow(/out has 7 slots/);
    expect(() => engine.changedPages(bytes, PAGE, 0, 8, sentHashes, new Uint32Array(bytes.buffer, 0, 8))).toThrow(/must not overlap the pages/);
    expect(() => engine.changedPages(bytes, PAGE, 0, 4, sentHashes, new Uint32Array(sentHashes.buffer, 0, 8))).toThrow(/must not overlap sentHashes/);
    expect(() => engine.changedPages(bytes, PAGE, 0, 8, sentHashes, new Int32Array(8) as unknown as Uint32Array)).toThrow(/Uint32Array/);
  });
});

describe('HashTracker', () => {
  it('finds the changed pages of a region split over several pool calls, and nothing once they are sent', async () => {
    const seed = 77;
    console.log(`HashTracker seed ${seed}`);
    const pageCount = 4 * 2048 + 13; // above the smallest call, not a multiple of the split
    const { bytes, sentHashes, rnd } = hashedRegion(pageCount, seed);
    const tracker = new HashTracker(MemoryRegion.fromMemory(bytes, { pageSize: PAGE }), sentHashes);
    expect((await tracker.scan()).count).toBe(0);
    const changed = new Set([0, pageCount - 1, 2048, 2049, 4097]);
    while (changed.size < 300) changed.add(rnd(pageCount));
    for (const page of changed) bytes[page * PAGE + rnd(PAGE)]! ^= 0x5a;
    const scan = await tracker.scan();
    expect(scan.count).toBe(changed.size);
    expect(scan.durationMs).toBeGreaterThanOrEqual(0);
    expect(listed(scan.take(), 64)).toEqual([...changed].sort((a, b) => a - b));
    // Sending a page records its hash (the encoder does): once recorded, the page is clean again.
    addon.hashPages(bytes, PAGE, 0, pageCount, sentHashes, 0);
    expect((await tracker.scan()).count).toBe(0);
  });

  it('over a sparse file hashes its data only, and finds writes into holes and holes sent as non-zero pages', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'pagewire-sparse-tracker-'));
    try {
      const path = join(dir, 'disk.img');
      const pageCount = 64 * 1024; // 256 MiB, mostly holes
      const fd = openSync(path, 'wx');
      ftruncateSync(fd, pageCount * PAGE);
      // Data at pages 100..115 and 40000..40001, holes elsewhere.
      writeSync(fd, randomFillSync(Buffer.alloc(16 * PAGE)), 0, 16 * PAGE, 100 * PAGE);
      writeSync(fd, randomFillSync(Buffer.alloc(2 * PAGE)), 0, 2 * PAGE, 40_000 * PAGE);
      closeSync(fd);
      const region = MemoryRegion.mapFile(path);
      const sentHashes = newPageHashes(pageCount, PAGE);
      const tracker = new HashTracker(region, sentHashes);
      // Nothing sent yet: every data page differs from the zero page the hashes start as; no hole does.
      expect([...(await tracker.scan()).take().batches(1 << 20)].flatMap((b) => [...b]))
        .toEqual([...Array.from({ length: 16 }, (_, i) => 100 + i), 40_000, 40_001]);
      addon.hashPages(region.native, PAGE, 0, pageCount, sentHashes, 0);
      expect((await tracker.scan()).count).toBe(0);
      // A write into a hole (through the mapping) makes it data; a hole whose sent hash is not a zero
      // page's (data that was sent, then punched out) reads as zeros now: both changed.
      region.view(7 * PAGE, PAGE)[5] = 1;
      sentHashes[50_000] = sentHashes[100]!;
      const changed = [...(await tracker.scan()).take().batches(1 << 20)].flatMap((b) => [...b]);
      expect(changed).toEqual([7, 50_000]);
      region.close();
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('over a file found all data, asks for its holes no more, and still finds a page punched out since', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'pagewire-full-tracker-'));
    try {
      const path = join(dir, 'ram.img');
      const pageCount = 256;
      const fd = openSync(path, 'wx');
      writeSync(fd, randomFillSync(Buffer.alloc(pageCount * PAGE)));
      closeSync(fd);
      const region = MemoryRegion.mapFile(path);
      const sentHashes = newPageHashes(pageCount, PAGE);
      addon.hashPages(region.native, PAGE, 0, pageCount, sentHashes, 0);
      const tracker = new HashTracker(region, sentHashes);
      expect((await tracker.scan()).count).toBe(0);
      // Page 9 becomes a hole: it reads as zeros now, which its hash tells from what was sent.
      execFileSync('fallocate', ['--punch-hole', '--offset', String(9 * PAGE), '--length', String(PAGE), path]);
      region.view(200 * PAGE, PAGE)[0]! ^= 1;
      expect([...(await tracker.scan()).take().batches(1 << 20)].flatMap((b) => [...b])).toEqual([9, 200]);
      region.close();
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('hashes on the addon\'s pool threads, as async work, not on the JavaScript thread', async () => {
    const pageCount = 4 * 2048;
    const { bytes, sentHashes } = hashedRegion(pageCount, 3);
    const types: string[] = [];
    const hook = createHook({ init: (_id, type) => { types.push(type); } }).enable();
    try {
      await new HashTracker(MemoryRegion.fromMemory(bytes, { pageSize: PAGE }), sentHashes).scan();
    } finally {
      hook.disable();
    }
    expect(types.filter((type) => type === 'pagewire:changedPages').length).toBeGreaterThanOrEqual(1);
  });
});

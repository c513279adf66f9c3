import { Worker } from 'node:worker_threads';
import { describe, expect, it } from 'vitest';
import { DirtyBitmap } from '../dist/src/index.js';

function collect(bitmap: DirtyBitmap, batchPages = 64): number[] {
  const pages: number[] = [];
  const dirty = bitmap.sync();
  for (const batch of dirty.batches(batchPages)) pages.push(...batch);
  expect(pages.length).toBe(dirty.count);
  return pages;
}

describe('DirtyBitmap', () => {
  it('lists marked pages in order and clears them on sync', () => {
    const bitmap = new DirtyBitmap(1000);
    for (const p of [999, 0, 31, 32, 33, 63, 64, 500]) bitmap.mark(p);
    bitmap.mark(500);
    expect(bitmap.count()).toBe(8);
    expect(collect(bitmap)).toEqual([0, 31, 32, 33, 63, 64, 500, 999]);
    expect(bitmap.count()).toBe(0);
    expect(collect(bitmap)).toEqual([]);
  });

  it('scans a dense bitmap in batches smaller than the set', () => {
    const bitmap = new DirtyBitmap(100_000);
    bitmap.markRange(0, 100_000);
    const pages = collect(bitmap, 100);
    expect(pages.length).toBe(100_000);
    expect(pages.every((p, i) => p === i)).toBe(true);
  });

  it('rejects pages outside the bitmap', () => {
    const bitmap = new DirtyBitmap(10);
    expect(() => bitmap.mark(10)).toThrow(/outside/);
    expect(() => bitmap.mark(-1)).toThrow(/outside/);
    expect(() => new DirtyBitmap(0)).toThrow();
  });

  it('loses no mark made by worker threads while the owner syncs (fetch-and-clear)', async () => {
    const pageCount = 1 << 16;
    const bitmap = new DirtyBitmap(pageCount);
    const perWorker = 200_000;
    // Each worker marks pages in a fixed pseudo-random order and records how often it marked each one.
    const code = `
      const { workerData, parentPort } = require('node:worker_threads');
      const words = new Int32Array(workerData.buffer);
      const counts = new Uint32Array(workerData.counts);
      let s = workerData.seed;
      for (let i = 0; i < workerData.n; i++) {
        s = (Math.imul(s, 1103515245) + 12345) >>> 0;
        const page = s % workerData.pages;
        counts[page]++;
        Atomics.or(words, page >>> 5, 1 << (page & 31));
      }
      parentPort.postMessage('done');`;
    const seen = new Uint32Array(pageCount);
    const countsA = new SharedArrayBuffer(pageCount * 4);
    const countsB = new SharedArrayBuffer(pageCount * 4);
    const workers = [countsA, countsB].map((counts, i) => new Worker(code, {
      eval: true, workerData: { buffer: bitmap.buffer, counts, seed: i + 1, n: perWorker, pages: pageCount },
    }));
    const finished = workers.map((w) => new Promise((resolve) => w.once('message', resolve)));
    let done = false;
    void Promise.all(finished).then(() => { done = true; });
    while (!done) {
      for (const p of collect(bitmap, 4096)) seen[p] = 1;
      await new Promise((r) => setImmediate(r));
    }
    for (const p of collect(bitmap, 4096)) seen[p] = 1;
    await Promise.all(workers.map((w) => w.terminate()));
    const a = new Uint32Array(countsA);
    const b = new Uint32Array(countsB);
    let missing = 0;
    for (let p = 0; p < pageCount; p++) if ((a[p]! + b[p]!) > 0 && seen[p] !== 1) missing++;
    expect(missing).toBe(0);
  });
});

import { closeSync, ftruncateSync, openSync, readSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { MemoryRegion } from '../dist/src/index.js';
import { PageBatchEncoder } from '../dist/src/codec/page-batch-encoder.js';
import { PageBatchDecoder } from '../dist/src/codec/page-batch-decoder.js';
import { FilePageStore, RegionPageStore } from '../dist/src/target/page-stores.js';
import { tempDir } from './helpers.js';

const tmp = tempDir();
afterAll(() => tmp.cleanup());

describe('MemoryRegion', () => {
  it('wraps Buffer, ArrayBuffer, SharedArrayBuffer and WebAssembly.Memory', () => {
    expect(MemoryRegion.fromMemory(Buffer.alloc(8192)).pageCount).toBe(2);
    expect(MemoryRegion.fromMemory(new ArrayBuffer(16384), { pageSize: 8192 }).pageCount).toBe(2);
    expect(MemoryRegion.fromMemory(new SharedArrayBuffer(4096 * 3)).pageCount).toBe(3);
    const wasm = new WebAssembly.Memory({ initial: 2 });
    const region = MemoryRegion.fromMemory(wasm);
    expect(region.byteLength).toBe(2 * 65536);
    new Uint8Array(wasm.buffer)[70000] = 9;
    expect(region.view(69632, 4096)[368]).toBe(9);
  });

  it('rejects page sizes that are not powers of two and regions that are not whole pages', () => {
    expect(() => MemoryRegion.fromMemory(Buffer.alloc(8192), { pageSize: 3000 })).toThrow(/power of two/);
    expect(() => MemoryRegion.fromMemory(Buffer.alloc(5000))).toThrow(/not a multiple/);
    expect(() => MemoryRegion.fromMemory(Buffer.alloc(0))).toThrow(/positive/);
  });

  it('maps a 64 GiB sparse file: pages beyond 4 GiB and 32 GiB are written, read, encoded and land in the file', async () => {
    const path = join(tmp.dir, 'big.img');
    const size = 64 * 2 ** 30;
    const region = MemoryRegion.mapFile(path, { create: size });
    try {
      expect(region.pageCount).toBe(16 * 2 ** 20);
      const pages = [0, 2 ** 20 + 1, 12 * 2 ** 20 + 7, region.pageCount - 1]; // 0, ~4 GiB, ~48 GiB, last
      for (const page of pages) region.view(page * 4096, 4096).fill(page % 251 + 1);
      region.flush();
      const fd = openSync(path, 'r');
      const probe = Buffer.alloc(1);
      for (const page of pages) {
        readSync(fd, probe, 0, 1, page * 4096 + 4095);
        expect(probe[0]).toBe(page % 251 + 1);
      }
      closeSync(fd);
      // Encode them out of the big region and apply them into a big sparse region and a big file store.
      const encoder = new PageBatchEncoder(region);
      const batch = await encoder.encode(Uint32Array.from(pages), true);
      expect(batch.lz4Records).toBe(4); // one byte in an otherwise zero page
      const copy = MemoryRegion.mapFile(join(tmp.dir, 'copy.img'), { create: size });
      const intoCopy = new PageBatchDecoder(new RegionPageStore(copy));
      intoCopy.enqueue(batch.records, batch.recordCount);
      await intoCopy.settled();
      for (const page of pages) expect(copy.view(page * 4096, 4096)[4095]).toBe(page % 251 + 1);
      copy.close();
      const filePath = join(tmp.dir, 'store.img');
      const store = await FilePageStore.create(filePath, size, 4096);
      const intoStore = new PageBatchDecoder(store);
      intoStore.enqueue(batch.records, batch.recordCount);
      await intoStore.settled();
      store.close();
      const storeFd = openSync(filePath, 'r');
      for (const page of pages) {
        readSync(storeFd, probe, 0, 1, page * 4096 + 4095);
        expect(probe[0]).toBe(page % 251 + 1);
      }
      closeSync(storeFd);
    } finally {
      region.close();
    }
  });

  it('maps an existing file at its size and refuses one that is not whole pages', () => {
    const path = join(tmp.dir, 'odd.img');
    const fd = openSync(path, 'w');
    ftruncateSync(fd, 4097);
    closeSync(fd);
    expect(() => MemoryRegion.mapFile(path)).toThrow(/not a multiple/);
    expect(() => MemoryRegion.mapFile(join(tmp.dir, 'missing.img'))).toThrow(/cannot open/);
  });
});

// The native calls a snapshot is written and read with: writePagesToFile (addon and twin alike) and the
// addon's mapFilePrivate.
import { randomFillSync } from 'node:crypto';
import { closeSync, ftruncateSync, openSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { loadAddon, type NativeBinding, type NativeRegion } from '../dist/src/native/binding.js';
import { twin } from '../dist/src/native/twin/index.js';
import { tempDir } from './helpers.js';

const P = 4096;
const PAGES = 16;
const addon = loadAddon();
const implementations: [string, NativeBinding][] = [['addon', addon], ['twin', twin]];
const tmp = tempDir();
afterAll(() => tmp.cleanup());
let files = 0;

const ZERO_HASH = addon.xxh64(new Uint8Array(P));

/** A region of PAGES pages: random, except the pages listed, which are zero. */
function regionWith(zeroPages: number[]): Uint8Array {
  const bytes = new Uint8Array(new SharedArrayBuffer(PAGES * P));
  randomFillSync(bytes);
  for (const p of zeroPages) bytes.fill(0, p * P, (p + 1) * P);
  return bytes;
}

/** A new file of `bytes` bytes, all a hole; returns its path and a read-write descriptor. */
function sparseFile(bytes: number): { path: string; fd: number } {
  const path = join(tmp.dir, `pages-${files++}.img`);
  const fd = openSync(path, 'w+');
  ftruncateSync(fd, bytes);
  return { path, fd };
}

/** Hashes that say the file holds zeros everywhere (as a new sparse file does). */
function zeroHashes(): BigUint64Array {
  return new BigUint64Array(PAGES).fill(ZERO_HASH);
}

function pageHashes(region: Uint8Array): BigUint64Array {
  const out = new BigUint64Array(PAGES);
  addon.hashPages(region, P, 0, PAGES, out, 0);
  return out;
}

/** [start, end) byte ranges of the file's pages listed, consecutive pages merged. */
function extentsOf(pages: number[], fileOffset: number): number[] {
  const out: number[] = [];
  for (const p of pages) {
    const start = fileOffset + p * P;
    if (out.length > 0 && out[out.length - 1] === start) out[out.length - 1] = start + P;
    else out.push(start, start + P);
  }
  return out;
}

describe.each(implementations)('%s writePagesToFile', (name, engine) => {
  it('writes each page at fileOffset + page * pageSize, records hashPages\' hashes, and leaves zero pages as holes', async () => {
    const region = regionWith([6, 10]);
    const offset = 3 * P;
    const { path, fd } = sparseFile(offset + PAGES * P + P);
    const hashes = zeroHashes();
    hashes[0] = 7n; // a page not listed keeps its slot
    const indices = Uint32Array.of(1, 2, 3, 5, 6, 9, 10, 11, 15);
    try {
      expect(await engine.writePagesToFile(region, P, indices, fd, offset, hashes)).toEqual([7, 2, 0]);
    } finally {
      closeSync(fd);
    }
    const file = readFileSync(path);
    const expected = pageHashes(region);
    for (let p = 0; p < PAGES; p++) {
      const at = offset + p * P;
      const listed = indices.includes(p);
      const page = file.subarray(at, at + P);
      if (listed) expect(Buffer.compare(page, region.subarray(p * P, (p + 1) * P)), `page ${p}`).toBe(0);
      else expect(page.every((b) => b === 0), `page ${p}`).toBe(true);
      expect(hashes[p], `hash ${p}`).toBe(listed ? expected[p] : p === 0 ? 7n : ZERO_HASH);
    }
    expect(file.subarray(0, offset).every((b) => b === 0)).toBe(true);
    expect(Array.from(addon.dataExtents(path))).toEqual(extentsOf([1, 2, 3, 5, 9, 11, 15], offset));
  });

  it('punches out a page the file held as data that is zero now, and only such a page', async () => {
    const region = regionWith([]);
    const offset = P;
    const { path, fd } = sparseFile(offset + PAGES * P);
    const hashes = zeroHashes();
    try {
      const all = Uint32Array.from({ length: PAGES }, (_, p) => p);
      expect(await engine.writePagesToFile(region, P, all, fd, offset, hashes)).toEqual([PAGES, 0, 0]);
      for (const p of [2, 3, 7]) region.fill(0, p * P, (p + 1) * P);
      region[4 * P] ^= 1;
      expect(await engine.writePagesToFile(region, P, Uint32Array.of(2, 3, 4, 7), fd, offset, hashes))
        .toEqual([1, 3, 3]);
      // Its hash says the file reads zeros there now: nothing to do.
      expect(await engine.writePagesToFile(region, P, Uint32Array.of(3), fd, offset, hashes)).toEqual([0, 1, 0]);
    } finally {
      closeSync(fd);
    }
    const file = readFileSync(path);
    expect(Buffer.compare(file.subarray(offset), region)).toBe(0);
    expect(hashes).toEqual(pageHashes(region));
    expect(hashes[2]).toBe(ZERO_HASH);
    if (name === 'addon') {
      expect(Array.from(addon.dataExtents(path))).toEqual(extentsOf([0, 1, 4, 5, 6, 8, 9, 10, 11, 12, 13, 14, 15], offset));
    }
  });

  it('takes any region: a DataView over part of a SharedArrayBuffer, at an unaligned file offset', async () => {
    const bytes = regionWith([]);
    const region = new DataView(bytes.buffer, 2 * P, 4 * P);
    const { path, fd } = sparseFile(100 + 4 * P);
    const hashes = new BigUint64Array(4);
    try {
      expect(await engine.writePagesToFile(region, P, Uint32Array.of(0, 1, 2, 3), fd, 100, hashes)).toEqual([4, 0, 0]);
    } finally {
      closeSync(fd);
    }
    expect(Buffer.compare(readFileSync(path).subarray(100), bytes.subarray(2 * P, 6 * P))).toBe(0);
    expect(hashes).toEqual(pageHashes(bytes).subarray(2, 6));
  });

  it('writes disjoint pages from calls in flight together', async () => {
    const region = regionWith([4, 5]);
    const { path, fd } = sparseFile(PAGES * P);
    const hashes = zeroHashes();
    const even = Uint32Array.from({ length: PAGES / 2 }, (_, k) => 2 * k);
    const odd = even.map((p) => p + 1);
    try {
      const results = await Promise.all([
        engine.writePagesToFile(region, P, even, fd, 0, hashes),
        engine.writePagesToFile(region, P, odd, fd, 0, hashes),
      ]);
      expect(results).toEqual([[7, 1, 0], [7, 1, 0]]);
    } finally {
      closeSync(fd);
    }
    expect(Buffer.compare(readFileSync(path), region)).toBe(0);
    expect(hashes).toEqual(pageHashes(region));
  });

  it('checks its arguments before writing anything', () => {
    const region = regionWith([]);
    const { path, fd } = sparseFile(PAGES * P);
    const hashes = zeroHashes();
    const call = (indices: Uint32Array, over: { pageSize?: number; fd?: number; fileOffset?: number;
      hashes?: BigUint64Array; region?: NativeRegion } = {}) =>
      engine.writePagesToFile(over.region ?? region, over.pageSize ?? P, indices, over.fd ?? fd,
        over.fileOffset ?? 0, over.hashes ?? hashes);
    try {
      expect(() => call(Uint32Array.of(1, 3, 2))).toThrow(RangeError);
      expect(() => call(Uint32Array.of(1, 3, 2))).toThrow(/indices must ascend: indices\[2\] = 2 follows 3/);
      expect(() => call(Uint32Array.of(2, 2))).toThrow(/must ascend/);
      expect(() => call(Uint32Array.of(0, PAGES))).toThrow(/indices\[1\] = 16 is not below the region's 16 pages/);
      expect(() => call(Uint32Array.of(0), { hashes: new BigUint64Array(PAGES - 1) })).toThrow(/hashes has 15 slots/);
      expect(() => call(Uint32Array.of(0), { pageSize: 3000 })).toThrow(/power of two/);
      expect(() => call(Uint32Array.of(0), { fd: -1 })).toThrow(RangeError);
      expect(() => call(Uint32Array.of(0), { fileOffset: 0.5 })).toThrow(RangeError);
      expect(() => call(Uint32Array.of(0), { fileOffset: 2 ** 53 - P })).toThrow(/beyond 2\^53 - 1/);
      expect(() => call(Uint32Array.of(0), { region: {} as NativeRegion })).toThrow(TypeError);
      expect(() => call(Uint32Array.of(0), { hashes: new Uint32Array(PAGES) as unknown as BigUint64Array }))
        .toThrow(/hashes must be a BigUint64Array/);
      const shared = new BigUint64Array(region.buffer as SharedArrayBuffer, 0, PAGES);
      expect(() => call(Uint32Array.of(0), { hashes: shared })).toThrow(/must not overlap/);
    } finally {
      closeSync(fd);
    }
    expect(addon.dataExtents(path).length).toBe(0);
    expect(hashes).toEqual(zeroHashes());
  });

  it('rejects a failed write with an error naming the call, with its code and errno, and leaves the hashes of pages not written', async () => {
    const region = regionWith([]);
    const { path, fd } = sparseFile(PAGES * P);
    closeSync(fd);
    const readOnly = openSync(path, 'r');
    const hashes = zeroHashes();
    try {
      const write = engine.writePagesToFile(region, P, Uint32Array.of(0, 1, 5), readOnly, 0, hashes);
      await expect(write).rejects.toThrow(/^pwrite\(fd \d+, 8192 bytes at 0\) failed: .*bad file descriptor/i);
      await expect(write).rejects.toMatchObject({ code: 'EBADF', errno: -9 });
    } finally {
      closeSync(readOnly);
    }
    expect(hashes).toEqual(zeroHashes());
  });
});

describe('addon mapFilePrivate', () => {
  const SYSTEM_PAGE = 4096;
  const content = randomFillSync(Buffer.alloc(8 * SYSTEM_PAGE));
  const path = join(tmp.dir, 'private.img');
  writeFileSync(path, content);

  it('maps [offset, +length) of the file: it reads the file\'s bytes, loaded on first touch', () => {
    const mapping = addon.mapFilePrivate(path, 2 * SYSTEM_PAGE, 3 * SYSTEM_PAGE + 100);
    try {
      expect(mapping.byteLength).toBe(3 * SYSTEM_PAGE + 100);
      const view = new Uint8Array(mapping.view(0, mapping.byteLength));
      expect(Buffer.compare(view, content.subarray(2 * SYSTEM_PAGE, 5 * SYSTEM_PAGE + 100))).toBe(0);
    } finally {
      mapping.close();
    }
  });

  it('keeps writes in this process: the file and a second private mapping of it do not see them', () => {
    const a = addon.mapFilePrivate(path, 0, 4 * SYSTEM_PAGE);
    const b = addon.mapFilePrivate(path, 0, 4 * SYSTEM_PAGE);
    try {
      const viewA = new Uint8Array(a.view(0, a.byteLength));
      const viewB = new Uint8Array(b.view(0, b.byteLength));
      viewA.fill(0xab, SYSTEM_PAGE, 2 * SYSTEM_PAGE);
      viewB[3 * SYSTEM_PAGE] = content[3 * SYSTEM_PAGE]! ^ 0xff;
      expect(viewA[SYSTEM_PAGE]).toBe(0xab);
      expect(viewB[SYSTEM_PAGE]).toBe(content[SYSTEM_PAGE]);
      expect(viewA[3 * SYSTEM_PAGE]).toBe(content[3 * SYSTEM_PAGE]);
      expect(viewB[3 * SYSTEM_PAGE]).toBe(content[3 * SYSTEM_PAGE]! ^ 0xff);
      expect(Buffer.compare(readFileSync(path), content)).toBe(0);
    } finally {
      a.close();
      b.close();
    }
    expect(Buffer.compare(readFileSync(path), content)).toBe(0);
  });

  it('is read by native calls as its memory, never as the file behind it', () => {
    const mapping = addon.mapFilePrivate(path, SYSTEM_PAGE, 4 * SYSTEM_PAGE);
    try {
      new Uint8Array(mapping.view(0, SYSTEM_PAGE)).fill(0x5a);
      const expected = addon.xxh64(new Uint8Array(SYSTEM_PAGE).fill(0x5a));
      const encoder = new addon.PageEncoder(SYSTEM_PAGE, 4, 0);
      const out = new Uint8Array(4 * (SYSTEM_PAGE + 20));
      const sent = new BigUint64Array(4);
      encoder.encodeSync(mapping, Uint32Array.of(0, 1), false, out, sent);
      expect(sent[0]).toBe(expected);
      expect(sent[1]).toBe(addon.xxh64(content.subarray(2 * SYSTEM_PAGE, 3 * SYSTEM_PAGE)));
    } finally {
      mapping.close();
    }
  });

  it('refuses flush(): a private mapping has no file to write back to', () => {
    const mapping = addon.mapFilePrivate(path, 0, SYSTEM_PAGE);
    try {
      expect(() => mapping.flush()).toThrow('a private mapping has no file to write back to');
    } finally {
      mapping.close();
    }
  });

  it('refuses an offset that is not page-aligned, an empty range and a range beyond the file', () => {
    expect(() => addon.mapFilePrivate(path, 100, SYSTEM_PAGE)).toThrow(RangeError);
    expect(() => addon.mapFilePrivate(path, 100, SYSTEM_PAGE)).toThrow(/offset 100 is not a multiple of the system page size/);
    expect(() => addon.mapFilePrivate(path, 0, 0)).toThrow(/length must be > 0/);
    expect(() => addon.mapFilePrivate(path, 4 * SYSTEM_PAGE, 4 * SYSTEM_PAGE + 1)).toThrow(RangeError);
    expect(() => addon.mapFilePrivate(path, 4 * SYSTEM_PAGE, 4 * SYSTEM_PAGE + 1))
      .toThrow(`has ${8 * SYSTEM_PAGE} bytes, fewer than offset + length = ${4 * SYSTEM_PAGE} + ${4 * SYSTEM_PAGE + 1}`);
    expect(() => addon.mapFilePrivate(path, 16 * SYSTEM_PAGE, 1)).toThrow(RangeError);
    expect(() => addon.mapFilePrivate(join(tmp.dir, 'missing.img'), 0, 1)).toThrow(/ENOENT|No such file/);
  });
});

describe('twin mapFilePrivate', () => {
  it('needs the addon, as mapFile does', () => {
    expect(() => twin.mapFilePrivate('/dev/null', 0, 4096)).toThrow(expect.objectContaining({ code: 'PW_ERR_NATIVE' }));
  });
});

// Snapshots through the library: a full one and a chain of incremental ones of a region the test writes
// itself, several regions with the device state, a snapshot under a 200 MB/s writer thread, a 1 GiB
// snapshot mapped lazily, four lazy restores of one file side by side, and clones. Every state is
// checked against the bytes the test's own pause hook copied (or the Buffers it wrote), never against
// what a snapshot says of itself.
import { closeSync, existsSync, ftruncateSync, mkdirSync, openSync, readFileSync, readSync, renameSync, statSync, writeSync } from 'node:fs';
import { join, relative } from 'node:path';
import { afterAll, describe, expect, it, onTestFinished } from 'vitest';
import {
  DirtyBitmap, MemoryRegion, PagewireError, SnapshotChain, SnapshotFile, Snapshotter, SyntheticWorkload, cloneSnapshot, openSnapshot,
  type SnapshotSummary,
} from '../dist/src/index.js';
import { binding } from '../dist/src/native/engine.js';
import { randomShared, sha256File } from './helpers.js';
import {
  Guest, MiB, PAGE, firstDifferentPage, lazyState, prng, regionBytes, restoredState, sha256, shmDir, smallChain, tempFilesIn, thrown,
} from './snapshot-helpers.js';

const tmp = shmDir();
afterAll(() => tmp.cleanup());
let cases = 0;

function caseDir(): string {
  const dir = join(tmp.dir, `case-${++cases}`);
  mkdirSync(dir);
  return dir;
}

/** Pages of `bytes` that hold anything but zeros. */
function dataPages(bytes: Buffer, pageSize = PAGE): number {
  let n = 0;
  for (let at = 0; at < bytes.length; at += pageSize) if (bytes.subarray(at, at + pageSize).some((b) => b !== 0)) n++;
  return n;
}

/** The SHA-256 of each 4 KiB block of a file that is not all zeros, by offset (read from its data extents only). */
function nonZeroPages(path: string): Map<number, string> {
  const extents = binding().dataExtents(path);
  const fd = openSync(path, 'r');
  const pages = new Map<number, string>();
  const block = Buffer.alloc(PAGE);
  try {
    for (let e = 0; e < extents.length; e += 2) {
      for (let at = Math.floor(extents[e]! / PAGE) * PAGE; at < extents[e + 1]!; at += PAGE) {
        const n = readSync(fd, block.fill(0), 0, PAGE, at);
        if (block.subarray(0, n).some((b) => b !== 0)) pages.set(at, sha256(block));
      }
    }
  } finally {
    closeSync(fd);
  }
  return pages;
}

/** Rss and Pss (bytes) of this process's mappings of `path`, from /proc/self/smaps (undefined without it). */
function mappedFrom(path: string): { mappings: number; rss: number; pss: number } | undefined {
  if (!existsSync('/proc/self/smaps')) return undefined;
  const total = { mappings: 0, rss: 0, pss: 0 };
  let ours = false;
  for (const line of readFileSync('/proc/self/smaps', 'utf8').split('\n')) {
    if (/^[0-9a-f]+-[0-9a-f]+ /.test(line)) {
      ours = line.endsWith(` ${path}`);
      if (ours) total.mappings += 1;
      continue;
    }
    const field = /^(Rss|Pss):\s+(\d+) kB/.exec(line);
    if (ours && field) total[field[1] === 'Rss' ? 'rss' : 'pss'] += Number(field[2]) * 1024;
  }
  return total;
}

/** Both restores of the snapshot at `path` (eager and lazy) give exactly `truth`, region by region. */
async function expectRestoresTo(path: string, truth: Buffer[], dir: string, deviceState?: Buffer): Promise<void> {
  const eager = await restoredState(path, dir);
  const lazy = lazyState(path);
  expect(lazy.lazy).toBe(true);
  expect(eager.length).toBe(truth.length);
  expect(lazy.regions.length).toBe(truth.length);
  for (const [i, bytes] of truth.entries()) {
    expect(firstDifferentPage(eager[i]!, bytes), `${path}: region ${i}, restoreChain`).toBe(-1);
    expect(firstDifferentPage(lazy.regions[i]!, bytes), `${path}: region ${i}, openSnapshot`).toBe(-1);
  }
  if (deviceState) expect(lazy.deviceState.equals(deviceState), `${path}: device state`).toBe(true);
}

describe('snapshots through the library', () => {
  it('takes a full snapshot and five incremental ones (by tracking and by hashes), each restoring to its pause point', async () => {
    const dir = caseDir();
    const guest = new Guest(4 * MiB, 1);
    const settings = { region: guest.region, hooks: guest.hooks() };
    const first = new Snapshotter({ ...settings, dirtyBitmap: guest.bitmap() });
    // Pages written after a round's scan: left for the pause to find and write.
    first.on('round', () => guest.scribble(16));
    const taken: Array<{ path: string; summary: SnapshotSummary; truth: Buffer }> = [];
    const take = async (snapshotter: Snapshotter, name: string, base?: { path: string }) => {
      const path = join(dir, name);
      const summary = await snapshotter.take(path, base ? { base: base.path } : {});
      const snapshot = { path, summary, truth: guest.atPause! };
      taken.push(snapshot);
      // Between snapshots the guest writes on.
      guest.scribble(48);
      return snapshot;
    };

    const full = await take(first, 'full.snap');
    const s1 = await take(first, 's1.snap', full);
    const s2 = await take(first, 's2.snap', s1);
    // On an earlier file than the last one this Snapshotter took: the changes are found by hashes.
    const s3 = await take(first, 's3.snap', s1);
    // A new Snapshotter knows nothing of the base: hashes again, then tracking on its own last one.
    const second = new Snapshotter({ ...settings, dirtyBitmap: guest.bitmap() });
    second.on('round', () => guest.scribble(16));
    const s4 = await take(second, 's4.snap', s3);
    const s5 = await take(second, 's5.snap', s4);

    expect(guest.pauses).toBe(6);
    expect(new Set(taken.map((t) => sha256(t.truth))).size).toBe(6);
    expect(full.summary).toMatchObject({ status: 'completed', pageSize: PAGE, pagesTotal: 1024 });
    expect(full.summary.parentId).toBeUndefined();
    expect(full.summary.changesFoundBy).toBeUndefined();
    expect(full.summary.rounds).toBeGreaterThanOrEqual(2);
    const links = [[s1, full, 'tracking'], [s2, s1, 'tracking'], [s3, s1, 'hashes'], [s4, s3, 'hashes'], [s5, s4, 'tracking']] as const;
    for (const [child, parent, foundBy] of links) {
      expect(child.summary, child.path).toMatchObject({ parentId: parent.summary.id, changesFoundBy: foundBy });
    }
    const chain = SnapshotChain.open(s5.path);
    expect(chain.layers.map((layer) => layer.path)).toEqual([full, s1, s3, s4, s5].map((t) => t.path));
    chain.close();

    // (Before any lazy restore: on tmpfs, reading a hole through a mapping allocates it.)
    // The full file holds the data pages (zero pages are holes); each incremental one a small part of that.
    const allocated = (path: string) => statSync(path).blocks * 512;
    expect(allocated(full.path)).toBeGreaterThanOrEqual(dataPages(full.truth) * PAGE);
    expect(allocated(full.path)).toBeLessThan(dataPages(full.truth) * PAGE + MiB);
    for (const t of [s1, s2, s3, s4, s5]) {
      expect(t.summary.fileBytes, t.path).toBeLessThan(full.summary.fileBytes / 8);
      expect(allocated(t.path), t.path).toBeLessThan(allocated(full.path) / 8);
    }

    for (const t of taken) await expectRestoresTo(t.path, [t.truth], dir);
    expect(tempFilesIn(dir)).toEqual([]);
  });

  it('saves several regions (own page sizes and tracking) and the device state at one pause point', async () => {
    const dir = caseDir();
    const ram = new Guest(4 * MiB, 2);
    // Device memory in 64 KiB pages, tracked by hashing alone (no bitmap).
    const device = new Guest(2 * MiB, 3, 65_536);
    // A file-backed disk: mostly holes, some data; written in data and holes alike.
    const diskPath = join(dir, 'disk.img');
    const fd = openSync(diskPath, 'wx');
    ftruncateSync(fd, 8 * MiB);
    for (let page = 0; page < 2048; page += 37) writeSync(fd, Buffer.alloc(PAGE, page & 255), 0, PAGE, page * PAGE);
    closeSync(fd);
    const disk = MemoryRegion.mapFile(diskPath);
    onTestFinished(() => disk.close());
    const diskBitmaps: DirtyBitmap[] = [];
    const diskBitmap = () => {
      const bitmap = new DirtyBitmap(disk.pageCount);
      diskBitmaps.push(bitmap);
      return bitmap;
    };
    const writeDisk = (count: number) => {
      for (let k = 0; k < count; k++) {
        const page = ram.random.int(disk.pageCount);
        ram.random.fill(disk.view(page * PAGE, PAGE).subarray(0, 512));
        for (const bitmap of diskBitmaps) bitmap.mark(page);
      }
    };
    const writeAll = () => {
      ram.scribble(24);
      device.scribble(3);
      writeDisk(24);
    };

    let truth: Buffer[] = [];
    let deviceState: Buffer = Buffer.alloc(0);
    const states = [
      // Plain bytes, none at all, and streamed in parts.
      () => { deviceState = Buffer.from(`device registers\n${'x'.repeat(10_000)}`); return deviceState; },
      () => { deviceState = Buffer.alloc(0); return deviceState; },
      () => {
        const parts = [Buffer.from('part one;'), Buffer.alloc(70_000, 7), Buffer.from('part three')];
        deviceState = Buffer.concat(parts);
        return (async function* () { yield* parts; })();
      },
    ];
    let snapshotNo = 0;
    const snapshotter = (ramBitmap: DirtyBitmap, dBitmap: DirtyBitmap) => {
      const s = new Snapshotter({
        region: ram.region, dirtyBitmap: ramBitmap, extraRegions: [{ region: device.region }, { region: disk, dirtyBitmap: dBitmap }],
        hooks: {
          pause: () => { truth = [Buffer.from(ram.memory), Buffer.from(device.memory), Buffer.from(regionBytes(disk))]; },
          resume: () => {},
          deviceState: () => states[snapshotNo]!(),
        },
      });
      // Pages written after a round's scan: left for the pause to find (the device's by its hashes).
      s.on('round', writeAll);
      return s;
    };
    const first = snapshotter(ram.bitmap(), diskBitmap());
    const taken: Array<{ path: string; summary: SnapshotSummary; truth: Buffer[]; deviceState: Buffer }> = [];
    const take = async (s: Snapshotter, name: string, base?: string) => {
      const path = join(dir, name);
      const summary = await s.take(path, base ? { base } : {});
      taken.push({ path, summary, truth, deviceState });
      snapshotNo += 1;
      writeAll();
      return summary;
    };
    const full = await take(first, 'full.snap');
    const byTracking = await take(first, 'inc1.snap', join(dir, 'full.snap'));
    const byHashes = await take(snapshotter(ram.bitmap(), diskBitmap()), 'inc2.snap', join(dir, 'inc1.snap'));
    expect(full.pagesTotal).toBe(1024 + 32 + 2048);
    expect(byTracking.changesFoundBy).toBe('tracking');
    expect(byHashes.changesFoundBy).toBe('hashes');
    expect(taken.map((t) => t.summary.deviceStateBytes)).toEqual(taken.map((t) => t.deviceState.length));
    for (const t of taken) await expectRestoresTo(t.path, t.truth, dir, t.deviceState);
    // Each region changed between the snapshots: the restores told them apart.
    for (const i of [0, 1, 2]) expect(taken[0]!.truth[i]!.equals(taken[2]!.truth[i]!), `region ${i}`).toBe(false);
  });

  it('snapshots a region under a 200 MB/s writer thread: each restore equals the region hashed inside the pause', async () => {
    const dir = caseDir();
    const memory = randomShared(16 * MiB);
    const region = MemoryRegion.fromMemory(memory);
    const bitmap = new DirtyBitmap(region.pageCount);
    const workload = await SyntheticWorkload.start({ buffer: memory }, bitmap, PAGE, { rateBytesPerSec: 200e6, hot: 0.05, seed: 1 });
    onTestFinished(() => workload.stop());
    const truths: Array<{ sha: string; writes: number; counter: bigint }> = [];
    const snapshotter = new Snapshotter({
      region, dirtyBitmap: bitmap,
      hooks: {
        pause: async () => {
          await workload.pause();
          const bytes = Buffer.from(memory);
          truths.push({ sha: sha256(bytes), writes: workload.writes, counter: bytes.readBigUInt64LE(0) });
        },
        resume: () => workload.resume(),
        throttle: (percent) => workload.throttle(percent),
      },
    });
    const full = await snapshotter.take(join(dir, 'full.snap'));
    // The writer has written since the first pause before the second snapshot: a fact, not a hope about scheduling.
    const before = truths[0]!.writes;
    await new Promise<void>((resolve) => {
      const look = () => (workload.writes > before ? resolve() : setTimeout(look, 2));
      look();
    });
    const incremental = await snapshotter.take(join(dir, 'inc.snap'), { base: join(dir, 'full.snap') });
    await workload.stop();
    expect(incremental.changesFoundBy).toBe('tracking');
    expect(truths.length).toBe(2);
    // The writer ran before and between the pauses.
    expect(truths[0]!.writes).toBeGreaterThan(0);
    expect(truths[1]!.writes).toBeGreaterThan(truths[0]!.writes);
    expect(truths[1]!.sha).not.toBe(truths[0]!.sha);
    for (const [summary, t] of [[full, truths[0]!], [incremental, truths[1]!]] as const) {
      const [eager] = await restoredState(summary.path, dir);
      expect(sha256(eager!), summary.path).toBe(t.sha);
      expect(eager!.readBigUInt64LE(0)).toBe(t.counter);
      expect(sha256(lazyState(summary.path).regions[0]!), summary.path).toBe(t.sha);
    }
  });

  it('maps a 1 GiB snapshot lazily: the known pages and zero pages read right, and writes stay out of the file', async () => {
    const shm = shmDir();
    onTestFinished(() => shm.cleanup());
    const GiB = 2 ** 30;
    const image = join(shm.dir, 'guest.img');
    const snap = join(shm.dir, 'guest.snap');
    const random = prng(5);
    const known = new Map<number, Buffer>();
    const fd = openSync(image, 'wx');
    ftruncateSync(fd, GiB);
    while (known.size < 300) {
      const page = random.int(GiB / PAGE);
      const bytes = Buffer.alloc(PAGE);
      random.fill(bytes);
      known.set(page, bytes);
      writeSync(fd, bytes, 0, PAGE, page * PAGE);
    }
    closeSync(fd);
    const source = MemoryRegion.mapFile(image);
    const summary = await new Snapshotter({ region: source, dirtyBitmap: new DirtyBitmap(source.pageCount), hooks: { pause() {}, resume() {} } })
      .take(snap);
    source.close();
    expect(summary.pagesWritten).toBe(known.size);
    const stat = statSync(snap);
    expect(stat.blocks * 512).toBeLessThan(known.size * PAGE + 4 * MiB);
    const content = nonZeroPages(snap);
    expect(content.size).toBeGreaterThan(known.size);
    const file = SnapshotFile.open(snap);
    const { pagesOffset } = file.header.regions[0]!;
    file.close();

    const restored = openSnapshot(snap);
    expect(restored.lazy).toBe(true);
    const region = restored.regions[0]!;
    expect(region.byteLength).toBe(GiB);
    for (const [page, bytes] of known) expect(Buffer.compare(region.view(page * PAGE, PAGE), bytes), `page ${page}`).toBe(0);
    const zeroPages: number[] = [];
    while (zeroPages.length < 500) {
      const page = random.int(GiB / PAGE);
      if (!known.has(page)) zeroPages.push(page);
    }
    for (const page of zeroPages) expect(region.view(page * PAGE, PAGE).every((b) => b === 0), `page ${page}`).toBe(true);

    // Writes into known pages and into zero pages: this process sees them, the file does not.
    const written = [...[...known.keys()].slice(0, 16), ...zeroPages.slice(0, 16)];
    for (const page of written) region.view(page * PAGE, PAGE).fill(0xa5);
    for (const page of written) expect(region.view(page * PAGE, PAGE).every((b) => b === 0xa5), `page ${page}`).toBe(true);
    const check = openSync(snap, 'r');
    const read = Buffer.alloc(PAGE);
    for (const page of written) {
      expect(readSync(check, read, 0, PAGE, pagesOffset + page * PAGE)).toBe(PAGE);
      expect(read.equals(known.get(page) ?? Buffer.alloc(PAGE)), `file page ${page}`).toBe(true);
    }
    closeSync(check);
    // (On tmpfs, reading a hole through a mapping allocates it: the extents may grow, the bytes may not change.)
    expect(nonZeroPages(snap)).toEqual(content);
    expect(statSync(snap)).toMatchObject({ size: stat.size, mtimeMs: stat.mtimeMs });
    // Another lazy restore sees the snapshot, not the first one's writes.
    const again = openSnapshot(snap);
    for (const page of written) {
      expect(Buffer.compare(again.regions[0]!.view(page * PAGE, PAGE), known.get(page) ?? Buffer.alloc(PAGE)), `page ${page}`).toBe(0);
    }
    again.close();
    restored.close();
  });

  it('runs four lazy restores of one snapshot side by side: each sees its own writes only, the file stays as it was', async () => {
    const dir = caseDir();
    const guest = new Guest(16 * MiB, 6);
    const snap = join(dir, 'guest.snap');
    await new Snapshotter({ region: guest.region, dirtyBitmap: guest.bitmap(), hooks: guest.hooks() }).take(snap);
    const truth = guest.atPause!;
    const before = sha256File(snap);
    const clones = [0, 1, 2, 3].map(() => openSnapshot(snap));
    onTestFinished(() => clones.forEach((clone) => clone.close()));
    expect(clones.map((clone) => clone.lazy)).toEqual([true, true, true, true]);
    // Each writes page 0 (all four do), a page of its own, and a page next to another clone's.
    const writes = clones.map((_, k) => new Map<number, Buffer>([[0, Buffer.alloc(PAGE, 1 + k)], [100 + k, Buffer.alloc(PAGE, 0x10 + k)],
      [2000 + 2 * k, Buffer.alloc(PAGE, 0x20 + k)]]));
    for (const [k, clone] of clones.entries()) {
      for (const [page, bytes] of writes[k]!) clone.regions[0]!.view(page * PAGE, PAGE).set(bytes);
    }
    for (const [k, clone] of clones.entries()) {
      const expected = Buffer.from(truth);
      for (const [page, bytes] of writes[k]!) bytes.copy(expected, page * PAGE);
      expect(firstDifferentPage(regionBytes(clone.regions[0]!), expected), `clone ${k}`).toBe(-1);
    }
    // The pages none wrote are the page cache's, mapped four times: the proportional share of the four
    // mappings adds up to one copy of the region (and the pages written), not four.
    const mapped = mappedFrom(snap);
    if (mapped) {
      expect(mapped.mappings).toBe(4);
      expect(mapped.rss).toBeGreaterThanOrEqual(4 * 16 * MiB);
      expect(mapped.pss).toBeLessThan(17 * MiB);
    }
    expect(sha256File(snap)).toBe(before);
    // A restore opened after the writes holds the snapshot as it was taken.
    expect(firstDifferentPage(lazyState(snap).regions[0]!, truth)).toBe(-1);
  });

  it('clones a full and an incremental snapshot (into another directory): each clone restores to the same bytes', async () => {
    const dir = caseDir();
    const elsewhere = caseDir();
    const chain = await smallChain(dir, 7, { bytes: 8 * MiB, changes: 100 });
    const { parent: full, child: inc, parentTruth: fullTruth, childTruth: incTruth, parentSummary: fullSummary } = chain;
    const incBefore = sha256File(inc);

    const fullClone = await cloneSnapshot(full, join(dir, 'full-clone.snap'));
    expect(['reflink', 'sparse-copy']).toContain(fullClone.method);
    if (fullClone.method === 'sparse-copy') {
      expect(statSync(fullClone.path).blocks).toBeLessThanOrEqual(statSync(full).blocks);
      expect(fullClone.fileBytes).toBeLessThanOrEqual(statSync(full).blocks * 512);
    }
    expect(firstDifferentPage((await restoredState(fullClone.path, dir))[0]!, fullTruth)).toBe(-1);
    expect(lazyState(fullClone.path).id).toBe(fullSummary.id);

    const incClone = await cloneSnapshot(inc, join(elsewhere, 'inc-clone.snap'));
    expect(['reflink', 'sparse-copy']).toContain(incClone.method);
    const file = SnapshotFile.open(incClone.path);
    expect(file.header.parentPath).toBe(relative(elsewhere, full));
    file.close();
    expect(sha256File(inc)).toBe(incBefore);
    // The clone stands on the full snapshot alone: it restores with the original incremental gone.
    renameSync(inc, join(dir, 'moved-away'));
    expect(firstDifferentPage((await restoredState(incClone.path, elsewhere))[0]!, incTruth)).toBe(-1);
    expect(firstDifferentPage(lazyState(incClone.path).regions[0]!, incTruth)).toBe(-1);
    expect([...tempFilesIn(dir), ...tempFilesIn(elsewhere)]).toEqual([]);
  });

  it('refuses to write a snapshot or a clone over a file of the chain it stands on, leaving that chain whole', async () => {
    type Chain = Awaited<ReturnType<typeof smallChain>>;
    const attempts: Array<[string, (c: Chain) => Promise<unknown>]> = [
      ['take(inc.snap, { base: inc.snap })', (c) => c.snapshotter.take(c.child, { base: c.child })],
      ['take(base.snap, { base: inc.snap })', (c) => c.snapshotter.take(c.parent, { base: c.child })],
      ['cloneSnapshot(inc.snap, base.snap)', (c) => cloneSnapshot(c.child, c.parent)],
    ];
    const problems: string[] = [];
    for (const [k, [what, attempt]] of attempts.entries()) {
      const dir = caseDir();
      const c = await smallChain(dir, 50 + k);
      c.guest.scribble(10);
      const before = [sha256File(c.parent), sha256File(c.child)];
      const error = await thrown(() => attempt(c));
      if (error === undefined) problems.push(`${what} completed`);
      else if (!(error instanceof PagewireError)) problems.push(`${what} threw ${String(error)}`);
      if (sha256File(c.parent) !== before[0] || sha256File(c.child) !== before[1]) problems.push(`${what} changed the chain's files`);
      const restored = await thrown(async () => {
        if (firstDifferentPage((await restoredState(c.child, dir))[0]!, c.childTruth) !== -1) throw new Error('restored to other bytes');
      });
      if (restored !== undefined) problems.push(`${what}: inc.snap no longer restores: ${(restored as Error).message}`);
      expect(c.guest.paused, what).toBe(false);
    }
    expect(problems).toEqual([]);
  });
});

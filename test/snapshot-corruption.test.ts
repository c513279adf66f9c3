// Damaged snapshots: a bit flipped anywhere in a full snapshot or in an incremental one on it (holes
// included), or the file cut short or extended, at 1000 seeded random places (SNAPSHOT_FUZZ_SEED=N
// replays a run, SNAPSHOT_FUZZ_TRIALS=N runs more); and broken chains (the parent gone, swapped for
// another snapshot, or changed and sealed again). Each must be refused, by the restore (which then leaves
// no file behind) and by the check `pagewire inspect` runs, and nothing may restore to bytes other than
// the state the test itself copied at the pause.
import { randomInt } from 'node:crypto';
import {
  appendFileSync, closeSync, existsSync, ftruncateSync, mkdirSync, openSync, readFileSync, readSync, rmSync, statSync, truncateSync, writeSync,
} from 'node:fs';
import { basename, join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import {
  SnapshotChain, SnapshotChainError, SnapshotCorruptError, SnapshotFile, Snapshotter, cloneSnapshot, openSnapshot, restoreChain, verifyFile,
} from '../dist/src/index.js';
import { binding } from '../dist/src/native/engine.js';
import {
  Guest, MiB, PAGE, brokenChains, firstDifferentPage, prng, regionBytes, restoredState, shmDir, smallChain, tempFilesIn, thrown,
} from './snapshot-helpers.js';

const tmp = shmDir();
afterAll(() => tmp.cleanup());
const TRIALS = Number(process.env.SNAPSHOT_FUZZ_TRIALS ?? 1000);
const SEED = Number(process.env.SNAPSHOT_FUZZ_SEED ?? randomInt(2 ** 31));

/** A snapshot file as written: its bytes, its data extents (the rest are holes), and the parts of its layout. */
interface Pristine {
  path: string;
  bytes: Buffer;
  extents: number[];
  /** [start, end, name] of each part; pages are named by number, hole or data. */
  parts: Array<[number, number, string]>;
  present: Uint32Array;
}

function pristine(path: string): Pristine {
  const file = SnapshotFile.open(path);
  const r = file.header.regions[0]!;
  const deviceStateOffset = r.presentOffset + r.presentBytes;
  const trailerOffset = deviceStateOffset + file.header.deviceStateLength;
  const present = Uint32Array.from(file.present[0]!);
  file.close();
  const parts: Array<[number, number, string]> = [[0, 4096, 'header'], [4096, r.pagesOffset, 'header padding'],
    [r.pagesOffset, r.pagesOffset + r.byteLength, 'pages'], [r.hashesOffset, r.presentOffset, 'hash table'],
    [r.presentOffset, deviceStateOffset, 'present bitmap'], [deviceStateOffset, trailerOffset, 'device state'],
    [trailerOffset, trailerOffset + 64, 'trailer']];
  return { path, bytes: readFileSync(path), extents: Array.from(binding().dataExtents(path)), parts, present };
}

/** Puts the file back as it was written, holes and all. */
function rewrite(p: Pristine): void {
  rmSync(p.path, { force: true });
  const fd = openSync(p.path, 'wx');
  try {
    ftruncateSync(fd, p.bytes.length);
    for (let e = 0; e < p.extents.length; e += 2) writeSync(fd, p.bytes, p.extents[e]!, p.extents[e + 1]! - p.extents[e]!, p.extents[e]!);
  } finally {
    closeSync(fd);
  }
}

/** Where `offset` lies in the layout, for a readable report (`child`: the incremental file on this one). */
function partAt(p: Pristine, offset: number, child?: Pristine): string {
  const [start, , name] = p.parts.find(([s, e]) => offset >= s && offset < e) ?? [0, 0, 'beyond the trailer'];
  if (name !== 'pages') return `${name} (+${offset - start})`;
  const page = Math.floor((offset - start) / PAGE);
  const hole = !p.extents.some((_, i) => i % 2 === 0 && offset >= p.extents[i]! && offset < p.extents[i + 1]!);
  const isSet = (bits: Uint32Array) => (bits[page >>> 5]! & (1 << (page & 31))) !== 0;
  const held = child ? `, ${isSet(child.present) ? 'also held by' : 'not held by'} ${basename(child.path)}` : '';
  return `page ${page} (${isSet(p.present) ? 'present' : 'not present'}, ${hole ? 'hole' : 'data'}${held})`;
}

describe('damaged snapshot files', () => {
  it(`refuses a bit flipped, or the file cut short or extended, at ${TRIALS} random places, in a full snapshot and an incremental one on it`, async () => {
    const dir = join(tmp.dir, 'fuzz');
    mkdirSync(dir);
    const { parent: basePath, child: incPath, parentTruth: baseTruth, childTruth: incTruth } = await smallChain(dir, 11);
    // The files as written restore to the truth: what follows damages them.
    expect(firstDifferentPage((await restoredState(incPath, dir))[0]!, incTruth)).toBe(-1);
    const files = { base: pristine(basePath), inc: pristine(incPath) };
    const out = join(dir, 'restored.img');

    const random = prng(SEED);
    const notRefused: string[] = [];
    const wrongImages: string[] = [];
    const badErrors: string[] = [];
    const leftovers: string[] = [];
    const counts = { flip: 0, truncate: 0, extend: 0, base: 0, inc: 0 };
    const refuses = (error: unknown, damaged: Pristine, isParent: boolean) =>
      (error instanceof SnapshotCorruptError && error.message.includes(damaged.path)) ||
      (isParent && error instanceof SnapshotChainError && error.message.includes(damaged.path));

    for (let trial = 0; trial < TRIALS; trial++) {
      const which = random.int(2) === 0 ? 'base' : 'inc';
      const file = files[which];
      const size = file.bytes.length;
      let damage: string;
      let inPages = false;
      const kind = random.int(8);
      if (kind < 2) {
        const length = random.int(size);
        truncateSync(file.path, length);
        damage = `${which} cut to ${length} of ${size} bytes`;
        counts.truncate++;
      } else if (kind === 2) {
        const extra = 1 + random.int(2 * PAGE);
        appendFileSync(file.path, Buffer.alloc(extra, random.int(2) === 0 ? 0 : 0xee));
        damage = `${which} extended by ${extra} bytes`;
        counts.extend++;
      } else {
        // Half the flips anywhere; half in the parts that are not pages (small, and dense with meaning).
        const meta = file.parts.filter(([, , name]) => name !== 'pages' && name !== 'header padding');
        let offset: number;
        if (random.int(2) === 0) offset = random.int(size);
        else {
          const total = meta.reduce((n, [s, e]) => n + e - s, 0);
          let pick = random.int(total);
          const part = meta.find(([s, e]) => (pick < e - s ? true : ((pick -= e - s), false)))!;
          offset = part[0] + pick;
        }
        const bit = random.int(8);
        const fd = openSync(file.path, 'r+');
        const byte = Buffer.alloc(1);
        readSync(fd, byte, 0, 1, offset);
        byte[0]! ^= 1 << bit;
        writeSync(fd, byte, 0, 1, offset);
        closeSync(fd);
        damage = `${which} bit ${bit} of byte ${offset} flipped: ${partAt(file, offset, which === 'base' ? files.inc : undefined)}`;
        const [pagesStart, pagesEnd] = file.parts.find(([, , name]) => name === 'pages')!;
        inPages = offset >= pagesStart && offset < pagesEnd;
        counts.flip++;
      }
      counts[which]++;
      const what = `trial ${trial} (seed ${SEED}): ${damage}`;

      // The restore of the incremental snapshot (its chain: both files), then of the full one alone.
      const restores: Array<[string, Buffer]> = [['restore inc.snap', incTruth]];
      if (which === 'base') restores.push(['restore base.snap', baseTruth]);
      for (const [name, truth] of restores) {
        const target = name === 'restore inc.snap' ? incPath : basePath;
        const error = await thrown(async () => {
          const chain = SnapshotChain.open(target);
          try { await restoreChain(chain, [out]); } finally { chain.close(); }
        });
        if (error === undefined) {
          const page = firstDifferentPage(readFileSync(out), truth);
          (page === -1 ? notRefused : wrongImages).push(`${what}: ${name} succeeded${page === -1 ? '' : `, page ${page} wrong`}`);
          rmSync(out);
        } else if (!refuses(error, file, which === 'base' && target === incPath)) {
          badErrors.push(`${what}: ${name} threw ${(error as Error).name}: ${(error as Error).message}`);
        }
      }
      // The check inspect runs: the chain opened, every file of it verified.
      const error = await thrown(() => {
        const chain = SnapshotChain.open(incPath);
        try { for (const layer of chain.layers) verifyFile(layer); } finally { chain.close(); }
      });
      if (error === undefined) notRefused.push(`${what}: inspect's check passed`);
      else if (!refuses(error, file, which === 'base')) badErrors.push(`${what}: inspect threw ${(error as Error).name}: ${(error as Error).message}`);
      // A lazy restore checks the pages only when asked: verified, it is refused or exactly the state.
      // (It opens the chain as the restore does: only damaged pages are worth its time.)
      if (inPages) {
        let lazy: Buffer | undefined;
        const lazyError = await thrown(() => {
          const snapshot = openSnapshot(incPath);
          try {
            snapshot.verify();
            lazy = regionBytes(snapshot.regions[0]!);
          } finally {
            snapshot.close();
          }
        });
        const page = lazy ? firstDifferentPage(lazy, incTruth) : -1;
        if (page !== -1) wrongImages.push(`${what}: openSnapshot + verify() gave page ${page} wrong`);
        if (lazyError !== undefined && !(lazyError instanceof SnapshotCorruptError || lazyError instanceof SnapshotChainError)) {
          badErrors.push(`${what}: openSnapshot threw ${(lazyError as Error).name}: ${(lazyError as Error).message}`);
        }
      }
      if (existsSync(out) || tempFilesIn(dir).length > 0) leftovers.push(`${what}: ${[...tempFilesIn(dir), ...(existsSync(out) ? [out] : [])]}`);
      rewrite(file);
    }
    // Each kind of damage, and each file, came up often enough to mean something.
    for (const [kind, n] of Object.entries(counts)) expect(n, `${kind}, seed ${SEED}`).toBeGreaterThan(TRIALS / 16);
    expect(wrongImages, `seed ${SEED}`).toEqual([]);
    expect(badErrors, `seed ${SEED}`).toEqual([]);
    expect(leftovers, `seed ${SEED}`).toEqual([]);
    expect(notRefused, `seed ${SEED}`).toEqual([]);
    // Put back, the files restore to the truth again.
    expect(firstDifferentPage((await restoredState(incPath, dir))[0]!, incTruth)).toBe(-1);
    expect(statSync(incPath).size).toBe(files.inc.bytes.length);
  });
});

describe('broken chains', () => {
  it('refuses an incremental snapshot whose parent is missing, another snapshot, or changed, naming the parent', async () => {
    const root = join(tmp.dir, 'chains');
    mkdirSync(root);
    const cases = await brokenChains(root, 40);
    for (const c of cases) {
      const expectChainError = (error: unknown, what: string) => {
        expect(error, `${c.name}: ${what}`).toBeInstanceOf(SnapshotChainError);
        expect((error as Error).message, `${c.name}: ${what}`).toContain(c.parent);
        expect((error as Error).message, `${c.name}: ${what}`).toMatch(c.reason);
      };
      expectChainError(await thrown(() => SnapshotChain.open(c.child).close()), 'SnapshotChain.open');
      expectChainError(await thrown(() => openSnapshot(c.child).close()), 'openSnapshot');
      expectChainError(await thrown(() => cloneSnapshot(c.child, join(c.dir, 'clone.snap'))), 'cloneSnapshot');
      expect(existsSync(join(c.dir, 'clone.snap'))).toBe(false);
      // Nor does a snapshot take it for a base: the guest goes on, no file appears.
      const guest = new Guest(MiB, 99);
      const snapshotter = new Snapshotter({ region: guest.region, dirtyBitmap: guest.bitmap(), hooks: guest.hooks() });
      expectChainError(await thrown(() => snapshotter.take(join(c.dir, 'next.snap'), { base: c.child })), 'Snapshotter.take');
      expect(guest.paused).toBe(false);
      expect(existsSync(join(c.dir, 'next.snap'))).toBe(false);
      expect(tempFilesIn(c.dir)).toEqual([]);
      // A parent that is a whole snapshot on its own still restores, to the state it now holds.
      if (c.parentState) expect(firstDifferentPage((await restoredState(c.parent, c.dir))[0]!, c.parentState), c.name).toBe(-1);
    }
  });
});

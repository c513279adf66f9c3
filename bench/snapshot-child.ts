// The steps of bench/snapshot.ts that run inside a fresh process of their own, through the library (the
// CLI has no lazy restore to run): nothing of an earlier step (mappings, the heap, the addon's state) is
// in their way. Each prints one JSON line on stdout; `touch` prints its line on stderr as `ready {...}`
// and stays alive until it is killed, so that the bench can measure many of them alive at once.
//   node dist/bench/snapshot-child.js lazy SNAP PAGE [addon-loaded]
//       openSnapshot(SNAP), then one byte of page 0, then one of page PAGE: the times from the call, and the
//       first 16 bytes of both pages (the bench compares them with the image). The addon loads at the first
//       call that needs it, openSnapshot here; with addon-loaded it is loaded before the clock starts
//   node dist/bench/snapshot-child.js touch SNAP FRACTION SEED
//       a lazy restore that writes one byte into FRACTION of its pages (drawn from SEED): this process's
//       private memory (smaps_rollup) before openSnapshot and after the writes
//   node dist/bench/snapshot-child.js restore SNAP OUT
//       the eager restore `pagewire restore` runs (restoreChain: every page verified, fsync), without the
//       SHA-256 of the state that the CLI computes on the way: what that costs
//   node dist/bench/snapshot-child.js tracking IMAGE DIR FRACTION REPS
//       a Snapshotter over IMAGE (mapped, with a dirty bitmap) takes a full snapshot into DIR, then REPS
//       times writes new bytes into FRACTION of the pages (marking the bitmap, as a workload's writers do)
//       and takes an incremental snapshot on the last one: its changes come from the tracking
import { randomFillSync } from 'node:crypto';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { snapshotJson } from '../src/cli/snapshot.js';
import { DirtyBitmap } from '../src/memory/dirty-bitmap.js';
import { MemoryRegion } from '../src/memory/region.js';
import { binding } from '../src/native/engine.js';
import { openSnapshot } from '../src/snapshot/lazy-restore.js';
import { SnapshotChain } from '../src/snapshot/snapshot-file.js';
import { restoreChain } from '../src/snapshot/snapshot-restore.js';
import { Snapshotter } from '../src/snapshot/snapshotter.js';
import { privateMemory, type PrivateMemory } from './proc-memory.js';
import { pagesOf, pickPages } from './snapshot-pages.js';

/** What `lazy` prints. */
export interface LazyOpenTimes {
  lazy: boolean;
  /** openSnapshot() returned. */
  openMs: number;
  /** A byte of page 0 read, counted from the call to openSnapshot. */
  firstPageMs: number;
  /** Then a byte of the other page, counted from the same call. */
  otherPageMs: number;
  page: number;
  page0Hex: string;
  otherPageHex: string;
}

/** What `touch` prints after `ready `. */
export interface TouchReport {
  pid: number;
  pagesTouched: number;
  openMs: number;
  touchMs: number;
  before: PrivateMemory;
  after: PrivateMemory;
}

/** What `restore` prints. */
export interface LibraryRestoreTimes {
  /** From opening the chain to the restored file renamed into place, as the CLI's totalTimeMs. */
  totalTimeMs: number;
  pagesWritten: number;
}

/** What `tracking` prints. */
export interface TrackingReport {
  changedPagesPerSnapshot: number;
  full: ReturnType<typeof snapshotJson>;
  incrementals: Array<ReturnType<typeof snapshotJson>>;
}

const HEX_BYTES = 16;

function lazy(snapshot: string, page: number, addonLoaded: boolean): LazyOpenTimes {
  if (addonLoaded) binding();
  const started = performance.now();
  const restored = openSnapshot(snapshot);
  const opened = performance.now();
  const region = restored.regions[0]!;
  const { pageSize } = region;
  const first = region.view(0, HEX_BYTES);
  const firstByte = first[0]!;
  const firstRead = performance.now();
  const other = region.view(page * pageSize, HEX_BYTES);
  const otherByte = other[0]!;
  const otherRead = performance.now();
  // The bytes read are used, so that no read above can be left out.
  if (firstByte !== first[0] || otherByte !== other[0]) throw new Error('a page changed under a private mapping');
  const times = {
    lazy: restored.lazy, openMs: opened - started, firstPageMs: firstRead - started, otherPageMs: otherRead - started, page,
    page0Hex: Buffer.from(first).toString('hex'), otherPageHex: Buffer.from(other).toString('hex'),
  };
  return times;
}

function touch(snapshot: string, fraction: number, seed: number): TouchReport {
  const before = privateMemory('self');
  const started = performance.now();
  const restored = openSnapshot(snapshot);
  const opened = performance.now();
  const region = restored.regions[0]!;
  const pages = pickPages(region.pageCount, pagesOf(fraction, region.pageCount), seed);
  const whole = region.view(0, region.byteLength);
  for (const page of pages) whole[page * region.pageSize] = (seed + page) & 0xff;
  const touched = performance.now();
  const after = privateMemory('self');
  if (!before || !after) throw new Error('no /proc/self/smaps_rollup here: the clone figures need Linux');
  return { pid: process.pid, pagesTouched: pages.length, openMs: opened - started, touchMs: touched - opened, before, after };
}

async function restore(snapshot: string, out: string): Promise<LibraryRestoreTimes> {
  const started = performance.now();
  const chain = SnapshotChain.open(snapshot);
  try {
    const [restored] = await restoreChain(chain, [out]);
    return { totalTimeMs: performance.now() - started, pagesWritten: restored!.pagesWritten };
  } finally {
    chain.close();
  }
}

async function tracking(image: string, dir: string, fraction: number, reps: number): Promise<TrackingReport> {
  const region = MemoryRegion.mapFile(image);
  const bitmap = new DirtyBitmap(region.pageCount);
  try {
    const snapshotter = new Snapshotter({ region, dirtyBitmap: bitmap, hooks: { pause: () => {}, resume: () => {} } });
    const full = await snapshotter.take(join(dir, 'tracking-full.snap'));
    const incrementals = [];
    let base = full.path;
    const count = pagesOf(fraction, region.pageCount);
    const whole = region.view(0, region.byteLength);
    for (let rep = 0; rep < reps; rep++) {
      // Write first, mark second, as the workload's writers do.
      for (const page of pickPages(region.pageCount, count, 1000 + rep)) {
        randomFillSync(whole, page * region.pageSize, region.pageSize);
        bitmap.mark(page);
      }
      const summary = await snapshotter.take(join(dir, `tracking-${rep + 1}.snap`), { base });
      incrementals.push(snapshotJson(summary));
      base = summary.path;
    }
    return { changedPagesPerSnapshot: count, full: snapshotJson(full), incrementals };
  } finally {
    region.close();
  }
}

async function main(argv: string[]): Promise<void> {
  const [mode, ...args] = argv;
  if (mode === 'lazy' && (args.length === 2 || (args.length === 3 && args[2] === 'addon-loaded'))) {
    process.stdout.write(`${JSON.stringify(lazy(args[0]!, Number(args[1]), args.length === 3))}\n`);
  } else if (mode === 'touch' && args.length === 3) {
    process.stderr.write(`ready ${JSON.stringify(touch(args[0]!, Number(args[1]), Number(args[2])))}\n`);
    // Alive, holding its restore, until the bench has measured it and kills it.
    setInterval(() => {}, 1 << 30);
  } else if (mode === 'restore' && args.length === 2) {
    process.stdout.write(`${JSON.stringify(await restore(args[0]!, args[1]!))}\n`);
  } else if (mode === 'tracking' && args.length === 4) {
    process.stdout.write(`${JSON.stringify(await tracking(args[0]!, args[1]!, Number(args[2]), Number(args[3])))}\n`);
  } else {
    process.stderr.write('usage: snapshot-child.js lazy SNAP PAGE [addon-loaded] | touch SNAP FRACTION SEED | restore SNAP OUT | tracking IMAGE DIR FRACTION REPS\n');
    process.exitCode = 2;
  }
}

await main(process.argv.slice(2));

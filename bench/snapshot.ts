// npm run bench:snapshot [-- --mib 1024 --clone-mib 256 --clones 10 --reps 3 --no-qemu --disk-dir DIR --quick]
//
// Snapshots as a user takes them: the real `pagewire snapshot`, `restore` and `clone` processes, and the
// library's lazy restore (openSnapshot) in fresh processes of their own (bench/snapshot-child.ts). The
// mixed image and the snapshots live in a fresh directory under /dev/shm (tmpfs); the disk figures use one
// under the temp directory (on a disk unless it is memory-backed, as the migrate bench chooses; --disk-dir
// names another). Both are removed at the end. Every step is repeated --reps times, interleaved with its
// baseline, and reported as the median with every run.
//   1. Full snapshot of the --mib image, nothing writing it: `snapshot --image IMG --out SNAP --json`
//      totalTimeMs and the process's wall time, against QEMU's own way to save a guest, `migrate
//      "exec:cat > FILE"` of a paused guest whose RAM is the image (bench/qemu-baseline.ts: max-bandwidth
//      lifted, and QEMU's defaults), QEMU's total-time. Then with a writer (`--workload rate=100MB/s`): the pause.
//   2. What the full snapshot allocates: its page area (lseek SEEK_DATA/SEEK_HOLE) against the image's
//      non-zero pages (counted here) x 4096, and the rest (header, hash table, bitmap, trailer).
//   3. Incremental: 1% of the image's pages (drawn at random) get new bytes, then `snapshot --base PREV`
//      (another process: the changes found by comparing hashes), --reps times along one chain; and the
//      same in one process by the library (a Snapshotter and its dirty bitmap: the changes found by the tracking).
//   4. Lazy restore: openSnapshot in a fresh process until a byte of page 0, then of a random page, is read
//      (the addon loads inside that first call; also timed with the addon loaded before the clock starts);
//      eager restore: `restore SNAP --out FILE --json` against two floors, judged against the faster: the write
//      floor (the image's bytes, read beforehand, written into a new file and fsynced by a fresh process,
//      bench/write-floor.ts) and a copy (`dd bs=1M conv=fsync` from the image), on /dev/shm and on the disk
//      (the disk's lazy restore also with the snapshot dropped from the page cache first: dd iflag=nocache),
//      and beside it, not a target, the library's restoreChain without the SHA-256 the CLI computes on the way.
//   5. Clones: --clones lazy restores of a --clone-mib snapshot alive at once, each in its own process,
//      each writing a byte into 1% of its pages: the private memory each added (Private_Dirty in
//      /proc/PID/smaps_rollup, after minus before openSnapshot) and the page cache's growth (Cached in
//      /proc/meminfo, and the snapshot file's own pages by fincore); and `pagewire clone` (its method).
// Every result is checked: a snapshot's SHA-256 against the image's, restores against the image, the bytes
// a lazy restore reads against the image's, an incremental's page count against the pages changed.
// Prints tables and the issue's targets (PASS/MISS); writes every figure to bench/results/snapshot-<timestamp>.json.
// Exits non-zero on any failure or mismatch. Nothing leaves 127.0.0.1 (nothing uses the network at all).
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { closeSync, mkdirSync, openSync, readSync, rmSync } from 'node:fs';
import { cpus } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { optionalString, parseFlags } from '../src/cli/args.js';
import type { snapshotJson } from '../src/cli/snapshot.js';
import { binding } from '../src/native/engine.js';
import { SnapshotFile } from '../src/snapshot/snapshot-file.js';
import { writeMixedImage } from '../src/workload/mixed-image.js';
import { ChildRun, describeExit, lastJsonLine } from './child-run.js';
import { measureWriteFloor, type WriteFloor } from './floors.js';
import {
  benchEnvironment, cleanUpOnExit, formatVerdicts, killChildren, optionsOrUsage, RESULTS_DIR, runBench, saveResults, type Verdict,
} from './housekeeping.js';
import { privateMemory, procKib, type PrivateMemory } from './proc-memory.js';
import { qemuAvailable, runQemuToFile, type QemuFileResult } from './qemu-baseline.js';
import { HOT, IMAGES } from './scenarios.js';
import type { LazyOpenTimes, LibraryRestoreTimes, TouchReport, TrackingReport } from './snapshot-child.js';
import { overwritePages, pagesOf, pickPages } from './snapshot-pages.js';
import { formatSize, formatTable, median, round } from './stats.js';
import { prepareStorage, removeStorage, type FileStorage, type StorageDir } from './storage.js';

const USAGE = 'npm run bench:snapshot -- [--mib 1024] [--clone-mib 256] [--clones 10] [--reps 3] [--no-qemu] [--disk-dir DIR] [--quick]\n' +
  '  --mib        the image of steps 1-4 (mixed pages), MiB\n' +
  '  --clone-mib  the snapshot the clones restore, MiB\n' +
  '  --clones     lazy restores alive at once\n' +
  '  --reps       repetitions of every step (medians reported)\n' +
  '  --no-qemu    leave out QEMU\'s migration into a file\n' +
  '  --disk-dir   where the disk figures are taken (default: the temp directory, if it is on a disk)\n' +
  '  --quick      a smoke run: 256 MiB, 64 MiB clones, 1 repetition (flags given win)';
const CLI = fileURLToPath(new URL('../src/cli/main.js', import.meta.url));
const CHILD = fileURLToPath(new URL('./snapshot-child.js', import.meta.url));
const PAGE = 4096;
/** Share of the pages changed between a snapshot and the incremental one on it, and touched by each clone. */
const CHANGE_FRACTION = 0.01;
const TOUCH_FRACTION = 0.01;
const WRITER_RATE_MBPS = 100;
/** Each process's (and QEMU's) deadline: nothing may hang. */
const STEP_TIMEOUT_MS = 300_000;

/** The issue's targets. */
const TARGET = {
  qemuRatio: 0.6, incrementalFileShare: 0.02, incrementalPauseMs: 20, lazyFirstPageMs: 20, restoreSpeedShare: 0.8,
  cloneMemoryShare: 0.2,
};

interface Options {
  mib: number;
  cloneMib: number;
  clones: number;
  reps: number;
  qemu: boolean;
  diskDir: string | undefined;
  quick: boolean;
}

/** What `pagewire snapshot --json` prints. */
type SnapshotCliJson = ReturnType<typeof snapshotJson> & { sha256: string; sha256Ms: number; workloadWrites: number; counter?: number; codec: string };

interface RestoreCliJson {
  status: string;
  totalTimeMs: number;
  pagesTotal: number;
  pagesWritten: number;
  sha256?: string;
}

interface CloneCliJson {
  status: string;
  method: 'reflink' | 'sparse-copy';
  fileBytes: number;
  totalTimeMs: number;
}

interface CliRun<J> {
  json: J;
  /** Spawn to exit, on the bench's clock. */
  wallMs: number;
  argv: string[];
}

/** A figure over the repetitions: the median, and every run in order. */
interface Figure {
  median: number;
  runs: number[];
}

function parseOptions(argv: string[]): Options {
  const flags = parseFlags(argv, {
    mib: 'string', 'clone-mib': 'string', clones: 'string', reps: 'string', 'no-qemu': 'boolean', 'disk-dir': 'string', quick: 'boolean',
    help: 'boolean',
  });
  if (flags.has('help')) {
    process.stdout.write(`${USAGE}\n`);
    process.exit(0);
  }
  const quick = flags.has('quick');
  const whole = (name: string, fallback: string) => {
    const text = optionalString(flags, name) ?? fallback;
    const value = Number(text);
    if (!(Number.isSafeInteger(value) && value > 0)) throw new Error(`--${name}: expected a positive whole number, got '${text}'`);
    return value;
  };
  const options = {
    mib: whole('mib', quick ? '256' : '1024'), cloneMib: whole('clone-mib', quick ? '64' : '256'), clones: whole('clones', '10'),
    reps: whole('reps', quick ? '1' : '3'), qemu: !flags.has('no-qemu'), diskDir: optionalString(flags, 'disk-dir'), quick,
  };
  // QEMU's guest RAM comes in 2 MiB steps; the region in whole pages.
  if (options.mib % 2 !== 0) throw new Error(`--mib: QEMU's guest RAM needs a multiple of 2 MiB, got ${options.mib}`);
  return options;
}

function say(text: string): void {
  process.stderr.write(`${text}\n`);
}

function figure(values: number[], digits = 1): Figure {
  return { median: round(median(values), digits), runs: values.map((v) => round(v, digits)) };
}

/** "median (run, run, run)", or the one value. */
function show(f: Figure, unit = ''): string {
  return f.runs.length > 1 ? `${f.median}${unit} (${f.runs.join(', ')})` : `${f.median}${unit}`;
}

/** One CLI command as a user runs it; throws unless it exited 0 with status completed. */
async function runCli<J extends { status: string }>(label: string, argv: string[]): Promise<CliRun<J>> {
  const exit = await new ChildRun(label, process.execPath, [CLI, ...argv], { timeoutMs: STEP_TIMEOUT_MS }).exited;
  const json = exit.code === 0 ? lastJsonLine(exit, label) as unknown as J : undefined;
  if (json?.status !== 'completed') throw new Error(`${label} failed: ${describeExit(exit)}`);
  return { json, wallMs: exit.wallMs, argv };
}

/** One run of bench/snapshot-child.js that prints its JSON on stdout. */
async function runChild<J>(label: string, argv: string[]): Promise<J> {
  const exit = await new ChildRun(label, process.execPath, [CHILD, ...argv], { timeoutMs: STEP_TIMEOUT_MS }).exited;
  if (exit.code !== 0) throw new Error(`${label} failed: ${describeExit(exit)}`);
  return lastJsonLine(exit, label) as unknown as J;
}

/** The image's non-zero pages and SHA-256, read here, apart from pagewire. */
function scanImage(path: string, size: number): { nonZeroPages: number; sha256: string } {
  const fd = openSync(path, 'r');
  const chunk = Buffer.alloc(8 << 20);
  const zero = Buffer.alloc(PAGE);
  const sha = createHash('sha256');
  let nonZeroPages = 0;
  try {
    for (let at = 0; at < size; at += chunk.length) {
      const length = Math.min(chunk.length, size - at);
      for (let got = 0; got < length;) got += readSync(fd, chunk, got, length - got, at + got);
      const bytes = chunk.subarray(0, length);
      sha.update(bytes);
      for (let p = 0; p < length; p += PAGE) if (!bytes.subarray(p, p + PAGE).equals(zero)) nonZeroPages++;
    }
  } finally {
    closeSync(fd);
  }
  return { nonZeroPages, sha256: sha.digest('hex') };
}

function readAt(path: string, offset: number, length: number): Buffer {
  const fd = openSync(path, 'r');
  try {
    const bytes = Buffer.alloc(length);
    readSync(fd, bytes, 0, length, offset);
    return bytes;
  } finally {
    closeSync(fd);
  }
}

/** A snapshot file's allocation: its page area's data (lseek SEEK_DATA/SEEK_HOLE) and the rest. */
function allocation(path: string): { fileSize: number; fileBytes: number; pageAreaBytes: number; metadataBytes: number } {
  const file = SnapshotFile.open(path);
  try {
    const { pagesOffset, byteLength } = file.header.regions[0]!;
    const extents = binding().dataExtents(path);
    let pageAreaBytes = 0;
    for (let e = 0; e < extents.length; e += 2) {
      pageAreaBytes += Math.max(0, Math.min(extents[e + 1]!, pagesOffset + byteLength) - Math.max(extents[e]!, pagesOffset));
    }
    return { fileSize: file.fileSize, fileBytes: file.fileBytes, pageAreaBytes, metadataBytes: file.fileBytes - pageAreaBytes };
  } finally {
    file.close();
  }
}

/** The copy floor: `dd bs=1M conv=fsync` from the image into a new file (removed again); its wall time. */
async function ddCopy(image: string, out: string): Promise<number> {
  try {
    const exit = await new ChildRun('dd', 'dd', [`if=${image}`, `of=${out}`, 'bs=1M', 'conv=fsync,excl', 'status=none'], { timeoutMs: STEP_TIMEOUT_MS }).exited;
    if (exit.code !== 0) throw new Error(`dd failed: ${describeExit(exit)}`);
    return exit.wallMs;
  } finally {
    rmSync(out, { force: true });
  }
}

/** Drops a file's clean pages from the page cache (posix_fadvise DONTNEED through GNU dd); only its own pages. */
function dropFromCache(path: string): void {
  execFileSync('dd', [`if=${path}`, 'iflag=nocache', 'count=0', 'status=none']);
}

/** Bytes of the file in the page cache (fincore), or null where fincore is missing. */
function cachedBytes(path: string): number | null {
  try {
    return Number(execFileSync('fincore', ['--bytes', '--noheadings', '--output', 'RES', path], { encoding: 'utf8' }).trim());
  } catch {
    return null;
  }
}

function meminfo(): { cachedBytes: number; shmemBytes: number } {
  const kib = procKib('/proc/meminfo', ['Cached', 'Shmem']);
  if (!kib) throw new Error('no /proc/meminfo here: the clone figures need Linux');
  return { cachedBytes: kib.Cached! * 1024, shmemBytes: kib.Shmem! * 1024 };
}

function snapshotArgv(image: string, out: string, extra: string[] = []): string[] {
  return ['snapshot', '--image', image, '--out', out, ...extra, '--json'];
}

function checkSha(what: string, got: string, expected: string): void {
  if (got !== expected) throw new Error(`${what}: SHA-256 ${got} differs from the image's ${expected}`);
}

// ---- 1 and 2: the full snapshot against QEMU, and what it allocates ----

interface FullSnapshotRun {
  totalTimeMs: number;
  wallMs: number;
  downtimeMs: number;
  sha256Ms: number;
  pagesWritten: number;
  zeroPages: number;
  allocation: ReturnType<typeof allocation>;
}

async function fullSnapshots(options: Options, dir: string, image: string, size: number, facts: { nonZeroPages: number; sha256: string }) {
  const runs: FullSnapshotRun[] = [];
  const qemu: Record<'best' | 'default', Array<Extract<QemuFileResult, { available: true }>>> = { best: [], default: [] };
  let qemuMissing: string | undefined = options.qemu ? undefined : '--no-qemu';
  let kept: string | undefined;
  for (let rep = 0; rep < options.reps; rep++) {
    const out = join(dir, `full-${rep}.snap`);
    const run = await runCli<SnapshotCliJson>('pagewire snapshot', snapshotArgv(image, out));
    checkSha(`full snapshot ${rep + 1}`, run.json.sha256, facts.sha256);
    runs.push({
      totalTimeMs: run.json.totalTimeMs, wallMs: run.wallMs, downtimeMs: run.json.downtimeMs, sha256Ms: run.json.sha256Ms,
      pagesWritten: run.json.pagesWritten, zeroPages: run.json.zeroPages, allocation: allocation(out),
    });
    say(`  full ${rep + 1}/${options.reps}: pagewire ${run.json.totalTimeMs} ms (wall ${round(run.wallMs)} ms, of which SHA-256 after: ` +
      `${run.json.sha256Ms} ms), ${run.json.fileBytes} bytes allocated`);
    // The first is the base of the incremental chain (step 3); the others go at once (memory).
    if (rep === 0) kept = out;
    else rmSync(out, { force: true });
    if (qemuMissing !== undefined) continue;
    for (const config of ['best', 'default'] as const) {
      const result = await runQemuToFile({ imagePath: image, sizeBytes: size, outPath: join(dir, 'qemu.mig'), config, timeoutMs: STEP_TIMEOUT_MS, workDir: dir });
      if (!result.available) {
        qemuMissing = result.reason;
        say(`  QEMU: ${result.reason}`);
        break;
      }
      qemu[config].push(result);
      say(`  full ${rep + 1}/${options.reps}: QEMU exec:cat (${config}) ${result.totalTimeMs} ms, downtime ${result.downtimeMs} ms, ${result.fileSize} bytes`);
    }
  }
  const alloc = runs[0]!.allocation;
  const nonZeroBytes = facts.nonZeroPages * PAGE;
  const qemuFigures = (list: typeof qemu.best) => list.length === 0 ? null : {
    totalTimeMs: figure(list.map((r) => r.totalTimeMs)), downtimeMs: figure(list.map((r) => r.downtimeMs)),
    setupTimeMs: figure(list.map((r) => r.setupTimeMs)), fileSize: list[0]!.fileSize, fileBytes: list[0]!.fileBytes,
    transferredBytes: list[0]!.transferredBytes, raw: list.map((r) => r.raw),
  };
  return {
    base: kept!,
    result: {
      pagewire: {
        totalTimeMs: figure(runs.map((r) => r.totalTimeMs)), wallMs: figure(runs.map((r) => r.wallMs)),
        wallWithoutSha256Ms: figure(runs.map((r) => r.wallMs - r.sha256Ms)), sha256Ms: figure(runs.map((r) => r.sha256Ms)),
        downtimeMs: figure(runs.map((r) => r.downtimeMs)), pagesWritten: runs[0]!.pagesWritten, zeroPages: runs[0]!.zeroPages,
        argv: snapshotArgv('IMG', 'SNAP'), runs,
      },
      qemu: {
        available: qemuMissing === undefined, reason: qemuMissing ?? null, version: qemu.best[0]?.version ?? null,
        best: qemuFigures(qemu.best), default: qemuFigures(qemu.default),
      },
      allocation: {
        pagesTotal: size / PAGE, nonZeroPages: facts.nonZeroPages, nonZeroBytes, zeroPagesReported: runs[0]!.zeroPages, ...alloc,
        fileBytesOverNonZero: round(alloc.fileBytes / nonZeroBytes, 4), pageAreaOverNonZero: round(alloc.pageAreaBytes / nonZeroBytes, 4),
        metadataShareOfFile: round(alloc.metadataBytes / alloc.fileBytes, 4), sameInEveryRun: runs.every((r) => r.allocation.fileBytes === alloc.fileBytes),
      },
    },
  };
}

async function writerSnapshots(options: Options, dir: string, image: string) {
  const runs: Array<{ totalTimeMs: number; downtimeMs: number; rounds: number; stopReason: string; wallMs: number; pagesWritten: number; workloadWrites: number }> = [];
  for (let rep = 0; rep < options.reps; rep++) {
    const out = join(dir, 'writer.snap');
    const workload = `rate=${WRITER_RATE_MBPS}MB/s,hot=${HOT},seed=${rep + 1}`;
    const { json, wallMs } = await runCli<SnapshotCliJson>('pagewire snapshot --workload', snapshotArgv(image, out, ['--workload', workload]));
    rmSync(out, { force: true });
    runs.push({
      totalTimeMs: json.totalTimeMs, downtimeMs: json.downtimeMs, rounds: json.rounds, stopReason: json.stopReason, wallMs,
      pagesWritten: json.pagesWritten, workloadWrites: json.workloadWrites,
    });
    say(`  writer ${rep + 1}/${options.reps}: ${json.totalTimeMs} ms, pause ${json.downtimeMs} ms, ${json.rounds} rounds (${json.stopReason})`);
  }
  return {
    workload: `rate=${WRITER_RATE_MBPS}MB/s,hot=${HOT},seed=<rep>`, totalTimeMs: figure(runs.map((r) => r.totalTimeMs)),
    downtimeMs: figure(runs.map((r) => r.downtimeMs)), wallMs: figure(runs.map((r) => r.wallMs)), runs,
  };
}

// ---- 3: incremental snapshots ----

interface IncrementalRun {
  changedPages: number;
  pagesWritten: number;
  fileBytes: number;
  downtimeMs: number;
  totalTimeMs: number;
  changesFoundBy: string | undefined;
  wallMs?: number;
}

function incrementalSummary(runs: IncrementalRun[], size: number) {
  const fileBytes = figure(runs.map((r) => r.fileBytes), 0);
  return {
    changedPages: runs[0]!.changedPages, fileBytes, fileShareOfRegion: round(fileBytes.median / size, 5),
    downtimeMs: figure(runs.map((r) => r.downtimeMs), 2), totalTimeMs: figure(runs.map((r) => r.totalTimeMs)),
    ...(runs[0]!.wallMs === undefined ? {} : { wallMs: figure(runs.map((r) => r.wallMs!)) }), runs,
  };
}

function checkIncremental(how: string, run: IncrementalRun, expected: 'hashes' | 'tracking'): void {
  if (run.pagesWritten !== run.changedPages || run.changesFoundBy !== expected) {
    throw new Error(`${how}: wrote ${run.pagesWritten} pages for ${run.changedPages} changed, changes found by ${run.changesFoundBy} (expected ${expected})`);
  }
}

async function incrementalByHashes(options: Options, dir: string, image: string, size: number, base: string) {
  const pageCount = size / PAGE;
  const runs: IncrementalRun[] = [];
  const chain = [base];
  for (let rep = 0; rep < options.reps; rep++) {
    const pages = pickPages(pageCount, pagesOf(CHANGE_FRACTION, pageCount), rep + 1);
    overwritePages(image, pages, PAGE);
    const out = join(dir, `incremental-${rep + 1}.snap`);
    const { json, wallMs } = await runCli<SnapshotCliJson>('pagewire snapshot --base', snapshotArgv(image, out, ['--base', chain.at(-1)!]));
    chain.push(out);
    const run = {
      changedPages: pages.length, pagesWritten: json.pagesWritten, fileBytes: json.fileBytes, downtimeMs: json.downtimeMs,
      totalTimeMs: json.totalTimeMs, changesFoundBy: json.changesFoundBy, wallMs,
    };
    checkIncremental(`incremental ${rep + 1}`, run, 'hashes');
    runs.push(run);
    say(`  incremental ${rep + 1}/${options.reps} (hashes): ${json.pagesWritten} pages, ${json.fileBytes} bytes allocated, pause ${json.downtimeMs} ms, ` +
      `${json.totalTimeMs} ms`);
  }
  // The chain's state is the image's: restored whole from the last file, every page verified on the way.
  const restored = join(dir, 'chain-check.bin');
  const { json } = await runCli<RestoreCliJson>('pagewire restore (chain check)', ['restore', chain.at(-1)!, '--out', restored, '--json', '--sha256']);
  rmSync(restored, { force: true });
  checkSha(`the chain of ${chain.length} files`, json.sha256 ?? '(none)', scanImage(image, size).sha256);
  for (const file of chain) rmSync(file, { force: true });
  return { ...incrementalSummary(runs, size), argv: snapshotArgv('IMG', 'INC', ['--base', 'PREV']), chainRestoreMatchesImage: true };
}

async function incrementalByTracking(options: Options, dir: string, image: string, size: number) {
  const work = join(dir, 'tracking');
  mkdirSync(work);
  try {
    const report = await runChild<TrackingReport>('tracking', ['tracking', image, work, String(CHANGE_FRACTION), String(options.reps)]);
    const runs = report.incrementals.map((s): IncrementalRun => ({
      changedPages: report.changedPagesPerSnapshot, pagesWritten: s.pagesWritten, fileBytes: s.fileBytes, downtimeMs: s.downtimeMs,
      totalTimeMs: s.totalTimeMs, changesFoundBy: s.changesFoundBy,
    }));
    runs.forEach((run, i) => {
      checkIncremental(`tracked incremental ${i + 1}`, run, 'tracking');
      say(`  incremental ${i + 1}/${options.reps} (tracking): ${run.pagesWritten} pages, ${run.fileBytes} bytes allocated, pause ${run.downtimeMs} ms`);
    });
    return { ...incrementalSummary(runs, size), full: report.full };
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}

// ---- 4: restores ----

interface LazyFigures {
  firstPageMs: Figure;
  otherPageMs: Figure;
  openMs: Figure;
  runs: LazyOpenTimes[];
}

interface StorageRestore {
  storage: string;
  snapshot: { totalTimeMs: number; wallMs: number; fileBytes: number };
  lazy: LazyFigures;
  /** The same with the addon loaded before the clock starts. */
  lazyAddonLoaded: LazyFigures;
  /** The same as lazy, the snapshot dropped from the page cache first (disk only). */
  lazyCold?: LazyFigures;
  eager: { totalTimeMs: Figure; wallMs: Figure; mbPerSec: number; pagesWritten: number };
  /** The library's restoreChain as the CLI runs it, but without the SHA-256 of the state (not a target: where the time goes). */
  eagerWithoutSha256: { totalTimeMs: Figure; speedShare: number };
  floor: { totalMs: Figure; mbPerSec: number; runs: WriteFloor[] };
  /** `dd if=IMAGE of=NEW bs=1M conv=fsync`: the bytes read from the page cache and written, one buffer, then fsync (wall). */
  ddCopy: { wallMs: Figure; mbPerSec: number };
  /** The faster of the two floors (by median), which the target is judged against. */
  floorUsed: 'write floor' | 'dd copy';
  /** floor time / restore time: the restore's speed as a share of the faster floor's. */
  speedShare: number;
  speedShareWall: number;
}

async function restores(options: Options, image: string, size: number, where: StorageDir, dir: string, cold: boolean): Promise<StorageRestore> {
  const snap = join(dir, 'restore.snap');
  const taken = await runCli<SnapshotCliJson>('pagewire snapshot', snapshotArgv(image, snap));
  const facts = scanImage(image, size);
  checkSha('the snapshot to restore', taken.json.sha256, facts.sha256);
  const lazy: LazyOpenTimes[] = [];
  const lazyCold: LazyOpenTimes[] = [];
  const lazyLoaded: LazyOpenTimes[] = [];
  const eager: Array<CliRun<RestoreCliJson>> = [];
  const library: LibraryRestoreTimes[] = [];
  const floors: WriteFloor[] = [];
  const copies: number[] = [];
  const label = `${where.root} (${where.fsType})`;
  try {
    for (let rep = 0; rep < options.reps; rep++) {
      floors.push(await measureWriteFloor(image, join(dir, 'floor.bin'), STEP_TIMEOUT_MS));
      copies.push(await ddCopy(image, join(dir, 'floor.bin')));
      const out = join(dir, 'restored.bin');
      const cliRestore = async () => {
        // As a user restores: every page verified, no SHA-256 of the state (--sha256 asks for one); the
        // bench checks the file it wrote.
        const restored = await runCli<RestoreCliJson>('pagewire restore', ['restore', snap, '--out', out, '--json']);
        checkSha(`restore ${rep + 1} on ${label}`, scanImage(out, size).sha256, facts.sha256);
        rmSync(out, { force: true });
        eager.push(restored);
      };
      const libraryRestore = async () => {
        library.push(await runChild<LibraryRestoreTimes>('library restore', ['restore', snap, out]));
        checkSha(`library restore ${rep + 1} on ${label}`, scanImage(out, size).sha256, facts.sha256);
        rmSync(out, { force: true });
      };
      // In turn first: what one leaves behind (writeback, freed memory) is not always the other's to meet.
      for (const step of rep % 2 === 0 ? [cliRestore, libraryRestore] : [libraryRestore, cliRestore]) await step();
      const restored = eager.at(-1)!;
      const variants: Array<[LazyOpenTimes[], 'warm' | 'addon-loaded' | 'cold']> = [[lazy, 'warm'], [lazyLoaded, 'addon-loaded']];
      if (cold) variants.push([lazyCold, 'cold']);
      for (const [list, variant] of variants) {
        if (variant === 'cold') dropFromCache(snap);
        const page = 1 + Math.floor(Math.random() * (size / PAGE - 1));
        const times = await runChild<LazyOpenTimes>('lazy restore', ['lazy', snap, String(page), ...(variant === 'addon-loaded' ? ['addon-loaded'] : [])]);
        for (const [at, hex] of [[0, times.page0Hex], [page, times.otherPageHex]] as const) {
          if (readAt(image, at * PAGE, hex.length / 2).toString('hex') !== hex) throw new Error(`lazy restore on ${label}: page ${at} differs from the image`);
        }
        if (!times.lazy) throw new Error('openSnapshot did not restore lazily (no addon?)');
        list.push(times);
      }
      say(`  ${label} ${rep + 1}/${options.reps}: floor ${floors.at(-1)!.totalMs} ms, dd ${round(copies.at(-1)!)} ms, restore ${restored.json.totalTimeMs} ms ` +
        `(wall ${round(restored.wallMs)}; without SHA-256 ${round(library.at(-1)!.totalTimeMs)}), lazy first page ${round(lazy.at(-1)!.firstPageMs, 2)} ms ` +
        `(addon loaded first ${round(lazyLoaded.at(-1)!.firstPageMs, 2)} ms)` +
        (cold ? `, from a cold cache ${round(lazyCold.at(-1)!.firstPageMs, 2)} ms` : ''));
    }
  } finally {
    rmSync(snap, { force: true });
  }
  const lazyFigures = (list: LazyOpenTimes[]): LazyFigures => ({
    firstPageMs: figure(list.map((t) => t.firstPageMs), 2), otherPageMs: figure(list.map((t) => t.otherPageMs), 2),
    openMs: figure(list.map((t) => t.openMs), 2), runs: list,
  });
  const writeFloorMs = figure(floors.map((f) => f.totalMs));
  const ddMs = figure(copies);
  const floorUsed = ddMs.median < writeFloorMs.median ? 'dd copy' : 'write floor';
  const floorMs = floorUsed === 'dd copy' ? ddMs : writeFloorMs;
  const restoreMs = figure(eager.map((r) => r.json.totalTimeMs));
  const restoreWallMs = figure(eager.map((r) => r.wallMs));
  const libraryMs = figure(library.map((r) => r.totalTimeMs));
  return {
    storage: label,
    snapshot: { totalTimeMs: taken.json.totalTimeMs, wallMs: round(taken.wallMs), fileBytes: taken.json.fileBytes },
    lazy: lazyFigures(lazy), lazyAddonLoaded: lazyFigures(lazyLoaded), ...(cold ? { lazyCold: lazyFigures(lazyCold) } : {}),
    eager: { totalTimeMs: restoreMs, wallMs: restoreWallMs, mbPerSec: round(size / 1e6 / (restoreMs.median / 1000)), pagesWritten: eager[0]!.json.pagesWritten },
    eagerWithoutSha256: { totalTimeMs: libraryMs, speedShare: round(floorMs.median / libraryMs.median, 3) },
    floor: { totalMs: writeFloorMs, mbPerSec: round(size / 1e6 / (writeFloorMs.median / 1000)), runs: floors },
    ddCopy: { wallMs: ddMs, mbPerSec: round(size / 1e6 / (ddMs.median / 1000)) }, floorUsed,
    speedShare: round(floorMs.median / restoreMs.median, 3), speedShareWall: round(floorMs.median / restoreWallMs.median, 3),
  };
}

// ---- 5: clones ----

interface CloneSet {
  clones: number;
  pagesTouchedEach: number;
  /** Sums over the clones of after - before openSnapshot, each measured by the clone itself. */
  privateDirtyAddedBytes: number;
  anonymousAddedBytes: number;
  /** The same clones' Private_Dirty read by the bench while all were alive (their whole process, node included). */
  privateDirtyTotalBytes: number;
  cachedGrowthBytes: number;
  shmemGrowthBytes: number;
  /** The snapshot file's pages in the page cache, after - before (fincore). */
  snapshotCachedGrowthBytes: number | null;
  /** Σ private dirty added + the Cached growth (never below zero). */
  totalAddedBytes: number;
  reports: TouchReport[];
}

async function cloneSet(options: Options, snap: string, coldCache: boolean): Promise<CloneSet> {
  if (coldCache) dropFromCache(snap);
  const cacheBefore = cachedBytes(snap);
  const before = meminfo();
  const children: ChildRun[] = [];
  try {
    const reports = await Promise.all(Array.from({ length: options.clones }, (_, i) => new Promise<TouchReport>((resolve, reject) => {
      const child = new ChildRun(`clone ${i + 1}`, process.execPath, [CHILD, 'touch', snap, String(TOUCH_FRACTION), String(i + 1)], {
        timeoutMs: STEP_TIMEOUT_MS,
        onStderrLine: (line) => { if (line.startsWith('ready ')) resolve(JSON.parse(line.slice('ready '.length)) as TouchReport); },
      });
      children.push(child);
      void child.exited.then((exit) => reject(new Error(`clone ${i + 1} ended before it was ready: ${describeExit(exit)}`)));
    })));
    const after = meminfo();
    const cacheAfter = cachedBytes(snap);
    const whole = children.map((c) => privateMemory(c.pid)).filter((m): m is PrivateMemory => m !== null);
    const sum = (f: (r: TouchReport) => number) => reports.reduce((n, r) => n + f(r), 0);
    const privateDirtyAddedBytes = sum((r) => r.after.privateDirtyBytes - r.before.privateDirtyBytes);
    const cachedGrowthBytes = after.cachedBytes - before.cachedBytes;
    return {
      clones: options.clones, pagesTouchedEach: reports[0]!.pagesTouched, privateDirtyAddedBytes,
      anonymousAddedBytes: sum((r) => r.after.anonymousBytes - r.before.anonymousBytes),
      privateDirtyTotalBytes: whole.reduce((n, m) => n + m.privateDirtyBytes, 0),
      cachedGrowthBytes, shmemGrowthBytes: after.shmemBytes - before.shmemBytes,
      snapshotCachedGrowthBytes: cacheBefore === null || cacheAfter === null ? null : cacheAfter - cacheBefore,
      totalAddedBytes: privateDirtyAddedBytes + Math.max(0, cachedGrowthBytes), reports,
    };
  } finally {
    for (const child of children) child.kill();
    await Promise.all(children.map((c) => c.exited));
  }
}

async function clones(options: Options, image: string, where: StorageDir, dir: string, coldCache: boolean) {
  const size = options.cloneMib * 2 ** 20;
  const snap = join(dir, 'clone-source.snap');
  await runCli<SnapshotCliJson>('pagewire snapshot', snapshotArgv(image, snap));
  const label = `${where.root} (${where.fsType})${coldCache ? ', snapshot dropped from the page cache before each set' : ''}`;
  const sets: CloneSet[] = [];
  const copies: Array<CliRun<CloneCliJson>> = [];
  try {
    for (let rep = 0; rep < options.reps; rep++) {
      const set = await cloneSet(options, snap, coldCache);
      sets.push(set);
      const out = join(dir, 'clone-copy.snap');
      copies.push(await runCli<CloneCliJson>('pagewire clone', ['clone', snap, '--out', out, '--json']));
      rmSync(out, { force: true });
      say(`  ${label} ${rep + 1}/${options.reps}: ${options.clones} lazy restores added ${(set.privateDirtyAddedBytes / 2 ** 20).toFixed(1)} MiB private, ` +
        `page cache ${(set.cachedGrowthBytes / 2 ** 20).toFixed(1)} MiB; pagewire clone ${copies.at(-1)!.json.method} ${copies.at(-1)!.json.totalTimeMs} ms`);
    }
  } finally {
    rmSync(snap, { force: true });
  }
  const mibFigure = (f: (s: CloneSet) => number) => figure(sets.map((s) => f(s) / 2 ** 20));
  const total = mibFigure((s) => s.totalAddedBytes);
  return {
    storage: label, snapshotBytes: size, clones: options.clones, pagesTouchedEach: sets[0]!.pagesTouchedEach,
    privateDirtyAddedMiB: mibFigure((s) => s.privateDirtyAddedBytes), anonymousAddedMiB: mibFigure((s) => s.anonymousAddedBytes),
    cachedGrowthMiB: mibFigure((s) => s.cachedGrowthBytes), shmemGrowthMiB: mibFigure((s) => s.shmemGrowthBytes),
    snapshotCachedGrowthMiB: sets[0]!.snapshotCachedGrowthBytes === null ? null : mibFigure((s) => s.snapshotCachedGrowthBytes!),
    totalAddedMiB: total, totalShareOfSnapshot: round((total.median * 2 ** 20) / size, 4),
    privateDirtyWholeProcessesMiB: mibFigure((s) => s.privateDirtyTotalBytes),
    clone: {
      method: copies[0]!.json.method, totalTimeMs: figure(copies.map((c) => c.json.totalTimeMs)), wallMs: figure(copies.map((c) => c.wallMs)),
      fileBytes: copies[0]!.json.fileBytes,
    },
    sets,
  };
}

// ---- the report ----

type Results = {
  full: Awaited<ReturnType<typeof fullSnapshots>>['result'];
  writer: Awaited<ReturnType<typeof writerSnapshots>>;
  incrementalHashes: Awaited<ReturnType<typeof incrementalByHashes>>;
  incrementalTracking: Awaited<ReturnType<typeof incrementalByTracking>>;
  restores: StorageRestore[];
  clones: Array<Awaited<ReturnType<typeof clones>>>;
};

function verdicts(r: Results, size: number, cloneSize: number): Verdict[] {
  const out: Verdict[] = [];
  const v = (target: string, config: string, value: string, pass: boolean | null) => out.push({ target, config, value, pass });
  const pw = r.full.pagewire;
  const best = r.full.qemu.best;
  if (best) {
    const ratio = pw.totalTimeMs.median / best.totalTimeMs.median;
    v(`snapshot <= ${TARGET.qemuRatio}x QEMU exec:cat`, `${formatSize(size)} mixed, /dev/shm, QEMU max-bandwidth lifted`,
      `${pw.totalTimeMs.median} / ${best.totalTimeMs.median} ms = ${round(ratio, 2)}x (process wall ${round(pw.wallMs.median / best.totalTimeMs.median, 2)}x)`,
      ratio <= TARGET.qemuRatio);
  } else {
    v(`snapshot <= ${TARGET.qemuRatio}x QEMU exec:cat`, 'QEMU', `not run: ${r.full.qemu.reason}`, null);
  }
  const a = r.full.allocation;
  v('page area allocates no more than the non-zero pages', 'the full snapshot',
    `${a.pageAreaBytes} of ${a.nonZeroBytes} bytes (${a.pageAreaOverNonZero}x); whole file ${a.fileBytesOverNonZero}x, metadata ` +
    `${(a.metadataShareOfFile * 100).toFixed(2)}%`, a.pageAreaBytes <= a.nonZeroBytes);
  for (const [how, inc] of [['hashes, CLI', r.incrementalHashes], ['tracking, library', r.incrementalTracking]] as const) {
    v(`incremental file <= ${TARGET.incrementalFileShare * 100}% of the region`, `1% changed, ${how}`,
      `${(inc.fileShareOfRegion * 100).toFixed(2)}% (${inc.fileBytes.median} bytes)`, inc.fileShareOfRegion <= TARGET.incrementalFileShare);
    v(`incremental pause < ${TARGET.incrementalPauseMs} ms`, `1% changed, ${how}`, show(inc.downtimeMs, ' ms'), inc.downtimeMs.median < TARGET.incrementalPauseMs);
  }
  for (const s of r.restores) {
    for (const [which, lazy] of [['page cache warm', s.lazy], ['page cache cold', s.lazyCold]] as const) {
      if (!lazy) continue;
      v(`lazy restore: first page <= ${TARGET.lazyFirstPageMs} ms`, `${s.storage}${s.lazyCold ? `, ${which}` : ''}, fresh process`,
        `${show(lazy.firstPageMs, ' ms')}${lazy === s.lazy ? `; addon loaded first: ${show(s.lazyAddonLoaded.firstPageMs, ' ms')}` : ''}`,
        lazy.firstPageMs.median <= TARGET.lazyFirstPageMs);
    }
    v(`eager restore >= ${TARGET.restoreSpeedShare}x the floor's speed`, s.storage,
      `${s.speedShare}x (${s.eager.totalTimeMs.median} ms against ${s.floorUsed}'s ${s.floorUsed === 'dd copy' ? s.ddCopy.wallMs.median : s.floor.totalMs.median} ms; ` +
      `process wall ${s.speedShareWall}x)`,
      s.speedShare >= TARGET.restoreSpeedShare);
  }
  for (const c of r.clones) {
    v(`${c.clones} clones add < ${TARGET.cloneMemoryShare} x ${formatSize(cloneSize)}`, c.storage,
      `${c.totalAddedMiB.median} MiB = ${c.totalShareOfSnapshot}x`, c.totalShareOfSnapshot < TARGET.cloneMemoryShare);
  }
  return out;
}

function formatReport(options: Options, size: number, r: Results, targets: Verdict[]): string {
  const runs = options.reps > 1 ? 'median (runs)' : 'one run';
  const pw = r.full.pagewire;
  const q = r.full.qemu;
  const qemuRow = (config: 'best' | 'default') => {
    const f = q[config];
    return f ? [`QEMU ${q.version?.split(' ')[0]} migrate "exec:cat > FILE" (${config === 'best' ? 'max-bandwidth lifted' : 'defaults: 128 MiB/s cap'})`,
      show(f.totalTimeMs), '', show(f.downtimeMs), String(f.fileBytes)] : [`QEMU (${config})`, q.reason ?? 'not run', '', '', ''];
  };
  const full = formatTable([
    ['', `total ms, ${runs}`, 'process wall ms', 'pause ms', 'file bytes allocated'],
    ['pagewire snapshot', show(pw.totalTimeMs), `${show(pw.wallMs)}; without the SHA-256 after: ${pw.wallWithoutSha256Ms.median}`,
      show(pw.downtimeMs, ''), String(r.full.allocation.fileBytes)],
    qemuRow('best'), qemuRow('default'),
    [`pagewire snapshot --workload ${r.writer.workload}`, show(r.writer.totalTimeMs), show(r.writer.wallMs), show(r.writer.downtimeMs), ''],
  ], [false, true, true, true, true]);
  const a = r.full.allocation;
  const alloc = formatTable([
    ['pages', 'non-zero (counted here)', 'zero (snapshot says)', 'non-zero x 4096', 'page area allocated', 'whole file allocated', 'metadata', 'file size'],
    [String(a.pagesTotal), String(a.nonZeroPages), String(a.zeroPagesReported), String(a.nonZeroBytes), String(a.pageAreaBytes),
      `${a.fileBytes} (${a.fileBytesOverNonZero}x)`, `${a.metadataBytes} (${(a.metadataShareOfFile * 100).toFixed(2)}% of the file)`, String(a.fileSize)],
  ], Array<boolean>(8).fill(true));
  const inc = formatTable([
    ['changes found by', 'pages changed', 'pages written', 'file bytes allocated', '% of region', 'pause ms', 'total ms'],
    ...([['hashes (CLI, another process)', r.incrementalHashes], ['tracking (library, one process)', r.incrementalTracking]] as const).map(([how, s]) => [
      how, String(s.changedPages), s.runs.map((x) => x.pagesWritten).join(', '), show(s.fileBytes), (s.fileShareOfRegion * 100).toFixed(2),
      show(s.downtimeMs), show(s.totalTimeMs)]),
  ], [false, true, true, true, true, true, true]);
  const rest = formatTable([
    ['storage', 'lazy: first page ms', 'random page ms', 'addon loaded first: first page ms', 'cold cache: first page ms', 'eager restore ms', 'restore wall ms', 'write floor ms',
      'dd copy ms', 'restore / faster floor speed', 'library, no SHA-256: ms (speed)'],
    ...r.restores.map((s) => [s.storage, show(s.lazy.firstPageMs), show(s.lazy.otherPageMs), show(s.lazyAddonLoaded.firstPageMs),
      s.lazyCold ? show(s.lazyCold.firstPageMs) : 'n/a (tmpfs)',
      show(s.eager.totalTimeMs), show(s.eager.wallMs), show(s.floor.totalMs), show(s.ddCopy.wallMs), `${s.speedShare}x (wall ${s.speedShareWall}x)`,
      `${show(s.eagerWithoutSha256.totalTimeMs)} (${s.eagerWithoutSha256.speedShare}x)`]),
  ], [false, ...Array<boolean>(10).fill(true)]);
  const cl = formatTable([
    ['storage', 'private dirty added MiB (Σ)', 'anonymous added MiB (Σ)', 'Cached growth MiB', 'Shmem growth MiB', 'snapshot in cache, growth MiB (fincore)',
      'total added MiB', 'share of snapshot', 'pagewire clone ms (method)'],
    ...r.clones.map((c) => [c.storage, show(c.privateDirtyAddedMiB), show(c.anonymousAddedMiB), show(c.cachedGrowthMiB), show(c.shmemGrowthMiB),
      c.snapshotCachedGrowthMiB ? show(c.snapshotCachedGrowthMiB) : 'n/a', show(c.totalAddedMiB), String(c.totalShareOfSnapshot),
      `${show(c.clone.totalTimeMs)} (${c.clone.method})`]),
  ], [false, ...Array<boolean>(8).fill(true)]);
  const goals = formatVerdicts(targets);
  return `\npagewire snapshot bench: ${formatSize(size)} mixed image in /dev/shm (node ${process.version}, ${cpus().length} cpus), ` +
    `${options.reps} repetition${options.reps === 1 ? '' : 's'}\n` +
    `\n1. full snapshot into /dev/shm (pagewire snapshot --image IMG --out SNAP --json; QEMU: a paused guest whose RAM is the image)\n\n${full}\n` +
    `\n2. what the full snapshot allocates (bytes)\n\n${alloc}\n` +
    `\n3. incremental snapshots, ${CHANGE_FRACTION * 100}% of the pages changed since the last (a chain of ${options.reps})\n\n${inc}\n` +
    '\n4. restores (lazy: openSnapshot in a fresh process until a byte of page 0 is read, the addon loading inside it unless loaded first;\n' +
    '   eager: pagewire restore SNAP --out FILE --json,\n' +
    `   every page verified, SHA-256, fsync; write floor: the image's bytes, read beforehand, written into a new file and fsynced;\n` +
    `   dd copy: dd if=IMAGE of=NEW bs=1M conv=fsync; the target is judged against the faster floor; library: restoreChain\n` +
    `   in a fresh process, as the CLI but without the SHA-256)\n\n${rest}\n` +
    `\n5. ${options.clones} lazy restores of a ${formatSize(options.cloneMib * 2 ** 20)} snapshot alive at once, each writing 1% of its pages\n\n${cl}\n` +
    `\nthe issue's targets\n\n${goals}\n`;
}

async function main(): Promise<number> {
  const options = optionsOrUsage('pagewire bench', USAGE, parseOptions);
  if (!options) return 2;
  const startedAt = new Date();
  const stamp = startedAt.toISOString().replace(/[:.]/g, '-');
  const size = options.mib * 2 ** 20;
  const cloneSize = options.cloneMib * 2 ** 20;
  const qemu = options.qemu ? await qemuAvailable() : { available: false, reason: '--no-qemu' };
  const record: Record<string, unknown> = {
    bench: 'snapshot', status: 'running', startedAt: startedAt.toISOString(), options,
    environment: { ...benchEnvironment(), storage: null as unknown, qemu },
    image: { sizeBytes: size, cloneSizeBytes: cloneSize, pageSize: PAGE, ...IMAGES.mixed },
    method: 'See the header of bench/snapshot.ts: the real CLI processes (snapshot, restore, clone) and the library\'s openSnapshot in ' +
      'fresh processes; medians over --reps runs, each interleaved with its baseline.',
  };
  let failure: string | undefined;
  let storage: Partial<Record<FileStorage, StorageDir>> = {};
  const cleanup = () => {
    killChildren();
    removeStorage(storage);
  };
  cleanUpOnExit(cleanup);
  try {
    storage = prepareStorage(new Set(['shm', 'disk']), options.diskDir, RESULTS_DIR);
    const shm = storage.shm!;
    const disk = storage.disk!;
    (record.environment as Record<string, unknown>).storage = storage;
    const image = join(shm.dir, 'image.bin');
    say(`pagewire bench: generating the ${formatSize(size)} mixed image in ${image}`);
    writeMixedImage(image, { size, ...IMAGES.mixed });
    const facts = scanImage(image, size);
    (record.image as Record<string, unknown>).nonZeroPages = facts.nonZeroPages;

    say('1. full snapshots against QEMU\'s migration into a file');
    const full = await fullSnapshots(options, shm.dir, image, size, facts);
    record.full = full.result;
    say('3. incremental snapshots');
    const incrementalHashes = await incrementalByHashes(options, shm.dir, image, size, full.base);
    record.incrementalHashes = incrementalHashes;
    const incrementalTracking = await incrementalByTracking(options, shm.dir, image, size);
    record.incrementalTracking = incrementalTracking;
    say('1. full snapshots with a writer');
    const writer = await writerSnapshots(options, shm.dir, image);
    record.writer = writer;
    say('4. restores');
    const restoreResults = [await restores(options, image, size, shm, shm.dir, false), await restores(options, image, size, disk, disk.dir, true)];
    record.restores = restoreResults;
    say('5. clones');
    const cloneImage = join(shm.dir, 'clone-image.bin');
    writeMixedImage(cloneImage, { size: cloneSize, ...IMAGES.mixed, seed: IMAGES.mixed.seed! + 1 });
    const cloneResults = [await clones(options, cloneImage, shm, shm.dir, false), await clones(options, cloneImage, disk, disk.dir, true)];
    record.clones = cloneResults;

    const results: Results = { full: full.result, writer, incrementalHashes, incrementalTracking, restores: restoreResults, clones: cloneResults };
    const targets = verdicts(results, size, cloneSize);
    record.targets = targets;
    process.stdout.write(formatReport(options, size, results, targets));
  } catch (error) {
    failure = (error as Error).message;
    process.stderr.write(`\npagewire bench: FAILED: ${failure}\n`);
  } finally {
    Object.assign(record, { status: failure === undefined ? 'completed' : 'failed', error: failure ?? null, finishedAt: new Date().toISOString() });
    cleanup();
    saveResults('snapshot', stamp, record);
  }
  return failure === undefined ? 0 : 1;
}

runBench(main);

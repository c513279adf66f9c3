// npm run bench:codec [-- --size 64MiB --ops zero,xxh64,... --min-time 0.5]
//
// Micro-benchmarks of the byte-level layer with the `benchmark` package: each operation runs on the C++
// addon and on the TypeScript twin, and is reported in GB/s of page data next to Buffer.copy of the
// same bytes, measured in the same run (this machine is shared and noisy: read the ratios). Medians of
// the benchmark's samples. Writes bench/results/codec-<timestamp>.json.
import { mkdirSync, writeFileSync } from 'node:fs';
import { randomFillSync } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import Benchmark from 'benchmark';
import { optionalString, parseFlags, parseSize } from '../src/cli/args.js';
import { loadAddon, type NativeBinding, type NativePageEncoder } from '../src/native/binding.js';
import { twin } from '../src/native/twin/index.js';
import { mixedImage } from '../src/workload/mixed-image.js';
import { formatTable, median } from './stats.js';

const USAGE = 'npm run bench:codec -- [--size 64MiB] [--ops bitmap,zero,xxh64,xbzrle-encode,...] [--min-time 0.5]';
const RESULTS_DIR = fileURLToPath(new URL('../../bench/results/', import.meta.url));
const PAGE = 4096;
const CHANGED_BYTES = 64;

interface Op {
  name: string;
  /** Bytes of page data one call processes: the GB/s figure divides these by the call's time. */
  bytes: number;
  /** Runs the operation once on an implementation; returns a check value so the work cannot be skipped. */
  run(engine: NativeBinding): number;
}

interface Row {
  op: string;
  impl: 'addon' | 'twin' | 'Buffer.copy';
  gbPerSec: number;
  /** This row's speed over Buffer.copy's of the same bytes in the same run. */
  ofCopy: number;
  samples: number;
}

function main(): void {
  const flags = parseFlags(process.argv.slice(2), { size: 'string', ops: 'string', 'min-time': 'string', help: 'boolean' });
  if (flags.has('help')) {
    process.stdout.write(`${USAGE}\n`);
    return;
  }
  const size = parseSize(optionalString(flags, 'size') ?? '64MiB', 'size');
  const minTime = Number(optionalString(flags, 'min-time') ?? '0.5');
  const ops = buildOps(size);
  const wanted = optionalString(flags, 'ops')?.split(',');
  const chosen = wanted ? ops.filter((op) => wanted.includes(op.name)) : ops;
  if (chosen.length === 0) throw new Error(`--ops: none of ${wanted?.join(',')} is one of ${ops.map((o) => o.name).join(',')}`);
  const addon = loadAddon();

  const copySrc = Buffer.alloc(size, 1);
  const copyDst = Buffer.alloc(size);
  const rows: Row[] = [];
  for (const op of chosen) {
    // Buffer.copy of the same number of bytes, measured right before the operation.
    const copyBytes = Math.min(op.bytes, size);
    const copy = measure(`copy ${copyBytes}`, () => copySrc.copy(copyDst, 0, 0, copyBytes), minTime);
    const copyGb = copyBytes / copy.seconds / 1e9;
    rows.push({ op: op.name, impl: 'Buffer.copy', gbPerSec: copyGb, ofCopy: 1, samples: copy.samples });
    for (const [impl, engine] of [['addon', addon], ['twin', twin]] as const) {
      const result = measure(`${op.name} ${impl}`, () => op.run(engine), minTime);
      const gb = op.bytes / result.seconds / 1e9;
      rows.push({ op: op.name, impl, gbPerSec: gb, ofCopy: gb / copyGb, samples: result.samples });
    }
    process.stderr.write(`${op.name} done\n`);
  }
  printRows(rows);
  const sizes = encodedSizes(size, addon);
  process.stdout.write(`\nencoded size (addon): a mixed image's round 1 is ${(sizes.mixedRound1 * 100).toFixed(1)}% of its bytes; ` +
    `a round where every page changed in ${CHANGED_BYTES} bytes is ${(sizes.deltaRound * 100).toFixed(1)}%\n`);
  mkdirSync(RESULTS_DIR, { recursive: true });
  const file = `${RESULTS_DIR}codec-${new Date().toISOString().replace(/[:.]/g, '-')}.json`;
  writeFileSync(file, `${JSON.stringify({ size, pageSize: PAGE, minTime, rows, encodedSizes: sizes }, null, 2)}\n`);
  process.stdout.write(`\nresults: ${file}\n`);
}

/**
 * Encoded bytes over region bytes: round 1 of a mixed image (40% zero, 30% text, 30% random; zero pages
 * skipped, as for a zeroed target), and a second round of a random image where every page changed in
 * CHANGED_BYTES bytes (default 64 MiB cache, so every page is cached).
 */
function encodedSizes(size: number, engine: NativeBinding): { mixedRound1: number; deltaRound: number } {
  const pages = Math.floor(size / PAGE);
  const bytes = pages * PAGE;
  const all = Uint32Array.from({ length: pages }, (_, i) => i);
  const out = new Uint8Array(pages * (PAGE + 20));
  const mixed = mixedImage({ size: bytes, pageSize: PAGE, zero: 0.4, text: 0.3, seed: 11 });
  const round1 = new engine.PageEncoder(PAGE, pages, 64 * 2 ** 20)
    .encodeSync(new DataView(mixed.buffer, mixed.byteOffset, bytes), all, true, out, new BigUint64Array(pages))[0];
  const image = randomFillSync(new Uint8Array(bytes));
  const encoder = new engine.PageEncoder(PAGE, pages, Math.max(bytes, 64 * 2 ** 20));
  const sent = new BigUint64Array(pages);
  encoder.encodeSync(new DataView(image.buffer), all, false, out, sent);
  for (let p = 0; p < pages; p++) for (let i = 0; i < CHANGED_BYTES; i++) image[p * PAGE + 1000 + i] ^= 0x5a;
  const round2 = encoder.encodeSync(new DataView(image.buffer), all, false, out, sent)[0];
  return { mixedRound1: round1 / bytes, deltaRound: round2 / bytes };
}

/** Median seconds per call over the benchmark's samples. */
function measure(name: string, fn: () => unknown, minTime: number): { seconds: number; samples: number } {
  const bench = new Benchmark(name, fn, { minTime, maxTime: minTime * 4, minSamples: 5 });
  bench.run();
  if (bench.error) throw bench.error;
  const sample = bench.stats.sample as number[];
  return { seconds: median(sample), samples: sample.length };
}

function printRows(rows: Row[]): void {
  const table = rows.map((r) => [r.op, r.impl, r.gbPerSec.toFixed(2), `${r.ofCopy.toFixed(2)}x`, String(r.samples)]);
  process.stdout.write(`${formatTable([['operation', 'implementation', 'GB/s', 'of copy', 'samples'], ...table], [false, false, true, true, true])}\n`);
}

function buildOps(size: number): Op[] {
  const pages = Math.floor(size / PAGE);
  const bytes = pages * PAGE;
  const zeros = new Uint8Array(bytes);
  const random = randomFillSync(new Uint8Array(bytes));
  // Every page of `edited` differs from `random` in one run of CHANGED_BYTES bytes at a page-dependent offset.
  const edited = Uint8Array.from(random);
  for (let p = 0; p < pages; p++) {
    const at = p * PAGE + ((p * 97) % (PAGE - CHANGED_BYTES));
    for (let i = 0; i < CHANGED_BYTES; i++) edited[at + i] = edited[at + i]! ^ 0x5a;
  }
  const mixed = new Uint8Array(mixedImage({ size: bytes, pageSize: PAGE, zero: 0.4, text: 0.3, seed: 7 }));
  const region = new DataView(mixed.buffer, mixed.byteOffset, mixed.byteLength);
  const all = Uint32Array.from({ length: pages }, (_, i) => i);
  const out = new Uint8Array(pages * (PAGE + 20));
  const limit = PAGE / 4;
  const lengths = new Int32Array(pages);
  const hashes = new BigUint64Array(pages);
  const deltas = new Uint8Array(pages * limit);
  const work = new Uint8Array(bytes);
  const bitmapWords = Math.ceil(bytes / PAGE / 32) * 32; // a bitmap for a region 32 times larger
  const bitmap = new Int32Array(new SharedArrayBuffer(bitmapWords * 4));
  const snapshot = new Uint32Array(bitmapWords);
  for (let w = 0; w < snapshot.length; w += 20) snapshot[w] = 0xffffffff;
  const spareSnapshot = new Uint32Array(bitmapWords);
  const scanOut = new Uint32Array(bitmapWords * 32);

  const randomView = new DataView(random.buffer, random.byteOffset, random.byteLength);
  const editedView = new DataView(edited.buffer, edited.byteOffset, edited.byteLength);
  const flips = new Map<NativeBinding, number>();
  const encoders = new Map<string, NativePageEncoder>();
  const encoderFor = (engine: NativeBinding, use: string, cacheBytes: number) => {
    const key = `${engine.kind} ${use}`;
    let encoder = encoders.get(key);
    if (!encoder) {
      encoder = new engine.PageEncoder(PAGE, pages, cacheBytes);
      encoders.set(key, encoder);
    }
    return encoder;
  };
  const sentHashes = new Map<NativeBinding, BigUint64Array>();
  const sentFor = (engine: NativeBinding) => {
    let sent = sentHashes.get(engine);
    if (!sent) sentHashes.set(engine, sent = new BigUint64Array(pages));
    return sent;
  };

  // Prepared outputs that the decode operations consume, one per implementation.
  const prepared = new Map<NativeBinding, { deltaLengths: Int32Array; lz4: Uint8Array; lz4Lengths: Int32Array; records: Uint8Array; count: number }>();
  const prepare = (engine: NativeBinding) => {
    let p = prepared.get(engine);
    if (!p) {
      const deltaLengths = new Int32Array(pages);
      engine.xbzrleEncodePages(random, edited, PAGE, limit, deltas, deltaLengths);
      const lz4 = new Uint8Array(pages * PAGE);
      const lz4Lengths = new Int32Array(pages);
      engine.lz4CompressPages(mixed, PAGE, lz4, PAGE, lz4Lengths);
      const encoder = new engine.PageEncoder(PAGE, pages, 64 * 2 ** 20);
      const [length, count] = encoder.encodeSync(region, all, false, out, new BigUint64Array(pages));
      p = { deltaLengths, lz4, lz4Lengths, records: out.slice(0, length), count };
      prepared.set(engine, p);
    }
    return p;
  };

  // The prepared records, each header moved onto a page of stream 0 of 2 (DUPs copy page 0) but the
  // last one's, which is stream 1's: applyPages' ownership pass walks every header, then refuses.
  const offStream = new Map<NativeBinding, Uint8Array>();
  const offStreamFor = (engine: NativeBinding) => {
    let records = offStream.get(engine);
    if (!records) {
      const { records: source, count } = prepare(engine);
      records = source.slice();
      const view = new DataView(records.buffer);
      for (let i = 0, at = 0; i < count; i++) {
        view.setUint32(at, i === count - 1 ? 256 : i % 256, true);
        if (view.getUint8(at + 4) === 3) view.setUint32(at + 20, 0, true);
        at += 20 + view.getUint32(at + 8, true);
      }
      offStream.set(engine, records);
    }
    return records;
  };

  return [
    {
      // The round's sync (atomic fetch-and-clear of a clean bitmap) and the scan of a snapshot with 5% of
      // its bits set, as a 5% hot set leaves it; bytes are the bitmap's.
      name: 'bitmap', bytes: bitmap.byteLength,
      run: (engine) => {
        engine.dirtySync(bitmap, spareSnapshot, 0, bitmap.length);
        return engine.dirtyScan(snapshot, 0, snapshot.length, scanOut)[0];
      },
    },
    { name: 'zero', bytes, run: (engine) => engine.zeroPageCount(zeros, PAGE) },
    {
      name: 'xxh64', bytes,
      run: (engine) => {
        engine.hashPages(random, PAGE, 0, pages, hashes, 0);
        return Number(hashes[0]! & 1n);
      },
    },
    { name: 'xbzrle-encode', bytes, run: (engine) => engine.xbzrleEncodePages(random, edited, PAGE, limit, deltas, lengths) },
    {
      name: 'xbzrle-decode', bytes,
      run: (engine) => {
        const { deltaLengths } = prepare(engine);
        work.set(random);
        return engine.xbzrleDecodePages(deltas, limit, deltaLengths, work, PAGE);
      },
    },
    { name: 'lz4-compress-mixed', bytes, run: (engine) => engine.lz4CompressPages(mixed, PAGE, work, PAGE, lengths) },
    { name: 'lz4-compress-random', bytes, run: (engine) => engine.lz4CompressPages(random, PAGE, work, PAGE, lengths) },
    {
      name: 'lz4-decompress', bytes,
      run: (engine) => {
        const { lz4, lz4Lengths } = prepare(engine);
        return engine.lz4DecompressPages(lz4, PAGE, lz4Lengths, work, PAGE);
      },
    },
    {
      // Round 1 of a mixed region, in steady state: one encoder whose cache (a quarter of the region, as
      // 64 MiB is of 256 MiB) has forgotten each page by the time it comes round again.
      name: 'batch-encode-mixed', bytes,
      run: (engine) => encoderFor(engine, 'round1', bytes / 4).encodeSync(region, all, false, out, sentFor(engine))[0],
    },
    {
      // A later round: every page differs from its cached copy in 64 bytes (alternating two images).
      name: 'batch-encode-delta', bytes,
      run: (engine) => {
        const flip = (flips.get(engine) ?? 0) + 1;
        flips.set(engine, flip);
        const image = flip % 2 === 0 ? randomView : editedView;
        return encoderFor(engine, 'delta', bytes).encodeSync(image, all, false, out, sentFor(engine))[0];
      },
    },
    {
      name: 'batch-decode-mixed', bytes,
      run: (engine) => {
        const { records, count } = prepare(engine);
        return engine.applyPagesSync(work, PAGE, pages, records, count, new BigUint64Array(pages))[0];
      },
    },
    {
      // The target's check that a batch writes and copies only its stream's pages, alone: the twin's
      // pass is the JavaScript one the target ran on every PAGES frame before the decoder took it over.
      name: 'stream-ownership', bytes,
      run: (engine) => engine.applyPagesSync(work, PAGE, pages, offStreamFor(engine), prepare(engine).count, new BigUint64Array(pages), 0, 2)[0],
    },
  ];
}

try {
  main();
} catch (error) {
  process.stderr.write(`bench:codec: ${(error as Error).message}\n`);
  process.exitCode = 1;
}


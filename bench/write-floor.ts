// The write floor, as a program of its own: `node dist/bench/write-floor.js IMAGE OUT` reads IMAGE
// into memory (not timed), then writes those bytes into OUT, a new file, with pwrite in 1 MiB chunks,
// fsyncs it and prints one JSON line with the times. A fresh process each time, so nothing of an
// earlier step (heap, mappings) is in its way: what is left is what the storage costs for these bytes.
// Started by bench/floors.ts.
import { closeSync, fstatSync, fsyncSync, openSync, readSync, writeSync } from 'node:fs';
import { performance } from 'node:perf_hooks';

const CHUNK_BYTES = 1 << 20;

export interface WriteFloorTimes {
  bytes: number;
  /** open(O_CREAT|O_EXCL) to the last pwrite returned. */
  writeMs: number;
  fsyncMs: number;
  /** writeMs + fsyncMs + close. */
  totalMs: number;
}

function readWhole(path: string): Buffer[] {
  const fd = openSync(path, 'r');
  try {
    const size = fstatSync(fd).size;
    const chunks: Buffer[] = [];
    for (let at = 0; at < size; at += CHUNK_BYTES) {
      const chunk = Buffer.allocUnsafeSlow(Math.min(CHUNK_BYTES, size - at));
      for (let got = 0; got < chunk.length;) {
        const n = readSync(fd, chunk, got, chunk.length - got, at + got);
        if (n === 0) throw new Error(`${path} ended at ${at + got} of ${size} bytes`);
        got += n;
      }
      chunks.push(chunk);
    }
    return chunks;
  } finally {
    closeSync(fd);
  }
}

function writeFloor(imagePath: string, outPath: string): WriteFloorTimes {
  const chunks = readWhole(imagePath);
  const started = performance.now();
  // 'wx': a new file, never one an earlier step left behind.
  const fd = openSync(outPath, 'wx');
  let at = 0;
  let written: number;
  let synced: number;
  try {
    for (const chunk of chunks) {
      for (let done = 0; done < chunk.length;) done += writeSync(fd, chunk, done, chunk.length - done, at + done);
      at += chunk.length;
    }
    written = performance.now();
    fsyncSync(fd);
    synced = performance.now();
  } finally {
    closeSync(fd);
  }
  const closed = performance.now();
  return { bytes: at, writeMs: written - started, fsyncMs: synced - written, totalMs: closed - started };
}

const [imagePath, outPath] = process.argv.slice(2);
if (imagePath === undefined || outPath === undefined) {
  process.stderr.write('usage: node dist/bench/write-floor.js IMAGE OUT\n');
  process.exit(2);
}
process.stdout.write(`${JSON.stringify(writeFloor(imagePath, outPath))}\n`);

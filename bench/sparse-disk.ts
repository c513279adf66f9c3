// A disk image as operators have them: large and mostly holes. Makes a sparse file of --size with --data
// bytes of mixed pages in --extent runs spread evenly over it, on --dir (a disk by default), then per
// repetition: the floor (`cp --sparse=always`, which also skips holes, on the same storage) and the
// migration as a user runs it (`pagewire receive` and `pagewire send` processes over 127.0.0.1, --out
// beside the image), each run's files then compared byte for byte with the source's. Reports medians of wall time, what send read from files (rchar from /proc, sampled
// every 20 ms; it includes node's own startup reads), bytes sent, and how much of --out is allocated.
// With --ram SIZE the disk moves as a second region beside a RAM image of that size (mixed pages) under
// `--workload` (default rate=50MB/s,hot=0.05), in one migration with one pause (`send --image --disk`,
// `receive --out --disk-out`); the floor then copies both files, and the downtime is reported too.
//   node dist/bench/sparse-disk.js [--size 64GiB] [--data 4GiB] [--extent 64MiB] [--ram 1GiB [--workload SPEC]] [--dir DIR] [--reps 3]
import { execFileSync } from 'node:child_process';
import { closeSync, ftruncateSync, mkdtempSync, openSync, readFileSync, rmSync, statSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import { parseFlags, parseSize, optionalString } from '../src/cli/args.js';
import { mixedImage } from '../src/workload/mixed-image.js';
import { ChildRun, describeExit, lastJsonLine } from './child-run.js';
import { sameSparseFiles } from './same-sparse-files.js';

const CLI_PATH = fileURLToPath(new URL('../src/cli/main.js', import.meta.url));
const PAGE = 4096;

const flags = parseFlags(process.argv.slice(2), {
  size: 'string', data: 'string', extent: 'string', dir: 'string', reps: 'string', ram: 'string', workload: 'string',
});
const size = parseSize(optionalString(flags, 'size') ?? '64GiB', 'size');
const data = parseSize(optionalString(flags, 'data') ?? '4GiB', 'data');
const extent = parseSize(optionalString(flags, 'extent') ?? '64MiB', 'extent');
const reps = Number(optionalString(flags, 'reps') ?? '3');
const ramText = optionalString(flags, 'ram');
const ram = ramText ? parseSize(ramText, 'ram') : 0;
const workload = optionalString(flags, 'workload') ?? 'rate=50MB/s,hot=0.05,seed=1';
const dir = mkdtempSync(join(optionalString(flags, 'dir') ?? tmpdir(), 'pagewire-sparse-'));

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)]!;
}

/** The sparse image: extents of mixed pages (zero, text, random) evenly spread, holes between. */
function makeImage(path: string): void {
  const extents = Math.ceil(data / extent);
  const fd = openSync(path, 'wx');
  try {
    ftruncateSync(fd, size);
    for (let i = 0; i < extents; i++) {
      const at = Math.floor((i * size) / extents / extent) * extent;
      writeSync(fd, mixedImage({ size: extent, pageSize: PAGE, seed: i + 1 }), 0, extent, at);
    }
  } finally {
    closeSync(fd);
  }
}

/** rchar of a process from /proc, or undefined once it is gone. */
function readBytes(pid: number): number | undefined {
  try {
    return Number(/^rchar: (\d+)/m.exec(readFileSync(`/proc/${pid}/io`, 'utf8'))![1]);
  } catch {
    return undefined;
  }
}

/** One migration through the CLI: the disk alone, or (with a RAM image) the RAM under a writer and the disk beside it. */
async function migrateOnce(image: string, out: string, ramImage?: string) {
  rmSync(out, { force: true });
  const ramOut = join(dir, 'ram-out.img');
  rmSync(ramOut, { force: true });
  const receiveFiles = ramImage ? ['--out', ramOut, '--disk-out', out] : ['--out', out];
  const sendFiles = ramImage ? ['--image', ramImage, '--disk', image, '--workload', workload] : ['--image', image];
  let listening: (port: number) => void = () => {};
  const port = new Promise<number>((resolve) => { listening = resolve; });
  const receive = new ChildRun('receive', process.execPath, [CLI_PATH, 'receive', '--listen', '127.0.0.1:0', ...receiveFiles, '--json', '--sparse'], {
    timeoutMs: 30 * 60_000,
    onStderrLine: (line) => {
      const match = /^listening on [^\s]+:(\d+)/.exec(line);
      if (match) listening(Number(match[1]));
    },
  });
  const ended = receive.exited.then((exit): number => { throw new Error(`receive ended: ${describeExit(exit)}`); });
  ended.catch(() => {});
  const send = new ChildRun('send', process.execPath, [CLI_PATH, 'send', '--connect', `127.0.0.1:${await Promise.race([port, ended])}`, ...sendFiles, '--json'], {
    timeoutMs: 30 * 60_000,
  });
  let sendRead = 0;
  const sampler = setInterval(() => { sendRead = readBytes(send.pid) ?? sendRead; }, 20);
  const [sent, received] = await Promise.all([send.exited, receive.exited]);
  clearInterval(sampler);
  if (sent.code !== 0 || received.code !== 0) throw new Error(`migration failed: send ${describeExit(sent)}; receive ${describeExit(received)}`);
  const json = lastJsonLine(sent, 'send') as { bytesTransferred: number; pagesTransferred: number; digest: string; downtimeMs: number; rounds: number };
  const receiveJson = lastJsonLine(received, 'receive') as { digest: string };
  if (json.digest !== receiveJson.digest) throw new Error('digests differ');
  // Byte-exact at the pause point, checked apart from pagewire's own digests (send leaves its workload
  // paused, so its files hold that state); outside the timed run.
  if (!sameSparseFiles(image, out) || (ramImage !== undefined && !sameSparseFiles(ramImage, ramOut))) {
    throw new Error('a target file differs from its source at the pause point');
  }
  return { wallMs: sent.wallMs, downtimeMs: json.downtimeMs, rounds: json.rounds, sendReadBytes: sendRead, bytesSent: json.bytesTransferred, pagesSent: json.pagesTransferred,
    outAllocatedBytes: statSync(out).blocks * 512 };
}

try {
  const image = join(dir, 'disk.img');
  const made = performance.now();
  makeImage(image);
  const ramImage = ram > 0 ? join(dir, 'ram.img') : undefined;
  if (ramImage) {
    const fd = openSync(ramImage, 'wx');
    try {
      for (let at = 0; at < ram; at += extent) writeSync(fd, mixedImage({ size: Math.min(extent, ram - at), pageSize: PAGE, seed: 1000 + at / extent }), 0, Math.min(extent, ram - at), at);
    } finally {
      closeSync(fd);
    }
  }
  console.error(`image: ${size} bytes, ${data} of data in ${Math.ceil(data / extent)} extents of ${extent}, made in ${(performance.now() - made).toFixed(0)} ms on ${dir}`);
  const floors: number[] = [];
  const runs: Awaited<ReturnType<typeof migrateOnce>>[] = [];
  for (let rep = 0; rep < reps; rep++) {
    const copy = join(dir, 'copy.img');
    const began = performance.now();
    execFileSync('cp', ['--sparse=always', image, copy]);
    if (ramImage) execFileSync('cp', [ramImage, join(dir, 'ram-copy.img')]);
    floors.push(performance.now() - began);
    rmSync(copy);
    rmSync(join(dir, 'ram-copy.img'), { force: true });
    const run = await migrateOnce(image, join(dir, 'out.img'), ramImage);
    runs.push(run);
    console.error(`rep ${rep + 1}: cp --sparse=always ${floors.at(-1)!.toFixed(0)} ms; pagewire ${run.wallMs.toFixed(0)} ms ` +
      `(${run.rounds} rounds, downtime ${run.downtimeMs} ms), ` +
      `send read ${run.sendReadBytes} B, sent ${run.bytesSent} B, --out allocated ${run.outAllocatedBytes} B`);
  }
  console.log(JSON.stringify({
    imageBytes: size, dataBytes: data, extentBytes: extent, ramBytes: ram, ...(ramImage ? { workload } : {}), reps,
    median: {
      downtimeMs: median(runs.map((r) => r.downtimeMs)),
      cpSparseMs: Math.round(median(floors)), pagewireWallMs: Math.round(median(runs.map((r) => r.wallMs))),
      sendReadBytes: median(runs.map((r) => r.sendReadBytes)), bytesSent: median(runs.map((r) => r.bytesSent)),
      pagesSent: median(runs.map((r) => r.pagesSent)), outAllocatedBytes: median(runs.map((r) => r.outAllocatedBytes)),
    },
  }));
} finally {
  rmSync(dir, { recursive: true, force: true });
}

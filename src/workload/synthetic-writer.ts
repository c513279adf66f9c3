// Worker entry of SyntheticWorkload (see there). Writes first, marks second, so a sync that clears the
// mark before the write lands still sees the page dirty again afterwards. The region's first 8 bytes
// are a little-endian count of every write so far (carried on from what the image holds), updated
// after each slice of writes: a replica's counter tells how far the workload got, so its output
// commit can be checked (docs/PROTOCOL.md section 9).
import { parentPort, workerData } from 'node:worker_threads';
import { DirtyBitmap } from '../memory/dirty-bitmap.js';
import { MemoryRegion } from '../memory/region.js';
import { ControlSlot, WorkloadCommand, WorkloadState, type WriterInit } from './synthetic-workload.js';

const WRITE_BYTES = 64;
const HOT_SHARE = 0.9;
/** The most writes between two looks at the control word, so a pause is seen within a millisecond. */
const SLICE_WRITES = 2048;

const init = workerData as WriterInit;
const control = new Int32Array(init.control);
const bitmap = DirtyBitmap.attach(init.bitmap, init.pageCount);
const region = 'path' in init.memory
  ? MemoryRegion.mapFile(init.memory.path, { pageSize: init.pageSize })
  : MemoryRegion.fromMemory(init.memory.buffer, { pageSize: init.pageSize });
const { pageSize, pageCount } = init;
const pagesPerWindow = Math.max(1, Math.floor((1 << 30) / pageSize));
const windows: Uint8Array[] = [];

// xorshift128: small, fast and repeatable from the seed.
let s0 = (init.spec.seed ^ 0x9e3779b9) | 1, s1 = 0x243f6a88, s2 = 0x85a308d3, s3 = 0x13198a2e;
function next(): number {
  const t = s0 ^ (s0 << 11);
  s0 = s1; s1 = s2; s2 = s3;
  s3 = (s3 ^ (s3 >>> 19) ^ (t ^ (t >>> 8))) >>> 0;
  return s3;
}
for (let i = 0; i < 16; i++) next();
const random = () => next() / 4294967296;

const hotPages = Math.max(1, Math.min(pageCount, Math.round(pageCount * init.spec.hot)));
const hotStart = Math.floor(random() * (pageCount - hotPages + 1));
const coldPages = pageCount - hotPages;

function choosePage(): number {
  if (coldPages === 0 || random() < HOT_SHARE) return hotStart + Math.floor(random() * hotPages);
  const cold = Math.floor(random() * coldPages);
  return cold < hotStart ? cold : cold + hotPages;
}

function pageBytes(page: number): Uint8Array {
  const w = Math.floor(page / pagesPerWindow);
  let window = windows[w];
  if (!window) {
    const first = w * pagesPerWindow;
    const pages = Math.min(pagesPerWindow, pageCount - first);
    window = region.view(first * pageSize, pages * pageSize);
    windows[w] = window;
  }
  const offset = (page - w * pagesPerWindow) * pageSize;
  return window.subarray(offset, offset + pageSize);
}

/** The write counter's bytes at the start of page 0; random writes leave them alone. */
const COUNTER_BYTES = 8;
const counterView = (() => {
  const first = pageBytes(0);
  return new DataView(first.buffer, first.byteOffset, COUNTER_BYTES);
})();
let counter = counterView.getUint32(0, true) + counterView.getUint32(4, true) * 2 ** 32;
// An image that never had a writer holds anything there: a count only starts from a plausible one.
if (counter > Number.MAX_SAFE_INTEGER) counter = 0;

function countWrites(n: number): void {
  counter += n;
  counterView.setUint32(0, counter % 2 ** 32, true);
  counterView.setUint32(4, Math.floor(counter / 2 ** 32), true);
  bitmap.mark(0);
}

const scratch = new Uint8Array(WRITE_BYTES);
const scratchWords = new Uint32Array(scratch.buffer);

function writeOnce(): void {
  const page = choosePage();
  for (let i = 0; i < scratchWords.length; i++) scratchWords[i] = next();
  const at = Math.max(page === 0 ? COUNTER_BYTES : 0, Math.floor(random() * (pageSize - WRITE_BYTES + 1)));
  pageBytes(page).set(scratch, at);
  bitmap.mark(page);
}

const fullWritesPerMs = init.spec.rateBytesPerSec / pageSize / 1000;
let throttle = 0;
let writesPerMs = fullWritesPerMs;
let done = 0;
let clock = performance.now();
Atomics.store(control, ControlSlot.State, WorkloadState.Running);
parentPort!.postMessage('running');

for (;;) {
  const command = Atomics.load(control, ControlSlot.Command);
  if (command === WorkloadCommand.Stop) break;
  if (command === WorkloadCommand.Pause) {
    Atomics.store(control, ControlSlot.State, WorkloadState.Paused);
    Atomics.notify(control, ControlSlot.State);
    Atomics.wait(control, ControlSlot.Command, WorkloadCommand.Pause);
    if (Atomics.load(control, ControlSlot.Command) === WorkloadCommand.Run) {
      Atomics.store(control, ControlSlot.State, WorkloadState.Running);
      Atomics.notify(control, ControlSlot.State);
      // Time paused does not count: no burst of catch-up writes after a resume.
      clock = performance.now();
      done = 0;
    }
    continue;
  }
  const percent = Atomics.load(control, ControlSlot.ThrottlePercent);
  if (percent !== throttle) {
    // A new speed counts from now: no burst of writes owed at the old one.
    throttle = percent;
    writesPerMs = (fullWritesPerMs * (100 - percent)) / 100;
    clock = performance.now();
    done = 0;
  }
  const due = Math.floor((performance.now() - clock) * writesPerMs) - done;
  if (due <= 0) {
    Atomics.wait(control, ControlSlot.Command, WorkloadCommand.Run, 1);
    continue;
  }
  const n = Math.min(due, SLICE_WRITES);
  for (let i = 0; i < n; i++) writeOnce();
  countWrites(n);
  done += n;
  Atomics.add(control, ControlSlot.Writes, n);
}
region.close();
Atomics.store(control, ControlSlot.State, WorkloadState.Stopped);
Atomics.notify(control, ControlSlot.State);

// A worker-thread app migrated live. Two writer threads write into a SharedArrayBuffer region and mark
// each page they write in a shared DirtyBitmap; the main thread migrates the region over 127.0.0.1 to a
// MigrationTarget in this same process while they write. The pause hook stops the writers, resume
// restarts them (only if the migration fails before the hand-over), and deviceState sends what they
// have counted. At the end, the target's memory must equal the paused source's byte for byte.
//
//   node examples/worker-threads.mjs
import { Worker, isMainThread, parentPort, workerData } from 'node:worker_threads';
import { DirtyBitmap, MemoryRegion, MigrationSource, MigrationTarget } from 'pagewire';
import { memoryTargetImage } from './lib/memory-target-image.mjs';

const REGION_BYTES = 16 * 1024 * 1024;
const WRITERS = 2;
/** control[0]: RUNNING or PAUSED, set by the main thread; each writer waits on it while PAUSED. */
const RUNNING = 0;
const PAUSED = 1;

if (isMainThread) await main();
else writer(workerData);

async function main() {
  const memory = new SharedArrayBuffer(REGION_BYTES);
  const region = MemoryRegion.fromMemory(memory);
  const dirty = new DirtyBitmap(region.pageCount);
  const control = new Int32Array(new SharedArrayBuffer(4));
  const writes = new BigUint64Array(new SharedArrayBuffer(8 * WRITERS));

  const workers = Array.from({ length: WRITERS }, (_, index) => new Worker(new URL(import.meta.url), {
    workerData: { index, memory, bitmap: dirty.buffer, pageCount: region.pageCount, control: control.buffer, writes: writes.buffer },
  }));
  // Each writer says 'running' once, then 'paused' each time it has stopped for a pause.
  const nextMessage = (worker) => new Promise((resolve) => worker.once('message', resolve));
  await Promise.all(workers.map(nextMessage));

  // The target: its own memory of the same size, written in place as pages arrive.
  const targetMemory = new SharedArrayBuffer(REGION_BYTES);
  let deviceState;
  const target = await MigrationTarget.listen({
    host: '127.0.0.1', port: 0,
    image: memoryTargetImage(MemoryRegion.fromMemory(targetMemory)),
    hooks: { onDeviceState: (state) => { deviceState = Buffer.from(state); } },
  });

  const source = new MigrationSource({
    region, dirtyBitmap: dirty, host: '127.0.0.1', port: target.address.port,
    hooks: {
      // Resolves once every writer has stopped: after this, nothing writes the region.
      pause: async () => {
        const stopped = Promise.all(workers.map(nextMessage));
        Atomics.store(control, 0, PAUSED);
        await stopped;
      },
      resume: () => {
        Atomics.store(control, 0, RUNNING);
        Atomics.notify(control, 0);
      },
      // Taken while paused, so it agrees with the memory it travels with.
      deviceState: () => new Uint8Array(writes.buffer.slice(0)),
    },
  });
  let summary;
  try {
    [summary] = await Promise.all([source.run(), target.result]);
  } finally {
    // Handed over, the source stays paused: its writers are done for good. (After a failure before the
    // hand-over they would be running again; this example ends either way.)
    await Promise.all(workers.map((worker) => worker.terminate()));
  }
  const same = Buffer.from(memory).equals(Buffer.from(targetMemory));
  const counted = deviceState && Buffer.from(writes.buffer).equals(deviceState);
  if (!same || !counted) throw new Error(`target differs from the source (memory ${same}, device state ${counted})`);
  const total = writes.reduce((sum, n) => sum + n, 0n);
  console.log(`worker-threads: ${REGION_BYTES >> 20} MiB moved while ${WRITERS} writers made ${total} writes, ` +
    `${summary.rounds} rounds, downtime ${summary.downtimeMs.toFixed(1)} ms, target identical`);
}

/** Writes 8-byte words into pages of its own half of the region, mostly a small hot set, and marks them. */
function writer({ index, memory, bitmap, pageCount, control: controlBuffer, writes: writesBuffer }) {
  const words = new BigUint64Array(memory);
  const dirty = DirtyBitmap.attach(bitmap, pageCount);
  const control = new Int32Array(controlBuffer);
  const writes = new BigUint64Array(writesBuffer);
  const pageSize = memory.byteLength / pageCount;
  const pagesPerWriter = pageCount / WRITERS;
  const hotPages = 64;
  let seed = index + 1;
  parentPort.postMessage('running');
  for (;;) {
    if (Atomics.load(control, 0) === PAUSED) {
      parentPort.postMessage('paused');
      Atomics.wait(control, 0, PAUSED);
      continue;
    }
    seed = (Math.imul(seed, 1103515245) + 12345) >>> 0;
    const span = seed % 16 === 0 ? pagesPerWriter : hotPages;
    const page = index * pagesPerWriter + (seed >>> 8) % span;
    const word = (page * pageSize + (seed & 0xff) * 8) / 8;
    // Write first, mark second: a write that races the page's send is then always sent again.
    words[word] = BigInt(seed);
    dirty.mark(page);
    writes[index] += 1n;
  }
}

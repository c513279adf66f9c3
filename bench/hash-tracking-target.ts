// The receiving side of bench/hash-tracking.ts, in a worker thread of its own so its event loop does not
// share the source's: a memory target of the size asked, which posts its port, then its outcome.
import { parentPort, workerData } from 'node:worker_threads';
import { MemoryRegion, MemoryTargetImage, MigrationTarget } from '../src/index.js';

const { bytes } = workerData as { bytes: number };
const target = await MigrationTarget.listen({
  image: new MemoryTargetImage(MemoryRegion.fromMemory(new SharedArrayBuffer(bytes)), { zeroed: true }), host: '127.0.0.1', port: 0,
});
parentPort!.postMessage({ port: target.address.port });
try {
  await target.result;
  parentPort!.postMessage({ ok: true });
} catch (error) {
  parentPort!.postMessage({ ok: false, error: String(error) });
}

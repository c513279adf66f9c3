// A migration over a Unix domain socket, to a target that serves as a daemon: it listens on a socket file
// (who may connect is decided by the file's permissions, as for any Unix socket), makes a fresh image
// for each source from its offer, and keeps serving until stopped. Two sources migrate one after the
// other, each over two streams on the same socket, with a pre-shared key (so every frame is
// authenticated). Each target image must equal its source byte for byte.
//
//   node examples/unix-socket.mjs
import { randomBytes, randomFillSync } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { MemoryRegion, MigrationSource, MigrationTarget } from 'pagewire';
import { memoryTargetImage } from './lib/memory-target-image.mjs';

const dir = mkdtempSync(join(tmpdir(), 'pagewire-example-'));
const path = join(dir, 'target.sock');
const psk = randomBytes(32);
try {
  const received = [];
  const target = await MigrationTarget.listen({
    path, psk, serve: 'many',
    // Called for each source with its region's size and page size: allocate exactly that.
    image: (offer) => {
      const memory = Buffer.alloc(offer.regionSize);
      received.push(memory);
      return memoryTargetImage(MemoryRegion.fromMemory(memory, { pageSize: offer.pageSize }));
    },
  });
  const completed = [];
  target.on('migration', (summary, error) => completed.push(error ? `failed: ${error.code}` : summary.status));

  const sent = [];
  for (const size of [4 << 20, 8 << 20]) {
    const memory = Buffer.alloc(size);
    randomFillSync(memory);
    sent.push(memory);
    // Nothing writes this memory, so the hooks have nothing to stop.
    const source = new MigrationSource({
      region: MemoryRegion.fromMemory(memory), path, psk, streams: 2, hooks: { pause() {}, resume() {} },
    });
    await source.run();
  }
  target.stop();
  await target.result.catch(() => undefined); // a daemon's result ends with its stop

  const same = sent.every((memory, i) => received[i]?.equals(memory));
  if (!same || completed.join() !== 'completed,completed') throw new Error(`targets differ or failed: ${completed.join()}`);
  console.log(`unix-socket: ${sent.length} migrations (4 and 8 MiB, 2 streams each, keyed) served one after another over ` +
    `${path.startsWith(tmpdir()) ? 'a socket in the temp directory' : path}, targets identical`);
} finally {
  rmSync(dir, { recursive: true, force: true });
}

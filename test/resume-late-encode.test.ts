// Issue 11, defect 5: an encode still in flight when the connections break must not write sentHashes
// after a resume has set them to what the target holds (HELD). Otherwise the pages of that batch count
// as sent although the target never got them: they are never sent again, and FINAL's digest differs.
//
// The race is made deterministic by holding libuv's pool threads (each blocked opening a FIFO that has
// no writer yet), so that the next encode waits in the pool's queue while the connections are reset and
// the source resumes; the pool gets back one thread only once the source has read all of HELD. That
// thread takes the pool's queue in order: the late encode first, then whatever the resume queued.
import { randomFillSync } from 'node:crypto';
import { execFileSync } from 'node:child_process';
import { closeSync, constants, openSync } from 'node:fs';
import { open, type FileHandle } from 'node:fs/promises';
import { connect, type Socket } from 'node:net';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { DirtyBitmap, MemoryRegion, MigrationSource, codecKind } from '../dist/src/index.js';
import { lastJson, startReceiver, tempDir, withTimeout } from './helpers.js';

const tmp = tempDir();
afterAll(() => tmp.cleanup());
const PAGE = 4096;
const PAGES = 2048;
const POOL_THREADS = Number(process.env.UV_THREADPOOL_SIZE) || 4;
/** What the target sends on a resumed connection before any round: AUTH nonce, AUTH proof, WELCOME, HELD. */
const RESUME_ANSWER_BYTES = (8 + 32) + (8 + 32) + (8 + 44) + (8 + 16 + 8 * PAGES);

/** Pool threads held, each in an open() of a FIFO, until release(). */
function holdPoolThreads(count: number, tag: string) {
  const fifos = Array.from({ length: count }, (_, i) => join(tmp.dir, `${tag}-${i}.fifo`));
  for (const fifo of fifos) execFileSync('mkfifo', [fifo]);
  const opened: Promise<FileHandle>[] = fifos.map((fifo) => open(fifo, 'r'));
  let released = 0;
  /** Gives back the next thread (its open() returns once a writer appears). */
  const releaseOne = async (): Promise<void> => {
    const fifo = fifos[released++]!;
    for (;;) {
      try {
        // Non-blocking: fails with ENXIO until the pool thread's open() is there to meet it.
        closeSync(openSync(fifo, constants.O_WRONLY | constants.O_NONBLOCK));
        break;
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code !== 'ENXIO') throw error;
        await new Promise((resolve) => setImmediate(resolve));
      }
    }
  };
  return {
    releaseOne,
    async releaseAll(): Promise<void> {
      while (released < fifos.length) await releaseOne();
      for (const handle of await Promise.all(opened)) await handle.close();
    },
  };
}

describe.skipIf(codecKind() !== 'addon')('an encode in flight when the connections break', () => {
  // With two streams the round fails as soon as the control connection does, while the other stream may
  // still be waiting for its encode: the resume must wait for that stream's round to end as well.
  it.each([1, 2])('does not make its pages count as sent after the resume (%i streams): the target gets every page', async (streams) => {
    const image = Buffer.alloc(PAGES * PAGE);
    randomFillSync(image);
    const region = MemoryRegion.fromMemory(image);
    const out = join(tmp.dir, `late-encode-${streams}.img`);
    const receiver = await startReceiver(out, ['--resume-window', '20000']);
    const sockets: Socket[] = [];
    let pool: ReturnType<typeof holdPoolThreads> | undefined;
    let broken = false;
    let released = false;
    const source = new MigrationSource({
      region, dirtyBitmap: new DirtyBitmap(PAGES), streams, batchPages: 16, lz4: 'off', maxDowntimeMs: 0, maxRounds: 3,
      maxResumeAttempts: 3, resumeBackoffMs: 50, hooks: { pause: () => {}, resume: () => {} },
      connect: () => {
        const socket = connect(receiver.port, '127.0.0.1');
        const resumed = sockets.length > 0;
        sockets.push(socket);
        let received = 0;
        // Listening before the source's own reader: once this has seen all of HELD, the source has
        // handled it by the next turn of the event loop.
        socket.on('data', (chunk: Buffer) => {
          received += chunk.length;
          if (resumed && !released && received >= RESUME_ANSWER_BYTES) {
            released = true;
            setImmediate(() => void pool!.releaseOne());
          }
        });
        return new Promise<Socket>((resolve, reject) => {
          socket.once('connect', () => resolve(socket));
          socket.once('error', reject);
        });
      },
    });
    source.on('progress', (progress) => {
      if (!broken && progress.round === 1 && progress.recordsSent >= 64) {
        broken = true;
        // The next encode is queued behind the held threads; then the connection goes.
        pool = holdPoolThreads(POOL_THREADS, `pool-${streams}`);
        sockets[0]!.resetAndDestroy();
      } else if (released && progress.round > 1) {
        // The resume has sent a round of its own: the rest of the pool may go.
        void pool!.releaseAll();
      }
    });
    try {
      const summary = await withTimeout(source.run(), 60_000, 'the migration');
      expect(await withTimeout(receiver.exit, 30_000, 'receive')).toBe(0);
      const received = lastJson(receiver.stdout());
      expect(summary.resumes).toBe(1);
      expect(received.resumes).toBe(1);
      expect(received.digest).toBe(summary.regionDigest);
    } finally {
      await pool?.releaseAll();
      receiver.child.kill();
    }
  });
});

// A resume straight to the target, no proxy re-cutting the frames: when the target has already noticed
// the broken connections (the source's backoff outlasts the target's 200 ms wait for a reason), its
// last AUTH frame, WELCOME and HELD arrive in one read. HELD is above the handshake's payload limit, and
// keyed, WELCOME and HELD are tagged: the source must decode them only once it has its keys and limits.
import { randomFillSync } from 'node:crypto';
import { connect, type Socket } from 'node:net';
import { describe, expect, it } from 'vitest';
import { DirtyBitmap, MemoryRegion, MemoryTargetImage, MigrationSource, MigrationTarget, type PagewireError } from '../dist/src/index.js';

const PAGE = 4096;
const BYTES = 512 * PAGE;

async function run(psk: Buffer | undefined, backoffMs: number) {
  const raw = Buffer.alloc(BYTES);
  randomFillSync(raw);
  const region = MemoryRegion.fromMemory(raw);
  const bitmap = new DirtyBitmap(region.pageCount);
  const target = await MigrationTarget.listen({
    image: new MemoryTargetImage(MemoryRegion.fromMemory(Buffer.alloc(BYTES)), { zeroed: true }), host: '127.0.0.1', port: 0,
    resumeWindowMs: 5000, ...(psk ? { psk } : {}),
  });
  const received = target.result.then((summary) => summary, (e: PagewireError) => e);
  const sockets: Socket[] = [];
  const port = target.address.port;
  const source = new MigrationSource({
    region, dirtyBitmap: bitmap, streams: 2, maxDowntimeMs: 0, maxRounds: 4, maxResumeAttempts: 3, resumeBackoffMs: backoffMs,
    hooks: { pause: () => {}, resume: () => {} }, ...(psk ? { psk } : {}),
    connect: () => {
      const socket = connect(port, '127.0.0.1');
      sockets.push(socket);
      return new Promise<Socket>((resolve) => socket.once('connect', () => resolve(socket)));
    },
  });
  let broke = false;
  source.on('progress', () => {
    // Reset every connection once, in the middle of round 1.
    if (broke) return;
    broke = true;
    for (const socket of sockets) socket.resetAndDestroy();
  });
  const sent = await source.run().then((summary) => summary, (e: PagewireError) => e);
  return { sent, received: await received };
}

describe('a resume straight to the target', () => {
  for (const psk of [undefined, Buffer.alloc(32, 7)]) {
    for (const backoffMs of [50, 600]) {
      it(`${psk ? 'keyed' : 'keyless'}, after a ${backoffMs} ms backoff: resumed once, the target holds the source's pages`, async () => {
        const { sent, received } = await run(psk, backoffMs);
        if (sent instanceof Error) throw sent;
        if (received instanceof Error) throw received;
        expect(sent.resumes).toBe(1);
        expect(received.resumes).toBe(1);
        expect(received.regionDigest).toBe(sent.regionDigest);
      });
    }
  }
});

// Replays a valid migration stream, mutated and truncated, at a real target over 127.0.0.1, many times.
// Every run must end one of three ways within its timeout: the handshake is refused (and the target
// keeps listening), the migration fails with a typed error, or it completes with exactly the source's
// bytes. A crash, a hang or a wrong committed image fails the test.
// npm test runs PAGEWIRE_FUZZ_RUNS (default 400) streams; by hand: PAGEWIRE_FUZZ_RUNS=10000 npx vitest run test/fuzz
import { describe, expect, it } from 'vitest';
import { MemoryRegion, MemoryTargetImage, MigrationTarget, PagewireError, mixedImage } from '../../dist/src/index.js';
import { PageBatchEncoder } from '../../dist/src/codec/page-batch-encoder.js';
import { regionDigest } from '../../dist/src/codec/page-hashes.js';
import {
  HELLO_BYTES, MessageType, STOP_AND_COPY, WELCOME_BYTES, encodeFinal, encodeHello, encodePagesHeader, encodeRoundMarker,
} from '../../dist/src/wire/messages.js';
import { HELLO_V4, frame, rawClient, withTimeout } from '../helpers.js';
import { mutate } from './mutate.js';

const PAGE = 4096;
const PAGES = 24;
const RUNS = Number(process.env.PAGEWIRE_FUZZ_RUNS ?? 400);
const HELLO_FRAME_BYTES = 8 + HELLO_BYTES;
const HANG_UP_AFTER_MS = 100;
const PARALLEL = 8;


/** A complete, valid two-round stream (every encoding occurs) and the image it must leave behind. */
async function validStream(): Promise<{ hello: Buffer; rest: Buffer; image: Buffer }> {
  const image = mixedImage({ size: PAGES * PAGE, seed: 5 });
  const encoder = new PageBatchEncoder(MemoryRegion.fromMemory(image));
  const all = Uint32Array.from({ length: PAGES }, (_, i) => i);
  const parts: Buffer[] = [];
  const round = async (n: number, pages: Uint32Array, flags: number, skipZero: boolean) => {
    parts.push(frame(MessageType.RoundBegin, encodeRoundMarker({ round: n, pages: pages.length, flags })));
    const batch = await encoder.encode(pages, skipZero);
    parts.push(frame(MessageType.Pages, Buffer.concat([encodePagesHeader(batch.recordCount), batch.records])));
    parts.push(frame(MessageType.RoundEnd, encodeRoundMarker({ round: n, pages: batch.recordCount })));
    return batch;
  };
  await round(1, all, 0, true);
  for (const p of [1, 2, 5]) image.fill(0x5a, p * PAGE + 100, p * PAGE + 164); // DELTA
  image.copy(image, 7 * PAGE, 2 * PAGE, 3 * PAGE); // DUP of page 2
  image.fill(0, 9 * PAGE, 10 * PAGE); // ZERO
  const second = await round(2, Uint32Array.of(1, 2, 5, 7, 9), STOP_AND_COPY, false);
  expect(second.deltaRecords + second.dupRecords + second.zeroRecords).toBeGreaterThan(2);
  parts.push(frame(MessageType.DeviceState, Buffer.concat([Buffer.from([1]), Buffer.from('device state')])));
  parts.push(frame(MessageType.Final, encodeFinal({ round: 2, regionDigest: regionDigest(encoder.sentHashes) })));
  parts.push(frame(MessageType.Go));
  const hello = frame(MessageType.Hello, encodeHello({
    ...HELLO_V4, extraStreams: 0, features: 0, pageSize: PAGE, regionSize: PAGES * PAGE, migrationId: Buffer.alloc(16, 7),
  }));
  return { hello, rest: Buffer.concat(parts), image };
}

type Outcome = 'refused' | 'failed' | 'completed';

async function replay(stream: Buffer, source: Buffer): Promise<Outcome> {
  const targetBytes = Buffer.alloc(PAGES * PAGE);
  const target = await MigrationTarget.listen({
    image: new MemoryTargetImage(MemoryRegion.fromMemory(targetBytes), { zeroed: true }), host: '127.0.0.1', port: 0,
    timeoutMs: 2000, handshakeTimeoutMs: 2000, resumeWindowMs: 0,
  });
  try {
    const refused = new Promise<Outcome>((resolve) => target.once('refused', () => resolve('refused')));
    const settled = target.result.then((): Outcome => 'completed', (error: unknown) => {
      expect(error).toBeInstanceOf(PagewireError);
      return 'failed';
    });
    const client = await rawClient(target.address.port);
    client.socket.write(stream.subarray(0, HELLO_FRAME_BYTES));
    // As a real source: the rest only once WELCOME is back, or the target has hung up.
    await withTimeout(new Promise<void>((resolve) => {
      const check = () => { if (client.received().length >= 8 + WELCOME_BYTES) resolve(); };
      client.socket.on('data', check);
      void client.closed.then(() => resolve());
      check();
    }), 5000, 'WELCOME or close');
    client.socket.write(stream.subarray(HELLO_FRAME_BYTES));
    const ended = Promise.race([refused, settled]);
    // A real source stays connected until DONE; a stream cut short is the source hanging up, here
    // once the target has had a moment to act on what it got.
    await Promise.race([ended, new Promise((resolve) => setTimeout(resolve, HANG_UP_AFTER_MS))]);
    client.socket.end();
    const outcome = await withTimeout(ended, 10_000, 'the target to settle');
    if (outcome === 'completed') expect(targetBytes.equals(source), 'a completed migration holds the source\'s bytes').toBe(true);
    client.socket.destroy();
    return outcome;
  } finally {
    target.stop();
  }
}

describe('a target replayed mutated migration streams', () => {
  it(`ends every one of ${RUNS} runs cleanly: refused, failed with a typed error, or completed with the right bytes`, async () => {
    const { hello, rest, image } = await validStream();
    const valid = Buffer.concat([hello, rest]);
    expect(await replay(valid, image)).toBe('completed');
    let seed = 4242;
    const rnd = (n: number) => Math.floor(((seed = (Math.imul(seed, 1664525) + 1013904223) >>> 0) / 2 ** 32) * n);
    const counts: Record<Outcome, number> = { refused: 0, failed: 0, completed: 0 };
    const streams = Array.from({ length: RUNS }, () => mutate(valid, rnd));
    // Several targets at once, each on its own port: most runs spend their time waiting for a hang-up.
    for (let first = 0; first < RUNS; first += PARALLEL) {
      const outcomes = await Promise.all(streams.slice(first, first + PARALLEL).map((stream) => replay(stream, image)));
      for (const outcome of outcomes) counts[outcome]++;
    }
    console.log(`${RUNS} mutated streams: ${counts.refused} refused at the handshake, ${counts.failed} failed, ${counts.completed} completed with the right bytes`);
    expect(counts.refused + counts.failed + counts.completed).toBe(RUNS);
    expect(counts.failed).toBeGreaterThan(RUNS / 2);
  }, Math.max(60_000, RUNS * 50));
});

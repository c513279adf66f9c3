// A migration over three streams whose extra streams (1 and 2) carry mutated frames or garbage, at a
// real target over 127.0.0.1, many times. Every run must end by itself: failed with a coded
// PagewireError, or completed with exactly the source's bytes. Nothing here hangs up on the target:
// only its own idle timeout may end a stream cut short. A crash, a hang, an uncoded error or a wrong
// committed image fails the test.
// Seed: PAGEWIRE_FUZZ_SEED (printed); runs: PAGEWIRE_FUZZ_RUNS (default 400) / 2.
import { randomFillSync } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { MemoryRegion, MemoryTargetImage, MigrationTarget, PagewireError, mixedImage } from '../../dist/src/index.js';
import { PageBatchEncoder } from '../../dist/src/codec/page-batch-encoder.js';
import { newPageHashes, regionDigest } from '../../dist/src/codec/page-hashes.js';
import {
  MessageType, STOP_AND_COPY, encodeFinal, encodeHello, encodePagesHeader, encodeRoundMarker,
} from '../../dist/src/wire/messages.js';
import { STRIPE_PAGES, splitByStream } from '../../dist/src/wire/streams.js';
import { SessionKeyPair } from '../../dist/src/transport/session-secret.js';
import { HELLO_V4, answered, frame, provenJoin, rawClient, withTimeout } from '../helpers.js';
import { mutate } from './mutate.js';

const SEED = Number(process.env.PAGEWIRE_FUZZ_SEED ?? 8086);
const RUNS = Math.max(1, Math.round(Number(process.env.PAGEWIRE_FUZZ_RUNS ?? 400) / 2));
const PAGE = 512;
const STREAMS = 3;
/** Every stream gets a stripe and a bit: 3 stripes of 256 pages, plus 40 on stream 0. */
const PAGES = STREAMS * STRIPE_PAGES + 40;
const MIGRATION_ID = Buffer.alloc(16, 9);
/** The WELCOME frame: header and payload. */
const WELCOME_BYTES = 8 + 44;
const SESSION_KEYS = SessionKeyPair.generate();
const JOINED_BYTES = 8;
/** The target's idle timeout: what ends a run whose streams stop short. */
const IDLE_MS = 250;
const PARALLEL = 8;

interface ValidMigration {
  hello: Buffer;
  helloPayload: Buffer;
  /** Per stream, after the handshake: its rounds (and, on stream 0, DEVICE_STATE, FINAL and GO). */
  streams: Buffer[];
  image: Buffer;
}

/** Two rounds over three streams, every encoding in them, each stream encoded by its own encoder as the source does. */
async function validMigration(): Promise<ValidMigration> {
  const image = mixedImage({ size: PAGES * PAGE, seed: 11 });
  const region = MemoryRegion.fromMemory(image, { pageSize: PAGE });
  const sentHashes = newPageHashes(PAGES, PAGE);
  const encoders = Array.from({ length: STREAMS }, () => new PageBatchEncoder(region, { sentHashes }));
  const parts: Buffer[][] = Array.from({ length: STREAMS }, () => []);
  const round = async (n: number, pages: Uint32Array, flags: number, skipZero: boolean) => {
    const perStream = splitByStream(pages, STREAMS);
    for (let s = 0; s < STREAMS; s++) {
      const mine = perStream[s]!;
      parts[s]!.push(frame(MessageType.RoundBegin, encodeRoundMarker({ round: n, pages: mine.length, flags })));
      let records = 0;
      if (mine.length > 0) {
        const batch = await encoders[s]!.encode(mine, skipZero);
        parts[s]!.push(frame(MessageType.Pages, Buffer.concat([encodePagesHeader(batch.recordCount), batch.records])));
        records = batch.recordCount;
      }
      parts[s]!.push(frame(MessageType.RoundEnd, encodeRoundMarker({ round: n, pages: records })));
    }
  };
  await round(1, Uint32Array.from({ length: PAGES }, (_, i) => i), 0, true);
  const changed = [3, 300, 301, 600, 700, 790];
  for (const p of changed) image.fill(0x5a, p * PAGE + 10, p * PAGE + 40); // DELTA
  image.copy(image, 302 * PAGE, 300 * PAGE, 301 * PAGE); // DUP of page 300, on stream 1
  image.fill(0, 601 * PAGE, 602 * PAGE); // ZERO, on stream 2
  await round(2, Uint32Array.from([...changed, 302, 601].sort((a, b) => a - b)), STOP_AND_COPY, false);
  parts[0]!.push(frame(MessageType.DeviceState, Buffer.concat([Buffer.from([1]), Buffer.from('device state')])));
  parts[0]!.push(frame(MessageType.Final, encodeFinal({ round: 2, regionDigest: regionDigest(sentHashes) })));
  parts[0]!.push(frame(MessageType.Go));
  const helloPayload = encodeHello({
    ...HELLO_V4, extraStreams: STREAMS - 1, features: 0, pageSize: PAGE, regionSize: PAGES * PAGE,
    migrationId: MIGRATION_ID, sessionKey: SESSION_KEYS.publicKey,
  });
  const hello = frame(MessageType.Hello, helloPayload);
  return { hello, helloPayload, streams: parts.map((p) => Buffer.concat(p)), image };
}

type Client = Awaited<ReturnType<typeof rawClient>>;

type Outcome = { failed: string } | 'completed';

async function run(migration: ValidMigration, extras: Buffer[], idleMs = IDLE_MS): Promise<Outcome> {
  const targetBytes = Buffer.alloc(PAGES * PAGE);
  const target = await MigrationTarget.listen({
    image: new MemoryTargetImage(MemoryRegion.fromMemory(targetBytes, { pageSize: PAGE }), { zeroed: true }), host: '127.0.0.1', port: 0,
    timeoutMs: idleMs, handshakeTimeoutMs: 5000, resumeWindowMs: 0,
  });
  const clients: Client[] = [];
  try {
    const settled = target.result.then((): Outcome => 'completed', (error: unknown): Outcome => {
      expect(error).toBeInstanceOf(PagewireError);
      expect((error as PagewireError).code).toMatch(/^PW_ERR_[A-Z_]+$/);
      return { failed: (error as PagewireError).code };
    });
    const control = await rawClient(target.address.port);
    clients.push(control);
    control.socket.write(migration.hello);
    await answered(control, WELCOME_BYTES);
    for (let s = 1; s < STREAMS; s++) {
      const extra = await rawClient(target.address.port);
      clients.push(extra);
      const welcome = control.received().subarray(8, WELCOME_BYTES);
      extra.socket.write(frame(MessageType.Join, provenJoin(SESSION_KEYS, migration.helloPayload, welcome, s, MIGRATION_ID)));
      await answered(extra, JOINED_BYTES);
    }
    control.socket.write(migration.streams[0]!);
    for (let s = 1; s < STREAMS; s++) clients[s]!.socket.write(extras[s - 1]!);
    const outcome = await withTimeout(settled, 10_000 + idleMs, 'the target to end by itself');
    if (outcome === 'completed') expect(targetBytes.equals(migration.image), 'a completed migration holds the source\'s bytes').toBe(true);
    return outcome;
  } finally {
    for (const client of clients) client.socket.destroy();
    target.stop();
  }
}

describe('a target fed mutated frames and garbage on its extra streams', () => {
  it(`ends every one of ${RUNS} runs by itself: a coded error, or completed with the right bytes`, async () => {
    console.log(`extra-streams fuzz: PAGEWIRE_FUZZ_SEED=${SEED}`);
    const migration = await validMigration();
    // Undamaged, it completes (an idle timeout no busy machine reaches).
    expect(await run(migration, migration.streams.slice(1), 30_000)).toBe('completed');
    let seed = SEED;
    const rnd = (n: number) => Math.floor(((seed = (Math.imul(seed, 1664525) + 1013904223) >>> 0) / 2 ** 32) * n);
    // Per run, each extra stream is left valid, mutated, or replaced by garbage; at least one is not valid.
    const cases = Array.from({ length: RUNS }, () => {
      const damaged = 1 + rnd(STREAMS - 1);
      return migration.streams.slice(1).map((valid, k) => {
        if (k + 1 !== damaged && rnd(2) === 0) return valid;
        if (rnd(5) === 0) return randomFillSync(Buffer.alloc(1 + rnd(4096)));
        return mutate(valid, rnd);
      });
    });
    const codes = new Map<string, number>();
    for (let first = 0; first < RUNS; first += PARALLEL) {
      const outcomes = await Promise.all(cases.slice(first, first + PARALLEL).map((extras) => run(migration, extras)));
      for (const outcome of outcomes) {
        const code = outcome === 'completed' ? 'completed' : outcome.failed;
        codes.set(code, (codes.get(code) ?? 0) + 1);
      }
    }
    console.log(`${RUNS} runs with damaged extra streams: ${[...codes].map(([code, n]) => `${code} ${n}`).join(', ')}`);
    expect([...codes.values()].reduce((a, b) => a + b, 0)).toBe(RUNS);
    expect(RUNS - (codes.get('completed') ?? 0)).toBeGreaterThan(RUNS / 2);
  }, Math.max(60_000, RUNS * 200));
});

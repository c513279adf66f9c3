// The target against a hand-driven source that breaks the protocol's rules after a valid handshake:
// each run must fail with the right code, tell the peer why, and resume nothing.
import { randomFillSync } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { MemoryRegion, MemoryTargetImage, MigrationTarget, type PagewireError } from '../dist/src/index.js';
import { PageBatchEncoder } from '../dist/src/codec/page-batch-encoder.js';
import { regionDigest } from '../dist/src/codec/page-hashes.js';
import { binding } from '../dist/src/native/engine.js';
import {
  MessageType, STOP_AND_COPY, encodeFinal, encodeHello, encodePagesHeader, encodeRoundMarker,
} from '../dist/src/wire/messages.js';
import { HELLO_V4, frame, rawClient, withTimeout } from './helpers.js';

const PAGE = 4096;
const PAGES = 8;

const source = (() => {
  const bytes = Buffer.alloc(PAGES * PAGE);
  randomFillSync(bytes);
  return MemoryRegion.fromMemory(bytes);
})();

/** PAGES frames carrying every page, valid and verified, and the digest that goes with them. */
async function allPages(): Promise<{ pages: Buffer; digest: bigint }> {
  const encoder = new PageBatchEncoder(source);
  const batch = await encoder.encode(Uint32Array.from({ length: PAGES }, (_, i) => i), false);
  return {
    pages: frame(MessageType.Pages, Buffer.concat([encodePagesHeader(batch.recordCount), batch.records])),
    digest: regionDigest(encoder.sentHashes),
  };
}

/** The same PAGES frame, its batch header naming `region` (after the 8-byte frame header, at payload offset 4). */
function inRegion(pages: Buffer, region: number): Buffer {
  const copy = Buffer.from(pages);
  copy.writeUInt32LE(region, 12);
  return copy;
}

const begin = (round: number, flags = 0, pages = PAGES) => frame(MessageType.RoundBegin, encodeRoundMarker({ round, pages, flags }));
const end = (round: number, pages = PAGES) => frame(MessageType.RoundEnd, encodeRoundMarker({ round, pages }));

async function drive(script: (digest: bigint, pages: Buffer) => Buffer[]) {
  const resumed: string[] = [];
  const target = await MigrationTarget.listen({
    image: new MemoryTargetImage(MemoryRegion.fromMemory(Buffer.alloc(PAGES * PAGE)), { zeroed: true }), host: '127.0.0.1', port: 0,
    hooks: { resume: () => { resumed.push('resume'); } },
  });
  const result = target.result.then(() => undefined, (e: PagewireError) => e);
  const client = await rawClient(target.address.port);
  client.socket.write(frame(MessageType.Hello, encodeHello({
    ...HELLO_V4, extraStreams: 0, features: 0, pageSize: PAGE, regionSize: PAGES * PAGE, migrationId: Buffer.alloc(16, 9),
  })));
  // As a real source does: nothing but HELLO until WELCOME (8-byte header + 12) has come back.
  await withTimeout(new Promise<void>((resolve) => {
    const check = () => { if (client.received().length >= 20) { client.socket.off('data', check); resolve(); } };
    client.socket.on('data', check);
    check();
  }), 5000, 'WELCOME');
  const { pages, digest } = await allPages();
  for (const bytes of script(digest, pages)) client.socket.write(bytes);
  const error = await withTimeout(result, 10_000, 'target result');
  await withTimeout(client.closed, 10_000, 'connection close');
  return { error, resumed, said: client.received().toString('latin1') };
}

describe('target against a source that breaks the rules', () => {
  it.each([
    ['PAGES outside a round', (_d: bigint, p: Buffer) => [p], 'PW_ERR_PROTOCOL', /PAGES outside a round/],
    ['a round that does not start at 1', (_d: bigint, p: Buffer) => [begin(2), p], 'PW_ERR_PROTOCOL', /ROUND_BEGIN 2 out of order/],
    ['more records than ROUND_BEGIN announced', (_d: bigint, p: Buffer) => [begin(1, 0, PAGES - 1), p], 'PW_ERR_PROTOCOL', /more page records than the 7 its ROUND_BEGIN announced/],
    ['a ROUND_BEGIN announcing more pages than the region has', () => [begin(1, 0, PAGES + 1)], 'PW_ERR_PROTOCOL', /announces 9 pages, the region has 8/],
    ['PAGES naming a region the HELLO did not offer', (_d: bigint, p: Buffer) => [begin(1), inRegion(p, 1)], 'PW_ERR_PROTOCOL', /PAGES names region 1 of 1/],
    ['ROUND_END counting other records than sent', (_d: bigint, p: Buffer) => [begin(1), p, end(1, PAGES + 1)], 'PW_ERR_PROTOCOL', /carried 8 page records, the source says it sent 9/],
    ['FINAL without a stop-and-copy round', (d: bigint, p: Buffer) => [begin(1), p, end(1), frame(MessageType.Final, encodeFinal({ round: 1, regionDigest: d }))], 'PW_ERR_PROTOCOL', /FINAL before a complete stop-and-copy round/],
    ['GO before READY', (_d: bigint, p: Buffer) => [begin(1), p, end(1), frame(MessageType.Go)], 'PW_ERR_PROTOCOL', /unexpected GO/],
    ['a region digest that does not match the pages', (d: bigint, p: Buffer) => [
      begin(1, STOP_AND_COPY), p, end(1), frame(MessageType.DeviceState, Buffer.from([1])), frame(MessageType.Final, encodeFinal({ round: 1, regionDigest: d ^ 1n })),
    ], 'PW_ERR_CHECKSUM', /region digest differs/],
    ['a page missing from an otherwise valid migration', (d: bigint) => [
      begin(1, STOP_AND_COPY, 0), end(1, 0), frame(MessageType.DeviceState, Buffer.from([1])), frame(MessageType.Final, encodeFinal({ round: 1, regionDigest: d })),
    ], 'PW_ERR_CHECKSUM', /region digest differs/],
    ['DEVICE_STATE with an unknown flag', (_d: bigint, p: Buffer) => [
      begin(1, STOP_AND_COPY), p, end(1), frame(MessageType.DeviceState, Buffer.from([3, 7])),
    ], 'PW_ERR_PROTOCOL', /DEVICE_STATE has unknown flags 3/],
    ['DEVICE_STATE after its last chunk', (_d: bigint, p: Buffer) => [
      frame(MessageType.DeviceState, Buffer.from([1, 7])), begin(1, STOP_AND_COPY), p, end(1), frame(MessageType.DeviceState, Buffer.from([0, 8])),
    ], 'PW_ERR_PROTOCOL', /DEVICE_STATE after the device state's last chunk/],
    ['FINAL while the device state lacks its last chunk', (d: bigint, p: Buffer) => [
      begin(1, STOP_AND_COPY), p, end(1), frame(MessageType.DeviceState, Buffer.from([0, 7])), frame(MessageType.Final, encodeFinal({ round: 1, regionDigest: d })),
    ], 'PW_ERR_PROTOCOL', /FINAL before the device state's last chunk/],
  ])('%s', async (_name, script, code, reason) => {
    const { error, resumed, said } = await drive(script);
    expect(error?.code).toBe(code);
    expect(error?.message).toMatch(reason);
    expect(said).toContain(code);
    expect(resumed).toEqual([]);
  });

  it('completes when the same hand-driven source follows the rules', async () => {
    const { error, resumed, said } = await drive((d, p) => [
      begin(1, STOP_AND_COPY), p, end(1), frame(MessageType.DeviceState, Buffer.from([1])), frame(MessageType.Final, encodeFinal({ round: 1, regionDigest: d })),
      // GO goes out only after READY in a real source; here the target reads it after READY anyway.
      frame(MessageType.Go),
    ]);
    expect(error).toBeUndefined();
    expect(resumed).toEqual(['resume']);
    expect(said.length).toBeGreaterThan(0);
  });
});

describe('XXH64', () => {
  it('matches the reference implementation (xxhash-wasm) on known answers and random inputs of every small length', async () => {
    const { default: xxhash } = await import('xxhash-wasm');
    const reference = await xxhash();
    expect(binding().xxh64(new Uint8Array(0))).toBe(0xef46db3751d8e999n);
    expect(binding().xxh64(Buffer.from('abc'))).toBe(0x44bc2cf5ad770999n);
    const data = Buffer.alloc(5000);
    randomFillSync(data);
    for (let length = 0; length <= 300; length++) {
      const slice = data.subarray(7, 7 + length); // unaligned on purpose
      expect(binding().xxh64(slice), `length ${length}`).toBe(reference.h64Raw(slice));
    }
    for (const length of [1023, 1024, 4095, 4096, 4097, 4999]) {
      expect(binding().xxh64(data.subarray(0, length))).toBe(reference.h64Raw(data.subarray(0, length)));
    }
  });
});

describe('a stop while the image opens', () => {
  it('ends the target even when the open then fails', async () => {
    let failOpen!: (error: Error) => void;
    let opening!: () => void;
    const openStarted = new Promise<void>((resolve) => { opening = resolve; });
    // An embedder's image whose open() is slow, then refuses.
    const image = {
      zeroed: false,
      open: () => { opening(); return new Promise<never>((_, reject) => { failOpen = reject; }); },
      noteWritten() {}, persist() {}, commit() {}, discard() {}, keepInDoubt: () => 'nowhere',
    };
    const target = await MigrationTarget.listen({ image, host: '127.0.0.1', port: 0 });
    const client = await rawClient(target.address.port);
    client.socket.write(frame(MessageType.Hello, encodeHello({
      ...HELLO_V4, extraStreams: 0, features: 0, pageSize: PAGE, regionSize: PAGES * PAGE,
      migrationId: Buffer.alloc(16, 9),
    })));
    await withTimeout(openStarted, 10_000, 'open()');
    target.stop();
    failOpen(new Error('no room'));
    await expect(withTimeout(target.result, 10_000, 'the target\'s result')).rejects.toMatchObject({ code: 'PW_ERR_ABORTED' });
    client.socket.destroy();
  });
});

describe('the key rule beyond loopback, in the library', () => {
  const image = () => new MemoryTargetImage(MemoryRegion.fromMemory(Buffer.alloc(PAGES * PAGE)));

  it('refuses to listen beyond loopback with nothing that authenticates the source, unless insecure', async () => {
    await expect(MigrationTarget.listen({ image: image(), host: '0.0.0.0', port: 0 }))
      .rejects.toMatchObject({ code: 'PW_ERR_INVALID_ARGUMENT', message: expect.stringMatching(/host 0\.0\.0\.0: anyone who reaches/) });
    for (const options of [{ insecure: true }, { psk: Buffer.alloc(32, 5) }]) {
      const target = await MigrationTarget.listen({ image: image(), host: '0.0.0.0', port: 0, ...options });
      expect(target.address.port).toBeGreaterThan(0);
      target.stop();
      await target.result.catch(() => undefined);
    }
    for (const host of ['127.0.0.1', 'localhost']) {
      const target = await MigrationTarget.listen({ image: image(), host, port: 0 });
      target.stop();
      await target.result.catch(() => undefined);
    }
  });
});

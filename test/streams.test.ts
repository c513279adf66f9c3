// Parallel streams and auto-converge, over 127.0.0.1 with real sockets and a real writer thread.
import { randomFillSync } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import {
  ConvergenceError, DirtyBitmap, FileTargetImage, MemoryRegion, MemoryTargetImage, MigrationSource, MigrationTarget, SyntheticWorkload,
  type PagewireError, type RoundReport,
} from '../dist/src/index.js';
import { PageBatchEncoder } from '../dist/src/codec/page-batch-encoder.js';
import {
  MessageType, encodeError, encodeHello, encodeJoinHead, MAX_VERSION, WELCOME_BYTES, encodePagesHeader, encodeRoundMarker,
} from '../dist/src/wire/messages.js';
import { STRIPE_PAGES, pagesOnStream, splitByStream, streamOfPage } from '../dist/src/wire/streams.js';
import { SessionKeyPair } from '../dist/src/transport/session-secret.js';
import { HELLO_V4, provenJoin, receivedAtLeast, frame, randomShared, rawClient, tempDir, withTimeout } from './helpers.js';

const PAGE = 4096;

async function memoryTarget(bytes: number, psk?: Buffer) {
  const targetBytes = Buffer.alloc(bytes);
  const target = await MigrationTarget.listen({
    image: new MemoryTargetImage(MemoryRegion.fromMemory(targetBytes), { zeroed: true }), host: '127.0.0.1', port: 0, ...(psk ? { psk } : {}),
  });
  return { target, targetBytes };
}

describe('stripes', () => {
  it('deals pages to streams in stripes of 256, and counts each stream\'s share', () => {
    expect(streamOfPage(0, 3)).toBe(0);
    expect(streamOfPage(STRIPE_PAGES - 1, 3)).toBe(0);
    expect(streamOfPage(STRIPE_PAGES, 3)).toBe(1);
    expect(streamOfPage(3 * STRIPE_PAGES + 5, 3)).toBe(0);
    for (const [pageCount, streams] of [[1, 1], [1000, 3], [4096, 4], [4097, 4], [300, 2], [STRIPE_PAGES * 7 + 13, 5]] as const) {
      const all = Uint32Array.from({ length: pageCount }, (_, i) => i);
      const parts = splitByStream(all, streams);
      expect(parts.reduce((n, p) => n + p.length, 0)).toBe(pageCount);
      parts.forEach((part, stream) => {
        expect(part.length, `${pageCount} pages, stream ${stream} of ${streams}`).toBe(pagesOnStream(stream, streams, pageCount));
        expect(part.every((page) => streamOfPage(page, streams) === stream)).toBe(true);
      });
    }
  });
});

describe('parallel streams', () => {
  it('migrates over more streams than libuv has pool threads into a file, round after round (native reads never hold a pool thread)', async () => {
    const bytes = 8 * 2 ** 20;
    const sab = randomShared(bytes, 3);
    const region = MemoryRegion.fromMemory(sab);
    const bitmap = new DirtyBitmap(region.pageCount);
    const workload = await SyntheticWorkload.start({ buffer: sab }, bitmap, PAGE, { rateBytesPerSec: 50e6, hot: 0.1, seed: 9 });
    const dir = tempDir();
    try {
      const out = join(dir.dir, 'out.img');
      const target = await MigrationTarget.listen({ image: new FileTargetImage(out), host: '127.0.0.1', port: 0 });
      const source = new MigrationSource({
        region, dirtyBitmap: bitmap, host: '127.0.0.1', port: target.address.port, streams: 6, maxDowntimeMs: 0, maxRounds: 4,
        hooks: { pause: () => workload.pause(), resume: () => workload.resume() },
      });
      const summary = await withTimeout(source.run(), 60_000, 'a migration over 6 streams');
      await workload.stop();
      await target.result;
      expect(summary.streams).toBe(6);
      // Every round ended by a ROUND_ACK after its persist() on the pool, the stop-and-copy round included.
      expect(summary.rounds).toBeGreaterThanOrEqual(2);
      expect(readFileSync(out).equals(Buffer.from(sab))).toBe(true);
    } finally {
      await workload.stop();
      dir.cleanup();
    }
  });

  it.each([[3, undefined], [2, Buffer.alloc(32, 7)]])('migrates under a live writer over %i streams (psk: %s); the target equals the source at the pause point', async (streams, psk) => {
    const bytes = 12 * 2 ** 20;
    const sab = randomShared(bytes, 5);
    const region = MemoryRegion.fromMemory(sab);
    const bitmap = new DirtyBitmap(region.pageCount);
    const workload = await SyntheticWorkload.start({ buffer: sab }, bitmap, PAGE, { rateBytesPerSec: 200e6, hot: 0.1, seed: 5 });
    const { target, targetBytes } = await memoryTarget(bytes, psk);
    const phases: string[] = [];
    target.on('phase', (phase) => phases.push(phase));
    const source = new MigrationSource({
      region, dirtyBitmap: bitmap, host: '127.0.0.1', port: target.address.port, streams, maxDowntimeMs: 0, maxRounds: 4,
      ...(psk ? { psk } : {}),
      hooks: { pause: () => workload.pause(), resume: () => workload.resume() },
    });
    const summary = await source.run();
    await workload.stop();
    const targetSummary = await target.result;
    expect(summary.streams).toBe(streams);
    expect(targetSummary.streams).toBe(streams);
    expect(phases).toEqual(['receiving', 'ready-sent', 'committing', 'completed']);
    expect(summary.rounds).toBeGreaterThanOrEqual(3);
    expect(summary.deltaPages).toBeGreaterThan(0);
    expect(Buffer.from(sab).equals(targetBytes)).toBe(true);
  });

  it('keeps all streams together under --max-bandwidth', async () => {
    const bytes = 6 * 2 ** 20;
    const raw = Buffer.alloc(bytes);
    randomFillSync(raw);
    const { target, targetBytes } = await memoryTarget(bytes);
    const cap = 20e6;
    const rounds: RoundReport[] = [];
    const source = new MigrationSource({
      region: MemoryRegion.fromMemory(raw), host: '127.0.0.1', port: target.address.port, streams: 3, maxBandwidthBytesPerSec: cap,
      lz4: 'off', hooks: { pause: () => {}, resume: () => {} },
    });
    source.on('round', (r) => rounds.push(r));
    const summary = await source.run();
    await target.result;
    expect(summary.streams).toBe(3);
    // Random pages travel whole: round 1 alone is about 6.3 MB, which the cap spreads over 300 ms or more.
    expect(rounds[0]!.durationMs).toBeGreaterThanOrEqual((0.9 * rounds[0]!.bytesSent * 1000) / cap);
    expect(rounds[0]!.bandwidthBytesPerSec).toBeLessThanOrEqual(cap * 1.15);
    expect(targetBytes.equals(raw)).toBe(true);
  });

  it('uses fewer streams than asked when the region has fewer stripes', async () => {
    const bytes = 2 * STRIPE_PAGES * PAGE;
    const raw = Buffer.alloc(bytes);
    randomFillSync(raw);
    const { target, targetBytes } = await memoryTarget(bytes);
    const source = new MigrationSource({
      region: MemoryRegion.fromMemory(raw), host: '127.0.0.1', port: target.address.port, streams: 8,
      hooks: { pause: () => {}, resume: () => {} },
    });
    expect((await source.run()).streams).toBe(2);
    await target.result;
    expect(targetBytes.equals(raw)).toBe(true);
  });
});

describe('joining streams', () => {
  const PAGES = 2 * STRIPE_PAGES;
  const keys = SessionKeyPair.generate();
  const helloPayload = (migrationId: Buffer, extraStreams: number) => encodeHello({
    ...HELLO_V4, extraStreams, features: 0, pageSize: PAGE, regionSize: PAGES * PAGE, migrationId, sessionKey: keys.publicKey,
  });
  const hello = (migrationId: Buffer, extraStreams: number) => frame(MessageType.Hello, helloPayload(migrationId, extraStreams));

  async function listen(handshakeTimeoutMs = 5000) {
    const target = await MigrationTarget.listen({
      image: new MemoryTargetImage(MemoryRegion.fromMemory(Buffer.alloc(PAGES * PAGE)), { zeroed: true }), host: '127.0.0.1', port: 0,
      handshakeTimeoutMs, resumeWindowMs: 0,
    });
    const refusals: PagewireError[] = [];
    target.on('refused', (e) => refusals.push(e));
    return { target, refusals, result: target.result.then(() => undefined, (e: PagewireError) => e) };
  }

  it('refuses a JOIN for a migration it is not setting up, and keeps listening', async () => {
    const { target, refusals } = await listen();
    const stray = await rawClient(target.address.port);
    stray.socket.write(frame(MessageType.Join, Buffer.concat([
      encodeJoinHead({ version: MAX_VERSION, stream: 1, migrationId: Buffer.alloc(16, 1) }), Buffer.alloc(32)])));
    await withTimeout(stray.closed, 5000, 'refusal');
    expect(stray.received().toString('latin1')).toContain('PW_ERR_HANDSHAKE');
    expect(refusals[0]?.message).toMatch(/names no migration/);
    expect(target.phase).toBe('listening');
    target.stop();
  });

  it('hears the source on stream 0 while it waits for the joins', async () => {
    // A join wait far beyond the test's own timeout: only hearing the ERROR on stream 0 can end it.
    const { target, result } = await listen(10 * 60_000);
    const client = await rawClient(target.address.port);
    client.socket.write(hello(Buffer.alloc(16, 4), 1));
    await receivedAtLeast(client, 8 + WELCOME_BYTES);
    client.socket.write(frame(MessageType.Error, encodeError('PW_ERR_ABORTED', 'operator gave up')));
    const error = await result;
    expect(error?.code).toBe('PW_ERR_PEER');
    expect(error?.message).toMatch(/operator gave up/);
  });

  it('fails the migration when an announced stream never joins', async () => {
    const { target, result } = await listen(300);
    const client = await rawClient(target.address.port);
    client.socket.write(hello(Buffer.alloc(16, 2), 1));
    const error = await withTimeout(result, 5000, 'target result');
    expect(error?.code).toBe('PW_ERR_TIMEOUT');
    expect(error?.message).toMatch(/only 0 of 1 extra streams joined/);
  });

  it('refuses a page sent on a stream it does not belong to', async () => {
    const { target, result } = await listen();
    const migrationId = Buffer.alloc(16, 3);
    const control = await rawClient(target.address.port);
    control.socket.write(hello(migrationId, 1));
    await receivedAtLeast(control, 8 + WELCOME_BYTES);
    const extra = await rawClient(target.address.port);
    const welcome = control.received().subarray(8, 8 + WELCOME_BYTES);
    extra.socket.write(frame(MessageType.Join, provenJoin(keys, helloPayload(migrationId, 1), welcome, 1, migrationId)));
    await receivedAtLeast(extra, 8);
    // Page 256 opens stream 1's first stripe; here it arrives on stream 0.
    const bytes = Buffer.alloc(PAGES * PAGE);
    randomFillSync(bytes);
    const batch = await new PageBatchEncoder(MemoryRegion.fromMemory(bytes)).encode(Uint32Array.of(STRIPE_PAGES), false);
    control.socket.write(Buffer.concat([
      frame(MessageType.RoundBegin, encodeRoundMarker({ round: 1, pages: 1 })),
      frame(MessageType.Pages, Buffer.concat([encodePagesHeader(batch.recordCount), batch.records])),
    ]));
    const error = await withTimeout(result, 5000, 'target result');
    expect(error?.code).toBe('PW_ERR_PROTOCOL');
    expect(error?.message).toMatch(/page 256 arrived on stream 0; it belongs to stream 1/);
    await withTimeout(control.closed, 5000, 'close');
    expect(control.received().toString('latin1')).toContain('belongs to stream 1');
  });
});

describe('auto-converge', () => {
  /**
   * A writer on the main thread that dirties pages as the source sends (per progress event), at a rate
   * the throttle scales: with a zero budget the rounds never converge, whatever the machine's speed.
   */
  async function stalledMigration(onStall: 'throttle' | 'fail') {
    const bytes = 16 * 2 ** 20;
    const sab = randomShared(bytes, 5);
    const view = new Uint8Array(sab);
    const region = MemoryRegion.fromMemory(sab);
    const bitmap = new DirtyBitmap(region.pageCount);
    const { target, targetBytes } = await memoryTarget(bytes);
    const targetResult = target.result.catch((e: unknown) => e);
    const calls: string[] = [];
    const rounds: RoundReport[] = [];
    let throttle = 0;
    let paused = false;
    let seed = 11;
    const source = new MigrationSource({
      region, dirtyBitmap: bitmap, host: '127.0.0.1', port: target.address.port, maxDowntimeMs: 0, maxRounds: 60, onStall,
      hooks: {
        pause: () => { calls.push('pause'); paused = true; },
        resume: () => { calls.push('resume'); paused = false; },
        throttle: (percent) => { calls.push(`throttle ${percent}`); throttle = percent; },
      },
    });
    source.on('progress', () => {
      if (paused) return;
      for (let i = Math.ceil((200 * (100 - throttle)) / 100); i > 0; i--) {
        const page = (seed = (Math.imul(seed, 1103515245) + 12345) >>> 0) % region.pageCount;
        view[page * PAGE + (seed % PAGE)]! ^= 0xff;
        bitmap.mark(page);
      }
    });
    source.on('round', (r) => rounds.push(r));
    const outcome = await source.run().then((summary) => ({ summary, error: undefined }), (error: PagewireError) => ({ summary: source.metrics, error }));
    return { ...outcome, calls, rounds, sab, targetBytes, targetResult: await targetResult };
  }

  it('throttles the workload 20%, then +10% per step up to 99%, reports it, and still ends byte-exact', async () => {
    const r = await stalledMigration('throttle');
    expect(r.error).toBeUndefined();
    const steps = r.calls.filter((c) => c.startsWith('throttle')).map((c) => Number(c.split(' ')[1]));
    expect(steps).toEqual([20, 30, 40, 50, 60, 70, 80, 90, 99]);
    expect(r.summary.stopReason).toBe('not-converging');
    expect(r.summary.throttlePercent).toBe(99);
    expect(r.rounds.at(-1)!.throttlePercent).toBe(99);
    expect(r.rounds[0]!.throttlePercent).toBe(0);
    expect(r.calls.at(-1)).toBe('pause');
    expect(Buffer.from(r.sab).equals(r.targetBytes)).toBe(true);
  });

  it('gives up cleanly when told to: PW_ERR_NOT_CONVERGING, the workload was never paused, the target discards', async () => {
    const r = await stalledMigration('fail');
    expect(r.error).toBeInstanceOf(ConvergenceError);
    expect(r.error!.code).toBe('PW_ERR_NOT_CONVERGING');
    expect(r.calls).toEqual([]);
    expect(r.summary.status).toBe('failed');
    expect((r.targetResult as PagewireError).code).toBe('PW_ERR_PEER');
  });

  it('the synthetic workload never writes faster than the throttled rate once throttled', async () => {
    // 500 MB/s of 4 KiB pages: 122 070 writes/s, 12 207/s at 90%.
    const rate = 500e6;
    const workload = await SyntheticWorkload.start({ buffer: new SharedArrayBuffer(4 * 2 ** 20) }, new DirtyBitmap(1024), PAGE,
      { rateBytesPerSec: rate, hot: 1, seed: 1 });
    const throttledPerMs = (rate / PAGE / 1000) * 0.1;
    const throttledAt = performance.now();
    workload.throttle(90);
    const before = workload.writes;
    // The writer looks at the throttle between slices of at most 2048 writes (SLICE_WRITES): the slice
    // under way may still count at the old rate; every slice after it keeps to the new schedule. A slow
    // machine only makes the writes come later, so the bound cannot fail for want of speed; it breaks if
    // the throttle is ignored (these writes would take a tenth of the time).
    const slice = 2048;
    const measured = 2000;
    while (workload.writes - before < slice + measured) await new Promise((resolve) => setTimeout(resolve, 5));
    const elapsedMs = performance.now() - throttledAt;
    await workload.stop();
    expect(elapsedMs).toBeGreaterThanOrEqual(measured / throttledPerMs);
  });
});

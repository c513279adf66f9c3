// Loopback migrations through the library API: real sockets, real worker threads, no stand-ins.
import { randomFillSync } from 'node:crypto';
import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { createServer, connect, type Server } from 'node:net';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import {
  AbortedError, DirtyBitmap, FileTargetImage, MemoryRegion, MemoryTargetImage, MigrationSource, MigrationTarget,
  PeerError, SwitchoverError, SyntheticWorkload, type PagewireError, type RoundReport, type TargetHooks,
} from '../dist/src/index.js';
import { FaultProxy } from './fault-proxy.js';
import { randomShared, tempDir } from './helpers.js';
import { gateRoundsOnWrites, workloadWrites } from './round-gate.js';

const tmp = tempDir();
afterAll(() => tmp.cleanup());
const PAGE = 4096;

async function memoryTarget(bytes: number, hooks: TargetHooks = {}) {
  const targetBytes = Buffer.alloc(bytes);
  const target = await MigrationTarget.listen({
    image: new MemoryTargetImage(MemoryRegion.fromMemory(targetBytes), { zeroed: true }), host: '127.0.0.1', port: 0, hooks,
  });
  return { target, targetBytes };
}

describe('library migration over 127.0.0.1', () => {
  it('refuses a WebAssembly.Memory that grows during the migration, rather than moving it truncated', async () => {
    const memory = new WebAssembly.Memory({ initial: 32, maximum: 64 }); // 2 MiB in 64 KiB wasm pages
    randomFillSync(new Uint8Array(memory.buffer));
    const region = MemoryRegion.fromMemory(memory);
    const bitmap = new DirtyBitmap(region.pageCount);
    const { target } = await memoryTarget(region.byteLength);
    const calls: string[] = [];
    const source = new MigrationSource({
      region, dirtyBitmap: bitmap, host: '127.0.0.1', port: target.address.port, maxDowntimeMs: 0, maxRounds: 3,
      hooks: { pause: () => { calls.push('pause'); }, resume: () => { calls.push('resume'); } },
    });
    // Nothing is dirty after round 1, so the source pauses; the guest grew its memory and wrote a page
    // just before, so the stop-and-copy round has work.
    source.once('round', () => { memory.grow(1); bitmap.mark(0); });
    await expect(source.run()).rejects.toMatchObject({ code: 'PW_ERR_REGION_CHANGED', message: expect.stringMatching(/grew from 2097152 to 2162688 bytes/) });
    // Before READY: the workload goes on here.
    expect(calls).toEqual(['pause', 'resume']);
    await expect(target.result).rejects.toMatchObject({ code: 'PW_ERR_PEER' });
  });

  it('bounds the target\'s hooks: a resume hook that never settles fails the migration as committed-resume-failed', async () => {
    const bytes = 2 * 2 ** 20;
    const sourceBytes = Buffer.alloc(bytes);
    randomFillSync(sourceBytes);
    const targetBytes = Buffer.alloc(bytes);
    let resumeSignal: AbortSignal | undefined;
    const target = await MigrationTarget.listen({
      image: new MemoryTargetImage(MemoryRegion.fromMemory(targetBytes), { zeroed: true }), host: '127.0.0.1', port: 0, hookTimeoutMs: 50,
      hooks: { resume: (signal) => { resumeSignal = signal; return new Promise<void>(() => {}); } },
    });
    const source = new MigrationSource({
      region: MemoryRegion.fromMemory(sourceBytes), dirtyBitmap: new DirtyBitmap(bytes / PAGE), host: '127.0.0.1',
      port: target.address.port, hooks: { pause: () => {}, resume: () => {} },
    });
    expect((await source.run()).status).toBe('completed');
    await expect(target.result).rejects.toMatchObject({ code: 'PW_ERR_SWITCHOVER', state: 'committed-resume-failed' });
    expect(resumeSignal?.aborted).toBe(true);
    expect(targetBytes.equals(sourceBytes)).toBe(true);
  });

  it('never resumes while a pause hook it gave up on is still running, and tells the hook it was given up on', async () => {
    const bytes = 2 * 2 ** 20;
    const sourceBytes = Buffer.alloc(bytes);
    randomFillSync(sourceBytes);
    const { target } = await memoryTarget(bytes);
    const events: string[] = [];
    let pauseSignal: AbortSignal | undefined;
    let releasePause!: () => void;
    const source = new MigrationSource({
      region: MemoryRegion.fromMemory(sourceBytes), dirtyBitmap: new DirtyBitmap(bytes / PAGE), host: '127.0.0.1',
      port: target.address.port, hookTimeoutMs: 50,
      hooks: {
        // A pause that outlives its timeout: it ends only when the test says so.
        pause: (signal) => {
          pauseSignal = signal;
          events.push('pause started');
          return new Promise<void>((resolve) => { releasePause = () => { events.push('pause ended'); resolve(); }; });
        },
        resume: () => { events.push('resume'); },
      },
    });
    // Once the source has given up and turned to failing, let the pause finish: a resume that did not
    // wait for it would come before.
    source.on('phase', (phase) => { if (phase === 'failed') setImmediate(() => releasePause()); });
    await expect(source.run()).rejects.toMatchObject({ code: 'PW_ERR_TIMEOUT' });
    expect(events).toEqual(['pause started', 'pause ended', 'resume']);
    expect(pauseSignal?.aborted).toBe(true);
    await expect(target.result).rejects.toMatchObject({ code: 'PW_ERR_PEER' });
  });

  it('migrates a region under a live writer thread in several rounds; the target equals the source at the pause point', async () => {
    const bytes = 16 * 2 ** 20;
    const sab = randomShared(bytes);
    const region = MemoryRegion.fromMemory(sab);
    const bitmap = new DirtyBitmap(region.pageCount);
    const workload = await SyntheticWorkload.start({ buffer: sab }, bitmap, PAGE, { rateBytesPerSec: 100e6, hot: 0.05, seed: 3 });
    const state = Buffer.from('device registers');
    let received: Buffer | undefined;
    const { target, targetBytes } = await memoryTarget(bytes, { onDeviceState: (s) => { received = s; } });
    const targetDone = target.result;
    // Each pre-copy round is acknowledged only once the writer has written after it began: every round
    // ends with pages pending, however the writer thread is scheduled.
    const proxy = await FaultProxy.start(target.address.port, gateRoundsOnWrites(workloadWrites(workload)));
    const calls: string[] = [];
    const source = new MigrationSource({
      region, dirtyBitmap: bitmap, host: '127.0.0.1', port: proxy.port,
      // A zero budget is never met with pages pending: two pre-copy rounds, then the round cap.
      maxDowntimeMs: 0, maxRounds: 2,
      hooks: {
        pause: async () => { calls.push('pause'); await workload.pause(); },
        resume: () => { calls.push('resume'); workload.resume(); },
        deviceState: () => state,
      },
    });
    const rounds: RoundReport[] = [];
    source.on('round', (r) => rounds.push(r));
    const summary = await source.run();
    const writesAtPause = workload.writes;
    await workload.stop();
    // Handed over: the workload stays paused (no resume below), and its writes stopped at the pause.
    expect(workload.writes).toBe(writesAtPause);
    const targetSummary = await targetDone;
    proxy.close();

    expect(calls).toEqual(['pause']);
    expect(summary.status).toBe('completed');
    expect(summary.rounds).toBe(3);
    expect(rounds.map((r) => r.pendingPages > 0)).toEqual([true, true]);
    expect(rounds[1]!.pagesSent).toBeGreaterThan(0);
    expect(summary.downtimeMs).toBeGreaterThan(0);
    expect(summary.stopReason).toBe('round-cap');
    expect(writesAtPause).toBeGreaterThan(2048);
    expect(targetSummary.status).toBe('completed');
    expect(Buffer.from(sab).equals(targetBytes)).toBe(true);
    expect(received?.toString()).toBe('device registers');
  });

  it('sends dirty pages in batches smaller than a bitmap word (64 KiB pages, 16 a batch)', async () => {
    const page = 65536;
    const sab = randomShared(64 * page);
    const view = new Uint8Array(sab);
    const region = MemoryRegion.fromMemory(sab, { pageSize: page });
    const bitmap = new DirtyBitmap(region.pageCount);
    const targetBytes = Buffer.alloc(64 * page);
    const target = await MigrationTarget.listen({
      image: new MemoryTargetImage(MemoryRegion.fromMemory(targetBytes, { pageSize: page }), { zeroed: true }), host: '127.0.0.1', port: 0,
    });
    const source = new MigrationSource({
      region, dirtyBitmap: bitmap, host: '127.0.0.1', port: target.address.port, maxDowntimeMs: 0, maxRounds: 2, streams: 1,
      hooks: { pause: () => {}, resume: () => {} },
    });
    // While round 1 runs, every page of the first word (32 pages) changes: round 2 carries them.
    let edited = false;
    source.on('progress', () => {
      if (edited) return;
      edited = true;
      for (let p = 0; p < 32; p++) {
        view[p * page + 7] ^= 0xff;
        bitmap.mark(p);
      }
    });
    const summary = await source.run();
    await target.result;
    expect(summary.pagesTransferred).toBeGreaterThanOrEqual(64 + 32);
    expect(Buffer.from(sab).equals(targetBytes)).toBe(true);
  });

  it('tracks pages by hash when the region has no dirty bitmap', async () => {
    const bytes = 4 * 2 ** 20;
    const source = Buffer.alloc(bytes);
    randomFillSync(source, 0, bytes / 2);
    const region = MemoryRegion.fromMemory(source);
    const { target, targetBytes } = await memoryTarget(bytes);
    let paused = false;
    let n = 0;
    const migration = new MigrationSource({
      region, host: '127.0.0.1', port: target.address.port, maxDowntimeMs: 0, maxRounds: 3,
      hooks: { pause: () => { paused = true; }, resume: () => {} },
    });
    // A write as each batch goes out, with no hook telling the engine about it: the one after a round's
    // last batch leaves a page that differs from what was sent, so every pre-copy round ends with pages
    // pending and the zero budget runs to the round cap.
    migration.on('progress', () => { if (!paused) source.writeUInt32LE(++n, (n * 7919 % (bytes / 4)) * 4); });
    const summary = await migration.run();
    await target.result;
    expect(n).toBeGreaterThan(0);
    expect(summary.rounds).toBe(4);
    expect(source.equals(targetBytes)).toBe(true);
  });

  it('resumes the source and keeps the previous --out when the target fails during stop-and-copy', async () => {
    const bytes = 2 * 2 ** 20;
    const sab = randomShared(bytes);
    const region = MemoryRegion.fromMemory(sab);
    const out = join(tmp.dir, 'keep.img');
    writeFileSync(out, 'previous state');
    const target = await MigrationTarget.listen({ image: new FileTargetImage(out), host: '127.0.0.1', port: 0 });
    const targetResult = target.result.catch((e: unknown) => e);
    const calls: string[] = [];
    const source = new MigrationSource({
      region, dirtyBitmap: new DirtyBitmap(region.pageCount), host: '127.0.0.1', port: target.address.port,
      hooks: {
        // The workload pauses; at that moment the target goes away.
        pause: () => { calls.push('pause'); target.stop(); },
        resume: () => { calls.push('resume'); },
      },
    });
    const error = await source.run().catch((e: unknown) => e);
    expect(error).toBeInstanceOf(PeerError);
    expect((error as PeerError).remoteCode).toBe('PW_ERR_ABORTED');
    expect(calls).toEqual(['pause', 'resume']);
    expect(source.metrics.status).toBe('failed');
    expect(await targetResult).toBeInstanceOf(AbortedError);
    expect(readFileSync(out, 'utf8')).toBe('previous state');
    expect(readdirSync(tmp.dir).filter((f) => f.includes('.pagewire-'))).toEqual([]);
  });

  it('aborts cleanly through an AbortSignal during pre-copy; the target hears why', async () => {
    const bytes = 8 * 2 ** 20;
    const region = MemoryRegion.fromMemory(randomShared(bytes));
    const { target } = await memoryTarget(bytes);
    const targetResult = target.result.catch((e: unknown) => e);
    const controller = new AbortController();
    const source = new MigrationSource({
      region, dirtyBitmap: new DirtyBitmap(region.pageCount), host: '127.0.0.1', port: target.address.port,
      maxBandwidthBytesPerSec: 20e6, signal: controller.signal, hooks: { pause: () => {}, resume: () => {} },
    });
    source.once('progress', () => controller.abort());
    const error = await source.run().catch((e: unknown) => e);
    expect(error).toBeInstanceOf(AbortedError);
    const targetError = await targetResult;
    expect(targetError).toBeInstanceOf(PeerError);
    expect((targetError as PeerError).remoteCode).toBe('PW_ERR_ABORTED');
  });

  /**
   * A 1 MiB migration into a file target whose previous --out must survive, through a proxy that cuts
   * both connections when `cutAt` says so. Records who calls which hook.
   */
  async function migrateThroughCut(name: string, cutAt: (direction: 'to-target' | 'to-source', type: number) => boolean) {
    const raw = Buffer.alloc(2 ** 20);
    randomFillSync(raw);
    const region = MemoryRegion.fromMemory(raw);
    const out = join(tmp.dir, `${name}.img`);
    writeFileSync(out, 'previous state');
    const calls: string[] = [];
    const targetCalls: string[] = [];
    const target = await MigrationTarget.listen({
      image: new FileTargetImage(out), host: '127.0.0.1', port: 0,
      hooks: {
        prepare: () => { targetCalls.push('prepare'); },
        discard: () => { targetCalls.push('discard'); },
        resume: () => { calls.push('target resume'); },
      },
    });
    const targetResult = target.result.catch((e: unknown) => e);
    const proxy = await FaultProxy.start(target.address.port, { fault: (f) => (cutAt(f.direction, f.type) ? 'cut' : undefined) });
    const source = new MigrationSource({
      region, dirtyBitmap: new DirtyBitmap(region.pageCount), host: '127.0.0.1', port: proxy.port,
      hooks: { pause: () => { calls.push('source pause'); }, resume: () => { calls.push('source resume'); } },
    });
    const sourceError = await source.run().catch((e: unknown) => e) as PagewireError;
    proxy.close();
    return { raw, out, calls, targetCalls, source, sourceError, targetError: await targetResult as SwitchoverError };
  }

  it('leaves the switch-over in doubt, never in split brain, when READY is lost: the source resumes, the target keeps the image aside', async () => {
    // READY (type 10) never reaches the source.
    const r = await migrateThroughCut('ready-lost', (direction, type) => direction === 'to-source' && type === 10);
    expect(r.sourceError.code).toBe('PW_ERR_CONNECTION');
    expect(r.calls).toEqual(['source pause', 'source resume']);
    expect(r.targetError).toBeInstanceOf(SwitchoverError);
    expect(r.targetError.state).toBe('ready-sent-go-missing');
    // The workload prepared on the image before READY is told to discard: only a committed image may run.
    expect(r.targetCalls).toEqual(['prepare', 'discard']);
    expect(readFileSync(r.out, 'utf8')).toBe('previous state');
    expect(r.targetError.inDoubtImage).toMatch(/ready-lost\.img\.pagewire-in-doubt-[0-9a-f]{32}$/);
    expect(readFileSync(r.targetError.inDoubtImage!).equals(r.raw)).toBe(true);
  });

  it('reports the exact state on both sides, and resumes neither, when GO is lost after READY', async () => {
    // GO (type 11) never reaches the target.
    const r = await migrateThroughCut('go-lost', (direction, type) => direction === 'to-target' && type === 11);
    expect(r.sourceError).toBeInstanceOf(SwitchoverError);
    expect((r.sourceError as SwitchoverError).state).toBe('handed-over-unconfirmed');
    expect(r.source.phase).toBe('failed');
    expect(r.calls).toEqual(['source pause']);
    expect(r.targetError.state).toBe('ready-sent-go-missing');
    expect(r.targetCalls).toEqual(['prepare', 'discard']);
    expect(readFileSync(r.out, 'utf8')).toBe('previous state');
    expect(readFileSync(r.targetError.inDoubtImage!).equals(r.raw)).toBe(true);
  });

  it('detects a byte corrupted in transit, names the page, and the source hears the reason while still streaming', async () => {
    // Large enough that the source is still sending round 1 when the target gives up.
    const bytes = 32 * 2 ** 20;
    const raw = Buffer.alloc(bytes);
    randomFillSync(raw);
    const region = MemoryRegion.fromMemory(raw);
    const { target } = await memoryTarget(bytes);
    const targetResult = target.result.catch((e: unknown) => e);
    // A proxy that flips one byte inside the first page's payload (offset 212 of the source's stream:
    // HELLO frame 56, ROUND_BEGIN frame 20, PAGES headers 16, record header 20, then page 0's bytes).
    // Only the first connection (stream 0) is corrupted; the others pass untouched.
    let connections = 0;
    const proxy: Server = createServer((client) => {
      const upstream = connect(target.address.port, '127.0.0.1');
      const corrupt = connections++ === 0;
      let seen = 0;
      client.on('data', (chunk: Buffer) => {
        if (corrupt && seen <= 212 && 212 < seen + chunk.length) chunk[212 - seen] ^= 0x40;
        seen += chunk.length;
        upstream.write(chunk);
      });
      upstream.on('data', (d) => client.write(d));
      client.on('error', () => upstream.destroy());
      upstream.on('error', () => client.destroy());
      client.on('close', () => upstream.end());
      upstream.on('close', () => client.end());
    });
    await new Promise<void>((r) => proxy.listen(0, '127.0.0.1', r));
    const port = (proxy.address() as { port: number }).port;
    const source = new MigrationSource({
      region, dirtyBitmap: new DirtyBitmap(region.pageCount), host: '127.0.0.1', port, hooks: { pause: () => {}, resume: () => {} },
    });
    const error = await source.run().catch((e: unknown) => e);
    proxy.close();
    expect(error).toBeInstanceOf(PeerError);
    expect((error as PeerError).remoteCode).toBe('PW_ERR_CHECKSUM');
    expect((error as PeerError).message).toMatch(/page 0 /);
    expect((await targetResult as { code: string }).code).toBe('PW_ERR_CHECKSUM');
  });
});

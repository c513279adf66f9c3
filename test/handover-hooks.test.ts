// The hand-over as an embedder running a real workload sees it: device state collected from the pause on
// and streamed past one frame's size; the target's prepare hook before READY on the verified file, still
// under its temporary name; discard when the migration fails after it.
import { randomFillSync } from 'node:crypto';
import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import {
  DirtyBitmap, FileTargetImage, MemoryRegion, MemoryTargetImage, MigrationSource, MigrationTarget, PeerError,
  type PreparedHandover,
} from '../dist/src/index.js';
import { FaultProxy } from './fault-proxy.js';
import { tempDir } from './helpers.js';

const tmp = tempDir();
afterAll(() => tmp.cleanup());

/** A region of random bytes whose writer marks a few pages after every pre-copy round. */
function writtenRegion(bytes: number) {
  const raw = Buffer.alloc(bytes);
  randomFillSync(raw);
  const region = MemoryRegion.fromMemory(raw);
  const bitmap = new DirtyBitmap(region.pageCount);
  let next = 0;
  const write = () => {
    for (let i = 0; i < 8; i++) {
      const page = (next++ * 7919) % region.pageCount;
      raw[page * region.pageSize + 5] ^= 0x5a;
      bitmap.mark(page);
    }
  };
  return { raw, region, bitmap, write };
}

describe('device state and the hand-over hooks', () => {
  it('streams 40 MiB of device state, asked for at the pause before the last pages go, and hands it over whole', async () => {
    const { raw, region, bitmap, write } = writtenRegion(4 * 2 ** 20);
    const state = Buffer.alloc(40 * 2 ** 20);
    randomFillSync(state);
    const targetBytes = Buffer.alloc(raw.length);
    const events: string[] = [];
    let received: Buffer | undefined;
    const target = await MigrationTarget.listen({
      image: new MemoryTargetImage(MemoryRegion.fromMemory(targetBytes), { zeroed: true }), host: '127.0.0.1', port: 0,
      hooks: { onDeviceState: (s) => { received = s; } },
    });
    target.on('round', (e) => events.push(`target round ${e.round}`));
    const source = new MigrationSource({
      region, dirtyBitmap: bitmap, host: '127.0.0.1', port: target.address.port, maxDowntimeMs: 0, maxRounds: 2,
      hooks: {
        pause: () => { events.push('pause'); },
        resume: () => { events.push('resume'); },
        // Streamed in parts of 5 MiB, more than one DEVICE_STATE frame carries in all.
        deviceState: async function* () {
          events.push('deviceState');
          for (let at = 0; at < state.length; at += 5 * 2 ** 20) yield state.subarray(at, at + 5 * 2 ** 20);
        },
      },
    });
    source.on('round', write);
    const summary = await source.run();
    await target.result;
    const atPause = Buffer.from(raw);
    expect(summary.status).toBe('completed');
    expect(summary.deviceStateBytes).toBe(state.length);
    expect(received!.equals(state)).toBe(true);
    expect(targetBytes.equals(atPause)).toBe(true);
    // The hook ran beside the final round: called before the target had that round.
    const finalRound = events.indexOf(`target round ${summary.rounds}`);
    expect(finalRound).toBeGreaterThan(0);
    expect(events.indexOf('deviceState')).toBeGreaterThan(events.indexOf('pause'));
    expect(events.indexOf('deviceState')).toBeLessThan(finalRound);
    expect(events).not.toContain('resume');
  });

  it('a failure in the final round stops a deviceState still streaming, and resumes the workload only once it has stopped', async () => {
    const { region, bitmap } = writtenRegion(2 ** 20);
    // The source does not resume a migration past its pause: the target need not wait for it.
    const target = await MigrationTarget.listen({
      image: new MemoryTargetImage(MemoryRegion.fromMemory(Buffer.alloc(2 ** 20)), { zeroed: true }), resumeWindowMs: 0,
    });
    const targetResult = target.result.catch((e: unknown) => e);
    // The second ROUND_BEGIN (type 4) is the stop-and-copy round's: the connection is cut there.
    let roundBegins = 0;
    const proxy = await FaultProxy.start(target.address.port, {
      fault: (f) => (f.direction === 'to-target' && f.type === 4 && ++roundBegins === 2 ? 'cut' : undefined),
    });
    const calls: string[] = [];
    const source = new MigrationSource({
      region, dirtyBitmap: bitmap, host: '127.0.0.1', port: proxy.port, streams: 1, maxResumeAttempts: 0,
      hooks: {
        pause: () => { calls.push('pause'); },
        resume: () => { calls.push('resume'); },
        // Streams one part, then runs until told to stop, as QEMU's migrate would until cancelled.
        deviceState: async function* (signal: AbortSignal) {
          yield Buffer.from('first part');
          await new Promise((resolve) => signal.addEventListener('abort', resolve, { once: true }));
          calls.push('deviceState stopped');
        },
      },
    });
    const error = await source.run().catch((e: unknown) => e);
    proxy.close();
    expect(error).toMatchObject({ code: 'PW_ERR_CONNECTION' });
    expect(calls).toEqual(['pause', 'deviceState stopped', 'resume']);
    expect(await targetResult).toBeInstanceOf(Error);
  });

  it('a deviceState stream that fails part-way fails the migration before READY: the source resumes, the target discards', async () => {
    const { region, bitmap } = writtenRegion(2 ** 20);
    const out = join(tmp.dir, 'state-fails.img');
    writeFileSync(out, 'previous state');
    const targetCalls: string[] = [];
    const target = await MigrationTarget.listen({
      image: new FileTargetImage(out), host: '127.0.0.1', port: 0,
      hooks: { prepare: () => { targetCalls.push('prepare'); }, discard: () => { targetCalls.push('discard'); } },
    });
    const targetResult = target.result.catch((e: unknown) => e);
    const calls: string[] = [];
    const source = new MigrationSource({
      region, dirtyBitmap: bitmap, host: '127.0.0.1', port: target.address.port,
      hooks: {
        pause: () => { calls.push('pause'); },
        resume: () => { calls.push('resume'); },
        deviceState: async function* () {
          yield Buffer.from('registers');
          throw new Error('the device went away');
        },
      },
    });
    const error = await source.run().catch((e: unknown) => e);
    expect(error).toMatchObject({ code: 'PW_ERR_HOOK', hook: 'deviceState' });
    expect(calls).toEqual(['pause', 'resume']);
    expect(await targetResult).toBeInstanceOf(PeerError);
    expect(targetCalls).toEqual(['discard']);
    expect(readFileSync(out, 'utf8')).toBe('previous state');
    expect(readdirSync(tmp.dir).filter((f) => f.includes('state-fails.img.pagewire'))).toEqual([]);
  });

  it('prepare sees the verified image under its temporary name before READY; a mapping of it survives the commit', async () => {
    const { raw, region, bitmap, write } = writtenRegion(2 * 2 ** 20);
    const out = join(tmp.dir, 'prepared.img');
    writeFileSync(out, 'previous state');
    const order: string[] = [];
    let mapped: MemoryRegion | undefined;
    let seen: { path: string | undefined; outBefore: string; deviceState: string } | undefined;
    const target = await MigrationTarget.listen({
      image: new FileTargetImage(out), host: '127.0.0.1', port: 0,
      hooks: {
        prepare: (handover: PreparedHandover) => {
          order.push('prepare');
          const [image] = handover.images;
          seen = { path: image!.path, outBefore: readFileSync(out, 'utf8'), deviceState: handover.deviceState.toString() };
          // What a hypervisor does: map the file now, run on it after GO.
          mapped = MemoryRegion.mapFile(image!.path!);
        },
        onDeviceState: () => { order.push('onDeviceState'); },
        resume: () => { order.push('resume'); },
        discard: () => { order.push('discard'); },
      },
    });
    const source = new MigrationSource({
      region, dirtyBitmap: bitmap, host: '127.0.0.1', port: target.address.port, maxDowntimeMs: 0, maxRounds: 2,
      hooks: { pause: () => {}, resume: () => {}, deviceState: () => Buffer.from('cpu registers') },
    });
    source.on('round', write);
    const summary = await source.run();
    const targetSummary = await target.result;
    const atPause = Buffer.from(raw);
    expect(order).toEqual(['prepare', 'onDeviceState', 'resume']);
    expect(seen!.path).toMatch(/\.prepared\.img\.pagewire-[0-9a-f]{32}\.tmp$/);
    expect(seen!.outBefore).toBe('previous state');
    expect(seen!.deviceState).toBe('cpu registers');
    expect(existsSync(seen!.path!)).toBe(false);
    expect(readFileSync(out).equals(atPause)).toBe(true);
    // The mapping taken before GO reads the committed file's bytes.
    expect(Buffer.from(mapped!.view(0, atPause.length)).equals(atPause)).toBe(true);
    expect(targetSummary.prepareMs).toBeGreaterThan(0);
    expect(summary.downtime.prepareMs).toBeGreaterThan(0);
  });

  it('deviceStateReceived loads a state that was ready early beside the last pages; READY waits for it, and its failure fails the migration', async () => {
    for (const fails of [false, true]) {
      const { raw, region, write } = writtenRegion(2 * 2 ** 20);
      const targetBytes = Buffer.alloc(raw.length);
      const events: string[] = [];
      let finalRound = 0;
      const target = await MigrationTarget.listen({
        image: new MemoryTargetImage(MemoryRegion.fromMemory(targetBytes), { zeroed: true }), host: '127.0.0.1', port: 0,
        hooks: {
          deviceStateReceived: (state) => {
            events.push(`received ${state.toString()}`);
            if (fails) throw new Error('the device model refused it');
          },
          prepare: () => { events.push('prepare'); },
          discard: () => { events.push('discard'); },
        },
      });
      target.on('round', (e) => events.push(`target round ${e.round}`));
      const targetResult = target.result.catch((e: unknown) => e);
      // Ready at once, while the final scan hashes the region on the pool threads: the source sends it
      // ahead of the last pages.
      const source = new MigrationSource({
        region, host: '127.0.0.1', port: target.address.port, maxDowntimeMs: 0, maxRounds: 2,
        hooks: { pause: () => {}, resume: () => { events.push('source resume'); }, deviceState: () => Buffer.from('registers') },
      });
      source.on('round', (r) => { finalRound = r.round + 1; write(); });
      const outcome = await source.run().catch((e: unknown) => e);
      await targetResult;
      const received = events.indexOf('received registers');
      expect(received).toBeGreaterThanOrEqual(0);
      expect(received).toBeLessThan(events.indexOf(`target round ${finalRound}`));
      if (fails) {
        expect(outcome).toMatchObject({ code: 'PW_ERR_PEER', remoteCode: 'PW_ERR_HOOK' });
        expect(events).toContain('source resume');
        expect(events).toContain('discard');
        expect(events).not.toContain('prepare');
      } else {
        expect(outcome).toMatchObject({ status: 'completed' });
        expect(events.indexOf('prepare')).toBeGreaterThan(events.indexOf(`target round ${finalRound}`));
        expect(targetBytes.equals(raw)).toBe(true);
      }
    }
  });

  it('a prepare hook that throws fails the migration before READY: the source resumes, --out is untouched, discard is called', async () => {
    const { region, bitmap } = writtenRegion(2 ** 20);
    const out = join(tmp.dir, 'prepare-fails.img');
    writeFileSync(out, 'previous state');
    const targetCalls: string[] = [];
    const target = await MigrationTarget.listen({
      image: new FileTargetImage(out), host: '127.0.0.1', port: 0,
      hooks: {
        prepare: () => { targetCalls.push('prepare'); throw new Error('cannot load the devices'); },
        discard: () => { targetCalls.push('discard'); },
        resume: () => { targetCalls.push('resume'); },
      },
    });
    const targetError = target.result.catch((e: unknown) => e);
    const calls: string[] = [];
    const source = new MigrationSource({
      region, dirtyBitmap: bitmap, host: '127.0.0.1', port: target.address.port,
      hooks: { pause: () => { calls.push('pause'); }, resume: () => { calls.push('resume'); } },
    });
    const error = await source.run().catch((e: unknown) => e);
    expect(error).toMatchObject({ code: 'PW_ERR_PEER', remoteCode: 'PW_ERR_HOOK' });
    expect(calls).toEqual(['pause', 'resume']);
    expect(await targetError).toMatchObject({ code: 'PW_ERR_HOOK', hook: 'prepare' });
    expect(targetCalls).toEqual(['prepare', 'discard']);
    expect(readFileSync(out, 'utf8')).toBe('previous state');
    expect(readdirSync(tmp.dir).filter((f) => f.includes('prepare-fails.img.pagewire'))).toEqual([]);
  });
});

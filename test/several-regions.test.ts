// Several regions in one migration (docs/PROTOCOL.md, "Several regions"): a VM's RAM under a writer
// thread, its 64 GiB sparse disk and a device's memory, each with its own page size and tracking, all
// switched over with one pause; every target image equals its source at the pause point.
import { randomFillSync } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import {
  CapacityError, DirtyBitmap, FileTargetImage, HandshakeError, MemoryRegion, MemoryTargetImage, MigrationSource, MigrationTarget,
  SyntheticWorkload, type PagewireError, type RegionOffer,
} from '../dist/src/index.js';
import { formatDigest, migrationDigest } from '../dist/src/codec/page-hashes.js';
import { HELLO_BYTES, MAX_REGIONS, encodeHello, parseHello } from '../dist/src/wire/messages.js';
import { HELLO_V4, lastJson, randomShared, spawnCli, startReceiver, tempDir } from './helpers.js';
import { sameSparseFiles, sparseDisk } from './sparse-files.js';

const tmp = tempDir();
afterAll(() => tmp.cleanup());
const PAGE = 4096;
const DEVICE_PAGE = 65536;

describe('several regions in one migration', () => {
  it('moves RAM under a writer, a 64 GiB sparse disk and device memory with one pause, each byte-exact', async () => {
    const ramBytes = 16 * 2 ** 20;
    const ramMemory = randomShared(ramBytes);
    const ram = MemoryRegion.fromMemory(ramMemory);
    const ramBitmap = new DirtyBitmap(ram.pageCount);
    const workload = await SyntheticWorkload.start({ buffer: ramMemory }, ramBitmap, PAGE, { rateBytesPerSec: 50e6, hot: 0.05, seed: 11 });
    const diskPath = join(tmp.dir, 'disk.img');
    sparseDisk(diskPath);
    const disk = MemoryRegion.mapFile(diskPath);
    const diskBitmap = new DirtyBitmap(disk.pageCount);
    const deviceMemory = randomFillSync(Buffer.alloc(2 * 2 ** 20));
    const device = MemoryRegion.fromMemory(deviceMemory, { pageSize: DEVICE_PAGE });

    const ramOut = Buffer.alloc(ramBytes);
    const deviceOut = Buffer.alloc(deviceMemory.length);
    const diskOut = join(tmp.dir, 'disk-out.img');
    const offers: RegionOffer[] = [];
    const target = await MigrationTarget.listen({
      host: '127.0.0.1', port: 0,
      image: (offer) => {
        offers.push(offer);
        if (offer.region === 1) return new FileTargetImage(diskOut, { checkFreeSpace: false });
        const memory = offer.region === 0 ? ramOut : deviceOut;
        return new MemoryTargetImage(MemoryRegion.fromMemory(memory, { pageSize: offer.pageSize }), { zeroed: true });
      },
    });
    let pauses = 0;
    let paused = false;
    let diskWrites = 0;
    const source = new MigrationSource({
      region: ram, dirtyBitmap: ramBitmap, extraRegions: [{ region: disk, dirtyBitmap: diskBitmap }, { region: device }],
      host: '127.0.0.1', port: target.address.port, maxDowntimeMs: 0, maxRounds: 3,
      hooks: {
        pause: async () => { pauses += 1; paused = true; await workload.pause(); },
        resume: () => { paused = false; workload.resume(); },
      },
    });
    // Between rounds the guest writes its disk (data and holes alike) and its device memory, which is
    // tracked by hashing alone.
    source.on('round', () => {
      if (paused) return;
      for (let k = 0; k < 16; k++) {
        const page = (diskWrites * 104_729 * 613 + k * 7919) % disk.pageCount;
        randomFillSync(disk.view(page * PAGE, PAGE).subarray(0, 256));
        diskBitmap.mark(page);
        diskWrites += 1;
      }
      randomFillSync(deviceMemory, (diskWrites % 32) * DEVICE_PAGE, 512);
    });
    const summary = await source.run();
    await workload.stop();
    const received = await target.result;

    expect(offers.map(({ region, regions, pageSize, regionSize }) => ({ region, regions, pageSize, regionSize }))).toEqual([
      { region: 0, regions: 3, pageSize: PAGE, regionSize: ramBytes },
      { region: 1, regions: 3, pageSize: PAGE, regionSize: disk.byteLength },
      { region: 2, regions: 3, pageSize: DEVICE_PAGE, regionSize: deviceMemory.length },
    ]);
    expect(pauses).toBe(1);
    expect(summary.status).toBe('completed');
    expect(summary.regions).toBe(3);
    expect(summary.rounds).toBeGreaterThanOrEqual(2);
    expect(diskWrites).toBeGreaterThan(0);
    expect(received.regionDigest).toBe(summary.regionDigest);
    // The workload stopped at the pause: the source as it is now is the source at the pause point.
    expect(ramOut.equals(Buffer.from(ramMemory))).toBe(true);
    expect(deviceOut.equals(deviceMemory)).toBe(true);
    expect(sameSparseFiles(diskPath, diskOut)).toBe(true);
    disk.close();
  });

  it('CLI: send --disk moves a 64 GiB sparse disk beside a written image into receive --disk-out, committed together', async () => {
    const image = join(tmp.dir, 'cli-ram.img');
    writeFileSync(image, randomFillSync(Buffer.alloc(8 * 2 ** 20)));
    const diskPath = join(tmp.dir, 'cli-disk.img');
    sparseDisk(diskPath);
    const out = join(tmp.dir, 'cli-ram-out.img');
    const diskOut = join(tmp.dir, 'cli-disk-out.img');
    const receiver = await startReceiver(out, ['--disk-out', diskOut, '--sparse']);
    const sender = spawnCli(['send', '--connect', `127.0.0.1:${receiver.port}`, '--image', image, '--disk', diskPath,
      '--workload', 'rate=20MB/s,hot=0.1,seed=5', '--json']);
    expect(await sender.exit, sender.stderr()).toBe(0);
    expect(await receiver.exit, receiver.stderr()).toBe(0);
    const sent = lastJson(sender.stdout());
    const received = lastJson(receiver.stdout());
    expect(sent).toMatchObject({ status: 'completed', regions: 2 });
    expect(received).toMatchObject({ status: 'completed', regions: 2, digest: sent.digest });
    // send leaves its workload paused at the pause point: the files hold what the target must have.
    expect(readFileSync(out).equals(readFileSync(image))).toBe(true);
    expect(sameSparseFiles(diskPath, diskOut)).toBe(true);
  });

  it('CLI: digest of several files is the one digest a migration of them reports', async () => {
    const files = [join(tmp.dir, 'digest-a.img'), join(tmp.dir, 'digest-b.img')];
    writeFileSync(files[0]!, randomFillSync(Buffer.alloc(64 * PAGE)));
    writeFileSync(files[1]!, Buffer.alloc(16 * PAGE));
    const one = await Promise.all(files.map(async (file) => {
      const run = spawnCli(['digest', file, '--json']);
      expect(await run.exit).toBe(0);
      return BigInt(`0x${lastJson(run.stdout()).digest as string}`);
    }));
    const both = spawnCli(['digest', ...files, '--json']);
    expect(await both.exit, both.stderr()).toBe(0);
    expect(lastJson(both.stdout())).toMatchObject({ digest: formatDigest(migrationDigest(one)), regions: 2, pagesTotal: 80 });
  });

  it('refuses several regions into one fixed image, and the source keeps running', async () => {
    const image = new MemoryTargetImage(MemoryRegion.fromMemory(Buffer.alloc(1 << 20)), { zeroed: true });
    const target = await MigrationTarget.listen({ host: '127.0.0.1', port: 0, image, serve: 'many' });
    const refused = new Promise<PagewireError>((resolve) => target.once('refused', (error) => resolve(error)));
    const calls: string[] = [];
    const source = new MigrationSource({
      region: MemoryRegion.fromMemory(Buffer.alloc(1 << 20)), extraRegions: [{ region: MemoryRegion.fromMemory(Buffer.alloc(1 << 16)) }],
      host: '127.0.0.1', port: target.address.port,
      hooks: { pause: () => { calls.push('pause'); }, resume: () => { calls.push('resume'); } },
    });
    await expect(source.run()).rejects.toMatchObject({ code: 'PW_ERR_PEER', remoteCode: 'PW_ERR_CAPACITY' });
    expect(await refused).toBeInstanceOf(CapacityError);
    expect(calls).toEqual([]);
    await target.stop();
  });

  it('describes each extra region in HELLO, and refuses more than the protocol carries', () => {
    const base = { ...HELLO_V4, features: 0, pageSize: PAGE, regionSize: 1 << 20, migrationId: Buffer.alloc(16, 7), extraStreams: 0 };
    const extraRegions = [{ pageSize: PAGE, regionSize: 2 ** 36 }, { pageSize: DEVICE_PAGE, regionSize: 1 << 21 }];
    const hello = encodeHello({ ...base, extraRegions });
    expect(hello.length).toBe(HELLO_BYTES + 32);
    expect(parseHello(hello).extraRegions).toEqual(extraRegions);
    const tooMany = encodeHello({ ...base, extraRegions: Array.from({ length: MAX_REGIONS }, () => extraRegions[0]!) });
    expect(() => parseHello(tooMany)).toThrow(HandshakeError);
    const reserved = Buffer.from(hello);
    reserved[HELLO_BYTES + 12] = 1;
    expect(() => parseHello(reserved)).toThrow(/non-zero reserved/);
    expect(() => parseHello(hello.subarray(0, HELLO_BYTES + 16))).toThrow(/expected 112/);
  });
});

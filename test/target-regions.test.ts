// Several regions in one migration, as the target takes them: one image per region, made by the image
// function in region order; a fixed image refuses; a resume covers every region.
import { randomFillSync } from 'node:crypto';
import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { connect, type Socket } from 'node:net';
import { describe, expect, it } from 'vitest';
import {
  CapacityError, FileTargetImage, MemoryRegion, MemoryTargetImage, MigrationSource, MigrationTarget, type PagewireError, type RegionOffer,
} from '../dist/src/index.js';
import { tempDir } from './helpers.js';

const SHAPES = [{ pageSize: 4096, pages: 300 }, { pageSize: 512, pages: 1000 }, { pageSize: 65536, pages: 5 }];

function sourceRegions() {
  return SHAPES.map(({ pageSize, pages }) => {
    const raw = Buffer.alloc(pageSize * pages);
    randomFillSync(raw);
    return { raw, region: MemoryRegion.fromMemory(raw, { pageSize }) };
  });
}

async function migrate(options: { breakOnce?: boolean } = {}) {
  const from = sourceRegions();
  const into = SHAPES.map(({ pageSize, pages }) => Buffer.alloc(pageSize * pages));
  const offers: RegionOffer[] = [];
  const target = await MigrationTarget.listen({
    image: (offer) => {
      offers.push(offer);
      return new MemoryTargetImage(MemoryRegion.fromMemory(into[offer.region]!, { pageSize: offer.pageSize }), { zeroed: true });
    },
    host: '127.0.0.1', port: 0, resumeWindowMs: 5000,
  });
  const received = target.result.then((summary) => summary, (e: PagewireError) => e);
  const sockets: Socket[] = [];
  const port = target.address.port;
  const source = new MigrationSource({
    region: from[0]!.region, extraRegions: from.slice(1).map(({ region }) => ({ region })), streams: 3, maxDowntimeMs: 0, maxRounds: 3,
    resumeBackoffMs: 50, hooks: { pause: () => {}, resume: () => {} },
    connect: () => {
      const socket = connect(port, '127.0.0.1');
      sockets.push(socket);
      return new Promise<Socket>((resolve) => socket.once('connect', () => resolve(socket)));
    },
  });
  let broke = !options.breakOnce;
  source.on('progress', () => {
    if (broke) return;
    broke = true;
    for (const socket of sockets) socket.resetAndDestroy();
  });
  const sent = await source.run().then((summary) => summary, (e: PagewireError) => e);
  return { sent, received: await received, offers, from, into };
}

describe('a target taking several regions', () => {
  for (const breakOnce of [false, true]) {
    it(`opens one image per region and receives each${breakOnce ? ', across a resume' : ''}`, async () => {
      const { sent, received, offers, from, into } = await migrate({ breakOnce });
      if (sent instanceof Error) throw sent;
      if (received instanceof Error) throw received;
      expect(offers.map(({ region, regions, pageSize }) => ({ region, regions, pageSize })))
        .toEqual(SHAPES.map(({ pageSize }, region) => ({ region, regions: 3, pageSize })));
      expect(received).toMatchObject({ regions: 3, pageSize: 4096, pagesTotal: 1305, resumes: breakOnce ? 1 : 0 });
      expect(received.regionDigest).toBe(sent.regionDigest);
      for (const [i, { raw }] of from.entries()) expect(into[i]!.equals(raw)).toBe(true);
    });
  }

  it('refuses several regions with a fixed image', async () => {
    const from = sourceRegions();
    const target = await MigrationTarget.listen({
      image: new MemoryTargetImage(MemoryRegion.fromMemory(Buffer.alloc(from[0]!.raw.length))), host: '127.0.0.1', port: 0,
    });
    const refused = new Promise<PagewireError>((resolve) => target.once('refused', resolve));
    const source = new MigrationSource({
      region: from[0]!.region, extraRegions: from.slice(1).map(({ region }) => ({ region })), host: '127.0.0.1',
      port: target.address.port, hooks: { pause: () => {}, resume: () => {} },
    });
    await expect(source.run()).rejects.toThrow(/takes one region/);
    expect(await refused).toBeInstanceOf(CapacityError);
    target.stop();
  });

  it('commits one file per region', async () => {
    const { dir, cleanup } = tempDir();
    try {
      const from = sourceRegions();
      const outs = from.map((_, i) => join(dir, `region-${i}.img`));
      const target = await MigrationTarget.listen({ image: (offer) => new FileTargetImage(outs[offer.region]!), host: '127.0.0.1', port: 0 });
      const source = new MigrationSource({
        region: from[0]!.region, extraRegions: from.slice(1).map(({ region }) => ({ region })), host: '127.0.0.1',
        port: target.address.port, streams: 2, hooks: { pause: () => {}, resume: () => {} },
      });
      const sent = await source.run();
      const received = await target.result;
      expect(received.regionDigest).toBe(sent.regionDigest);
      for (const [i, { raw }] of from.entries()) expect(readFileSync(outs[i]!).equals(raw)).toBe(true);
      expect(readdirSync(dir).sort()).toEqual(outs.map((out) => out.slice(dir.length + 1)).sort());
    } finally {
      cleanup();
    }
  });

  it('discards the images already opened when a later region is refused, keeping the previous files', async () => {
    const { dir, cleanup } = tempDir();
    try {
      const from = sourceRegions();
      const first = join(dir, 'region-0.img');
      writeFileSync(first, 'previous');
      const target = await MigrationTarget.listen({
        image: (offer) => {
          if (offer.region === 2) throw new CapacityError('no room for region 2');
          return new FileTargetImage(offer.region === 0 ? first : join(dir, `region-${offer.region}.img`));
        },
        host: '127.0.0.1', port: 0,
      });
      const source = new MigrationSource({
        region: from[0]!.region, extraRegions: from.slice(1).map(({ region }) => ({ region })), host: '127.0.0.1',
        port: target.address.port, hooks: { pause: () => {}, resume: () => {} },
      });
      await expect(source.run()).rejects.toThrow(/no room for region 2/);
      target.stop();
      expect(readFileSync(first, 'latin1')).toBe('previous');
      expect(readdirSync(dir)).toEqual(['region-0.img']);
      expect(existsSync(join(dir, 'region-1.img'))).toBe(false);
    } finally {
      cleanup();
    }
  });
});

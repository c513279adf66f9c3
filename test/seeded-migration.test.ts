// A migration target started from a snapshot (receive --seed): the source sends only the pages whose
// contents differ from the seed, and the committed image is the source's at the pause point.
import { randomFillSync } from 'node:crypto';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import {
  DirtyBitmap, FileTargetImage, MemoryRegion, MigrationSource, MigrationTarget, Snapshotter,
} from '../dist/src/index.js';
import { lastJson, spawnCli, startReceiver, tempDir } from './helpers.js';

const tmp = tempDir();
afterAll(() => tmp.cleanup());
const PAGE = 4096;

/** A region of random pages (every fourth one zero), and a full snapshot of it at `path`. */
async function seededRegion(pages: number, path: string) {
  const bytes = Buffer.alloc(pages * PAGE);
  randomFillSync(bytes);
  for (let page = 0; page < pages; page += 4) bytes.fill(0, page * PAGE, (page + 1) * PAGE);
  const region = MemoryRegion.fromMemory(bytes);
  await new Snapshotter({ region, hooks: { pause: () => {}, resume: () => {} } }).take(path);
  return { bytes, region };
}

/** Changes `count` distinct pages (a non-zero one now and then to zero), returns them ascending. */
function changePages(bytes: Buffer, count: number): number[] {
  const pages = bytes.length / PAGE;
  const changed = new Set<number>();
  for (let i = 0; changed.size < count; i++) changed.add((i * 7919 + 13) % pages);
  for (const page of changed) {
    const wasZero = bytes.subarray(page * PAGE, (page + 1) * PAGE).every((b) => b === 0);
    if (page % 3 === 0 && !wasZero) bytes.fill(0, page * PAGE, (page + 1) * PAGE);
    else randomFillSync(bytes, page * PAGE, PAGE);
  }
  return [...changed].sort((a, b) => a - b);
}

async function migrate(region: MemoryRegion, out: string, seed: string) {
  const target = await MigrationTarget.listen({ image: new FileTargetImage(out, { seed }), host: '127.0.0.1', port: 0 });
  const source = new MigrationSource({
    region, dirtyBitmap: new DirtyBitmap(region.pageCount), host: '127.0.0.1', port: target.address.port, streams: 1,
    hooks: { pause: () => {}, resume: () => {} },
  });
  const [summary, received] = await Promise.all([source.run(), target.result]);
  return { summary, received };
}

describe('a migration to a target seeded from a snapshot', () => {
  it('sends only the pages that changed since the snapshot, and commits the source\'s bytes', async () => {
    const seed = join(tmp.dir, 'seed.snap');
    const { bytes, region } = await seededRegion(1024, seed);
    const changed = changePages(bytes, 37);
    const out = join(tmp.dir, 'seeded.img');
    const { summary } = await migrate(region, out, seed);
    // No write happened during the migration: round 1 is the changed pages, and nothing else is sent.
    expect(summary.pagesTransferred).toBe(changed.length);
    expect(summary.seedSavedBytes).toBe((1024 - changed.length) * PAGE);
    expect(readFileSync(out).equals(bytes)).toBe(true);
  });

  it('works from an incremental snapshot\'s chain as from a full one', async () => {
    const full = join(tmp.dir, 'chain-full.snap');
    const { bytes, region } = await seededRegion(512, full);
    const bitmap = new DirtyBitmap(region.pageCount);
    const snapshotter = new Snapshotter({ region, dirtyBitmap: bitmap, hooks: { pause: () => {}, resume: () => {} } });
    const incremental = join(tmp.dir, 'chain-1.snap');
    for (const page of changePages(bytes, 20)) bitmap.mark(page);
    await snapshotter.take(incremental, { base: full });
    const changed = changePages(bytes, 5);
    const out = join(tmp.dir, 'chain-seeded.img');
    const { summary } = await migrate(region, out, incremental);
    expect(summary.pagesTransferred).toBe(changed.length);
    expect(readFileSync(out).equals(bytes)).toBe(true);
  });

  it('refuses a seed of another shape, and leaves --out as it was', async () => {
    const seed = join(tmp.dir, 'small.snap');
    await seededRegion(16, seed);
    const out = join(tmp.dir, 'kept.img');
    writeFileSync(out, 'previous image');
    const bytes = Buffer.alloc(32 * PAGE, 1);
    const stop = new AbortController();
    const target = await MigrationTarget.listen({ image: new FileTargetImage(out, { seed }), host: '127.0.0.1', port: 0, signal: stop.signal });
    // A refused offer is a refused connection: the target goes on listening for another.
    const refused = new Promise<Error & { code: string }>((resolve) => target.once('refused', (error) => resolve(error as Error & { code: string })));
    const source = new MigrationSource({
      region: MemoryRegion.fromMemory(bytes), host: '127.0.0.1', port: target.address.port, hooks: { pause: () => {}, resume: () => {} },
    });
    await expect(source.run()).rejects.toMatchObject({ code: 'PW_ERR_PEER', remoteCode: 'PW_ERR_CAPACITY' });
    expect(await refused).toMatchObject({ code: 'PW_ERR_CAPACITY', message: expect.stringMatching(/the seed .* holds 65536 bytes/) });
    stop.abort();
    await expect(target.result).rejects.toMatchObject({ code: 'PW_ERR_ABORTED' });
    expect(readFileSync(out, 'utf8')).toBe('previous image');
  });

  it('through the CLI: receive --seed takes only the changed pages of a send', async () => {
    const seed = join(tmp.dir, 'cli-seed.snap');
    const { bytes } = await seededRegion(256, seed);
    const changed = changePages(bytes, 9);
    const image = join(tmp.dir, 'cli-source.img');
    writeFileSync(image, bytes);
    const out = join(tmp.dir, 'cli-out.img');
    const receiver = await startReceiver(out, ['--seed', seed]);
    const sender = spawnCli(['send', '--connect', `127.0.0.1:${receiver.port}`, '--image', image, '--json']);
    expect(await sender.exit).toBe(0);
    expect(await receiver.exit).toBe(0);
    const json = lastJson(sender.stdout());
    expect(json).toMatchObject({ status: 'completed', pagesTransferred: changed.length, seedSavedBytes: (256 - changed.length) * PAGE });
    expect(readFileSync(out).equals(bytes)).toBe(true);
  });

  it('through the CLI: receive --seed refuses a damaged snapshot before it listens', async () => {
    const seed = join(tmp.dir, 'damaged.snap');
    await seededRegion(16, seed);
    const damaged = readFileSync(seed);
    damaged[5000] ^= 1; // in the header block's zero padding
    writeFileSync(seed, damaged);
    const out = join(tmp.dir, 'never.img');
    const run = spawnCli(['receive', '--listen', '127.0.0.1:0', '--out', out, '--seed', seed]);
    expect(await run.exit).not.toBe(0);
    expect(run.stderr()).toMatch(/^pagewire: .*damaged\.snap.*\(PW_ERR_SNAPSHOT_CORRUPT\)$/m);
    expect(run.stderr().trim().split('\n')).toHaveLength(1);
    expect(existsSync(out)).toBe(false);
  });
});

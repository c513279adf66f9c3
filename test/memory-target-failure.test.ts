// What a failed migration leaves in a MemoryTargetImage, as the README narrows the promise: the memory
// is written in place, so it holds a mix of old and received pages; every page is one or the other,
// pages never sent keep their old bytes, and the target reports the failure (nothing claims a commit).
import { randomFillSync } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { MemoryRegion, MemoryTargetImage, MigrationSource, MigrationTarget, type PagewireError } from '../dist/src/index.js';
import { MessageType } from '../dist/src/wire/messages.js';
import { FaultProxy } from './fault-proxy.js';

const PAGE = 4096;
const PAGES = 256;
/** Pages per PAGES frame: round 1 sends pages in ascending order, 16 a frame. */
const BATCH = 16;
/** The connection is cut when this PAGES frame reaches the proxy: the frames before it may arrive. */
const CUT_AT_FRAME = 4;

describe('a failed migration into a MemoryTargetImage', () => {
  it('leaves the pages it applied and the old bytes of every other page, and reports failure', async () => {
    const sourceBytes = randomFillSync(Buffer.alloc(PAGES * PAGE));
    const oldBytes = randomFillSync(Buffer.alloc(PAGES * PAGE));
    const targetBytes = Buffer.from(oldBytes);
    const targetCalls: string[] = [];
    const target = await MigrationTarget.listen({
      image: new MemoryTargetImage(MemoryRegion.fromMemory(targetBytes)), host: '127.0.0.1', port: 0, resumeWindowMs: 0,
      hooks: { resume: () => { targetCalls.push('resume'); } },
    });
    let frames = 0;
    const proxy = await FaultProxy.start(target.address.port, {
      fault: (frame) => (frame.direction === 'to-target' && frame.type === MessageType.Pages && ++frames === CUT_AT_FRAME
        ? 'cut' : undefined),
    });
    const source = new MigrationSource({
      region: MemoryRegion.fromMemory(sourceBytes), host: '127.0.0.1', port: proxy.port, streams: 1, batchPages: BATCH,
      maxResumeAttempts: 0, hooks: { pause: () => {}, resume: () => {} },
    });
    const sourceError = await source.run().then(() => undefined, (e: PagewireError) => e);
    const targetError = await target.result.then(() => undefined, (e: PagewireError) => e);
    proxy.close();

    expect(sourceError?.code).toBe('PW_ERR_CONNECTION');
    expect(source.metrics.status).toBe('failed');
    expect(targetError?.code).toBe('PW_ERR_CONNECTION');
    expect(target.phase).toBe('failed');
    expect(target.metrics).toMatchObject({ status: 'failed', errorCode: 'PW_ERR_CONNECTION' });
    expect(targetCalls).toEqual([]);

    // One stream, ascending batches: what was applied is a prefix of the region, at most the frames
    // before the cut; every page after it still holds the target's old bytes.
    const applied = target.metrics!.pagesApplied;
    expect(applied).toBeLessThanOrEqual((CUT_AT_FRAME - 1) * BATCH);
    const page = (bytes: Buffer, p: number) => bytes.subarray(p * PAGE, (p + 1) * PAGE);
    for (let p = 0; p < PAGES; p++) {
      expect(page(targetBytes, p).equals(page(p < applied ? sourceBytes : oldBytes, p)), `page ${p} of ${applied} applied`).toBe(true);
    }
  });
});

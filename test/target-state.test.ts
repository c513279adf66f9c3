// The target's one state decides what stop() interrupts at each step of a migration: these pin the steps
// where the state changes hands between the orchestrator and the session.
import { randomFillSync } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { DirtyBitmap, MemoryRegion, MemoryTargetImage, MigrationSource, MigrationTarget } from '../dist/src/index.js';

const PAGE = 4096;
const BYTES = 2 * 2 ** 20;

describe('target state', () => {
  it('stop() from the accepted event fails the migration before any page: the source hears why and keeps running', async () => {
    const sourceBytes = Buffer.alloc(BYTES);
    randomFillSync(sourceBytes);
    const targetBytes = Buffer.alloc(BYTES);
    const target = await MigrationTarget.listen({
      image: new MemoryTargetImage(MemoryRegion.fromMemory(targetBytes), { zeroed: true }), host: '127.0.0.1', port: 0,
    });
    target.once('accepted', () => target.stop());
    const calls: string[] = [];
    const source = new MigrationSource({
      region: MemoryRegion.fromMemory(sourceBytes), dirtyBitmap: new DirtyBitmap(BYTES / PAGE), host: '127.0.0.1',
      port: target.address.port, hooks: { pause: () => { calls.push('pause'); }, resume: () => { calls.push('resume'); } },
    });
    await expect(source.run()).rejects.toMatchObject({ code: 'PW_ERR_PEER', remoteCode: 'PW_ERR_ABORTED' });
    await expect(target.result).rejects.toMatchObject({ code: 'PW_ERR_ABORTED' });
    expect(target.phase).toBe('failed');
    expect(target.metrics?.pagesApplied).toBe(0);
    expect(calls).toEqual([]);
  });
});

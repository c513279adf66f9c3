// A source whose writers mark no bitmap and whose pages it should not hash: the embedder's own tracker
// (a hypervisor's dirty log, the kernel's) tells it what changed, and its lists are checked.
import { randomFillSync } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import {
  DirtyBitmap, InvalidArgumentError, MemoryRegion, MemoryTargetImage, MigrationSource, MigrationTarget, pageListOf, type DirtyTracker,
} from '../dist/src/index.js';

const PAGE = 4096;

/** A tracker fed by the test's own write log, as an embedder's would be; `list` may spoil what it lists. */
function loggedTracker(list: (pages: number[]) => number[] = (pages) => pages) {
  const written = new Set<number>();
  let starts = 0;
  const tracker: DirtyTracker = {
    start: () => { starts += 1; written.clear(); },
    scan: async () => {
      const pages = list([...written].sort((a, b) => a - b));
      return { count: pages.length, durationMs: 0, take: () => { written.clear(); return pageListOf(Uint32Array.from(pages)); } };
    },
  };
  return { tracker, written, starts: () => starts };
}

async function memoryTarget(bytes: number) {
  const targetBytes = Buffer.alloc(bytes);
  const target = await MigrationTarget.listen({
    image: new MemoryTargetImage(MemoryRegion.fromMemory(targetBytes), { zeroed: true }), host: '127.0.0.1', port: 0,
  });
  return { target, targetBytes };
}

describe('the embedder\'s own dirty tracker', () => {
  it('sends what it lists each round, and the target equals the source at the pause point', async () => {
    const memory = randomFillSync(Buffer.alloc(4 * 2 ** 20));
    const region = MemoryRegion.fromMemory(memory);
    const { tracker, written, starts } = loggedTracker();
    const { target, targetBytes } = await memoryTarget(memory.length);
    const source = new MigrationSource({
      region, dirtyTracker: tracker, host: '127.0.0.1', port: target.address.port, maxDowntimeMs: 0, maxRounds: 3,
      hooks: { pause: () => { paused = true; }, resume: () => { paused = false; } },
    });
    let paused = false;
    const sent: number[] = [];
    source.on('round', (report) => sent.push(report.pagesSent));
    // During each pre-copy round the workload writes three pages and logs them, as a hypervisor's dirty
    // log would; paused, it writes nothing.
    let writtenIn = 0;
    source.on('progress', ({ round }) => {
      if (paused || round === writtenIn) return;
      writtenIn = round;
      for (const page of [3, 77, 500 + round]) {
        memory[page * PAGE + round] ^= 0xff;
        written.add(page);
      }
    });
    const summary = await source.run();
    await target.result;
    expect(starts()).toBe(1);
    expect(summary.rounds).toBe(4);
    // Rounds 2 and 3 sent exactly the three pages written before each.
    expect(sent.slice(1)).toEqual([3, 3]);
    expect(targetBytes.equals(memory)).toBe(true);
  });

  it('fails before the switch-over when a scan lists pages out of order, and the workload runs on', async () => {
    const memory = randomFillSync(Buffer.alloc(1 << 20));
    const { tracker, written } = loggedTracker((pages) => pages.reverse());
    const { target } = await memoryTarget(memory.length);
    const targetFailed = target.result.catch((error: unknown) => error);
    const calls: string[] = [];
    const source = new MigrationSource({
      region: MemoryRegion.fromMemory(memory), dirtyTracker: tracker, host: '127.0.0.1', port: target.address.port, maxDowntimeMs: 0,
      hooks: { pause: () => { calls.push('pause'); }, resume: () => { calls.push('resume'); } },
    });
    source.once('round', () => { written.add(9); written.add(2); });
    await expect(source.run()).rejects.toMatchObject({ code: 'PW_ERR_INVALID_ARGUMENT', message: expect.stringMatching(/listed page 2 \(after 9/) });
    expect(calls.filter((call) => call === 'pause').length).toBe(calls.filter((call) => call === 'resume').length);
    expect(await targetFailed).toBeInstanceOf(Error);
  });

  it('is refused beside a dirty bitmap, for two regions, or without its methods', () => {
    const region = MemoryRegion.fromMemory(Buffer.alloc(1 << 20));
    const hooks = { pause: () => {}, resume: () => {} };
    const endpoint = { host: '127.0.0.1', port: 1, hooks };
    const { tracker } = loggedTracker();
    expect(() => new MigrationSource({ region, dirtyTracker: tracker, dirtyBitmap: new DirtyBitmap(region.pageCount), ...endpoint }))
      .toThrow(/options.dirtyBitmap and options.dirtyTracker exclude each other/);
    expect(() => new MigrationSource({
      region, dirtyTracker: tracker, extraRegions: [{ region: MemoryRegion.fromMemory(Buffer.alloc(PAGE)), dirtyTracker: tracker }], ...endpoint,
    })).toThrow(/extraRegions\[0\].dirtyTracker is given for another region too/);
    expect(() => new MigrationSource({ region, dirtyTracker: { start: () => {} } as unknown as DirtyTracker, ...endpoint }))
      .toThrow(InvalidArgumentError);
  });
});

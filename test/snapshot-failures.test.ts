// A snapshot that fails leaves the workload running as it was and nothing under the snapshot's name:
// a hook that throws in the pause, an abort, rounds that stop converging, a file that cannot be made.
import { randomFillSync } from 'node:crypto';
import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { MemoryRegion, Snapshotter, pageListOf, type DirtyTracker } from '../dist/src/index.js';
import { tempDir } from './helpers.js';

const tmp = tempDir();
afterAll(() => tmp.cleanup());
const PAGE = 4096;

function region(pages = 256): MemoryRegion {
  const bytes = Buffer.alloc(pages * PAGE);
  randomFillSync(bytes);
  return MemoryRegion.fromMemory(bytes);
}

/** Files in the directory other than those named: a temp left behind would show here. */
function others(dir: string, ...names: string[]): string[] {
  return readdirSync(dir).filter((name) => !names.includes(name));
}

describe('a snapshot that fails', () => {
  it('resumes the workload when the device state hook throws in the pause, and leaves the old snapshot in place', async () => {
    const dir = join(tmp.dir, 'hook');
    const out = join(dir, 'snap');
    mkdirSync(dir);
    writeFileSync(out, 'the previous snapshot');
    const calls: string[] = [];
    const snapshotter = new Snapshotter({
      region: region(),
      hooks: {
        pause: () => { calls.push('pause'); },
        resume: () => { calls.push('resume'); },
        deviceState: () => { throw new Error('the device would not say'); },
      },
    });
    await expect(snapshotter.take(out)).rejects.toMatchObject({ code: 'PW_ERR_HOOK', message: expect.stringMatching(/the device would not say/) });
    expect(calls).toEqual(['pause', 'resume']);
    expect(readFileSync(out, 'utf8')).toBe('the previous snapshot');
    expect(others(dir, 'snap')).toEqual([]);
  });

  it('gives up cleanly when the rounds stop converging and onStall is fail, never pausing the workload', async () => {
    const dir = join(tmp.dir, 'stall');
    mkdirSync(dir);
    const target = region();
    // A workload that dirties every page between any two scans.
    const everything = pageListOf(Uint32Array.from({ length: target.pageCount }, (_, i) => i));
    const tracker: DirtyTracker = {
      start: () => {},
      scan: async () => ({ count: everything.count, durationMs: 0, take: () => everything }),
    };
    const calls: string[] = [];
    const snapshotter = new Snapshotter({
      region: target, dirtyTracker: tracker, maxDowntimeMs: 0, onStall: 'fail',
      hooks: { pause: () => { calls.push('pause'); }, resume: () => { calls.push('resume'); } },
    });
    await expect(snapshotter.take(join(dir, 'snap'))).rejects.toMatchObject({ code: 'PW_ERR_NOT_CONVERGING' });
    expect(calls).toEqual([]);
    expect(readdirSync(dir)).toEqual([]);
  });

  it('stops when aborted in the pause, resumes the workload, and leaves no file', async () => {
    const dir = join(tmp.dir, 'abort');
    mkdirSync(dir);
    const abort = new AbortController();
    const calls: string[] = [];
    const snapshotter = new Snapshotter({
      region: region(), signal: abort.signal,
      hooks: {
        // The abort comes while the workload is paused: the hook returns only once it has.
        pause: () => { calls.push('pause'); abort.abort(); },
        resume: () => { calls.push('resume'); },
        deviceState: (signal) => new Promise((_, reject) => signal.addEventListener('abort', () => reject(signal.reason), { once: true })),
      },
    });
    await expect(snapshotter.take(join(dir, 'snap'))).rejects.toMatchObject({ code: 'PW_ERR_ABORTED' });
    expect(calls).toEqual(['pause', 'resume']);
    expect(readdirSync(dir)).toEqual([]);
  });

  it('refuses a snapshot whose directory does not exist before it pauses anything', async () => {
    const calls: string[] = [];
    const snapshotter = new Snapshotter({
      region: region(16), hooks: { pause: () => { calls.push('pause'); }, resume: () => { calls.push('resume'); } },
    });
    const out = join(tmp.dir, 'no-such-dir', 'snap');
    await expect(snapshotter.take(out)).rejects.toMatchObject({ code: 'PW_ERR_STORAGE' });
    expect(calls).toEqual([]);
    expect(existsSync(out)).toBe(false);
  });
});

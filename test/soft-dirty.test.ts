// The kernel's soft-dirty log as a DirtyTracker for a process that does not cooperate: another process
// writing into a shared file both map. The detection is checked against the kernel's own answer here; the
// migration through it runs where the kernel keeps the bits (CONFIG_MEM_SOFT_DIRTY), and is skipped
// elsewhere, where the fallback (hashing, said once) is what is checked.
import { spawn, type ChildProcess } from 'node:child_process';
import { randomFillSync } from 'node:crypto';
import { closeSync, openSync, readFileSync, readSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { afterAll, describe, expect, it } from 'vitest';
import {
  MemoryRegion, MemoryTargetImage, MigrationSource, MigrationTarget, SoftDirtyTracker, mappingAddress, softDirtyAvailable,
} from '../dist/src/index.js';
import { ROOT, tempDir } from './helpers.js';

const tmp = tempDir();
afterAll(() => tmp.cleanup());
const PAGE = 4096;

/** A process that maps `path` and, on each line "write N", writes N pages of it, then answers "written". */
function writerProcess(path: string): { child: ChildProcess; write(pages: number): Promise<void>; stop(): void } {
  const code = `
    import { MemoryRegion } from ${JSON.stringify(join(ROOT, 'dist/src/index.js'))};
    import { createInterface } from 'node:readline';
    const region = MemoryRegion.mapFile(${JSON.stringify(path)});
    const view = region.view(0, region.byteLength);
    let next = 0;
    console.log('mapped');
    for await (const line of createInterface({ input: process.stdin })) {
      const pages = Number(line.split(' ')[1]);
      for (let i = 0; i < pages; i++) { view[(next % region.pageCount) * ${PAGE} + 1]++; next += 7; }
      console.log('written');
    }`;
  const child = spawn(process.execPath, ['--input-type=module', '-e', code], { stdio: ['pipe', 'pipe', 'inherit'] });
  const lines = createInterface({ input: child.stdout! })[Symbol.asyncIterator]();
  const mapped = lines.next();
  return {
    child,
    async write(pages: number) {
      await mapped;
      child.stdin!.write(`write ${pages}\n`);
      await lines.next();
    },
    stop: () => child.kill('SIGKILL'),
  };
}

/** Stops pid with SIGSTOP and resolves once it has stopped: a pause hook resolves when nothing writes any more. */
async function stopped(pid: number): Promise<void> {
  process.kill(pid, 'SIGSTOP');
  for (;;) {
    const stat = readFileSync(`/proc/${pid}/stat`, 'latin1');
    if (stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) === 'T') return;
    await new Promise((resolve) => setImmediate(resolve));
  }
}

function sharedFile(name: string, bytes: number): string {
  const path = join('/dev/shm', `pagewire-test-${process.pid}-${name}`);
  const content = Buffer.alloc(bytes);
  randomFillSync(content);
  writeFileSync(path, content);
  return path;
}

describe('soft-dirty tracking', () => {
  it('detects whether this kernel keeps soft-dirty bits, as the pagemap of a process that wrote shows', async () => {
    const path = sharedFile('probe', 16 * PAGE);
    const writer = writerProcess(path);
    try {
      await writer.write(0);
      const address = mappingAddress(writer.child.pid!, path);
      writeFileSync(`/proc/${writer.child.pid}/clear_refs`, '4');
      await writer.write(1);
      // The entry of the page written (page 0 of the mapping): bit 55 is soft-dirty.
      const fd = openSync(`/proc/${writer.child.pid}/pagemap`, 'r');
      const entry = Buffer.alloc(8);
      readSync(fd, entry, 0, 8, (address / PAGE) * 8);
      closeSync(fd);
      const bitSet = (entry.readBigUInt64LE() >> 55n & 1n) === 1n;
      expect(softDirtyAvailable()).toBe(bitSet);
    } finally {
      writer.stop();
      rmSync(path);
    }
  });

  it.skipIf(softDirtyAvailable())('falls back to hashing where the bits are missing, and says so once', () => {
    const path = sharedFile('fallback', 4 * PAGE);
    const region = MemoryRegion.mapFile(path);
    const warnings: Error[] = [];
    const onWarning = (w: Error) => warnings.push(w);
    process.on('warning', onWarning);
    try {
      expect(SoftDirtyTracker.forMapping(process.pid, path, region)).toBeUndefined();
      expect(SoftDirtyTracker.forMapping(process.pid, path, region)).toBeUndefined();
      expect(() => new SoftDirtyTracker(process.pid, 0, region)).toThrow(expect.objectContaining({ code: 'PW_ERR_INVALID_ARGUMENT' }));
    } finally {
      rmSync(path);
    }
    // Warnings are emitted on the next tick.
    return new Promise<void>((resolve) => setImmediate(() => {
      process.off('warning', onWarning);
      expect(warnings.filter((w) => (w as { code?: string }).code === 'PW_SOFT_DIRTY_MISSING')).toHaveLength(1);
      resolve();
    }));
  });

  it.runIf(softDirtyAvailable())('moves a file another process writes, tracked by its soft-dirty bits; the target equals it at the pause point', async () => {
    const bytes = 4 * 2 ** 20;
    const path = sharedFile('migrate', bytes);
    const writer = writerProcess(path);
    try {
      await writer.write(0);
      const region = MemoryRegion.mapFile(path);
      const tracker = SoftDirtyTracker.forMapping(writer.child.pid!, path, region)!;
      const targetBytes = Buffer.alloc(bytes);
      const target = await MigrationTarget.listen({ image: new MemoryTargetImage(MemoryRegion.fromMemory(targetBytes), { zeroed: true }) });
      const source = new MigrationSource({
        region, dirtyTracker: tracker, host: '127.0.0.1', port: target.address.port, maxDowntimeMs: 0, maxRounds: 3,
        // The writer is stopped by a real signal, as a pause hook of an uncooperative process would.
        hooks: { pause: () => stopped(writer.child.pid!), resume: () => { writer.child.kill('SIGCONT'); } },
      });
      // Writes after each pre-copy round, so every round and the final one have pages to find.
      source.on('round', () => { void writer.write(64); });
      await writer.write(64);
      const summary = await source.run();
      await target.result;
      expect(summary.status).toBe('completed');
      expect(summary.rounds).toBeGreaterThan(1);
      expect(targetBytes.equals(readFileSync(path))).toBe(true);
    } finally {
      writer.stop();
      rmSync(path);
    }
  });
});

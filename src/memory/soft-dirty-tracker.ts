// Dirty pages of a process that does not cooperate, from the kernel's soft-dirty log (as CRIU uses it):
// writing 4 to /proc/PID/clear_refs clears the bit of every page of PID, and a write sets it again;
// bit 55 of each 8-byte /proc/PID/pagemap entry reads it. Kernels without CONFIG_MEM_SOFT_DIRTY accept
// the clear but never set the bit, so `softDirtyAvailable()` finds out before a tracker trusts it.
//
// Reading the bits and clearing them are two steps: a write between them would be lost. So each scan of
// the pre-copy stops the process (SIGSTOP, and waits until every thread has stopped), reads, clears, and
// continues it (SIGCONT); the final scan, after the source's pause hook, sends no signal at all.
// The kernel keeps the bit in the page table entry: a page of a file it writes back and reclaims loses
// its entry, and the bit with it, so the mapping should stay in memory (tmpfs without swap, or locked:
// QEMU's -overcommit mem-lock=on).
import { closeSync, openSync, readFileSync, readSync, readdirSync, statfsSync, writeFileSync } from 'node:fs';
import { InvalidArgumentError, StorageError } from '../errors.js';
import { pageListOf, type DirtyScan, type DirtyTracker, type ScanContext } from './dirty-tracker.js';
import type { MemoryRegion } from './region.js';

/** The kernel's page: pagemap has one entry per 4 KiB page. */
const KERNEL_PAGE = 4096;
const ENTRY_BYTES = 8;
/** Entries read per pread: 512 KiB of pagemap covers 256 MiB. */
const ENTRIES_PER_READ = 65_536;
/** Bit 55 of an entry, as a bit of its high 32-bit half. */
const SOFT_DIRTY_HIGH_BIT = 1 << (55 - 32);
const HUGETLBFS_MAGIC = 0x958458f6;
/** How long a process may take to stop all its threads before a scan gives up. */
const STOP_WAIT_MS = 2000;

let probed: boolean | undefined;
let warned = false;

/**
 * Whether this kernel keeps soft-dirty bits: clears this process's own (harmless: nothing else here
 * reads them), then looks for one set again on its stack and heap, which running code always writes.
 */
export function softDirtyAvailable(): boolean {
  if (probed !== undefined) return probed;
  try {
    writeFileSync('/proc/self/clear_refs', '4');
    const ranges = readFileSync('/proc/self/maps', 'utf8').split('\n')
      .filter((line) => line.endsWith('[stack]') || line.endsWith('[heap]'))
      .map((line) => line.split(' ')[0]!.split('-').map((hex) => Number.parseInt(hex, 16)) as [number, number]);
    probed = ranges.some(([start, end]) => softDirtyPages(process.pid, start, (end - start) / KERNEL_PAGE).length > 0);
  } catch {
    probed = false;
  }
  return probed;
}

/** The 4 KiB pages of [address, address + pages × 4 KiB) in pid whose soft-dirty bit is set, ascending. */
function softDirtyPages(pid: number, address: number, pages: number): number[] {
  const fd = openSync(`/proc/${pid}/pagemap`, 'r');
  try {
    const found: number[] = [];
    const entries = new Uint32Array(ENTRIES_PER_READ * 2);
    const bytes = new Uint8Array(entries.buffer);
    for (let first = 0; first < pages; first += ENTRIES_PER_READ) {
      const count = Math.min(ENTRIES_PER_READ, pages - first);
      const read = readSync(fd, bytes, 0, count * ENTRY_BYTES, (address / KERNEL_PAGE + first) * ENTRY_BYTES);
      for (let i = 0; i < read / ENTRY_BYTES; i++) if (entries[2 * i + 1]! & SOFT_DIRTY_HIGH_BIT) found.push(first + i);
    }
    return found;
  } finally {
    closeSync(fd);
  }
}

/** Where `path` is mapped in pid: the start address of the mapping that covers it from offset 0. */
export function mappingAddress(pid: number, path: string): number {
  const line = readFileSync(`/proc/${pid}/maps`, 'utf8').split('\n')
    .find((l) => l.endsWith(` ${path}`) && l.split(/\s+/)[2] === '00000000');
  if (!line) throw new InvalidArgumentError(`${path} is not mapped (from offset 0) in process ${pid}`);
  return Number.parseInt(line.split('-')[0]!, 16);
}

export class SoftDirtyTracker implements DirtyTracker {
  /** Pages found dirty by a scan and not taken yet: a scan clears the kernel's bits, so none is forgotten. */
  private readonly pending: Uint8Array;
  private pendingCount = 0;
  private readonly pagesPerRegionPage: number;

  /**
   * Tracks `region` (the same memory as [address, address + region.byteLength) in pid, e.g. a shared file
   * both map). One tracker per process: clearing the bits clears them for every mapping of pid.
   */
  constructor(private readonly pid: number, private readonly address: number, private readonly region: MemoryRegion) {
    if (!softDirtyAvailable()) {
      throw new InvalidArgumentError('this kernel keeps no soft-dirty bits (CONFIG_MEM_SOFT_DIRTY): track the pages by hashing');
    }
    if (region.pageSize % KERNEL_PAGE !== 0 || address % KERNEL_PAGE !== 0) {
      throw new InvalidArgumentError(`soft-dirty tracking needs pages and an address aligned to ${KERNEL_PAGE} bytes`);
    }
    this.pagesPerRegionPage = region.pageSize / KERNEL_PAGE;
    this.pending = new Uint8Array(region.pageCount);
  }

  /**
   * The tracker of `path` as pid maps it, or undefined where the kernel keeps no soft-dirty bits: the
   * source then tracks the region by hashing (give it no dirtyTracker). Says so once, as a process warning.
   */
  static forMapping(pid: number, path: string, region: MemoryRegion): SoftDirtyTracker | undefined {
    if (!softDirtyAvailable()) {
      if (!warned) {
        warned = true;
        process.emitWarning('this kernel keeps no soft-dirty bits (CONFIG_MEM_SOFT_DIRTY is not set): tracking pages by hashing instead',
          { code: 'PW_SOFT_DIRTY_MISSING' });
      }
      return undefined;
    }
    // Huge pages carry no soft-dirty bit per 4 KiB page: such a tracker would find nothing.
    if (statfsSync(path).type === HUGETLBFS_MAGIC) {
      throw new InvalidArgumentError(`${path} is on hugetlbfs, whose pages keep no soft-dirty bits: track it by hashing`);
    }
    return new SoftDirtyTracker(pid, mappingAddress(pid, path), region);
  }

  start(): void {
    this.pending.fill(0);
    this.pendingCount = 0;
    writeFileSync(`/proc/${this.pid}/clear_refs`, '4');
  }

  async scan(context?: ScanContext): Promise<DirtyScan> {
    const began = performance.now();
    // Paused by the source's pause hook, the process writes nothing: no signal, so none can undo that pause.
    const freeze = context?.paused !== true;
    try {
      if (freeze) {
        process.kill(this.pid, 'SIGSTOP');
        await this.untilStopped();
      }
      for (const page of softDirtyPages(this.pid, this.address, this.region.pageCount * this.pagesPerRegionPage)) {
        const regionPage = Math.floor(page / this.pagesPerRegionPage);
        if (this.pending[regionPage] === 0) {
          this.pending[regionPage] = 1;
          this.pendingCount++;
        }
      }
      writeFileSync(`/proc/${this.pid}/clear_refs`, '4');
    } catch (cause) {
      throw new StorageError(`cannot read the soft-dirty log of process ${this.pid}: ${(cause as Error).message}`, { cause });
    } finally {
      if (freeze) process.kill(this.pid, 'SIGCONT');
    }
    return { count: this.pendingCount, durationMs: performance.now() - began, take: () => this.take() };
  }

  private take() {
    const pages = new Uint32Array(this.pendingCount);
    let n = 0;
    for (let page = 0; page < this.pending.length; page++) if (this.pending[page]) pages[n++] = page;
    this.pending.fill(0);
    this.pendingCount = 0;
    return pageListOf(pages);
  }

  /** Whether every thread of the process is stopped (state T, or t under a tracer); a thread gone meanwhile counts as stopped. */
  private stopped(): boolean {
    return readdirSync(`/proc/${this.pid}/task`).every((task) => {
      let stat: string;
      try {
        stat = readFileSync(`/proc/${this.pid}/task/${task}/stat`, 'latin1');
      } catch {
        return true;
      }
      const state = stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3);
      return state === 'T' || state === 't';
    });
  }

  private async untilStopped(): Promise<void> {
    const deadline = performance.now() + STOP_WAIT_MS;
    while (!this.stopped()) {
      if (performance.now() > deadline) throw new StorageError(`process ${this.pid} did not stop within ${STOP_WAIT_MS} ms for a soft-dirty scan`);
      await new Promise((resolve) => setImmediate(resolve));
    }
  }
}

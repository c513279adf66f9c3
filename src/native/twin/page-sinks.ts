// Where applyPages puts verified pages: a region in memory, written in place, or a file written with
// positioned writes, a run of consecutive pages per call.
import { readSync, writeSync } from 'node:fs';

export interface PageSink {
  /** Copies the current contents of page index into `into` (a DELTA's base, a DUP's source). */
  read(index: number, into: Uint8Array): void;
  /** Stores a verified page. It is copied: the caller may reuse `page` at once. */
  write(index: number, page: Uint8Array): void;
  /** Stores a zero page (`zeros` is one), without allocating for it where the sink can. */
  writeZero(index: number, zeros: Uint8Array): void;
  /** Writes out whatever write() still holds. */
  flush(): void;
}

export class MemorySink implements PageSink {
  constructor(private readonly pages: Uint8Array, private readonly pageSize: number) {}

  read(index: number, into: Uint8Array): void {
    into.set(this.pages.subarray(index * this.pageSize, (index + 1) * this.pageSize));
  }

  write(index: number, page: Uint8Array): void {
    this.pages.set(page, index * this.pageSize);
  }

  writeZero(index: number, zeros: Uint8Array): void {
    this.write(index, zeros);
  }

  flush(): void {}
}

/** Pages a file sink collects into one write at most: about 1 MiB, at least one page. */
export function fileRunPages(pageSize: number, recordCount: number): number {
  return Math.max(1, Math.min(recordCount, Math.floor(2 ** 20 / pageSize)));
}

export class FileSink implements PageSink {
  /** The pages of the run being collected: [first, first + count). */
  private readonly run: Uint8Array;
  private first = 0;
  private count = 0;

  constructor(private readonly fd: number, private readonly pageSize: number, runPages: number) {
    this.run = new Uint8Array(runPages * pageSize);
  }

  read(index: number, into: Uint8Array): void {
    this.flush(); // the page may be in the run
    const position = index * this.pageSize;
    for (let done = 0; done < into.length;) {
      let n: number;
      try {
        n = readSync(this.fd, into, done, into.length - done, position + done);
      } catch (cause) {
        throw new Error(`reading a page back failed: page ${index}: ${(cause as Error).message}`, { cause });
      }
      if (n === 0) throw new Error(`reading a page back failed: the file ends inside page ${index}`);
      done += n;
    }
  }

  /**
   * Node has no fallocate to punch a hole, as the addon does; a page that already reads back as zeros
   * (never written: a hole) is left alone, so zero pages allocate nothing in a fresh file.
   */
  writeZero(index: number, zeros: Uint8Array): void {
    const current = new Uint8Array(this.pageSize);
    this.read(index, current);
    if (current.some((byte) => byte !== 0)) this.write(index, zeros);
  }

  write(index: number, page: Uint8Array): void {
    const full = this.count * this.pageSize === this.run.length;
    if (this.count > 0 && (index !== this.first + this.count || full)) this.flush();
    if (this.count === 0) this.first = index;
    this.run.set(page, this.count * this.pageSize);
    this.count++;
  }

  flush(): void {
    const bytes = this.run.subarray(0, this.count * this.pageSize);
    const position = this.first * this.pageSize;
    this.count = 0;
    for (let done = 0; done < bytes.length;) {
      let n: number;
      try {
        n = writeSync(this.fd, bytes, done, bytes.length - done, position + done);
      } catch (cause) {
        throw new Error(`writing pages failed: ${(cause as Error).message}`, { cause });
      }
      if (n === 0) throw new Error('writing pages failed: the file took no bytes');
      done += n;
    }
  }
}

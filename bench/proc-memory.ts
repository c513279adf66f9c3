// A process's resident memory, sampled from /proc on a timer: the bench agents sample themselves, and
// the driver samples the `pagewire send` and `receive` processes it spawns. Off Linux there is no
// /proc, and the figures fall back to what Node reports for this process (or to nothing for another).
import { readFileSync } from 'node:fs';
import { performance } from 'node:perf_hooks';

/** How often a process's RSS is sampled while it migrates. */
export const RSS_SAMPLE_MS = 20;

/** A process's RSS, sampled on a timer while it migrated. */
export interface RssPeak {
  /** VmRSS at the first sample. */
  startBytes: number;
  peakBytes: number;
  /**
   * The peak of what the bound is about: anonymous memory, plus mapped file and shared-memory pages up
   * to one region. The source maps its image (a file on disk counts as RssFile, one on tmpfs as
   * RssShmem), and the synthetic writer maps it once more in its thread: Rss counts those pages twice,
   * though they are the same memory.
   */
  peakCountedBytes: number;
  /** /proc/PID/status at the peak sample: anonymous memory, mapped files, shared memory. */
  atPeak: RssParts | null;
  /**
   * /proc/PID/smaps_rollup when sampling stopped, if the process was still there: Pss splits a page
   * mapped twice between its mappings, where Rss counts it twice.
   */
  atEnd: { rssBytes: number; pssBytes: number; pssAnonBytes: number; pssFileBytes: number } | null;
  samples: number;
  /** The longest time between two samples: a busy event loop can hide a short-lived peak. */
  maxGapMs: number;
}

export interface RssParts {
  rssBytes: number;
  anonBytes: number;
  fileBytes: number;
  shmemBytes: number;
}

/** Samples one process's RSS every RSS_SAMPLE_MS from construction to stop(), keeping the peaks. */
export class RssSampler {
  private startBytes: number | undefined;
  private peakBytes = 0;
  private peakCountedBytes = 0;
  private atPeak: RssParts | null = null;
  private samples = 0;
  private maxGapMs = 0;
  private last = performance.now();
  private readonly timer: NodeJS.Timeout;

  /** pid 'self': this process. regionBytes: how much mapped memory counts against the bound. */
  constructor(private readonly pid: number | 'self', private readonly regionBytes: number) {
    this.sample();
    this.timer = setInterval(() => this.sample(), RSS_SAMPLE_MS);
  }

  stop(): RssPeak {
    this.sample();
    clearInterval(this.timer);
    return {
      startBytes: this.startBytes ?? 0, peakBytes: this.peakBytes, peakCountedBytes: this.peakCountedBytes, atPeak: this.atPeak,
      atEnd: rollup(this.pid), samples: this.samples, maxGapMs: Math.round(this.maxGapMs),
    };
  }

  private sample(): void {
    const now = performance.now();
    this.maxGapMs = Math.max(this.maxGapMs, now - this.last);
    this.last = now;
    const parts = rssParts(this.pid);
    const rss = parts?.rssBytes ?? (this.pid === 'self' ? process.memoryUsage.rss() : undefined);
    // A process that is gone (or not yet there) has nothing to sample.
    if (rss === undefined) return;
    this.startBytes ??= rss;
    const counted = parts ? parts.anonBytes + Math.min(parts.fileBytes + parts.shmemBytes, this.regionBytes) : rss;
    this.peakCountedBytes = Math.max(this.peakCountedBytes, counted);
    if (rss > this.peakBytes) {
      this.peakBytes = rss;
      this.atPeak = parts;
    }
    this.samples++;
  }
}

/** VmRSS, RssAnon, RssFile and RssShmem from /proc/PID/status, or null where there is none. */
function rssParts(pid: number | 'self'): RssParts | null {
  const kib = procKib(`/proc/${pid}/status`, ['VmRSS', 'RssAnon', 'RssFile', 'RssShmem']);
  return kib && {
    rssBytes: kib.VmRSS! * 1024, anonBytes: kib.RssAnon! * 1024, fileBytes: kib.RssFile! * 1024, shmemBytes: kib.RssShmem! * 1024,
  };
}

/** The figures of smaps_rollup that count what a process holds of its own, in bytes. */
export interface PrivateMemory {
  rssBytes: number;
  /** Pages only this process maps that it (or the kernel for it) wrote: anonymous memory, and a private mapping's copies. */
  privateDirtyBytes: number;
  anonymousBytes: number;
}

/** Rss, Private_Dirty and Anonymous from /proc/PID/smaps_rollup, or null where there is none. */
export function privateMemory(pid: number | 'self'): PrivateMemory | null {
  const kib = procKib(`/proc/${pid}/smaps_rollup`, ['Rss', 'Private_Dirty', 'Anonymous']);
  return kib && { rssBytes: kib.Rss! * 1024, privateDirtyBytes: kib.Private_Dirty! * 1024, anonymousBytes: kib.Anonymous! * 1024 };
}

/** Rss and Pss from /proc/PID/smaps_rollup, or null where there is none. */
function rollup(pid: number | 'self'): RssPeak['atEnd'] {
  const kib = procKib(`/proc/${pid}/smaps_rollup`, ['Rss', 'Pss', 'Pss_Anon', 'Pss_File']);
  return kib && {
    rssBytes: kib.Rss! * 1024, pssBytes: kib.Pss! * 1024, pssAnonBytes: kib.Pss_Anon! * 1024, pssFileBytes: kib.Pss_File! * 1024,
  };
}

/** "Name:   123 kB" lines of a /proc file (status, smaps_rollup, meminfo) as numbers of KiB; null if the file or a field is missing. */
export function procKib(path: string, fields: string[]): Record<string, number> | null {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch {
    return null;
  }
  const values: Record<string, number> = {};
  for (const field of fields) {
    const match = new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(text);
    if (!match) return null;
    values[field] = Number(match[1]);
  }
  return values;
}

// When to try LZ4. It saves bytes at about 0.5-2 GB/s of CPU per core: worth it when the link is the
// limit, a loss when the encoder is (a fast link, or both ends sharing a few cores). The policy only
// reads timings; the encoder's output for a given setting stays exactly specified (docs/PROTOCOL.md
// section 4).
//
// It predicts each setting's throughput, in bytes of pages per second, from what it measured with it:
// min(the encoder's rate, the link's rate / the setting's wire bytes per page byte). Comparing waits
// instead (the earlier policy) turned LZ4 off behind a 120 MB/s cap: the socket's buffer absorbs the
// first frames of a round without waiting, and an encoder slowed by other processes waits longer on
// its own, though the link stays the limit for what LZ4 saves. A rate is judged over a window of batches
// and the other setting is probed now and then, where it could win, so a change of link, load or content
// is followed.

export const LZ4_MODES = ['adaptive', 'always', 'off'] as const;
export type Lz4Mode = typeof LZ4_MODES[number];

/** Batches in one window: a decision follows each. */
const WINDOW_BATCHES = 8;
/** Windows with one setting before one window of the other, to re-measure it. */
const PROBE_EVERY_WINDOWS = 8;
/** Weight of the newest window in an estimate. */
const NEWEST_WEIGHT = 0.5;
/** A window's wait on the link counts as at least this: a link that kept up reads as very fast, not unbounded. */
const LINK_KEPT_UP_MS = 0.5;
/** Windows with one setting after which the other is probed even where it looks unable to win (its estimate may be stale). */
const FORCE_PROBE_EVERY_WINDOWS = 4 * PROBE_EVERY_WINDOWS;

/** What one batch cost: its page bytes, its bytes on the wire, and the time spent on each side. */
export interface BatchTiming {
  /** Pages × page size. */
  pageBytes: number;
  wireBytes: number;
  /** From queueing the encode to its result. */
  encodeMs: number;
  /** Waiting for the link: the socket taking the frame, and the bandwidth cap. */
  linkMs: number;
  /** Whether the batch was encoded with LZ4. */
  lz4: boolean;
}

/** One setting's smoothed figures. */
class SettingEstimate {
  /** Page bytes per ms of encoding, and wire bytes per page byte; undefined until measured. */
  encodeRate: number | undefined;
  wireRatio: number | undefined;

  /** `fresh`: the first window since this setting was last left, which replaces what is older. */
  fold(pageBytes: number, wireBytes: number, encodeMs: number, fresh: boolean): void {
    if (pageBytes === 0) return;
    const rate = pageBytes / Math.max(encodeMs, 1e-3);
    const ratio = wireBytes / pageBytes;
    this.encodeRate = this.encodeRate === undefined || fresh ? rate : blend(this.encodeRate, rate);
    this.wireRatio = this.wireRatio === undefined || fresh ? ratio : blend(this.wireRatio, ratio);
  }

  /** Page bytes per ms this setting would move over a link of linkRate wire bytes per ms. */
  throughput(linkRate: number): number | undefined {
    if (this.encodeRate === undefined || this.wireRatio === undefined) return undefined;
    return Math.min(this.encodeRate, this.linkBound(linkRate));
  }

  /** The most this setting could move over that link with an encoder of unbounded speed. */
  linkBound(linkRate: number): number {
    return this.wireRatio !== undefined && this.wireRatio > 0 ? linkRate / this.wireRatio : Infinity;
  }
}

/** One per stream: fed each batch's timing, says whether the next batch tries LZ4. */
export class Lz4Policy {
  private lz4 = true;
  private readonly settings = { on: new SettingEstimate(), off: new SettingEstimate() };
  /** Wire bytes per ms of waiting on the link, smoothed; Infinity until measured. */
  private linkRate = Infinity;
  private windowsInSetting = 0;
  private window = { batches: 0, pageBytes: 0, wireBytes: 0, encodeMs: 0, linkMs: 0 };

  constructor(private readonly mode: Lz4Mode) {}

  get enabled(): boolean {
    return this.mode === 'always' || (this.mode === 'adaptive' && this.lz4);
  }

  record(batch: BatchTiming): void {
    // A batch encoded under the other setting (queued before a switch) says nothing about this one.
    if (this.mode !== 'adaptive' || batch.lz4 !== this.lz4) return;
    const w = this.window;
    w.batches += 1;
    w.pageBytes += batch.pageBytes;
    w.wireBytes += batch.wireBytes;
    w.encodeMs += batch.encodeMs;
    w.linkMs += batch.linkMs;
    if (w.batches < WINDOW_BATCHES) return;
    // A probe measures the setting as it is now (the load, the link): an estimate from minutes ago, or
    // from the first batches while both processes were still starting, must not outvote it.
    this.settings[this.lz4 ? 'on' : 'off'].fold(w.pageBytes, w.wireBytes, w.encodeMs, this.windowsInSetting === 0);
    // One window whose frames the socket buffer absorbed blends in as a fast link, not as the truth.
    const rate = w.wireBytes / Math.max(w.linkMs, LINK_KEPT_UP_MS);
    this.linkRate = Number.isFinite(this.linkRate) ? blend(this.linkRate, rate) : rate;
    this.window = { batches: 0, pageBytes: 0, wireBytes: 0, encodeMs: 0, linkMs: 0 };
    this.decide();
  }

  private decide(): void {
    this.windowsInSetting += 1;
    const on = this.settings.on.throughput(this.linkRate);
    const off = this.settings.off.throughput(this.linkRate);
    const [current, other] = this.lz4 ? [on, this.settings.off] : [off, this.settings.on];
    let next = this.lz4;
    if (on === undefined || off === undefined) {
      next = !this.lz4; // measure the other setting first
    } else if (this.windowsInSetting >= PROBE_EVERY_WINDOWS) {
      // Measure the other setting again, unless even an unbounded encoder could not make it win over
      // this link: behind a slow link, LZ4's bytes saved decide, and probing would only cost them.
      const couldWin = other.linkBound(this.linkRate) > current! || this.windowsInSetting >= FORCE_PROBE_EVERY_WINDOWS;
      next = couldWin ? !this.lz4 : this.lz4;
    } else {
      next = on >= off;
    }
    if (next !== this.lz4) this.windowsInSetting = 0;
    this.lz4 = next;
  }
}

function blend(old: number, newest: number): number {
  return old * (1 - NEWEST_WEIGHT) + newest * NEWEST_WEIGHT;
}

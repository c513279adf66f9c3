// When to try LZ4. It saves bytes at about 1-2 GB/s of CPU per core: worth it when the link is the
// limit, a loss when the encoder is (a fast link, or both ends sharing a few cores, where turning it off
// measured 20% faster for a 1 GiB mixed image). The policy only reads timings; the encoder's output for
// a given setting stays exactly specified (docs/PROTOCOL.md section 4).

export const LZ4_MODES = ['adaptive', 'always', 'off'] as const;
export type Lz4Mode = typeof LZ4_MODES[number];

/** Batches with LZ4 whose waits are summed before a decision. */
const WINDOW_BATCHES = 8;
/** Batches sent without LZ4 before it is tried again, in case the link got slower. */
const OFF_BATCHES = 64;

/** One per stream: fed the waits of each batch, says whether the next one tries LZ4. */
export class Lz4Policy {
  private batches = 0;
  private encoderWaitMs = 0;
  private linkWaitMs = 0;
  private offLeft = 0;

  constructor(private readonly mode: Lz4Mode) {}

  get enabled(): boolean {
    return this.mode === 'always' || (this.mode === 'adaptive' && this.offLeft === 0);
  }

  /**
   * After a batch: how long the sender waited for the encoder, and for the link (the socket taking the
   * frame, or the bandwidth cap). `tried` says whether that batch was encoded with LZ4. Over a window of
   * batches, more time waiting on the encoder turns LZ4 off for a while.
   */
  record(encoderWaitMs: number, linkWaitMs: number, tried: boolean): void {
    if (this.mode !== 'adaptive') return;
    if (!tried) {
      this.offLeft = Math.max(0, this.offLeft - 1);
      return;
    }
    this.encoderWaitMs += encoderWaitMs;
    this.linkWaitMs += linkWaitMs;
    if (++this.batches < WINDOW_BATCHES) return;
    if (this.encoderWaitMs > this.linkWaitMs) this.offLeft = OFF_BATCHES;
    this.batches = 0;
    this.encoderWaitMs = 0;
    this.linkWaitMs = 0;
  }
}

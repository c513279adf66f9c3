// The target's pre-copy rounds made durable in the background (docs/PROTOCOL.md section 3, RoundFlusher).
import type { TargetImage } from './target-image.js';

/**
 * Makes the pre-copy rounds durable in the background, one persist() at a time, while the next round
 * arrives: a round is acknowledged once applied, so the source's bandwidth figure is the one its final
 * round will see (that round's fsync waits for GO), and the disk works while the network does. The
 * commit on GO waits for what is in flight; a failure fails the migration at the next round's end.
 */
export class RoundFlusher {
  private running: Promise<void> | undefined;
  private again = false;
  private failure: unknown;

  /** `image` may stand for several (RegionImages): each round is durable once all of them are. */
  constructor(private readonly image: Pick<TargetImage, 'persist'>) {}

  /** Starts making everything written so far durable; throws an earlier flush's failure. */
  flush(): void {
    this.check();
    if (this.running) {
      this.again = true;
      return;
    }
    this.running = this.run().finally(() => { this.running = undefined; });
  }

  /** Throws the failure of a flush, if one failed. */
  check(): void {
    if (this.failure !== undefined) throw this.failure;
  }

  /** Waits for the flush in flight; throws its failure. */
  async settled(): Promise<void> {
    await this.running;
    this.check();
  }

  private async run(): Promise<void> {
    do {
      this.again = false;
      try {
        await this.image.persist();
      } catch (error) {
        this.failure ??= error;
        return;
      }
    } while (this.again);
  }
}

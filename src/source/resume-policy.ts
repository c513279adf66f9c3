// When the connections break during the pre-copy: reconnect with a doubling backoff, a bounded number of
// times, and go on from what the target holds (its HELD hashes), sending only the pages whose contents
// differ from them. A failure that is either side's decision, or an abort, is not resumed.
import { ConnectionError, PeerError, TimeoutError, asPagewireError, type PagewireError } from '../errors.js';
import { HashTracker, type PageList } from '../memory/dirty-tracker.js';
import type { RoundReport } from '../migration/metrics.js';
import { waitUnlessAborted } from './abortable-wait.js';
import type { SourceParts } from './source-parts.js';
import { byStream } from './stripe-planner.js';

/** Sends a round's pages; `resumed` is set when they are a resume's rather than the round's own. */
export type SendRound = (round: number, pages: PageList[][], resumed: boolean) => Promise<RoundReport>;

export class ResumePolicy {
  constructor(private readonly parts: SourceParts) {}

  /**
   * Sends a pre-copy round, resuming as often as allowed when the connections break. Returns the round
   * that completed: after a resume, the one after the last the target held.
   */
  async sendRound(round: number, pages: PageList[][], send: SendRound): Promise<{ round: number; report: RoundReport }> {
    const { maxResumeAttempts } = this.parts.settings;
    let resumed = false;
    for (;;) {
      try {
        return { round, report: await send(round, pages, resumed) };
      } catch (error) {
        if (!this.resumable(error) || maxResumeAttempts === 0) throw error;
        ({ round, pages } = await this.resume(asPagewireError(error)));
        resumed = true;
      }
    }
  }

  /** A failure a new set of connections can get past: the network, not either side's decision. */
  private resumable(error: unknown): boolean {
    return this.parts.phases.current === 'precopy' && (error instanceof ConnectionError || error instanceof TimeoutError) &&
      !this.parts.settings.signal?.aborted;
  }

  /**
   * Reconnects (bounded retries, doubling backoff), and returns the pages to send next: those whose
   * contents differ from what the target holds.
   */
  private async resume(cause: PagewireError): Promise<{ round: number; pages: PageList[][] }> {
    const { settings, connections, sender, regions, summary, phases } = this.parts;
    let error: unknown = cause;
    for (let attempt = 0; attempt < settings.maxResumeAttempts; attempt++) {
      connections.closeForResume(asPagewireError(error));
      await waitUnlessAborted(settings.resumeBackoffMs * 2 ** attempt, settings.signal, phases);
      try {
        const { held, streams } = await connections.open(true);
        sender.useStreams(streams);
        await sender.lateEncodesSettled();
        // From here the bitmap records new writes; what changed before is found by comparing hashes.
        const pages: PageList[][] = [];
        for (const { index, region, tracker, sentHashes } of regions) {
          tracker.start();
          sentHashes.set(held!.hashes[index]!);
          const changed = (await new HashTracker(region, sentHashes).scan()).take();
          summary.resumeSavedBytes += (region.pageCount - changed.count) * region.pageSize;
          pages.push(byStream(changed, sender.streamCount));
        }
        summary.resumes += 1;
        return { round: held!.lastRound + 1, pages };
      } catch (failure) {
        if (!(failure instanceof ConnectionError || failure instanceof TimeoutError || failure instanceof PeerError)) throw failure;
        error = failure;
      }
    }
    throw new ConnectionError(`the connections broke (${cause.message}) and ${settings.maxResumeAttempts} attempts to resume ` +
      `failed, the last with: ${(error as Error).message}`, { cause: error });
  }
}

// The target's switch-over: READY once the images are verified, GO, making them durable and committing
// them, DONE, then the embedder's hooks; and the failure table, which says what a failure means at the stage
// reached (docs/PROTOCOL.md, section 6).
import { performance } from 'node:perf_hooks';
import { PeerError, SwitchoverError, type PagewireError } from '../errors.js';
import { HookRunner } from '../migration/hook-runner.js';
import type { TargetSettings } from '../migration/target-options.js';
import type { RoundFlusher } from './round-flusher.js';
import type { RegionImages } from './region-images.js';
import { MessageType, encodeReady, expectEmpty } from '../wire/messages.js';
import type { TargetSession } from './session.js';
import type { TargetState } from './target-state.js';

/** How far the switch-over got on this side: decides what a failure means. */
export type SwitchoverStage = 'receiving' | 'ready-sent' | 'go-received' | 'committed';

/** What the switch-over asks of the target that owns the state. */
export interface SwitchoverHost {
  enter(state: TargetState): void;
  /** This migration needs no more connections: stop listening, unless serving many. */
  doneAccepting(): void;
}

export class Switchover {
  private stage: SwitchoverStage = 'receiving';
  /** After GO, making the images durable failed: they cannot be trusted (a failed fsync may have lost pages). */
  private notDurable = false;

  constructor(private readonly host: SwitchoverHost, private readonly settings: TargetSettings, private readonly images: RegionImages,
    private readonly flusher: RoundFlusher) {}

  /** Hands over the session whose FINAL was verified: READY, GO, commit, DONE, then the hooks. */
  async run(session: TargetSession): Promise<void> {
    const { images, flusher } = this;
    const { connection, summary } = session;
    // A round that could not be made durable fails the migration before READY, not after GO.
    flusher.check();
    this.host.doneAccepting();
    const { prepare, deviceStateReceived } = this.settings.hooks;
    if (prepare || deviceStateReceived) {
      const prepareStarted = performance.now();
      // Often loaded already, beside the last pages; a failure to load fails the migration here, before READY.
      const loadFailure = await session.deviceStateLoaded();
      if (loadFailure) throw loadFailure;
      const handover = { images: images.handover(), deviceState: session.deviceState };
      if (prepare) await new HookRunner(this.settings.hookTimeoutMs, this.settings.signal).run('prepare', (signal) => prepare(handover, signal));
      summary.prepareMs = performance.now() - prepareStarted;
    }
    // READY as soon as the image is verified: the source holds the state at the pause point until DONE,
    // so making the last round durable waits for GO, outside the downtime (PROTOCOL.md, section 6).
    // Set before the write: once any byte of READY may be on the wire, the source may hand over.
    this.stage = 'ready-sent';
    this.host.enter({ kind: 'ready-sent', interrupt: session.interrupt });
    await connection.send(MessageType.Ready, encodeReady({ verifyMicros: session.verifyMicros, prepareMicros: summary.prepareMs * 1000 }));
    expectEmpty(await connection.expect(MessageType.Go, this.settings.timeoutMs), 'GO');
    this.stage = 'go-received';
    // Handed over: an abort now would only keep DONE from the source, not undo anything.
    this.host.enter({ kind: 'committing' });
    const commitStarted = performance.now();
    try {
      await flusher.settled();
      await images.persist();
    } catch (error) {
      this.notDurable = true;
      throw error;
    }
    await images.commit();
    summary.commitMs = performance.now() - commitStarted;
    this.stage = 'committed';
    // DONE means committed: the source's wait for it does not depend on how long the hooks take,
    // and a hook that fails afterwards is this side's to report.
    try {
      await connection.send(MessageType.Done);
      await connection.close();
    } catch {
      // This side has committed; a source that misses DONE reports the hand-over as unconfirmed.
    }
    // After the commit: an abort no longer undoes anything, so only the timeout bounds them.
    const hookRunner = new HookRunner(this.settings.hookTimeoutMs);
    const { onDeviceState, resume } = this.settings.hooks;
    if (onDeviceState) await hookRunner.run('onDeviceState', (signal) => onDeviceState(session.deviceState, signal));
    if (resume) await hookRunner.run('resume', (signal) => resume(signal));
  }

  /**
   * After a failure, once the images are dealt with and the source told: whatever the embedder made on
   * the images must not run, since only a committed image may. A deviceStateReceived still loading is
   * stopped first, so discard never overlaps it.
   */
  async discardWorkload(session: TargetSession, reason: PagewireError): Promise<void> {
    if (this.stage === 'committed') return;
    await session.stopDeviceStateLoad(reason);
    const { discard } = this.settings.hooks;
    if (!discard) return;
    try {
      await new HookRunner(this.settings.hookTimeoutMs).run('discard', (signal) => discard(signal), false);
    } catch {
      // The failure being reported matters more; the hook's own failure is the embedder's to log.
    }
  }

  /**
   * What `cause` means at the stage reached. Before READY, or when the source said it gave up after READY
   * (it sends ERROR only before it hands over), the source keeps running: the image is discarded and the
   * cause stands. Otherwise a SwitchoverError names the exact state.
   */
  async failure(cause: PagewireError): Promise<PagewireError> {
    const { stage, images } = this;
    if (stage === 'receiving' || (stage === 'ready-sent' && cause instanceof PeerError)) {
      images.discard();
      return cause;
    }
    if (stage === 'go-received' && this.notDurable) {
      images.discard();
      return new SwitchoverError(
        `GO received but the image could not be made durable (${cause.message}); it was discarded, since a failed ` +
        'fsync may have lost pages. The source is handed over and paused at the pause point: resume the workload there',
        'go-received-commit-failed', { cause });
    }
    if (stage === 'committed') {
      return new SwitchoverError(
        `the image is committed but the device-state or resume hook failed (${cause.message}); the source is ` +
        'handed over and paused: start the workload here by hand', 'committed-resume-failed', { cause });
    }
    const kept = await images.keepInDoubt();
    return stage === 'go-received'
      ? new SwitchoverError(
        `GO received but committing the image failed (${cause.message}); the verified image is at ${kept} and the ` +
        'source is handed over and paused: repair this side and commit that image by hand', 'go-received-commit-failed',
        { cause, inDoubtImage: kept })
      : new SwitchoverError(
        `switch-over in doubt: READY was sent but GO never arrived (${cause.message}); the verified image is kept at ` +
        `${kept} and nothing was resumed here: check whether the source resumed before using it`, 'ready-sent-go-missing',
        { cause, inDoubtImage: kept });
  }
}

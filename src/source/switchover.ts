// The switch-over: pause the workload, send the last dirty pages (the STOP_AND_COPY round), the device
// state and FINAL with the region digest, then READY back, GO out and DONE back (docs/PROTOCOL.md has the
// state table). READY is the point of no return: a failure before it resumes the workload here and the
// target discards what it received; after it the source stays paused and handed over.
import { performance } from 'node:perf_hooks';
import { ConnectionError, SwitchoverError, type PagewireError } from '../errors.js';
import { formatDigest, migrationDigest, regionDigest } from '../codec/page-hashes.js';
import { PEER_REASON_GRACE_MS } from '../transport/framed-connection.js';
import { MessageType, STOP_AND_COPY, encodeFinal, expectEmpty, parseReady } from '../wire/messages.js';
import type { SourceParts } from './source-parts.js';
import { byStreamPerRegion } from './stripe-planner.js';

export class Switchover {
  private handedOverNow = false;

  constructor(private readonly parts: SourceParts) {}

  /** Past READY: the target holds the verified image, and the switch-over cannot be undone. */
  get handedOver(): boolean {
    return this.handedOverNow;
  }

  async stopAndCopy(finalRound: number): Promise<void> {
    const { settings, connections, sender, workload, regions, summary, phases } = this.parts;
    const connection = connections.control;
    phases.enter('stop-and-copy');
    const pausedAt = performance.now();
    await workload.pause();
    const synced = performance.now();
    summary.downtime.pauseMs = synced - pausedAt;
    // Collected beside the final sync and the last pages, and sent as it comes (below).
    const deviceState = workload.collectDeviceState();
    const finalPages = byStreamPerRegion(await Promise.all(regions.map(({ tracker }) => tracker.scan({ paused: true }))), sender.streamCount);
    const collected = performance.now();
    summary.downtime.finalSyncMs = collected - synced;
    // A state ready before the last pages goes ahead of them: the target loads it while they arrive.
    await deviceState.sendCollected(connection);
    await sender.sendRound(finalRound, finalPages, { flags: STOP_AND_COPY });
    summary.deviceStateBytes = await deviceState.sendTo(connection);
    summary.deviceStateMs = deviceState.collectedAt - synced;
    const digest = migrationDigest(regions.map(({ sentHashes }) => regionDigest(sentHashes)));
    summary.regionDigest = formatDigest(digest);
    // Transfer ends here: from FINAL on, the target's verify and persist overlap this side's wait.
    summary.downtime.transferMs = performance.now() - collected;
    await connection.send(MessageType.Final, encodeFinal({ round: finalRound, regionDigest: digest }));

    phases.enter('awaiting-ready');
    const ready = parseReady(await connection.expect(MessageType.Ready, settings.persistTimeoutMs));
    // The point of no return: the target holds a verified image, made durable on GO. From here on the source
    // never resumes by itself.
    this.handedOverNow = true;
    phases.enter('handed-over');
    await connection.send(MessageType.Go);
    summary.downtimeMs = performance.now() - pausedAt;
    summary.downtime.verifyMs = ready.verifyMicros / 1000;
    summary.downtime.prepareMs = ready.prepareMicros / 1000;
    // What is left is waiting on the network and on both sides' event loops: FINAL out, READY back, GO out.
    const { pauseMs, finalSyncMs, transferMs, verifyMs, prepareMs } = summary.downtime;
    summary.downtime.handshakeMs = Math.max(0, summary.downtimeMs - pauseMs - finalSyncMs - transferMs - verifyMs - prepareMs);
    // The extra streams carried their last page in the final round; closing them waits for a round
    // trip, which does not belong inside the downtime.
    await Promise.all(connections.all.slice(1).map((extra) => extra.close()));
    // DONE follows the target's commit, whose fsync of the last round may take as long as a round's.
    expectEmpty(await connection.expect(MessageType.Done, settings.persistTimeoutMs), 'DONE');
    summary.bytesTransferred = connections.bytesWritten();
    await connection.close();
  }

  /** Puts the source back in a safe state and returns the error to throw. */
  async fail(failure: PagewireError): Promise<PagewireError> {
    const { connections, workload, phases } = this.parts;
    connections.markFailing();
    // A lost connection may only be the target tearing down after saying why on the control connection.
    const error = failure instanceof ConnectionError && connections.all.length > 1
      ? await connections.control.peerError(PEER_REASON_GRACE_MS) ?? failure : failure;
    this.report(error);
    const phase = phases.current;
    phases.enter('failed');
    const [connection, ...extra] = connections.all;
    if (this.handedOverNow) {
      for (const other of extra) other.fail(error);
      connection?.fail(error);
      const state = phase === 'handed-over' ? 'handed-over-unconfirmed' : phase;
      const wrapped = error instanceof SwitchoverError ? error : new SwitchoverError(
        `switch-over not confirmed (${error.message}); the source stays paused and handed over: ` +
        'check the target before resuming anything', state, { cause: error });
      this.report(wrapped);
      return wrapped;
    }
    // The control connection tells the target why; the others close once it has heard it.
    for (const other of extra) other.interrupt(error);
    if (connection) await connection.sendErrorAndClose(error);
    for (const other of extra) other.fail(error);
    const reported = await workload.restore(error);
    this.report(reported);
    return reported;
  }

  private report(error: PagewireError): void {
    const { summary } = this.parts;
    summary.status = 'failed';
    summary.error = error.message;
    summary.errorCode = error.code;
  }
}

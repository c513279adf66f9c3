// Figures a migration accumulates, turned into the summary the CLI prints and the API returns.

export interface DowntimeBreakdown {
  /** From the pause request until the workload's pause hook resolved. */
  pauseMs: number;
  /** The final dirty-bitmap sync (or hash scan). */
  finalSyncMs: number;
  /** Sending the last dirty pages (until the target applied them all) and the device state. */
  transferMs: number;
  /** The target checking the region digest (READY reports it). */
  verifyMs: number;
  /** The target's prepare hook, getting its workload ready on the verified image (READY reports it). */
  prepareMs: number;
  /** The rest: FINAL out, READY back and GO out, over the network and through both event loops. */
  handshakeMs: number;
}

export interface SourceSummary {
  status: 'completed' | 'failed';
  error?: string;
  errorCode?: string;
  migrationId: string;
  totalTimeMs: number;
  setupTimeMs: number;
  /** Source pause to GO sent. */
  downtimeMs: number;
  downtime: DowntimeBreakdown;
  rounds: number;
  /** TCP connections that carried pages. */
  streams: number;
  /** Regions moved (1 + options.extraRegions). */
  regions: number;
  /** The first region's page size. */
  pageSize: number;
  /** Pages of every region. */
  pagesTotal: number;
  /** Page records sent, all rounds (zero pages skipped in round 1 are not records). */
  pagesTransferred: number;
  zeroPages: number;
  deltaPages: number;
  lz4Pages: number;
  rawPages: number;
  dupPages: number;
  /** Every byte the source wrote to its sockets. */
  bytesTransferred: number;
  deviceStateBytes: number;
  /** From the pause to the last byte of device state collected (0 without the hook's bytes); overlaps the final sync. */
  deviceStateMs: number;
  stopReason: string;
  /** Auto-converge's last throttle of the workload, in percent (0 = never throttled). */
  throttlePercent: number;
  /** As measured after the last pre-copy round: */
  dirtyRateBytesPerSec: number;
  bandwidthBytesPerSec: number;
  /** The stop rule's estimate for the final round, when it decided to stop. */
  expectedDowntimeMs: number;
  /** Times the connections broke during the pre-copy and the migration resumed. */
  resumes: number;
  /** Bytes of pages the resumes did not send again, since the target held them already. */
  resumeSavedBytes: number;
  /** Bytes of pages round 1 did not send because a seeded target held them already (a receive started from a snapshot). */
  seedSavedBytes: number;
  /** The region digest at the pause point, as FINAL carried it (16 hex digits; '' before FINAL). */
  regionDigest: string;
}

export interface RoundProgress {
  round: number;
  /** Pages this round set out to send, and how many of them are still to go. */
  pagesPlanned: number;
  pagesLeft: number;
  /** Page records sent in this round so far (zero pages skipped in round 1 are not records). */
  recordsSent: number;
  bytesSent: number;
  /** Bytes per second so far in this round. */
  bytesPerSec: number;
  elapsedMs: number;
  /** Auto-converge's throttle of the workload, in percent. */
  throttlePercent: number;
}

export interface RoundReport {
  round: number;
  pagesSent: number;
  bytesSent: number;
  durationMs: number;
  /** Bytes on the wire per second. */
  bandwidthBytesPerSec: number;
  /**
   * Bytes of pages moved per second (pages sent × pageSize): what the stop rule divides the pending
   * pages by. Pages travel encoded (zero, delta, LZ4), so this is usually far above the wire's rate.
   */
  pageBandwidthBytesPerSec: number;
  /** Pages written during the round, as a rate (bytes of pages per second). */
  dirtyRateBytesPerSec: number;
  /** Pages dirty when the round ended. */
  pendingPages: number;
  expectedDowntimeMs: number;
  /** Auto-converge's throttle of the workload during the round, in percent. */
  throttlePercent: number;
  elapsedMs: number;
}

/** The per-round log line: round= pages= bytes= bw= dirty= pending= est_downtime= page_bw= throttle= elapsed= */
export function formatRoundLine(r: RoundReport): string {
  return `round=${r.round} pages=${r.pagesSent} bytes=${r.bytesSent} bw=${mbps(r.bandwidthBytesPerSec)}MB/s ` +
    `dirty=${mbps(r.dirtyRateBytesPerSec)}MB/s pending=${r.pendingPages} ` +
    `est_downtime=${Number.isFinite(r.expectedDowntimeMs) ? r.expectedDowntimeMs.toFixed(1) : 'inf'}ms ` +
    `page_bw=${mbps(r.pageBandwidthBytesPerSec)}MB/s throttle=${r.throttlePercent}% elapsed=${r.elapsedMs.toFixed(0)}ms`;
}

export function mbps(bytesPerSec: number): string {
  return (bytesPerSec / 1e6).toFixed(1);
}

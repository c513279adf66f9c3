// The source side, orchestrated: connect, pre-copy rounds while the workload runs until the stop rule
// fires, then the switch-over (docs/PROTOCOL.md has the state table; src/source/switchover.ts what a
// failure before or after READY leaves). Each job is a module of src/source/: the connection set, the
// stripe planner, the round sender, the resume policy, the switch-over and the workload's hooks; this
// file makes them, runs them in order, and owns the summary.
import { randomBytes } from 'node:crypto';
import { EventEmitter } from 'node:events';
import { performance } from 'node:perf_hooks';
import { AbortedError, ConvergenceError, InvalidArgumentError, asPagewireError } from '../errors.js';
import type { Lz4Mode } from '../codec/lz4-policy.js';
import type { DirtyBitmap } from '../memory/dirty-bitmap.js';
import { HashTracker, type DirtyTracker, type PageList } from '../memory/dirty-tracker.js';
import type { MemoryRegion } from '../memory/region.js';
import type { EndpointOptions } from '../transport/connect.js';
import type { TlsCertificates } from '../transport/tls-certs.js';
import { TARGET_ZEROED } from '../wire/messages.js';
import { ConnectionSet } from '../source/connection-set.js';
import { ResumePolicy } from '../source/resume-policy.js';
import { RoundSender } from '../source/round-sender.js';
import { PhaseState, type SourcePhase } from '../source/source-phase.js';
import { trackRegions, type TrackedRegion } from '../source/tracked-regions.js';
import { byStream, byStreamPerRegion, firstRoundByStream } from '../source/stripe-planner.js';
import { Switchover } from '../source/switchover.js';
import { WorkloadControl } from '../source/workload-control.js';
import { SWITCHOVER_ROUND_TRIPS, decideNextRound, type StallPolicy } from './convergence.js';
import { sourceSettings, type SourceSettings } from './source-options.js';
import type { RoundProgress, RoundReport, SourceSummary } from './metrics.js';

export type { SourcePhase } from '../source/source-phase.js';

/**
 * The embedder's hooks. Each is given an AbortSignal that aborts when the migration stops waiting for it
 * (its `hookTimeoutMs` passed, or the migration was aborted). A hook given up on may still be running:
 * the source never starts its opposite (`resume` after `pause`, `throttle(0)` after a throttle step)
 * until it has settled.
 */
export interface SourceHooks {
  /** Stop the workload; resolve once it can write no more. */
  pause(signal: AbortSignal): Promise<void> | void;
  /** Restart the workload after a switch-over that failed before the point of no return. */
  resume(signal: AbortSignal): Promise<void> | void;
  /**
   * The opaque device state, taken while paused: called right after pause(), beside the final sync and
   * the last pages, and sent once they are out. Return the bytes, or stream them as an AsyncIterable
   * (each part is kept until sent: do not reuse it); at most 1 GiB in all.
   */
  deviceState?(signal: AbortSignal): Promise<Uint8Array | AsyncIterable<Uint8Array>> | Uint8Array | AsyncIterable<Uint8Array>;
  /**
   * Auto-converge: slow the workload to (100 - percent)% of its speed (QEMU's cpu-throttle). Called
   * with 20, 30, ... 99 when the rounds stop converging, and with 0 if the migration fails.
   */
  throttle?(percent: number, signal: AbortSignal): Promise<void> | void;
}

/** A region moved beside `region`: a disk image, a device's memory. */
export interface SourceRegion {
  region: MemoryRegion;
  /** Set by the workload's writers; without it (or dirtyTracker), this region's pages are tracked by hashing. */
  dirtyBitmap?: DirtyBitmap;
  /** The embedder's own tracker of this region's pages, instead of a bitmap (see MigrationSourceOptions.dirtyTracker). */
  dirtyTracker?: DirtyTracker;
}

/** Where the target is: exactly one of `host` and `port` (TCP), `path` (a Unix socket) or `connect`. */
export interface MigrationSourceOptions extends EndpointOptions {
  region: MemoryRegion;
  /** Set by the workload's writers; without it (or dirtyTracker), pages are tracked by hashing. */
  dirtyBitmap?: DirtyBitmap;
  /**
   * The embedder's own tracker, for writers that mark no bitmap: a hypervisor's dirty log, the kernel's.
   * Its scans list each changed page once, ascending, within the region; a list that does not fails the
   * migration with PW_ERR_INVALID_ARGUMENT before the switch-over. Not with dirtyBitmap.
   */
  dirtyTracker?: DirtyTracker;
  /**
   * More regions moved in the same migration, each with its own page size and tracking: one pause, one
   * switch-over for all of them (at most 15; docs/PROTOCOL.md, "Several regions").
   */
  extraRegions?: SourceRegion[];
  hooks: SourceHooks;
  /** Downtime budget for the stop rule (default 300 ms, as QEMU). */
  maxDowntimeMs?: number;
  /** Pre-copy rounds before stop-and-copy is forced (default 30). */
  maxRounds?: number;
  /** Bytes per second on the wire, all streams together; 0 or absent for no cap. */
  maxBandwidthBytesPerSec?: number;
  /**
   * TCP connections to carry the pages (default: the number of cores, at most 64), like QEMU's multifd,
   * but with DELTA and DUP, and the last round too. The target may accept fewer.
   */
  streams?: number;
  /**
   * When two rounds in a row do not shrink the dirty set: 'throttle' the workload through
   * hooks.throttle (the default; without the hook, 'stop'), 'stop' and copy with a longer pause, or
   * 'fail' cleanly with PW_ERR_NOT_CONVERGING while the workload keeps running here.
   */
  onStall?: StallPolicy;
  /**
   * 'adaptive' (default): a stream stops trying LZ4 while it waits on its encoder more than on its
   * socket (a fast link), and tries again every 64 batches; 'always'; or 'off'.
   */
  lz4?: Lz4Mode;
  /**
   * When the connections break during the pre-copy, how many times to reconnect and resume (default 3;
   * 0: fail at once), waiting resumeBackoffMs (default 200), then twice that, and so on. A resume sends
   * only the pages whose contents differ from what the target holds.
   */
  maxResumeAttempts?: number;
  resumeBackoffMs?: number;
  /** Longest wait for an embedder hook (pause, deviceState, resume) to settle (default 30 s). */
  hookTimeoutMs?: number;
  /** Pages per PAGES frame (default: 1 MiB of pages, 256 at 4 KiB). */
  batchPages?: number;
  /**
   * Bytes of page cache holding the last sent copy of pages, the base of DELTA (XBZRLE) and DUP
   * records (default 64 MiB, as QEMU's xbzrle-cache-size; 0 turns both off).
   */
  pageCacheBytes?: number;
  /** The pre-shared key the target must prove it holds (and asks this source to prove). */
  psk?: Uint8Array;
  /** Encrypt and authenticate every frame with TLS 1.2 PSK under `psk` (the target must use it too). */
  tls?: boolean;
  /**
   * Or TLS 1.3 with certificates: `ca` to trust the target's certificate (its name or IP must match
   * `host`), and `cert` and `key` when the target asks for a client certificate.
   */
  tlsCertificates?: TlsCertificates;
  /** Longest wait for any answer from the target, or for the socket to drain (default 30 s). */
  timeoutMs?: number;
  /**
   * Longest wait for an answer that follows a target fsync: ROUND_ACK (each pre-copy round is made
   * durable before it is acknowledged) and READY (default 10 min).
   */
  persistTimeoutMs?: number;
  signal?: AbortSignal;
}

/** MigrationSource's events and their arguments. */
export interface SourceEvents {
  /** The source entered a phase. */
  phase: [SourcePhase];
  /** Pages sent so far in the current round (several times a round). */
  progress: [RoundProgress];
  /** A round ended (formatRoundLine() makes it the CLI's log line). */
  round: [RoundReport];
}

export class MigrationSource extends EventEmitter<SourceEvents> {
  readonly migrationId: Buffer = randomBytes(16);
  private readonly options: SourceSettings;
  private readonly phases = new PhaseState((phase) => this.emit('phase', phase));
  private readonly regions: TrackedRegion[];
  private readonly connections: ConnectionSet;
  private readonly workload: WorkloadControl;
  private readonly sender: RoundSender;
  private readonly resumePolicy: ResumePolicy;
  private readonly switchover: Switchover;
  private startedAt = 0;
  private ran = false;
  private readonly summary: SourceSummary;

  constructor(options: MigrationSourceOptions) {
    super();
    const settings = sourceSettings(options);
    this.options = settings;
    const { region } = settings;
    const regions = trackRegions(settings);
    this.regions = regions;
    this.summary = {
      status: 'failed', migrationId: this.migrationId.toString('hex'), totalTimeMs: 0, setupTimeMs: 0, downtimeMs: 0,
      downtime: { pauseMs: 0, finalSyncMs: 0, transferMs: 0, verifyMs: 0, prepareMs: 0, handshakeMs: 0 }, rounds: 0,
      streams: 0, regions: regions.length, pageSize: region.pageSize,
      pagesTotal: regions.reduce((n, r) => n + r.region.pageCount, 0), pagesTransferred: 0, zeroPages: 0,
      deltaPages: 0, lz4Pages: 0, rawPages: 0, dupPages: 0, bytesTransferred: 0, deviceStateBytes: 0, deviceStateMs: 0, stopReason: '',
      throttlePercent: 0, dirtyRateBytesPerSec: 0, bandwidthBytesPerSec: 0, expectedDowntimeMs: 0, resumes: 0,
      resumeSavedBytes: 0, seedSavedBytes: 0, regionDigest: '',
    };
    const { summary, phases } = this;
    const connections = new ConnectionSet(settings, this.migrationId);
    const workload = new WorkloadControl(settings);
    const sender = new RoundSender({
      settings, connections, regions, summary, workload, phases,
      elapsedMs: () => performance.now() - this.startedAt,
      progress: (progress) => this.emit('progress', progress),
    });
    const parts = { settings, connections, sender, workload, regions, summary, phases };
    this.connections = connections;
    this.workload = workload;
    this.sender = sender;
    this.resumePolicy = new ResumePolicy(parts);
    this.switchover = new Switchover(parts);
  }

  get phase(): SourcePhase {
    return this.phases.current;
  }

  /** The figures so far; after run() settles, the final summary (also on failure). */
  get metrics(): SourceSummary {
    return { ...this.summary, downtime: { ...this.summary.downtime } };
  }

  /** Runs the migration once. Resolves with the summary, or rejects with a PagewireError. */
  async run(): Promise<SourceSummary> {
    if (this.ran) throw new InvalidArgumentError('a MigrationSource runs once; create another');
    this.ran = true;
    const { signal } = this.options;
    const onAbort = () => this.abort();
    signal?.addEventListener('abort', onAbort, { once: true });
    this.startedAt = performance.now();
    try {
      if (signal?.aborted) throw new AbortedError('migration aborted before it started', { cause: signal.reason });
      await this.migrate();
      this.summary.status = 'completed';
      this.summary.totalTimeMs = performance.now() - this.startedAt;
      this.phases.enter('completed');
      return this.metrics;
    } catch (error) {
      throw await this.switchover.fail(asPagewireError(error));
    } finally {
      signal?.removeEventListener('abort', onAbort);
      this.summary.totalTimeMs = performance.now() - this.startedAt;
      this.summary.bytesTransferred = this.connections.bytesWritten();
    }
  }

  private abort(): void {
    // Past READY the switch-over cannot be undone; an abort then changes nothing.
    if (this.switchover.handedOver) return;
    this.connections.interruptAll(new AbortedError(`migration aborted during ${this.phases.current}`, { cause: this.options.signal?.reason }));
  }

  /** Connects, then the pre-copy rounds, each followed by the stop rule's decision, then the switch-over. */
  private async migrate(): Promise<void> {
    const { options, sender, resumePolicy, workload, regions } = this;
    this.phases.enter('connecting');
    const { welcome, streams, held } = await this.connections.open(false);
    sender.useStreams(streams);
    this.summary.setupTimeMs = performance.now() - this.startedAt;

    this.phases.enter('precopy');
    const targetZeroed = (welcome.flags & TARGET_ZEROED) !== 0;
    for (const tracked of regions) tracked.tracker.start();
    // Round 1 sends every page (or a sparse file's data) in bulk; to a seeded target (held), and on a
    // resume, only what differs from what it holds.
    const firstRound = held ? await this.seededRound(held.hashes) :
      regions.map((tracked) => firstRoundByStream(tracked.region, sender.streamCount, targetZeroed));
    const bulk = !held;
    let { round, report } = await resumePolicy.sendRound(1, firstRound,
      (resumeRound, pages, resumed) => sender.sendRound(resumeRound, pages, { skipZero: bulk && !resumed && targetZeroed, bulk: bulk && !resumed }));
    let pendingHistory: number[] = [];
    for (;;) {
      const scanned = performance.now();
      const dirty = await Promise.all(regions.map((tracked) => tracked.tracker.scan()));
      const finalSyncMs = performance.now() - scanned;
      const pendingPages = dirty.reduce((n, pages) => n + pages.count, 0);
      const pendingBytes = dirty.reduce((n, pages, i) => n + pages.count * regions[i]!.region.pageSize, 0);
      const decision = decideNextRound({
        // Regions of several page sizes: their mean page size, weighted by the pending pages.
        round, pendingPages, pendingHistory, pageSize: pendingPages > 0 ? pendingBytes / pendingPages : regions[0]!.region.pageSize,
        bandwidthBytesPerSec: report.pageBandwidthBytesPerSec,
        maxDowntimeMs: options.maxDowntimeMs, switchoverMs: SWITCHOVER_ROUND_TRIPS * this.connections.roundTripMs,
        finalSyncMs,
        maxRounds: options.maxRounds, onStall: options.onStall,
        throttlePercent: workload.throttlePercent,
      });
      const dirtyRateBytesPerSec = (pendingBytes * 1000) / Math.max(report.durationMs, 1);
      Object.assign(this.summary, {
        dirtyRateBytesPerSec, bandwidthBytesPerSec: report.bandwidthBytesPerSec, expectedDowntimeMs: decision.expectedDowntimeMs,
      });
      this.emit('round', {
        ...report, pendingPages, expectedDowntimeMs: decision.expectedDowntimeMs, dirtyRateBytesPerSec,
        throttlePercent: workload.throttlePercent,
      });
      if (decision.action === 'stop-and-copy') {
        this.summary.stopReason = decision.reason;
        break;
      }
      if (decision.action === 'fail') {
        throw new ConvergenceError(
          `the dirty set stopped shrinking (${pendingPages} pages pending after round ${round}, expected downtime ` +
          `${decision.expectedDowntimeMs.toFixed(0)} ms against a budget of ${options.maxDowntimeMs} ms); gave up as asked, ` +
          'the workload keeps running here');
      }
      if (decision.action === 'throttle') {
        this.summary.throttlePercent = decision.throttlePercent;
        await workload.throttle(decision.throttlePercent);
        // Convergence is judged afresh from here: the rounds before ran at the old speed.
        pendingHistory = [pendingPages];
      } else {
        pendingHistory.push(pendingPages);
      }
      ({ round, report } = await resumePolicy.sendRound(round + 1, byStreamPerRegion(dirty, sender.streamCount),
        (resumeRound, pages) => sender.sendRound(resumeRound, pages)));
    }
    await this.switchover.stopAndCopy(round + 1);
  }

  /** Round 1 to a seeded target: the pages whose hashes differ from those it holds (its HELD). */
  private async seededRound(held: BigUint64Array[]): Promise<PageList[][]> {
    const pages: PageList[][] = [];
    for (const { index, region, sentHashes } of this.regions) {
      sentHashes.set(held[index]!);
      const changed = (await new HashTracker(region, sentHashes).scan()).take();
      this.summary.seedSavedBytes += (region.pageCount - changed.count) * region.pageSize;
      pages.push(byStream(changed, this.sender.streamCount));
    }
    return pages;
  }
}

// Live snapshots, with the migration's own machinery pointed at a file instead of a socket: the same
// dirty tracking, pre-copy rounds and stop rule while the workload runs, then one short pause for the
// last dirty pages and the device state, after which the workload resumes at once; the file is then
// finished and made durable outside the pause. A Snapshotter keeps tracking between its snapshots, so
// an incremental snapshot on the last one it took needs no pass over the region: its dirty pages are
// known. On any failure the workload goes on as it was and no file appears under the snapshot's name.
import { EventEmitter } from 'node:events';
import { availableParallelism } from 'node:os';
import { performance } from 'node:perf_hooks';
import { resolve } from 'node:path';
import { AbortedError, ConvergenceError, InvalidArgumentError, asPagewireError } from '../errors.js';
import { formatDigest, migrationDigest, zeroPageHash } from '../codec/page-hashes.js';
import { HashTracker, pageListOf, type PageList } from '../memory/dirty-tracker.js';
import { decideNextRound, type StopReason } from '../migration/convergence.js';
import { checkSourceHooks, regionSettings } from '../migration/source-options.js';
import type { MigrationSourceOptions } from '../migration/source.js';
import { checkMs, checkNumber, checkObject, checkOneOf, checkSignal, definedEntries } from '../option-checks.js';
import { STALL_POLICIES } from '../migration/convergence.js';
import { firstRoundByStream } from '../source/stripe-planner.js';
import { trackRegions, type TrackedRegion } from '../source/tracked-regions.js';
import { WorkloadControl } from '../source/workload-control.js';
import { SnapshotChain } from './snapshot-file.js';
import { SnapshotFileWriter, relativeParent } from './snapshot-file-writer.js';
import { MAX_PARENT_PATH_BYTES, formatSnapshotId } from './snapshot-format.js';

/**
 * The regions and their tracking, the workload's hooks (deviceState is saved in the snapshot), and the
 * stop rule's settings, as a migration's source takes them; there is no bandwidth cap, no endpoint.
 */
export type SnapshotterOptions = Pick<MigrationSourceOptions, 'region' | 'dirtyBitmap' | 'dirtyTracker' | 'extraRegions' | 'hooks' |
  'maxDowntimeMs' | 'maxRounds' | 'onStall' | 'hookTimeoutMs' | 'signal'>;

export interface TakeOptions {
  /**
   * Take an incremental snapshot on this one: only pages changed since it are written. When it is the
   * last snapshot this Snapshotter took, the changed pages come from the dirty tracking; otherwise from
   * comparing every page's hash with the base's table. The base's chain must be whole.
   */
  base?: string;
}

/** A pre-copy round's figures. */
export interface SnapshotRound {
  round: number;
  pagesWritten: number;
  durationMs: number;
  /** Pages dirtied meanwhile, still to write. */
  pendingPages: number;
  expectedDowntimeMs: number;
}

export interface SnapshotSummary {
  status: 'completed';
  path: string;
  /** The snapshot's id, and its parent's for an incremental one. */
  id: string;
  parentId?: string;
  /** How an incremental snapshot found its changed pages. */
  changesFoundBy?: 'tracking' | 'hashes';
  /** The region digest at the pause point (several regions: the digest of their digests), as migrations report it. */
  digest: string;
  /** The trailer's SHA-256 over the file. */
  fileDigest: string;
  totalTimeMs: number;
  /** The pause: from the pause hook called to the resume hook settled. */
  downtimeMs: number;
  rounds: number;
  stopReason: StopReason;
  pageSize: number;
  pagesTotal: number;
  /** Page writes, all rounds (a page written in two rounds counts twice); zero pages are holes, not writes. */
  pagesWritten: number;
  zeroPages: number;
  deviceStateBytes: number;
  fileSize: number;
  /** Bytes of the file actually allocated. */
  fileBytes: number;
}

export interface SnapshotterEvents {
  round: [SnapshotRound];
}

/** Pages per writePagesToFile call: 8 MiB of 4 KiB pages. */
const WRITE_BATCH_PAGES = 2048;
/** Calls in flight at once: one per core, within libuv's pool. */
const WRITES_IN_FLIGHT = Math.max(1, Math.min(availableParallelism(), Number(process.env.UV_THREADPOOL_SIZE) || 4));

export class Snapshotter extends EventEmitter<SnapshotterEvents> {
  private readonly regions: TrackedRegion[];
  private readonly settings: Required<Omit<SnapshotterOptions, 'dirtyBitmap' | 'dirtyTracker' | 'signal' | 'extraRegions'>> & Pick<SnapshotterOptions, 'signal'>;
  private readonly workload: WorkloadControl;
  /** The last snapshot taken, while the trackers and tables still describe the state it holds. */
  private last: { id: Buffer; digest: Buffer } | undefined;
  private busy = false;

  constructor(options: SnapshotterOptions) {
    super();
    checkObject('options', options);
    const { hooks } = options;
    checkSourceHooks(hooks);
    this.settings = {
      maxDowntimeMs: 300, maxRounds: 30, hookTimeoutMs: 30_000, onStall: hooks.throttle ? 'throttle' : 'stop',
      ...definedEntries(options),
    } as Snapshotter['settings'];
    checkMs('options.maxDowntimeMs', this.settings.maxDowntimeMs, true);
    checkNumber('options.maxRounds', this.settings.maxRounds, { whole: true });
    checkMs('options.hookTimeoutMs', this.settings.hookTimeoutMs);
    checkOneOf('options.onStall', this.settings.onStall, STALL_POLICIES);
    if (this.settings.onStall === 'throttle' && !hooks.throttle) throw new InvalidArgumentError("options.onStall 'throttle' needs options.hooks.throttle");
    checkSignal('options.signal', options.signal);
    // Each region's sentHashes is its snapshot table: the hashes of the pages as last written.
    this.regions = trackRegions({ regions: regionSettings({ ...options, extraRegions: options.extraRegions ?? [] }, undefined) });
    this.workload = new WorkloadControl(this.settings, 'snapshot');
  }

  /** Takes one snapshot into `out` (a new file; an existing one is replaced only once this one is whole). */
  async take(out: string, options: TakeOptions = {}): Promise<SnapshotSummary> {
    if (this.busy) throw new InvalidArgumentError('a Snapshotter takes one snapshot at a time');
    this.busy = true;
    const { signal } = this.settings;
    const startedAt = performance.now();
    let writer: SnapshotFileWriter | undefined;
    const last = this.last;
    // Until this snapshot is committed, the tables and trackers no longer match the last one.
    this.last = undefined;
    try {
      if (signal?.aborted) throw new AbortedError('snapshot aborted before it started', { cause: signal.reason });
      const { pages, parent, foundBy } = await this.firstRound(resolve(out), options.base, last);
      writer = new SnapshotFileWriter(resolve(out), this.regions.map(({ region }) => region), this.regions.map((r) => r.sentHashes), parent);
      const summary = await this.rounds(writer, pages);
      const written = await writer.commit();
      this.last = { id: written.id, digest: written.digest };
      return {
        ...summary, status: 'completed', path: written.path, id: formatSnapshotId(written.id),
        ...(parent ? { parentId: formatSnapshotId(parent.id), changesFoundBy: foundBy } : {}),
        digest: formatDigest(migrationDigest(written.regionDigests)), fileDigest: written.digest.toString('hex'),
        totalTimeMs: performance.now() - startedAt, fileSize: written.fileSize, fileBytes: written.fileBytes,
      };
    } catch (error) {
      const failure = await this.workload.restore(asPagewireError(error));
      writer?.discard();
      throw failure;
    } finally {
      this.busy = false;
    }
  }

  /** What round 1 writes: every page, or for an incremental snapshot the pages changed since its base. */
  private async firstRound(out: string, base: string | undefined, last: { id: Buffer; digest: Buffer } | undefined):
    Promise<{ pages: PageList[]; parent?: { path: string; id: Buffer; digest: Buffer }; foundBy?: 'tracking' | 'hashes' }> {
    const { regions } = this;
    if (base === undefined) {
      for (const { tracker, sentHashes, region } of regions) {
        tracker.start();
        sentHashes.fill(zeroPageHash(region.pageSize));
      }
      // The new file is all holes, as a zeroed target: of a sparse region only its data need be read.
      return { pages: regions.map(({ region }) => firstRoundByStream(region, 1, true)[0]!) };
    }
    const chain = SnapshotChain.open(base);
    try {
      const overwritten = chain.layers.find((layer) => layer.path === out);
      if (overwritten) throw new InvalidArgumentError(`the snapshot would replace ${out}, a file of its own base's chain: choose another name`);
      const top = chain.top;
      const shapes = top.header.regions;
      if (shapes.length !== regions.length || shapes.some((s, i) => s.pageSize !== regions[i]!.region.pageSize || s.byteLength !== regions[i]!.region.byteLength)) {
        throw new InvalidArgumentError(`the base ${base} holds other regions than this snapshot's (${shapes.map((s) => `${s.byteLength} bytes in pages of ${s.pageSize}`).join(', ')})`);
      }
      const parent = { path: top.path, id: top.header.id, digest: top.digest };
      if (Buffer.byteLength(relativeParent(out, top.path)) > MAX_PARENT_PATH_BYTES) {
        throw new InvalidArgumentError(`the base ${top.path} is too far from ${out}: a snapshot records its parent's path in at most ${MAX_PARENT_PATH_BYTES} bytes`);
      }
      if (last && last.id.equals(top.header.id) && last.digest.equals(top.digest)) {
        // Tracking went on since the base's pause: what it found is exactly what changed.
        const pages = await Promise.all(regions.map(async ({ tracker }) => (await tracker.scan()).take()));
        return { pages: pages.map(copyList), parent, foundBy: 'tracking' };
      }
      const pages: PageList[] = [];
      for (const [i, { tracker, sentHashes, region }] of regions.entries()) {
        // Tracking starts before the comparison: a page written during it is found by one or the other.
        tracker.start();
        sentHashes.set(top.hashes[i]!);
        pages.push((await new HashTracker(region, sentHashes).scan()).take());
      }
      return { pages, parent, foundBy: 'hashes' };
    } finally {
      chain.close();
    }
  }

  /** Round 1 and the pre-copy rounds while the workload runs, then the pause. */
  private async rounds(writer: SnapshotFileWriter, firstPages: PageList[]): Promise<Omit<SnapshotSummary, 'status' | 'path' | 'id' | 'digest' | 'fileDigest' | 'totalTimeMs' | 'fileSize' | 'fileBytes'>> {
    const { regions, settings, workload } = this;
    const counts = { written: 0, zero: 0 };
    let round = 1;
    let report = await this.writeRound(writer, firstPages, counts);
    let pendingHistory: number[] = [];
    let stopReason: StopReason;
    for (;;) {
      this.checkAborted();
      const scanned = performance.now();
      const dirty = await Promise.all(regions.map(({ tracker }) => tracker.scan()));
      const finalSyncMs = performance.now() - scanned;
      const pendingPages = dirty.reduce((n, d) => n + d.count, 0);
      const pendingBytes = dirty.reduce((n, d, i) => n + d.count * regions[i]!.region.pageSize, 0);
      const decision = decideNextRound({
        round, pendingPages, pendingHistory, pageSize: pendingPages > 0 ? pendingBytes / pendingPages : regions[0]!.region.pageSize,
        bandwidthBytesPerSec: report.bytesPerSec, maxDowntimeMs: settings.maxDowntimeMs, switchoverMs: 0, finalSyncMs,
        maxRounds: settings.maxRounds, onStall: settings.onStall, throttlePercent: workload.throttlePercent,
      });
      this.emit('round', { round, pagesWritten: report.pages, durationMs: report.durationMs, pendingPages, expectedDowntimeMs: decision.expectedDowntimeMs });
      if (decision.action === 'stop-and-copy') {
        stopReason = decision.reason;
        break;
      }
      if (decision.action === 'fail') {
        throw new ConvergenceError(`the dirty set stopped shrinking (${pendingPages} pages pending after round ${round}); gave up as asked, ` +
          'the workload keeps running');
      }
      if (decision.action === 'throttle') {
        await workload.throttle(decision.throttlePercent);
        pendingHistory = [pendingPages];
      } else {
        pendingHistory.push(pendingPages);
      }
      round += 1;
      report = await this.writeRound(writer, dirty.map((d) => copyList(d.take())), counts);
    }
    // The pause: the last dirty pages and the device state, then the workload goes on.
    const pausedAt = performance.now();
    await workload.pause();
    const deviceState = workload.collectDeviceState();
    const last = await Promise.all(regions.map(({ tracker }) => tracker.scan({ paused: true })));
    await this.writeRound(writer, last.map((d) => copyList(d.take())), counts);
    const deviceStateBytes = await deviceState.drainTo((chunk) => writer.appendDeviceState(chunk));
    await workload.resume();
    const downtimeMs = performance.now() - pausedAt;
    if (workload.throttlePercent > 0) await workload.throttle(0);
    return {
      downtimeMs, rounds: round + 1, stopReason, pageSize: regions[0]!.region.pageSize,
      pagesTotal: regions.reduce((n, r) => n + r.region.pageCount, 0), pagesWritten: counts.written, zeroPages: counts.zero, deviceStateBytes,
    };
  }

  /** Writes each region's pages, several batches in flight at once. */
  private async writeRound(writer: SnapshotFileWriter, pages: PageList[], counts: { written: number; zero: number }):
    Promise<{ pages: number; durationMs: number; bytesPerSec: number }> {
    const began = performance.now();
    const jobs: Array<() => Promise<void>> = [];
    let bytes = 0;
    let total = 0;
    for (const [index, list] of pages.entries()) {
      const { region } = this.regions[index]!;
      bytes += list.count * region.pageSize;
      total += list.count;
      for (const batch of list.batches(WRITE_BATCH_PAGES)) {
        const own = batch.slice();
        jobs.push(async () => {
          const done = await writer.writePages(index, region, own);
          counts.written += done.written;
          counts.zero += done.zero;
        });
      }
    }
    let next = 0;
    let failure: unknown;
    const lane = async () => {
      // After a failure the other lanes stop taking jobs, and every call in flight settles before this returns.
      while (next < jobs.length && failure === undefined) {
        try { await jobs[next++]!(); } catch (error) { failure ??= error; }
      }
    };
    await Promise.all(Array.from({ length: Math.min(WRITES_IN_FLIGHT, jobs.length) }, lane));
    if (failure !== undefined) throw failure;
    const durationMs = performance.now() - began;
    return { pages: total, durationMs, bytesPerSec: (bytes * 1000) / Math.max(durationMs, 0.001) };
  }

  private checkAborted(): void {
    const { signal } = this.settings;
    if (signal?.aborted) throw new AbortedError('snapshot aborted', { cause: signal.reason });
  }
}

/** A list that stays valid after its tracker's next scan (batches of a bitmap's list are reused). */
function copyList(list: PageList): PageList {
  const pages = new Uint32Array(list.count);
  let n = 0;
  for (const batch of list.batches(65_536)) {
    pages.set(batch, n);
    n += batch.length;
  }
  return pageListOf(pages.subarray(0, n));
}

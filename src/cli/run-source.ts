// Shared by `send` and `demo`: map an image, start the synthetic workload on it, migrate it, and
// report the region digest at the pause point, and its SHA-256 if asked (the workload stays paused after
// a hand-over).
import { asPagewireError, type PagewireError } from '../errors.js';
import { codecKind } from '../native/engine.js';
import { DirtyBitmap } from '../memory/dirty-bitmap.js';
import { regionSha256 } from '../memory/region-sha256.js';
import { MemoryRegion } from '../memory/region.js';
import type { Lz4Mode } from '../codec/lz4-policy.js';
import type { TlsCertificates } from '../transport/tls-certs.js';
import type { StallPolicy } from '../migration/convergence.js';
import type { SourceSummary } from '../migration/metrics.js';
import { MigrationSource } from '../migration/source.js';
import { SyntheticWorkload } from '../workload/synthetic-workload.js';
import type { WorkloadSpec } from '../workload/workload-spec.js';
import { roundMs, type ProgressLine } from './output.js';

export interface SourceRun {
  imagePath: string;
  /** Disk images moved with the image (regions 1..), each tracked by hashing: no writer marks their pages. */
  diskPaths?: string[];
  /** TCP, or a Unix domain socket. */
  endpoint: { host: string; port: number } | { path: string };
  workload?: WorkloadSpec;
  maxDowntimeMs?: number;
  maxBandwidthBytesPerSec?: number;
  maxRounds?: number;
  pageCacheBytes?: number;
  streams?: number;
  onStall?: StallPolicy;
  lz4?: Lz4Mode;
  tlsCertificates?: TlsCertificates;
  psk?: Uint8Array;
  tls?: boolean;
  /** Also hash the region with SHA-256 at the end (about 0.8 s per GiB). */
  sha256?: boolean;
  signal: AbortSignal;
  progress: ProgressLine;
}

export interface SourceOutcome {
  summary: SourceSummary;
  error?: PagewireError;
  /** SHA-256 of the image when the run ended (the pause point after a completed migration), if asked for. */
  sha256?: string;
  workloadWrites: number;
}

export async function runSource(run: SourceRun): Promise<SourceOutcome> {
  const region = MemoryRegion.mapFile(run.imagePath);
  const bitmap = new DirtyBitmap(region.pageCount);
  const disks: MemoryRegion[] = [];
  let workload: SyntheticWorkload | undefined;
  try {
    for (const path of run.diskPaths ?? []) disks.push(MemoryRegion.mapFile(path));
    if (run.workload) {
      // Without the addon the image is a copy in shared memory (written back at the end), not a mapping.
      const shared = region.sharedMemory;
      const memory = shared ? { buffer: shared } : { path: run.imagePath };
      workload = await SyntheticWorkload.start(memory, bitmap, region.pageSize, run.workload);
    }
    const source = new MigrationSource({
      region, dirtyBitmap: bitmap, extraRegions: disks.map((disk) => ({ region: disk })), ...run.endpoint, signal: run.signal,
      hooks: {
        pause: () => workload?.pause(), resume: () => workload?.resume(), throttle: (percent) => workload?.throttle(percent),
      },
      maxDowntimeMs: run.maxDowntimeMs, maxBandwidthBytesPerSec: run.maxBandwidthBytesPerSec, maxRounds: run.maxRounds,
      pageCacheBytes: run.pageCacheBytes, psk: run.psk, tls: run.tls, streams: run.streams, onStall: run.onStall,
      lz4: run.lz4, tlsCertificates: run.tlsCertificates,
    });
    let dirtyRate = 0;
    source.on('progress', (p) => run.progress.progress(p, dirtyRate));
    source.on('round', (r) => { dirtyRate = r.dirtyRateBytesPerSec; run.progress.round(r); });
    let error: PagewireError | undefined;
    try {
      await source.run();
    } catch (e) {
      error = asPagewireError(e);
    }
    run.progress.end();
    // After a hand-over the workload is paused; stopping it only ends the thread, it writes nothing more.
    await workload?.stop();
    const workloadWrites = workload?.writes ?? 0;
    workload = undefined;
    region.flush();
    const outcome: SourceOutcome = { summary: source.metrics, workloadWrites };
    if (run.sha256) outcome.sha256 = regionSha256(region);
    if (error) outcome.error = error;
    return outcome;
  } finally {
    await workload?.stop();
    region.close();
    for (const disk of disks) disk.close();
  }
}

/** The send JSON of the CLI contract. */
export function sourceJson(outcome: Pick<SourceOutcome, 'summary' | 'sha256' | 'workloadWrites'>) {
  const s = outcome.summary;
  const ms = roundMs;
  return {
    status: s.status, ...(s.error ? { error: s.error, errorCode: s.errorCode } : {}),
    totalTimeMs: ms(s.totalTimeMs), setupTimeMs: ms(s.setupTimeMs), downtimeMs: ms(s.downtimeMs),
    downtimeBreakdownMs: {
      pause: ms(s.downtime.pauseMs), finalSync: ms(s.downtime.finalSyncMs), transfer: ms(s.downtime.transferMs),
      verify: ms(s.downtime.verifyMs), prepare: ms(s.downtime.prepareMs), handshake: ms(s.downtime.handshakeMs),
    },
    rounds: s.rounds, stopReason: s.stopReason, streams: s.streams, regions: s.regions, resumes: s.resumes, resumeSavedBytes: s.resumeSavedBytes, seedSavedBytes: s.seedSavedBytes, throttlePercent: s.throttlePercent,
    dirtyRateMBps: mbpsNumber(s.dirtyRateBytesPerSec), bandwidthMBps: mbpsNumber(s.bandwidthBytesPerSec),
    expectedDowntimeMs: Number.isFinite(s.expectedDowntimeMs) ? ms(s.expectedDowntimeMs) : null, pageSize: s.pageSize, pagesTotal: s.pagesTotal,
    pagesTransferred: s.pagesTransferred, zeroPages: s.zeroPages, deltaPages: s.deltaPages, lz4Pages: s.lz4Pages,
    rawPages: s.rawPages, dupPages: s.dupPages, bytesTransferred: s.bytesTransferred,
    deviceStateBytes: s.deviceStateBytes, deviceStateMs: ms(s.deviceStateMs), workloadWrites: outcome.workloadWrites, migrationId: s.migrationId,
    codec: codecKind(), digest: s.regionDigest || null, ...(outcome.sha256 === undefined ? {} : { sha256: outcome.sha256 }),
  };
}

function mbpsNumber(bytesPerSec: number): number {
  return Math.round(bytesPerSec / 1e5) / 10;
}

// What the migrate bench records per repetition, and the medians per scenario it prints and charts.
import type { Lz4Mode } from '../src/codec/lz4-policy.js';
import type { RoundReport } from '../src/migration/metrics.js';
import type { WorkloadSpec } from '../src/workload/workload-spec.js';
import type { SendJson } from './cli-run.js';
import type { TcpCopy, WriteFloor } from './floors.js';
import type { RssPeak } from './proc-memory.js';
import { HOT, type ImageKind, type Scenario, type Target } from './scenarios.js';
import { median, medianIndex, round } from './stats.js';

export interface RoundDetail {
  round: number;
  pagesSent: number;
  bytesSent?: number;
  durationMs: number;
  bandwidthMBps?: number;
  pageBandwidthMBps?: number;
  dirtyRateMBps?: number;
  pendingPages?: number;
  expectedDowntimeMs?: number;
  throttlePercent: number;
  elapsedMs?: number;
  /** The synthetic last entry: the stop-and-copy round, from the summary (duration = downtime's transfer). */
  stopAndCopy?: boolean;
}

export type QemuRecord =
  | { status: 'completed'; config: 'best'; version: string; totalTimeMs: number; downtimeMs: number; setupTimeMs: number;
    transferredBytes: number; wirePercent: number; targetRamPath: string; raw: unknown }
  | { status: 'skipped'; reason: string }
  | { status: 'failed'; error: string };

export interface RepRecord {
  scenario: string;
  rep: number;
  image: ImageKind;
  target: Target;
  floors: {
    /** The image's bytes into a new file on the same storage as --out (null for the memory target). */
    write: WriteFloor | null;
    tcpCopy: TcpCopy;
  };
  migration: {
    /** send --json as the CLI printed it, or as sourceJson builds it on the library path. */
    send: SendJson;
    /** receive --json as the CLI printed it, or the target's summary on the library path. */
    receive: Record<string, unknown>;
    /** CLI path: each process from spawn to exit, as the bench timed it (null on the library path). */
    processes: {
      sendWallMs: number; receiveWallMs: number; receiveListeningMs: number; sendArgv: string[]; receiveArgv: string[];
    } | null;
    requested: { streams: number | null; lz4: Lz4Mode | null; maxDowntimeMs: number | null };
    wirePercent: number;
    mbPerSec: number;
    workload: WorkloadSpec | null;
    roundsDetail: RoundDetail[];
    /** What the bench checked after the run. */
    verified: string;
  };
  /** QEMU 'best' on the same image, RAM on the same storage (cold CLI scenarios; null otherwise). */
  qemu: QemuRecord | null;
  /** pagewire's total (send's totalTimeMs) over each baseline's total, this repetition. */
  ratios: { vsWriteFloor: number | null; vsTcpCopy: number; vsQemu: number | null };
  rss: { source: RssPeak; target: RssPeak; boundBytes: number; withinBound: boolean };
  /** CPU used by other processes during the floors and the migration, % of the whole machine (null off Linux). */
  otherCpuPercent: number | null;
}

export interface ScenarioSummary {
  scenario: string;
  image: ImageKind;
  target: Target;
  workload: { rateBytesPerSec: number; hot: number } | null;
  maxDowntimeMs: number | null;
  medians: {
    /** send's totalTimeMs. */
    totalTimeMs: number;
    /** CLI path: process wall times, spawn to exit (null on the library path). */
    sendWallMs: number | null;
    receiveWallMs: number | null;
    receiveListeningMs: number | null;
    downtimeMs: number;
    downtimeSplitMs: SendJson['downtimeBreakdownMs'];
    rounds: number;
    /** The highest auto-converge throttle of any repetition. */
    maxThrottlePercent: number;
    mbPerSec: number;
    wirePercent: number;
    writeFloorMs: number | null;
    tcpCopyMs: number;
    qemuMs: number | null;
    qemuDowntimeMs: number | null;
    /** Median pagewire total / median baseline total, and the median of the per-repetition ratios. */
    vsWriteFloor: number | null;
    vsWriteFloorOfPairs: number | null;
    vsTcpCopy: number;
    vsTcpCopyOfPairs: number;
    vsQemu: number | null;
    vsQemuOfPairs: number | null;
    /** The highest peak RSS of any repetition, each end. */
    maxRssSourceBytes: number;
    maxRssTargetBytes: number;
    rssBoundBytes: number;
    rssWithinBound: boolean;
    maxOtherCpuPercent: number | null;
  };
  /** The repetition the chart shows: the median by total time. */
  medianRep: number;
}

/** The pre-copy rounds as reported, plus the stop-and-copy round from the send report. */
export function roundsDetail(rounds: RoundReport[], send: SendJson): RoundDetail[] {
  const precopy = rounds.map((r): RoundDetail => ({
    round: r.round, pagesSent: r.pagesSent, bytesSent: r.bytesSent, durationMs: round(r.durationMs, 2),
    bandwidthMBps: round(r.bandwidthBytesPerSec / 1e6), pageBandwidthMBps: round(r.pageBandwidthBytesPerSec / 1e6),
    dirtyRateMBps: round(r.dirtyRateBytesPerSec / 1e6), pendingPages: r.pendingPages,
    expectedDowntimeMs: Number.isFinite(r.expectedDowntimeMs) ? round(r.expectedDowntimeMs, 2) : -1,
    throttlePercent: r.throttlePercent, elapsedMs: round(r.elapsedMs, 1),
  }));
  const precopyPages = rounds.reduce((n, r) => n + r.pagesSent, 0);
  return [...precopy, {
    round: Math.max(send.rounds, rounds.length + 1), pagesSent: send.pagesTransferred - precopyPages,
    durationMs: send.downtimeBreakdownMs.transfer, throttlePercent: send.throttlePercent, stopAndCopy: true,
  }];
}

/** The medians of one scenario's repetitions. */
export function summarize(scenario: Scenario, runs: RepRecord[], size: number, rssBoundBytes: number): ScenarioSummary {
  const mine = runs.filter((r) => r.scenario === scenario.name);
  const med = (pick: (r: RepRecord) => number, digits = 2) => round(median(mine.map(pick)), digits);
  /** The median of the values present, or null when no repetition has one. */
  const medOrNull = (pick: (r: RepRecord) => number | null | undefined, digits = 2) => {
    const values = mine.flatMap((r) => { const v = pick(r); return v === null || v === undefined ? [] : [v]; });
    return values.length > 0 ? round(median(values), digits) : null;
  };
  const totalTimeMs = median(mine.map((r) => r.migration.send.totalTimeMs));
  const writeFloorMs = medOrNull((r) => r.floors.write?.totalMs);
  const tcpCopyMs = median(mine.map((r) => r.floors.tcpCopy.totalMs));
  const qemuMs = medOrNull((r) => (r.qemu?.status === 'completed' ? r.qemu.totalTimeMs : null), 1);
  const over = (baseline: number | null) => (baseline === null ? null : round(totalTimeMs / baseline, 3));
  const split = (part: keyof SendJson['downtimeBreakdownMs']) => med((r) => r.migration.send.downtimeBreakdownMs[part], 1);
  const maxRssSourceBytes = Math.max(...mine.map((r) => r.rss.source.peakCountedBytes));
  const maxRssTargetBytes = Math.max(...mine.map((r) => r.rss.target.peakCountedBytes));
  return {
    scenario: scenario.name, image: scenario.image, target: scenario.target,
    workload: scenario.rateBytesPerSec > 0 ? { rateBytesPerSec: scenario.rateBytesPerSec, hot: HOT } : null,
    maxDowntimeMs: scenario.maxDowntimeMs ?? null,
    medians: {
      totalTimeMs: round(totalTimeMs, 2),
      sendWallMs: medOrNull((r) => r.migration.processes?.sendWallMs, 1),
      receiveWallMs: medOrNull((r) => r.migration.processes?.receiveWallMs, 1),
      receiveListeningMs: medOrNull((r) => r.migration.processes?.receiveListeningMs, 1),
      downtimeMs: med((r) => r.migration.send.downtimeMs, 1),
      downtimeSplitMs: {
        pause: split('pause'), finalSync: split('finalSync'), transfer: split('transfer'), verify: split('verify'),
        prepare: split('prepare'), handshake: split('handshake'),
      },
      rounds: median(mine.map((r) => r.migration.send.rounds)),
      maxThrottlePercent: Math.max(...mine.flatMap((r) => [r.migration.send.throttlePercent, ...r.migration.roundsDetail.map((d) => d.throttlePercent)])),
      mbPerSec: round((size / 1e6) / (totalTimeMs / 1000)), wirePercent: med((r) => r.migration.wirePercent),
      writeFloorMs, tcpCopyMs: round(tcpCopyMs, 2), qemuMs,
      qemuDowntimeMs: medOrNull((r) => (r.qemu?.status === 'completed' ? r.qemu.downtimeMs : null), 1),
      vsWriteFloor: over(writeFloorMs), vsWriteFloorOfPairs: medOrNull((r) => r.ratios.vsWriteFloor, 3),
      vsTcpCopy: round(totalTimeMs / tcpCopyMs, 3), vsTcpCopyOfPairs: med((r) => r.ratios.vsTcpCopy, 3),
      vsQemu: over(qemuMs), vsQemuOfPairs: medOrNull((r) => r.ratios.vsQemu, 3),
      maxRssSourceBytes, maxRssTargetBytes, rssBoundBytes,
      rssWithinBound: maxRssSourceBytes <= rssBoundBytes && maxRssTargetBytes <= rssBoundBytes,
      maxOtherCpuPercent: mine.some((r) => r.otherCpuPercent !== null) ? Math.max(...mine.map((r) => r.otherCpuPercent ?? 0)) : null,
    },
    medianRep: mine[medianIndex(mine.map((r) => r.migration.send.totalTimeMs))]!.rep,
  };
}

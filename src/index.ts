// pagewire's public API: regions, dirty tracking, the two orchestrators of a migration, replication
// (primary, standby, fencing), snapshots (live, incremental, restored eagerly or lazily, cloned), and the typed errors.
export * from './errors.js';
export { MemoryRegion, DEFAULT_PAGE_SIZE, type RegionBacking, type WasmMemory } from './memory/region.js';
export { DirtyBitmap, DirtyPages } from './memory/dirty-bitmap.js';
export { BitmapTracker, HashTracker, pageListOf, type DirtyScan, type DirtyTracker, type PageList, type ScanContext } from './memory/dirty-tracker.js';
export { SoftDirtyTracker, mappingAddress, softDirtyAvailable } from './memory/soft-dirty-tracker.js';
export {
  decideNextRound, expectedDowntimeMs, nextThrottlePercent, stalledRounds, STALL_POLICIES, type ConvergenceDecision,
  type ConvergenceInput, type StallPolicy, type StopReason,
} from './migration/convergence.js';
export {
  MigrationSource, type MigrationSourceOptions, type SourceEvents, type SourceHooks, type SourcePhase, type SourceRegion,
} from './migration/source.js';
export {
  MigrationTarget, type MigrationTargetOptions, type PreparedHandover, type TargetEvents, type TargetHooks, type TargetPhase, type TargetRoundEvent,
  type TargetSummary,
} from './migration/target.js';
export type { Hello, RegionShape } from './wire/messages.js';
export { rollForward, type ImageRename } from './target/commit-manifest.js';
export {
  FileTargetImage, MemoryTargetImage, type FileTargetImageOptions, type MemoryTargetImageOptions, type TargetImage, type RegionOffer,
} from './target/target-image.js';
export type { PageStore } from './codec/page-store.js';
export type { PreparedRegion } from './target/region-images.js';
export { ApplyStatus, type ApplyResult, type NativeMapping, type NativeRegion } from './native/binding.js';
export { StoreTargetImage } from './target/store-target-image.js';
export type { AllocateTarget, RegionAllocation, VerifiedPageStore } from './target/verified-page-store.js';
export type { SourceSummary, RoundProgress, RoundReport, DowntimeBreakdown } from './migration/metrics.js';
export { formatRoundLine } from './migration/metrics.js';
export { regionSha256 } from './memory/region-sha256.js';
export { SyntheticWorkload, type WorkloadMemory } from './workload/synthetic-workload.js';
export { parseWorkloadSpec, type WorkloadSpec } from './workload/workload-spec.js';
export { mixedImage, writeMixedImage, type MixedImageOptions } from './workload/mixed-image.js';
export {
  PageBatchEncoder, DEFAULT_PAGE_CACHE_BYTES, type EncodedBatch, type EncodingCounts, type PageBatchEncoderOptions,
} from './codec/page-batch-encoder.js';
export { PageBatchDecoder } from './codec/page-batch-decoder.js';
export { LZ4_MODES, type Lz4Mode } from './codec/lz4-policy.js';
export { codecKind } from './native/engine.js';
export { readTlsFiles, type TlsCertificates } from './transport/tls-certs.js';
export type { EndpointOptions } from './transport/connect.js';
export { QemuSource } from './qemu/qemu-source.js';
export { QemuTarget } from './qemu/qemu-target.js';
export { QmpClient, QmpError, type QmpEvent } from './qemu/qmp-client.js';
export { EtcdClient, type EtcdKeyValue } from './coordinator/etcd-client.js';
export {
  ReplicationSource, MIN_EPOCH_MS, type EpochReport, type ReplicationEvents, type ReplicationHooks, type ReplicationSourceOptions,
  type ReplicationSummary,
} from './replication/replication-source.js';
export {
  Standby, type Activation, type ActivationReport, type StandbyEvents, type StandbyHooks, type StandbyOptions,
} from './replication/standby.js';
export { PrimaryLease, DEFAULT_LEASE_TTL_SECONDS, ownerKey, type OwnerRecord } from './replication/primary-lease.js';
export { StandbyClaim, type TakeOver } from './replication/standby-claim.js';
export { nextEpoch, MAX_EPOCH_STRETCH, type EpochDecision, type EpochTiming } from './replication/epoch-policy.js';
export {
  Snapshotter, type SnapshotterOptions, type SnapshotRound, type SnapshotSummary, type SnapshotterEvents, type TakeOptions,
} from './snapshot/snapshotter.js';
export { openSnapshot, type OpenSnapshotOptions, type RestoredSnapshot } from './snapshot/lazy-restore.js';
export { SnapshotChain, SnapshotFile, MAX_CHAIN_LENGTH } from './snapshot/snapshot-file.js';
export { restoreChain, chainSha256, verifyFile, type RestoredRegion } from './snapshot/snapshot-restore.js';
export { cloneSnapshot, type ClonedSnapshot } from './snapshot/snapshot-clone.js';
export type { SnapshotHeader, RegionLayout } from './snapshot/snapshot-format.js';

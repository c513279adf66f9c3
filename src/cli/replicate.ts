// `pagewire replicate`: the primary. Maps --image, runs the synthetic writer on it if asked, and keeps
// a standby a few epochs behind, printing one JSON line per committed epoch. --released appends, after
// each commit, the write counter captured in that epoch: the output a real workload would release.
import { appendFileSync, closeSync, openSync } from 'node:fs';
import { resolve } from 'node:path';
import { asPagewireError, type PagewireError } from '../errors.js';
import { DirtyBitmap } from '../memory/dirty-bitmap.js';
import { MemoryRegion } from '../memory/region.js';
import { PrimaryLease } from '../replication/primary-lease.js';
import { ReplicationSource, type EpochReport } from '../replication/replication-source.js';
import { Standby } from '../replication/standby.js';
import { SyntheticWorkload } from '../workload/synthetic-workload.js';
import { parseWorkloadSpec } from '../workload/workload-spec.js';
import { optionalString, parseFlags, parseHostPort, parsePositiveNumber, requireString } from './args.js';
import { COORDINATOR_FLAGS, readCoordinatorFlags } from './coordinator-flags.js';
import { printJson, roundMs } from './output.js';
import { SECURITY_FLAGS, readSecurityFlags } from './security-flags.js';
import { abortOnSignals } from './signals.js';

export const REPLICATE_USAGE = 'pagewire replicate --connect HOST:PORT --image FILE [--epoch-ms MS] [--workload rate=100MB/s,hot=0.05,seed=1] ' +
  '[--released FILE] [--release-unprotected] [--failover-timeout MS] [--etcd URL --name N] [--psk-file F [--tls]] [--json]';

export const NO_COORDINATOR_WARNING = 'without --etcd, the two ends cannot tell a dead peer from a cut link: if the link is cut, the ' +
  'standby activates while the primary runs on. The primary releases no output its standby has not committed, so no client ' +
  'sees a state the standby lacks; give both ends --etcd URL --name N to make sure only one copy ever runs.';

/** The write counter the synthetic writer keeps in the region's first 8 bytes. */
export function writeCounter(region: MemoryRegion): number {
  const bytes = region.view(0, 8);
  const view = new DataView(bytes.buffer, bytes.byteOffset, 8);
  return view.getUint32(0, true) + view.getUint32(4, true) * 2 ** 32;
}

export async function replicateCommand(argv: string[]): Promise<number> {
  const flags = parseFlags(argv, {
    connect: 'string', image: 'string', 'epoch-ms': 'string', workload: 'string', released: 'string', 'failover-timeout': 'string',
    'release-unprotected': 'boolean', json: 'boolean', ...COORDINATOR_FLAGS, ...SECURITY_FLAGS,
  });
  const endpoint = parseHostPort(requireString(flags, 'connect'), 'connect');
  const imagePath = resolve(requireString(flags, 'image'));
  const json = flags.has('json');
  const security = readSecurityFlags(flags);
  const coordinator = readCoordinatorFlags(flags);
  const epochText = optionalString(flags, 'epoch-ms');
  const failoverText = optionalString(flags, 'failover-timeout');
  const workloadText = optionalString(flags, 'workload');
  const spec = workloadText ? parseWorkloadSpec(workloadText) : undefined;
  const releasedPath = optionalString(flags, 'released');
  if (!coordinator) process.stderr.write(`pagewire replicate: ${NO_COORDINATOR_WARNING}\n`);

  const region = MemoryRegion.mapFile(imagePath);
  const bitmap = spec ? new DirtyBitmap(region.pageCount) : undefined;
  let workload: SyntheticWorkload | undefined;
  let releasedFd: number | undefined;
  let lease: PrimaryLease | undefined;
  const signals = abortOnSignals();
  try {
    try {
      lease = coordinator ? await PrimaryLease.acquire(coordinator.client, coordinator.name, Standby.copyName(imagePath)) : undefined;
    } catch (error) {
      const failure = asPagewireError(error);
      process.stderr.write(`pagewire replicate: ${failure.message} (${failure.code})\n`);
      if (json) printJson({ status: failure.code === 'PW_ERR_FENCED' ? 'fenced' : 'failed', error: failure.message, errorCode: failure.code });
      return 1;
    }
    if (lease) process.stderr.write(`holding ${coordinator!.name} in etcd with fencing token ${lease.token}\n`);
    if (releasedPath) releasedFd = openSync(resolve(releasedPath), 'a');
    if (spec) {
      const shared = region.sharedMemory;
      workload = await SyntheticWorkload.start(shared ? { buffer: shared } : { path: imagePath }, bitmap!, region.pageSize, spec);
    }
    // The counter read while the workload is paused for a capture: what that epoch's commit releases.
    let captured = 0;
    const source = new ReplicationSource({
      region, ...(bitmap ? { dirtyBitmap: bitmap } : {}), ...endpoint, ...security, signal: signals.signal,
      ...(epochText ? { epochMs: parsePositiveNumber(epochText, 'epoch-ms') } : {}),
      ...(failoverText ? { failoverTimeoutMs: parsePositiveNumber(failoverText, 'failover-timeout') } : {}),
      ...(lease ? { lease } : {}),
      releaseWhenUnprotected: flags.has('release-unprotected'),
      hooks: {
        pause: async () => {
          await workload?.pause();
          captured = writeCounter(region);
        },
        resume: () => workload?.resume(),
        onCommitted: (report: EpochReport) => {
          if (releasedFd !== undefined) appendFileSync(releasedFd, `${captured}\n`);
          if (json) printJson(epochJson(report, spec ? captured : undefined));
        },
      },
    });
    source.on('protected', ({ syncedPages, syncMs }) => {
      if (json) printJson({ event: 'protected', syncedPages, syncMs: roundMs(syncMs) });
      else process.stderr.write(`protected: the standby holds the workload (${syncedPages} pages synced in ${roundMs(syncMs)} ms)\n`);
    });
    source.on('unprotected', (error) => {
      if (json) printJson({ event: 'unprotected', error: error.message, errorCode: error.code });
      else process.stderr.write(`unprotected: ${error.message} (${error.code}); the workload runs on` +
        `${flags.has('release-unprotected') ? ', its output released unprotected (--release-unprotected)' : ', no output is released'}\n`);
    });
    let lastLine = 0;
    source.on('epoch', (report) => {
      if (json || report.epoch - lastLine < 40) return;
      lastLine = report.epoch;
      process.stderr.write(`epoch ${report.epoch}: ${report.pages} pages, pause ${roundMs(report.pauseMs)} ms, commit ${roundMs(report.commitMs)} ms, digest ${report.digest}\n`);
    });
    let failure: PagewireError | undefined;
    let summary;
    try {
      summary = await source.run();
    } catch (error) {
      failure = asPagewireError(error);
    }
    await workload?.stop();
    workload = undefined;
    if (failure) {
      process.stderr.write(`pagewire replicate: ${failure.message} (${failure.code})\n`);
      if (json) printJson({ status: failure.code === 'PW_ERR_FENCED' ? 'fenced' : 'failed', error: failure.message, errorCode: failure.code });
      return 1;
    }
    if (json) printJson({ status: 'stopped', committedEpoch: summary!.committedEpoch, epochs: summary!.epochs, syncs: summary!.syncs });
    return 0;
  } finally {
    signals.dispose();
    await workload?.stop();
    // The writer has stopped for good: whatever ended the run, the lease may go (the standby takes over).
    await lease?.release().catch(() => undefined);
    if (releasedFd !== undefined) closeSync(releasedFd);
    region.flush();
    region.close();
  }
}

/** One committed epoch, as `replicate --json` prints it; `counter` only with the synthetic writer. */
export function epochJson(report: EpochReport, counter: number | undefined) {
  return {
    event: 'epoch', epoch: report.epoch, digest: report.digest, pages: report.pages, bytes: report.bytes,
    pauseMs: roundMs(report.pauseMs), commitMs: roundMs(report.commitMs), intervalMs: report.intervalMs, token: report.token,
    ...(counter === undefined ? {} : { counter }),
    ...(report.unprotected ? { unprotected: true } : {}),
  };
}

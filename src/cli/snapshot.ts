// `pagewire snapshot`: a live snapshot of an image file (and its disks) while the synthetic workload
// writes it, into a snapshot file; with --base, an incremental one. The workload resumes right after
// the pause; the command then stops it and reports. sha256 is read back from the committed snapshot,
// every page checked against its hash on the way (after totalTimeMs, which it does not count).
import { resolve } from 'node:path';
import { performance } from 'node:perf_hooks';
import { InvalidArgumentError } from '../errors.js';
import { codecKind } from '../native/engine.js';
import { DirtyBitmap } from '../memory/dirty-bitmap.js';
import { MemoryRegion } from '../memory/region.js';
import { STALL_POLICIES } from '../migration/convergence.js';
import { SnapshotChain } from '../snapshot/snapshot-file.js';
import { chainSha256 } from '../snapshot/snapshot-restore.js';
import { Snapshotter, type SnapshotSummary } from '../snapshot/snapshotter.js';
import { SyntheticWorkload } from '../workload/synthetic-workload.js';
import { parseWorkloadSpec } from '../workload/workload-spec.js';
import { optionalString, parseFlags, parsePositiveNumber, repeatedStrings, requireString } from './args.js';
import { printJson, printTable, roundMs } from './output.js';
import { writeCounter } from './replicate.js';
import { oneOf } from './security-flags.js';
import { abortOnSignals } from './signals.js';

export const SNAPSHOT_USAGE = 'pagewire snapshot --image FILE --out SNAP [--disk FILE]... [--base SNAP] [--workload rate=200MB/s,hot=0.05,seed=1] ' +
  '[--max-downtime MS] [--max-rounds N] [--on-stall throttle|stop|fail] [--json]';

export async function snapshotCommand(argv: string[]): Promise<number> {
  const flags = parseFlags(argv, {
    image: 'string', out: 'string', disk: 'strings', base: 'string', workload: 'string', 'max-downtime': 'string', 'max-rounds': 'string',
    'on-stall': 'string', json: 'boolean',
  });
  const imagePath = resolve(requireString(flags, 'image'));
  const out = resolve(requireString(flags, 'out'));
  const base = optionalString(flags, 'base');
  const diskPaths = repeatedStrings(flags, 'disk').map((path) => resolve(path));
  // Files of --base's chain are refused by the library.
  if ([imagePath, ...diskPaths].includes(out)) throw new InvalidArgumentError('--out must name a file other than --image and --disk');
  const workloadText = optionalString(flags, 'workload');
  const spec = workloadText ? parseWorkloadSpec(workloadText) : undefined;
  const downtime = optionalString(flags, 'max-downtime');
  const rounds = optionalString(flags, 'max-rounds');
  const onStall = oneOf(flags, 'on-stall', STALL_POLICIES);
  const region = MemoryRegion.mapFile(imagePath);
  const disks: MemoryRegion[] = [];
  const bitmap = new DirtyBitmap(region.pageCount);
  let workload: SyntheticWorkload | undefined;
  const signals = abortOnSignals();
  try {
    for (const path of diskPaths) disks.push(MemoryRegion.mapFile(path));
    if (spec) {
      const shared = region.sharedMemory;
      workload = await SyntheticWorkload.start(shared ? { buffer: shared } : { path: imagePath }, bitmap, region.pageSize, spec);
    }
    // The write counter as the pause left it: the restored image must hold the same.
    let counter: number | undefined;
    const snapshotter = new Snapshotter({
      region, dirtyBitmap: bitmap, extraRegions: disks.map((disk) => ({ region: disk })), signal: signals.signal,
      hooks: {
        pause: async () => {
          await workload?.pause();
          if (workload) counter = writeCounter(region);
        },
        resume: () => workload?.resume(), throttle: (percent) => workload?.throttle(percent),
      },
      ...(downtime ? { maxDowntimeMs: parsePositiveNumber(downtime, 'max-downtime') } : {}),
      ...(rounds ? { maxRounds: parsePositiveNumber(rounds, 'max-rounds', true) } : {}),
      ...(onStall ? { onStall } : {}),
    });
    if (!flags.has('json')) snapshotter.on('round', (r) => process.stderr.write(`round=${r.round} pages=${r.pagesWritten} ms=${r.durationMs.toFixed(0)} pending=${r.pendingPages}\n`));
    const summary = await snapshotter.take(out, base === undefined ? {} : { base });
    await workload?.stop();
    const workloadWrites = workload?.writes ?? 0;
    workload = undefined;
    const shaStarted = performance.now();
    const chain = SnapshotChain.open(out);
    let sha256: string;
    try { sha256 = chainSha256(chain)[0]!; } finally { chain.close(); }
    const sha256Ms = performance.now() - shaStarted;
    if (flags.has('json')) printJson({ ...snapshotJson(summary), sha256, sha256Ms: roundMs(sha256Ms), workloadWrites, ...(counter === undefined ? {} : { counter }), codec: codecKind() });
    else {
      process.stdout.write(`snapshot ${summary.id} written to ${summary.path}\n`);
      printTable([
        ['parent', summary.parentId ?? 'none (full)'], ['rounds', summary.rounds], ['total time', `${summary.totalTimeMs.toFixed(0)} ms`],
        ['downtime', `${summary.downtimeMs.toFixed(1)} ms`], ['pages written', `${summary.pagesWritten} of ${summary.pagesTotal} (${summary.zeroPages} zero)`],
        ['file', `${summary.fileSize} bytes, ${summary.fileBytes} allocated`], ['digest', summary.digest], ['sha256', sha256],
      ]);
    }
    return 0;
  } finally {
    await workload?.stop();
    signals.dispose();
    region.close();
    for (const disk of disks) disk.close();
  }
}

export function snapshotJson(s: SnapshotSummary) {
  return {
    status: s.status, id: s.id, parentId: s.parentId ?? null, ...(s.changesFoundBy ? { changesFoundBy: s.changesFoundBy } : {}),
    totalTimeMs: roundMs(s.totalTimeMs), downtimeMs: roundMs(s.downtimeMs), rounds: s.rounds, stopReason: s.stopReason,
    pageSize: s.pageSize, pagesTotal: s.pagesTotal, pagesWritten: s.pagesWritten, zeroPages: s.zeroPages,
    deviceStateBytes: s.deviceStateBytes, fileSize: s.fileSize, fileBytes: s.fileBytes, digest: s.digest, fileDigest: s.fileDigest,
  };
}

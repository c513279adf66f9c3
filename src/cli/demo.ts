import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { asPagewireError } from '../errors.js';
import { mbps } from '../migration/metrics.js';
import { FileTargetImage } from '../target/target-image.js';
import { MigrationTarget } from '../migration/target.js';
import { writeMixedImage } from '../workload/mixed-image.js';
import { parseWorkloadSpec } from '../workload/workload-spec.js';
import { failoverDemo } from './demo-failover.js';
import { optionalString, parseFlags, parsePositiveNumber, parseSize } from './args.js';
import { fileSha256 } from './file-sha256.js';
import { ProgressLine, printTable } from './output.js';
import { runSource } from './run-source.js';
import { abortOnSignals } from './signals.js';

export const DEMO_USAGE = 'pagewire demo [--size 256MiB] [--workload rate=100MB/s,hot=0.05,seed=1] [--max-downtime MS] ' +
  '| [--failover [--epoch-ms 50] [--run-ms 3000]]';

/** Both ends on this machine over 127.0.0.1: a mixed image, a live writer, a verified switch-over. */
export async function demoCommand(argv: string[]): Promise<number> {
  const flags = parseFlags(argv, {
    size: 'string', workload: 'string', 'max-downtime': 'string', failover: 'boolean', 'epoch-ms': 'string', 'run-ms': 'string',
  });
  const size = parseSize(optionalString(flags, 'size') ?? '256MiB', 'size');
  const workload = parseWorkloadSpec(optionalString(flags, 'workload') ?? 'rate=100MB/s,hot=0.05,seed=1');
  const downtimeText = optionalString(flags, 'max-downtime');
  const downtime = downtimeText === undefined ? undefined : parsePositiveNumber(downtimeText, 'max-downtime');
  const dir = mkdtempSync(join(tmpdir(), 'pagewire-demo-'));
  const signals = abortOnSignals();
  const say = (text: string) => process.stdout.write(text + '\n');
  let target: MigrationTarget | undefined;
  try {
    if (flags.has('failover')) {
      return await failoverDemo({
        dir, size, workload, say, signal: signals.signal,
        epochMs: parsePositiveNumber(optionalString(flags, 'epoch-ms') ?? '50', 'epoch-ms'),
        runMs: parsePositiveNumber(optionalString(flags, 'run-ms') ?? '3000', 'run-ms'),
      });
    }
    const imagePath = join(dir, 'source.img');
    const outPath = join(dir, 'target.img');
    say(`pagewire demo: a ${(size / 2 ** 20).toFixed(0)} MiB image (40% zero, 30% text, 30% random pages),`);
    say(`a writer thread dirtying ${mbps(workload.rateBytesPerSec)} MB/s of pages (${workload.hot * 100}% hot), migrated over 127.0.0.1\n`);
    writeMixedImage(imagePath, { size });
    target = await MigrationTarget.listen({ image: new FileTargetImage(outPath), host: '127.0.0.1', port: 0, signal: signals.signal });
    const progress = new ProgressLine(process.stdout);
    const outcome = await runSource({
      imagePath, endpoint: { host: '127.0.0.1', port: target.address.port }, workload, signal: signals.signal, progress, sha256: true,
      ...(downtime === undefined ? {} : { maxDowntimeMs: downtime }),
    });
    if (outcome.error) {
      say(`\nmigration failed: ${outcome.error.message} (${outcome.error.code})`);
      return 1;
    }
    await target.result;
    const targetSha = await fileSha256(outPath);
    const sourceSha = outcome.sha256!;
    const s = outcome.summary;
    say('');
    printTable([
      ['rounds', `${s.rounds} (stopped: ${s.stopReason})`],
      ['total time', `${s.totalTimeMs.toFixed(0)} ms`],
      ['downtime', `${s.downtimeMs.toFixed(1)} ms (pause ${s.downtime.pauseMs.toFixed(1)}, sync ${s.downtime.finalSyncMs.toFixed(1)}, ` +
        `transfer ${s.downtime.transferMs.toFixed(1)}, verify ${s.downtime.verifyMs.toFixed(1)}, prepare ` +
        `${s.downtime.prepareMs.toFixed(1)}, handshake ${s.downtime.handshakeMs.toFixed(1)})`],
      ['streams', s.streams],
      ['throttle', `${s.throttlePercent}%`],
      ['throughput', `${mbps((size * 1000) / s.totalTimeMs)} MB/s of region`],
      ['pages sent', `${s.pagesTransferred} of ${s.pagesTotal} (${s.zeroPages} zero, ${s.rawPages} raw)`],
      ['bytes on the wire', `${s.bytesTransferred} (${((100 * s.bytesTransferred) / size).toFixed(1)}% of the region)`],
      ['writes by the workload', outcome.workloadWrites],
      ['source sha256', sourceSha],
      ['target sha256', targetSha],
    ]);
    const same = targetSha === sourceSha;
    say(same ? '\ntarget image is byte-identical to the source at the pause point' : '\nMISMATCH: target differs from source');
    return same ? 0 : 1;
  } catch (error) {
    const failure = asPagewireError(error);
    process.stderr.write(`pagewire demo: ${failure.message} (${failure.code})\n`);
    return 1;
  } finally {
    // Whatever happened, the listening target must not keep the process alive.
    if (target?.phase !== 'completed') target?.stop();
    signals.dispose();
    rmSync(dir, { recursive: true, force: true });
  }
}

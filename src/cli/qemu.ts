// `pagewire qemu send` and `pagewire qemu receive`: a running QEMU guest whose RAM is a shared file
// (memory-backend-file,share=on) moved by pagewire, its devices by QEMU (x-ignore-shared). The source
// side drives the operator's QEMU through its monitor; the target side starts QEMU itself, on the image
// as it arrives, loads the devices before READY and only runs `cont` after GO (src/qemu/).
import { resolve } from 'node:path';
import { InvalidArgumentError, asPagewireError, type PagewireError } from '../errors.js';
import { regionSha256 } from '../memory/region-sha256.js';
import { MemoryRegion } from '../memory/region.js';
import { MigrationSource } from '../migration/source.js';
import { MigrationTarget } from '../migration/target.js';
import { QemuSource } from '../qemu/qemu-source.js';
import { QemuTarget } from '../qemu/qemu-target.js';
import { FileTargetImage } from '../target/target-image.js';
import { optionalString, parseEndpoint, parseFlags, parsePositiveNumber, requireString } from './args.js';
import { fileSha256 } from './file-sha256.js';
import { ProgressLine, printJson } from './output.js';
import { receiveFailureJson, receiveJson } from './receive.js';
import { sourceJson } from './run-source.js';
import { SECURITY_FLAGS, oneOf, readSecurityFlags } from './security-flags.js';
import { LZ4_MODES } from '../codec/lz4-policy.js';
import { abortOnSignals } from './signals.js';

export const QEMU_USAGE = 'pagewire qemu send --qmp SOCKET --ram FILE --connect HOST:PORT|unix:PATH [--max-downtime MS] [--streams N] [--lz4 adaptive|always|off] ' +
  '[--psk-file F [--tls]] [--json [--sha256]]\n' +
  '  pagewire qemu receive --listen HOST:PORT|unix:PATH --out FILE [--qmp SOCKET] [--qemu-log FILE] [--timeout MS] [--psk-file F [--tls] | --insecure] ' +
  '[--json [--sha256]] -- QEMU-COMMAND... (with mem-path=@RAM@)';

export async function qemuCommand(argv: string[]): Promise<number> {
  const [side, ...rest] = argv;
  if (side === 'send') return qemuSend(rest);
  if (side === 'receive') return qemuReceive(rest);
  throw new InvalidArgumentError(`pagewire qemu: expected send or receive, got '${side ?? ''}'`);
}

async function qemuSend(argv: string[]): Promise<number> {
  const flags = parseFlags(argv, {
    qmp: 'string', ram: 'string', connect: 'string', 'max-downtime': 'string', streams: 'string', lz4: 'string', json: 'boolean', sha256: 'boolean',
    ...SECURITY_FLAGS,
  });
  const endpoint = parseEndpoint(requireString(flags, 'connect'), 'connect');
  const ramPath = resolve(requireString(flags, 'ram'));
  const qmpPath = requireString(flags, 'qmp');
  const downtime = optionalString(flags, 'max-downtime');
  const streams = optionalString(flags, 'streams');
  const lz4 = oneOf(flags, 'lz4', LZ4_MODES);
  const security = readSecurityFlags(flags);
  const json = flags.has('json');
  const region = MemoryRegion.mapFile(ramPath);
  const signals = abortOnSignals();
  const progress = new ProgressLine();
  let qemu: QemuSource | undefined;
  try {
    qemu = await QemuSource.attach(qmpPath);
    const source = new MigrationSource({
      region, dirtyTracker: QemuSource.tracker(ramPath, region), ...endpoint, signal: signals.signal, hooks: qemu.hooks, ...security,
      ...(downtime ? { maxDowntimeMs: parsePositiveNumber(downtime, 'max-downtime') } : {}),
      ...(streams ? { streams: parsePositiveNumber(streams, 'streams', true) } : {}),
      ...(lz4 ? { lz4 } : {}),
    });
    source.on('progress', (p) => progress.progress(p, 0));
    source.on('round', (r) => progress.round(r));
    let error: PagewireError | undefined;
    try {
      await source.run();
    } catch (e) {
      error = asPagewireError(e);
    }
    progress.end();
    // After a hand-over QEMU stays stopped: its RAM file is the pause point's.
    const sha256 = flags.has('sha256') ? regionSha256(region) : undefined;
    if (error) process.stderr.write(`pagewire qemu send: ${error.message} (${error.code})\n`);
    if (json) {
      printJson({
        ...sourceJson({ summary: source.metrics, workloadWrites: 0, ...(sha256 === undefined ? {} : { sha256 }) }),
        stoppedAt: qemu.stoppedAt || null,
      });
    } else if (!error) {
      process.stdout.write(`migration ${source.metrics.migrationId} completed: QEMU stays stopped here, handed over\n`);
    }
    return error ? 1 : 0;
  } finally {
    await qemu?.close();
    region.close();
    signals.dispose();
  }
}

async function qemuReceive(argv: string[]): Promise<number> {
  const split = argv.indexOf('--');
  const command = split >= 0 ? argv.slice(split + 1) : [];
  const flags = parseFlags(split >= 0 ? argv.slice(0, split) : argv, {
    listen: 'string', out: 'string', qmp: 'string', 'qemu-log': 'string', timeout: 'string', insecure: 'boolean', json: 'boolean', sha256: 'boolean',
    ...SECURITY_FLAGS,
  });
  const endpoint = parseEndpoint(requireString(flags, 'listen'), 'listen');
  const out = resolve(requireString(flags, 'out'));
  const logPath = resolve(optionalString(flags, 'qemu-log') ?? `${out}.qemu.log`);
  const qmpPath = optionalString(flags, 'qmp');
  const timeout = optionalString(flags, 'timeout');
  const json = flags.has('json');
  if (command.length === 0) throw new InvalidArgumentError('give the QEMU command line after --, its RAM as mem-path=@RAM@');
  const image = new FileTargetImage(out);
  // Started once the image's file exists, long before the pause; loaded and resumed by the hooks.
  let qemu: Promise<QemuTarget> | undefined;
  let sha256: string | undefined;
  const starting = new AbortController();
  const signals = abortOnSignals();
  const target = await MigrationTarget.listen({
    image, ...endpoint, signal: signals.signal, ...readSecurityFlags(flags), insecure: flags.has('insecure'),
    ...(timeout ? { timeoutMs: parsePositiveNumber(timeout, 'timeout', true) } : {}),
    hooks: {
      // Loaded as soon as it is in, beside the last pages; READY waits for it.
      deviceStateReceived: async (deviceState) => (await qemu!).loadDeviceState(deviceState),
      resume: async () => {
        // Hashed before the guest runs: the committed image at the pause point (costs outage, on request only).
        if (flags.has('sha256')) sha256 = await fileSha256(out);
        await (await qemu!).resume();
      },
      discard: async () => {
        starting.abort();
        const started = await qemu?.catch(() => undefined);
        await started?.discard();
      },
    },
  });
  const bound = 'path' in endpoint ? `unix:${endpoint.path}` : `${target.address.address}:${target.address.port}`;
  process.stderr.write(`listening on ${bound}\n`);
  target.on('refused', (error, remote) => process.stderr.write(`refused ${remote}: ${error.message} (${error.code})\n`));
  target.on('accepted', (hello, remote) => {
    process.stderr.write(`migration ${hello.migrationId.toString('hex')} from ${remote}: starting QEMU on ${image.workingPath}\n`);
    qemu = QemuTarget.start(command, image.workingPath!, logPath, qmpPath ? resolve(qmpPath) : undefined, starting.signal);
    // A QEMU that fails to start fails prepare(), before READY.
    qemu.catch(() => {});
  });
  try {
    const summary = await target.result;
    const started = await qemu!;
    if (json) printJson({ ...receiveJson(summary, sha256), qemuPid: started.pid, qmp: started.qmpPath, resumedAt: started.resumedAt });
    else process.stdout.write(`migration ${summary.migrationId} committed to ${out}; QEMU ${started.pid} runs the guest\n`);
    return 0;
  } catch (error) {
    const failure = asPagewireError(error);
    process.stderr.write(`pagewire qemu receive: ${failure.message} (${failure.code})\n`);
    if (json) printJson(receiveFailureJson(failure, target.metrics, flags.has('sha256')));
    return 1;
  } finally {
    // A QEMU left running (completed, or committed with a failed `cont`) is the operator's: its monitor is free.
    (await qemu?.catch(() => undefined))?.release();
    signals.dispose();
  }
}

// npm run bench:link [-- --size 1GiB --reps 3 --rates 1gbit,10gbit --images mixed,random --no-iperf --no-qemu --verbose]
//
// pagewire against QEMU 7.2 over a shaped link, both with the data going one way through a token
// bucket: two network namespaces of this run's own, joined by a veth pair whose source end is shaped
// with `tc qdisc ... tbf` (this kernel has no netem), addresses from the benchmarking range
// (198.18.0.0/15). Per link rate: iperf3's throughput over the link (when iperf3 is installed), then per
// repetition and image: `pagewire receive` in the target namespace and `pagewire send` in the source
// namespace with a key on both ends (--psk-file) and send's defaults otherwise, checked (both ends
// report the same digest, --out equals the image byte for byte), then QEMU's migration of the same
// image between a QEMU in each namespace: multifd with 2 channels and no bandwidth cap (QEMU's best
// configuration on a fast link), and the same with multifd-compression zstd (its best on a slow one).
// Images and RAM files are on /dev/shm. Prints medians, a table per link rate, and the ratios against
// the targets of the issue (the mixed image at 1 Gbit/s in at most 0.9x the time of QEMU multifd+zstd,
// at 10 Gbit/s in at most 1.0x QEMU multifd); writes every figure to bench/results/link-<timestamp>.json.
// Needs root. The namespaces (with the veth pair) are deleted at the end, on failure and on SIGINT too;
// every child process has a deadline and is killed if the bench stops early.
import { randomBytes } from 'node:crypto';
import { execFileSync } from 'node:child_process';
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, release, totalmem } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { optionalString, parseFlags, parseSize } from '../src/cli/args.js';
import { writeMixedImage } from '../src/workload/mixed-image.js';
import { ChildRun, describeExit } from './child-run.js';
import { runCliMigration, type ReceiveJson, type SendJson } from './cli-run.js';
import { startCpuNoise } from './cpu-noise.js';
import { gitInfo, killChildren, optionsOrUsage } from './housekeeping.js';
import { qemuAvailable, runQemuBaseline } from './qemu-baseline.js';
import { IMAGES, type ImageKind } from './scenarios.js';
import { formatSize, formatTable, median, round } from './stats.js';
import { prepareStorage, removeStorage, type FileStorage, type StorageDir } from './storage.js';
import { checkDigests, checkSameBytes } from './verify.js';

const USAGE = 'npm run bench:link -- [--size 1GiB] [--reps 3] [--rates 1gbit,10gbit] [--images mixed,random] [--no-iperf] [--no-qemu] [--verbose]\n' +
  '  --rates    tc rates of the link, comma-separated (kbit, mbit, gbit); the burst is 256kb at 1gbit, 2mb at 10gbit,\n' +
  '             about 2 ms of the rate otherwise\n' +
  '  --no-iperf leave out the iperf3 measurement of the link (skipped with a notice where iperf3 is missing)\n' +
  '  --no-qemu  leave out QEMU (skipped with a notice where qemu-system-x86_64 is missing)\n' +
  'Needs root: it makes two network namespaces, a veth pair and a tc qdisc, all deleted at the end.';
const RESULTS_DIR = fileURLToPath(new URL('../../bench/results/', import.meta.url));
/**
 * The link: this run's own namespaces, a /30 of the benchmarking range (RFC 2544) on its own veth pair,
 * the devices only in the namespaces (so their names cannot clash with anything outside), the source's
 * end shaped.
 */
const LINK = {
  sourceNs: `pwlink-src-${process.pid}`, targetNs: `pwlink-tgt-${process.pid}`,
  sourceAddr: '198.18.9.1', targetAddr: '198.18.9.2', prefixLength: 30,
  sourceDev: 'veth-src', targetDev: 'veth-tgt', tbfLatency: '50ms',
} as const;
/** The burst of a rate without one in KNOWN_BURSTS: about this much time of it, and at least 256 KiB. */
const BURST = { seconds: 0.002, minBytes: 256 * 1024 };
/** QEMU's incoming port in the target namespace: a fresh one per run, so no run waits on another's socket. */
const QEMU_BASE_PORT = 7800;
const IPERF = { port: 5201, seconds: 3, streams: 2, connectAttempts: 30 } as const;
/** Every ip and tc command returns within this. */
const COMMAND_TIMEOUT_MS = 10_000;

type QemuConfig = 'multifd2' | 'multifd2-zstd';
const QEMU_CONFIGS: QemuConfig[] = ['multifd2', 'multifd2-zstd'];
const QEMU_LABEL: Record<QemuConfig, string> = { multifd2: 'QEMU multifd2', 'multifd2-zstd': 'QEMU multifd2+zstd' };

/** The issue's targets: pagewire's time over QEMU's in that configuration, for the mixed image, at most maxRatio. */
const TARGETS: Record<number, { config: QemuConfig; maxRatio: number }> = {
  1e9: { config: 'multifd2-zstd', maxRatio: 0.9 },
  10e9: { config: 'multifd2', maxRatio: 1.0 },
};
const TARGET_IMAGE: ImageKind = 'mixed';
/** Bursts of the issue's rates, as tc takes them. */
const KNOWN_BURSTS: Record<number, string> = { 1e9: '256kb', 10e9: '2mb' };

interface LinkRate {
  /** As tc takes it, e.g. 1gbit. */
  rate: string;
  bitsPerSec: number;
  burst: string;
}

interface Options {
  size: number;
  reps: number;
  rates: LinkRate[];
  images: ImageKind[];
  iperf: boolean;
  qemu: boolean;
  verbose: boolean;
}

type PagewireRun =
  | {
    status: 'completed'; totalTimeMs: number; downtimeMs: number; setupTimeMs: number; bytesTransferred: number; wirePercent: number;
    linkBytes: number; linkPercent: number; sendWallMs: number; receiveWallMs: number; verified: string; send: SendJson; receive: ReceiveJson; sendArgv: string[]; receiveArgv: string[];
  }
  | { status: 'failed'; error: string };

type QemuRun =
  | {
    status: 'completed'; totalTimeMs: number; downtimeMs: number; setupTimeMs: number; transferredBytes: number; wirePercent: number;
    linkBytes: number; linkPercent: number; raw: unknown;
  }
  | { status: 'skipped'; reason: string }
  | { status: 'failed'; error: string };

interface RepRecord {
  rate: string;
  rep: number;
  image: ImageKind;
  pagewire: PagewireRun;
  qemu: Record<QemuConfig, QemuRun>;
  /**
   * CPU used by other processes during the three runs, % of the whole machine (null off Linux). The
   * kernel's own work for the link (softirq time not charged to our processes) counts here too.
   */
  otherCpuPercent: number | null;
}

type IperfResult =
  | { status: 'completed'; streams: number; seconds: number; receivedBitsPerSec: number; sentBitsPerSec: number; retransmits: number | null }
  | { status: 'skipped'; reason: string }
  | { status: 'failed'; error: string };

interface Medians {
  /** Completed runs of the repetitions. */
  completed: number;
  totalTimeMs: number | null;
  /** What the tool says it sent (pagewire's bytesTransferred, QEMU's ram.transferred), % of the image. */
  wirePercent: number | null;
  /** What left the source's end of the link (frames with their headers), % of the image. */
  linkPercent: number | null;
  downtimeMs: number | null;
}

interface Summary {
  rate: string;
  image: ImageKind;
  pagewire: Medians;
  qemu: Record<QemuConfig, Medians>;
  /** The faster QEMU configuration by median time. */
  bestQemu: QemuConfig | null;
  /** pagewire's median time over the best QEMU's. */
  vsBestQemu: number | null;
  /** pagewire's median time over the target configuration's, where this rate has a target. */
  target: { config: QemuConfig; maxRatio: number; ratio: number | null; met: boolean | null; applies: boolean } | null;
}

interface RateRecord {
  rate: string;
  bitsPerSec: number;
  tc: string[];
  qdisc: string;
  iperf3: IperfResult;
  summary: Summary[];
}

function parseRate(text: string): LinkRate {
  const match = /^(\d+(?:\.\d+)?)(k|m|g)bit$/i.exec(text.trim());
  if (!match) throw new Error(`--rates: expected a tc rate such as 1gbit or 500mbit, got '${text}'`);
  const bitsPerSec = Number(match[1]) * { k: 1e3, m: 1e6, g: 1e9 }[match[2]!.toLowerCase() as 'k' | 'm' | 'g'];
  if (!(bitsPerSec > 0)) throw new Error(`--rates: '${text}' is not a usable rate`);
  const burst = KNOWN_BURSTS[bitsPerSec] ?? `${Math.ceil(Math.max(BURST.minBytes, (bitsPerSec / 8) * BURST.seconds) / 1024)}kb`;
  return { rate: text.trim().toLowerCase(), bitsPerSec, burst };
}

function parseOptions(argv: string[]): Options {
  const flags = parseFlags(argv, {
    size: 'string', reps: 'string', rates: 'string', images: 'string', 'no-iperf': 'boolean', 'no-qemu': 'boolean', verbose: 'boolean',
    help: 'boolean',
  });
  if (flags.has('help')) {
    process.stdout.write(`${USAGE}\n`);
    process.exit(0);
  }
  const size = parseSize(optionalString(flags, 'size') ?? '1GiB', 'size');
  if (size % 4096 !== 0) throw new Error(`--size must be a multiple of 4096 bytes, got ${size}`);
  const repsText = optionalString(flags, 'reps') ?? '3';
  const reps = Number(repsText);
  if (!Number.isSafeInteger(reps) || reps < 1) throw new Error(`--reps: expected a whole number >= 1, got '${repsText}'`);
  const list = (name: string, fallback: string) => (optionalString(flags, name) ?? fallback).split(',').map((s) => s.trim()).filter(Boolean);
  const rates = list('rates', '1gbit,10gbit').map(parseRate);
  if (rates.length === 0 || new Set(rates.map((r) => r.bitsPerSec)).size !== rates.length) throw new Error('--rates: name each rate once');
  const images = list('images', 'mixed,random');
  for (const image of images) {
    if (!(image in IMAGES)) throw new Error(`--images: expected ${Object.keys(IMAGES).join(' or ')}, got '${image}'`);
  }
  if (images.length === 0 || new Set(images).size !== images.length) throw new Error('--images: name each image once');
  return {
    size, reps, rates, images: images as ImageKind[], iperf: !flags.has('no-iperf'), qemu: !flags.has('no-qemu'), verbose: flags.has('verbose'),
  };
}

function say(text: string): void {
  process.stderr.write(`${text}\n`);
}

/** Runs a command to completion (ip, tc); throws with what it printed on stderr. */
function run(command: string, args: string[]): string {
  try {
    return execFileSync(command, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], timeout: COMMAND_TIMEOUT_MS });
  } catch (error) {
    const e = error as NodeJS.ErrnoException & { stderr?: string };
    const said = e.code === 'ENOENT' ? `${command} not found on PATH` : (e.stderr?.trim() || e.message);
    throw new Error(`${command} ${args.join(' ')}: ${said}`);
  }
}

/** The two namespaces and the veth pair between them; remove() deletes whatever of it was made. */
class ShapedLink {
  private readonly made: string[] = [];

  build(): void {
    for (const ns of [LINK.sourceNs, LINK.targetNs]) {
      run('ip', ['netns', 'add', ns]);
      this.made.push(ns);
    }
    // Made inside the source namespace with its peer put straight into the target's: never in ours.
    run('ip', ['-n', LINK.sourceNs, 'link', 'add', LINK.sourceDev, 'type', 'veth', 'peer', 'name', LINK.targetDev, 'netns', LINK.targetNs]);
    for (const [ns, dev, addr] of [[LINK.sourceNs, LINK.sourceDev, LINK.sourceAddr], [LINK.targetNs, LINK.targetDev, LINK.targetAddr]] as const) {
      run('ip', ['-n', ns, 'addr', 'add', `${addr}/${LINK.prefixLength}`, 'dev', dev]);
      run('ip', ['-n', ns, 'link', 'set', 'lo', 'up']);
      run('ip', ['-n', ns, 'link', 'set', dev, 'up']);
    }
  }

  /** Puts the token bucket on the source's end (the direction the data goes); returns the tc command line. */
  shape(link: LinkRate): string[] {
    const args = [
      '-n', LINK.sourceNs, 'qdisc', 'replace', 'dev', LINK.sourceDev, 'root', 'tbf', 'rate', link.rate, 'burst', link.burst, 'latency', LINK.tbfLatency,
    ];
    run('tc', args);
    return ['tc', ...args];
  }

  /** Bytes the source's end has put on the link so far, Ethernet, IP and TCP headers included. */
  txBytes(): number {
    const shown = run('ip', ['-n', LINK.sourceNs, '-s', '-j', 'link', 'show', 'dev', LINK.sourceDev]);
    const [dev] = JSON.parse(shown) as Array<{ stats64?: { tx?: { bytes?: number } } }>;
    const bytes = dev?.stats64?.tx?.bytes;
    if (typeof bytes !== 'number') throw new Error(`ip -s -j link show dev ${LINK.sourceDev}: no tx byte count`);
    return bytes;
  }

  /** work's result, with the bytes the source's end put on the link meanwhile. */
  async counting<T>(work: () => Promise<T>): Promise<{ result: T; linkBytes: number }> {
    const before = this.txBytes();
    const result = await work();
    return { result, linkBytes: this.txBytes() - before };
  }

  qdisc(): string {
    return run('tc', ['-n', LINK.sourceNs, 'qdisc', 'show', 'dev', LINK.sourceDev]).trim();
  }

  remove(): void {
    while (this.made.length > 0) {
      const ns = this.made.pop()!;
      try {
        run('ip', ['netns', 'del', ns]);
      } catch (error) {
        say(`pagewire bench:link: could not delete network namespace ${ns}: ${(error as Error).message}`);
      }
    }
  }
}

function versionOf(command: string, args: string[]): string | null {
  try {
    return execFileSync(command, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'], timeout: COMMAND_TIMEOUT_MS }).split('\n')[0]!.trim();
  } catch {
    return null;
  }
}

/** iperf3 from the source namespace to a one-off server in the target's: IPERF.streams streams for IPERF.seconds s. */
async function measureIperf(): Promise<IperfResult> {
  const server = new ChildRun('iperf3 server', 'ip', [
    'netns', 'exec', LINK.targetNs, 'iperf3', '-s', '-1', '-B', LINK.targetAddr, '-p', String(IPERF.port), '-J',
  ], { timeoutMs: (IPERF.seconds + 30) * 1000 });
  try {
    let lastError = '';
    for (let attempt = 0; attempt < IPERF.connectAttempts; attempt++) {
      const client = new ChildRun('iperf3 client', 'ip', [
        'netns', 'exec', LINK.sourceNs, 'iperf3', '-c', LINK.targetAddr, '-p', String(IPERF.port), '-t', String(IPERF.seconds),
        '-P', String(IPERF.streams), '-J', '--connect-timeout', '1000',
      ], { timeoutMs: (IPERF.seconds + 15) * 1000 });
      const exit = await client.exited;
      let json: { error?: string; end?: { sum_sent?: { bits_per_second?: number; retransmits?: number }; sum_received?: { bits_per_second?: number } } } = {};
      try {
        json = JSON.parse(exit.stdout) as typeof json;
      } catch {
        // reported below with how it exited
      }
      const received = json.end?.sum_received?.bits_per_second;
      if (exit.code === 0 && typeof received === 'number') {
        return {
          status: 'completed', streams: IPERF.streams, seconds: IPERF.seconds, receivedBitsPerSec: received,
          sentBitsPerSec: json.end?.sum_sent?.bits_per_second ?? NaN, retransmits: json.end?.sum_sent?.retransmits ?? null,
        };
      }
      lastError = json.error ?? describeExit(exit);
      // Until the server listens the client is refused; anything else is an answer.
      if (!/connect/i.test(lastError)) break;
      await sleep(100);
    }
    return { status: 'failed', error: `iperf3: ${lastError}` };
  } finally {
    server.kill();
    await server.exited;
  }
}

/** One pagewire migration over the link, checked before it counts; failures are recorded, not thrown. */
async function pagewireRun(
  link: ShapedLink, imagePath: string, outPath: string, size: number, pskFile: string, timeoutMs: number, verbose: boolean, label: string,
): Promise<PagewireRun> {
  try {
    const { result: m, linkBytes } = await link.counting(() => runCliMigration({
      imagePath, outPath, regionBytes: size, pskFile, tls: false, timeoutMs, verbose,
      netns: { source: LINK.sourceNs, target: LINK.targetNs, host: LINK.targetAddr },
    }));
    checkDigests(m.send.json, m.receive.json, label);
    checkSameBytes(outPath, imagePath, label);
    const s = m.send.json;
    return {
      status: 'completed', totalTimeMs: s.totalTimeMs, downtimeMs: s.downtimeMs, setupTimeMs: s.setupTimeMs,
      bytesTransferred: s.bytesTransferred, wirePercent: round((100 * s.bytesTransferred) / size, 2),
      linkBytes, linkPercent: round((100 * linkBytes) / size, 2), sendWallMs: round(m.send.wallMs, 1), receiveWallMs: round(m.receive.wallMs, 1),
      verified: 'digests equal, --out equals the image byte for byte', send: s, receive: m.receive.json,
      sendArgv: m.send.argv, receiveArgv: m.receive.argv,
    };
  } catch (error) {
    return { status: 'failed', error: (error as Error).message };
  } finally {
    rmSync(outPath, { force: true });
  }
}

/** One QEMU migration over the link, the two QEMUs in the two namespaces; failures are recorded, not thrown. */
async function qemuRun(
  link: ShapedLink, config: QemuConfig, imagePath: string, dir: string, size: number, port: number, timeoutMs: number,
): Promise<QemuRun> {
  try {
    const { result: q, linkBytes } = await link.counting(() => runQemuBaseline({
      imagePath, targetRamPath: join(dir, 'qemu-target-ram.bin'), sizeBytes: size, config: 'best', timeoutMs, workDir: dir,
      listen: { host: LINK.targetAddr, port }, netns: { source: LINK.sourceNs, target: LINK.targetNs },
      ...(config === 'multifd2-zstd' ? { multifdCompression: 'zstd' as const } : {}),
    }));
    if (!q.available) return { status: 'skipped', reason: q.reason };
    return {
      status: 'completed', totalTimeMs: q.totalTimeMs, downtimeMs: q.downtimeMs, setupTimeMs: q.setupTimeMs,
      transferredBytes: q.transferredBytes, wirePercent: round((100 * q.transferredBytes) / size, 2),
      linkBytes, linkPercent: round((100 * linkBytes) / size, 2), raw: q.raw,
    };
  } catch (error) {
    return { status: 'failed', error: (error as Error).message };
  }
}

function medians(runs: Array<PagewireRun | QemuRun>): Medians {
  const done = runs.filter((r) => r.status === 'completed');
  const of = (pick: (r: (typeof done)[number]) => number) => (done.length === 0 ? null : median(done.map(pick)));
  return {
    completed: done.length, totalTimeMs: of((r) => r.totalTimeMs), wirePercent: of((r) => r.wirePercent),
    linkPercent: of((r) => r.linkPercent), downtimeMs: of((r) => r.downtimeMs),
  };
}

function summarize(link: LinkRate, image: ImageKind, reps: RepRecord[]): Summary {
  const mine = reps.filter((r) => r.rate === link.rate && r.image === image);
  const pagewire = medians(mine.map((r) => r.pagewire));
  const qemu = Object.fromEntries(QEMU_CONFIGS.map((c) => [c, medians(mine.map((r) => r.qemu[c]))])) as Record<QemuConfig, Medians>;
  const ranked = QEMU_CONFIGS.filter((c) => qemu[c].totalTimeMs !== null).sort((a, b) => qemu[a].totalTimeMs! - qemu[b].totalTimeMs!);
  const ratio = (config: QemuConfig | undefined) => {
    const theirs = config === undefined ? null : qemu[config].totalTimeMs;
    return pagewire.totalTimeMs === null || theirs === null ? null : round(pagewire.totalTimeMs / theirs, 3);
  };
  const goal = TARGETS[link.bitsPerSec];
  const targetRatio = goal ? ratio(goal.config) : null;
  return {
    rate: link.rate, image, pagewire, qemu, bestQemu: ranked[0] ?? null, vsBestQemu: ratio(ranked[0]),
    target: goal
      ? { ...goal, ratio: targetRatio, met: targetRatio === null ? null : targetRatio <= goal.maxRatio, applies: image === TARGET_IMAGE }
      : null,
  };
}

const ms = (v: number | null) => (v === null ? 'n/a' : v.toFixed(0));
const pct = (v: number | null) => (v === null ? 'n/a' : v.toFixed(1));
const times = (v: number | null) => (v === null ? 'n/a' : `${v.toFixed(2)}x`);

function formatRate(record: RateRecord, link: LinkRate, options: Options): string {
  const iperf = record.iperf3;
  const measured = iperf.status === 'completed'
    ? `iperf3 (${iperf.streams} streams, ${iperf.seconds} s): ${(iperf.receivedBitsPerSec / 1e6).toFixed(0)} Mbit/s`
    : `iperf3 ${iperf.status}: ${iperf.status === 'skipped' ? iperf.reason : iperf.error}`;
  const goal = TARGETS[link.bitsPerSec];
  const targetHeader = goal ? `pw / ${QEMU_LABEL[goal.config].replace('QEMU ', '')} (target <= ${goal.maxRatio.toFixed(1)}x, ${TARGET_IMAGE})` : 'pw / target';
  const count = (m: Medians) => (m.completed === options.reps ? '' : ` (${m.completed}/${options.reps} ok)`);
  const timing = [
    ['image', 'pagewire ms', 'wire %', ...QEMU_CONFIGS.flatMap((c) => [`${QEMU_LABEL[c]} ms`, 'wire %']), 'pw / best QEMU', targetHeader],
    ...record.summary.map((s) => [
      s.image, `${ms(s.pagewire.totalTimeMs)}${count(s.pagewire)}`, pct(s.pagewire.wirePercent),
      ...QEMU_CONFIGS.flatMap((c) => [`${ms(s.qemu[c].totalTimeMs)}${count(s.qemu[c])}`, pct(s.qemu[c].wirePercent)]),
      s.bestQemu ? `${times(s.vsBestQemu)} (${s.bestQemu})` : 'n/a',
      s.target ? `${times(s.target.ratio)}${s.target.applies && s.target.met !== null ? (s.target.met ? ' met' : ' MISSED') : ''}` : 'n/a',
    ]),
  ];
  type Pick = (s: Summary) => Medians;
  const systems: Array<[string, Pick]> = [['pagewire', (s) => s.pagewire], ...QEMU_CONFIGS.map((c): [string, Pick] => [QEMU_LABEL[c], (s) => s.qemu[c]])];
  const downtime = [
    ['image', ...systems.flatMap(([name]) => [`${name} down ms`, 'link %'])],
    ...record.summary.map((s) => [s.image, ...systems.flatMap(([, pick]) => [ms(pick(s).downtimeMs), pct(pick(s).linkPercent)])]),
  ];
  const table = (rows: string[][]) => formatTable(rows, rows[0]!.map((_, i) => i > 0));
  return `\nlink ${link.rate} (tc tbf rate ${link.rate} burst ${link.burst} latency ${LINK.tbfLatency}, veth between two namespaces); ${measured}\n` +
    `${formatSize(options.size)} images on /dev/shm, medians of ${options.reps}; pagewire: send/receive defaults with --psk-file; ` +
    'QEMU: multifd, 2 channels, no bandwidth cap (+ multifd-compression zstd)\n' +
    'wire %: what each reports sending (pagewire bytesTransferred, QEMU ram.transferred, which QEMU 7.2 counts before zstd: ' +
    'see link %) over the image size\n' +
    `${table(timing)}\n\n` +
    'downtime, and link %: bytes the source\'s veth end transmitted during the run (frames, headers included) over the image size\n' +
    `${table(downtime)}\n`;
}

async function main(): Promise<number> {
  const options = optionsOrUsage('pagewire bench:link', USAGE, parseOptions);
  if (!options) return 2;
  if (process.platform !== 'linux' || process.getuid?.() !== 0) {
    process.stderr.write('pagewire bench:link: needs root on Linux (it makes two network namespaces, a veth pair and a tc qdisc); ' +
      'run it as root, e.g. sudo npm run bench:link\n');
    return 1;
  }
  const { size, reps } = options;
  const startedAt = new Date();
  const stamp = startedAt.toISOString().replace(/[:.]/g, '-');
  const link = new ShapedLink();
  let storage: Partial<Record<FileStorage, StorageDir>> = {};
  let cleaned = false;
  const cleanup = () => {
    if (cleaned) return;
    cleaned = true;
    killChildren();
    link.remove();
    removeStorage(storage);
  };
  process.on('exit', cleanup);
  for (const [signal, code] of [['SIGINT', 130], ['SIGTERM', 143], ['SIGHUP', 129]] as const) {
    process.on(signal, () => {
      say(`\npagewire bench:link: interrupted by ${signal}; cleaning up`);
      cleanup();
      process.exit(code);
    });
  }

  const runs: RepRecord[] = [];
  const rates: RateRecord[] = [];
  const record: Record<string, unknown> = {
    bench: 'link',
    status: 'running',
    startedAt: startedAt.toISOString(),
    options: { size, reps, rates: options.rates, images: options.images, iperf: options.iperf, qemu: options.qemu },
    environment: {
      node: process.version, kernel: release(), cpus: cpus().length, cpuModel: cpus()[0]?.model ?? null, totalMemBytes: totalmem(),
      git: gitInfo(), qemu: null as unknown, iperf3: null as unknown, tc: versionOf('tc', ['-V']),
    },
    link: { ...LINK, shapedOn: LINK.sourceDev },
    images: Object.fromEntries(options.images.map((k) => [k, { sizeBytes: size, pageSize: 4096, ...IMAGES[k] }])),
    targets: Object.fromEntries(Object.entries(TARGETS).map(([bps, t]) => [`${Number(bps) / 1e9}gbit`, { ...t, image: TARGET_IMAGE }])),
    method: 'Two network namespaces of the run\'s own joined by a veth pair, the source end shaped with tc tbf (rate, burst, latency ' +
      `${LINK.tbfLatency}; replaced per rate). Per rate: iperf3 -P ${IPERF.streams} -t ${IPERF.seconds} from the source namespace to a ` +
      'one-off server in the target\'s, then per repetition and image (images on /dev/shm): `ip netns exec TGT pagewire receive ' +
      '--listen TGTADDR:0 --out /dev/shm/... --psk-file KEY --json` and `ip netns exec SRC pagewire send --connect TGTADDR:PORT ' +
      '--image IMG --psk-file KEY --json` (send\'s defaults otherwise); send\'s and receive\'s digests must agree and --out must ' +
      'equal the image byte for byte; then QEMU (the same image as the source\'s RAM, share=off; the target\'s RAM a new shared ' +
      'file on /dev/shm; paused guests, -incoming defer on TGTADDR) with multifd, 2 channels, max-bandwidth 100e9, and the same ' +
      'with multifd-compression zstd (level 1, QEMU\'s default); QEMU\'s total-time, downtime and ram.transferred. QEMU 7.2 counts ' +
      'multifd pages in ram.transferred before compression, so for zstd only linkBytes says what crossed the link: the tx byte ' +
      'count of the source\'s veth end (ip -s link) before and after each run, for pagewire and QEMU alike (frames with their ' +
      'headers, GSO frames counted whole). Medians over repetitions; ratios are pagewire\'s median totalTimeMs over QEMU\'s ' +
      'median total-time.',
  };
  let pagewireFailures = 0;
  let failure: string | undefined;
  try {
    try {
      link.build();
    } catch (error) {
      throw new Error(`cannot build the link between two network namespaces (needs root, iproute2 and veth): ${(error as Error).message}`);
    }
    say(`pagewire bench:link: namespaces ${LINK.sourceNs} (${LINK.sourceAddr}) and ${LINK.targetNs} (${LINK.targetAddr}) joined by a veth pair`);
    const qemu = options.qemu ? await qemuAvailable() : { available: false as const, reason: 'skipped with --no-qemu' };
    const env = record.environment as Record<string, unknown>;
    env.qemu = qemu.available ? { version: qemu.version } : { skipped: qemu.reason };
    if (!qemu.available && options.qemu) say(`QEMU unusable (${qemu.reason}): skipping QEMU (apt-get install qemu-system-x86 to include it)`);
    const iperfVersion = options.iperf ? versionOf('iperf3', ['--version']) : null;
    env.iperf3 = iperfVersion ?? (options.iperf ? { skipped: 'iperf3 not found on PATH' } : { skipped: 'skipped with --no-iperf' });
    if (options.iperf && !iperfVersion) say('iperf3 not found: skipping the link measurement (apt-get install iperf3 to include it)');

    storage = prepareStorage(new Set<FileStorage>(['shm']), undefined, RESULTS_DIR);
    const dir = storage.shm!.dir;
    const pskFile = join(dir, 'link.key');
    writeFileSync(pskFile, `${randomBytes(32).toString('hex')}\n`, { mode: 0o600 });
    const images = new Map<ImageKind, string>();
    for (const kind of options.images) {
      const path = join(dir, `${kind}.bin`);
      say(`pagewire bench:link: generating the ${formatSize(size)} ${kind} image in ${path}`);
      writeMixedImage(path, { size, ...IMAGES[kind] });
      images.set(kind, path);
    }
    const outPath = join(dir, 'out.img');
    let qemuPort = QEMU_BASE_PORT;

    for (const rate of options.rates) {
      // Generous but finite: four times the link's time for the image, plus a minute.
      const stepTimeoutMs = Math.round(60_000 + 4 * ((size * 8) / rate.bitsPerSec) * 1000);
      const tc = link.shape(rate);
      const qdisc = link.qdisc();
      say(`\nlink ${rate.rate}: ${tc.join(' ')}\n  ${qdisc}`);
      const iperf3: IperfResult = !options.iperf ? { status: 'skipped', reason: 'skipped with --no-iperf' }
        : !iperfVersion ? { status: 'skipped', reason: 'iperf3 not found on PATH' } : await measureIperf();
      if (iperf3.status === 'completed') say(`  iperf3: ${(iperf3.receivedBitsPerSec / 1e6).toFixed(0)} Mbit/s received (${IPERF.streams} streams, ${IPERF.seconds} s)`);
      else if (iperf3.status === 'failed') say(`  ${iperf3.error}`);
      const rateRecord: RateRecord = { rate: rate.rate, bitsPerSec: rate.bitsPerSec, tc, qdisc, iperf3, summary: [] };
      rates.push(rateRecord);
      for (let rep = 0; rep < reps; rep++) {
        for (const image of options.images) {
          const label = `${rate.rate} ${image} ${rep + 1}/${reps}`;
          const imagePath = images.get(image)!;
          const noise = startCpuNoise([process.pid]);
          const pagewire = await pagewireRun(link, imagePath, outPath, size, pskFile, stepTimeoutMs, options.verbose, label);
          if (pagewire.status === 'failed') pagewireFailures++;
          const qemuRuns = {} as Record<QemuConfig, QemuRun>;
          for (const config of QEMU_CONFIGS) {
            qemuRuns[config] = qemu.available
              ? await qemuRun(link, config, imagePath, dir, size, qemuPort++, stepTimeoutMs)
              : { status: 'skipped', reason: qemu.reason };
          }
          const otherCpu = noise();
          runs.push({ rate: rate.rate, rep: rep + 1, image, pagewire, qemu: qemuRuns, otherCpuPercent: otherCpu === null ? null : round(otherCpu, 1) });
          const described = [describeRun('pagewire', pagewire), ...QEMU_CONFIGS.map((c) => describeRun(QEMU_LABEL[c], qemuRuns[c]))];
          say(`  [${label}] ${described.join(' | ')}${otherCpu === null ? '' : ` | others' CPU ${otherCpu.toFixed(0)}%`}`);
        }
      }
      rateRecord.summary = options.images.map((image) => summarize(rate, image, runs));
      process.stdout.write(formatRate(rateRecord, rate, options));
    }
    if (pagewireFailures > 0) failure = `${pagewireFailures} pagewire migration(s) failed or did not verify (see the runs in the JSON)`;
  } catch (error) {
    failure = `FAILED: ${(error as Error).message}`;
  } finally {
    if (failure) process.stderr.write(`\npagewire bench:link: ${failure}\n`);
    Object.assign(record, { status: failure ? 'failed' : 'completed', error: failure ?? null, finishedAt: new Date().toISOString(), rates, runs });
    writeResults(stamp, record);
    cleanup();
  }
  return failure ? 1 : 0;
}

function describeRun(label: string, r: PagewireRun | QemuRun): string {
  if (r.status === 'skipped') return `${label} skipped`;
  if (r.status === 'failed') return `${label} FAILED: ${r.error}`;
  return `${label} ${r.totalTimeMs.toFixed(0)} ms, wire ${r.wirePercent.toFixed(1)}% (link ${r.linkPercent.toFixed(1)}%), downtime ${r.downtimeMs.toFixed(0)} ms`;
}

function writeResults(stamp: string, record: Record<string, unknown>): void {
  try {
    mkdirSync(RESULTS_DIR, { recursive: true });
    const file = join(RESULTS_DIR, `link-${stamp}.json`);
    writeFileSync(file, JSON.stringify(record, null, 2) + '\n');
    process.stdout.write(`\nraw figures: ${file}\n`);
  } catch (error) {
    process.stderr.write(`pagewire bench:link: cannot write the results: ${(error as Error).message}\n`);
  }
}

main().then((code) => process.exit(code), (error: unknown) => {
  process.stderr.write(`pagewire bench:link: FAILED: ${(error as Error).stack ?? String(error)}\n`);
  process.exit(1);
});

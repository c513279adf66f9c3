// npm run bench [-- --size 1GiB --reps 3 --warmup 1 --scenarios cold-random-shm,...,workload200-disk
//                  --streams N --lz4 MODE --max-downtime 50 --disk-dir DIR --no-qemu --verbose]
//
// Measures what users run: by default each migration is the real `pagewire receive` and `pagewire send`
// processes over 127.0.0.1, receive writing --out on a chosen storage (/dev/shm or a disk), the image on
// the same storage. In the same run, over the same bytes, it measures the floors: writing them into a new
// file on that storage (pwrite, fsync), and a plain TCP copy between two processes into pre-faulted memory;
// and, for the cold scenarios, QEMU's own migration of the same image with its RAM files on that storage.
// The library path into pre-faulted memory (today's agents) stays available as the -mem scenarios, compared
// with the TCP copy only. Each repetition does, per scenario: write floor, TCP copy, migration, checks (the
// digests both ends report must agree, and the committed --out must equal the source's image at the pause
// point, byte for byte), then QEMU (cold scenarios, once per image, storage and repetition). The RSS of
// both ends is sampled during each migration. Prints medians; writes every figure to
// bench/results/migrate-<timestamp>.json and a chart to migrate-<timestamp>.svg. Exits non-zero on any
// failure, including a target image that differs from the source's.
import { randomBytes } from 'node:crypto';
import { closeSync, copyFileSync, fsyncSync, mkdirSync, openSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, totalmem } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { optionalString, parseFlags, parseSize } from '../src/cli/args.js';
import { DEFAULT_PAGE_CACHE_BYTES } from '../src/codec/page-batch-encoder.js';
import { LZ4_MODES, type Lz4Mode } from '../src/codec/lz4-policy.js';
import { MAX_STREAMS } from '../src/wire/streams.js';
import { writeMixedImage, type MixedImageOptions } from '../src/workload/mixed-image.js';
import type { WorkloadSpec } from '../src/workload/workload-spec.js';
import { renderRunSvg } from './chart.js';
import { runCliMigration } from './cli-run.js';
import { startCpuNoise } from './cpu-noise.js';
import { measureTcpCopy, measureWriteFloor, type TcpCopy } from './floors.js';
import { gitInfo, killChildren, optionsOrUsage } from './housekeeping.js';
import { RSS_SAMPLE_MS } from './proc-memory.js';
import { AgentClient, type MigrateReceiveResult, type MigrateSendResult } from './protocol.js';
import { qemuAvailable, runQemuBaseline } from './qemu-baseline.js';
import { roundsDetail, summarize, type QemuRecord, type RepRecord, type ScenarioSummary } from './records.js';
import { chartPanels, describeRep, formatTables, type RunDescription } from './report.js';
import { DEFAULT_SCENARIOS, HOT, IMAGES, SCENARIO_HELP, parseScenario, type ImageKind, type Scenario } from './scenarios.js';
import { round, formatSize, mib } from './stats.js';
import { prepareStorage, removeStorage, type FileStorage, type StorageDir } from './storage.js';
import { checkDigests, checkSameBytes } from './verify.js';

const USAGE = 'npm run bench -- [--size 1GiB] [--reps 3] [--warmup 1] [--scenarios LIST] [--streams N] [--lz4 adaptive|always|off] ' +
  '[--max-downtime 50] [--disk-dir DIR] [--no-qemu] [--verbose]\n' +
  '  --max-downtime  the workload scenarios\' budget (default 50 ms)\n' +
  '  --disk-dir      where the -disk scenarios put the image and --out (default: the temp directory, if it is on a disk)\n' +
  '  --no-qemu       leave out the QEMU baseline (it is skipped with a notice where qemu-system-x86_64 is missing)\n' +
  `${SCENARIO_HELP}`;
const AGENT_PATH = fileURLToPath(new URL('./agent.js', import.meta.url));
const RESULTS_DIR = fileURLToPath(new URL('../../bench/results/', import.meta.url));
/** The workload scenarios' downtime budget unless --max-downtime says otherwise (the issue's 200 MB/s target). */
const WORKLOAD_MAX_DOWNTIME_MS = 50;
/** The RSS bound of either end: this, plus the region, plus the page cache. */
const RSS_BASE_BYTES = 256 * 2 ** 20;
/** Above this share of the machine's CPU used by others during a repetition, the table gets a warning. */
const NOISY_CPU_PERCENT = 10;
const QEMU_MISSING = 'QEMU not found: skipping the QEMU baseline (apt-get install qemu-system-x86 to include it)';

interface Options {
  size: number;
  reps: number;
  warmup: number;
  scenarios: Scenario[];
  /** undefined: send's default. */
  streams: number | undefined;
  /** undefined: send's default (adaptive). */
  lz4: Lz4Mode | undefined;
  /** For the workload scenarios without a -budget suffix. */
  workloadMaxDowntimeMs: number;
  /** undefined: os.tmpdir(), if it is on a disk. */
  diskDir: string | undefined;
  qemu: boolean;
  verbose: boolean;
}

type QemuState = { enabled: true; version: string } | { enabled: false; reason: string };

/** What every step of a run needs. */
interface Bench {
  options: Options;
  storage: Partial<Record<FileStorage, StorageDir>>;
  /** The pristine images, by `${kind}@${storage}`. */
  images: Map<string, string>;
  source: AgentClient;
  target: AgentClient;
  pids: number[];
  stepTimeoutMs: number;
  rssBoundBytes: number;
  qemu: QemuState;
  /** QEMU runs once per image, storage and repetition, whichever scenarios share them. */
  qemuRuns: Map<string, QemuRecord>;
  /** The pre-shared key of the -psk and -tls scenarios, made for this run, and the file the CLI reads it from. */
  tlsKey: Uint8Array;
  pskFile: string;
}

function parseOptions(argv: string[]): Options {
  const flags = parseFlags(argv, {
    size: 'string', reps: 'string', scenarios: 'string', warmup: 'string', streams: 'string', 'max-downtime': 'string', lz4: 'string',
    'disk-dir': 'string', 'no-qemu': 'boolean', verbose: 'boolean', help: 'boolean',
  });
  if (flags.has('help')) {
    process.stdout.write(`${USAGE}\n`);
    process.exit(0);
  }
  const size = parseSize(optionalString(flags, 'size') ?? '1GiB', 'size');
  if (size % 4096 !== 0) throw new Error(`--size must be a multiple of 4096 bytes, got ${size}`);
  const streamsText = optionalString(flags, 'streams');
  const streams = streamsText === undefined ? undefined : wholeNumber(streamsText, 'streams', 1);
  if (streams !== undefined && streams > MAX_STREAMS) throw new Error(`--streams: at most ${MAX_STREAMS}, got ${streams}`);
  const lz4 = optionalString(flags, 'lz4') as Lz4Mode | undefined;
  if (lz4 !== undefined && !LZ4_MODES.includes(lz4)) {
    throw new Error(`--lz4: expected adaptive, always or off, got '${lz4}'`);
  }
  const maxDowntimeText = optionalString(flags, 'max-downtime') ?? String(WORKLOAD_MAX_DOWNTIME_MS);
  const workloadMaxDowntimeMs = Number(maxDowntimeText);
  if (!(workloadMaxDowntimeMs > 0 && Number.isFinite(workloadMaxDowntimeMs))) {
    throw new Error(`--max-downtime: expected a positive number of milliseconds, got '${maxDowntimeText}'`);
  }
  const names = (optionalString(flags, 'scenarios') ?? DEFAULT_SCENARIOS).split(',').map((s) => s.trim()).filter(Boolean);
  if (names.length === 0) throw new Error('--scenarios: name at least one scenario');
  const scenarios = names.map((name) => parseScenario(name, workloadMaxDowntimeMs));
  if (new Set(scenarios.map((s) => s.name)).size !== scenarios.length) throw new Error('--scenarios: a scenario is named twice');
  const diskDir = optionalString(flags, 'disk-dir');
  return {
    size, reps: wholeNumber(optionalString(flags, 'reps') ?? '3', 'reps', 1),
    warmup: wholeNumber(optionalString(flags, 'warmup') ?? '1', 'warmup', 0),
    scenarios, streams, lz4, workloadMaxDowntimeMs, diskDir: diskDir === undefined ? undefined : resolve(diskDir),
    qemu: !flags.has('no-qemu'), verbose: flags.has('verbose'),
  };
}

function wholeNumber(text: string, flag: string, min: number): number {
  const value = Number(text);
  if (!Number.isSafeInteger(value) || value < min) throw new Error(`--${flag}: expected a whole number >= ${min}, got '${text}'`);
  return value;
}

function say(text: string): void {
  process.stderr.write(`${text}\n`);
}

/** QEMU is compared with the cold CLI scenarios: a paused guest has no workload, and -mem is not like for like. */
function comparedWithQemu(scenario: Scenario): boolean {
  return scenario.rateBytesPerSec === 0 && scenario.target !== 'mem';
}

/** Whether QEMU can be used, printing the notice once when it cannot. */
async function probeQemu(wanted: boolean, scenarios: Scenario[]): Promise<QemuState> {
  if (!wanted) return { enabled: false, reason: 'skipped with --no-qemu' };
  if (!scenarios.some(comparedWithQemu)) return { enabled: false, reason: 'no cold -shm or -disk scenario to compare with' };
  const found = await qemuAvailable();
  if (found.available) return { enabled: true, version: found.version };
  say(/not found/.test(found.reason) ? QEMU_MISSING : `QEMU unusable (${found.reason}): skipping the QEMU baseline`);
  return { enabled: false, reason: found.reason };
}

function fsyncFile(path: string): void {
  const fd = openSync(path, 'r+');
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

/** The image a run migrates: workload runs get a fresh copy beside it, since the writer changes the file it maps. */
function imageFor(bench: Bench, scenario: Scenario): { path: string; done(): void } {
  const pristine = bench.images.get(`${scenario.image}@${scenario.imageStorage}`)!;
  if (scenario.rateBytesPerSec === 0) return { path: pristine, done: () => {} };
  const path = join(bench.storage[scenario.imageStorage]!.dir, 'workload-image.bin');
  copyFileSync(pristine, path);
  fsyncFile(path);
  return { path, done: () => rmSync(path, { force: true }) };
}

/** QEMU 'best' on the image, RAM on the scenario's storage, once per image, storage and repetition; errors are recorded, not thrown. */
async function qemuBaseline(bench: Bench, scenario: Scenario, imagePath: string, rep: number): Promise<QemuRecord | null> {
  if (!comparedWithQemu(scenario)) return null;
  if (!bench.qemu.enabled) return { status: 'skipped', reason: bench.qemu.reason };
  const key = `${scenario.image}:${scenario.target}:${rep}`;
  const known = bench.qemuRuns.get(key);
  if (known) return known;
  const dir = bench.storage[scenario.imageStorage]!.dir;
  const targetRamPath = join(dir, 'qemu-target-ram.bin');
  let result: QemuRecord;
  try {
    const q = await runQemuBaseline({
      imagePath, targetRamPath, sizeBytes: bench.options.size, config: 'best', timeoutMs: bench.stepTimeoutMs, workDir: dir,
    });
    result = q.available
      ? {
        status: 'completed', config: 'best', version: q.version, totalTimeMs: q.totalTimeMs, downtimeMs: q.downtimeMs,
        setupTimeMs: q.setupTimeMs, transferredBytes: q.transferredBytes,
        wirePercent: round((100 * q.transferredBytes) / bench.options.size, 2), targetRamPath, raw: q.raw,
      }
      : { status: 'skipped', reason: q.reason };
    if (!q.available) say(`  QEMU baseline skipped: ${q.reason}`);
  } catch (error) {
    result = { status: 'failed', error: (error as Error).message };
    say(`  QEMU baseline failed (recorded, the bench goes on): ${result.error}`);
  }
  bench.qemuRuns.set(key, result);
  return result;
}

/** A migration as users run it: the pagewire processes, --out on the scenario's storage; checked before it counts. */
async function cliMigration(bench: Bench, scenario: Scenario, imagePath: string, workload: WorkloadSpec | undefined, label: string) {
  const { options, stepTimeoutMs } = bench;
  const outPath = join(bench.storage[scenario.imageStorage]!.dir, 'out.img');
  try {
    const run = await runCliMigration({
      imagePath, outPath, regionBytes: options.size, timeoutMs: stepTimeoutMs, verbose: options.verbose,
      ...(workload ? { workload } : {}), ...(scenario.maxDowntimeMs === undefined ? {} : { maxDowntimeMs: scenario.maxDowntimeMs }),
      ...(options.streams === undefined ? {} : { streams: options.streams }), ...(options.lz4 === undefined ? {} : { lz4: options.lz4 }),
      ...(scenario.security === 'none' ? {} : { pskFile: bench.pskFile, tls: scenario.security === 'tls' }),
    });
    checkDigests(run.send.json, run.receive.json, label);
    checkSameBytes(outPath, imagePath, label);
    return {
      send: run.send.json, receive: run.receive.json as unknown as Record<string, unknown>, rounds: run.send.rounds,
      processes: {
        sendWallMs: round(run.send.wallMs, 1), receiveWallMs: round(run.receive.wallMs, 1), receiveListeningMs: round(run.receive.listeningMs, 1),
        sendArgv: run.send.argv, receiveArgv: run.receive.argv,
      },
      rss: { source: run.send.rss, target: run.receive.rss },
      verified: 'digests equal, --out equals the image byte for byte',
    };
  } finally {
    rmSync(outPath, { force: true });
  }
}

/** The library path into the target agent's pre-faulted buffer; checked before it counts. */
async function libraryMigration(bench: Bench, scenario: Scenario, imagePath: string, workload: WorkloadSpec | undefined, label: string) {
  const { source, target, stepTimeoutMs, options } = bench;
  const tls = scenario.security === 'none' ? {} : { tlsKey: bench.tlsKey, tls: scenario.security === 'tls' };
  const { port } = await target.request<{ port: number }>({ cmd: 'migrate-listen', timeoutMs: stepTimeoutMs, ...tls }, stepTimeoutMs);
  const received = target.request<MigrateReceiveResult>({ cmd: 'migrate-result' }, stepTimeoutMs + 30_000);
  received.catch(() => {});
  const sent = await source.request<MigrateSendResult>({
    cmd: 'migrate-send', port, imagePath, timeoutMs: stepTimeoutMs, verbose: options.verbose, workload,
    streams: options.streams, lz4: options.lz4, maxDowntimeMs: scenario.maxDowntimeMs, ...tls,
  }, stepTimeoutMs + 30_000);
  if (sent.error || sent.json.status !== 'completed') {
    const targetSide = await Promise.race([received, new Promise<undefined>((r) => setTimeout(() => r(undefined), 5000))]).catch(() => undefined);
    throw new Error(`migration failed on the source: ${sent.error?.message ?? sent.json.status} (${sent.error?.code ?? '?'})` +
      (targetSide?.error ? `; target: ${targetSide.error.message} (${targetSide.error.code ?? '?'})` : ''));
  }
  const landed = await received;
  if (landed.error || !landed.summary || landed.summary.status !== 'completed' || !landed.sha256) {
    throw new Error(`migration failed on the target: ${landed.error?.message ?? 'no summary'} (${landed.error?.code ?? '?'})`);
  }
  checkDigests(sent.json, { digest: landed.summary.regionDigest }, label);
  if (landed.sha256 !== sent.json.sha256) {
    throw new Error(`SHA-256 MISMATCH after ${label}: source at the pause point ${sent.json.sha256}, target's buffer ${landed.sha256}`);
  }
  return {
    send: sent.json, receive: { ...landed.summary, sha256: landed.sha256 } as unknown as Record<string, unknown>, rounds: sent.rounds,
    processes: null, rss: { source: sent.rss, target: landed.rss }, verified: 'digests equal, SHA-256 of the buffer equals the image\'s',
  };
}

/** One repetition of one scenario: the floors, the migration, then QEMU for the cold CLI scenarios. */
async function runOnce(bench: Bench, scenario: Scenario, rep: number, withQemu: boolean): Promise<RepRecord> {
  const { size, streams, lz4 } = bench.options;
  const image = imageFor(bench, scenario);
  const label = `${scenario.name} rep ${rep + 1}`;
  try {
    const noise = startCpuNoise(bench.pids);
    const writeFloor = scenario.target === 'mem' ? null
      : await measureWriteFloor(image.path, join(bench.storage[scenario.target]!.dir, 'write-floor.bin'), bench.stepTimeoutMs);
    const tcpCopy: TcpCopy = await measureTcpCopy(bench.source, bench.target, image.path, size, bench.stepTimeoutMs);
    const workload: WorkloadSpec | undefined = scenario.rateBytesPerSec > 0
      ? { rateBytesPerSec: scenario.rateBytesPerSec, hot: HOT, seed: rep + 1 } : undefined;
    const m = scenario.target === 'mem'
      ? await libraryMigration(bench, scenario, image.path, workload, label)
      : await cliMigration(bench, scenario, image.path, workload, label);
    const otherCpu = noise();
    const qemu = withQemu ? await qemuBaseline(bench, scenario, image.path, rep) : null;
    const total = m.send.totalTimeMs;
    return {
      scenario: scenario.name, rep: rep + 1, image: scenario.image, target: scenario.target,
      floors: { write: writeFloor, tcpCopy },
      migration: {
        send: m.send, receive: m.receive, processes: m.processes,
        requested: { streams: streams ?? null, lz4: lz4 ?? null, maxDowntimeMs: scenario.maxDowntimeMs ?? null },
        wirePercent: round((100 * m.send.bytesTransferred) / size, 2), mbPerSec: round((size / 1e6) / (total / 1000)),
        workload: workload ?? null, roundsDetail: roundsDetail(m.rounds, m.send), verified: m.verified,
      },
      qemu,
      ratios: {
        vsWriteFloor: writeFloor ? round(total / writeFloor.totalMs, 3) : null,
        vsTcpCopy: round(total / tcpCopy.totalMs, 3),
        vsQemu: qemu?.status === 'completed' ? round(total / qemu.totalTimeMs, 3) : null,
      },
      rss: {
        source: m.rss.source, target: m.rss.target, boundBytes: bench.rssBoundBytes,
        withinBound: m.rss.source.peakCountedBytes <= bench.rssBoundBytes && m.rss.target.peakCountedBytes <= bench.rssBoundBytes,
      },
      otherCpuPercent: otherCpu === null ? null : round(otherCpu, 1),
    };
  } finally {
    image.done();
  }
}

async function main(): Promise<number> {
  const options = optionsOrUsage('pagewire bench', USAGE, parseOptions);
  if (!options) return 2;
  const { size, reps, scenarios, warmup } = options;
  // Generous but finite: nothing may hang. A step is one floor, one migration or one QEMU run.
  const stepTimeoutMs = Math.round(60_000 + (size / 10e6) * 1000);
  const rssBoundBytes = RSS_BASE_BYTES + size + DEFAULT_PAGE_CACHE_BYTES;
  const startedAt = new Date();
  const stamp = startedAt.toISOString().replace(/[:.]/g, '-');
  const images = [...new Map(scenarios.map((s) => [`${s.image}@${s.imageStorage}`, s] as const)).values()];
  const record: Record<string, unknown> = {
    bench: 'migrate',
    status: 'running',
    startedAt: startedAt.toISOString(),
    options: {
      size, reps, warmup, scenarios: scenarios.map((s) => s.name), streams: options.streams ?? null, lz4: options.lz4 ?? null,
      workloadMaxDowntimeMs: options.workloadMaxDowntimeMs, diskDir: options.diskDir ?? null, qemu: options.qemu,
    },
    scenarios,
    environment: {
      node: process.version, platform: process.platform, arch: process.arch, cpus: cpus().length,
      cpuModel: cpus()[0]?.model ?? null, totalMemBytes: totalmem(), git: gitInfo(), qemu: null as unknown, storage: null as unknown,
    },
    images: Object.fromEntries((Object.keys(IMAGES) as ImageKind[]).filter((k) => scenarios.some((s) => s.image === k))
      .map((k) => [k, { sizeBytes: size, pageSize: 4096, ...IMAGES[k], randomFraction: randomShare(IMAGES[k]) }])),
    rssBound: { bytes: rssBoundBytes, base: RSS_BASE_BYTES, region: size, pageCache: DEFAULT_PAGE_CACHE_BYTES, sampleMs: RSS_SAMPLE_MS },
    method: 'Per repetition and scenario: the write floor (a fresh process pwrites the image\'s bytes in 1 MiB chunks into a ' +
      'new file on the scenario\'s storage, then fsyncs; not for -mem), a plain TCP copy of the image between two agent ' +
      'processes into a pre-faulted buffer (connect to the one-byte ack after the last byte), the migration, then for cold ' +
      '-shm/-disk scenarios QEMU\'s migration of the same image (multifd, 2 channels, no bandwidth cap; source RAM = the ' +
      'image file, target RAM = a new shared file on the same storage; once per image, storage and repetition). CLI scenarios ' +
      'spawn `pagewire receive --listen 127.0.0.1:0 --out FILE --json` and `pagewire send --connect 127.0.0.1:PORT --image ' +
      'IMG --json ...` with image and --out on the scenario\'s storage; their process wall times are timed from spawn to ' +
      'exit and their RSS sampled from /proc every 20 ms. -mem scenarios run MigrationSource/MigrationTarget in the agents ' +
      'into the pre-faulted buffer. After each migration: send\'s and receive\'s digests must agree and --out must equal the ' +
      'source image byte for byte (-mem: SHA-256 of buffer and image). Workload scenarios migrate a fresh copy of the mixed ' +
      'image, seed = repetition. Medians over repetitions.',
  };
  const runs: RepRecord[] = [];
  const warmups: RepRecord[] = [];
  let summary: ScenarioSummary[] = [];
  let run: RunDescription | undefined;

  let storage: Partial<Record<FileStorage, StorageDir>> = {};
  const agents: AgentClient[] = [];
  let cleaned = false;
  const cleanup = () => {
    if (cleaned) return;
    cleaned = true;
    for (const agent of agents) agent.kill();
    killChildren();
    removeStorage(storage);
  };
  process.on('exit', cleanup);
  for (const [signal, code] of [['SIGINT', 130], ['SIGTERM', 143]] as const) {
    process.on(signal, () => {
      say(`\npagewire bench: interrupted by ${signal}; cleaning up`);
      cleanup();
      process.exit(code);
    });
  }

  try {
    storage = prepareStorage(new Set(scenarios.flatMap((s) => [s.imageStorage])), options.diskDir, RESULTS_DIR);
    (record.environment as Record<string, unknown>).storage = storage;
    const qemu = await probeQemu(options.qemu, scenarios);
    (record.environment as Record<string, unknown>).qemu = qemu.enabled ? { version: qemu.version } : { skipped: qemu.reason };
    const imagePaths = new Map<string, string>();
    for (const { image: kind, imageStorage } of images) {
      const path = join(storage[imageStorage]!.dir, `${kind}.bin`);
      say(`pagewire bench: generating the ${formatSize(size)} ${kind} image (${describeImage(IMAGES[kind])}) in ${path}`);
      writeMixedImage(path, { size, ...IMAGES[kind] });
      imagePaths.set(`${kind}@${imageStorage}`, path);
    }
    const tlsKey = randomBytes(32);
    const pskFile = join(Object.values(storage)[0]!.dir, 'bench.key');
    writeFileSync(pskFile, tlsKey, { mode: 0o600 });
    const [source, target] = await Promise.all([
      AgentClient.start(AGENT_PATH, 'source', 30_000), AgentClient.start(AGENT_PATH, 'target', 30_000),
    ]);
    agents.push(source, target);
    await target.request({ cmd: 'init', size }, stepTimeoutMs);
    const bench: Bench = {
      options, storage, images: imagePaths, source, target, pids: [process.pid, source.child.pid!, target.child.pid!], stepTimeoutMs,
      rssBoundBytes, qemu, qemuRuns: new Map(), tlsKey, pskFile,
    };
    run = {
      size, reps, qemu: qemu.enabled ? { version: qemu.version } : { skipped: qemu.reason }, storage,
      streams: options.streams, lz4: options.lz4, rssBoundBytes, pageCacheBytes: DEFAULT_PAGE_CACHE_BYTES,
    };

    for (let w = 0; w < warmup; w++) {
      say(`warm-up ${w + 1}/${warmup} (not counted): floors + ${scenarios[0]!.name} migration`);
      const r = await runOnce(bench, scenarios[0]!, -1 - w, false);
      warmups.push(r);
      say(describeRep(r, `warm-up ${scenarios[0]!.name}`));
    }
    for (let rep = 0; rep < reps; rep++) {
      for (const scenario of scenarios) {
        const steps = [scenario.target === 'mem' ? null : 'write floor', 'TCP copy', 'migration', comparedWithQemu(scenario) && qemu.enabled ? 'QEMU' : null];
        say(`rep ${rep + 1}/${reps}, ${scenario.name}: ${steps.filter(Boolean).join(', ')}`);
        const r = await runOnce(bench, scenario, rep, true);
        runs.push(r);
        say(describeRep(r, `${scenario.name} ${rep + 1}/${reps}`));
      }
    }

    summary = scenarios.map((scenario) => summarize(scenario, runs, size, rssBoundBytes));
    process.stdout.write(formatTables(run, summary));
    const noisiest = Math.max(...runs.map((r) => r.otherCpuPercent ?? 0));
    record.maxOtherCpuPercent = noisiest;
    if (noisiest > NOISY_CPU_PERCENT) {
      process.stdout.write(`\nwarning: other processes used up to ${noisiest.toFixed(0)}% of this machine's CPU during a ` +
        'repetition; these figures are noisy (per-repetition figures are in the JSON)\n');
    }
    const overBound = summary.filter((s) => !s.medians.rssWithinBound).map((s) => s.scenario);
    if (overBound.length > 0) {
      process.stdout.write(`\nwarning: peak RSS above the bound of ${mib(rssBoundBytes)} MiB in ${overBound.join(', ')}\n`);
    }
    record.status = 'completed';
    return 0;
  } catch (error) {
    const message = (error as Error).message;
    process.stderr.write(`\npagewire bench: FAILED: ${message}\n`);
    record.status = 'failed';
    record.error = message;
    return 1;
  } finally {
    record.finishedAt = new Date().toISOString();
    record.summary = summary;
    record.warmups = warmups;
    record.runs = runs;
    writeResults(stamp, record, summary, runs, options);
    cleanup();
  }
}

/** The JSON always; the SVG when there is a summary to draw. */
function writeResults(stamp: string, record: Record<string, unknown>, summary: ScenarioSummary[], runs: RepRecord[], options: Options): void {
  try {
    mkdirSync(RESULTS_DIR, { recursive: true });
    const file = join(RESULTS_DIR, `migrate-${stamp}.json`);
    writeFileSync(file, JSON.stringify(record, null, 2) + '\n');
    process.stdout.write(`\nraw figures: ${file}\n`);
    if (summary.length === 0) return;
    const svg = join(RESULTS_DIR, `migrate-${stamp}.svg`);
    const title = `pagewire migrate bench, ${formatSize(options.size)} over 127.0.0.1, ${String(record.startedAt)}`;
    writeFileSync(svg, renderRunSvg(title, chartPanels(summary, runs, options.reps)));
    process.stdout.write(`chart: ${svg}\n`);
  } catch (error) {
    process.stderr.write(`pagewire bench: cannot write the results: ${(error as Error).message}\n`);
  }
}

function randomShare(image: Omit<MixedImageOptions, 'size'>): number {
  return round(1 - (image.zero ?? 0) - (image.text ?? 0) - (image.dup ?? 0) - (image.structured ?? 0), 6);
}

function describeImage(image: Omit<MixedImageOptions, 'size'>): string {
  const parts = (['zero', 'dup', 'structured', 'text'] as const)
    .filter((k) => (image[k] ?? 0) > 0).map((k) => `${Math.round((image[k] ?? 0) * 100)}% ${k}`);
  return [...parts, `${Math.round(randomShare(image) * 100)}% random pages`].join(', ');
}

main().then((code) => process.exit(code), (error: unknown) => {
  process.stderr.write(`pagewire bench: FAILED: ${(error as Error).stack ?? String(error)}\n`);
  process.exit(1);
});

// npm run bench [-- --size 1GiB --reps 3 --scenarios idle,workload200 --warmup 1 --verbose]
//
// Migrates a mixed-content image between two local processes over 127.0.0.1 with pagewire, and in the
// same run times a plain TCP copy of the same bytes between the same two processes (the baseline).
// Each repetition does, per scenario: baseline copy, then migration. Prints medians; writes every
// figure to bench/results/migrate-<timestamp>.json. Exits non-zero on any failure, including a target
// image that differs from the source's at the pause point.
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, tmpdir, totalmem } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { optionalString, parseFlags, parseSize } from '../src/cli/args.js';
import { sourceJson } from '../src/cli/run-source.js';
import { writeMixedImage } from '../src/workload/mixed-image.js';
import type { WorkloadSpec } from '../src/workload/workload-spec.js';
import {
  AgentClient, type BaselineReceiveResult, type BaselineSendResult, type MigrateReceiveResult, type MigrateSendResult,
} from './protocol.js';
import { startCpuNoise } from './cpu-noise.js';
import { formatTable, median, round } from './stats.js';

const USAGE = 'npm run bench -- [--size 1GiB] [--reps 3] [--scenarios idle,workload200[,idle-memory,workload200-memory]] [--warmup 1] [--verbose]';
const AGENT_PATH = fileURLToPath(new URL('./agent.js', import.meta.url));
const RESULTS_DIR = fileURLToPath(new URL('../../bench/results/', import.meta.url));
const IMAGE = { zero: 0.4, text: 0.3, seed: 12345 };
const HOT = 0.05;
/** Above this share of the machine's CPU used by others during a repetition, the table gets a warning. */
const NOISY_CPU_PERCENT = 10;

interface Options {
  size: number;
  reps: number;
  scenarios: Scenario[];
  warmup: number;
  verbose: boolean;
}

interface Scenario {
  name: string;
  /** Dirty rate in bytes/s, or 0 for no workload. */
  rateBytesPerSec: number;
  /** 'memory': the target is the pre-faulted buffer the baseline fills (no disk), for a like-for-like ratio. */
  into: 'file' | 'memory';
}

interface RepRecord {
  scenario: string;
  rep: number;
  baseline: {
    totalMs: number;
    connectMs: number;
    targetAcceptToLastByteMs: number;
    bytes: number;
    mbPerSec: number;
    sha256: string;
  };
  /** The send --json object of the CLI contract, plus what the bench adds. */
  migration: ReturnType<typeof sourceJson> & {
    wirePercent: number;
    mbPerSec: number;
    workload: WorkloadSpec | null;
    targetSha256: string;
    targetBytesReceived: number;
    roundsDetail: Array<Record<string, number>>;
  };
  ratio: number;
  /** CPU used by other processes during this repetition, % of the whole machine (null off Linux). */
  otherCpuPercent: number | null;
}

interface Medians {
  totalTimeMs: number;
  downtimeMs: number;
  rounds: number;
  mbPerSec: number;
  wirePercent: number;
  baselineMs: number;
  baselineMbPerSec: number;
  /** Median pagewire total / median baseline. */
  ratio: number;
  /** Median of the per-repetition ratios (each against the baseline measured just before it). */
  ratioOfPairs: number;
  /** The most CPU other processes used during one of these repetitions (% of the machine). */
  maxOtherCpuPercent: number | null;
}

function parseOptions(argv: string[]): Options {
  const flags = parseFlags(argv, { size: 'string', reps: 'string', scenarios: 'string', warmup: 'string', verbose: 'boolean', help: 'boolean' });
  if (flags.has('help')) {
    process.stdout.write(`${USAGE}\n`);
    process.exit(0);
  }
  const size = parseSize(optionalString(flags, 'size') ?? '1GiB', 'size');
  if (size % 4096 !== 0) throw new Error(`--size must be a multiple of 4096 bytes, got ${size}`);
  const reps = wholeNumber(optionalString(flags, 'reps') ?? '3', 'reps', 1);
  const warmup = wholeNumber(optionalString(flags, 'warmup') ?? '1', 'warmup', 0);
  const names = (optionalString(flags, 'scenarios') ?? 'idle,workload200').split(',').map((s) => s.trim()).filter(Boolean);
  if (names.length === 0) throw new Error('--scenarios: name at least one scenario (idle, workload<MB/s>)');
  const scenarios = names.map((name): Scenario => {
    const match = /^(?:idle|workload(\d+(?:\.\d+)?))(-memory)?$/.exec(name);
    const rate = match?.[1] === undefined ? 0 : Number(match[1]);
    if (match && (name.startsWith('idle') || rate > 0)) {
      return { name, rateBytesPerSec: rate * 1e6, into: match[2] ? 'memory' : 'file' };
    }
    throw new Error(`--scenarios: unknown scenario '${name}' (known: idle, workload<MB/s> such as workload200, each with -memory for a target in memory)`);
  });
  if (new Set(names).size !== names.length) throw new Error('--scenarios: a scenario is named twice');
  return { size, reps, scenarios, warmup, verbose: flags.has('verbose') };
}

function wholeNumber(text: string, flag: string, min: number): number {
  const value = Number(text);
  if (!Number.isSafeInteger(value) || value < min) throw new Error(`--${flag}: expected a whole number >= ${min}, got '${text}'`);
  return value;
}

function say(text: string): void {
  process.stderr.write(`${text}\n`);
}

function gitInfo(): { commit: string | null; dirty: boolean | null } {
  const cwd = fileURLToPath(new URL('../../', import.meta.url));
  try {
    const commit = execFileSync('git', ['rev-parse', 'HEAD'], { cwd, encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
    const status = execFileSync('git', ['status', '--porcelain'], { cwd, encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] });
    return { commit, dirty: status.trim().length > 0 };
  } catch {
    return { commit: null, dirty: null };
  }
}

async function main(): Promise<number> {
  let options: Options;
  try {
    options = parseOptions(process.argv.slice(2));
  } catch (error) {
    process.stderr.write(`pagewire bench: ${(error as Error).message}\n${USAGE}\n`);
    return 2;
  }
  const { size, reps, scenarios, warmup, verbose } = options;
  // Generous but finite: nothing may hang. A step is one baseline copy or one migration.
  const stepTimeoutMs = Math.round(60_000 + (size / 10e6) * 1000);
  const startedAt = new Date();
  const record: Record<string, unknown> = {
    bench: 'migrate',
    status: 'running',
    startedAt: startedAt.toISOString(),
    options: { size, reps, scenarios: scenarios.map((s) => s.name), warmup },
    environment: {
      node: process.version, platform: process.platform, arch: process.arch, cpus: cpus().length,
      cpuModel: cpus()[0]?.model ?? null, totalMemBytes: totalmem(), git: gitInfo(),
    },
    image: { sizeBytes: size, pageSize: 4096, zeroFraction: IMAGE.zero, textFraction: IMAGE.text, randomFraction: 1 - IMAGE.zero - IMAGE.text, seed: IMAGE.seed },
    method: 'Per repetition and scenario, in the same two processes: a plain TCP copy of the mapped image into a ' +
      'pre-faulted Buffer (connect to the one-byte ack after the last byte), then a pagewire migration ' +
      '(MigrationSource via runSource, FileTargetImage target). Medians over repetitions.',
  };
  const runs: RepRecord[] = [];
  const warmups: RepRecord[] = [];

  const dir = mkdtempSync(join(tmpdir(), 'pagewire-bench-'));
  const agents: AgentClient[] = [];
  let cleaned = false;
  const cleanup = () => {
    if (cleaned) return;
    cleaned = true;
    for (const agent of agents) agent.kill();
    rmSync(dir, { recursive: true, force: true });
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
    const imagePath = join(dir, 'image.bin');
    say(`pagewire bench: generating a ${formatSize(size)} mixed image (40% zero, 30% text, 30% random pages) in ${dir}`);
    writeMixedImage(imagePath, { size, zero: IMAGE.zero, text: IMAGE.text, seed: IMAGE.seed });
    const [source, target] = await Promise.all([
      AgentClient.start(AGENT_PATH, 'source', 30_000), AgentClient.start(AGENT_PATH, 'target', 30_000),
    ]);
    agents.push(source, target);
    await target.request({ cmd: 'init', size }, stepTimeoutMs);

    const pids = [process.pid, source.child.pid!, target.child.pid!];
    const runOnce = async (scenario: Scenario, rep: number): Promise<RepRecord> => {
      const noise = startCpuNoise(pids);
      // (a) Baseline: a plain TCP copy of the same mapped bytes between the same two processes.
      const { port: basePort } = await target.request<{ port: number }>({ cmd: 'baseline-listen', timeoutMs: stepTimeoutMs }, stepTimeoutMs);
      const [sent, got] = await Promise.all([
        source.request<BaselineSendResult>({ cmd: 'baseline-send', port: basePort, imagePath, timeoutMs: stepTimeoutMs }, stepTimeoutMs + 30_000),
        target.request<BaselineReceiveResult>({ cmd: 'baseline-result' }, stepTimeoutMs + 30_000),
      ]);
      if (got.bytesReceived !== size || got.sha256 !== sent.sha256) {
        throw new Error(`baseline copy is wrong: ${got.bytesReceived} of ${size} bytes, sha256 ${got.sha256} vs ${sent.sha256}`);
      }

      // (b) The pagewire migration of the same image.
      const workload: WorkloadSpec | undefined = scenario.rateBytesPerSec > 0
        ? { rateBytesPerSec: scenario.rateBytesPerSec, hot: HOT, seed: rep + 1 } : undefined;
      const outPath = join(dir, `target-${scenario.name}-${rep}.img`);
      const { port } = await target.request<{ port: number }>({ cmd: 'migrate-listen', outPath, into: scenario.into, timeoutMs: stepTimeoutMs }, stepTimeoutMs);
      const received = target.request<MigrateReceiveResult>({ cmd: 'migrate-result' }, stepTimeoutMs + 30_000);
      received.catch(() => {});
      const migrated = await source.request<MigrateSendResult>({
        cmd: 'migrate-send', port, imagePath, timeoutMs: stepTimeoutMs, verbose, ...(workload ? { workload } : {}),
      }, stepTimeoutMs + 30_000);
      if (migrated.error || migrated.summary.status !== 'completed') {
        const targetSide = await Promise.race([received, new Promise<undefined>((r) => setTimeout(() => r(undefined), 5000))]).catch(() => undefined);
        throw new Error(`migration failed on the source: ${migrated.error?.message ?? migrated.summary.status} (${migrated.error?.code ?? '?'})` +
          (targetSide?.error ? `; target: ${targetSide.error.message} (${targetSide.error.code ?? '?'})` : ''));
      }
      const landed = await received;
      if (landed.error || !landed.summary || landed.summary.status !== 'completed' || !landed.sha256) {
        throw new Error(`migration failed on the target: ${landed.error?.message ?? 'no summary'} (${landed.error?.code ?? '?'})`);
      }
      if (landed.sha256 !== migrated.sha256) {
        throw new Error(`SHA-256 MISMATCH after ${scenario.name} rep ${rep + 1}: source at the pause point ${migrated.sha256}, ` +
          `target's committed file ${landed.sha256}`);
      }

      const s = migrated.summary;
      const otherCpu = noise();
      return {
        scenario: scenario.name,
        rep: rep + 1,
        baseline: {
          totalMs: round(sent.totalMs, 2), connectMs: round(sent.connectMs, 3),
          targetAcceptToLastByteMs: round(got.acceptToLastByteMs, 2), bytes: got.bytesReceived,
          mbPerSec: round((size / 1e6) / (sent.totalMs / 1000)), sha256: sent.sha256,
        },
        migration: {
          ...sourceJson(migrated), wirePercent: round((100 * s.bytesTransferred) / size, 2),
          mbPerSec: round((size / 1e6) / (s.totalTimeMs / 1000)),
          workload: workload ?? null, targetSha256: landed.sha256, targetBytesReceived: landed.summary.bytesReceived,
          roundsDetail: migrated.rounds.map((r) => ({
            round: r.round, pagesSent: r.pagesSent, bytesSent: r.bytesSent, durationMs: round(r.durationMs, 2),
            bandwidthMBps: round(r.bandwidthBytesPerSec / 1e6), dirtyRateMBps: round(r.dirtyRateBytesPerSec / 1e6),
            pendingPages: r.pendingPages, expectedDowntimeMs: Number.isFinite(r.expectedDowntimeMs) ? round(r.expectedDowntimeMs, 2) : -1,
          })),
        },
        ratio: round(s.totalTimeMs / sent.totalMs, 3),
        otherCpuPercent: otherCpu === null ? null : round(otherCpu, 1),
      };
    };

    const describe = (r: RepRecord, label: string) => say(
      `  [${label}] baseline ${r.baseline.totalMs.toFixed(0)} ms (${r.baseline.mbPerSec.toFixed(0)} MB/s) | pagewire ` +
      `${r.migration.totalTimeMs.toFixed(0)} ms, downtime ${r.migration.downtimeMs.toFixed(1)} ms, ${r.migration.rounds} rounds, ` +
      `${r.migration.mbPerSec.toFixed(1)} MB/s, wire ${r.migration.wirePercent.toFixed(1)}% | ratio ${r.ratio.toFixed(2)} | sha256 equal` +
      (r.otherCpuPercent !== null ? ` | other processes ${r.otherCpuPercent.toFixed(0)}% CPU` : ''));

    for (let w = 0; w < warmup; w++) {
      say(`warm-up ${w + 1}/${warmup} (not counted): baseline + ${scenarios[0]!.name} migration`);
      const r = await runOnce(scenarios[0]!, -1 - w);
      warmups.push(r);
      describe(r, `warm-up ${scenarios[0]!.name}`);
    }
    for (let rep = 0; rep < reps; rep++) {
      for (const scenario of scenarios) {
        say(`rep ${rep + 1}/${reps}, ${scenario.name}: baseline copy, then migration`);
        const r = await runOnce(scenario, rep);
        runs.push(r);
        describe(r, `${scenario.name} ${rep + 1}/${reps}`);
      }
    }

    const summary = scenarios.map((scenario) => {
      const mine = runs.filter((r) => r.scenario === scenario.name);
      const totalTimeMs = median(mine.map((r) => r.migration.totalTimeMs));
      const baselineMs = median(mine.map((r) => r.baseline.totalMs));
      const medians: Medians = {
        totalTimeMs: round(totalTimeMs, 2),
        downtimeMs: round(median(mine.map((r) => r.migration.downtimeMs)), 2),
        rounds: median(mine.map((r) => r.migration.rounds)),
        mbPerSec: round((size / 1e6) / (totalTimeMs / 1000)),
        wirePercent: round(median(mine.map((r) => r.migration.wirePercent)), 2),
        baselineMs: round(baselineMs, 2),
        baselineMbPerSec: round((size / 1e6) / (baselineMs / 1000)),
        ratio: round(totalTimeMs / baselineMs, 3),
        ratioOfPairs: round(median(mine.map((r) => r.ratio)), 3),
        maxOtherCpuPercent: mine.some((r) => r.otherCpuPercent !== null) ? Math.max(...mine.map((r) => r.otherCpuPercent ?? 0)) : null,
      };
      return { scenario: scenario.name, workload: scenario.rateBytesPerSec > 0 ? { rateBytesPerSec: scenario.rateBytesPerSec, hot: HOT } : null, medians };
    });

    const table = formatTable([
      ['scenario', 'total ms', 'downtime ms', 'rounds', 'MB/s', 'wire %', 'baseline ms', 'baseline MB/s', 'ratio', 'others CPU % (max)'],
      ...summary.map(({ scenario, medians: m }) => [
        scenario, m.totalTimeMs.toFixed(0), m.downtimeMs.toFixed(1), String(m.rounds), m.mbPerSec.toFixed(1),
        m.wirePercent.toFixed(1), m.baselineMs.toFixed(0), m.baselineMbPerSec.toFixed(0), `${m.ratio.toFixed(2)}x`,
        m.maxOtherCpuPercent === null ? 'n/a' : m.maxOtherCpuPercent.toFixed(0),
      ]),
    ], [false, true, true, true, true, true, true, true, true, true]);
    process.stdout.write(
      `\npagewire migrate bench: ${formatSize(size)} mixed image over 127.0.0.1, medians of ${reps} run${reps === 1 ? '' : 's'} ` +
      `(node ${process.version}, ${cpus().length} cpus)\n` +
      'MB/s = region bytes / total time; wire % = bytes on the wire / region bytes; ratio = pagewire total / plain TCP copy;\n' +
      'others CPU % = CPU used by processes outside this bench during a repetition (noise indicator)\n\n' +
      `${table}\n`);
    const noisiest = Math.max(...runs.map((r) => r.otherCpuPercent ?? 0));
    record.maxOtherCpuPercent = noisiest;
    if (noisiest > NOISY_CPU_PERCENT) {
      process.stdout.write(`\nwarning: other processes used up to ${noisiest.toFixed(0)}% of this machine's CPU during a ` +
        'repetition; these figures are noisy (per-repetition figures are in the JSON)\n');
    }
    record.status = 'completed';
    record.summary = summary;
    return 0;
  } catch (error) {
    const message = (error as Error).message;
    process.stderr.write(`\npagewire bench: FAILED: ${message}\n`);
    record.status = 'failed';
    record.error = message;
    return 1;
  } finally {
    record.finishedAt = new Date().toISOString();
    record.warmups = warmups;
    record.runs = runs;
    try {
      mkdirSync(RESULTS_DIR, { recursive: true });
      const file = join(RESULTS_DIR, `migrate-${startedAt.toISOString().replace(/[:.]/g, '-')}.json`);
      writeFileSync(file, JSON.stringify(record, null, 2) + '\n');
      process.stdout.write(`\nraw figures: ${file}\n`);
    } catch (error) {
      process.stderr.write(`pagewire bench: cannot write the results file: ${(error as Error).message}\n`);
    }
    cleanup();
  }
}

function formatSize(bytes: number): string {
  if (bytes % 2 ** 30 === 0) return `${bytes / 2 ** 30} GiB`;
  if (bytes % 2 ** 20 === 0) return `${bytes / 2 ** 20} MiB`;
  return `${bytes} bytes`;
}

main().then((code) => process.exit(code), (error: unknown) => {
  process.stderr.write(`pagewire bench: FAILED: ${(error as Error).stack ?? String(error)}\n`);
  process.exit(1);
});

// What every bench program does around its measurements: name the commit and the machine it ran on,
// leave no child process behind, judge the targets, and keep its figures in bench/results/.
import { execFileSync } from 'node:child_process';
import { mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { cpus, totalmem } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { formatTable } from './stats.js';

/** Where the benches write their figures. */
export const RESULTS_DIR = fileURLToPath(new URL('../../bench/results/', import.meta.url));

/** The checkout's HEAD and whether the work tree differs from it (null outside git). */
export function gitInfo(): { commit: string | null; dirty: boolean | null } {
  const cwd = fileURLToPath(new URL('../../', import.meta.url));
  try {
    const commit = execFileSync('git', ['rev-parse', 'HEAD'], { cwd, encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
    const status = execFileSync('git', ['status', '--porcelain'], { cwd, encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] });
    return { commit, dirty: status.trim().length > 0 };
  } catch {
    return { commit: null, dirty: null };
  }
}

/**
 * Our child processes (agents, pagewire processes, QEMUs, iperf3) by pid, from /proc: killed on exit so
 * none outlives the bench. A child started through `ip netns exec` is the program itself by then (ip
 * execs it in place), so it is found too.
 */
export function killChildren(): void {
  let entries: string[];
  try {
    entries = readdirSync('/proc').filter((e) => /^\d+$/.test(e));
  } catch {
    return;
  }
  for (const pid of entries) {
    try {
      const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      if (ppid === process.pid) process.kill(Number(pid), 'SIGKILL');
    } catch {
      // gone already, or not ours to read
    }
  }
}

/** The bench's options from its arguments, or undefined after printing why and its usage (exit 2 then). */
export function optionsOrUsage<T>(name: string, usage: string, parse: (argv: string[]) => T): T | undefined {
  try {
    return parse(process.argv.slice(2));
  } catch (error) {
    process.stderr.write(`${name}: ${(error as Error).message}\n${usage}\n`);
    return undefined;
  }
}

/** The machine and checkout a bench ran on, for its results record. */
export function benchEnvironment() {
  return {
    node: process.version, platform: process.platform, arch: process.arch, cpus: cpus().length, cpuModel: cpus()[0]?.model ?? null,
    totalMemBytes: totalmem(), git: gitInfo(),
  };
}

/** One of the targets as measured; pass null when it was not run. */
export interface Verdict {
  target: string;
  /** Where the figure comes from. */
  config: string;
  value: string;
  pass: boolean | null;
}

/** The targets as a table, each PASS, MISS or n/a. */
export function formatVerdicts(targets: Verdict[]): string {
  return formatTable([
    ['target', 'configuration', 'measured', ''],
    ...targets.map((t) => [t.target, t.config, t.value, t.pass === null ? 'n/a' : t.pass ? 'PASS' : 'MISS']),
  ], [false, false, false, false]);
}

/** Runs cleanup however the process ends, a signal included (it may run more than once). */
export function cleanUpOnExit(cleanup: () => void): void {
  process.on('exit', cleanup);
  process.once('SIGINT', () => process.exit(130));
  process.once('SIGTERM', () => process.exit(143));
}

/** Writes the record to bench/results/<name>-<stamp>.json and says where. */
export function saveResults(name: string, stamp: string, record: object): string {
  const file = join(RESULTS_DIR, `${name}-${stamp}.json`);
  mkdirSync(RESULTS_DIR, { recursive: true });
  writeFileSync(file, JSON.stringify(record, null, 2) + '\n');
  process.stdout.write(`\nraw figures: ${file}\n`);
  return file;
}

/** Runs the bench's main and exits with its code; a throw is a failure (exit 1). */
export function runBench(main: () => Promise<number>): void {
  main().then((code) => process.exit(code), (error: unknown) => {
    process.stderr.write(`pagewire bench: FAILED: ${(error as Error).stack ?? String(error)}\n`);
    process.exit(1);
  });
}
